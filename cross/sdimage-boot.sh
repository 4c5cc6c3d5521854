#!/usr/bin/env bash
# Proves the SD image boots and runs Kiri (`make sd-image-boot`, after `make sd-image`): a copy
# of target/sd-image/kiri-sd-arm64.img gets a kiri-setup.txt and a kiri.toml on its boot
# partition, as a user would put them there, and boots under qemu-system-aarch64 (`virt`
# board: the image's own Debian kernel and initrd, its root and boot partitions found by
# label). Then, from this machine: a reading published to the board's embedded broker must
# reach a Mosquitto here as a result under the gateway id kiri-setup.txt set, and the
# dashboard token it set must be taken by the API. Exits non-zero, saying what failed.
#   BOOT_TIMEOUT=900 (seconds until the gateway must answer)
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'sd-image-boot: %s\n' "$*" >&2; }

img=target/sd-image/kiri-sd-arm64.img
root=target/sd-image/root
[ -f "$img" ] && [ -d "$root/boot" ] || { say "$img is missing: make sd-image"; exit 1; }
for c in qemu-system-aarch64 mcopy mosquitto_pub mosquitto_sub curl; do
    command -v "$c" >/dev/null || { say "$c is missing (scripts/setup.sh test installs it)"; exit 1; }
done
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
timeout=${BOOT_TIMEOUT:-900}
kernel=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)
initrd=$(ls "$root"/boot/initrd.img-* | sort -V | tail -1)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cloud_port=$(free_port)
site_port=$(free_port)
dash_port=$(free_port)

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

say "copying the image"
cp --sparse=always "$img" "$work/card.img"
token=sd-image-boot-token-0123456789abcdef
cat > "$work/kiri-setup.txt" <<EOF
# as a user writes it on the card's boot partition
hostname = "kiri-test"
gateway_id = "sd-test"
cloud_url = "mqtt://10.0.2.2:$cloud_port"
dashboard_token = "$token"
EOF
# A configuration of the user's own: sensors on the network, the dashboard reachable, the
# packaged example function. (gateway.id and cloud.url are then set by kiri-setup.txt.)
cat > "$work/kiri.toml" <<'EOF'
[gateway]
id = "replaced-by-kiri-setup"
data_dir = "/var/lib/kiri"
[broker]
mode = "embedded"
listen = "0.0.0.0:1883"
allow_anonymous = true
[cloud]
url = ""
[dashboard]
listen = "0.0.0.0:8080"
[[functions]]
name = "convert"
module = "/usr/lib/kiri/functions/convert.wasm"
triggers = ["sensors/+/temperature"]
EOF
mcopy -o -i "$work/card.img@@4M" "$work/kiri-setup.txt" "$work/kiri.toml" ::/

"$mosquitto" -p "$cloud_port" > "$work/cloud.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$cloud_port") 2>/dev/null && break; sleep 0.2; done
mosquitto_sub -p "$cloud_port" -t 'kiri/#' -C 1 -W "$timeout" -F '%t' > "$work/result.txt" 2> "$work/sub.err" &
sub=$!
pids+=($sub)

say "booting (console in $work/console.log while it runs)"
qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 -nographic \
    -kernel "$kernel" -initrd "$initrd" \
    -append "root=LABEL=RASPIROOT rw console=ttyAMA0 net.ifnames=0" \
    -drive "if=virtio,format=raw,file=$work/card.img" \
    -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$site_port-:1883,hostfwd=tcp:127.0.0.1:$dash_port-:8080" \
    -device virtio-net-pci,netdev=net0 > "$work/console.log" 2>&1 < /dev/null &
pids+=($!)

deadline=$((SECONDS + timeout))
until curl -sf "http://127.0.0.1:$dash_port/readyz" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
        say "the gateway did not answer on the board within $timeout s; console:"
        tail -50 "$work/console.log" >&2
        exit 1
    fi
    sleep 5
done
say "kiri answers on the board after $SECONDS s"
cargo run -q -p kiri -- reading --sensor s1 --kind temperature --value 21.5 --unit C > "$work/reading.cbor"
mosquitto_pub -p "$site_port" -t sensors/s1/temperature -q 1 -f "$work/reading.cbor"
wait "$sub" || { say "no result reached the cloud: $(cat "$work/sub.err")"; tail -50 "$work/console.log" >&2; exit 1; }
topic=$(cat "$work/result.txt")
case "$topic" in
    kiri/sd-test/*) ;;
    *) say "the result came on $topic, not under the gateway id kiri-setup.txt set (sd-test)"; exit 1 ;;
esac
status=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $token" \
    "http://127.0.0.1:$dash_port/api/v1/reload")
[ "$status" = 200 ] || { say "the dashboard token from kiri-setup.txt was not taken (reload answered $status)"; exit 1; }
for line in "made this board's SSH host keys" "kiri-setup.txt applied and deleted"; do
    grep -q "kiri-firstboot: $line" "$work/console.log" \
        || { say "the first boot did not say: $line"; tail -80 "$work/console.log" >&2; exit 1; }
done
say "booted in $SECONDS s, made its SSH host keys, applied kiri-setup.txt, and forwarded a reading ($topic)"
