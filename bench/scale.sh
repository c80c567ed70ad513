#!/usr/bin/env bash
# Scale figures for qdhcp, beside dnsmasq where the issue asks for a comparison:
#  1. start-up: time from exec until a client of the last reservation is served, with 1,000,
#     100,000 and 1,000,000 reservations (dnsmasq: 100,000);
#  2. throughput at a fixed offered rate with 1,000 / 100,000 / 1,000,000 reservations (O(1) lookups);
#  3. a reservation added while serving 20,000 DORA/s with 100,000 reservations: SIGHUP reload time
#     (qdhcp dnsmasq mode, and dnsmasq), and API port-create latency in serve mode (the port is in
#     the table when the POST returns);
#  4. RSS of one `qdhcp serve` with 1,000 networks (one namespace each, 20 ports each), started
#     fresh for it.
# Writes bench/SCALE.md. Usage (as root): bench/scale.sh [FIXED_RATE]
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-40000}
cargo build --release --bin qdhcp
Q=$PWD/target/release/qdhcp
W=$(mktemp -d /tmp/qdhcp-scale.XXXX)
chmod 755 "$W"
SRV=""
cleanup() {
  [ -n "$SRV" ] && kill "$SRV" 2>/dev/null || true
  for n in $(ip netns list | awk '{print $1}' | grep -E '^qz'); do ip netns del "$n" 2>/dev/null || true; done
}
trap cleanup EXIT
cleanup
ip netns add qzs; ip netns add qzc
ip -n qzs link set lo up; ip -n qzc link set lo up
ip -n qzs link add qzs0 type veth peer name qzc0 netns qzc
ip -n qzs addr add 10.0.0.1/8 dev qzs0; ip -n qzs link set qzs0 up
ip -n qzc addr add 10.0.0.2/8 dev qzc0; ip -n qzc addr add 10.0.0.4/8 dev qzc0; ip -n qzc link set qzc0 up
OUT=$W/scale.txt
: > "$OUT"
hosts() {  # N FILE
  python3 - "$1" "$2" <<'PY'
import sys
n, f = int(sys.argv[1]), sys.argv[2]
with open(f, "w") as o:
    for i in range(n):
        o.write("fa:16:3e:%02x:%02x:%02x,h%d,10.%d.%d.%d\n" % ((i >> 16) & 255, (i >> 8) & 255, i & 255, i, 1 + i // 62500, (i // 250) % 250, 1 + i % 250))
PY
}
lg() { ip netns exec qzc taskset -c 1 "$Q" loadgen --server 10.0.0.1 --giaddr 10.0.0.2 --device qzc0 --json "$@"; }
probe_until_served() {  # CLIENT_INDEX -> seconds until one DORA for it is ACKed
  local t0 t1
  t0=$(date +%s.%N)
  for _ in $(seq 2000); do
    if [ "$(lg --clients 1 --first-client "$1" --rate 1 --duration 0.001 --timeout-ms 50 | python3 -c 'import json,sys; print(json.load(sys.stdin)["acks"])')" = 1 ]; then
      t1=$(date +%s.%N); python3 -c "print(round(($t1-$t0)*1000, 1))"; return; fi
  done
  echo timeout
}
start_qdhcp() {  # HOSTS
  ip netns exec qzs taskset -c 0 "$Q" dnsmasq -k -u root --interface=qzs0 --port=0 --dhcp-range=10.0.0.0,static,255.0.0.0,86400s \
    --dhcp-hostsfile="$1" --dhcp-leasefile="$W/leases" --dhcp-lease-max=4000000 --quiet-dhcp --qdhcp-client-rate=0 --log-facility="$W/qdhcp.log" &
  SRV=$!
}
start_dnsmasq() {
  ip netns exec qzs taskset -c 0 dnsmasq -k -u root --no-hosts --no-resolv --port=0 --interface=qzs0 --bind-interfaces \
    --dhcp-range=10.0.0.0,static,255.0.0.0,86400s --dhcp-hostsfile="$1" --dhcp-leasefile="$W/dnsmasq.leases" \
    --dhcp-lease-max=4000000 --quiet-dhcp --log-facility="$W/dnsmasq.log" &
  SRV=$!
}
stop() { kill "$SRV" 2>/dev/null; wait "$SRV" 2>/dev/null || true; SRV=""; rm -f "$W"/leases* "$W"/dnsmasq.leases; }

echo "## 1-2. start-up and throughput by number of reservations" >> "$OUT"
for N in 1000 100000 1000000; do
  hosts "$N" "$W/hosts-$N"
  rm -f "$W"/leases*
  start_qdhcp "$W/hosts-$N"
  t=$(probe_until_served $((N - 1)))
  r=$(lg --clients "$N" --rate "$RATE" --duration 5)
  rss=$(awk '/VmRSS/{print $2}' /proc/$SRV/status)
  echo "qdhcp N=$N startup_ms=$t rss_kb=$rss fixed_rate=$r" | tee -a "$OUT"
  stop
done
start_dnsmasq "$W/hosts-100000"
t=$(probe_until_served 99999)
echo "dnsmasq N=100000 startup_ms=$t" | tee -a "$OUT"
stop

echo "## 3. a reservation added under load, 100,000 existing" >> "$OUT"
# bench/sighup_probe.py rewrites the hosts file as Neutron does (new file renamed over the old,
# one host more), sends SIGHUP and times until a DISCOVER for the new host is OFFERed.
for s in qdhcp dnsmasq; do
  cp "$W/hosts-100000" "$W/hosts-live"
  if [ $s = qdhcp ]; then start_qdhcp "$W/hosts-live"; LOAD=20000; DUR=24; COUNT=200; TMO=2
  else start_dnsmasq "$W/hosts-live"; LOAD=300; DUR=50; COUNT=2; TMO=60; fi
  probe_until_served 99999 >/dev/null
  lg --clients 100000 --rate $LOAD --duration $DUR > "$W/load-$s.json" &
  LG=$!
  sleep 2
  p=$(ip netns exec qzc taskset -c 1 python3 bench/sighup_probe.py 10.0.0.1 10.0.0.4 "$W/hosts-live" "$SRV" $COUNT $TMO)
  wait $LG
  echo "$s SIGHUP add, $LOAD DORA/s of load: new host served after SIGHUP: $p" | tee -a "$OUT"
  echo "$s load during the reloads: $(cat "$W/load-$s.json")" | tee -a "$OUT"
  [ $s = qdhcp ] && grep "reload:" "$W/qdhcp.log" | tail -1 | tee -a "$OUT"
  stop
done
# the same load with no reload, for the drops and tail latency it has anyway
cp "$W/hosts-100000" "$W/hosts-live"; start_qdhcp "$W/hosts-live"; probe_until_served 99999 >/dev/null
echo "qdhcp same load, no reload: $(lg --clients 100000 --rate 20000 --duration 24)" | tee -a "$OUT"
stop

echo "## 3b/4. serve mode: API create latency under load, and 1,000 networks" >> "$OUT"
ip netns add qzh; ip -n qzh link set lo up
taskset -c 0 "$Q" serve --netns qzh --state-dir "$W/serve" --bridge-mappings physnet1:qzbr --namespace-prefix qzd \
  --namespace-id-chars 10 --log-file "$W/serve.log" &
SRV=$!
for _ in $(seq 100); do ip netns exec qzh curl -s -o /dev/null 127.0.0.1:9696/ && break; sleep 0.1; done
# 3b: with 100,000 ports on one network and 20,000 DORA/s of load through the bridge, how long
# until a newly created port is in the reservation table (it is when the POST returns)
ip -n qzh link add qzh1 type veth peer name qzc1 netns qzc 2>/dev/null || true
ip netns exec qzh python3 - <<'PY' > "$W/net100k"
import json, urllib.request
def call(method, path, body=None):
    r = urllib.request.Request("http://127.0.0.1:9696" + path, data=json.dumps(body).encode() if body else None, method=method, headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(r))
net = call("POST", "/v2.0/networks", {"network": {"name": "big", "provider:network_type": "flat", "provider:physical_network": "physnet1"}})["network"]["id"]
sub = call("POST", "/v2.0/subnets", {"subnet": {"network_id": net, "cidr": "10.0.0.0/8", "ip_version": 4, "gateway_ip": "10.0.0.254",
      "allocation_pools": [{"start": "10.250.0.1", "end": "10.250.255.250"}]}})["subnet"]["id"]
def mac(i): return "fa:16:3e:%02x:%02x:%02x" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)
for k in range(0, 100000, 1000):
    call("POST", "/v2.0/ports", {"ports": [{"network_id": net, "mac_address": mac(i), "fixed_ips": [{"subnet_id": sub, "ip_address": "10.%d.%d.%d" % (1 + i // 62500, (i // 250) % 250, 1 + i % 250)}]} for i in range(k, k + 1000)]})
print(net)
PY
ip -n qzh link set qzh1 master qzbr up
ip -n qzc addr add 10.0.0.3/8 dev qzc1; ip -n qzc link set qzc1 up
ip netns exec qzc taskset -c 1 "$Q" loadgen --server 10.250.0.1 --giaddr 10.0.0.3 --device qzc1 --clients 100000 --rate 20000 --duration 12 --json > "$W/load-serve.json" &
LG=$!
sleep 2
ip netns exec qzh python3 - "$(cat "$W/net100k")" <<'PY' | tee -a "$OUT"
import json, sys, time, urllib.request
net = sys.argv[1]
def call(method, path, body=None):
    r = urllib.request.Request("http://127.0.0.1:9696" + path, data=json.dumps(body).encode() if body else None, method=method, headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(r))
lat = []
for k in range(300):
    t = time.time()
    call("POST", "/v2.0/ports", {"port": {"network_id": net}})
    lat.append(time.time() - t)
    time.sleep(0.01)
lat.sort()
print("serve, 100,000 ports + 20,000 DORA/s: port create -> in the DHCP table: p50 %.2f ms, p99 %.2f ms (300 creates)" % (1000 * lat[150], 1000 * lat[297]))
PY
wait $LG
echo "load during those creates: $(cat "$W/load-serve.json")" | tee -a "$OUT"
stop
# 4: a fresh serve with nothing but the 1,000 networks
taskset -c 0 "$Q" serve --netns qzh --state-dir "$W/serve4" --bridge-mappings physnet1:qzbr4 --namespace-prefix qzf \
  --namespace-id-chars 10 --quiet-dhcp --log-file "$W/serve4.log" &
SRV=$!
for _ in $(seq 100); do ip netns exec qzh curl -s -o /dev/null 127.0.0.1:9696/ && break; sleep 0.1; done
ip netns exec qzh python3 - <<'PY' | tee -a "$OUT"
import json, time, urllib.request
def call(method, path, body=None):
    r = urllib.request.Request("http://127.0.0.1:9696" + path, data=json.dumps(body).encode() if body else None, method=method, headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(r))
t0 = time.time()
lat = []
for k in range(1000):
    net = call("POST", "/v2.0/networks", {"network": {"name": "n%d" % k, "provider:network_type": "local"}})["network"]["id"]
    call("POST", "/v2.0/subnets", {"subnet": {"network_id": net, "cidr": "10.%d.%d.0/24" % (k // 250, k % 250), "ip_version": 4}})
    t = time.time()
    call("POST", "/v2.0/ports", {"ports": [{"network_id": net} for _ in range(20)]})
    lat.append(time.time() - t)
lat.sort()
print("1000 networks x (subnet + 20 ports) created in %.1f s; 20-port bulk create p50 %.1f ms p99 %.1f ms" % (time.time() - t0, 1000 * lat[500], 1000 * lat[990]))
PY
rss=$(awk '/VmRSS/{print $2}' /proc/$SRV/status)
nsn=$(ip netns list | grep -c '^qzf' || true)
echo "a fresh serve with 1000 networks only: RSS ${rss} kB, $nsn namespaces, $(ls /proc/$SRV/task | wc -l) threads" | tee -a "$OUT"
stop
ip netns add qzd-probe >/dev/null 2>&1 && ip netns del qzd-probe
echo "dnsmasq for comparison: one process per network, RSS of one serving 20 hosts:" | tee -a "$OUT"
hosts 20 "$W/hosts-20"
start_dnsmasq "$W/hosts-20"; sleep 0.5
echo "dnsmasq 20 hosts RSS $(awk '/VmRSS/{print $2}' /proc/$SRV/status) kB (x1000 networks)" | tee -a "$OUT"
stop
{ echo "# Scale figures (bench/scale.sh $RATE)"; echo; echo '```'; cat "$OUT"; echo '```'; } > bench/SCALE.md
cat bench/SCALE.md
