#!/usr/bin/env bash
# Two qdhcp nodes on one PostgreSQL (issue 14, point 7): a throwaway server (Debian's
# postgresql, fsync and synchronous_commit on: every commit durable), two `qdhcp serve` nodes in
# two host namespaces. Measures: API port creates/s through one node and through both at once;
# from a port create's 201 on node A to node B's API showing it (B's DHCP table is updated
# under the same lock before its API can show the port); restart of a node holding P ports
# (kill -9, then until every network is served again). Results: bench/ha-last.txt, written up
# in bench/HA.md. Creates are driven by wrk (Debian's package; bench/port_create.lua), the
# other steps by Python. Usage (as root): bench/ha.sh [SECONDS] [PORTS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
PORTS=${2:-100000}
WORKERS=${WORKERS:-16}
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
cargo build --release --bin qdhcp
Q=$PWD/target/release/qdhcp
W=$(mktemp -d /tmp/qdhcp-ha.XXXX)
chmod 755 "$W"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
SA="" SB=""
cleanup() {
  for p in $SA $SB; do kill -9 "$p" 2>/dev/null || true; done
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$W/pg/data" -m immediate stop >/dev/null 2>&1 || true
  for n in $(ip netns list | awk '{print $1}' | grep -E '^qz[ab]'); do ip netns del "$n" 2>/dev/null || true; done
}
trap 'cleanup; rm -rf "$W"' EXIT
cleanup
mkdir -p "$W/pg"; chown postgres "$W/pg"
runuser -u postgres -- "$PGBIN/initdb" -D "$W/pg/data" -A trust -U postgres >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$W/pg/data" -l "$W/pg/log" -w start \
  -o "-k $W/pg -c listen_addresses='' -c fsync=on -c synchronous_commit=on -c max_connections=50" >/dev/null
URL="postgresql://postgres@localhost/postgres?host=$W/pg"
for n in qza qzb; do ip netns add $n; ip -n $n link set lo up; done
start() { # node netns
  "$Q" serve --netns "$2" --state-dir "$W/$1" --database "$URL" --node "$1" --node-down-time 3 \
    --namespace-prefix "${2}d" --namespace-id-chars 9 --no-dns --quiet-dhcp \
    --log-file "$W/$1.log" &
}
started() { local n; n=$(grep -c "started, qdhcp" "$W/$1.log" 2>/dev/null) || true; echo "${n:-0}"; }
api() { local ns=$1; shift; ip netns exec "$ns" python3 -c "
import json, sys, urllib.request
r = urllib.request.Request('http://127.0.0.1:9696' + sys.argv[2], data=sys.argv[3].encode() if len(sys.argv) > 3 else None, method=sys.argv[1], headers={'Content-Type': 'application/json'})
print(urllib.request.urlopen(r).read().decode())" "$@"; }
start node-a qza; SA=$!
start node-b qzb; SB=$!
while [ "$(started node-a)" -lt 1 ] || [ "$(started node-b)" -lt 1 ]; do sleep 0.1; done
sleep 2 # each node sees the other alive
OUT=$W/out.txt; : > "$OUT"
echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); PostgreSQL $("$PGBIN/postgres" -V | awk '{print $3}') (fsync, synchronous_commit on, unix socket); $(date -u +%Y-%m-%d)" | tee -a "$OUT"
net() { # name cidr-prefix(10.K) -> id
  local id
  id=$(api qza POST /v2.0/networks "{\"network\": {\"name\": \"$1\", \"provider:network_type\": \"local\"}}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["network"]["id"])')
  api qza POST /v2.0/subnets "{\"subnet\": {\"network_id\": \"$id\", \"cidr\": \"$2.0.0/16\", \"ip_version\": 4}}" >/dev/null
  echo "$id"
}
creates() { # namespace network connections -> wrk's JSON line (bench/port_create.lua)
  ip netns exec "$1" env NET="$2" wrk -t1 -c"$3" -d"${SECS}s" --timeout 10s -s bench/port_create.lua \
    http://127.0.0.1:9696 | tail -n 1
}
count() { # network -> ports it holds, as node B's API shows them
  api qzb GET "/v2.0/ports?network_id=$1&fields=id" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["ports"]))'
}
N1=$(net bench 10.1)
A=$(creates qza "$N1" "$WORKERS")
echo "creates through node A ($WORKERS connections, ${SECS}s): $A; ports stored: $(count "$N1")" | tee -a "$OUT"
N2=$(net bench2 10.2)
creates qza "$N2" $((WORKERS / 2)) > "$W/ca.json" &
CA=$!
creates qzb "$N2" $((WORKERS / 2)) > "$W/cb.json"
wait $CA
python3 - "$W/ca.json" "$W/cb.json" $((WORKERS / 2)) "$(count "$N2")" <<'EOF' | tee -a "$OUT"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
ra, rb = a["requests"] / a["seconds"], b["requests"] / b["seconds"]
print("creates through nodes A and B at once (%s connections each): %.1f + %.1f = %.1f/s, "
      "non-2xx %d, p99 %.1f / %.1f ms; ports stored: %s of %d answered"
      % (sys.argv[3], ra, rb, ra + rb, a["non_2xx"] + b["non_2xx"], a["p99_ms"], b["p99_ms"],
         sys.argv[4], a["requests"] + b["requests"]))
EOF
echo "201 on A -> shown by B: $(ip netns exec qza python3 bench/ha.py feed "$N1" 300 qzb)" | tee -a "$OUT"

# restart with PORTS ports in networks of at most 20,000
HAVE=$(api qzb GET "/v2.0/ports?fields=id" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["ports"]))')
K=3
while [ "$HAVE" -lt "$PORTS" ]; do
  NK=$(net "fill$K" "10.$K")
  LEFT=$((PORTS - HAVE)); [ "$LEFT" -gt 20000 ] && LEFT=20000
  ip netns exec qza python3 - "$NK" "$LEFT" <<'EOF'
import json, sys, threading, http.client
net, n = sys.argv[1], int(sys.argv[2])
it = iter(range(n)); lock = threading.Lock()
def w():
    c = http.client.HTTPConnection("127.0.0.1", 9696)
    while True:
        with lock:
            if next(it, None) is None: return
        c.request("POST", "/v2.0/ports", json.dumps({"port": {"network_id": net}}), {"Content-Type": "application/json"})
        r = c.getresponse(); r.read(); assert r.status == 201, r.status
ts = [threading.Thread(target=w) for _ in range(16)]
[t.start() for t in ts]; [t.join() for t in ts]
EOF
  HAVE=$(api qzb GET "/v2.0/ports?fields=id" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["ports"]))')
  K=$((K + 1))
done
NETS=$(api qzb GET "/v2.0/networks?fields=id" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["networks"]))')
SERVED=$(grep -c "DHCP listening" "$W/node-b.log" || true)
echo "node B: $HAVE ports in $NETS networks; networks it serves: $SERVED" | tee -a "$OUT"
kill -9 "$SB"; wait "$SB" 2>/dev/null || true
T0=$(date +%s.%N)
start node-b qzb; SB=$!
while [ "$(started node-b)" -lt 2 ]; do sleep 0.01; done
T1=$(date +%s.%N)
while ! grep -q "plumbing of .* networks checked" <(tail -n 50 "$W/node-b.log"); do sleep 0.01; done
T2=$(date +%s.%N)
AGAIN=$(grep "networks served again in" "$W/node-b.log" | tail -1 | sed 's/.*qdhcp\[[0-9]*\]: //')
echo "restart of node B after kill -9: API up in $(python3 -c "print(round($T1 - $T0, 2))") s; '$AGAIN'; every network checked in $(python3 -c "print(round($T2 - $T0, 2))") s" | tee -a "$OUT"
echo "RSS of node B after restart: $(awk '/VmRSS/{print $2/1024 " MB"}' /proc/$SB/status)" | tee -a "$OUT"
cp "$OUT" bench/ha-last.txt
echo "written to bench/ha-last.txt"
