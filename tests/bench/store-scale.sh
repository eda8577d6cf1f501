#!/usr/bin/env bash
# How the embedded store's cost grows with the devices it holds (release builds):
# shared/benches/store_scale.rs fills a store of N devices (default 1,000,000: an
# application `big` of 100,000 labelled devices, the others in applications of 1,000)
# and prints the time to fill it, its size, the time to open it, device lookups, lists,
# a label selector and pages; then drogue-local's start-up time (start to ready file) on
# that data directory against an empty one.
#
#   tests/bench/store-scale.sh [devices] [devices of the big application]
#
# tests/bench/registry-paging.sh <data-dir> pages the big application over the API.
# KEEP_DIR=<dir>: fill the store there and keep it (else a temporary directory).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
devices=${1:-1000000}
big=${2:-100000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${DROGUE_CACHE_DIR:-$HOME/.cache/drogue-serverless}/target}
cargo build --release --locked -p drogue-local
cargo bench --locked -p drogue-shared --bench store_scale --no-run
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
data=${KEEP_DIR:-$work/data}

echo "machine: $(nproc) cores, $(uname -m); $(uptime | sed 's/.*load average/load average/')"
STORE_SCALE_DEVICES=$devices STORE_SCALE_BIG=$big STORE_SCALE_DIR=$data \
  cargo bench --locked -p drogue-shared --bench store_scale
du -h "$data/drogue.redb"

# start to ready file: three starts on the filled directory (the first also makes the
# administrator's token), three on an empty one
python3 - "$CARGO_TARGET_DIR/release/drogue-local" "$data" "$work/empty" <<'PY'
import os, signal, statistics, subprocess, sys, time
binary, filled, empty = sys.argv[1:]
os.makedirs(empty, exist_ok=True)
def start(data):
    ready = os.path.join(data, "ready.json")
    if os.path.exists(ready):
        os.remove(ready)
    begin = time.perf_counter()
    child = subprocess.Popen([binary, "--data-dir", data, "--ready-file", ready,
        "--http-bind", "127.0.0.1:0", "--https-bind", "127.0.0.1:0", "--mqtt-bind", "127.0.0.1:0",
        "--mqtts-bind", "127.0.0.1:0", "--coap-bind", "127.0.0.1:0", "--coaps-bind", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG="warn"))
    while not (os.path.exists(ready) and os.path.getsize(ready) > 0):
        assert child.poll() is None, "drogue-local exited"
        time.sleep(0.002)
    took = time.perf_counter() - begin
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=30)
    return took
for name, data in (("filled", filled), ("empty", empty)):
    times = [start(data) for _ in range(3)]
    print(f"drogue-local start to ready, {name} data directory: " +
          ", ".join(f"{t * 1000:.0f} ms" for t in times))
PY
echo "$(uptime | sed 's/.*load average/load average after/')"
