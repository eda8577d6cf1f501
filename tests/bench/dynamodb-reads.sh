#!/usr/bin/env bash
# DynamoDB requests per ingested message on AWS: the real http-endpoint and mqtt-ingest
# binaries under the emulated Lambda Runtime API, their DynamoDB requests through a
# counting proxy (tests/src/dynamo_proxy.rs) to moto, Kinesis in moto. Counts, not
# timings: a debug build does.
#
#   tests/bench/dynamodb-reads.sh [messages]        (default 50 warm messages per row)
#
# Set BINARIES to a directory holding other http-endpoint and mqtt-ingest binaries (an
# older build, say) to count theirs instead.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
messages=${1:-50}
cache=${DROGUE_CACHE_DIR:-$HOME/.cache/drogue-serverless}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}
venv=$cache/venv
[ -x "$venv/bin/moto_server" ] || { echo "run tests/run once first (it installs moto)"; exit 1; }

cargo build --locked -p drogue-http-endpoint -p drogue-mqtt-ingest -p drogue-tests --bins
binaries=${BINARIES:-$CARGO_TARGET_DIR/debug}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
export DROGUE_TEST_MOTO_URL=http://127.0.0.1:$port
for _ in $(seq 1 100); do curl -fs -o /dev/null "$DROGUE_TEST_MOTO_URL/moto-api/" && break; sleep 0.1; done

echo "binaries: $binaries"
"$CARGO_TARGET_DIR/debug/dynamodb-reads" "$binaries" "$messages"
