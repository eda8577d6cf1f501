#!/usr/bin/env bash
# Registry GET-device throughput through drogue-local (release build), against a bare
# hyper server answering a fixed 200, with the same load generator in the same run.
#
#   tests/bench/registry-load.sh [seconds] [connections]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
seconds=${1:-10}
connections=${2:-16}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${DROGUE_CACHE_DIR:-$HOME/.cache/drogue-serverless}/target}
cargo build --release --locked -p drogue-local -p drogue-loadgen
bin=$CARGO_TARGET_DIR/release
data=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$data"' EXIT

RUST_LOG=warn "$bin/drogue-local" --coap-bind off --data-dir "$data" --mqtt-bind off --mqtts-bind off --http-bind 127.0.0.1:18080 >/dev/null &
"$bin/drogue-loadgen" bare-server --bind 127.0.0.1:18081 >/dev/null &
for _ in $(seq 1 100); do
  curl -fs -o /dev/null http://127.0.0.1:18080/.well-known/drogue-version && break
  sleep 0.1
done
token=$(cat "$data/admin-token")
api=http://127.0.0.1:18080/api/registry/v1alpha1
curl -fs -u "$token" -X POST "$api/apps" -d '{"metadata":{"name":"bench"}}' >/dev/null
curl -fs -u "$token" -X POST "$api/apps/bench/devices" \
  -d '{"metadata":{"name":"device1"},"spec":{"authentication":{"credentials":[{"pass":{"sha512":"$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1"}}]}}}' >/dev/null

echo "machine: $(nproc) cores, $(uname -m)"
"$bin/drogue-loadgen" run http://127.0.0.1:18081/ --seconds "$seconds" --connections "$connections" | tee "$data/bare"
"$bin/drogue-loadgen" run "$api/apps/bench/devices/device1" --basic "$token" --seconds "$seconds" --connections "$connections" | tee "$data/registry"
"$bin/drogue-loadgen" run http://127.0.0.1:18080/.well-known/drogue-version --seconds "$seconds" --connections "$connections" | tee "$data/open"
"$bin/drogue-loadgen" run http://127.0.0.1:18080/api/admin/v1alpha1/user/whoami --basic "$token" --seconds "$seconds" --connections "$connections" | tee "$data/authenticated"
rate() { sed -E 's/.*: ([0-9]+) req\/s.*/\1/' "$data/$1"; }
python3 -c "print(f'registry GET device / bare hyper 200: {$(rate registry) / $(rate bare):.2f}')"
python3 -c "print(f'authenticated whoami / unauthenticated drogue-version: {$(rate authenticated) / $(rate open):.2f}')"
