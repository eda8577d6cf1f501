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
  # run under valgrind in Lambda's environment until it asks for its first event
  python3 tools/startup-order/trace.py "$CARGO_TARGET_DIR/release/$binary" "$traces/$binary"
  args+=("$CARGO_TARGET_DIR/release/$binary" "$traces/$binary")
done
python3 tools/startup-order/order.py tools/startup-order/startup.ld "${args[@]}"
