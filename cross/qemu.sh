#!/usr/bin/env bash
# Boots the simulated board (target/image, from cross/image.sh) on QEMU's aarch64 `virt`
# board, console on stdin/stdout (type `halt` to stop it cleanly). User networking is
# restricted to explicit forwards: the guest reaches only the host's site broker and cloud
# (guestfwd, one `nc 127.0.0.1 PORT` per connection), and the host reaches the board's
# dashboard on 127.0.0.1:$DASH_PORT (hostfwd).
#
# Knobs (environment, or make variables of `make qemu`):
#   LOCAL_PORT=1883   the host's site broker        CLOUD_PORT=8883  the host's cloud broker
#   DASH_PORT=8081    the dashboard on the host     TOKEN=...        the dashboard token
#   QEMU_MEM=256M     memory                        QEMU_CPUS=1      CPUs
#   QEMU_UPLINK=ok    `broken`: no route to the cloud at all
#   QEMU_DISK_MB=64   size of the board's data disk (a tmpfs): small = a full disk
#   QEMU_CLOCK=       a start date for the board's clock (`1970-01-01`: a board without RTC)
#   QEMU_DATA=        the data disk instead of the tmpfs: a QEMU drive file name (for the
#                     power-cut loop `nbd:unix:SOCKET`, cross/powercut/forgetful.py), ext4,
#                     on virtio-blk with write-back caching: the guest's flushes go through
#   QEMU_CONFIG=      `embedded`: Kiri's embedded broker on the board's port 1883, reached
#                     from the host on 127.0.0.1:$SENSOR_PORT (1884)
set -euo pipefail
cd "$(dirname "$0")/.."
for f in target/image/vmlinuz target/image/initrd.img; do
    [ -f "$f" ] || { echo "qemu: $f is missing: run make image" >&2; exit 1; }
done
command -v qemu-system-aarch64 >/dev/null || { echo "qemu: missing qemu-system-aarch64 (Debian: qemu-system-arm)" >&2; exit 1; }
command -v nc >/dev/null || { echo "qemu: missing nc (Debian: netcat-openbsd)" >&2; exit 1; }

LOCAL_PORT=${LOCAL_PORT:-1883}
CLOUD_PORT=${CLOUD_PORT:-8883}
DASH_PORT=${DASH_PORT:-8081}
TOKEN=${TOKEN:-qemu-board-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')}
net="user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:${DASH_PORT}-10.0.2.15:8080"
net+=",guestfwd=tcp:10.0.2.100:1883-cmd:nc 127.0.0.1 ${LOCAL_PORT}"
if [ "${QEMU_UPLINK:-ok}" != broken ]; then
    net+=",guestfwd=tcp:10.0.2.101:1883-cmd:nc 127.0.0.1 ${CLOUD_PORT}"
fi
rtc=()
[ -n "${QEMU_CLOCK:-}" ] && rtc=(-rtc "base=${QEMU_CLOCK}")
disk=() cmdline=""
if [ -n "${QEMU_DATA:-}" ]; then
    disk=(-drive "file=${QEMU_DATA},format=raw,if=virtio,cache=writeback")
    cmdline+=" kiri.data=vda"
fi
if [ -n "${QEMU_CONFIG:-}" ]; then
    cmdline+=" kiri.config=${QEMU_CONFIG}"
    net+=",hostfwd=tcp:127.0.0.1:${SENSOR_PORT:-1884}-10.0.2.15:1883"
fi
echo "qemu: dashboard http://127.0.0.1:${DASH_PORT}/#token=${TOKEN}" >&2
exec qemu-system-aarch64 -M virt -cpu cortex-a53 -m "${QEMU_MEM:-256M}" -smp "${QEMU_CPUS:-1}" \
    -nographic -no-reboot -monitor none -serial stdio "${rtc[@]}" "${disk[@]}" \
    -kernel target/image/vmlinuz -initrd target/image/initrd.img \
    -append "console=ttyAMA0 panic=-1 quiet kiri.token=${TOKEN} kiri.disk_mb=${QEMU_DISK_MB:-64}${cmdline}" \
    -netdev "$net" -device virtio-net-pci,netdev=n0,romfile=
