#!/usr/bin/env bash
# Installs what `make run` / `make test` need and says clearly what is missing otherwise.
#   scripts/setup.sh run    the wasm32 Rust target (to build the example functions)
#   scripts/setup.sh test   the same, plus Mosquitto (the tests' cloud and external broker),
#                           clang + lld (to build the C example function), and Chromium with
#                           chromedriver (the dashboard's browser test)
set -euo pipefail
what="${1:-run}"
missing=0

say() { printf 'setup: %s\n' "$*" >&2; }

if ! command -v cargo >/dev/null 2>&1; then
    say "cargo is not installed: install Rust from https://rustup.rs, then run this again"
    exit 1
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    say "adding the Rust target wasm32-unknown-unknown (for the example functions)"
    rustup target add wasm32-unknown-unknown
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

if [ "$what" = "test" ]; then
    need=()
    if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
        need+=(mosquitto mosquitto-clients)
    fi
    # The C example function is built with clang for wasm32 and linked with wasm-ld (lld).
    command -v clang >/dev/null 2>&1 || need+=(clang)
    command -v wasm-ld >/dev/null 2>&1 || need+=(lld)
    # The dashboard page is tested in headless Chromium, driven over WebDriver.
    [ -x /usr/bin/chromium ] || need+=(chromium)
    [ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
    if [ "${#need[@]}" -gt 0 ]; then
        apt_install "${need[@]}"
    fi
fi

if [ "$missing" -ne 0 ]; then
    say "cannot continue until the packages above are installed"
    exit 1
fi
