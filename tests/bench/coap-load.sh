#!/usr/bin/env bash
# CoAP telemetry through drogue-local (release build, confirmable POSTs with option 4209,
# one request at a time per client, each client its own UDP peer) against a bare UDP
# echo server, with the same load generator in the same run; then the same over DTLS 1.2
# with the device's pre-shared key (one handshake per client before the clock starts).
# Only answered requests count (2.04 from drogue-local, the echoed request from the echo
# server), matched by message id and token. Every request to drogue-local is numbered,
# and after each run an application's MQTT 5 persistent session, subscribed before it,
# reads back the events it missed from the event log: every request answered 2.04 must be
# among them by id (`--by-id`; the load generator fails otherwise). The broker is idle
# during the runs.
#
#   tests/bench/coap-load.sh [seconds] [clients]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
seconds=${1:-10}
clients=${2:-16}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${DROGUE_CACHE_DIR:-$HOME/.cache/drogue-serverless}/target}
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

# (the event log keeps every event of the runs, for the check by id)
RUST_LOG=warn "$bin/drogue-local" --data-dir "$data" --mqtt-bind 127.0.0.1:18083 --mqtts-bind off \
  --http-bind 127.0.0.1:18080 --https-bind off --coap-bind 127.0.0.1:15684 \
  --coaps-bind 127.0.0.1:15685 \
  --publish-rate 0 --event-retention 10000000 >/dev/null &
"$bin/drogue-loadgen" bare-udp --bind 127.0.0.1:15683 &
for _ in $(seq 1 100); do
  curl -fs -o /dev/null http://127.0.0.1:18080/.well-known/drogue-version && break
  sleep 0.1
done
token=$(cat "$data/admin-token")
api=http://127.0.0.1:18080/api/registry/v1alpha1
curl -fs -u "$token" -X POST "$api/apps" -d '{"metadata":{"name":"bench"}}' >/dev/null
curl -fs -u "$token" -X POST "$api/apps/bench/devices" \
  -d '{"metadata":{"name":"device1"},"spec":{"authentication":{"credentials":[{"pass":"secret1"},{"psk":{"key":"a2V5MQ=="}}]}}}' >/dev/null

echo "machine: $(nproc) cores, $(uname -m); $clients clients, one request in flight each"
"$bin/drogue-loadgen" coap 127.0.0.1:15683 --echo --seconds "$seconds" --clients "$clients" | tee "$data/bare"
by_id=(--by-id 127.0.0.1:18083 --subscriber "$token" --filter app/bench)
"$bin/drogue-loadgen" coap 127.0.0.1:15684 --seconds "$seconds" --clients "$clients" \
  --device device1@bench:secret1 "${by_id[@]}" | tee "$data/local"
"$bin/drogue-loadgen" coap 127.0.0.1:15685 --seconds "$seconds" --clients "$clients" \
  --psk device1@bench:key1 "${by_id[@]}" | tee "$data/dtls"
events=$(curl -fs http://127.0.0.1:18080/metrics | awk '/^drogue_event_commits_total/ {print $2}')
bare=$(sed -E 's/.*: ([0-9]+) req\/s.*/\1/' "$data/bare")
local=$(sed -nE 's/.*: ([0-9]+) req\/s.*/\1/p' "$data/local")
dtls=$(sed -nE 's/.*: ([0-9]+) req\/s.*/\1/p' "$data/dtls")
python3 - <<PY
bare, local, dtls = $bare, $local, $dtls
print(f"drogue-local CoAP: {local} req/s; bare UDP echo: {bare} req/s; ratio {local / max(bare, 1):.2f}")
print(f"drogue-local CoAP over DTLS (PSK): {dtls} req/s; ratio {dtls / max(bare, 1):.2f}")
print("event log commits during the run: $events")
PY
