#!/usr/bin/env bash
# The seed's own path under load (issue 13, point 5): clients ON THE LINK, not a relay agent.
# `qdhcp loadgen --link` is every client itself: its DISCOVER and REQUEST leave as broadcast
# frames from its own MAC, and the replies are taken off the link as a VM would see them
# (RFC 2131 §4.1: unicast to yiaddr at chaddr). Two parts:
#  1. one link, N reservations: qdhcp (dnsmasq mode), dnsmasq and Kea (raw sockets, as it serves
#     direct clients), each pinned to CPU 0, the generator busy-polling on CPU 1; ISC's method:
#     raise the rate until more than 2.5% of exchanges get no reply within 1 s.
#  2. `qdhcp serve` with NETS tenant VXLAN networks: DORA/s with the clients spread over all
#     their bridges at once, against the same number of clients on one network.
# Results: bench/onlink-last.jsonl and bench/onlink-last.txt, written up in bench/ONLINK.md.
# Usage (as root): bench/onlink.sh [-n RESERVATIONS] [-d SECONDS_PER_STEP] [-m NETS] [-k PER_NET] [-p "1 2"]
set -euo pipefail
cd "$(dirname "$0")/.."
N=10000; D=5; NETS=1000; K=20; PARTS="1 2"
SERVERS=${SERVERS:-"qdhcp dnsmasq kea"}
while getopts "n:d:m:k:p:" o; do
  case $o in n) N=$OPTARG ;; d) D=$OPTARG ;; m) NETS=$OPTARG ;; k) K=$OPTARG ;; p) PARTS=$OPTARG ;; *) exit 2 ;; esac
done
need=()
for pair in dnsmasq:dnsmasq-base kea-dhcp4:kea-dhcp4-server ip:iproute2; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi
cargo build --release --bin qdhcp
Q=$PWD/target/release/qdhcp
W=$(mktemp -d /tmp/qdhcp-onlink.XXXX)
# dnsmasq's lease file and Kea's memfile on tmpfs, as in bench/run.sh; qdhcp's journal stays on
# the root disk (fdatasync before every ACK)
SHM=/dev/shm
rm -f "$SHM"/dnsmasq.leases
OUT=bench/onlink-last.jsonl
TXT=bench/onlink-last.txt
SRV=""
del_netns() { for n in $(ip netns list | awk '{print $1}' | grep -E '^qo'); do ip netns del "$n" 2>/dev/null || true; done; }
stop() { [ -n "$SRV" ] && kill "$SRV" 2>/dev/null && wait "$SRV" 2>/dev/null || true; SRV=""; }
cleanup() { stop; del_netns; }
trap cleanup EXIT
cleanup
: > "$OUT"
echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); $(date -u +%Y-%m-%d); neighbour table gc_thresh3 $(sysctl -n net.ipv4.neigh.default.gc_thresh3)" | tee "$TXT"
mac() { printf 'fa:16:3e:%02x:%02x:%02x' $(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255)); }
load() { # NS ARGS...: the generator on CPU 1, busy-polling
  local ns=$1; shift
  ip netns exec "$ns" taskset -c 1 "$Q" loadgen --spin --json "$@"
}
RATES="250 500 1000 2000 4000 8000 12000 16000 20000 25000 30000 35000 40000 50000 60000 70000 80000 100000"
ramp() { # NAME CLIENTS NS ARGS...: raise the rate until two steps drop more than 2.5%
  local name=$1 pop=$2 ns=$3; shift 3
  local fails=0 best=0 r res drop
  for r in $RATES; do
    res=$(load "$ns" "$@" --clients "$pop" --rate "$r" --duration "$D")
    python3 -c "import json,sys; d=json.loads(sys.argv[1]); d.update(server='$name', path='on-link', clients=$pop); print(json.dumps(d))" "$res" >> "$OUT"
    drop=$(python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(100.0 * (d['started'] - d['acks']) / max(d['started'], 1))" "$res")
    if python3 -c "import sys; sys.exit(0 if $drop > 2.5 else 1)"; then
      fails=$((fails + 1)); [ $fails -ge 2 ] && break
    elif [ $fails -eq 0 ]; then best=$r; fi
  done
  local at; at=$(python3 -c "
import json, sys
rows = [r for r in map(json.loads, open('$OUT')) if r.get('server') == '$name' and r.get('clients') == $pop and 'layout' not in r]
unbound = lambda r: 100.0 * (r['started'] - r['acks']) / max(r['started'], 1)
first = next((r for r in rows if unbound(r) > 2.5), None)
ok = [r for r in rows if unbound(r) <= 2.5]
b = max(ok, key=lambda r: r['rate']) if ok else None
print(('peak %.0f DORA/s (offered %s, drops %.2f%%, DISCOVER->OFFER p50 %sus p99 %sus, REQUEST->ACK p50 %sus p99 %sus, ARP answered %s)' % (b['rate'], b['offered_rate'], b['drop_pct'], b['offer_p50_us'], b['offer_p99_us'], b['ack_p50_us'], b['ack_p99_us'], b['arp_replies']) if b else 'no step under 2.5% drops') + ('; first step over 2.5%%: %s/s (%.1f%%)' % (first['offered_rate'], first['drop_pct']) if first else ''))
")
  echo "$name on the link, $pop clients: $at" | tee -a "$TXT"
}

if [[ " $PARTS " == *" 1 "* ]]; then
  # --- part 1: qos (server) <-veth-> qoc (the clients), no address on the clients' side
  ip netns add qos; ip netns add qoc
  ip -n qos link set lo up; ip -n qoc link set lo up
  ip -n qos link add qos0 type veth peer name qoc0 netns qoc
  ip -n qos addr add 10.0.0.1/8 dev qos0; ip -n qos link set qos0 up
  ip -n qoc link set qoc0 up
  python3 - "$N" "$W" <<'PY'
import json, sys
n, w = int(sys.argv[1]), sys.argv[2]
def mac(i): return "fa:16:3e:%02x:%02x:%02x" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)
def ip(i): return "10.%d.%d.%d" % (1 + (i >> 16), (i >> 8) & 255, 1 + (i & 255) if (i & 255) < 254 else 1)
rows, seen = [], set()
for i in range(n):
    a = ip(i)
    if a in seen: a = "10.%d.%d.%d" % (100 + (i >> 16), (i >> 8) & 255, i & 255 or 1)
    seen.add(a); rows.append((mac(i), a))
with open(w + "/hosts", "w") as f:
    for i, (m, a) in enumerate(rows): f.write("%s,host-%d,%s\n" % (m, i, a))
kea = {"Dhcp4": {
    "interfaces-config": {"interfaces": ["qos0"], "dhcp-socket-type": "raw"},
    "lease-database": {"type": "memfile", "persist": True, "name": w.replace("/tmp", "/dev/shm") + "-kea-leases4.csv", "lfc-interval": 0},
    "multi-threading": {"enable-multi-threading": True, "thread-pool-size": 2, "packet-queue-size": 64},
    "valid-lifetime": 86400,
    "subnet4": [{"id": 1, "subnet": "10.0.0.0/8", "pools": [],
                 "reservations": [{"hw-address": m, "ip-address": a} for m, a in rows]}],
    "loggers": [{"name": "kea-dhcp4", "severity": "WARN", "output_options": [{"output": "stderr"}]}]}}
json.dump(kea, open(w + "/kea.json", "w"))
PY
  for s in $SERVERS; do
    rm -f "$W"/*.leases* "$SHM"/dnsmasq.leases "${W/\/tmp/\/dev\/shm}"-kea-leases4.csv*
    case $s in
      qdhcp)
        ip netns exec qos taskset -c 0 "$Q" dnsmasq -k -u root --no-hosts --no-resolv --port=0 --interface=qos0 --bind-interfaces \
          --dhcp-range=set:s,10.0.0.0,static,255.0.0.0,86400s --dhcp-hostsfile="$W/hosts" --dhcp-leasefile="$W/qdhcp.leases" \
          --dhcp-lease-max=4000000 --quiet-dhcp --qdhcp-client-rate=0 --log-facility="$W/qdhcp.log" & SRV=$! ;;
      dnsmasq)
        ip netns exec qos taskset -c 0 dnsmasq -k -u root --no-hosts --no-resolv --port=0 --interface=qos0 --bind-interfaces \
          --dhcp-range=set:s,10.0.0.0,static,255.0.0.0,86400s --dhcp-hostsfile="$W/hosts" --dhcp-leasefile="$SHM/dnsmasq.leases" \
          --dhcp-lease-max=4000000 --quiet-dhcp --log-facility="$W/dnsmasq.log" & SRV=$! ;;
      kea)
        mkdir -p "$W/kea-run"
        KEA_PIDFILE_DIR=$W/kea-run KEA_LOCKFILE_DIR=$W/kea-run ip netns exec qos taskset -c 0 kea-dhcp4 -c "$W/kea.json" 2>"$W/kea.log" & SRV=$! ;;
    esac
    sleep 2
    for t in /proc/"$SRV"/task/*; do taskset -pc 0 "$(basename "$t")" >/dev/null 2>&1 || true; done
    # 1,000 clients (what the kernel's neighbour table holds by default), then N: every
    # client once, slowly, so that all hold leases (a real boot), then the ramp
    for pop in 1000 "$N"; do
      load qoc --link qoc0 --clients "$pop" --rate 2000 --duration $((pop / 2000 + 1)) > "$W/warm-$s.json"
      echo "$s warm-up ($pop clients once at 2,000/s): $(cat "$W/warm-$s.json")" >> "$TXT"
      ramp "$s" "$pop" qoc --link qoc0
    done
    stop
  done
  del_netns
fi

if [[ " $PARTS " == *" 2 "* ]]; then
  # --- part 2: qdhcp serve, NETS tenant VXLAN networks with K reserved clients each
  ip netns add qoh; ip -n qoh link set lo up
  ip netns add qoz; ip -n qoz link set lo up
  ip -n qoh link add qou0 type veth peer name qou1 netns qoz
  ip -n qoh addr add 10.255.0.1/24 dev qou0; ip -n qoh link set qou0 up
  ip -n qoz addr add 10.255.0.2/24 dev qou1; ip -n qoz link set qou1 up
  "$Q" serve --netns qoh --state-dir "$W/state" --namespace-prefix qod --namespace-id-chars 10 \
    --vni-ranges 1:100000 --local-ip 10.255.0.1 --client-rate 0 --log-file "$W/serve.log" --quiet-dhcp --no-dns &
  SRV=$!
  until ip netns exec qoh curl -s -o /dev/null 127.0.0.1:9696/; do sleep 0.1; done
  ip netns exec qoh python3 - "$NETS" "$K" "$W" <<'PY' | tee -a "$TXT"
import json, sys, time, http.client
nets, k, w = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", 9696)
def call(path, body):
    c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse(); b = json.loads(r.read())
    assert r.status == 201, b
    return b
def mac(i): return "fa:16:3e:%02x:%02x:%02x" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)
t = time.time()
ids = []
for i in range(nets):
    net = call("/v2.0/networks", {"network": {"name": "t%d" % i}})["network"]["id"]
    call("/v2.0/subnets", {"subnet": {"network_id": net, "cidr": "10.%d.%d.0/24" % (i // 256, i % 256), "ip_version": 4}})
    ids.append(net)
# client c is on network c % nets (what `--link` does with the bridges listed in this order)
ports = [{"network_id": ids[c % nets], "mac_address": mac(c)} for c in range(nets * k)]
for s in range(0, len(ports), 500):
    call("/v2.0/ports", {"ports": ports[s:s + 500]})
wide = call("/v2.0/networks", {"network": {"name": "wide"}})["network"]["id"]
call("/v2.0/subnets", {"subnet": {"network_id": wide, "cidr": "10.200.0.0/16", "ip_version": 4}})
first = 0x100000
ports = [{"network_id": wide, "mac_address": mac(first + j)} for j in range(nets * k)]
for s in range(0, len(ports), 500):
    call("/v2.0/ports", {"ports": ports[s:s + 500]})
open(w + "/links", "w").write("".join("brq%s\n" % n[:11] for n in ids))
open(w + "/wide", "w").write("brq%s\n" % wide[:11])
print("spread set-up: %d networks with %d clients each, and one network with %d clients, in %.0f s" % (nets, k, nets * k, time.time() - t))
PY
  sleep 5
  C=$((NETS * K))
  # every client once (leases held), then the ramp, first on one network, then spread
  load qoh --links-from "$W/links" --clients "$C" --rate 2000 --duration $((C / 2000 + 1)) > /dev/null
  load qoh --link "$(cat "$W/wide")" --first-client $((0x100000)) --clients "$C" --rate 2000 --duration $((C / 2000 + 1)) > /dev/null
  RATES="5000 10000 15000 20000 25000 30000 35000 40000 45000 50000 60000 70000"
  ramp "serve, 1 network" "$C" qoh --link "$(cat "$W/wide")" --first-client $((0x100000))
  ramp "serve, $NETS networks" "$C" qoh --links-from "$W/links"
  python3 -c "
import json
rows = [json.loads(l) for l in open('$OUT')]
def peak(name):
    ok = [r for r in rows if r.get('server') == name and 100.0 * (r['started'] - r['acks']) / max(r['started'], 1) <= 2.5]
    return max((r['rate'] for r in ok), default=0)
one, spread = peak('serve, 1 network'), peak('serve, $NETS networks')
wrong = sum(r.get('wrong_link', 0) for r in rows if r.get('server') == 'serve, $NETS networks')
print('spread over $NETS networks: %.0f DORA/s against %.0f on one network: %.1f%% (replies on another network\'s link: %d)' % (spread, one, 100 * spread / max(one, 1), wrong))
" | tee -a "$TXT"
  echo "serve after the runs: $(grep -E 'VmRSS|Threads' /proc/$SRV/status | tr -s '\t ' ' ' | tr '\n' ';') fds $(ls /proc/$SRV/fd | wc -l)" | tee -a "$TXT"
  stop
  echo "cleaning up $NETS namespaces (the kernel frees them slowly)"
fi
