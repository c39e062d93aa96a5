"""An HTTP/1.1 member of an L7 load balancer for the end-to-end tests.
Every request is answered with a JSON object: this member's NAME, the
method, path (with query), the client address it saw, and the request's
headers (lower-case names). Keep-alive as HTTP/1.1 does. Paths:

  /slow?ms=N           answers after N milliseconds (a request in flight
                       while its member drains)
  /setcookie?name=V    sets cookie `name` to V (an application's session
                       cookie, for APP_COOKIE persistence)
  /health              200 "ok" (health monitors)
  /ws                  a WebSocket-style upgrade: 101, then every byte the
                       client sends is echoed back

The host's python; no packages.

  httpmember.py NAME PORT
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "httpmember"

    def log_message(self, *args):
        pass

    def answer(self, status, body, extra=()):
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def handle_any(self):
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if url.path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            while True:
                b = self.connection.recv(4096)
                if not b:
                    break
                self.connection.sendall(b)
            self.close_connection = True
            return
        if url.path == "/health":
            self.answer(200, "ok")
            return
        if url.path == "/slow":
            time.sleep(int(q.get("ms", ["1000"])[0]) / 1000.0)
        extra = []
        if url.path == "/setcookie":
            for k, v in q.items():
                extra.append(("Set-Cookie", f"{k}={v[0]}; Path=/"))
        doc = {
            "member": NAME,
            "method": self.command,
            "path": self.path,
            "client": self.client_address[0],
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body_bytes": len(body),
        }
        self.answer(200, json.dumps(doc), extra)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


if __name__ == "__main__":
    NAME = sys.argv[1]
    Server(("0.0.0.0", int(sys.argv[2])), Handler).serve_forever()
