#!/usr/bin/env bash
# Instance metadata (issue 26, point 6), in one run on this machine: requests/s and latency of
# http://169.254.169.254/openstack/latest/meta_data.json from a VM namespace (wrk, on core 1)
#   1. qdhcp serve, built-in answers from the registry;
#   2. qdhcp serve, proxy mode, forwarding to a local upstream (an haproxy answering a fixed
#      meta_data.json at 127.0.0.1:8775 and on a unix socket, standing in for Nova plus
#      Neutron's metadata agent);
#   3. haproxy as Neutron's DHCP agent configures it (neutron/agent/metadata/driver.py:
#      bind in the DHCP namespace, option http-server-close, forwardfor, X-Neutron-Network-ID,
#      server on a unix socket) forwarding to the same upstream;
# each server and the upstream pinned to core 0. Then memory per network with metadata on and
# off (1,000 tenant networks each). Raw output: bench/metadata-last.txt (kept runs: bench/metadata-run*.txt); written up in
# bench/METADATA.md. Usage (as root): bench/metadata.sh [SECONDS] [NETWORKS]
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-10}
NETS=${2:-1000}
need=()
for t in wrk haproxy; do command -v "$t" >/dev/null || need+=("$t"); done
if [ ${#need[@]} -gt 0 ]; then apt-get update && apt-get install -y --no-install-recommends "${need[@]}"; fi
cargo build --release --bin qdhcp
Q=$PWD/target/release/qdhcp
W=$(mktemp -d /tmp/qdhcp-metadata.XXXX)
chmod 755 "$W"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  PIDS=()
  for n in $(ip netns list | awk '{print $1}' | grep -E '^qm'); do ip netns del "$n" 2>/dev/null || true; done
}
trap cleanup EXIT
cleanup
OUT=$W/out.txt
: > "$OUT"
echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); $(date -u +%Y-%m-%d); $(haproxy -v | head -1 | cut -d' ' -f1-3); wrk $(wrk -v 2>&1 | head -1 | cut -d' ' -f2)" | tee -a "$OUT"

api() { ip netns exec qmh python3 -c "
import json, sys, urllib.request
r = urllib.request.Request('http://127.0.0.1:9696' + sys.argv[2], data=sys.argv[3].encode() if len(sys.argv) > 3 else None, method=sys.argv[1], headers={'Content-Type': 'application/json'})
print(urllib.request.urlopen(r).read().decode())" "$@"; }
jget() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d' + sys.argv[1]))" "$1"; }

setup() {
  ip netns add qmh; ip -n qmh link set lo up
  ip -n qmh link add qmu0 type veth peer name qmu1
  ip -n qmh addr add 10.255.0.1/24 dev qmu0; ip -n qmh link set qmu0 up
  ip netns add qmv; ip -n qmv link set lo up
}
# start_serve FLAGS...: qdhcp serve in qmh, every thread on core 0
start_serve() {
  taskset -c 0 "$Q" serve --netns qmh --state-dir "$W/state-$RANDOM" --namespace-prefix qmd \
    --namespace-id-chars 12 --bridge-mappings physnet1:qmbr --vni-ranges 1:100000 \
    --local-ip 10.255.0.1 --metadata-rate-limit 0 --quiet-dhcp --log-file "$W/serve.log" "$@" &
  SRV=$!
  PIDS+=("$SRV")
  until grep -q "started, qdhcp" "$W/serve.log" 2>/dev/null; do sleep 0.1; done
  : > "$W/serve.log"
}
# one flat network with the VM's port at 10.0.0.10; the VM namespace plugged into its bridge
one_network() {
  NET=$(api POST /v2.0/networks '{"network": {"name": "m", "provider:network_type": "flat", "provider:physical_network": "physnet1"}}' | jget '["network"]["id"]')
  api POST /v2.0/subnets "{\"subnet\": {\"network_id\": \"$NET\", \"cidr\": \"10.0.0.0/24\", \"ip_version\": 4, \"allocation_pools\": [{\"start\": \"10.0.0.100\", \"end\": \"10.0.0.200\"}]}}" > /dev/null
  MAC=$(api POST /v2.0/ports "{\"port\": {\"network_id\": \"$NET\", \"device_id\": \"0c1f2a6e-5d4b-4b7e-9a53-6f2d7c1e9b10\", \"dns_name\": \"bench-vm\", \"fixed_ips\": [{\"ip_address\": \"10.0.0.10\"}]}}" | jget '["port"]["mac_address"]')
  ip link add qmvt netns qmh type veth peer name qmvi netns qmv
  ip -n qmh link set qmvt master qmbr up
  ip -n qmv link set qmvi address "$MAC" up
  ip -n qmv addr add 10.0.0.10/24 dev qmvi
  ip -n qmv route add 169.254.169.254/32 via 10.0.0.100
  DNS_NS=$(ip netns list | awk '{print $1}' | grep '^qmd' | head -1)
  until ip netns exec qmv curl -s -m 1 -o /dev/null http://169.254.169.254/openstack; do sleep 0.2; done
}
teardown() { cleanup; }

# wrk_run LABEL URL: two loads (1 connection, 32 connections), keep-alive, on core 1
wrk_run() {
  for c in 1 32; do
    r=$(ip netns exec qmv taskset -c 1 wrk -t1 -c"$c" -d"${D}s" --latency "$2" 2>&1)
    rps=$(echo "$r" | awk '/Requests\/sec/{print $2}')
    p50=$(echo "$r" | awk '$1=="50%"{print $2}')
    p99=$(echo "$r" | awk '$1=="99%"{print $2}')
    non2xx=$(echo "$r" | awk '/Non-2xx/{print $NF}')
    errs=$(echo "$r" | awk '/Socket errors/{print}')
    echo "$1, $c connection(s): $rps req/s, p50 $p50, p99 $p99, non-2xx ${non2xx:-0} ${errs}" | tee -a "$OUT"
  done
}

upstream() {
  cat > "$W/upstream.cfg" <<CFG
global
    maxconn 4096
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend nova
    bind 127.0.0.1:8775
    bind unix@$W/nova.sock mode 666
    http-request return status 200 content-type application/json string "{\"uuid\": \"0c1f2a6e-5d4b-4b7e-9a53-6f2d7c1e9b10\", \"meta\": {}, \"hostname\": \"bench-vm.openstacklocal\", \"name\": \"bench-vm\", \"launch_index\": 0, \"availability_zone\": \"nova\", \"project_id\": \"0d6a3b5c8f1e4d2a9b7c6e5f4a3b2c1d\", \"devices\": []}"
CFG
  ip netns exec qmh taskset -c 0 haproxy -db -f "$W/upstream.cfg" &
  PIDS+=("$!")
  until [ -S "$W/nova.sock" ]; do sleep 0.1; done
}

# 1. built-in
setup; start_serve; one_network
wrk_run "qdhcp built-in" http://169.254.169.254/openstack/latest/meta_data.json
echo "qdhcp serve RSS with one network: $(awk '/VmRSS/{print $2, $3}' /proc/$SRV/status)" | tee -a "$OUT"
teardown

# 2. proxy, and 3. Neutron's haproxy, to the same upstream
setup; upstream
start_serve --nova-metadata-url http://127.0.0.1:8775 --metadata-proxy-shared-secret bench-secret
one_network
wrk_run "qdhcp proxy -> upstream" http://169.254.169.254/openstack/latest/meta_data.json
# Neutron's haproxy.cfg for a network (driver.py's template; port 8080 here: 80 is qdhcp's).
# Neutron logs every request (`log /dev/log local0 debug`, option httplog); with no syslog
# daemon here it logs to a file instead, as qdhcp does its line per request.
cat > "$W/neutron-haproxy.cfg" <<CFG
global
    log         stdout format raw local0 debug
    maxconn     1024
    nbthread    1
defaults
    log                     global
    mode                    http
    option httplog
    option dontlognull
    option http-server-close
    option forwardfor
    retries                 3
    timeout http-request    30s
    timeout connect         30s
    timeout client          32s
    timeout server          32s
    timeout http-keep-alive 30s
listen listener
    bind 169.254.169.254:8080
    server metadata $W/nova.sock
    http-request del-header X-Neutron-Network-ID
    http-request set-header X-Neutron-Network-ID $NET
CFG
ip netns exec "$DNS_NS" taskset -c 0 haproxy -db -f "$W/neutron-haproxy.cfg" > "$W/haproxy.log" 2>&1 &
PIDS+=("$!")
until ip netns exec qmv curl -s -m 1 -o /dev/null http://169.254.169.254:8080/; do sleep 0.2; done
wrk_run "haproxy (Neutron's config) -> upstream" http://169.254.169.254:8080/openstack/latest/meta_data.json
echo "log lines: qdhcp $(grep -c 'status: 200' "$W/serve.log"), haproxy $(grep -c 'GET /openstack' "$W/haproxy.log")" | tee -a "$OUT"
teardown

# memory per network: NETS tenant networks with metadata on, then off
for flags in "" "--no-isolated-metadata"; do
  setup; start_serve --no-dns $flags
  created=$(ip netns exec qmh python3 bench/tenants.py "$NETS" 8)
  sleep 5
  echo "$NETS networks, metadata ${flags:-on}: $(grep -E 'VmRSS|Threads' /proc/$SRV/status | tr -s '\t ' ' ' | tr '\n' ';') fds $(ls /proc/$SRV/fd | wc -l); create: $created" | tee -a "$OUT"
  teardown
done
cp "$OUT" bench/metadata-last.txt
echo "results in bench/metadata-last.txt"
