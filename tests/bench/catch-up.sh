#!/usr/bin/env bash
# A resuming consumer's catch-up rate on drogue-local (release build): an application's
# MQTT 5 persistent session subscribes to app/bench at QoS 1 and disconnects, a device
# publishes `count` events over HTTP, the session reconnects and receives them all from
# the event log.
#
#   tests/bench/catch-up.sh [count]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
count=${1:-10000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${DROGUE_CACHE_DIR:-$HOME/.cache/drogue-serverless}/target}
cargo build --release --locked -p drogue-local -p drogue-loadgen
bin=$CARGO_TARGET_DIR/release
data=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$data"' EXIT

RUST_LOG=warn "$bin/drogue-local" --coap-bind off --data-dir "$data" --http-bind 127.0.0.1:0 --https-bind off \
  --mqtt-bind 127.0.0.1:0 --mqtts-bind off --publish-rate 0 --event-retention "$count" --ready-file "$data/ready.json" >/dev/null &
for _ in $(seq 1 100); do [ -s "$data/ready.json" ] && break; sleep 0.1; done
http=$(python3 -c "import json; print(json.load(open('$data/ready.json'))['http'])")
mqtt=$(python3 -c "import json; print(json.load(open('$data/ready.json'))['mqtt'])")
token=$(cat "$data/admin-token")
api=http://$http/api/registry/v1alpha1
curl -fs -u "$token" -X POST "$api/apps" -d '{"metadata":{"name":"bench"}}' >/dev/null
curl -fs -u "$token" -X POST "$api/apps/bench/devices" \
  -d '{"metadata":{"name":"device1"},"spec":{"authentication":{"credentials":[{"pass":"secret"}]}}}' >/dev/null
echo "machine: $(nproc) cores, $(uname -m)"
"$bin/drogue-loadgen" catch-up "$mqtt" "$http" --subscriber "$token" \
  --device device1@bench:secret --count "$count"
