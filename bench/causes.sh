#!/usr/bin/env bash
# Measures the causes of qdhcp's reply-latency tail on this machine, as bench/TARGETS.md states
# them, and writes bench/CAUSES.md:
#   1. the disk: fdatasync of 4 KB in a loop, nothing else running (every ACK waits for one);
#   2. the vCPUs: a busy loop pinned to each core records every pause over 0.5 ms;
#   3. the scheduler: qdhcp in dnsmasq mode at RATE leases/s (default 70,000) as in bench/run.sh,
#      once as started by default and once with --qdhcp-realtime, while the kernel's
#      sched_switch/sched_wakeup events of the server's core are captured for 4 s (tracefs);
#      every time the listener was runnable but off the core is reported with who held the core.
# Namespaces qbs/qbc as in bench/run.sh (do not run both at once).
#
# Usage (as root): bench/causes.sh [RATE]
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-70000}
N=10000
T=/sys/kernel/tracing
[ -w "$T/tracing_on" ] || { echo "tracefs not writable at $T (need root)" >&2; exit 1; }
cargo build --release --bin qdhcp
Q=$PWD/target/release/qdhcp
W=$(mktemp -d /tmp/qdhcp-causes.XXXX)
OUT=$W/causes.jsonl
SRV_PID=""
del_netns() { for n in qbs qbc; do ip netns del "$n" 2>/dev/null || true; done; }
cleanup() {
  echo 0 > "$T/tracing_on" 2>/dev/null || true
  echo > "$T/set_event" 2>/dev/null || true
  [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null || true
  del_netns
  rm -rf "$W"
}
trap cleanup EXIT
del_netns

echo "== disk"
python3 bench/probes/fdatasync_probe.py "$W/probe.bin" 10 | tee -a "$OUT"
python3 bench/probes/fdatasync_probe.py "$W/probe.bin" 10 0.001 | tee -a "$OUT"
echo "== vCPU pauses (both cores at once, 10 s)"
taskset -c 0 python3 bench/probes/pause_probe.py 10 cpu0 > "$W/p0" &
taskset -c 1 python3 bench/probes/pause_probe.py 10 cpu1 > "$W/p1"
wait
cat "$W/p0" "$W/p1" | tee -a "$OUT"

echo "== scheduler: listener waits at $RATE/s"
ip netns add qbs; ip netns add qbc
ip -n qbs link set lo up; ip -n qbc link set lo up
ip -n qbs link add qbs0 type veth peer name qbc0 netns qbc
ip -n qbs addr add 10.0.0.1/8 dev qbs0; ip -n qbs link set qbs0 up
ip -n qbc addr add 10.0.0.2/8 dev qbc0; ip -n qbc link set qbc0 up
python3 - "$N" > "$W/hosts" <<'PY'
import sys
seen = set()  # the same reservations as bench/run.sh: unique addresses
for i in range(int(sys.argv[1])):
    a = "10.%d.%d.%d" % (1 + (i >> 16), (i >> 8) & 255, 1 + (i & 255) if (i & 255) < 254 else 1)
    if a in seen:
        a = "10.%d.%d.%d" % (100 + (i >> 16), (i >> 8) & 255, i & 255 or 1)
    seen.add(a)
    print("fa:16:3e:%02x:%02x:%02x,host-%d,%s" % ((i >> 16) & 255, (i >> 8) & 255, i & 255, i, a))
PY
echo 0 > "$T/tracing_on"
echo 1 > "$T/tracing_cpumask"      # CPU 0, where the server runs
echo 65536 > "$T/buffer_size_kb"
echo mono > "$T/trace_clock"
echo 'sched:sched_switch sched:sched_wakeup' > "$T/set_event"
for mode in default realtime; do
  rm -f "$W"/qdhcp.leases*
  ip netns exec qbs taskset -c 0 "$Q" dnsmasq -k -u root --no-hosts --no-resolv --port=0 --interface=qbs0 --bind-interfaces \
    --dhcp-range=set:s,10.0.0.0,static,255.0.0.0,86400s --dhcp-hostsfile="$W/hosts" \
    --dhcp-leasefile="$W/qdhcp.leases" --dhcp-lease-max=4000000 --quiet-dhcp --qdhcp-client-rate=0 \
    --log-facility="$W/qdhcp.log" $([ $mode = realtime ] && echo --qdhcp-realtime) &
  SRV_PID=$!
  sleep 1.5
  for t in /proc/$SRV_PID/task/*; do taskset -pc 0 "$(basename "$t")" >/dev/null; done
  ip netns exec qbc taskset -c 1 "$Q" loadgen --spin --server 10.0.0.1 --giaddr 10.0.0.2 --device qbc0 \
    --clients "$N" --rate "$RATE" --duration 9 --json > "$W/load.json" &
  LG=$!
  sleep 3
  echo > "$T/trace"; echo 1 > "$T/tracing_on"; sleep 4; echo 0 > "$T/tracing_on"
  cp "$T/trace" "$W/trace-$mode"; echo > "$T/trace"
  wait $LG
  kill "$SRV_PID"; wait "$SRV_PID" 2>/dev/null || true; SRV_PID=""
  python3 bench/probes/sched_waits.py "$W/trace-$mode" "dhcp-qbs0" "$mode" | tee -a "$OUT"
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({'probe': 'loadgen', 'mode': sys.argv[2], 'offered_rate': d['offered_rate'], 'drop_pct': d['drop_pct'], 'offer_p99_ms': d['offer_p99_us']/1000, 'ack_p99_ms': d['ack_p99_us']/1000}))" "$W/load.json" "$mode" | tee -a "$OUT"
done

{
  echo "# Causes of the reply-latency tail, measured (bench/causes.sh $RATE)"
  echo
  dev=$(basename "$(findmnt -no SOURCE --target "$W" | sed 's/[0-9]*$//')")
  echo "Run on $(date -u +%Y-%m-%d) on this machine: $(nproc) cores, kernel $(uname -r)"
  echo "($( (zcat /proc/config.gz 2>/dev/null || true) | grep -E '^CONFIG_HZ=|^CONFIG_PREEMPT_NONE=' | tr '\n' ' ' | sed 's/ $//')),"
  echo "journal disk $dev: write cache $(cat /sys/block/$dev/queue/write_cache 2>/dev/null || echo '?'), FUA $(cat /sys/block/$dev/queue/fua 2>/dev/null || echo '?')."
  echo "Each line is one probe's JSON; what they mean is in [TARGETS.md](TARGETS.md)."
  echo
  echo '```'
  cat "$OUT"
  echo '```'
} > bench/CAUSES.md
echo "wrote bench/CAUSES.md"
