#!/usr/bin/env bash
# Soak: `qdhcp serve` under steady DHCP load with port churn through the API, for MINUTES
# (default 30). The server runs in its namespaces (host side qsh) pinned to CPU 0; the load
# generator (relay, 10.0.0.2) on CPU 1 does DORA for 2,000 static ports, one 60 s run a minute
# (so p99 is reported per minute); a churn loop creates and deletes ports through the API.
# Every minute: server RSS, DHCP rate, drops, p99. At the end: every static port's lease renews
# with ACK and the same address. Writes bench/SOAK.md.
# Usage (as root): bench/soak.sh [MINUTES] [RATE]
set -euo pipefail
cd "$(dirname "$0")/.."
MIN=${1:-30}
RATE=${2:-5000}
cargo build --release --bin qdhcp
Q=$PWD/target/release/qdhcp
W=$(mktemp -d /tmp/qdhcp-soak.XXXX)
SRV=""
CHURN=""
cleanup() {
  [ -n "$CHURN" ] && kill "$CHURN" 2>/dev/null || true
  [ -n "$SRV" ] && kill "$SRV" 2>/dev/null || true
  for n in $(ip netns list | awk '{print $1}' | grep -E '^qs'); do ip netns del "$n" 2>/dev/null || true; done
}
trap cleanup EXIT
cleanup
ip netns add qsh; ip -n qsh link set lo up
ip netns add qsc; ip -n qsc link set lo up
ip -n qsh link add qsbr type bridge; ip -n qsh link set qsbr up
ip -n qsh link add qsh1 type veth peer name qsc1 netns qsc
ip -n qsh link set qsh1 master qsbr up
ip -n qsc addr add 10.0.0.2/8 dev qsc1; ip -n qsc link set qsc1 up
taskset -c 0 "$Q" serve --netns qsh --state-dir "$W/state" --bridge-mappings physnet1:qsbr \
  --namespace-prefix qsd --namespace-id-chars 8 --log-file "$W/serve.log" &
SRV=$!
for _ in $(seq 100); do ip netns exec qsh curl -s -o /dev/null 127.0.0.1:9696/ && break; sleep 0.1; done
ip netns exec qsh python3 - "$W" <<'PY'
import json, sys, urllib.request
w = sys.argv[1]
def call(method, path, body=None):
    r = urllib.request.Request("http://127.0.0.1:9696" + path, data=json.dumps(body).encode() if body else None, method=method, headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(r))
net = call("POST", "/v2.0/networks", {"network": {"name": "soak", "provider:network_type": "flat", "provider:physical_network": "physnet1"}})["network"]["id"]
sub = call("POST", "/v2.0/subnets", {"subnet": {"network_id": net, "cidr": "10.0.0.0/8", "ip_version": 4, "gateway_ip": "10.0.0.254",
      "allocation_pools": [{"start": "10.0.1.1", "end": "10.0.255.250"}]}})["subnet"]["id"]
def mac(i): return "fa:16:3e:%02x:%02x:%02x" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)
ports = [{"network_id": net, "mac_address": mac(i), "fixed_ips": [{"subnet_id": sub, "ip_address": "10.1.%d.%d" % (i // 250, 1 + i % 250)}]} for i in range(2000)]
call("POST", "/v2.0/ports", {"ports": ports})
open(w + "/net", "w").write(net)
PY
sleep 1
for t in /proc/$SRV/task/*; do taskset -pc 0 "$(basename "$t")" >/dev/null 2>&1 || true; done
NET=$(cat "$W/net")
# churn: create and delete ports through the API for the whole soak
ip netns exec qsh python3 - "$NET" > "$W/churn.log" 2>&1 <<'PY' &
import json, sys, time, urllib.request
net = sys.argv[1]
def call(method, path, body=None):
    r = urllib.request.Request("http://127.0.0.1:9696" + path, data=json.dumps(body).encode() if body else None, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(r) as f:
        return json.load(f) if f.status != 204 else None
n = 0
while True:
    ids = [call("POST", "/v2.0/ports", {"port": {"network_id": net, "name": "churn"}})["port"]["id"] for _ in range(20)]
    for i in ids: call("DELETE", "/v2.0/ports/" + i)
    n += 20
    print(n, flush=True)
    time.sleep(1)
PY
CHURN=$!
echo "minute,rss_kb,rate,drop_pct,offer_p99_us,ack_p99_us,churned_ports" > "$W/soak.csv"
for m in $(seq "$MIN"); do
  rec=()
  [ "$m" = "$MIN" ] && rec=(--record "$W/acked")
  res=$(ip netns exec qsc taskset -c 1 "$Q" loadgen --server 10.0.1.1 --giaddr 10.0.0.2 --device qsc1 --clients 2000 \
        --rate "$RATE" --duration 60 --json "${rec[@]}")
  rss=$(awk '/VmRSS/{print $2}' /proc/$SRV/status)
  churn=$(tail -1 "$W/churn.log" 2>/dev/null || echo 0)
  python3 -c "import json,sys; d=json.loads(sys.argv[1]); print('%d,%s,%.0f,%.3f,%s,%s,%s' % ($m, '$rss', d['rate'], d['drop_pct'], d['offer_p99_us'], d['ack_p99_us'], '$churn'))" "$res" | tee -a "$W/soak.csv"
done
kill "$CHURN"; CHURN=""
# every static port's lease still renews with the same address
sort -u -k1,1 "$W/acked" > "$W/acked.uniq"
renew=$(ip netns exec qsc taskset -c 1 "$Q" loadgen --server 10.0.1.1 --giaddr 10.0.0.2 --device qsc1 --mode renew \
        --renew-from "$W/acked.uniq" --rate 2000 --duration 2 --json)
python3 bench/soak_report.py "$W/soak.csv" "$renew" "$MIN" "$RATE" > bench/SOAK.md
cat bench/SOAK.md
