#!/usr/bin/env python3
"""A busy loop that reads the clock and records every gap over 0.5 ms: time the CPU it is
pinned to did not run it (the hypervisor stopping the vCPU, or another thread taking the core).
Run it pinned (taskset) on an otherwise idle core.

usage: pause_probe.py SECONDS LABEL   (prints one JSON line)"""
import gc
import json
import sys
import time

dur, label = float(sys.argv[1]), sys.argv[2]
gc.disable()
clock = time.perf_counter
start = prev = clock()
gaps = []
while True:
    t = clock()
    if t - prev > 0.0005:
        gaps.append(t - prev)
    prev = t
    if t - start > dur:
        break
print(json.dumps({"probe": "pauses", "cpu": label, "seconds": dur,
                  "paused_ms": round(sum(gaps) * 1e3, 1), "paused_pct": round(100 * sum(gaps) / dur, 2),
                  "over_1ms": sum(g > 0.001 for g in gaps), "over_4ms": sum(g > 0.004 for g in gaps),
                  "max_ms": round(max(gaps, default=0) * 1e3, 2)}))
