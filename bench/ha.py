#!/usr/bin/env python3
"""Load for bench/ha.sh, run inside a host namespace whose API is on 127.0.0.1:9696.

  ha.py feed NET COUNT OTHER_NS       create a port here, then poll the API of the node in
                                      namespace OTHER_NS (through a socket opened there) until
                                      it shows the port; prints p50/p99/max in ms
"""
import ctypes, json, os, socket, sys, time, http.client

H = {"Content-Type": "application/json"}


def conn_in(ns):
    """An HTTP connection to 127.0.0.1:9696 in namespace `ns` (the socket keeps its namespace)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open("/var/run/netns/" + ns, os.O_RDONLY)
    try:
        if libc.setns(there, 0x40000000) != 0:
            raise OSError(ctypes.get_errno(), "setns " + ns)
        s = socket.create_connection(("127.0.0.1", 9696))
    finally:
        libc.setns(home, 0x40000000)
        os.close(home)
        os.close(there)
    c = http.client.HTTPConnection("127.0.0.1", 9696)
    c.sock = s
    return c


def feed(net, count, other_ns):
    here = http.client.HTTPConnection("127.0.0.1", 9696)
    there = conn_in(other_ns)
    lat = []
    for _ in range(count):
        here.request("POST", "/v2.0/ports", json.dumps({"port": {"network_id": net}}), H)
        r = here.getresponse()
        body = json.loads(r.read())
        assert r.status == 201, body
        t0 = time.perf_counter()
        pid = body["port"]["id"]
        while True:
            there.request("GET", "/v2.0/ports/" + pid)
            r = there.getresponse()
            r.read()
            if r.status == 200:
                break
        lat.append((time.perf_counter() - t0) * 1000)
    lat.sort()
    q = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))], 2)
    print(json.dumps({"count": count, "p50_ms": q(0.50), "p99_ms": q(0.99), "max_ms": round(lat[-1], 2)}))


if __name__ == "__main__":
    if sys.argv[1] == "feed":
        feed(sys.argv[2], int(sys.argv[3]), sys.argv[4])
