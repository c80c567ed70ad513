#!/usr/bin/env python3
"""Stalls in a DHCPv6 load run: reads the files `qdhcp loadgen --slow-log` writes (SLOW_DIR=… for
bench/dhcpv6.sh and bench/dhcpv6_floor.sh) and groups the slow replies into episodes, runs of
replies to requests sent at most GAP ms apart. A stall of the whole machine (the hypervisor
taking the vCPU, a host interrupt storm) shows as an episode of hundreds of slow replies, and it
shows the same for a server that does nothing (dhcpv6_floor). For each file: the replies over
1 ms, the episodes, the share of those replies that fall in the longest episodes, and the worst.

Usage: bench/dhcpv6_stalls.py [--gap MS] [--top N] FILE...
"""
import argparse
import os


def episodes(rows, gap_us):
    """Runs of slow replies whose requests were sent within gap_us of the previous one."""
    out, cur = [], []
    for sent, lat in sorted(rows):
        if cur and sent - cur[-1][0] > gap_us:
            out.append(cur)
            cur = []
        cur.append((sent, lat))
    if cur:
        out.append(cur)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gap", type=float, default=2.0, help="ms between episodes (2)")
    ap.add_argument("--top", type=int, default=5, help="longest episodes listed (5)")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    for f in a.files:
        rows = []
        with open(f) as fh:
            for line in fh:
                kind, sent, lat = line.split()
                if kind == "advertise":
                    rows.append((int(sent), int(lat)))
        over = [r for r in rows if r[1] > 1000]
        eps = episodes(over, a.gap * 1000)
        eps.sort(key=lambda e: -len(e))
        top = eps[: a.top]
        in_top = sum(len(e) for e in top)
        print(f"== {os.path.basename(f)}: {len(over)} ADVERTISEs over 1 ms in {len(eps)} episodes; "
              f"the {len(top)} largest hold {in_top} ({100 * in_top / max(len(over), 1):.0f}%)")
        for e in top:
            start, end = e[0][0], e[-1][0]
            print(f"   at {start / 1e6:7.3f} s: {len(e):4d} replies sent over {(end - start) / 1e3:5.2f} ms, "
                  f"worst {max(x[1] for x in e) / 1e3:5.2f} ms")


if __name__ == "__main__":
    main()
