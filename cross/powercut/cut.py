#!/usr/bin/env python3
"""After a power cut of the disk that forgets (forgetful.py): decides what of the writes that
were not flushed reached the medium, and applies it to the disk image.

    cut.py DISK.img drop              nothing unflushed survives
    cut.py DISK.img reorder SEED      each unflushed page write survives with probability 1/2
                                      (seeded), the survivors applied in the order written

Prints one line: the mode, the unflushed page writes, how many were kept. A record cut short
by the kill (the last one) is counted as lost. Removes DISK.img.pending when done.
"""

import os
import random
import sys

PAGE = 4096
RECORD = 8 + PAGE


def main(argv):
    if len(argv) < 3 or argv[2] not in ("drop", "reorder") or (argv[2] == "reorder") != (len(argv) == 4):
        sys.exit("usage: cut.py DISK.img drop | cut.py DISK.img reorder SEED")
    disk_path, mode = argv[1], argv[2]
    pending = disk_path + ".pending"
    records = []
    if os.path.exists(pending):
        with open(pending, "rb") as f:
            data = f.read()
        whole = len(data) // RECORD
        for i in range(whole):
            r = data[i * RECORD:(i + 1) * RECORD]
            records.append((int.from_bytes(r[:8], "little"), r[8:]))
    kept = []
    if mode == "reorder":
        rng = random.Random(int(argv[3]))
        kept = [r for r in records if rng.random() < 0.5]
    if kept:
        with open(disk_path, "r+b") as disk:
            for n, content in kept:
                disk.seek(n * PAGE)
                disk.write(content)
            disk.flush()
            os.fsync(disk.fileno())
    if os.path.exists(pending):
        os.remove(pending)
    print("cut: mode=%s unflushed_page_writes=%d kept=%d" % (mode, len(records), len(kept)))


if __name__ == "__main__":
    main(sys.argv)
