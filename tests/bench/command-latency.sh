#!/usr/bin/env bash
# Drop-off to device latency on drogue-local (release build): a device long-polls with
# ct=10, commands are dropped off one after the other, and each is timed from the start
# of its drop-off request to its arrival in the device's poll answer.
#
#   tests/bench/command-latency.sh [count]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
count=${1:-1000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${DROGUE_CACHE_DIR:-$HOME/.cache/drogue-serverless}/target}
cargo build --release --locked -p drogue-local -p drogue-loadgen
bin=$CARGO_TARGET_DIR/release
data=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$data"' EXIT

RUST_LOG=warn "$bin/drogue-local" --coap-bind off --data-dir "$data" --mqtt-bind off --mqtts-bind off --http-bind 127.0.0.1:0 --https-bind off --ready-file "$data/ready.json" >/dev/null &
for _ in $(seq 1 100); do [ -s "$data/ready.json" ] && break; sleep 0.1; done
base=http://$(python3 -c "import json,sys; print(json.load(open('$data/ready.json'))['http'])")
token=$(cat "$data/admin-token")
api=$base/api/registry/v1alpha1
curl -fs -u "$token" -X POST "$api/apps" -d '{"metadata":{"name":"bench"}}' >/dev/null
curl -fs -u "$token" -X POST "$api/apps/bench/devices" \
  -d '{"metadata":{"name":"device1"},"spec":{"authentication":{"credentials":[{"pass":"secret"}]}}}' >/dev/null
echo "machine: $(nproc) cores, $(uname -m)"
"$bin/drogue-loadgen" command-latency "$base" --token "$token" --device device1@bench:secret --count "$count"
