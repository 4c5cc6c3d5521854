#!/usr/bin/env bash
# Builds a bootable arm64 SD card image for the Raspberry Pi 3, 4 and Zero 2 W from Debian 12
# (bookworm) packages only, with Kiri installed from its package:
#   cross/sdimage.sh            -> target/sd-image/kiri-sd-arm64.img(.xz), and its root tree
#   cross/sdimage.sh assemble ROOT IMG   only the last step: the card image of the tree ROOT
#                               (its boot/firmware on the FAT partition), as IMG (`make test`
#                               checks the layout this way, on a small tree)
# The root file system is made by mmdebstrap (the arm64 maintainer scripts run under QEMU's
# user mode through binfmt_misc): systemd, Debian's arm64 kernel, `raspi-firmware` (the
# Pi's boot firmware, from non-free-firmware), OpenSSH, systemd-networkd (DHCP on Ethernet),
# timesyncd, and target/deb/kiri_<version>_arm64.deb. The card has two partitions, labelled as
# Debian's own Pi images: RASPIFIRM (FAT32, 256 MiB: firmware, kernel, config.txt,
# cmdline.txt) and RASPIROOT (ext4). First boot (kiri-firstboot.service) makes the board's SSH
# host keys (the image has none) and applies /boot/firmware/kiri-setup.txt (docs/devices.md).
# Needs root (mmdebstrap, file ownership), network access to deb.debian.org, and the Debian
# packages mmdebstrap, qemu-user-static, dosfstools, mtools, fdisk, e2fsprogs and xz-utils
# (installed when missing).
#   SUITE=bookworm MIRROR=http://deb.debian.org/debian ROOT_MB=1536 (the root partition's size)
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'sd-image: %s\n' "$*" >&2; }

suite=${SUITE:-bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
root_mb=${ROOT_MB:-1536}
boot_mb=256
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
deb="target/deb/kiri_${version}_arm64.deb"
out=target/sd-image
# The card image IMG of the tree ROOT: RASPIFIRM (FAT32) holds ROOT/boot/firmware, RASPIROOT
# (ext4) the rest, with the firmware folder as its mount point.
assemble() {
    local root=$1 img=$2 work
    work=$(mktemp -d "$(dirname "$img")/assemble.XXXXXX")
    say "assembling the card: RASPIFIRM ${boot_mb} MiB, RASPIROOT ${root_mb} MiB"
    mkfs.vfat -F 32 -n RASPIFIRM -C "$work/boot.vfat" $((boot_mb * 1024)) >/dev/null
    mcopy -s -p -i "$work/boot.vfat" "$root"/boot/firmware/* ::/
    mkdir -p "$work/firmware"
    mv "$root"/boot/firmware/* "$work/firmware/"
    mkfs.ext4 -q -L RASPIROOT -d "$root" "$work/root.ext4" "${root_mb}M"
    mv "$work"/firmware/* "$root/boot/firmware/"
    # 4 MiB before the first partition, as the Pi's images have it.
    local start=8192 boot_sectors=$((boot_mb * 2048))
    local root_start=$((start + boot_sectors))
    rm -f "$img"
    truncate -s $(((root_start + root_mb * 2048) * 512)) "$img"
    printf 'label: dos\nstart=%d, size=%d, type=c, bootable\nstart=%d, type=83\n' \
        "$start" "$boot_sectors" "$root_start" | sfdisk -q "$img"
    dd if="$work/boot.vfat" of="$img" bs=512 seek=$start conv=notrunc,sparse status=none
    dd if="$work/root.ext4" of="$img" bs=512 seek=$root_start conv=notrunc,sparse status=none
    rm -rf "$work"
}

if [ "${1:-}" = assemble ]; then
    [ $# -eq 3 ] && [ -d "$2/boot/firmware" ] || { say "usage: cross/sdimage.sh assemble ROOT IMG (ROOT/boot/firmware must exist)"; exit 2; }
    assemble "$2" "$3"
    exit 0
fi

[ -f "$deb" ] || { say "$deb is missing: make deb (or cross/deb.sh arm64)"; exit 1; }
[ "$(id -u)" -eq 0 ] || { say "run as root: mmdebstrap builds the root file system with its owners"; exit 1; }

need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
[ -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P ] || [ -x /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
command -v mkfs.vfat >/dev/null || need+=(dosfstools)
command -v mcopy >/dev/null || need+=(mtools)
command -v sfdisk >/dev/null || need+=(fdisk)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v xz >/dev/null || need+=(xz-utils)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# arm64 programs run here through binfmt_misc (qemu-user-static's handler).
if [ "$(uname -m)" != aarch64 ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    /usr/lib/systemd/systemd-binfmt /usr/lib/binfmt.d/qemu-aarch64.conf
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || { say "cannot register QEMU for arm64 programs (binfmt_misc)"; exit 1; }
fi

rm -rf "$out"
mkdir -p "$out"
root="$out/root"
say "building the root file system ($suite, arm64) from $mirror"
mmdebstrap --arch=arm64 --variant=minbase --components=main,non-free-firmware \
    --include=systemd-sysv,udev,dbus,kmod,raspi-firmware,linux-image-arm64,openssh-server,ca-certificates,systemd-timesyncd,systemd-resolved,iproute2,adduser,xz-utils \
    --setup-hook='mkdir -p "$1/boot/firmware"' \
    --customize-hook="copy-in $deb /tmp" \
    --customize-hook="chroot \"\$1\" dpkg -i /tmp/$(basename "$deb")" \
    --customize-hook='rm -f "$1"/tmp/*.deb' \
    --customize-hook='copy-in cross/sdimage/kiri-firstboot /usr/lib/kiri' \
    --customize-hook='copy-in cross/sdimage/kiri-firstboot.service /lib/systemd/system' \
    --customize-hook='copy-in cross/sdimage/10-wired.network /etc/systemd/network' \
    --customize-hook='copy-in cross/sdimage/fstab /etc' \
    --customize-hook='chroot "$1" systemctl enable kiri-firstboot.service systemd-networkd.service systemd-resolved.service' \
    --customize-hook='echo kiri > "$1/etc/hostname"' \
    --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
    --customize-hook='sed -i "s|^#\?ROOTPART=.*|ROOTPART=LABEL=RASPIROOT|" "$1/etc/default/raspi-firmware"' \
    --customize-hook='chroot "$1" env DEB_MAINT_PARAMS=configure /etc/kernel/postinst.d/z50-raspi-firmware' \
    "$suite" "$root" "$mirror" >&2

for f in config.txt cmdline.txt 'vmlinuz-*' 'initrd.img-*' start4.elf 'bcm2711-rpi-4-b.dtb'; do
    compgen -G "$root/boot/firmware/$f" >/dev/null || { say "raspi-firmware left no $f in /boot/firmware"; exit 1; }
done
grep -q 'root=LABEL=RASPIROOT' "$root/boot/firmware/cmdline.txt" \
    || { say "cmdline.txt does not name root=LABEL=RASPIROOT: $(cat "$root/boot/firmware/cmdline.txt")"; exit 1; }
img="$out/kiri-sd-arm64.img"
assemble "$root" "$img"
xz -T0 -6 -k -f "$img"
say "$img.xz ($(du -h "$img.xz" | cut -f1)); write it with: make flash IMAGE=$img.xz DEVICE=/dev/sdX"
