#!/usr/bin/env bash
# Fetches the dashboard's vendored asset, uPlot (MIT, https://github.com/leeoniya/uPlot), from
# the npm registry into gateway/assets/vendor/ (gitignored), checking the tarball against the
# integrity hash pinned here. The gateway embeds these files in its binary; its build stops with
# a message pointing here when they are missing. Run it again after changing the pin.
set -euo pipefail

UPLOT_VERSION="1.6.32"
# `npm view uplot@<version> dist.integrity`
UPLOT_INTEGRITY="sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw=="

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/gateway/assets/vendor"
stamp="$dest/.uplot-$UPLOT_VERSION"
files=(uPlot.iife.min.js uPlot.min.css LICENSE)

say() { printf 'assets: %s\n' "$*" >&2; }

# Already there for this pin: nothing to do (no network needed).
have_all=1
for f in "${files[@]}"; do [ -s "$dest/$f" ] || have_all=0; done
if [ "$have_all" -eq 1 ] && [ -f "$stamp" ]; then
    exit 0
fi

for tool in curl tar openssl base64; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        say "$tool is needed to fetch uPlot (apt-get install $tool)"
        exit 1
    fi
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
url="https://registry.npmjs.org/uplot/-/uplot-$UPLOT_VERSION.tgz"
say "fetching uPlot $UPLOT_VERSION from $url"
if ! curl -fsSL --retry 3 --max-time 120 -o "$tmp/uplot.tgz" "$url"; then
    say "could not download $url (is the npm registry reachable?)"
    exit 1
fi

want="${UPLOT_INTEGRITY#sha512-}"
got="$(openssl dgst -sha512 -binary "$tmp/uplot.tgz" | base64 -w0)"
if [ "$got" != "$want" ]; then
    say "INTEGRITY MISMATCH for $url"
    say "  pinned:     sha512-$want"
    say "  downloaded: sha512-$got"
    say "refusing to use it; nothing was installed"
    exit 1
fi

tar -xzf "$tmp/uplot.tgz" -C "$tmp" package/dist/uPlot.iife.min.js package/dist/uPlot.min.css package/LICENSE
mkdir -p "$dest"
rm -f "$dest"/.uplot-*
cp "$tmp/package/dist/uPlot.iife.min.js" "$tmp/package/dist/uPlot.min.css" "$tmp/package/LICENSE" "$dest/"
touch "$stamp"
say "uPlot $UPLOT_VERSION (sha512 checked) in ${dest#"$root"/}"
