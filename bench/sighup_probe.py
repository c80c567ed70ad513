#!/usr/bin/env python3
"""How soon a host added to a dnsmasq-style hosts file is served after SIGHUP.

For each of COUNT new hosts: rewrite the hosts file the way Neutron's agent does (a new file
renamed over the old one, the new line appended), send SIGHUP to the server, then send a
relayed DHCPDISCOVER for the new MAC every 0.25 ms until an OFFER for it arrives. The time
from the signal to that OFFER is one sample. Prints a JSON summary (p50/p99/max, in ms).

Run inside the client namespace: sighup_probe.py SERVER GIADDR HOSTS_FILE PID COUNT [TIMEOUT_S]
GIADDR must be an address of this namespace that nothing else has bound port 67 on.
"""
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time


def discover(mac: bytes, xid: int, giaddr: str) -> bytes:
    head = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 1, xid, 0, 0,
                       bytes(4), bytes(4), bytes(4), socket.inet_aton(giaddr),
                       mac + bytes(10), bytes(64), bytes(128))
    opts = bytes([99, 130, 83, 99, 53, 1, 1, 55, 3, 1, 3, 6, 255])
    pkt = head + opts
    return pkt + bytes(300 - len(pkt))


def offered(pkt: bytes, xid: int) -> bool:
    if len(pkt) < 244 or pkt[0] != 2 or struct.unpack("!I", pkt[4:8])[0] != xid:
        return False
    i = 240
    while i + 1 < len(pkt) and pkt[i] != 255:
        if pkt[i] == 0:
            i += 1
            continue
        if pkt[i] == 53:
            return pkt[i + 2] == 2
        i += 2 + pkt[i + 1]
    return False


def main() -> None:
    server, giaddr, hosts, pid, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    timeout = float(sys.argv[6]) if len(sys.argv) > 6 else 2.0
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((giaddr, 67))
    s.setblocking(False)
    with open(hosts) as f:
        text = f.read()
    samples = []
    timeouts = 0
    for k in range(count):
        mac = bytes([0xFA, 0x16, 0x3E, 0x0E, k >> 8, k & 255])
        line = "%s,probe%d,10.201.%d.%d\n" % (":".join("%02x" % b for b in mac), k, k >> 8, 1 + (k & 255) % 250)
        text += line
        tmp = hosts + ".probe-tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, hosts)
        xid = random.getrandbits(32)
        pkt = discover(mac, xid, giaddr)
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGHUP)
        got = None
        while got is None and time.perf_counter() - t0 < timeout:
            s.sendto(pkt, (server, 67))
            deadline = time.perf_counter() + 0.00025
            while time.perf_counter() < deadline:
                r, _, _ = select.select([s], [], [], max(0.0, deadline - time.perf_counter()))
                if not r:
                    break
                try:
                    data = s.recv(2048)
                except BlockingIOError:
                    continue
                if offered(data, xid):
                    got = time.perf_counter() - t0
                    break
        if got is None:
            timeouts += 1
        else:
            samples.append(got * 1000.0)
        time.sleep(0.05)
    samples.sort()

    def pct(p: float) -> float:
        return round(samples[min(len(samples) - 1, int(p * len(samples)))], 2) if samples else float("nan")

    print(json.dumps({"count": count, "served": len(samples), "timeouts": timeouts,
                      "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": round(samples[-1], 2) if samples else None}))


if __name__ == "__main__":
    main()
