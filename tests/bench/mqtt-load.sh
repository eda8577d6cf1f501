#!/usr/bin/env bash
# MQTT, device to application, on drogue-local's broker and on a plain mosquitto (the
# Debian package, installed if missing) in the same run: 100 devices publish telemetry
# as fast as the broker takes it, one application subscribes; QoS 0 and QoS 1.
# drogue-local authenticates every device (password), checks every publish and
# subscription against the client's policy, wraps each message in a CloudEvent, writes
# it to the event log and delivers it on app/{app}; mosquitto passes messages through
# (anonymous, dt/# to the subscriber).
#
# Devices publish at offered rates (all together), to see what reaches the subscriber at
# each: QoS 0 has no flow control, and a broker that acknowledges QoS 1 publishes before
# delivering them (as mosquitto does) lets unpaced publishers starve the subscriber.
#
# Every message carries its device and number; after each run the load generator prints
# "by id: A acknowledged, R received (D duplicates), L acknowledged never received" (at
# QoS 0: sent), so a rate is never reported without what was lost.
# A last QoS 1 run is unpaced (each device keeps up to 32 publishes unacknowledged).
# DROGUE_BENCH_RETENTION: drogue-local's --event-retention, 5,000,000 by default: a
# subscriber that falls behind goes on from the event log, which must still hold what it
# has not read; with the default 10,000 events (a fifth of a second at 50,000 msg/s) a
# subscriber that lags further misses the oldest (logged), and the load generator
# reports them as acknowledged and never received. Unpaced publishers outrun the one
# subscriber (about 170,000 msg/s acknowledged against 25,000 delivered), so a 10 s run
# lags by well over a million events; the log then takes up to about 3 GB (about 580
# bytes an event) in a temporary directory.
#
#   tests/bench/mqtt-load.sh [seconds] [devices]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
seconds=${1:-10}
devices=${2:-100}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${DROGUE_CACHE_DIR:-$HOME/.cache/drogue-serverless}/target}
if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y --no-install-recommends mosquitto >/dev/null
fi
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
# DROGUE_BENCH_BIN: a directory holding drogue-local and drogue-loadgen release binaries to
# measure instead of building this tree (e.g. an earlier commit's, for a before/after pair)
if [ -n "${DROGUE_BENCH_BIN:-}" ]; then
  bin=$DROGUE_BENCH_BIN
else
  cargo build --release --locked -p drogue-local -p drogue-loadgen
  bin=$CARGO_TARGET_DIR/release
fi
data=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$data"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
echo "machine: $(nproc) cores, $(uname -m); $("$mosquitto" -h | head -1)"

# drogue-local
mqtt=127.0.0.1:$(port)
RUST_LOG=warn "$bin/drogue-local" --coap-bind off --coaps-bind off --data-dir "$data/local" --http-bind 127.0.0.1:0 --https-bind off \
  --mqtt-bind "$mqtt" --mqtts-bind off --publish-rate 0 --event-retention "${DROGUE_BENCH_RETENTION:-5000000}" \
  --ready-file "$data/ready.json" >/dev/null &
for _ in $(seq 1 100); do [ -s "$data/ready.json" ] && break; sleep 0.1; done
base=http://$(python3 -c "import json; print(json.load(open('$data/ready.json'))['http'])")
token=$(cat "$data/local/admin-token")
api=$base/api/registry/v1alpha1
curl -fs -u "$token" -X POST "$api/apps" -d '{"metadata":{"name":"bench"}}' >/dev/null
for i in $(seq 0 $((devices - 1))); do
  curl -fs -u "$token" -X POST "$api/apps/bench/devices" \
    -d "{\"metadata\":{\"name\":\"dev$i\"},\"spec\":{\"authentication\":{\"credentials\":[{\"pass\":\"secret\"}]}}}" >/dev/null
done
rates=${DROGUE_BENCH_RATES:-"20000 40000 60000 80000"}
local_run() {
  printf 'drogue-local  '
  "$bin/drogue-loadgen" mqtt "$mqtt" --devices "$devices" --seconds "$seconds" \
    --device-password secret --subscriber "$token" --filter app/bench "$@"
}
for qos in 0 1; do
  for rate in $rates; do local_run --qos "$qos" --rate "$rate"; done
done
local_run --qos 1
kill %1; wait %1 2>/dev/null || true

# mosquitto, anonymous, passing messages through
plain=$(port)
# (as many unacknowledged QoS 1 messages per client as the local broker allows)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 100\nmax_queued_messages 100000\n' \
  "$plain" >"$data/mosquitto.conf"
"$mosquitto" -c "$data/mosquitto.conf" >/dev/null 2>&1 &
sleep 0.5
plain_run() {
  printf 'mosquitto     '
  "$bin/drogue-loadgen" mqtt "127.0.0.1:$plain" --devices "$devices" --seconds "$seconds" --filter 'dt/#' "$@"
}
for qos in 0 1; do
  for rate in $rates; do plain_run --qos "$qos" --rate "$rate"; done
done
plain_run --qos 1
