#!/usr/bin/env bash
# Installs what `make run` / `make test` need and says clearly what is missing otherwise.
#   scripts/setup.sh run    the wasm32 Rust target (to build the example functions)
#   scripts/setup.sh lint   the same, plus the thumbv7 targets (the firmware is linted for them)
#   scripts/setup.sh test   the same, plus Mosquitto (the tests' cloud and external broker),
#                           clang + lld + wasi-libc (to build the C example functions), the thumbv7 and
#                           aarch64 Rust targets, qemu (the sensor node and the simulated board),
#                           and Chromium with chromedriver (the dashboard's browser test)
#   scripts/setup.sh fuzz   the wasm32 target (the host ABI's guest), the nightly toolchain and
#                           cargo-fuzz (pinned), for `make fuzz`
#   scripts/setup.sh as     Node.js and npm only, for the AssemblyScript SDK and example
#                           (`make functions-as`, `make test-as-sdk`); `test` installs them too
set -euo pipefail
what="${1:-run}"
missing=0

say() { printf 'setup: %s\n' "$*" >&2; }

if [ "$what" != "as" ]; then
    if ! command -v cargo >/dev/null 2>&1; then
        say "cargo is not installed: install Rust from https://rustup.rs, then run this again"
        exit 1
    fi

    # wasm32-wasip1: the WASI examples (Rust with std).
    targets=(wasm32-unknown-unknown wasm32-wasip1)
    # The sensor node firmware: built for Cortex-M4F and Cortex-M3 (QEMU's board) by `make test`.
    case "$what" in test | lint) targets+=(thumbv7em-none-eabihf thumbv7m-none-eabi) ;; esac
    # The simulated board runs the static aarch64 build.
    [ "$what" = test ] && targets+=(aarch64-unknown-linux-musl)
    installed=$(rustup target list --installed 2>/dev/null)
    for t in "${targets[@]}"; do
        if ! grep -qx "$t" <<<"$installed"; then
            say "adding the Rust target $t"
            rustup target add "$t"
        fi
    done
fi

apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        say "missing: $* -- install with: sudo apt-get install -y $*"
        missing=1
        return
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        say "missing: $* -- install them with your package manager"
        missing=1
        return
    fi
    say "installing $* (Debian packages)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }; then
        say "apt-get could not install $*"
        missing=1
    fi
}

# `make lint` checks the dependency graph (advisories, licenses, bans, sources) with cargo-deny.
DENY_VERSION=0.20.2
if [ "$what" = "lint" ] && ! cargo deny --version 2>/dev/null | grep -q " $DENY_VERSION\$"; then
    say "installing cargo-deny $DENY_VERSION (cargo install, a few minutes)"
    if ! cargo install cargo-deny --locked --version "$DENY_VERSION" --quiet; then
        say "could not install cargo-deny $DENY_VERSION"
        missing=1
    fi
fi

# `make fuzz` runs libFuzzer through cargo-fuzz, which needs a nightly compiler.
FUZZ_VERSION=0.13.2
if [ "$what" = "fuzz" ]; then
    if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
        say "installing the nightly toolchain (for cargo-fuzz)"
        if ! rustup toolchain install nightly --profile minimal; then
            say "could not install the nightly toolchain"
            missing=1
        fi
    fi
    if ! cargo fuzz --version 2>/dev/null | grep -q " $FUZZ_VERSION\$"; then
        say "installing cargo-fuzz $FUZZ_VERSION (cargo install, a minute or two)"
        if ! cargo install cargo-fuzz --locked --version "$FUZZ_VERSION" --quiet; then
            say "could not install cargo-fuzz $FUZZ_VERSION"
            missing=1
        fi
    fi
fi

# A clean `make test` takes about 6 GB under target/ (debug builds with line tables only,
# the release, device and wasm builds, the board's image); say so before a build fills the disk.
if [ "$what" = "test" ]; then
    mkdir -p target
    free_kb=$(df -Pk target | awk 'NR == 2 { print $4 }')
    if [ "${free_kb:-0}" -lt $((7 * 1024 * 1024)) ]; then
        say "warning: $((free_kb / 1024)) MB free under target/; a clean \`make test\` needs about 6 GB"
    fi
fi

if [ "$what" = "test" ]; then
    need=()
    if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
        need+=(mosquitto)
    fi
    # The payload-format tests publish device samples with mosquitto_pub, and read CloudEvents
    # with jq and with the `cloudevents` SDK from PyPI in a throwaway venv.
    command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
    command -v jq >/dev/null 2>&1 || need+=(jq)
    command -v python3 >/dev/null 2>&1 || need+=(python3)
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
    # The C example functions are built with clang for wasm32 and linked with wasm-ld (lld);
    # the C SDK's threshold also with wasi-libc (its sysroot, and clang's wasm32 builtins).
    command -v clang >/dev/null 2>&1 || need+=(clang)
    command -v wasm-ld >/dev/null 2>&1 || need+=(lld)
    [ -e "$(clang --target=wasm32-wasi -print-file-name=crt1-reactor.o 2>/dev/null)" ] ||
        need+=(wasi-libc)
    [ -e "$(clang --target=wasm32-wasi -print-libgcc-file-name 2>/dev/null)" ] ||
        need+=(libclang-rt-dev-wasm32)
    # The C SDK's native tests are built with cc, also with ASan and UBSan (gcc's runtimes).
    command -v cc >/dev/null 2>&1 || need+=(gcc)
    # The Cortex-M sensor node and the aarch64 board run under QEMU in the end-to-end tests
    # (qemu-system-arm has both); the board's image is a cpio archive; its network forwards
    # run nc; ring's C code for aarch64 is built with the gnu cross compiler.
    command -v qemu-system-arm >/dev/null 2>&1 || need+=(qemu-system-arm)
    command -v qemu-system-aarch64 >/dev/null 2>&1 || need+=(qemu-system-arm)
    command -v cpio >/dev/null 2>&1 || need+=(cpio)
    command -v nc >/dev/null 2>&1 || need+=(netcat-openbsd)
    command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu)
    # The packages' binaries run under QEMU's user mode (qemu-aarch64, qemu-arm); the armhf
    # build links glibc with the armhf cross compiler, whose libraries qemu-arm loads.
    command -v qemu-arm >/dev/null 2>&1 || need+=(qemu-user)
    # The SD card's layout is checked with the tools that make it (FAT, MBR, ext4).
    command -v mkfs.vfat >/dev/null 2>&1 || need+=(dosfstools)
    command -v mcopy >/dev/null 2>&1 || need+=(mtools)
    command -v sfdisk >/dev/null 2>&1 || need+=(fdisk)
    command -v debugfs >/dev/null 2>&1 || need+=(e2fsprogs)
    # The disk that forgets (cross/powercut): nbdkit with its Python plugin, driven in its test
    # by libnbd's Python client (Debian's python3, not another python3 on PATH).
    command -v nbdkit >/dev/null 2>&1 || need+=(nbdkit)
    ls /usr/lib/*/nbdkit/plugins/nbdkit-python-plugin.so >/dev/null 2>&1 || need+=(nbdkit-plugin-python)
    /usr/bin/python3 -c 'import nbd' >/dev/null 2>&1 || need+=(python3-libnbd)
    command -v arm-linux-gnueabihf-gcc >/dev/null 2>&1 || need+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
    # Clock steps are tried on the gateway alone with libfaketime (LD_PRELOAD).
    ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || need+=(libfaketime)
    # /metrics is checked with promtool (Debian's prometheus package; its service is not
    # needed and not started by the tests).
    command -v promtool >/dev/null 2>&1 || need+=(prometheus)
    # The Debian package is checked with lintian, and its units with systemd-analyze.
    command -v lintian >/dev/null 2>&1 || need+=(lintian)
    command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
    # The dashboard page is tested in headless Chromium, driven over WebDriver.
    [ -x /usr/bin/chromium ] || need+=(chromium)
    [ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
    if [ "${#need[@]}" -gt 0 ]; then
        apt_install "${need[@]}"
    fi
fi

# The AssemblyScript SDK's compiler and tests run on Node.js, installed from the lock files with
# npm: Debian's nodejs and npm, as scripts/node-red.sh installs them for Node-RED. AssemblyScript
# 0.28 declares Node.js >= 20, but Debian 12's 18.20 builds the same bytes and passes the tests.
NODE_MIN_MAJOR=18
if [ "$what" = "as" ] || [ "$what" = "test" ]; then
    need=()
    command -v node >/dev/null 2>&1 || need+=(nodejs)
    command -v npm >/dev/null 2>&1 || need+=(npm)
    if [ "${#need[@]}" -gt 0 ]; then
        apt_install "${need[@]}"
    fi
    if command -v node >/dev/null 2>&1; then
        node_version=$(node --version)
        node_major=${node_version#v}
        node_major=${node_major%%.*}
        if [ "$node_major" -lt "$NODE_MIN_MAJOR" ]; then
            say "Node.js $node_version is too old for the AssemblyScript SDK: it needs $NODE_MIN_MAJOR or newer"
            missing=1
        fi
    fi
fi

if [ "$missing" -ne 0 ]; then
    say "cannot continue until the packages above are installed"
    exit 1
fi
