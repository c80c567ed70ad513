#!/usr/bin/env bash
# DNS benchmark: qdhcp dnsmasq mode against dnsmasq, in the same run, on the same files and
# flags, each pinned to core 0 with dnsperf (Debian's) on core 1: instance names from an
# addn_hosts file of N names, and forwarded names answered from the cache (a real dnsmasq in a
# namespace of its own is the upstream). Writes bench/DNS.md. As root:
#   bench/dns.sh [N names, default 100000] [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
DUR=${2:-10}
OUT=bench/DNS.md

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
qps() { # datafile seconds -> queries per second
  ip netns exec qbdc taskset -c 1 dnsperf -s 10.8.0.1 -d "$1" -l "$2" -c 4 -q 500 -t 2 2>&1 \
    | tee -a "$W/dnsperf.log" | awk '/Queries per second:/{print $4}'
}
lost() { awk '/Queries lost:/{print $3}' "$W/dnsperf.log" | tail -1; }
p99_at() { # datafile rate -> p99 latency in ms (from dnsperf -v, one line per answer)
  ip netns exec qbdc taskset -c 1 dnsperf -s 10.8.0.1 -d "$1" -l 5 -c 4 -q 500 -t 2 -Q "$2" -v 2>/dev/null \
    | awk '/^> /{print $NF}' | sort -g | awk '{a[NR]=$1} END{if (NR) printf "%.3f", 1000*a[int(NR*0.99)]; else print "n/a"}'
}

declare -A LOCAL CACHED P99L P99C RSS LOSTL
for s in qdhcp dnsmasq; do
  start "$s" "$W/hosts"
  RSS[$s]=$(rss_kb "$(pgrep -n -P "$SRV" || echo "$SRV")")
  # fill the cache, then measure
  ip netns exec qbdc dnsperf -s 10.8.0.1 -d "$W/cached.txt" -n 1 -c 1 -q 50 >/dev/null 2>&1 || true
  LOCAL[$s]=$(qps "$W/local.txt" "$DUR"); LOSTL[$s]=$(lost)
  CACHED[$s]=$(qps "$W/cached.txt" "$DUR")
  half=$(python3 -c "print(int(float('${LOCAL[$s]}')/2))")
  P99L[$s]=$(p99_at "$W/local.txt" "$half")
  half=$(python3 -c "print(int(float('${CACHED[$s]}')/2))")
  P99C[$s]=$(p99_at "$W/cached.txt" "$half")
  kill "$SRV"; wait "$SRV" 2>/dev/null || true
  sleep 0.5
done
# memory per name: qdhcp with the names against qdhcp with none
start qdhcp "$W/empty"
EMPTY=$(rss_kb "$SRV"); kill "$SRV"; wait "$SRV" 2>/dev/null || true

ratio() { python3 -c "print(f'{float(\"$1\")/float(\"$2\"):.1f}')"; }
{
  echo "# DNS benchmark"
  echo
  echo "\`bench/dns.sh $N $DUR\` on $(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), kernel $(uname -r)."
  echo "Each server pinned to core 0, dnsperf 2.10 on core 1 (4 clients, 500 outstanding); both servers"
  echo "run with the same flags and files: $N instance names in an addn_hosts file, --local-service,"
  echo "--cache-size=10000, a real dnsmasq in another namespace as the upstream. \"cached\" asks 1,000"
  echo "forwarded names already in the cache. p99 is taken from dnsperf -v at half the measured peak."
  echo "All load comes from one address, so qdhcp runs with --qdhcp-dns-rate=0 (its per-source limit,"
  echo "1,000 queries/s by default, off), as dnsmasq has no such limit."
  echo
  echo "| server | local names q/s | lost | cached forwarded q/s | p99 local at half peak | p99 cached at half peak | RSS with $N names |"
  echo "|---|---|---|---|---|---|---|"
  for s in qdhcp dnsmasq; do
    echo "| $s | ${LOCAL[$s]} | ${LOSTL[$s]} | ${CACHED[$s]} | ${P99L[$s]} ms | ${P99C[$s]} ms | $((RSS[$s] / 1024)) MB |"
  done
  echo
  echo "qdhcp / dnsmasq: local names $(ratio "${LOCAL[qdhcp]}" "${LOCAL[dnsmasq]}")x, cached forwarded names $(ratio "${CACHED[qdhcp]}" "${CACHED[dnsmasq]}")x."
  echo "qdhcp memory per name: $(python3 -c "print(round(((${RSS[qdhcp]}) - ($EMPTY)) * 1024 / $N))") bytes (RSS ${RSS[qdhcp]} kB with $N names, $EMPTY kB with none)."
} > "$OUT"
cat "$OUT"
