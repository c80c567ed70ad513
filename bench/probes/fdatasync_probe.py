#!/usr/bin/env python3
"""Times fdatasync of 4 KB appends in a loop, nothing else running: what a durable journal
commit costs on this disk, and how often the disk stalls on its own.

usage: fdatasync_probe.py FILE SECONDS [GAP_SECONDS]   (prints one JSON line)"""
import json
import os
import sys
import time

path, dur = sys.argv[1], float(sys.argv[2])
gap = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
try:
    # zero-filled ahead and overwritten in place, as qdhcp's journal is
    os.ftruncate(fd, 0)
    os.pwrite(fd, b"\0" * (64 << 20), 0)
    os.fdatasync(fd)
    lat, pos, rec = [], 0, b"x" * 4000
    end = time.monotonic() + dur
    while time.monotonic() < end:
        t0 = time.perf_counter()
        os.pwrite(fd, rec, pos % (60 << 20))
        os.fdatasync(fd)
        lat.append(time.perf_counter() - t0)
        pos += len(rec)
        if gap:
            time.sleep(gap)
finally:
    os.close(fd)
    os.unlink(path)
lat.sort()
n = len(lat)
ms = lambda q: round(lat[min(n - 1, int(n * q))] * 1e3, 3)
print(json.dumps({"probe": "fdatasync", "seconds": dur, "gap_s": gap, "syncs": n, "p50_ms": ms(0.5),
                  "p99_ms": ms(0.99), "p999_ms": ms(0.999), "max_ms": round(lat[-1] * 1e3, 2),
                  "over_1ms": sum(x > 0.001 for x in lat), "over_4ms": sum(x > 0.004 for x in lat)}))
