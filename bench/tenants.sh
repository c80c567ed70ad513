#!/usr/bin/env bash
# Tenant networks at scale (issue 13, point 5): one `qdhcp serve` with N tenant VXLAN networks
# (one subnet and DHCP port, namespace, bridge and vxlan device each), created through the API.
# Measures: creation rate (networks+subnets/s, including plumbing), RSS, threads, descriptors,
# idle CPU over 60 s, DISCOVER->OFFER latency on one network while the others idle, and kill -9
# -> every network serving again. Results go to bench/tenants-last.txt (written up in
# bench/TENANTS.md). Usage (as root): [SERVE_FLAGS="--no-dns"] bench/tenants.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
cargo build --release --bin qdhcp
Q=$PWD/target/release/qdhcp
W=$(mktemp -d /tmp/qdhcp-tenants.XXXX)
SRV=""
cleanup() {
  [ -n "$SRV" ] && kill "$SRV" 2>/dev/null && wait "$SRV" 2>/dev/null || true
  for n in $(ip netns list | awk '{print $1}' | grep -E '^qz'); do ip netns del "$n" 2>/dev/null || true; done
}
trap cleanup EXIT
cleanup
ip netns add qzh; ip -n qzh link set lo up
ip netns add qzc; ip -n qzc link set lo up
# the underlay: qdhcp's tunnel address on a veth to a "compute host"
ip -n qzh link add qzu0 type veth peer name qzu1 netns qzc
ip -n qzh addr add 10.255.0.1/24 dev qzu0; ip -n qzh link set qzu0 up
ip -n qzc addr add 10.255.0.2/24 dev qzu1; ip -n qzc link set qzu1 up
start() {
  "$Q" serve --netns qzh --state-dir "$W/state" --namespace-prefix qzd --namespace-id-chars 10 \
    --vni-ranges 1:100000 --local-ip 10.255.0.1 --bridge-mappings physnet1:qzbr \
    --log-file "$W/serve.log" --quiet-dhcp ${SERVE_FLAGS:-} &
  SRV=$!
}
started_count() { local n; n=$(grep -c "started, qdhcp" "$W/serve.log" 2>/dev/null) || true; echo "${n:-0}"; }
api() { ip netns exec qzh python3 -c "
import json, sys, urllib.request
r = urllib.request.Request('http://127.0.0.1:9696' + sys.argv[2], data=sys.argv[3].encode() if len(sys.argv) > 3 else None, method=sys.argv[1], headers={'Content-Type': 'application/json'})
print(urllib.request.urlopen(r).read().decode())" "$@"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SRV/stat"; }
# every core's busy time (user, nice, system, irq, softirq, steal): the kernel's own work for
# the bridges, vxlan devices and namespaces shows here, not in the process's figure
host_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

start
while [ "$(started_count)" -lt 1 ]; do sleep 0.1; done
OUT=$W/out.txt
: > "$OUT"
echo "flags: ${SERVE_FLAGS:-none}; descriptors allowed: $(ulimit -Hn)" | tee -a "$OUT"
echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); $(date -u +%Y-%m-%d)" | tee -a "$OUT"
echo "create: $(ip netns exec qzh python3 bench/tenants.py "$N" 8)" | tee -a "$OUT"

# one flat network to probe: 100 reserved clients, a relay agent on its bridge
NET=$(api POST /v2.0/networks '{"network": {"name": "probe", "provider:network_type": "flat", "provider:physical_network": "physnet1"}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["network"]["id"])')
api POST /v2.0/subnets "{\"subnet\": {\"network_id\": \"$NET\", \"cidr\": \"10.250.0.0/16\", \"ip_version\": 4, \"allocation_pools\": [{\"start\": \"10.250.0.10\", \"end\": \"10.250.200.0\"}]}}" > /dev/null
for i in $(seq 0 99); do
  api POST /v2.0/ports "{\"port\": {\"network_id\": \"$NET\", \"mac_address\": \"fa:16:3e:00:00:$(printf %02x "$i")\"}}" > /dev/null
done
ip netns add qzp; ip -n qzp link set lo up
ip -n qzh link add qzpt type veth peer name qzpi netns qzp
ip -n qzh link set qzpt master qzbr up
ip -n qzp addr add 10.250.255.1/16 dev qzpi; ip -n qzp link set qzpi up
sleep 2
# the generator busy-polls on the second core: the reply times are the server's, not its own
# wake-ups
probe() { ip netns exec qzp taskset -c 1 "$Q" loadgen --spin --server 10.250.0.10 --giaddr 10.250.255.1 --device qzpi --clients 100 "$@"; }
probe --mode discover --rate 100 --duration 2 > /dev/null   # ARP and caches warm

sleep 10
P=$SRV
echo "after creation: $(grep -E 'VmRSS|Threads' /proc/$P/status | tr -s '\t ' ' ' | tr '\n' ';') fds $(ls /proc/$P/fd | wc -l); DHCP listeners $(ip netns list | grep -c '^qzd')" | tee -a "$OUT"
t0=$(cpu_ticks); h0=$(host_ticks); sleep 60; t1=$(cpu_ticks); h1=$(host_ticks)
echo "idle CPU over 60 s: $(python3 -c "print(round(($t1-$t0)/$(getconf CLK_TCK)/60*100, 3))")% of one core; the whole machine (kernel included): $(python3 -c "print(round(($h1-$h0)/$(getconf CLK_TCK)/60*100, 3))")% of one core" | tee -a "$OUT"
echo "DISCOVER->OFFER on one network, the others idle (200/s for 10 s): $(probe --mode discover --rate 200 --duration 10)" | tee -a "$OUT"
# the same without busy-polling: a generator spinning on a core delays a serving thread woken
# on that core until the kernel preempts the spinner (its tick) unless the server runs at
# real-time priority (--realtime); waiting in the kernel instead adds its own wake-up
echo "DISCOVER->OFFER again, the generator not spinning: $(ip netns exec qzp "$Q" loadgen --server 10.250.0.10 --giaddr 10.250.255.1 --device qzpi --clients 100 --mode discover --rate 200 --duration 10)" | tee -a "$OUT"

# where the machine's idle time goes with N networks (kernel timers of bridges, vxlan devices,
# namespaces): PERF=file records every core for 20 s while the probe runs again
if [ -n "${PERF:-}" ]; then
  perf record -a -g -o "$PERF" -- sleep 20 > /dev/null 2>&1 &
  PERF_PID=$!
  echo "DISCOVER->OFFER again, during perf (200/s for 10 s): $(probe --mode discover --rate 200 --duration 10)" | tee -a "$OUT"
  while kill -0 "$PERF_PID" 2>/dev/null; do sleep 0.5; done
fi

# kill -9 and restart: until the API is up with every network reconciled, and until the probe
# network's clients are answered
kill -9 "$SRV"; wait "$SRV" 2>/dev/null || true
before=$(started_count)
T0=$(date +%s.%N)
start
while [ "$(started_count)" -le "$before" ]; do sleep 0.02; done
T1=$(date +%s.%N)
until probe --mode discover --rate 1 --duration 0.001 --timeout-ms 50 --json | grep -q '"offers":1'; do sleep 0.01; done
T2=$(date +%s.%N)
echo "kill -9 -> restart: API up and every surviving network served after $(python3 -c "print(round($T1-$T0, 2))") s; probe network answering after $(python3 -c "print(round($T2-$T0, 2))") s" | tee -a "$OUT"
echo "after restart: $(grep -E 'VmRSS|Threads' /proc/$SRV/status | tr -s '\t ' ' ' | tr '\n' ';')" | tee -a "$OUT"
cp "$OUT" bench/tenants-last.txt
echo "results in bench/tenants-last.txt; cleaning up $N namespaces (the kernel frees them slowly)"
