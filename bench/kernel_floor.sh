#!/usr/bin/env bash
# The kernel's floor under tenant-network creation (issue 13, point 5): the device operations
# that `qdhcp serve` makes for each tenant VXLAN network, in Neutron's linuxbridge layout, done
# by iproute2 in batches of 1,000 with no qdhcp, no API and no database: a namespace, a bridge,
# a vxlan device over the underlay interface (`dev`, as the linuxbridge agent links it) in the
# bridge, a veth pair with one end in the bridge and one in the namespace, IPv6 off on the
# host-side devices. The namespace side
# (addresses, sysctls, sockets) is left out, so this is a lower bound on the kernel's time per
# network. Prints the rate over each thousand and over all. As root:
#   bench/kernel_floor.sh [N, default 10000]
# PERFCMD="perf record -g -o FILE --" runs each batch of link operations under that command.
set -euo pipefail
N=${1:-10000}
CHUNK=1000
W=$(mktemp -d /tmp/qdhcp-floor.XXXX)
cleanup() {
  ip netns list | awk '{print $1}' | grep -E '^qtf' | sed 's/^/netns del /' > "$W/del" || true
  [ -s "$W/del" ] && ip -b "$W/del" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
cleanup
mkdir -p "$W"
ip netns add qtfh; ip -n qtfh link set lo up
ip netns add qtfc; ip -n qtfc link set lo up
ip -n qtfh link add qtfu0 type veth peer name qtfu1 netns qtfc
ip -n qtfh addr add 10.254.0.1/24 dev qtfu0; ip -n qtfh link set qtfu0 up
ip -n qtfc addr add 10.254.0.2/24 dev qtfu1; ip -n qtfc link set qtfu1 up
# IPv6 off on the host-side devices made from here on, as qdhcp (and the linuxbridge agent for
# its bridges) turns it off on each before it comes up
ip netns exec qtfh sysctl -qw net.ipv6.conf.default.disable_ipv6=1

echo "machine: $(nproc) cores, $(uname -r); iproute2 $(ip -V | awk '{print $NF}'); $(date -u +%Y-%m-%d)"
now() { date +%s.%N; }
T0=$(now)
RATES=()
NS=()
LINKS=()
for ((c = 0; c < N; c += CHUNK)); do
  : > "$W/ns"; : > "$W/host"
  for ((i = c + 1; i <= c + CHUNK && i <= N; i++)); do
    echo "netns add qtfn$i" >> "$W/ns"
    cat >> "$W/host" <<EOF
link add qtfb$i type bridge
link add qtfx$i type vxlan id $i dev qtfu0 local 10.254.0.1 group 224.0.0.1 dstport 4789
link set qtfx$i master qtfb$i up
link add qtft$i numtxqueues 1 numrxqueues 1 type veth peer name qtfp$i netns qtfn$i numtxqueues 1 numrxqueues 1
link set qtft$i master qtfb$i up
link set qtfb$i up
EOF
  done
  t=$(now)
  ip -b "$W/ns"
  m=$(now)
  ${PERFCMD:-} ip -n qtfh -b "$W/host"
  e=$(now)
  n=$((i - c - 1))
  RATES+=("$(echo "$n / ($e - $t)" | bc -l | xargs printf '%.0f')")
  NS+=("$(echo "1000 * ($m - $t) / $n" | bc -l | xargs printf '%.2f')")
  LINKS+=("$(echo "1000 * ($e - $m) / $n" | bc -l | xargs printf '%.2f')")
done
TOTAL=$(echo "$N / ($(now) - $T0)" | bc -l | xargs printf '%.1f')
echo "networks: $N; per thousand (networks/s): ${RATES[*]}; over all: $TOTAL/s"
echo "ms per network for the namespace, per thousand: ${NS[*]}"
echo "ms per network for the links, per thousand: ${LINKS[*]}"
