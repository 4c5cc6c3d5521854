#!/usr/bin/env bash
# Builds Debian packages of Kiri for devices, with dpkg-deb:
#   cross/deb.sh [ARCH...]      ARCH: arm64 (default build aarch64-unknown-linux-musl, static)
#                                     armhf (armv7-unknown-linux-gnueabihf, Raspberry Pi OS 32-bit)
#   -> target/deb/kiri_<version>_<arch>.deb
# Contents: /usr/bin/kiri, /usr/bin/kiri-sensor, /etc/kiri/kiri.toml (a conffile), the README
# and the docs/ book in /usr/share/doc/kiri, the example
# functions in /usr/lib/kiri/functions, the systemd units kiri.service (enabled and started on
# install: user `kiri`, state in /var/lib/kiri, hardened, watchdog) and kiri-sensor.service
# (for a BME280 on I2C bus 1; enable it after checking its command line).
# The binaries come from cross/build.sh (make cross); this script does not build them.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'deb: %s\n' "$*" >&2; }
arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(arm64 armhf)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
for f in convert threshold; do
    [ -f "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/release/kiri_fn_$f.wasm" ] \
        || { say "the example functions are missing: run make functions"; exit 1; }
done
changelog_version=$(sed -n '1s/^kiri (\([^)]*\)).*/\1/p' cross/debian/changelog)
[ "$changelog_version" = "$version" ] || {
    say "cross/debian/changelog starts at $changelog_version, Cargo.toml says $version: add an entry"
    exit 1
}
mkdir -p target/deb
# The manual pages, from the command-line definitions (clap_mangen): a host build of both
# binaries with their `man` feature; the pages are the same for every architecture.
man="target/deb/man"
mkdir -p "$man"
cargo run -q -p kiri --features man -- man > "$man/kiri.1"
cargo run -q -p kiri-sensor --features man -- --man > "$man/kiri-sensor.1"
for arch in "${arches[@]}"; do
    case "$arch" in
        arm64) triple=aarch64-unknown-linux-musl; depends="adduser, init-system-helpers (>= 1.54~)" ;;
        armhf) triple=armv7-unknown-linux-gnueabihf; depends="adduser, init-system-helpers (>= 1.54~), libc6 (>= 2.36)" ;;
        *) say "unknown architecture $arch (arm64 or armhf)"; exit 1 ;;
    esac
    bin="target/cross/$triple"
    for b in kiri kiri-sensor; do
        [ -x "$bin/$b" ] || { say "$bin/$b is missing: run cross/build.sh $triple (make cross)"; exit 1; }
    done
    root="target/deb/kiri_${version}_${arch}"
    rm -rf "$root"
    install -d "$root/DEBIAN" "$root/usr/bin" "$root/etc/kiri" "$root/usr/lib/kiri/functions" \
        "$root/lib/systemd/system" "$root/usr/share/doc/kiri" "$root/usr/share/man/man1"
    install -m 0755 "$bin/kiri" "$bin/kiri-sensor" "$root/usr/bin/"
    install -m 0644 cross/debian/kiri.toml "$root/etc/kiri/kiri.toml"
    install -m 0644 cross/debian/kiri.service cross/debian/kiri-sensor.service "$root/lib/systemd/system/"
    for f in convert threshold; do
        install -m 0644 "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/release/kiri_fn_$f.wasm" \
            "$root/usr/lib/kiri/functions/$f.wasm"
    done
    # The README's links go to docs/: the book comes along, beside it.
    install -d "$root/usr/share/doc/kiri/docs"
    install -m 0644 README.md "$root/usr/share/doc/kiri/README.md"
    install -m 0644 docs/*.md docs/*.png docs/*.conf "$root/usr/share/doc/kiri/docs/"
    install -m 0644 cross/debian/copyright "$root/usr/share/doc/kiri/copyright"
    gzip -9n < cross/debian/changelog > "$root/usr/share/doc/kiri/changelog.gz"
    chmod 0644 "$root/usr/share/doc/kiri/changelog.gz"
    for page in kiri kiri-sensor; do
        gzip -9n < "$man/$page.1" > "$root/usr/share/man/man1/$page.1.gz"
        chmod 0644 "$root/usr/share/man/man1/$page.1.gz"
    done
    if [ "$arch" = arm64 ]; then
        install -d "$root/usr/share/lintian/overrides"
        install -m 0644 cross/debian/lintian-overrides "$root/usr/share/lintian/overrides/kiri"
    fi
    install -m 0755 cross/debian/postinst cross/debian/prerm cross/debian/postrm "$root/DEBIAN/"
    echo /etc/kiri/kiri.toml > "$root/DEBIAN/conffiles"
    size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
    {
        echo "Package: kiri"
        echo "Version: $version"
        echo "Architecture: $arch"
        echo "Maintainer: Kiri developers <kiri@example.invalid>"
        echo "Installed-Size: $size"
        echo "Depends: $depends"
        echo "Section: net"
        echo "Priority: optional"
        echo "Homepage: https://example.invalid/kiri"
        echo "Description: WebAssembly function runtime for IoT edge gateways"
        echo " Kiri runs small functions compiled to WebAssembly on sensor readings arriving"
        echo " over MQTT, keeps their results on disk, and forwards them to a cloud MQTT"
        echo " broker, holding them while the uplink is down."
    } > "$root/DEBIAN/control"
    dpkg-deb --build --root-owner-group -Zxz "$root" "target/deb/kiri_${version}_${arch}.deb" >/dev/null
    say "target/deb/kiri_${version}_${arch}.deb ($(du -h "target/deb/kiri_${version}_${arch}.deb" | cut -f1))"
done
