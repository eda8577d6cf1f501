#!/usr/bin/env bash
# What a stranger's registry writes cost another tenant, on drogue-local (release build):
# the administrator's application `bench` with [devices] devices, all connected over
# MQTT and idle, and eight of them publishing over HTTP (64 keep-alive connections);
# eve, another user, changes a device of her own application in a loop (one PUT after
# the other on a keep-alive connection, again at once after a 429) while they do; her
# write rate is drogue-local's default unless DROGUE_BENCH_WRITE_RATE gives another
# (0: none). Each phase runs once quiet and
# once with eve's writes, and prints:
#   - MQTT, idle: the broker's CPU while nothing is published (from the load generator's
#     --idle-seconds), and the sessions' access decisions made again
#     (drogue_mqtt_rechecks_total);
#   - HTTP: the publishes' rate and latency, and the device lookups that read the
#     registry (drogue_device_lookup_reads_total, when the build has it);
#   - eve's writes per second.
# CI's short versions assert the counts, not the rates:
# tenants::a_strangers_registry_writes_make_no_lookup_of_another_tenant_stale and
# mqtt::idle_devices_are_decided_again_after_their_applications_writes_only.
#
#   tests/bench/stranger-writes.sh [devices] [seconds]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
devices=${1:-2000}
seconds=${2:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${DROGUE_CACHE_DIR:-$HOME/.cache/drogue-serverless}/target}
ulimit -n "$(ulimit -Hn)"
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
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
echo "machine: $(nproc) cores, $(uname -m); $devices devices; $seconds s per run"

mqtt=127.0.0.1:$(port)
RUST_LOG=warn "$bin/drogue-local" --coap-bind off --coaps-bind off --data-dir "$data/local" --http-bind 127.0.0.1:0 --https-bind off \
  --mqtt-bind "$mqtt" --mqtts-bind off --publish-rate 0 --max-connections-per-user 0 \
  ${DROGUE_BENCH_WRITE_RATE:+--registry-write-rate "$DROGUE_BENCH_WRITE_RATE"} \
  --event-retention 1000000 --ready-file "$data/ready.json" >/dev/null &
local_pid=$!
for _ in $(seq 1 100); do [ -s "$data/ready.json" ] && break; sleep 0.1; done
base=http://$(python3 -c "import json; print(json.load(open('$data/ready.json'))['http'])")
token=$(cat "$data/local/admin-token")
hash=$(openssl passwd -6 -salt benchsalt secret)
eve=$(curl -fs -u "$token" -X POST "$base/api/admin/v1alpha1/users/eve/tokens" -d '{}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
python3 - "$base" "$token" "eve:$eve" "$hash" "$devices" <<'EOF'
import base64, http.client, json, sys, threading, urllib.parse
base, token, eve, hash, devices = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
url = urllib.parse.urlparse(base)
def headers(who):
    return {"Authorization": "Basic " + base64.b64encode(who.encode()).decode(),
            "Content-Type": "application/json"}
api = "/api/registry/v1alpha1/apps"
def post(conn, who, path, body):
    conn.request("POST", path, json.dumps(body), headers(who))
    response = conn.getresponse()
    response.read()
    if response.status != 201:
        raise SystemExit(f"POST {path}: {response.status}")
conn = http.client.HTTPConnection(url.hostname, url.port)
post(conn, token, api, {"metadata": {"name": "bench"}})
post(conn, eve, api, {"metadata": {"name": "eves"}})
post(conn, eve, api + "/eves/devices", {"metadata": {"name": "w"}})
def make(first):
    conn = http.client.HTTPConnection(url.hostname, url.port)
    for i in range(first, devices, 4):
        post(conn, token, api + "/bench/devices", {"metadata": {"name": f"dev{i}"}, "spec": {
            "authentication": {"credentials": [{"pass": {"sha512": hash}}]}}})
threads = [threading.Thread(target=make, args=(k,)) for k in range(4)]
for t in threads: t.start()
for t in threads: t.join()
EOF
metric() { curl -fs "$base/metrics" | awk -v name="$1" '$1 == name { print $2 }'; }
# eve changes her device `w` (a label) one PUT after the other for $1 seconds
writes() {
  python3 - "$base" "eve:$eve" "$1" <<'EOF'
import base64, http.client, json, sys, time, urllib.parse
base, who, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
url = urllib.parse.urlparse(base)
headers = {"Authorization": "Basic " + base64.b64encode(who.encode()).decode(),
           "Content-Type": "application/json"}
conn = http.client.HTTPConnection(url.hostname, url.port)
n, refused, start = 0, 0, time.monotonic()
while time.monotonic() - start < seconds:
    body = {"metadata": {"name": "w", "application": "eves", "labels": {"n": str(n)}}}
    conn.request("PUT", "/api/registry/v1alpha1/apps/eves/devices/w", json.dumps(body), headers)
    response = conn.getresponse()
    response.read()
    if response.status == 429:
        # over her write rate: she tries again at once
        refused += 1
        continue
    if response.status >= 300:
        raise SystemExit(f"PUT: {response.status}")
    n += 1
took = time.monotonic() - start
print(f"  eve's writes: {n} in {took:.1f} s, {n / took:.0f}/s; {refused} refused (429), {refused / took:.0f}/s")
EOF
}

echo
echo "== MQTT: $devices devices connected, idle for $seconds s =="
for stranger in quiet writing; do
  rechecks=$(metric drogue_mqtt_rechecks_total)
  echo "-- $stranger"
  writer=
  if [ $stranger = writing ]; then (sleep 3; writes "$seconds") & writer=$!; fi
  # (the writes start once every device is connected, and last the idle time)
  "$bin/drogue-loadgen" mqtt "$mqtt" --devices "$devices" --seconds 1 --qos 1 --rate 100 \
    --device-password secret --subscriber "$token" --filter app/bench --rss-pid "$local_pid" --idle-seconds $((seconds + 3)) \
    --connect-concurrency 64 | grep -E "connect:|idle:"
  if [ -n "$writer" ]; then wait "$writer"; fi
  echo "  access decisions made again: $(($(metric drogue_mqtt_rechecks_total) - rechecks))"
  sleep 2
done

echo
echo "== HTTP: 8 devices, 64 connections, $seconds s =="
credentials=()
for i in $(seq 0 7); do credentials+=(--basic "dev$i@bench:secret"); done
for i in $(seq 0 7); do curl -fs -u "dev$i@bench:secret" -X POST "$base/v1/telemetry" -d '{}' >/dev/null; done
for stranger in quiet writing quiet writing; do
  reads=$(metric drogue_device_lookup_reads_total)
  echo "-- $stranger"
  writer=
  if [ $stranger = writing ]; then writes "$seconds" & writer=$!; fi
  "$bin/drogue-loadgen" run "$base/v1/telemetry" "${credentials[@]}" --body '{"temp":21.5}' \
    --seconds "$seconds" --connections 64 | sed 's/^/  /'
  if [ -n "$writer" ]; then wait "$writer"; fi
  if [ -n "$reads" ]; then
    echo "  device lookups that read the registry: $(($(metric drogue_device_lookup_reads_total) - reads))"
  fi
done
