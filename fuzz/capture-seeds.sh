#!/usr/bin/env bash
# Captures the DHCP messages real clients (ISC dhclient, busybox udhcpc, dhcpcd) send to
# `qdhcp dnsmasq` in test namespaces, and stores each UDP payload as a seed of the packet
# fuzz corpus (fuzz/corpus/packet/<client>-<n>). Run as root from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --bin qdhcp
Q=$PWD/target/debug/qdhcp
D=$(mktemp -d)
H=qtcap-h S=qtcap-s V=qtcap-v
cleanup() { [ -f "$D/pid" ] && kill "$(cat "$D/pid")" 2>/dev/null; for n in $V $S $H; do ip netns del $n 2>/dev/null || true; done; }
trap cleanup EXIT
cleanup
for n in $H $S $V; do ip netns add $n; ip -n $n link set lo up; done
ip -n $H link add qtbr type bridge; ip -n $H link set qtbr up
ip -n $H link add tapcap type veth peer name ns-cap netns $S; ip -n $H link set tapcap master qtbr up
ip -n $S addr add 172.16.1.2/24 dev ns-cap; ip -n $S link set ns-cap up
ip -n $H link add qtvcap type veth peer name eth0 netns $V; ip -n $H link set qtvcap master qtbr up
ip -n $V link set eth0 address fa:16:3e:00:00:07 up
echo "fa:16:3e:00:00:07,host-172-16-1-7,172.16.1.7" > "$D/host"
ip netns exec $S "$Q" dnsmasq --pid-file="$D/pid" --dhcp-hostsfile="$D/host" --dhcp-leasefile="$D/leases" \
  --interface=ns-cap --dhcp-range=172.16.1.0,static,255.255.255.0,60s --log-facility="$D/log"
ip netns exec $S tcpdump -i ns-cap -w "$D/cap.pcap" -U udp port 67 >/dev/null 2>&1 & TD=$!
sleep 1
ip netns exec $V dhclient -4 -1 -sf /bin/true -lf "$D/dhc.leases" -pf "$D/dhc.pid" eth0 || true
ip netns exec $V dhclient -4 -r -sf /bin/true -lf "$D/dhc.leases" -pf "$D/dhc.pid" eth0 || true
ip netns exec $V udhcpc -i eth0 -n -q -f -t 3 -s /bin/true -O 121 -O mtu -x hostname:vm7 -R || true
ip netns exec $V dhcpcd -4 -1 -B --noarp -t 10 -f /dev/null -c /bin/true eth0 >/dev/null 2>&1 || true
ip netns exec $V dhcpcd -4 -k eth0 >/dev/null 2>&1 || true
rm -f /var/lib/dhcpcd/eth0.lease
sleep 1; kill $TD; wait $TD 2>/dev/null || true
python3 - "$D/cap.pcap" fuzz/corpus/packet <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
off, n = 24, 0
while off + 16 <= len(data):
    _, _, caplen, _ = struct.unpack("<IIII", data[off:off + 16]); off += 16
    frame = data[off:off + caplen]; off += caplen
    if len(frame) < 42 or frame[12:14] != b"\x08\x00": continue
    ihl = (frame[14] & 15) * 4
    udp = frame[14 + ihl:]
    if struct.unpack(">H", udp[2:4])[0] != 67: continue
    payload = udp[8:]
    if payload[0] != 1: continue
    opts = payload[240:]
    vendor = b"udhcp" if b"udhcp" in opts else (b"dhcpcd" if b"dhcpcd" in opts else b"dhclient")
    open("%s/%s-%d" % (sys.argv[2], vendor.decode(), n), "wb").write(payload); n += 1
print("stored", n, "packets")
PY
