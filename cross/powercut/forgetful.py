# A disk that forgets what was not flushed: an nbdkit plugin (nbdkit's Python plugin,
# Debian's nbdkit-plugin-python) serving FILE to QEMU over NBD.
#
#   nbdkit --unix SOCKET python cross/powercut/forgetful.py file=DISK.img
#   qemu-system-... -drive file=nbd:unix:SOCKET,format=raw,cache=writeback,...
#
# The fault model (docs/delivery-guarantees.md, "The power-cut test"):
# - FILE holds what is durable. A write is kept in memory, not in FILE, until the guest
#   flushes (NBD FLUSH) or writes with FUA: then every write made so far is applied to FILE and
#   fsynced, in order, before the flush (or the FUA write) is answered.
# - Reads see every write made so far, flushed or not (as a disk's cache does).
# - Each unflushed write is also appended to FILE.pending (page number and the page's new
#   content, 4096-byte pages), so that after a power cut (nbdkit killed with SIGKILL, QEMU
#   with it) `cut.py` can decide what of it reached the medium: nothing (mode `drop`), or a
#   random subset of the pages, applied in the order they were written (mode `reorder`: writes
#   reach the medium out of order, and a write across pages can be torn between them). One
#   4096-byte page is written whole or not at all.
# - Wear: FILE.wear keeps the bytes the guest has written and the flushes it asked for, over
#   every run on FILE (`written=N flushes=M`), rewritten at each flush.

import builtins
import os

import nbdkit

API_VERSION = 2
PAGE = 4096

disk_path = None
disk = None
size = 0
# Page number -> its newest content, for pages written since the last flush.
dirty = {}
log = None
# Bytes written and flushes, over every run on the disk (FILE.wear).
wear = {"written": 0, "flushes": 0}


def config(key, value):
    global disk_path
    if key == "file":
        disk_path = os.path.abspath(value)
    else:
        raise RuntimeError("unknown parameter %s (forgetful.py takes file=DISK)" % key)


def config_complete():
    global disk, size, log
    if disk_path is None:
        raise RuntimeError("file=DISK is required")
    pending = disk_path + ".pending"
    if os.path.exists(pending) and os.path.getsize(pending) > 0:
        raise RuntimeError(
            "%s holds unflushed writes of a cut: run cut.py on it first" % pending)
    disk = builtins.open(disk_path, "r+b")
    size = os.fstat(disk.fileno()).st_size
    if size % PAGE:
        raise RuntimeError("the disk's size must be a multiple of %d bytes" % PAGE)
    log = builtins.open(pending, "wb")
    if os.path.exists(disk_path + ".wear"):
        with builtins.open(disk_path + ".wear") as f:
            for field in f.read().split():
                key, _, value = field.partition("=")
                if key in wear:
                    wear[key] = int(value)


def thread_model():
    return nbdkit.THREAD_MODEL_SERIALIZE_ALL_REQUESTS


def open(readonly):  # noqa: A001 (nbdkit's callback name)
    return 1


def get_size(h):
    return size


def can_flush(h):
    return True


def can_fua(h):
    return nbdkit.FUA_NATIVE


def can_multi_conn(h):
    return False


def page(n):
    if n in dirty:
        return dirty[n]
    disk.seek(n * PAGE)
    return disk.read(PAGE)


def pieces(offset, length):
    """The pages a request of `length` bytes at `offset` touches: (page number, where the
    request starts in the page, bytes in the page, where the piece starts in the request)."""
    at, end = offset, offset + length
    while at < end:
        n = at // PAGE
        start = at - n * PAGE
        take = min(PAGE - start, end - at)
        yield n, start, take, at - offset
        at += take


def pread(h, buf, offset, flags):
    for n, start, take, i in pieces(offset, len(buf)):
        buf[i:i + take] = page(n)[start:start + take]


def pwrite(h, buf, offset, flags):
    data = bytes(buf)
    wear["written"] += len(data)
    for n, start, take, i in pieces(offset, len(data)):
        old = page(n)
        new = old[:start] + data[i:i + take] + old[start + take:]
        dirty[n] = new
        log.write(n.to_bytes(8, "little") + new)
    log.flush()
    if flags & nbdkit.FLAG_FUA:
        flush(h, 0)


def zero(h, count, offset, flags):
    pwrite(h, bytearray(count), offset, flags)


def flush(h, flags):
    for n in sorted(dirty):
        disk.seek(n * PAGE)
        disk.write(dirty[n])
    disk.flush()
    os.fsync(disk.fileno())
    dirty.clear()
    log.seek(0)
    log.truncate()
    log.flush()
    wear["flushes"] += 1
    with builtins.open(disk_path + ".wear", "w") as f:
        f.write("written=%d flushes=%d\n" % (wear["written"], wear["flushes"]))
