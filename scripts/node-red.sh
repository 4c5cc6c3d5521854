#!/usr/bin/env bash
# Node-RED as the reference peer of the end-to-end benchmark: the same flow as Kiri's trivial
# function (MQTT in -> `msg.topic = "<prefix>/" + msg.topic` -> MQTT out at QoS 1).
#
#   scripts/node-red.sh install
#       Installs the pinned Node-RED into .cache/node-red/ with `npm ci` against
#       bench/node-red/package-lock.json (Node.js >= 18.5; Debian's nodejs + npm are installed
#       with apt-get when run as root and missing). Does nothing when that version is installed.
#
#   scripts/node-red.sh run --broker-port P --cloud-port C --topic 'bench/#' \
#       --prefix 'kiri/gw-bench' --qos 0|1 --dir DIR [--functions N] [--log-level warn]
#       Writes DIR/settings.js and DIR/flows.json and runs Node-RED in the foreground (exec: its
#       pid is this script's pid; SIGTERM stops it cleanly). With N > 1 chain i subscribes to
#       bench/<i>/# and --topic is not used. Prints exactly one line on stdout, `node-red: ready`,
#       once both brokers are connected and the subscriptions are active (a probe round trip on
#       each connection, see bench/node-red/make-userdir.js); Node-RED's log goes to stderr.
set -euo pipefail

NODE_RED_VERSION=4.1.15 # Node-RED 5 needs Node.js >= 22.9; Debian 12 ships 18.19
NODE_MIN_MAJOR=18
NODE_MIN_MINOR=5

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pkg="$root/bench/node-red"
dest="$root/.cache/node-red"
stamp="$dest/.installed"

say() { printf 'node-red.sh: %s\n' "$*" >&2; }
die() {
    say "$*"
    exit 1
}

usage() {
    sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

check_node() {
    local v major minor
    v=$(node --version 2>/dev/null) || die "node is not installed"
    v=${v#v}
    major=${v%%.*}
    minor=${v#*.}
    minor=${minor%%.*}
    if [ "$major" -lt "$NODE_MIN_MAJOR" ] ||
        { [ "$major" -eq "$NODE_MIN_MAJOR" ] && [ "$minor" -lt "$NODE_MIN_MINOR" ]; }; then
        die "Node.js $v is too old: Node-RED $NODE_RED_VERSION needs Node.js >= $NODE_MIN_MAJOR.$NODE_MIN_MINOR"
    fi
}

ensure_node_npm() {
    local missing=()
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    [ ${#missing[@]} -eq 0 ] && return
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        die "missing: ${missing[*]} (Node.js >= $NODE_MIN_MAJOR.$NODE_MIN_MINOR with npm) -- on Debian: sudo apt-get install -y ${missing[*]}"
    fi
    say "installing ${missing[*]} with apt-get"
    if ! apt-get install -y --no-install-recommends "${missing[@]}" >&2; then
        apt-get update >&2
        apt-get install -y --no-install-recommends "${missing[@]}" >&2
    fi
}

# The stamp holds the version and the lock file's hash: a changed lock or an interrupted
# `npm ci` (no stamp yet) means a fresh install.
wanted_stamp() {
    printf '%s %s\n' "$NODE_RED_VERSION" "$(sha256sum "$pkg/package-lock.json" | cut -d' ' -f1)"
}

installed() {
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(wanted_stamp)" ] &&
        [ -f "$dest/node_modules/node-red/red.js" ]
}

cmd_install() {
    grep -q "\"node-red\": \"$NODE_RED_VERSION\"" "$pkg/package.json" ||
        die "bench/node-red/package.json does not pin node-red $NODE_RED_VERSION (update both together)"
    if installed && command -v node >/dev/null 2>&1; then
        check_node
        say "node-red $NODE_RED_VERSION is installed in .cache/node-red"
        return
    fi
    ensure_node_npm
    check_node
    say "installing node-red $NODE_RED_VERSION into .cache/node-red"
    mkdir -p "$dest"
    rm -f "$stamp"
    cp "$pkg/package.json" "$pkg/package-lock.json" "$dest/"
    (cd "$dest" && npm ci --no-audit --no-fund --omit=dev --loglevel=error >&2)
    local got
    got=$(node -p 'require(process.argv[1]).version' "$dest/node_modules/node-red/package.json")
    [ "$got" = "$NODE_RED_VERSION" ] || die "installed node-red $got, expected $NODE_RED_VERSION"
    wanted_stamp >"$stamp"
    say "node-red $NODE_RED_VERSION installed ($(du -sh "$dest" | cut -f1))"
}

cmd_run() {
    local broker_port="" cloud_port="" topic="" prefix="" qos="" dir="" functions=1 log_level=warn
    while [ $# -gt 0 ]; do
        [ $# -ge 2 ] || usage
        case "$1" in
        --broker-port) broker_port=$2 ;;
        --cloud-port) cloud_port=$2 ;;
        --topic) topic=$2 ;;
        --prefix) prefix=$2 ;;
        --qos) qos=$2 ;;
        --dir) dir=$2 ;;
        --functions) functions=$2 ;;
        --log-level) log_level=$2 ;;
        *) usage ;;
        esac
        shift 2
    done
    [ -n "$broker_port" ] && [ -n "$cloud_port" ] && [ -n "$prefix" ] && [ -n "$qos" ] &&
        [ -n "$dir" ] || usage
    if [ "$functions" = 1 ] && [ -z "$topic" ]; then usage; fi
    command -v node >/dev/null 2>&1 || die "node is not installed: run scripts/node-red.sh install"
    check_node
    installed || die "node-red $NODE_RED_VERSION is not installed: run scripts/node-red.sh install"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    # After exec, $$ is Node-RED's pid: it tags the client ids and probe topics.
    node "$pkg/make-userdir.js" --broker-port "$broker_port" --cloud-port "$cloud_port" \
        --topic "${topic:-unused}" --prefix "$prefix" --qos "$qos" --dir "$dir" \
        --functions "$functions" --log-level "$log_level" --tag "$$"
    # NODE_RED_HOME is not needed: --settings names the file. --no-telemetry is belt and braces.
    exec node "$dest/node_modules/node-red/red.js" --userDir "$dir" --settings "$dir/settings.js" \
        --no-telemetry
}

case "${1:-}" in
install) cmd_install ;;
run)
    shift
    cmd_run "$@"
    ;;
*) usage ;;
esac
