#!/usr/bin/env bash
# Cold starts of every function binary under the emulated Lambda Runtime API, as a ratio
# to a hello-world lambda_runtime function built in the same run (release profile), with
# moto for DynamoDB, Kinesis and IoT Core; then the sizes of the Lambda packages `sam
# build` makes (arm64 `bootstrap` binaries, and their zips as SAM uploads them).
#
#   tests/bench/cold-start.sh [runs]        (default 20 starts per function)
#
# Set SAM_BUILD_DIR to an existing `sam build --build-dir` output to size it instead of
# building it again.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
runs=${1:-20}
cache=${DROGUE_CACHE_DIR:-$HOME/.cache/drogue-serverless}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}
venv=$cache/venv
[ -x "$venv/bin/moto_server" ] || { echo "run tests/run once first (it installs moto)"; exit 1; }

# the functions apart from the harness: built together, cargo would give their dependencies
# the features the tests' crate asks for too, and they would not be the binaries shipped
cargo build --release --locked -p drogue-registry -p drogue-command -p drogue-http-endpoint \
  -p drogue-mqtt-authorizer -p drogue-mqtt-ingest -p drogue-iot-certificates -p drogue-fan-out \
  --bins
cargo build --release --locked -p drogue-tests --bins

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
export DROGUE_TEST_MOTO_URL=http://127.0.0.1:$port
for _ in $(seq 1 100); do curl -fs -o /dev/null "$DROGUE_TEST_MOTO_URL/moto-api/" && break; sleep 0.1; done

echo "machine: $(nproc) cores, $(uname -m), load average $(cut -d' ' -f1-3 /proc/loadavg); $runs starts per function"
"$CARGO_TARGET_DIR/release/cold-start" "$CARGO_TARGET_DIR/release" "$runs"

build=${SAM_BUILD_DIR:-}
if [ -z "$build" ]; then
  build=$(mktemp -d)
  PATH=$cache/sam-venv/bin:$PATH SAM_CLI_TELEMETRY=0 sam build --build-dir "$build" >/dev/null
fi
echo
echo "| Lambda package (arm64) | bootstrap (MB) | zip (MB) |"
echo "|---|---|---|"
for dir in "$build"/*/; do
  [ -f "$dir/bootstrap" ] || continue
  python3 - "$dir" <<'PY'
import io, os, sys, zipfile
d = sys.argv[1]
binary = os.path.join(d, "bootstrap")
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
    z.write(binary, "bootstrap")
print(f"| {os.path.basename(d.rstrip('/'))} | {os.path.getsize(binary)/1e6:.1f} | {len(buf.getvalue())/1e6:.1f} |")
PY
done
