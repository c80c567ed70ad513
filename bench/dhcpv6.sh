#!/usr/bin/env bash
# DHCPv6 benchmark: qdhcp (dnsmasq mode), dnsmasq and ISC Kea (kea-dhcp6) under the same load,
# one after another. Each server runs pinned to CPU 0 in namespace qbs (2001:db8::1 on qbs0),
# the load generator pinned to CPU 1 in namespace qbc (2001:db8::2), joined by a veth pair.
# The generator is a relay agent (`qdhcp loadgen --mode dhcpv6`): SOLICIT/ADVERTISE/REQUEST/
# REPLY in RELAY-FORW with link-address 2001:db8:1::1 and each client's MAC in option 79, so
# every server matches its N reservations (fa:16:3e:… → 2001:db8:1::/64) by MAC as Neutron's
# hosts file keys them. ISC's method: raise the rate until more than 2.5% of exchanges get no
# REPLY within 1 s; then p99 at half the peak, three times. perfdhcp -6 -A1 cross-checks Kea
# (it matches by the MAC inside perfdhcp's DUID-LLT; qdhcp and dnsmasq never match by DUID).
#
# qdhcp-dnsmasq keeps its lease journal on disk (/tmp); qdhcp-dnsmasq-shm on /dev/shm, as Kea's
# memfile and dnsmasq's leases file are here; qdhcp-dnsmasq-ciUS on disk with its commits at
# least US microseconds apart (--qdhcp-commit-interval). Since 128388d the default is 2 ms:
# qdhcp-dnsmasq has it, qdhcp-dnsmasq-ci0 commits without one (runs before that: no interval).
#
# -m link: the generator is the clients themselves on the link (`--link qbc0`): each client
# sends from its own MAC and EUI-64 link-local address to ff02::1:2 and answers the server's
# neighbour solicitations; the reservations are in the server's own 2001:db8::/64. qdhcp and
# dnsmasq find each client's MAC in the kernel's neighbour table; Kea derives it from the
# EUI-64 link-local only for universally administered MACs, which fa:16:3e is not, so there
# it takes it from the client's DUID-LL (`mac-sources: ipv6-link-local, duid`). The kernel's IPv6 neighbour table is one
# for every namespace and holds 1,024 entries by default, fewer than the clients: the script
# raises net.ipv6.neigh.default.gc_thresh1/2/3 for the run (as operators of large networks do)
# and puts the old values back at exit. A warm-up pass first makes each client known to the
# server's kernel, as the VMs of a network are once they have booted; results go to
# bench/dhcpv6-link-results.jsonl.
#
# Usage (as root): bench/dhcpv6.sh [-m relay|link] [-n RESERVATIONS] [-d SECONDS_PER_STEP]
#   [-s "qdhcp-dnsmasq qdhcp-dnsmasq-shm dnsmasq kea"] [-b QDHCP_BINARY (not built)] [-o RESULTS.jsonl]
#   [-r "RATES" (the ramp's steps; one rate: that step, then three runs at it)]
# QDHCP_EXTRA="--flag …" in the environment: more flags for the qdhcp servers.
set -euo pipefail
cd "$(dirname "$0")/.."
N=10000
D=5
SERVERS="qdhcp-dnsmasq qdhcp-dnsmasq-shm dnsmasq kea"
MODE=relay
BIN=""
QDHCP_EXTRA=${QDHCP_EXTRA:-}
RATES="250 500 1000 2000 4000 6000 8000 10000 12000 16000 20000 25000 30000 35000 40000 50000 60000 70000 80000 90000 100000 120000 140000"
while getopts "m:n:d:s:b:o:r:" o; do case $o in m) MODE=$OPTARG ;; n) N=$OPTARG ;; d) D=$OPTARG ;; s) SERVERS=$OPTARG ;; b) BIN=$OPTARG ;; o) OUT_AS=$OPTARG ;; r) RATES=$OPTARG ;; *) exit 2 ;; esac; done
case $MODE in
  relay) NET=2001:db8:1:: ;;
  link) NET=2001:db8:: ;;
  *) echo "-m relay or -m link" >&2; exit 2 ;;
esac

need=()
for pair in dnsmasq:dnsmasq-base kea-dhcp6:kea-dhcp6-server perfdhcp:kea-admin ip:iproute2; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi
if [ -n "$BIN" ]; then
  Q=$(realpath "$BIN")
else
  cargo build --release --bin qdhcp
  Q=$PWD/target/release/qdhcp
fi
W=$(mktemp -d /tmp/qdhcp-bench6.XXXX)
SHM=$(mktemp -d /dev/shm/qdhcp-bench6.XXXX)
OUT=bench/dhcpv6-results.jsonl
[ "$MODE" = link ] && OUT=bench/dhcpv6-link-results.jsonl
[ -n "${OUT_AS:-}" ] && OUT=$OUT_AS
: > "$OUT"
SRV_PID=""
GC_OLD=""
del_netns() { for n in qbs qbc; do ip netns del "$n" 2>/dev/null || true; done; }
cleanup() {
  [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null || true
  del_netns
  rm -rf "$SHM"
  if [ -n "$GC_OLD" ]; then
    read -r g1 g2 g3 <<<"$GC_OLD"
    sysctl -qw net.ipv6.neigh.default.gc_thresh1="$g1" net.ipv6.neigh.default.gc_thresh2="$g2" net.ipv6.neigh.default.gc_thresh3="$g3"
  fi
}
trap cleanup EXIT
del_netns
if [ "$MODE" = link ]; then
  GC_OLD="$(sysctl -n net.ipv6.neigh.default.gc_thresh1) $(sysctl -n net.ipv6.neigh.default.gc_thresh2) $(sysctl -n net.ipv6.neigh.default.gc_thresh3)"
  sysctl -qw net.ipv6.neigh.default.gc_thresh1=$((N + 1024)) net.ipv6.neigh.default.gc_thresh2=$((2 * N + 2048)) net.ipv6.neigh.default.gc_thresh3=$((4 * N + 4096))
fi

ip netns add qbs; ip netns add qbc
ip -n qbs link set lo up; ip -n qbc link set lo up
ip -n qbs link add qbs0 type veth peer name qbc0 netns qbc
for ns in qbs qbc; do ip netns exec $ns sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0; done
ip netns exec qbs sysctl -qw net.ipv6.conf.qbs0.accept_dad=0
ip netns exec qbc sysctl -qw net.ipv6.conf.qbc0.accept_dad=0
ip -n qbs addr add 2001:db8::1/64 dev qbs0 nodad; ip -n qbs link set qbs0 up
ip -n qbc addr add 2001:db8::2/64 dev qbc0 nodad; ip -n qbc link set qbc0 up
# the servers answer the relay at 2001:db8::2; the served subnet 2001:db8:1::/64 is behind it
ip -n qbs -6 route add 2001:db8:1::/64 via 2001:db8::2 dev qbs0
sleep 1

python3 - "$N" "$W" "$SHM" "$MODE" <<'PY'
import json, sys
n, w, shm, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
net = "2001:db8:1::" if mode == "relay" else "2001:db8::"
def mac(i): return "fa:16:3e:%02x:%02x:%02x" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)
def ip(i): return "%s%x:%x" % (net, (i + 16) >> 16, (i + 16) & 0xffff)
rows = [(mac(i), ip(i)) for i in range(n)]
with open(w + "/hosts6", "w") as f:
    for i, (m, a) in enumerate(rows): f.write("%s,tag:dhcpv6,host-%d,[%s]\n" % (m, i, a))
kea = {"Dhcp6": {
    "interfaces-config": {"interfaces": ["qbs0/2001:db8::1"]},
    "server-id": {"type": "LL", "persist": False},
    "lease-database": {"type": "memfile", "persist": True, "name": shm + "/kea-leases6.csv", "lfc-interval": 0},
    "multi-threading": {"enable-multi-threading": True, "thread-pool-size": 2, "packet-queue-size": 64},
    # on the link: Kea derives a MAC from an EUI-64 link-local only when its universal bit is
    # set, and OpenStack's fa:16:3e MACs are locally administered, so the clients' DUID-LL
    # (which holds the MAC) is what it matches by there
    "mac-sources": ["client-link-addr-option", "duid"] if mode == "relay" else ["ipv6-link-local", "duid"],
    "host-reservation-identifiers": ["hw-address"],
    "preferred-lifetime": 86400, "valid-lifetime": 86400,
    "subnet6": [dict({"id": 1, "subnet": net + "/64", "pools": [],
                 "reservations": [{"hw-address": m, "ip-addresses": [a]} for m, a in rows]},
                 **({} if mode == "relay" else {"interface": "qbs0"}))],
    "loggers": [{"name": "kea-dhcp6", "severity": "WARN", "output_options": [{"output": "stderr"}]}]}}
with open(w + "/kea6.json", "w") as f: json.dump(kea, f)
PY

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
hwm_kb() { awk '/VmHWM/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
pin_all() { for t in /proc/"$1"/task/*; do taskset -pc 0 "$(basename "$t")" >/dev/null 2>&1 || true; done; }
wait_port() { for _ in $(seq 100); do ip netns exec qbs ss -uln | grep -q ":547 " && return 0; sleep 0.1; done; echo "server did not listen" >&2; return 1; }

start_server() {
  case $1 in
    qdhcp-dnsmasq | qdhcp-dnsmasq-ci*)
      # qdhcp-dnsmasq-ciUS: the journal's commits at least US microseconds apart
      ci=(); [ "$1" != qdhcp-dnsmasq ] && ci=("--qdhcp-commit-interval=${1#qdhcp-dnsmasq-ci}")
      rm -f "$W"/qdhcp.leases*
      ip netns exec qbs taskset -c 0 "$Q" dnsmasq -k -u root --no-hosts --no-resolv --port=0 --interface=qbs0 --bind-interfaces \
        --dhcp-range=set:s6,$NET,static,64,86400s --dhcp-hostsfile="$W/hosts6" \
        --dhcp-leasefile="$W/qdhcp.leases" --quiet-dhcp --qdhcp-client-rate=0 --log-facility="$W/qdhcp.log" "${ci[@]}" $QDHCP_EXTRA &
      SRV_PID=$!; wait_port ;;
    qdhcp-dnsmasq-shm)
      # the lease journal and leases file on tmpfs, where Kea's memfile and dnsmasq's leases
      # file are here: the same storage for all three (bench/dhcpv6_floor.sh measures the disk)
      rm -f "$SHM"/qdhcp.leases*
      ip netns exec qbs taskset -c 0 "$Q" dnsmasq -k -u root --no-hosts --no-resolv --port=0 --interface=qbs0 --bind-interfaces \
        --dhcp-range=set:s6,$NET,static,64,86400s --dhcp-hostsfile="$W/hosts6" \
        --dhcp-leasefile="$SHM/qdhcp.leases" --quiet-dhcp --qdhcp-client-rate=0 --log-facility="$W/qdhcp.log" $QDHCP_EXTRA &
      SRV_PID=$!; wait_port ;;
    dnsmasq)
      ip netns exec qbs taskset -c 0 dnsmasq -k -u root --no-hosts --no-resolv --port=0 --interface=qbs0 --bind-interfaces \
        --dhcp-range=set:s6,$NET,static,64,86400s --dhcp-hostsfile="$W/hosts6" \
        --dhcp-leasefile="$SHM/dnsmasq.leases" --dhcp-lease-max=4000000 --quiet-dhcp --log-facility="$W/dnsmasq.log" &
      SRV_PID=$!; wait_port ;;
    kea)
      mkdir -p "$W/kea-run"
      KEA_PIDFILE_DIR=$W/kea-run KEA_LOCKFILE_DIR=$W/kea-run ip netns exec qbs taskset -c 0 kea-dhcp6 -c "$W/kea6.json" 2>"$W/kea.log" &
      SRV_PID=$!; wait_port ;;
  esac
  sleep 1
  pin_all "$SRV_PID"
}
stop_server() {
  [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null && wait "$SRV_PID" 2>/dev/null || true
  SRV_PID=""
}
# SLOW_DIR=DIR in the environment: every load run also writes the replies slower than 500 µs
# to DIR/<server>-<rate>-<ns time>.txt (`qdhcp loadgen --slow-log`; bench/dhcpv6_stalls.py reads them).
slow_args() {
  [ -n "${SLOW_DIR:-}" ] || return 0
  mkdir -p "$SLOW_DIR"
  echo "--slow-log $SLOW_DIR/$s-$1-$(date +%s%N).txt"
}
load() {
  if [ "$MODE" = link ]; then
    ip netns exec qbc taskset -c 1 "$Q" loadgen --mode dhcpv6 --spin --link qbc0 --clients "$N" --rate "$1" --duration "${2:-$D}" --json $(slow_args "$1")
  else
    ip netns exec qbc taskset -c 1 "$Q" loadgen --mode dhcpv6 --spin --server6 2001:db8::1 --relay6 2001:db8::2 \
      --link6 2001:db8:1::1 --device qbc0 --clients "$N" --rate "$1" --duration "${2:-$D}" --json $(slow_args "$1")
  fi
}

for s in $SERVERS; do
  echo "== $s"
  start_server "$s"
  if [ "$MODE" = link ]; then
    # warm-up: every client once, so that the server's kernel knows each (not counted)
    res=$(load 1000 "$(python3 -c "print($N / 1000)")")
    python3 -c "import json,sys; d=json.loads(sys.argv[1]); d.update(server='$s', tool='qdhcp-loadgen-dhcpv6-warmup'); print(json.dumps(d))" "$res" | tee -a "$OUT"
  fi
  fails=0; ok_rate=0
  for r in $RATES; do
    c0=$(cpu_ticks "$SRV_PID")
    res=$(load "$r")
    c1=$(cpu_ticks "$SRV_PID")
    cpu=$(python3 -c "print(round(100*($c1-$c0)/($(getconf CLK_TCK)*$D),1))")
    line=$(python3 -c "import json,sys; d=json.loads(sys.argv[1]); d.update(server='$s', tool='qdhcp-loadgen-dhcpv6', mode='$MODE', reservations=$N, cpu_pct=$cpu, rss_kb=$(hwm_kb "$SRV_PID")); print(json.dumps(d))" "$res")
    echo "$line" | tee -a "$OUT"
    drop=$(python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(100.0 * (d['started'] - d['acks']) / max(d['started'], 1))" "$line")
    # a step fails when more than 2.5% of its exchanges end unbound: no reply in time, or a
    # refusal (a server that matched no reservation must not pass for a fast one)
    if python3 -c "import sys; sys.exit(0 if float('$drop') > 2.5 else 1)"; then fails=$((fails+1)); [ $fails -ge 2 ] && break; elif [ $fails -eq 0 ]; then ok_rate=$r; fi
  done
  half=$(python3 -c "r=[int(x) for x in '$RATES'.split()]; print(min(r, key=lambda x: abs(x - $ok_rate / 2)))")
  for _ in 1 2 3; do
    res=$(load "$half")
    python3 -c "import json,sys; d=json.loads(sys.argv[1]); d.update(server='$s', tool='qdhcp-loadgen-dhcpv6-half'); print(json.dumps(d))" "$res" | tee -a "$OUT"
  done
  echo "{\"server\": \"$s\", \"peak_ok_rate\": $ok_rate}" | tee -a "$OUT"
  if [ "$s" = kea ] && [ "$MODE" = relay ]; then
    out=$(ip netns exec qbc taskset -c 1 perfdhcp -6 -A1 -l qbc0 -r 1000 -p "$D" -R "$N" -b mac=fa:16:3e:00:00:00 2001:db8::1 2>&1 || true)
    echo "$out" | grep -E "sent packets|received packets|drops ratio|min delay|avg delay|max delay" | sed "s/^/perfdhcp kea: /"
  fi
  stop_server
done
echo "wrote $OUT"
