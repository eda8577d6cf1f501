#!/usr/bin/env bash
# HTTP telemetry through drogue-local (release build, password auth, keep-alive) against
# a bare hyper server answering 202, with the same load generator in the same run; and
# the share of requests that ran a slow password hash (from drogue-local's /metrics).
# Every request is numbered; after the run an application's MQTT 5 persistent session,
# subscribed before it, reads back every event it missed from the event log, and every
# request answered 202 must be among them by id ("by id: ... acknowledged never
# received"; the load generator fails otherwise). The broker is idle during the run.
# With DROGUE_BENCH_LIVE=1 a last run keeps the application's session connected and
# receiving through it ("live: N events received by the application during the run").
# With DROGUE_BENCH_ROUNDS=N (default 1) bare hyper and drogue-local take turns N times,
# each round's ratio printed, and the ratio of the medians last: the anchor's own rate
# moves by a fifth from one run to the next on this shared machine.
#
#   tests/bench/telemetry-load.sh [seconds] [connections] [devices]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
seconds=${1:-10}
connections=${2:-64}
devices=${3:-8}
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

# (the event log keeps every event of the run, for the check by id)
RUST_LOG=warn "$bin/drogue-local" --coap-bind off --coaps-bind off --data-dir "$data" --mqtt-bind 127.0.0.1:18083 --mqtts-bind off --http-bind 127.0.0.1:18080 --https-bind off \
  --publish-rate 0 --event-retention 10000000 >/dev/null &
"$bin/drogue-loadgen" bare-server --bind 127.0.0.1:18081 --accepted >/dev/null &
for _ in $(seq 1 100); do
  curl -fs -o /dev/null http://127.0.0.1:18080/.well-known/drogue-version && break
  sleep 0.1
done
token=$(cat "$data/admin-token")
api=http://127.0.0.1:18080/api/registry/v1alpha1
curl -fs -u "$token" -X POST "$api/apps" -d '{"metadata":{"name":"bench"}}' >/dev/null
for i in $(seq 1 "$devices"); do
  curl -fs -u "$token" -X POST "$api/apps/bench/devices" \
    -d "{\"metadata\":{\"name\":\"device$i\"},\"spec\":{\"authentication\":{\"credentials\":[{\"pass\":\"secret$i\"}]}}}" >/dev/null
done
checks() { curl -fs http://127.0.0.1:18080/metrics | awk '/^drogue_device_password_checks_total/ {print $2}'; }
commits() { curl -fs http://127.0.0.1:18080/metrics | awk '/^drogue_event_commits_total/ {print $2}'; }

rounds=${DROGUE_BENCH_ROUNDS:-1}
echo "machine: $(nproc) cores, $(uname -m); $connections connections; $devices devices; $rounds round(s)"
# one warm-up request per device fills the verification cache
for i in $(seq 1 "$devices"); do
  curl -fs -u "device$i@bench:secret$i" -X POST http://127.0.0.1:18080/v1/telemetry -d '{}' >/dev/null
done
# the connections authenticate as the devices, round robin
credentials=()
for i in $(seq 1 "$devices"); do credentials+=(--basic "device$i@bench:secret$i"); done
# a run against drogue-local, every 202 checked by id; more arguments after the rest
local_run() {
  "$bin/drogue-loadgen" run http://127.0.0.1:18080/v1/telemetry "${credentials[@]}" \
    --body '{"temp":21.5}' --seconds "$seconds" --connections "$connections" \
    --by-id 127.0.0.1:18083 --subscriber "$token" --filter app/bench "$@"
}
before=$(checks); commits_before=$(commits)
for round in $(seq 1 "$rounds"); do
  "$bin/drogue-loadgen" run http://127.0.0.1:18081/v1/telemetry --body '{"temp":21.5}' --numbered --seconds "$seconds" --connections "$connections" | tee "$data/bare-$round"
  local_run | tee "$data/local-$round"
done
after=$(checks); commits_after=$(commits)
if [ -n "${DROGUE_BENCH_LIVE:-}" ]; then
  # once more with the application's session connected through the run, receiving
  local_run --live | tee "$data/live"
fi
python3 - "$data" "$rounds" <<PY
import re, statistics, sys
data, rounds = sys.argv[1], int(sys.argv[2])
def rate(name):
    text = open(f"{data}/{name}").read()
    total = int(re.search(r": (\d+) requests in", text).group(1))
    return total, total / $seconds
bare = [rate(f"bare-{r}")[1] for r in range(1, rounds + 1)]
local = [rate(f"local-{r}") for r in range(1, rounds + 1)]
for r, (b, (total, l)) in enumerate(zip(bare, local), 1):
    print(f"round {r}: bare hyper {b:.0f} req/s, drogue-local {l:.0f} req/s ({total} requests over $connections connections), ratio {l / b:.2f}")
if rounds > 1:
    ratios = [l / b for b, (_, l) in zip(bare, local)]
    bare_median = statistics.median(bare)
    local_median = statistics.median(l for _, l in local)
    print(f"ratio to bare hyper 202, of the medians over {rounds} rounds: {local_median / bare_median:.2f} (drogue-local {local_median:.0f} req/s, bare {bare_median:.0f}; rounds {min(ratios):.2f}-{max(ratios):.2f})")
else:
    print(f"ratio to bare hyper 202: {local[0][1] / bare[0]:.2f}")
total = sum(t for t, _ in local)
slow = $after - $before
print(f"slow password hashes during the run(s): {slow} of {total} requests ({slow / max(total, 1):.6%})")
commits = $commits_after - $commits_before
print(f"event log commits: {commits}, {total / max(commits, 1):.1f} events per commit")
PY
