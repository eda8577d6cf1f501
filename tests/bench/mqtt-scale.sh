#!/usr/bin/env bash
# How cost grows on the MQTT broker: drogue-local's broker against mosquitto (the Debian
# package, installed if missing) in the same run, on the same load.
#
# 1. Connections: N devices (default 10,000) connect, 64 at a time, each logging in with
#    its password, and stay connected. Printed: the connect rate (CONNECT to CONNACK, the
#    password check included), the broker's resident memory (VmRSS of /proc/<pid>/status)
#    before and with all connected, per connection, its CPU while all are connected and
#    nothing is published, then the delivery with every device publishing at a low rate
#    (all together: each rate of DROGUE_BENCH_SCALE_RATES) to one subscribed application,
#    every acknowledged message looked up by id. drogue-local runs it twice on the same
#    process: first every password is hashed (SHA-512-crypt, 5,000 rounds), then the
#    verified-password cache answers (a reconnect storm).
# 2. Fan-out: S subscribers (default 100) of one application, 100 devices publishing at
#    each rate of DROGUE_BENCH_FANOUT_RATES: events delivered per second in all and per
#    subscriber, every subscriber receiving every acknowledged message (by id).
#
# drogue-local: devices are made through the registry API with a SHA-512-crypt hash of
# their password at the default 5,000 rounds (what a plain password is stored as), so
# that making them costs no hashing and every first CONNECT checks the password at full
# cost; subscribers are applications on app/bench with the administrator's token.
# mosquitto: a password file of the same devices (mosquitto_passwd -U: PBKDF2-SHA512,
# 101 iterations), anonymous subscribers on dt/#.
# DROGUE_BENCH_BROKERS: which to run, "local mosquitto" by default.
# DROGUE_BENCH_RETENTION: drogue-local's --event-retention, 200,000 by default: a
# subscriber that falls behind goes on from the event log, which must still hold what
# it has not read (with the default 10,000 events and 10,000 msg/s offered, it does not:
# the oldest are missed, and the load generator reports them).
# With DROGUE_BENCH_STRACE=1, one more fan-out run on drogue-local under
# `strace -c -f` counts the broker's socket writes (sendto, writev) per delivered message.
#
# Limits: the open files limit is raised to the hard limit (it must exceed the devices);
# drogue-local has no broker-wide connection limit but ntex's 25,600 per worker thread,
# one device holds at most 4 connections, the administrator's devices count against no
# quota (--max-devices-per-application is set to 0 anyway), the connections of one
# user's tenancy are not limited (--max-connections-per-user 0: every device and
# subscriber here is the administrator's), and the per-device publish rate limit is off
# (--publish-rate 0).
#
#   tests/bench/mqtt-scale.sh [devices] [subscribers] [seconds]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
devices=${1:-10000}
subscribers=${2:-100}
seconds=${3:-10}
scale_rates=${DROGUE_BENCH_SCALE_RATES:-"2000 10000"}
fanout_rates=${DROGUE_BENCH_FANOUT_RATES:-"100 300 1000"}
retention=${DROGUE_BENCH_RETENTION:-200000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${DROGUE_CACHE_DIR:-$HOME/.cache/drogue-serverless}/target}
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((devices + 1000)) ]; then
  echo "the open files limit, $(ulimit -n), is too low for $devices connections" >&2
  exit 1
fi
if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y --no-install-recommends mosquitto >/dev/null
fi
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
mosquitto_passwd=$(command -v mosquitto_passwd || echo /usr/bin/mosquitto_passwd)
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
load() { printf '(load average %s)\n' "$(cut -d' ' -f1-3 /proc/loadavg)"; }
echo "machine: $(nproc) cores, $(uname -m); $("$mosquitto" -h | head -1); open files $(ulimit -n)"

brokers=${DROGUE_BENCH_BROKERS:-"local mosquitto"}
if [[ " $brokers " == *" local "* ]]; then
# drogue-local
mqtt=127.0.0.1:$(port)
RUST_LOG=warn "$bin/drogue-local" --coap-bind off --coaps-bind off --data-dir "$data/local" --http-bind 127.0.0.1:0 --https-bind off \
  --mqtt-bind "$mqtt" --mqtts-bind off --publish-rate 0 --max-devices-per-application 0 \
  --max-connections-per-user 0 --event-retention "$retention" --ready-file "$data/ready.json" >/dev/null &
local_pid=$!
for _ in $(seq 1 100); do [ -s "$data/ready.json" ] && break; sleep 0.1; done
base=http://$(python3 -c "import json; print(json.load(open('$data/ready.json'))['http'])")
token=$(cat "$data/local/admin-token")
hash=$(openssl passwd -6 -salt benchsalt secret)
made=$(date +%s.%N)
python3 - "$base" "$token" "$hash" "$devices" <<'EOF'
import base64, http.client, json, sys, threading, urllib.parse
base, token, hash, devices = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
url = urllib.parse.urlparse(base)
auth = {"Authorization": "Basic " + base64.b64encode(token.encode()).decode(),
        "Content-Type": "application/json"}
api = "/api/registry/v1alpha1/apps"
def post(conn, path, body):
    conn.request("POST", path, json.dumps(body), auth)
    response = conn.getresponse()
    response.read()
    if response.status != 201:
        raise SystemExit(f"POST {path}: {response.status}")
post(http.client.HTTPConnection(url.hostname, url.port), api, {"metadata": {"name": "bench"}})
def make(first):
    conn = http.client.HTTPConnection(url.hostname, url.port)
    for i in range(first, devices, 4):
        post(conn, api + "/bench/devices", {"metadata": {"name": f"dev{i}"}, "spec": {
            "authentication": {"credentials": [{"pass": {"sha512": hash}}]}}})
threads = [threading.Thread(target=make, args=(k,)) for k in range(4)]
for t in threads: t.start()
for t in threads: t.join()
EOF
echo "drogue-local: $devices devices made through the API in $(python3 -c "print(f'{$(date +%s.%N) - $made:.1f}')") s"
metric() { curl -fs "$base/metrics" | awk -v name="$1" '$1 == name { print $2 }'; }

echo
echo "== connections: $devices devices, one subscriber (QoS 1) =="
first=1
for rate in $scale_rates; do
  checks=$(metric drogue_device_password_checks_total)
  if [ $first = 1 ]; then what="first connects: every password hashed"; else what="reconnects: passwords verified before"; fi
  printf 'drogue-local (%s) ' "$what"; load
  "$bin/drogue-loadgen" mqtt "$mqtt" --devices "$devices" --seconds "$seconds" --qos 1 --rate "$rate" \
    --device-password secret --subscriber "$token" --filter app/bench --rss-pid "$local_pid" --idle-seconds 10 \
    --connect-concurrency 64
  echo "  password hashes run: $(($(metric drogue_device_password_checks_total) - checks)); dropped for subscribers: $(metric drogue_mqtt_dropped_total)"
  first=0
  sleep 2
done

echo
echo "== fan-out: $subscribers subscribers of one application, 100 devices (QoS 1) =="
for rate in $fanout_rates; do
  printf 'drogue-local  '; load
  "$bin/drogue-loadgen" mqtt "$mqtt" --devices 100 --seconds "$seconds" --qos 1 --rate "$rate" \
    --device-password secret --subscriber "$token" --filter app/bench --subscribers "$subscribers"
done
echo "  dropped for subscribers: $(metric drogue_mqtt_dropped_total)"
if [ "${DROGUE_BENCH_STRACE:-0}" = 1 ]; then
  rate=${fanout_rates##* }
  strace -c -f -e trace=write,writev,sendto,sendmsg -p "$local_pid" -o "$data/strace.txt" &
  strace_pid=$!
  sleep 1
  printf 'drogue-local under strace  '; load
  "$bin/drogue-loadgen" mqtt "$mqtt" --devices 100 --seconds "$seconds" --qos 1 --rate "$rate" \
    --device-password secret --subscriber "$token" --filter app/bench --subscribers "$subscribers" | tee "$data/strace-run.txt"
  kill -INT "$strace_pid"; wait "$strace_pid" 2>/dev/null || true
  cat "$data/strace.txt"
  received=$(sed -n 's/.* \([0-9]*\) received by .*/\1/p' "$data/strace-run.txt")
  sends=$(awk '$NF == "writev" || $NF == "sendto" || $NF == "sendmsg" { n += $4 } END { print n + 0 }' "$data/strace.txt")
  echo "  messages received by the subscribers (whole run): $received; socket writes (sendto, sendmsg, writev): $sends (PUBACKs to the devices and pings included)"
fi
kill "$local_pid"; wait "$local_pid" 2>/dev/null || true
fi
[[ " $brokers " == *" mosquitto "* ]] || exit 0

# mosquitto, with a password file of the same devices
plain=$(port)
for i in $(seq 0 $((devices - 1))); do echo "dev$i@bench:secret"; done >"$data/passwords"
"$mosquitto_passwd" -U "$data/passwords"
# (mosquitto started as root reads its files as the user mosquitto)
chmod a+rx "$data"; chmod a+r "$data/passwords"
# (as many unacknowledged QoS 1 messages per client as the local broker allows)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npassword_file %s\nmax_inflight_messages 100\nmax_queued_messages 100000\n' \
  "$plain" "$data/passwords" >"$data/mosquitto.conf"
"$mosquitto" -c "$data/mosquitto.conf" >/dev/null 2>&1 &
mosquitto_pid=$!
sleep 0.5
echo
echo "== connections: $devices devices, one subscriber (QoS 1) =="
for rate in $scale_rates; do
  printf 'mosquitto  '; load
  "$bin/drogue-loadgen" mqtt "127.0.0.1:$plain" --devices "$devices" --seconds "$seconds" --qos 1 --rate "$rate" \
    --device-password secret --filter 'dt/#' --rss-pid "$mosquitto_pid" --idle-seconds 10 --connect-concurrency 64
  sleep 2
done
echo
echo "== fan-out: $subscribers subscribers of one topic filter, 100 devices (QoS 1) =="
for rate in $fanout_rates; do
  printf 'mosquitto  '; load
  "$bin/drogue-loadgen" mqtt "127.0.0.1:$plain" --devices 100 --seconds "$seconds" --qos 1 --rate "$rate" \
    --device-password secret --filter 'dt/#' --subscribers "$subscribers"
done
