#!/usr/bin/env python3
"""Reads a tracefs capture of sched_switch/sched_wakeup on the server's core and reports each
time a thread (the listener) was runnable but off the core: how long, and which threads held the
core meanwhile.

usage: sched_waits.py TRACE THREAD_NAME LABEL   (prints one JSON line)"""
import collections
import json
import re
import sys

path, thread, label = sys.argv[1], sys.argv[2][:15], sys.argv[3]
line_re = re.compile(r"^\s*(.+?)-(\d+)\s+\[\d+\]\s+\S+\s+([\d.]+): (\w+): (.*)$")
events = []
for line in open(path):
    m = line_re.match(line)
    if m:
        events.append((float(m.group(3)), m.group(4), m.group(5)))
if not events:
    sys.exit("no events in " + path)
runs, waits = [], []
cur = cur_start = waiting = None
for t, kind, rest in events:
    if kind == "sched_wakeup" and f"comm={thread} " in rest:
        waiting = waiting if waiting is not None else t
    elif kind == "sched_switch":
        f = dict(kv.split("=", 1) for kv in re.findall(r"(\w+=\S+)", rest))
        if cur is not None:
            runs.append((cur_start, t, cur))
        cur, cur_start = f["next_comm"], t
        if f["prev_comm"] == thread and f["prev_state"].startswith("R"):
            waiting = t  # preempted while runnable
        if f["next_comm"] == thread and waiting is not None:
            waits.append((t - waiting, waiting, t))
            waiting = None
span = events[-1][0] - events[0][0]
long = sorted((w for w in waits if w[0] > 0.001), reverse=True)
holders = collections.Counter()
for _, s, e in long:
    for rs, re_, c in runs:
        if re_ > s and rs < e:
            holders[re.sub(r"\d+", "N", c)] += min(re_, e) - max(rs, s)
print(json.dumps({"probe": "listener waits", "mode": label, "seconds": round(span, 2),
                  "waits": len(waits), "over_0_3ms": sum(w[0] > 0.0003 for w in waits),
                  "over_1ms": len(long), "max_ms": round(max((w[0] for w in waits), default=0) * 1e3, 2),
                  "held_by_ms": {k: round(v * 1e3, 1) for k, v in holders.most_common(6)}}))
