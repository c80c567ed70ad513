#!/usr/bin/env python3
"""Turns perfdhcp's text output (stdin) into one JSON line like qdhcp loadgen's."""
import json
import re
import sys

server, rate, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
text = sys.stdin.read()
out = {"server": server, "tool": "perfdhcp", "offered_rate": rate}
m = re.search(r"Rate:\s*([\d.]+)", text)
out["rate"] = float(m.group(1)) if m else None
sections = re.split(r"\*\*\*Statistics for: ", text)
for sec in sections[1:]:
    name = sec.split("***")[0].strip()
    key = {"DISCOVER-OFFER": "offer", "REQUEST-ACK": "ack"}.get(name)
    if not key:
        continue
    def num(label):
        m = re.search(label + r":\s*([\d.]+)", sec)
        return float(m.group(1)) if m else None
    out[key + "_sent"] = num("sent packets")
    out[key + "_received"] = num("received packets")
    out[key + "_drops"] = num(r"drops")
    out[key + "_avg_ms"] = num("avg delay")
sent = out.get("offer_sent") or 0
acks = out.get("ack_received") or 0
out["drop_pct"] = round(100.0 * (sent - acks) / sent, 3) if sent else None
out["acks"] = acks
out["ack_rate"] = round(acks / duration, 1)
if out["rate"] is None:
    out["error"] = text.strip().splitlines()[-1] if text.strip() else "no output"
print(json.dumps(out))
