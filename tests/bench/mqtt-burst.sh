#!/usr/bin/env bash
# A device's burst just before its connection ends, on drogue-local's broker and on a
# plain mosquitto (the Debian package, installed if missing) in the same run: a device
# writes N QoS 0 publishes and then DISCONNECT (or nothing) in one write and closes its
# socket at once, as a device that wakes up, sends what it measured and sleeps again;
# one application subscribes. Printed per MQTT version and ending: how many of the
# burst's messages the subscriber received in each round (a plain broker publishes them
# all). drogue-local runs with --publish-rate 0 (a burst over the device's rate would
# wait for it), or at DROGUE_BENCH_PUBLISH_RATE (for example 100, the default, to see
# a burst handled at the device's rate after the close; then the script waits up to
# 120 s for each burst, and mosquitto is not measured). Needs Eclipse Paho in the test
# virtualenv (`tests/run` installs it).
#
#   tests/bench/mqtt-burst.sh [publishes] [rounds]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
count=${1:-2000}
rounds=${2:-5}
cache=${DROGUE_CACHE_DIR:-$HOME/.cache/drogue-serverless}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}
python=${DROGUE_TEST_PYTHON:-$cache/venv/bin/python}
if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y --no-install-recommends mosquitto >/dev/null
fi
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
# DROGUE_BENCH_BIN: a directory holding a drogue-local release binary to measure instead
# of building this tree
if [ -n "${DROGUE_BENCH_BIN:-}" ]; then
  bin=$DROGUE_BENCH_BIN
else
  cargo build --release --locked -p drogue-local
  bin=$CARGO_TARGET_DIR/release
fi
rate=${DROGUE_BENCH_PUBLISH_RATE:-0}
max_wait=10; [ "$rate" = 0 ] || max_wait=120
data=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$data"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

mqtt=127.0.0.1:$(port)
RUST_LOG=warn "$bin/drogue-local" --coap-bind off --coaps-bind off --data-dir "$data/local" --http-bind 127.0.0.1:0 --https-bind off \
  --mqtt-bind "$mqtt" --mqtts-bind off --publish-rate "$rate" --ready-file "$data/ready.json" >/dev/null &
for _ in $(seq 1 100); do [ -s "$data/ready.json" ] && break; sleep 0.1; done
base=http://$(python3 -c "import json; print(json.load(open('$data/ready.json'))['http'])")
token=$(cat "$data/local/admin-token")
api=$base/api/registry/v1alpha1
curl -fs -u "$token" -X POST "$api/apps" -d '{"metadata":{"name":"bench"}}' >/dev/null
curl -fs -u "$token" -X POST "$api/apps/bench/devices" \
  -d '{"metadata":{"name":"dev0"},"spec":{"authentication":{"credentials":[{"pass":"secret"}]}}}' >/dev/null
echo "drogue-local"
"$python" tests/bench/mqtt-burst.py "$mqtt" --filter app/bench --device-topic dt/bench/dev0/temp \
  --device-login dev0@bench:dev0@bench:secret --subscriber-login "${token%%:*}/burst:$token" \
  --count "$count" --rounds "$rounds" --max-wait "$max_wait"
kill %1; wait %1 2>/dev/null || true
[ "$rate" = 0 ] || exit 0

plain=$(port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n' "$plain" >"$data/mosquitto.conf"
"$mosquitto" -c "$data/mosquitto.conf" >/dev/null 2>&1 &
sleep 0.5
echo "mosquitto ($("$mosquitto" -h | head -1))"
"$python" tests/bench/mqtt-burst.py "127.0.0.1:$plain" --filter 'dt/#' --device-topic dt/bench/dev0/temp \
  --count "$count" --rounds "$rounds"
