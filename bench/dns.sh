#!/usr/bin/env bash
# DNS benchmark: qdhcp dnsmasq mode against dnsmasq, in the same run, on the same files and
# flags, each pinned to core 0 with the load (qdhcp's batched generator, cross-checked by
# Debian's dnsperf) on core 1: instance names from an
# addn_hosts file of N names, and forwarded names answered from the cache (a real dnsmasq in a
# namespace of its own is the upstream). Writes bench/DNS.md. As root:
#   bench/dns.sh [N names, default 100000] [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
DUR=${2:-10}
OUT=bench/DNS.md
RAW=bench/dns-last.jsonl
: > "$RAW"

for pair in dnsperf:dnsperf dnsmasq:dnsmasq-base ip:iproute2; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || {
    apt-get update -q && apt-get install -y --no-install-recommends "${pair#*:}"; }
done
cargo build --release --bin qdhcp
Q=$PWD/target/release/qdhcp
W=$(mktemp -d /tmp/qdhcp-dns.XXXX)
chmod 755 "$W"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for ns in qbds qbdc qbdu; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT

# server qbds: 10.8.0.1/15 towards the clients (qbdc), 10.20.0.1/24 towards the upstream (qbdu)
for ns in qbds qbdc qbdu; do ip netns del "$ns" 2>/dev/null || true; ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n qbds link add qbds0 type veth peer name qbdc0 netns qbdc
ip -n qbds link add qbds1 type veth peer name qbdu0 netns qbdu
ip -n qbds addr add 10.8.0.1/15 dev qbds0; ip -n qbds link set qbds0 up
ip -n qbds addr add 10.20.0.1/24 dev qbds1; ip -n qbds link set qbds1 up
ip -n qbdc addr add 10.8.0.2/15 dev qbdc0; ip -n qbdc link set qbdc0 up
ip -n qbdu addr add 10.20.0.2/24 dev qbdu0; ip -n qbdu link set qbdu0 up

python3 - "$W" "$N" <<'PY'
import ipaddress, random, sys
w, n = sys.argv[1], int(sys.argv[2])
base = int(ipaddress.IPv4Address("10.8.0.10"))
names = []
with open(f"{w}/hosts", "w") as h:
    for i in range(n):
        ip = ipaddress.IPv4Address(base + i)
        name = "host-" + str(ip).replace(".", "-")
        h.write(f"{ip}\t{name}.openstacklocal. {name}\n")
        names.append(name)
random.seed(1)
random.shuffle(names)
with open(f"{w}/local.txt", "w") as f:
    for name in names:
        f.write(f"{name}.openstacklocal A\n")
with open(f"{w}/cached.txt", "w") as f:
    for i in range(1000):
        f.write(f"n{i}.example.test A\n")
open(f"{w}/empty", "w").close()
PY

ip netns exec qbdu dnsmasq -k -u root --no-resolv --no-hosts --bind-interfaces \
  --listen-address=10.20.0.2 --address=/example.test/192.0.2.7 --local-ttl=3600 \
  --pid-file= --log-facility="$W/upstream.log" &
PIDS+=($!)

FLAGS=(-k -u root --no-hosts --no-resolv --interface=qbds0 --bind-interfaces --local-service
  --dhcp-range=set:s,10.8.0.0,static,255.254.0.0,86400s --domain=openstacklocal
  --server=10.20.0.2 --cache-size=10000 --dhcp-lease-max=10 --pid-file=)

start() { # name hostsfile
  case "$1" in
    # one dnsperf source: qdhcp's per-source limit off, as dnsmasq has none
    qdhcp) ip netns exec qbds taskset -c 0 "$Q" dnsmasq "${FLAGS[@]}" --qdhcp-dns-rate=0 --addn-hosts="$2" --log-facility="$W/qdhcp.log" & ;;
    dnsmasq) ip netns exec qbds taskset -c 0 dnsmasq "${FLAGS[@]}" --addn-hosts="$2" --log-facility="$W/dnsmasq.log" & ;;
  esac
  SRV=$!
  PIDS+=("$SRV")
  for _ in $(seq 1 600); do
    ip netns exec qbdc dig +short +tries=1 +time=1 @10.8.0.1 host-10-8-0-10.openstacklocal 2>/dev/null | grep -q 10.8.0.10 && break
    [ "$2" = "$W/empty" ] && ip netns exec qbdc dig +tries=1 +time=1 @10.8.0.1 x.openstacklocal >/dev/null 2>&1 && break
    sleep 0.1
  done
}
rss_kb() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
qps() { # datafile seconds -> queries per second, as dnsperf measures them (one datagram per call)
  ip netns exec qbdc taskset -c 1 dnsperf -s 10.8.0.1 -d "$1" -l "$2" -c 4 -q 500 -t 2 2>&1 \
    | tee -a "$W/dnsperf.log" | awk '/Queries per second:/{print $4}'
}
lost() { awk '/Queries lost:/{print $3}' "$W/dnsperf.log" | tail -1; }
gen() { # datafile seconds rate window -> the batched generator's JSON (qdhcp loadgen --mode dns);
  # every run is kept, with the server and the data, in bench/dns-last.jsonl
  local j
  j=$(ip netns exec qbdc taskset -c 1 "$Q" loadgen --mode dns --server 10.8.0.1 --queries "$1" \
    --duration "$2" --rate "$3" --window "$4" --sockets 4 --timeout-ms 1000 --json)
  echo "{\"server\":\"$s\",\"data\":\"$(basename "$1" .txt)\",\"run\":$j}" >> "$RAW"
  echo "$j"
}
field() { python3 -c "import json,sys; v=json.loads(sys.argv[1])[sys.argv[2]]; print(v if v is not None else 'n/a')" "$1" "$2"; }
ms() { python3 -c "import sys; print('n/a' if sys.argv[1] == 'n/a' else '%.3f' % (int(sys.argv[1]) / 1000))" "$1"; }
declare -A LOCAL CACHED DPL DPC P99L P99C P99L100 P99C100 RSS LOSTL
for s in qdhcp dnsmasq; do
  start "$s" "$W/hosts"
  RSS[$s]=$(rss_kb "$(pgrep -n -P "$SRV" || echo "$SRV")")
  # fill the cache, then measure: the peak with 2,000 queries outstanding, then the latency
  # at half of it (open loop: queries leave at that rate whatever the answers do)
  ip netns exec qbdc dnsperf -s 10.8.0.1 -d "$W/cached.txt" -n 1 -c 1 -q 50 >/dev/null 2>&1 || true
  J=$(gen "$W/local.txt" "$DUR" 0 2000); LOCAL[$s]=$(field "$J" rate); LOSTL[$s]=$(field "$J" lost)
  J=$(gen "$W/cached.txt" "$DUR" 0 2000); CACHED[$s]=$(field "$J" rate)
  J=$(gen "$W/local.txt" 5 "$(python3 -c "print(int(float('${LOCAL[$s]}')/2))")" 100000)
  P99L[$s]=$(ms "$(field "$J" p99_us)")
  J=$(gen "$W/cached.txt" 5 "$(python3 -c "print(int(float('${CACHED[$s]}')/2))")" 100000)
  P99C[$s]=$(ms "$(field "$J" p99_us)")
  # and both servers at one rate, 100,000 queries/s
  P99L100[$s]=$(ms "$(field "$(gen "$W/local.txt" 5 100000 100000)" p99_us)")
  P99C100[$s]=$(ms "$(field "$(gen "$W/cached.txt" 5 100000 100000)" p99_us)")
  # the cross-check: dnsperf's own peak (it sends and receives one datagram per call)
  DPL[$s]=$(qps "$W/local.txt" "$DUR")
  DPC[$s]=$(qps "$W/cached.txt" "$DUR")
  kill "$SRV"; wait "$SRV" 2>/dev/null || true
  sleep 0.5
done
# memory per name: qdhcp with the names against qdhcp with none
start qdhcp "$W/empty"
EMPTY=$(rss_kb "$SRV"); kill "$SRV"; wait "$SRV" 2>/dev/null || true

# The floor: a responder that does no DNS work at all (crates/loadgen/examples/dns_floor.rs:
# each query sent back marked as a response, batched as qdhcp does), pinned as the servers
# were. What it answers is the most any server can answer on this path with one core.
cargo build --release -p qdhcp-loadgen --example dns_floor
ip netns exec qbds taskset -c 0 "$PWD/target/release/examples/dns_floor" 10.8.0.1:53 &
SRV=$!
PIDS+=("$SRV")
for _ in $(seq 1 100); do
  ip netns exec qbdc dig +tries=1 +time=1 @10.8.0.1 x.openstacklocal >/dev/null 2>&1 && break
  sleep 0.1
done
s=floor
FLOOR=$(field "$(gen "$W/local.txt" "$DUR" 0 2000)" rate)
FLOOR_DP=$(qps "$W/local.txt" "$DUR")
kill "$SRV"; wait "$SRV" 2>/dev/null || true

ratio() { python3 -c "print(f'{float(\"$1\")/float(\"$2\"):.1f}')"; }
{
  echo "# DNS benchmark"
  echo
  echo "\`bench/dns.sh $N $DUR\` on $(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), kernel $(uname -r)."
  echo "Each server pinned to core 0, the load on core 1; both servers run with the same flags and"
  echo "files: $N instance names in an addn_hosts file, --local-service, --cache-size=10000, a real"
  echo "dnsmasq in another namespace as the upstream. \"cached\" asks 1,000 forwarded names already in"
  echo "the cache. The load is \`qdhcp loadgen --mode dns\` (crates/loadgen/src/dns.rs: 4 source"
  echo "sockets, batches through sendmmsg/recvmmsg, every answer matched by socket and id): the peak"
  echo "with 2,000 queries outstanding, p99 at half that peak sent open loop (at a fixed rate,"
  echo "whatever the answers do; between sends the generator waits in the kernel, as it has since"
  echo "2026-12-06: a spinning one held up the kernel's deferred work for its own datagrams, and"
  echo "the tail it measured was partly its own). dnsperf 2.10 (4 clients, 500 outstanding) is the cross-check: it"
  echo "moves one datagram per system call, and its own core is its ceiling."
  echo "All load comes from one address, so qdhcp runs with --qdhcp-dns-rate=0 (its per-source limit,"
  echo "1,000 queries/s by default, off), as dnsmasq has no such limit."
  echo
  echo "| server | local names q/s | lost | cached forwarded q/s | p99 local at half peak | p99 cached at half peak | p99 local / cached at 100,000 q/s | dnsperf: local / cached q/s | RSS with $N names |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for s in qdhcp dnsmasq; do
    echo "| $s | ${LOCAL[$s]} | ${LOSTL[$s]} | ${CACHED[$s]} | ${P99L[$s]} ms | ${P99C[$s]} ms | ${P99L100[$s]} / ${P99C100[$s]} ms | ${DPL[$s]} / ${DPC[$s]} | $((RSS[$s] / 1024)) MB |"
  done
  echo
  echo "qdhcp / dnsmasq: local names $(ratio "${LOCAL[qdhcp]}" "${LOCAL[dnsmasq]}")x, cached forwarded names $(ratio "${CACHED[qdhcp]}" "${CACHED[dnsmasq]}")x (dnsperf: $(ratio "${DPL[qdhcp]}" "${DPL[dnsmasq]}")x and $(ratio "${DPC[qdhcp]}" "${DPC[dnsmasq]}")x)."
  echo "The floor (a responder doing no DNS work, \`crates/loadgen/examples/dns_floor.rs\`, pinned alike): $FLOOR q/s by the generator, $FLOOR_DP by dnsperf, on the local names' queries: $(ratio "$FLOOR" "${LOCAL[dnsmasq]}")x dnsmasq; qdhcp answers $(python3 -c "print(round(100 * float('${LOCAL[qdhcp]}') / float('$FLOOR')))")% of it."
  echo "qdhcp memory per name: $(python3 -c "print(round(((${RSS[qdhcp]}) - ($EMPTY)) * 1024 / $N))") bytes (RSS ${RSS[qdhcp]} kB with $N names, $EMPTY kB with none)."
} > "$OUT"
cat "$OUT"
