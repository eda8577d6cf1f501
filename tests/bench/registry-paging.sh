#!/usr/bin/env bash
# Paging an application of 100,000 devices over the management API of drogue-local
# (release build): the first page, a page deep in the list (offset 99,000), a walk over
# every page (each device once, in order), the whole list unpaged (what `drg get
# devices` asks for) and a label selector.
#
#   tests/bench/registry-paging.sh [data-dir]
#
# Without a data directory, one is filled with an application `big` of 100,000 devices
# through the store's bulk create (shared/benches/store_scale.rs): creating them over the
# API would take one durable commit each, and the default quotas (10,000 devices per
# application and per owner) would stop a user at 10,000. The devices belong to the
# administrator, whom no quota holds, and the benchmark reads them as the administrator.
# DROGUE_LOCAL names another binary (e.g. an earlier build, to compare); WALK_LIMITS the
# page sizes of the walks (default "1000 100").
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${DROGUE_CACHE_DIR:-$HOME/.cache/drogue-serverless}/target}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
if [ -z "${DROGUE_LOCAL:-}" ]; then
  cargo build --release --locked -p drogue-local
fi
bin=${DROGUE_LOCAL:-$CARGO_TARGET_DIR/release/drogue-local}
data=${1:-}
if [ -z "$data" ]; then
  data=$work/data
  STORE_SCALE_DEVICES=100000 STORE_SCALE_BIG=100000 STORE_SCALE_DIR=$data \
    cargo bench --locked -p drogue-shared --bench store_scale
fi

echo "machine: $(nproc) cores, $(uname -m); $(uptime | sed 's/.*load average/load average/')"
RUST_LOG=warn "$bin" --data-dir "$data" --ready-file "$work/ready.json" \
  --http-bind 127.0.0.1:0 --https-bind off --mqtt-bind off --mqtts-bind off \
  --coap-bind off --coaps-bind off >/dev/null &
for _ in $(seq 1 600); do [ -s "$work/ready.json" ] && break; sleep 0.1; done
http=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['http'])" "$work/ready.json")

python3 - "$http" "$(cat "$data/admin-token")" <<'PY'
import base64, http.client, json, os, statistics, sys, time
host, port = sys.argv[1].rsplit(":", 1)
auth = "Basic " + base64.b64encode(sys.argv[2].encode()).decode()
conn = http.client.HTTPConnection(host, int(port), timeout=600)
path = "/api/registry/v1alpha1/apps/big/devices"

def get(query):
    start = time.perf_counter()
    conn.request("GET", path + query, headers={"Authorization": auth})
    response = conn.getresponse()
    body = response.read()
    took = time.perf_counter() - start
    assert response.status == 200, (query, response.status, body[:200])
    return took, body

def names(body):
    return [d["metadata"]["name"] for d in json.loads(body)]

def median(query, runs):
    times = [get(query)[0] for _ in range(runs)]
    return statistics.median(times)

total = len(names(get("")[1]))
deep = max(total - 1000, 0)
first = names(get("?limit=100&offset=0")[1])
assert first == [f"device-{i:07}" for i in range(min(100, total))], first[:3]
print(f"first page (limit=100, offset=0): median {median('?limit=100&offset=0', 21) * 1000:.1f} ms (21 requests)")
page = names(get(f"?limit=100&offset={deep}")[1])
assert page == [f"device-{i:07}" for i in range(deep, min(deep + 100, total))], page[:3]
print(f"deep page (limit=100, offset={deep}): median {median(f'?limit=100&offset={deep}', 21) * 1000:.1f} ms (21 requests)")
for limit in [int(l) for l in os.environ.get("WALK_LIMITS", "1000 100").split()]:
    seen, spent, pages = [], 0.0, 0
    while True:
        took, body = get(f"?limit={limit}&offset={len(seen)}")
        spent += took
        got = names(body)
        if not got:
            break
        seen.extend(got)
        pages += 1
    assert seen == sorted(seen) and len(set(seen)) == len(seen) == total, "every device once, in order"
    print(f"walk every page (limit={limit}): {pages} pages, {len(seen)} devices, each once in order, {spent:.2f} s")
took, body = get("")
print(f"unpaged list (drg get devices): {total} devices, {len(body) / 1048576:.1f} MiB, {took * 1000:.0f} ms")
took, body = get("?labels=fw%3Dbeta")
print(f"selector fw=beta: {len(json.loads(body))} devices, {took * 1000:.1f} ms")
took, body = get("?labels=fw%3Dbeta&limit=10&offset=900")
print(f"selector fw=beta, limit=10, offset=900: {len(json.loads(body))} devices, {took * 1000:.1f} ms")
PY
echo "$(uptime | sed 's/.*load average/load average after/')"
