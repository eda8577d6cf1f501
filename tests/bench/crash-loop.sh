#!/usr/bin/env bash
# The crash test, many times: drogue-local is killed with SIGKILL while MQTT QoS 1 and
# HTTP devices publish, restarted on the same data directory, and a resuming consumer
# (an MQTT 5 persistent session) must receive every acknowledged event. CI runs 3 rounds;
# this runs as many as asked (the test's debug build, as CI).
#
#   tests/bench/crash-loop.sh [rounds]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
rounds=${1:-100}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${DROGUE_CACHE_DIR:-$HOME/.cache/drogue-serverless}/target}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "machine: $(nproc) cores, $(uname -m); $rounds rounds"
DROGUE_CRASH_ROUNDS=$rounds cargo test --locked -p drogue-local --test black_box \
  nothing_acknowledged_is_lost_when_the_runner_is_killed -- --nocapture 2>&1 | tee "$log" \
  | grep -E '^crash (round|test)' || true
grep -q '^test crash::nothing_acknowledged_is_lost_when_the_runner_is_killed ... ok' "$log" \
  || { echo "the crash test failed"; grep -E 'panicked|lost:' "$log" || true; exit 1; }
awk '/^crash round/ { a += $5; r += $7; l += $11; n++ } END { printf "rounds %d: acknowledged %d, received %d, lost %d\n", n, a, r, l }' "$log"
