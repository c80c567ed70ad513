#!/usr/bin/env bash
# Failover under load (issue 14, point 7): two `qdhcp serve` nodes on one PostgreSQL serve one
# flat network (both DHCP ports on one L2: the nodes' bridges are joined by a veth); CLIENTS
# clients on the link (`qdhcp loadgen --mode keep`) take their leases, renew them at T1 by
# unicast to the server that gave them and rebind at T2 by broadcast, as VMs do; node A is
# killed with kill -9 once every client holds a lease and has renewed once. Measures: NAKs,
# expired leases and address changes (all must be 0), and the time from the kill until no
# client is held by node A any more (all rebound to B). Results: bench/failover-last.txt,
# written up in bench/HA.md. Usage (as root): bench/failover.sh [CLIENTS] [LEASE_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-10000}
LEASE=${2:-60}
cargo build --release --bin qdhcp
Q=$PWD/target/release/qdhcp
W=$(mktemp -d /tmp/qdhcp-failover.XXXX)
chmod 755 "$W"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
SA="" SB="" LG=""
cleanup() {
  for p in $SA $SB $LG; do kill -9 "$p" 2>/dev/null || true; done
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$W/pg/data" -m immediate stop >/dev/null 2>&1 || true
  for n in $(ip netns list | awk '{print $1}' | grep -E '^qf'); do ip netns del "$n" 2>/dev/null || true; done
}
trap cleanup EXIT
cleanup
mkdir -p "$W/pg"; chown postgres "$W/pg"
runuser -u postgres -- "$PGBIN/initdb" -D "$W/pg/data" -A trust -U postgres >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$W/pg/data" -l "$W/pg/log" -w start \
  -o "-k $W/pg -c listen_addresses='' -c fsync=on -c synchronous_commit=on -c max_connections=50" >/dev/null
URL="postgresql://postgres@localhost/postgres?host=$W/pg"
for n in qfa qfb; do
  ip netns add $n; ip -n $n link set lo up
  ip -n $n link add ${n}br type bridge; ip -n $n link set ${n}br up
done
# the physical network both nodes are on
ip -n qfa link add qfaw type veth peer name qfbw netns qfb
ip -n qfa link set qfaw master qfabr up; ip -n qfb link set qfbw master qfbbr up
start() { # node netns
  "$Q" serve --netns "$2" --state-dir "$W/$1" --database "$URL" --node "$1" --node-down-time 3 \
    --bridge-mappings "physnet1:${2}br" --namespace-prefix "${2}d" --namespace-id-chars 9 \
    --lease-duration "$LEASE" --client-rate 0 --no-dns --quiet-dhcp --log-file "$W/$1.log" &
}
started() { local n; n=$(grep -c "started, qdhcp" "$W/$1.log" 2>/dev/null) || true; echo "${n:-0}"; }
start node-a qfa; SA=$!
start node-b qfb; SB=$!
while [ "$(started node-a)" -lt 1 ] || [ "$(started node-b)" -lt 1 ]; do sleep 0.1; done
sleep 2 # each node sees the other alive
OUT=$W/out.txt; : > "$OUT"
echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); PostgreSQL $("$PGBIN/postgres" -V | awk '{print $3}'); $(date -u +%Y-%m-%d); $CLIENTS clients, lease $LEASE s" | tee -a "$OUT"
ip netns exec qfa python3 - "$CLIENTS" "$W" <<'PY' | tee -a "$OUT"
import json, sys, time, http.client
n, w = int(sys.argv[1]), sys.argv[2]
c = http.client.HTTPConnection("127.0.0.1", 9696)
def call(method, path, body=None):
    c.request(method, path, json.dumps(body) if body else None, {"Content-Type": "application/json"})
    r = c.getresponse(); b = json.loads(r.read() or b"{}")
    assert r.status in (200, 201), (r.status, b)
    return b
def mac(i): return "fa:16:3e:%02x:%02x:%02x" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)
net = call("POST", "/v2.0/networks", {"network": {"name": "failover", "provider:network_type": "flat", "provider:physical_network": "physnet1"}})["network"]["id"]
call("POST", "/v2.0/subnets", {"subnet": {"network_id": net, "cidr": "10.20.0.0/16", "ip_version": 4}})
t = time.time()
ports = [{"network_id": net, "mac_address": mac(i)} for i in range(n)]
for s in range(0, n, 500):
    call("POST", "/v2.0/ports", {"ports": ports[s:s + 500]})
# wait until both nodes have their DHCP port
for _ in range(100):
    dhcp = [p for p in call("GET", "/v2.0/ports?device_owner=network:dhcp&network_id=" + net)["ports"]]
    if len({p.get("binding:host_id") for p in dhcp}) == 2: break
    time.sleep(0.2)
by_node = {p["binding:host_id"]: p["fixed_ips"][0]["ip_address"] for p in dhcp}
json.dump(by_node, open(w + "/servers.json", "w"))
print("set-up: %d ports in %.0f s; DHCP ports %s" % (n, time.time() - t, by_node))
PY
A_IP=$(python3 -c "import json; print(json.load(open('$W/servers.json'))['node-a'])")
sleep 3
# the clients on node A's bridge (node B's port is reached through the veth); the first leases
# at 2,000 a second; node A dies after everyone has renewed once (T1 = lease / 2)
RUN=$((LEASE * 2 + 10))
KILL_AT=$((CLIENTS / 2000 + LEASE / 2 + LEASE / 6 + 2))
ip netns exec qfa taskset -c 1 "$Q" loadgen --mode keep --link qfabr --clients "$CLIENTS" --rate 2000 \
  --duration "$RUN" --series "$W/series.jsonl" > "$W/keep.json" &
LG=$!
T0=$(date +%s.%N)
sleep "$KILL_AT"
kill -9 "$SA"; wait "$SA" 2>/dev/null || true; SA=""
TK=$(python3 -c "print(round($(date +%s.%N) - $T0, 1))")
wait "$LG"; LG=""
echo "node A ($A_IP) killed with kill -9 at t=${TK}s" | tee -a "$OUT"
echo "clients at the end: $(cat "$W/keep.json")" | tee -a "$OUT"
python3 - "$W/series.jsonl" "$A_IP" "$TK" <<'PY' | tee -a "$OUT"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
a, tk = sys.argv[2], float(sys.argv[3])
at_kill = next(r for r in rows if r["t"] >= tk)
held = at_kill["holders"].get(a, 0)
gone = next((r for r in rows if r["t"] > tk and r["holders"].get(a, 0) == 0), None)
print("held by node A at the kill: %d of %d; " % (held, sum(at_kill["holders"].values())) +
      ("all rebound to node B %.1f s after the kill (series taken every second)" % (gone["t"] - tk) if gone else "NOT all rebound by the end"))
last = rows[-1]
print("at the end: holders %s, NAKs %d, expired %d, address changes %d, rebinds acknowledged %d" %
      (last["holders"], last["naks"], last["expired"], last["address_changes"], last["rebound"]))
PY
cp "$W/series.jsonl" bench/failover-series.jsonl
cp "$OUT" bench/failover-last.txt
echo "written to bench/failover-last.txt"
