#!/usr/bin/env bash
# Cross-compiles `kiri` and `kiri-sensor` for the boards Kiri runs on, and reports their sizes.
#   cross/build.sh [TARGET...]     default: aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf
#                                           aarch64-unknown-linux-gnu
#   PROFILE=device (default)       the cargo profile (`device`: release with LTO, optimised for
#                                  size except the WebAssembly interpreter)
# Installs the rustup targets and, as root, Debian's cross compilers when they are missing.
# Binaries land in target/<target>/<profile>/; stripped copies in target/cross/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'cross: %s\n' "$*" >&2; }

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf aarch64-unknown-linux-gnu)
profile="${PROFILE:-device}"
budget=$((10 * 1024 * 1024))

need_pkgs=()
for t in "${targets[@]}"; do
    case "$t" in
        aarch64-unknown-linux-*) command -v aarch64-linux-gnu-gcc >/dev/null || need_pkgs+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;;
        armv7-unknown-linux-*) command -v arm-linux-gnueabihf-gcc >/dev/null || need_pkgs+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross) ;;
        *) say "unknown target $t"; exit 1 ;;
    esac
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        say "installing ${need_pkgs[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
    else
        say "missing: ${need_pkgs[*]} -- install with: sudo apt-get install -y ${need_pkgs[*]}"
        exit 1
    fi
fi
installed=$(rustup target list --installed)
for t in "${targets[@]}"; do
    grep -qx "$t" <<<"$installed" || { say "adding the Rust target $t"; rustup target add "$t"; }
done

for t in "${targets[@]}"; do
    T=$(tr 'a-z-' 'A-Z_' <<<"$t")
    t_=$(tr '-' '_' <<<"$t")
    case "$t" in
        # Debian has no musl cross gcc: ring's C code is built with the gnu cross gcc (it
        # needs no libc headers), and the static binary is linked by rust-lld with the musl
        # objects Rust ships (the host cc cannot link aarch64).
        aarch64-unknown-linux-musl)
            export "CC_${t_}=aarch64-linux-gnu-gcc" "AR_${t_}=aarch64-linux-gnu-ar"
            export "CARGO_TARGET_${T}_LINKER=rust-lld" ;;
        aarch64-unknown-linux-gnu)
            export "CC_${t_}=aarch64-linux-gnu-gcc" "AR_${t_}=aarch64-linux-gnu-ar"
            export "CARGO_TARGET_${T}_LINKER=aarch64-linux-gnu-gcc" ;;
        armv7-unknown-linux-gnueabihf)
            export "CC_${t_}=arm-linux-gnueabihf-gcc" "AR_${t_}=arm-linux-gnueabihf-ar"
            export "CARGO_TARGET_${T}_LINKER=arm-linux-gnueabihf-gcc" ;;
    esac
    say "building kiri and kiri-sensor for $t ($profile)"
    cargo build --profile "$profile" --target "$t" -p kiri -p kiri-sensor
    out="target/cross/$t"
    mkdir -p "$out"
    case "$t" in
        armv7-*) strip_tool=arm-linux-gnueabihf-strip ;;
        *) strip_tool=aarch64-linux-gnu-strip ;;
    esac
    for bin in kiri kiri-sensor; do
        "$strip_tool" -o "$out/$bin" "${CARGO_TARGET_DIR:-target}/$t/$profile/$bin"
        size=$(stat -c %s "$out/$bin")
        verdict="within the 10 MB budget"
        if [ "$size" -gt "$budget" ]; then verdict="OVER the 10 MB budget"; fi
        printf '%-34s %-12s %6.2f MB stripped (%s)\n' "$t" "$bin" "$(awk "BEGIN { print $size / 1048576 }")" "$verdict"
        [ "$size" -le "$budget" ] || exit 1
    done
done
