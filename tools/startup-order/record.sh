#!/usr/bin/env bash
# Records which functions each Lambda binary runs from its start to its first poll of the
# Runtime API, and writes them to tools/startup-order/startup.ld (see README.md). Run it
# after a change that moves a function's start (new dependencies, a new client at start)
# and commit the script it writes.
#
#   tools/startup-order/record.sh
#
# It installs valgrind with apt if missing, and builds the release binaries with their
# symbols in $CARGO_TARGET_DIR (default ~/.cache/drogue-serverless/target-startup).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
cache=${DROGUE_CACHE_DIR:-$HOME/.cache/drogue-serverless}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target-startup}
if ! command -v valgrind >/dev/null; then
  sudo=$([ "$(id -u)" -eq 0 ] || echo sudo)
  $sudo apt-get install -y valgrind >/dev/null
fi

# symbols kept, so that order.py can name the functions run
CARGO_PROFILE_RELEASE_STRIP=none cargo build --release --locked -p drogue-registry \
  -p drogue-command -p drogue-http-endpoint -p drogue-mqtt-authorizer -p drogue-mqtt-ingest \
  -p drogue-iot-certificates -p drogue-fan-out --bins

traces=$(mktemp -d)
trap 'rm -rf "$traces"' EXIT
args=()
for binary in registry http-endpoint command mqtt-authorizer mqtt-ingest fan-out stream \
  cert-validator trust-anchor-sync; do
  # Lambda's environment with a Runtime API that refuses connections: the binary starts,
  # makes its clients, polls once and stops; the trace covers what it runs on the way.
  # Amazon's roots as on Lambda, and an endpoint as the cold-start benchmark gives (moto):
  # the few functions that reads are run too.
  env -i PATH="$PATH" HOME="$HOME" AWS_LAMBDA_RUNTIME_API=127.0.0.1:9 \
    AWS_LAMBDA_FUNCTION_NAME="$binary" AWS_LAMBDA_FUNCTION_VERSION='$LATEST' \
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256 AWS_LAMBDA_LOG_GROUP_NAME="/aws/lambda/$binary" \
    AWS_LAMBDA_LOG_STREAM_NAME=startup AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=startup AWS_SECRET_ACCESS_KEY=startup DROGUE_TABLE=startup \
    DROGUE_EVENT_STREAM=startup DROGUE_TLS_ROOTS=amazon AWS_ENDPOINT_URL=http://127.0.0.1:9 \
    valgrind --tool=lackey --trace-superblocks=yes --log-file="$traces/$binary" \
    "$CARGO_TARGET_DIR/release/$binary" >/dev/null 2>&1 || true
  args+=("$CARGO_TARGET_DIR/release/$binary" "$traces/$binary")
done
python3 tools/startup-order/order.py tools/startup-order/startup.ld "${args[@]}"
