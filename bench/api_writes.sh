#!/usr/bin/env bash
# The API's write path of `qdhcp serve` on the embedded default (SQLite, durable): ports
# created into one network in bulk POSTs of B ports until it holds N, then S single-port
# POSTs into that full network (each one a whole publish: journal, registry, the DHCP side's
# table and DNS names). One client, sequential, as Neutron's server calls it. Each answer
# waits until the DHCP side has the port (docs/ARCHITECTURE.md, "The walk of an API call").
#
# Usage (as root): bench/api_writes.sh [-q BINARY] [-n PORTS] [-b BULK] [-s SINGLES] [-l LABEL]
# Appends one JSON line per run to bench/api-writes.jsonl (or -o FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
Q=""
N=10000
B=500
S=500
LABEL=""
OUT=bench/api-writes.jsonl
while getopts "q:n:b:s:l:o:" o; do
  case $o in q) Q=$OPTARG ;; n) N=$OPTARG ;; b) B=$OPTARG ;; s) S=$OPTARG ;; l) LABEL=$OPTARG ;; o) OUT=$OPTARG ;; *) exit 2 ;; esac
done
if [ -z "$Q" ]; then
  cargo build --release --bin qdhcp
  Q=$PWD/target/release/qdhcp
fi
[ -n "$LABEL" ] || LABEL=$(git rev-parse --short HEAD)
W=$(mktemp -d /tmp/qdhcp-api.XXXX)
SRV_PID=""
cleanup() {
  [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null && wait "$SRV_PID" 2>/dev/null || true
  for n in $(ip netns list | awk '{print $1}' | grep -E '^qba'); do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
cleanup
W=$(mktemp -d /tmp/qdhcp-api.XXXX)
ip netns add qbah; ip -n qbah link set lo up
ip -n qbah link add qbabr type bridge; ip -n qbah link set qbabr up
"$Q" serve --netns qbah --listen 127.0.0.1:9696 --state-dir "$W/state" --bridge-mappings physnet1:qbabr \
  --namespace-prefix qbad --namespace-id-chars 8 --quiet-dhcp --log-file "$W/serve.log" &
SRV_PID=$!
for _ in $(seq 100); do ip netns exec qbah curl -s -o /dev/null 127.0.0.1:9696/ && break; sleep 0.1; done
ip netns exec qbah python3 - "$N" "$B" "$S" "$LABEL" <<'PY' | tee -a "$OUT"
import http.client, ipaddress, json, statistics, sys, time
n, b, s, label = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
conn = http.client.HTTPConnection("127.0.0.1", 9696)
def call(method, path, body):
    conn.request(method, path, json.dumps(body), {"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 201:
        sys.exit(f"{method} {path}: {r.status} {data[:300]!r}")
    return json.loads(data)
net = call("POST", "/v2.0/networks", {"network": {"name": "bench", "provider:network_type": "flat",
           "provider:physical_network": "physnet1"}})["network"]["id"]
sub = call("POST", "/v2.0/subnets", {"subnet": {"network_id": net, "cidr": "10.0.0.0/8", "ip_version": 4,
           "gateway_ip": "10.0.0.254", "allocation_pools": [{"start": "10.0.1.1", "end": "10.200.255.250"}]}})["subnet"]["id"]
bulk = []
t0 = time.monotonic()
for k in range(0, n, b):
    ports = [{"network_id": net, "mac_address": "fa:16:3e:%02x:%02x:%02x" % (i >> 16, (i >> 8) & 255, i & 255),
              "fixed_ips": [{"subnet_id": sub, "ip_address": str(ipaddress.IPv4Address("10.1.0.1") + i)}]}
             for i in range(k, min(n, k + b))]
    t = time.monotonic()
    call("POST", "/v2.0/ports", {"ports": ports})
    bulk.append(time.monotonic() - t)
el = time.monotonic() - t0
single = []
for _ in range(s):
    t = time.monotonic()
    call("POST", "/v2.0/ports", {"port": {"network_id": net}})
    single.append(time.monotonic() - t)
q = lambda v, p: sorted(v)[min(len(v) - 1, int(p * len(v)))] * 1000
print(json.dumps({"label": label, "ports": n, "bulk": b, "bulk_ports_per_s": round(n / el),
                  "bulk_post_ms_p50": round(q(bulk, .5), 1), "bulk_post_ms_last": round(bulk[-1] * 1000, 1),
                  "singles": s, "single_creates_per_s": round(s / sum(single)),
                  "single_ms_p50": round(q(single, .5), 2), "single_ms_p99": round(q(single, .99), 2)}))
PY
