#!/usr/bin/env python3
"""Writes bench/SOAK.md from soak.sh's per-minute CSV and the final renewal check."""
import csv
import json
import sys

rows = list(csv.DictReader(open(sys.argv[1])))
renew = json.loads(sys.argv[2])
minutes, rate = sys.argv[3], sys.argv[4]
print("# Soak: `qdhcp serve` under load with port churn\n")
print("`bench/soak.sh %s %s`: %s minutes at %s DORA/s offered (2,000 static ports, relay through the bridge), "
      "while 20 ports a second are created and deleted through the API. One row a minute.\n" % (minutes, rate, minutes, rate))
print("| minute | server RSS MB | DORA/s | drop % | DISCOVER→OFFER p99 ms | REQUEST→ACK p99 ms | ports churned |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    print("| %s | %.1f | %s | %s | %.2f | %.2f | %s |" % (r["minute"], int(r["rss_kb"]) / 1024, r["rate"], r["drop_pct"],
          int(r["offer_p99_us"]) / 1000, int(r["ack_p99_us"]) / 1000, r["churned_ports"]))
if rows:
    a, b = int(rows[0]["rss_kb"]) / 1024, int(rows[-1]["rss_kb"]) / 1024
    print("\nRSS: %.1f MB after the first minute, %.1f MB after the last (%+.1f MB)." % (a, b, b - a))
print("\nFinal check: renewals of every static lease (2,000 leases, each renewed twice): %d sent, %d ACK with the same address, %d NAK, %d without reply." % (
    renew["started"], renew["acks"], renew["naks"], renew["drops"]))
