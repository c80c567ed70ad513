#!/usr/bin/env bash
# The floor under DHCPv6 reply latency on this machine (issue 25, point 5: ADVERTISE p99 < 1 ms
# at half the peak). The same set-up as bench/dhcpv6.sh (server pinned to CPU 0 in one
# namespace, `qdhcp loadgen --mode dhcpv6` as a relay pinned to CPU 1 in another, a veth pair),
# but the server is `dhcpv6_floor` (crates/loadgen/examples): it answers every relayed
# SOLICIT/REQUEST at once, in recvmmsg/sendmmsg batches, deciding and storing nothing. Three
# ways, each at every rate three times:
#   echo       the floor alone: what the kernel and the VM give a reply on one core
#   sync-disk  plus a group-commit thread on the same core: for the REQUESTs of every batch it
#              appends a 96-byte record each and fdatasyncs, on the disk qdhcp's journal uses
#              in bench/dhcpv6.sh (/tmp), batches that came meanwhile going into the next
#              commit; no reply waits for it
#   sync-shm   the same on /dev/shm (tmpfs: fdatasync returns at once)
# No server that keeps its leases on that disk can answer faster than sync-disk does.
# Usage (as root): bench/dhcpv6_floor.sh [-r "RATES"] [-d SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
RATES="10000 25000"
D=5
while getopts "r:d:" o; do case $o in r) RATES=$OPTARG ;; d) D=$OPTARG ;; *) exit 2 ;; esac; done
N=10000
cargo build --release --bin qdhcp
cargo build --release --example dhcpv6_floor -p qdhcp-loadgen
Q=$PWD/target/release/qdhcp
F=$PWD/target/release/examples/dhcpv6_floor
W=$(mktemp -d /tmp/qdhcp-floor6.XXXX)
SHM=$(mktemp -d /dev/shm/qdhcp-floor6.XXXX)
OUT=bench/dhcpv6-floor-last.jsonl
: > "$OUT"
SRV_PID=""
del_netns() { for n in qtfs qtfc; do ip netns del "$n" 2>/dev/null || true; done; }
cleanup() {
  [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null || true
  del_netns
  rm -rf "$W" "$SHM"
}
trap cleanup EXIT
del_netns
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

for mode in echo sync-disk sync-shm; do
  case $mode in
    echo) extra=() ;;
    sync-disk) extra=(--sync "$W/journal") ;;
    sync-shm) extra=(--sync "$SHM/journal") ;;
  esac
  ip netns exec qtfs taskset -c 0 "$F" qtfs0 "${extra[@]}" &
  SRV_PID=$!
  for _ in $(seq 100); do ip netns exec qtfs ss -uln | grep -q ":547 " && break; sleep 0.1; done
  for r in $RATES; do
    for _ in 1 2 3; do
      res=$(ip netns exec qtfc taskset -c 1 "$Q" loadgen --mode dhcpv6 --spin --server6 2001:db8::1 --relay6 2001:db8::2 \
        --link6 2001:db8:1::1 --device qtfc0 --clients "$N" --rate "$r" --duration "$D" --json)
      python3 -c "import json,sys; d=json.loads(sys.argv[1]); d.update(server='dhcpv6_floor', mode='$mode'); print(json.dumps(d))" "$res" | tee -a "$OUT"
    done
  done
  kill "$SRV_PID"; wait "$SRV_PID" 2>/dev/null || true; SRV_PID=""
  rm -f "$W/journal" "$SHM/journal"
done
echo "wrote $OUT"
