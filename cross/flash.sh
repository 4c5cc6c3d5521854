#!/usr/bin/env bash
# Writes a bootable image to an SD card or eMMC:
#   cross/flash.sh IMAGE DEVICE       e.g. cross/flash.sh raspios-kiri.img /dev/sdb
#   DRY_RUN=1 cross/flash.sh ...      check everything, print what would be done, write nothing
# Refuses: a DEVICE that is not a whole block device, a non-removable disk (your system disk),
# a device with a mounted partition, a swap partition, a partition in use by device-mapper,
# LVM or md (an encrypted root), the disk holding /, an IMAGE larger than the device.
# `.img.xz` and `.img.gz` images are decompressed on the way. For tests, SYS_BLOCK (default
# /sys/block), PROC_MOUNTS (/proc/mounts) and PROC_SWAPS (/proc/swaps) can point at stand-ins;
# then the checks that need the real device (block device, device numbers, the root disk) are
# skipped.
set -euo pipefail
say() { printf 'flash: %s\n' "$*" >&2; }
refuse() { say "refusing: $*"; exit 2; }

[ $# -eq 2 ] || { say "usage: cross/flash.sh IMAGE DEVICE (DRY_RUN=1 to only check)"; exit 2; }
image=$1
device=$2
sys_block=${SYS_BLOCK:-/sys/block}
mounts=${PROC_MOUNTS:-/proc/mounts}
swaps=${PROC_SWAPS:-/proc/swaps}
real=1
[ -z "${SYS_BLOCK:-}" ] || real=

[ -f "$image" ] || refuse "image $image does not exist"
# /dev/disk/by-id/... and other links: the device they name.
[ -z "$real" ] || device=$(readlink -f "$device")
name=$(basename "$device")
case "$device" in
    /dev/*) ;;
    *) refuse "$device is not a /dev path" ;;
esac
[ -d "$sys_block/$name" ] || refuse "$device is not a whole disk (no $sys_block/$name; give /dev/sdX or /dev/mmcblkN, not a partition)"
# The device numbers of the disk and its partitions, as sysfs has them (major:minor).
numbers=$(cat "$sys_block/$name/dev" "$sys_block/$name/$name"*/dev 2>/dev/null || true)
if [ -n "$real" ]; then
    [ -b "$device" ] || refuse "$device is not a block device"
    given=$(printf '%d:%d' "0x$(stat -c %t "$device")" "0x$(stat -c %T "$device")")
    [ "$given" = "$(cat "$sys_block/$name/dev")" ] \
        || refuse "$device ($given) is not the disk $sys_block/$name describes"
    root=$(mountpoint -d / 2>/dev/null || true)
    if [ -n "$root" ] && grep -qx "$root" <<<"$numbers"; then
        refuse "$device holds the running system's root file system"
    fi
fi
for holders in "$sys_block/$name/holders" "$sys_block/$name/$name"*/holders; do
    if [ -d "$holders" ] && [ -n "$(ls -A "$holders" 2>/dev/null)" ]; then
        refuse "$device is in use by $(ls "$holders" | tr '\n' ' ')(device-mapper, LVM or md: an encrypted or logical volume?)"
    fi
done
removable=$(cat "$sys_block/$name/removable" 2>/dev/null || echo 0)
case "$name" in
    # SD cards on the built-in reader show as mmcblk with removable=0; eMMC modules the same.
    # Only the system's own root disk among them is refused (by the mount check below).
    mmcblk*) ;;
    *) [ "$removable" = 1 ] || refuse "$device is not removable ($sys_block/$name/removable = $removable): not writing over a fixed disk" ;;
esac
# Any mounted partition of the device (or the device itself).
# The device and its partitions: /dev/sdb, /dev/sdb1; /dev/mmcblk0, /dev/mmcblk0p1.
part_re="^/dev/$name(p?[0-9]+)?\$"
mounted=$(awk -v re="$part_re" '$1 ~ re { printf "%s on %s; ", $1, $2 }' "$mounts")
[ -z "$mounted" ] || refuse "$device (or a partition of it) is mounted: ${mounted}unmount it first"
swapping=$(awk -v re="$part_re" '$1 ~ re { printf "%s ", $1 }' "$swaps" 2>/dev/null || true)
[ -z "$swapping" ] || refuse "$device has swap in use: ${swapping}(swapoff first)"
sectors=$(cat "$sys_block/$name/size" 2>/dev/null || echo 0)
device_bytes=$((sectors * 512))
case "$image" in
    *.xz) reader=(xz -dc "$image"); image_bytes=$(xz --robot -l "$image" | awk '/^totals/ { print $5 }') ;;
    # gzip records the size modulo 4 GiB: unknown here, dd stops at the end of the device.
    *.gz) reader=(gzip -dc "$image"); image_bytes=0 ;;
    *) reader=(cat "$image"); image_bytes=$(stat -c %s "$image") ;;
esac
[ "$device_bytes" -gt 0 ] || refuse "cannot read the size of $device"
[ "$image_bytes" -le "$device_bytes" ] || refuse "the image ($image_bytes bytes) is larger than $device ($device_bytes bytes)"

plan="${reader[*]} | dd of=$device bs=4M conv=fsync status=progress"
if [ -n "${DRY_RUN:-}" ]; then
    say "dry run: would write $image ($image_bytes bytes) to $device ($device_bytes bytes, removable=$removable)"
    echo "$plan"
    exit 0
fi
say "writing $image to $device: everything on $device is lost (Ctrl-C within 5 s to stop)"
sleep 5
"${reader[@]}" | dd of="$device" bs=4M conv=fsync status=progress
sync
say "done: $device can be removed"
