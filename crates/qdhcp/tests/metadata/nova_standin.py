#!/usr/bin/env python3
"""A stand-in for Nova's metadata API in the metadata proxy tests: it checks what Nova's
handler (nova/api/metadata/handler.py) checks of a request that Neutron's metadata agent
forwards (400 when X-Instance-ID, X-Tenant-ID, X-Instance-ID-Signature or X-Forwarded-For is
missing, 403 when the signature is not the HMAC-SHA256 of the instance id keyed with the shared
secret, compared in constant time) and records every request it received, one JSON line each.
A path under /slow waits 5 s before answering.

usage: nova_standin.py SECRET ADDR PORT RECORD_FILE [CERT KEY]   (HTTPS with CERT and KEY)
"""
import hashlib
import hmac
import json
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = sys.argv[1].encode()
ADDR, PORT, RECORD = sys.argv[2], int(sys.argv[3]), sys.argv[4]


class Nova(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.serve()

    def do_HEAD(self):
        self.serve()

    def do_POST(self):
        self.serve()

    def serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with open(RECORD, "a") as f:
            f.write(json.dumps({
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("latin-1"),
            }) + "\n")
        h = self.headers
        if h.get("X-Metadata-Provider") is not None:
            return self.reply(400, "X-Metadata-Provider must never come from Neutron's agent")
        instance_id = h.get("X-Instance-ID")
        tenant_id = h.get("X-Tenant-ID")
        signature = h.get("X-Instance-ID-Signature")
        remote = h.get("X-Forwarded-For")
        if instance_id is None:
            return self.reply(400, "X-Instance-ID header is missing from request.")
        if tenant_id is None:
            return self.reply(400, "X-Tenant-ID header is missing from request.")
        if signature is None:
            return self.reply(400, "X-Instance-ID-Signature header is missing from request.")
        if remote is None:
            return self.reply(400, "X-Forwarded-For is missing from request.")
        expected = hmac.new(SECRET, instance_id.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            return self.reply(403, "Invalid proxy request signature.")
        if self.path.startswith("/slow"):
            time.sleep(5)
        if self.path.startswith("/missing"):
            return self.reply(404, "Not Found")
        answer = {"uuid": instance_id, "project_id": tenant_id, "path": self.path,
                  "remote": remote, "method": self.command, "body": body.decode("latin-1")}
        return self.reply(200, json.dumps(answer), "application/json")

    def reply(self, code, text, ctype="text/plain; charset=UTF-8"):
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer((ADDR, PORT), Nova)
if len(sys.argv) > 6:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[5], sys.argv[6])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
