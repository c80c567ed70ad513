#!/usr/bin/env bash
# The floor under DHCPv6 reply latency on this machine (issue 25, point 5: ADVERTISE p99 < 1 ms
# at half the peak). The same set-up as bench/dhcpv6.sh (server pinned to CPU 0 in one
# namespace, `qdhcp loadgen --mode dhcpv6` as a relay pinned to CPU 1 in another, a veth pair),
# but the server is `dhcpv6_floor` (crates/loadgen/examples): it answers every relayed
# SOLICIT/REQUEST at once, in recvmmsg/sendmmsg batches, deciding and storing nothing. Three
# ways, each at every rate three times:
#   echo       the floor alone: what the kernel and the VM give a reply on one core
#   sync-disk  plus a group-commit thread on the same core: for the REQUESTs of every batch it
#              writes a 96-byte record each over zeros synced ahead (as qdhcp's journal does)
#              and fdatasyncs, on the disk qdhcp's journal uses in bench/dhcpv6.sh (/tmp),
#              batches that came meanwhile going into the next commit; no reply waits for it
#   sync-shm   the same on /dev/shm (tmpfs: fdatasync returns at once)
#   sync-disk-gapN  sync-disk with commits at least N ms apart (fewer, larger fdatasyncs)
#   sync-disk-cpu1  sync-disk with the group-commit thread on CPU 1 (the generator's core) and
#              the answering loop alone on CPU 0
#   echo-spin  echo, but never asleep in poll: asks the socket again at once (no wakeups)
#   echo-coalesce  echo, sleeping 50 µs after each wakeup so that it reads and answers in
#              batches what arrives one datagram at a time
# No server that keeps its leases on that disk can answer faster than sync-disk does.
# -l: the clients on the link instead of behind a relay, as `bench/dhcpv6.sh -m link` runs them
# (`qdhcp loadgen --mode dhcpv6 --link`, every client once first so the server's kernel knows
# each; the global IPv6 neighbour table's limits raised for them and restored after).
# Usage (as root): bench/dhcpv6_floor.sh [-l] [-r "RATES"] [-d SECONDS] [-m "MODES"] [-o OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
RATES="10000 25000"
D=5
MODES="echo sync-disk sync-shm"
OUT=bench/dhcpv6-floor-last.jsonl
LINK=""
while getopts "lr:d:m:o:" o; do
  case $o in l) LINK=1 ;; r) RATES=$OPTARG ;; d) D=$OPTARG ;; m) MODES=$OPTARG ;; o) OUT=$OPTARG ;; *) exit 2 ;; esac
done
N=10000
cargo build --release --bin qdhcp
cargo build --release --example dhcpv6_floor -p qdhcp-loadgen
Q=$PWD/target/release/qdhcp
F=$PWD/target/release/examples/dhcpv6_floor
W=$(mktemp -d /tmp/qdhcp-floor6.XXXX)
SHM=$(mktemp -d /dev/shm/qdhcp-floor6.XXXX)
: > "$OUT"
SRV_PID=""
# jiffies of CPU 0 (the server's) and CPU 1 (the generator's): busy (softirq included, steal
# not), total, then CPU 0's user, system, softirq and steal
cpu_busy() {
  awk '$1=="cpu0"||$1=="cpu1"{t=0; for(i=2;i<=NF;i++) t+=$i; printf "%d %d ", t-$5-$6-$9, t}
       $1=="cpu0"{c0=$2+$3" "$4" "$8" "$9}
       END{print c0}' /proc/stat
}
del_netns() { for n in qtfs qtfc; do ip netns del "$n" 2>/dev/null || true; done; }
GC_OLD=""
cleanup() {
  [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null || true
  del_netns
  rm -rf "$W" "$SHM"
  if [ -n "$GC_OLD" ]; then
    read -r g1 g2 g3 <<<"$GC_OLD"
    sysctl -qw net.ipv6.neigh.default.gc_thresh1="$g1" net.ipv6.neigh.default.gc_thresh2="$g2" net.ipv6.neigh.default.gc_thresh3="$g3"
  fi
}
trap cleanup EXIT
del_netns
if [ -n "$LINK" ]; then
  GC_OLD="$(sysctl -n net.ipv6.neigh.default.gc_thresh1) $(sysctl -n net.ipv6.neigh.default.gc_thresh2) $(sysctl -n net.ipv6.neigh.default.gc_thresh3)"
  sysctl -qw net.ipv6.neigh.default.gc_thresh1=$((N + 1024)) net.ipv6.neigh.default.gc_thresh2=$((2 * N + 2048)) net.ipv6.neigh.default.gc_thresh3=$((4 * N + 4096))
fi
# SLOW_DIR=DIR in the environment: every load run also writes the replies slower than 500 µs
# to DIR/<server>-<rate>-<ns time>.txt (`qdhcp loadgen --slow-log`; bench/dhcpv6_stalls.py reads them).
slow_args() {
  [ -n "${SLOW_DIR:-}" ] || return 0
  mkdir -p "$SLOW_DIR"
  echo "--slow-log $SLOW_DIR/$mode-$1-$(date +%s%N).txt"
}
load() {
  if [ -n "$LINK" ]; then
    ip netns exec qtfc taskset -c 1 "$Q" loadgen --mode dhcpv6 --spin --link qtfc0 --clients "$N" --rate "$1" --duration "$2" --json $(slow_args "$1")
  else
    ip netns exec qtfc taskset -c 1 "$Q" loadgen --mode dhcpv6 --spin --server6 2001:db8::1 --relay6 2001:db8::2 \
      --link6 2001:db8:1::1 --device qtfc0 --clients "$N" --rate "$1" --duration "$2" --json $(slow_args "$1")
  fi
}
ip netns add qtfs; ip netns add qtfc
ip -n qtfs link set lo up; ip -n qtfc link set lo up
ip -n qtfs link add qtfs0 type veth peer name qtfc0 netns qtfc
for ns in qtfs qtfc; do ip netns exec $ns sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0; done
ip netns exec qtfs sysctl -qw net.ipv6.conf.qtfs0.accept_dad=0
ip netns exec qtfc sysctl -qw net.ipv6.conf.qtfc0.accept_dad=0
ip -n qtfs addr add 2001:db8::1/64 dev qtfs0 nodad; ip -n qtfs link set qtfs0 up
ip -n qtfc addr add 2001:db8::2/64 dev qtfc0 nodad; ip -n qtfc link set qtfc0 up
ip -n qtfs -6 route add 2001:db8:1::/64 via 2001:db8::2 dev qtfs0
sleep 1

for mode in $MODES; do
  case $mode in
    echo) extra=() ;;
    echo-spin) extra=(--spin) ;;
    echo-coalesce) extra=(--coalesce 50) ;;
    sync-disk) extra=(--sync "$W/journal") ;;
    sync-shm) extra=(--sync "$SHM/journal") ;;
    sync-disk-cpu1) extra=(--sync "$W/journal") ;;
    sync-disk-gap*) extra=(--sync "$W/journal" --sync-gap "$((${mode#sync-disk-gap} * 1000))") ;;
  esac
  [ -n "$LINK" ] && extra+=(--link)
  ip netns exec qtfs taskset -c 0 "$F" qtfs0 "${extra[@]}" &
  SRV_PID=$!
  for _ in $(seq 100); do ip netns exec qtfs ss -uln | grep -q ":547 " && break; sleep 0.1; done
  # sync-disk-cpu1: the group-commit thread moved to the generator's core, the loop alone on its own
  if [ "$mode" = sync-disk-cpu1 ]; then
    for t in /proc/"$SRV_PID"/task/*; do
      [ "$(cat "$t/comm")" = sync ] && taskset -pc 1 "$(basename "$t")" > /dev/null
    done
  fi
  # on the link: every client once, so that the server's kernel knows each (not counted)
  [ -n "$LINK" ] && load 1000 "$((N / 1000))" > /dev/null
  for r in $RATES; do
    for _ in 1 2 3; do
      s0=$(cpu_busy)
      res=$(load "$r" "$D")
      s1=$(cpu_busy)
      python3 -c "
import json,sys
d=json.loads(sys.argv[1])
a=[int(x) for x in sys.argv[2].split()]; b=[int(x) for x in sys.argv[3].split()]
d.update(server='dhcpv6_floor', mode='$mode', link=bool('$LINK'),
         cpu0_busy_pct=round(100*(b[0]-a[0])/max(b[1]-a[1],1),1),
         cpu1_busy_pct=round(100*(b[2]-a[2])/max(b[3]-a[3],1),1),
         **{f'cpu0_{k}_pct': round(100*(b[i]-a[i])/max(b[1]-a[1],1),1)
            for i, k in zip(range(4, 8), ['user', 'system', 'softirq', 'steal'])})
print(json.dumps(d))" "$res" "$s0" "$s1" | tee -a "$OUT"
    done
  done
  kill "$SRV_PID"; wait "$SRV_PID" 2>/dev/null || true; SRV_PID=""
  rm -f "$W/journal" "$SHM/journal"
done
echo "wrote $OUT"
