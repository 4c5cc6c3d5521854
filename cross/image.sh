#!/usr/bin/env bash
# Builds the simulated board's boot files for QEMU's aarch64 `virt` board: Debian's arm64
# kernel, and an initramfs with busybox, the virtio network modules, the static `kiri`, its
# configuration and the example functions (the same payload a device gets).
#   cross/image.sh       -> target/image/vmlinuz, target/image/initrd.img
# Debian packages are fetched with apt-get for arm64 without touching the host's dpkg
# architectures (a private apt state under .cache/arm64), and kept there.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'image: %s\n' "$*" >&2; }

target=aarch64-unknown-linux-musl
kiri="target/cross/$target/kiri"
[ -x "$kiri" ] || { say "$kiri is missing: run cross/build.sh $target (make cross)"; exit 1; }
for f in convert threshold; do
    [ -f "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/release/kiri_fn_$f.wasm" ] \
        || { say "the example functions are missing: run make functions"; exit 1; }
done
for tool in apt-get dpkg-deb cpio gzip; do
    command -v "$tool" >/dev/null || { say "missing: $tool"; exit 1; }
done

cache="$PWD/.cache/arm64"
mkdir -p "$cache/lists/partial" "$cache/cache/archives/partial" "$cache/debs"
touch "$cache/status"
apt_opts=(-o APT::Architecture=arm64 -o APT::Architectures=arm64
    -o "Dir::State::Lists=$cache/lists" -o "Dir::Cache=$cache/cache"
    -o "Dir::State::status=$cache/status")
[ "$(id -u)" -eq 0 ] && apt_opts+=(-o APT::Sandbox::User=root)

if ! ls "$cache"/debs/linux-image-*-cloud-arm64_*.deb >/dev/null 2>&1 \
    || ! ls "$cache"/debs/busybox-static_*.deb >/dev/null 2>&1; then
    say "fetching Debian's arm64 kernel and busybox (apt-get download, arm64 only)"
    apt-get "${apt_opts[@]}" update -qq
    kernel_pkg=$(apt-cache "${apt_opts[@]}" depends linux-image-cloud-arm64 \
        | sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-arm64\)$/\1/p' | head -1)
    [ -n "$kernel_pkg" ] || { say "cannot resolve linux-image-cloud-arm64"; exit 1; }
    (cd "$cache/debs" && apt-get "${apt_opts[@]}" download -qq "$kernel_pkg" busybox-static)
fi

work="target/image/root"
rm -rf "$work"
mkdir -p "$work"/{bin,dev,proc,sys,tmp,etc/kiri,usr/bin,usr/lib/kiri/functions,var/lib/kiri,lib/modules}
kdir="target/image/kernel"
rm -rf "$kdir" && mkdir -p "$kdir"
dpkg-deb -x "$(ls -v "$cache"/debs/linux-image-*-cloud-arm64_*.deb | tail -1)" "$kdir"
bbdir="target/image/busybox"
rm -rf "$bbdir" && mkdir -p "$bbdir"
dpkg-deb -x "$(ls -v "$cache"/debs/busybox-static_*.deb | tail -1)" "$bbdir"
cp "$bbdir/bin/busybox" "$work/bin/busybox"

# virtio-net and virtio-blk (the data disk of the power-cut loop) are built as modules; the .deb
# has no modules.dep, so init loads them in order. ext4 is built in.
version=$(ls "$kdir/lib/modules")
mods="$kdir/lib/modules/$version/kernel"
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev \
    drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci net/core/failover \
    drivers/net/net_failover drivers/net/virtio_net drivers/block/virtio_blk; do
    cp "$mods/$m.ko" "$work/lib/modules/"
done
cp "$kdir/boot/vmlinuz-$version" target/image/vmlinuz

cp "$kiri" "$work/usr/bin/kiri"
cp cross/board/init "$work/init"
chmod 755 "$work/init"
cp cross/board/kiri.toml "$work/etc/kiri/kiri.toml"
cp cross/board/embedded.toml "$work/etc/kiri/embedded.toml"
for f in convert threshold; do
    cp "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/release/kiri_fn_$f.wasm" "$work/usr/lib/kiri/functions/$f.wasm"
done
(cd "$work" && find . | cpio -o -H newc -R 0:0 --quiet | gzip -6) > target/image/initrd.img
say "kernel $version: target/image/vmlinuz ($(du -h target/image/vmlinuz | cut -f1)), initrd: target/image/initrd.img ($(du -h target/image/initrd.img | cut -f1))"
