#!/usr/bin/env bash
# What one registry request costs drogue-local (release build) when one client waits for
# each answer: eve, a user, changes her device in a loop on one keep-alive connection
# (Python's http.client), past her write rate's burst, so that nearly every PUT is
# refused (429); then the same loop reads the device (GET, 200); in turn, [rounds] times
# each, [seconds] each. Printed per run: requests, answers by status, and drogue-local's
# CPU (user and system, from /proc) per request. With DROGUE_BENCH_PERF=1, a
# `perf record -g` of drogue-local over 5 s of the PUT loop goes to request-cost.perf.
#
#   tests/bench/request-cost.sh [seconds] [rounds]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
seconds=${1:-5}
rounds=${2:-2}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${DROGUE_CACHE_DIR:-$HOME/.cache/drogue-serverless}/target}
# DROGUE_BENCH_BIN: a directory holding a drogue-local release binary to measure instead
# of building this tree
if [ -n "${DROGUE_BENCH_BIN:-}" ]; then
  bin=$DROGUE_BENCH_BIN
else
  cargo build --release --locked -p drogue-local
  bin=$CARGO_TARGET_DIR/release
fi
data=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$data"' EXIT
echo "machine: $(nproc) cores, $(uname -m), load average $(cut -d' ' -f1-3 /proc/loadavg)"
RUST_LOG=warn "$bin/drogue-local" --coap-bind off --coaps-bind off --data-dir "$data/local" \
  --http-bind 127.0.0.1:0 --https-bind off --mqtt-bind off --mqtts-bind off \
  --ready-file "$data/ready.json" >/dev/null &
pid=$!
for _ in $(seq 1 100); do [ -s "$data/ready.json" ] && break; sleep 0.1; done
base=http://$(python3 -c "import json; print(json.load(open('$data/ready.json'))['http'])")
token=$(cat "$data/local/admin-token")
eve=$(curl -fs -u "$token" -X POST "$base/api/admin/v1alpha1/users/eve/tokens" -d '{}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
api=$base/api/registry/v1alpha1/apps
curl -fs -u "eve:$eve" -H 'Content-Type: application/json' -X POST "$api" \
  -d '{"metadata":{"name":"eves"}}' >/dev/null
curl -fs -u "eve:$eve" -H 'Content-Type: application/json' -X POST "$api/eves/devices" \
  -d '{"metadata":{"name":"w"}}' >/dev/null
loop() {
  python3 - "$base" "eve:$eve" "$1" "$2" <<'EOF'
import base64, http.client, json, sys, time, urllib.parse
base, who, seconds, method = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
url = urllib.parse.urlparse(base)
headers = {"Authorization": "Basic " + base64.b64encode(who.encode()).decode(),
           "Content-Type": "application/json"}
path = "/api/registry/v1alpha1/apps/eves/devices/w"
conn = http.client.HTTPConnection(url.hostname, url.port)
n, codes, start = 0, {}, time.monotonic()
while time.monotonic() - start < seconds:
    if method == "PUT":
        body = {"metadata": {"name": "w", "application": "eves", "labels": {"n": str(n)}}}
        conn.request("PUT", path, json.dumps(body), headers)
    else:
        conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    response.read()
    codes[response.status] = codes.get(response.status, 0) + 1
    n += 1
print(n, method, dict(sorted(codes.items())), f"{n / (time.monotonic() - start):.0f}/s")
EOF
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
tick_us=$(( 1000000 / $(getconf CLK_TCK) ))
loop 3 PUT >/dev/null  # her burst used up
for _ in $(seq 1 "$rounds"); do
  for method in PUT GET; do
    before=$(cpu_ticks)
    out=$(loop "$seconds" "$method")
    after=$(cpu_ticks)
    n=${out%% *}
    echo "$method: ${out#* } requests $n; drogue-local's CPU $(( (after - before) * tick_us / 1000 )) ms, $(( (after - before) * tick_us / n )) µs a request"
  done
done
if [ -n "${DROGUE_BENCH_PERF:-}" ]; then
  loop 8 PUT >/dev/null &
  sleep 1
  perf record -F 2999 -g -p "$pid" -o request-cost.perf -- sleep 5
  wait %2 || true
fi
