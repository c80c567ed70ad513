#!/usr/bin/env python3
"""Creates N tenant networks (one subnet each) through the Neutron API with a pool of
concurrent clients, as a control plane would; prints one JSON line: count, seconds, rate, and
the rate over each tenth of the networks (it falls as the host's links grow)."""
import json, sys, time, http.client, threading

n, workers = int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 8
done = []
stamps = []
errors = []
lock = threading.Lock()
counter = iter(range(n))


def worker():
    c = http.client.HTTPConnection("127.0.0.1", 9696)
    h = {"Content-Type": "application/json"}
    while True:
        with lock:
            i = next(counter, None)
        if i is None:
            return
        c.request("POST", "/v2.0/networks", json.dumps({"network": {"name": "t%d" % i}}), h)
        r = c.getresponse(); body = json.loads(r.read())
        if r.status != 201:
            errors.append(body); continue
        net = body["network"]["id"]
        cidr = "10.%d.%d.0/24" % (i // 256, i % 256)
        c.request("POST", "/v2.0/subnets", json.dumps({"subnet": {"network_id": net, "cidr": cidr, "ip_version": 4}}), h)
        r = c.getresponse(); body = json.loads(r.read())
        if r.status != 201:
            errors.append(body); continue
        with lock:
            done.append(net)
            stamps.append(time.time())


t0 = time.time()
ts = [threading.Thread(target=worker) for _ in range(workers)]
for t in ts: t.start()
for t in ts: t.join()
dt = time.time() - t0
step = max(1, len(stamps) // 10)
marks = [t0] + stamps[step - 1::step]
tenths = [round(step / (b - a), 1) for a, b in zip(marks, marks[1:]) if b > a]
print(json.dumps({"created": len(done), "errors": len(errors), "first_error": errors[0] if errors else None,
                  "seconds": round(dt, 2), "per_second": round(len(done) / dt, 1),
                  "per_second_by_tenth": tenths}))
