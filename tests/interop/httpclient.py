"""An HTTP client for the L7 end-to-end tests, run in a VM. Prints one JSON
object. The host's python; no packages.

  httpclient.py load HOST PORT SECONDS
      one request after another, each on a new connection, for SECONDS;
      prints {"ok": n, "failed": n, "statuses": {...}, "members": {...},
      "errors": [first few]}
  httpclient.py ws HOST PORT
      a WebSocket-style upgrade of /ws, then three messages echoed back;
      prints {"status": 101, "echoed": true|false}
"""

import http.client
import json
import socket
import sys
import time


def load(host, port, seconds):
    end = time.time() + seconds
    out = {"ok": 0, "failed": 0, "statuses": {}, "members": {}, "errors": []}
    while time.time() < end:
        try:
            c = http.client.HTTPConnection(host, port, timeout=5)
            c.request("GET", "/load", headers={"Connection": "close"})
            r = c.getresponse()
            body = r.read()
            c.close()
            out["statuses"][str(r.status)] = out["statuses"].get(str(r.status), 0) + 1
            if r.status == 200:
                out["ok"] += 1
                m = json.loads(body)["member"]
                out["members"][m] = out["members"].get(m, 0) + 1
            else:
                out["failed"] += 1
        except Exception as e:  # noqa: BLE001 - every failure counts
            out["failed"] += 1
            if len(out["errors"]) < 5:
                out["errors"].append(repr(e))
    print(json.dumps(out))


def ws(host, port):
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(
        b"GET /ws HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        b = s.recv(1)
        if not b:
            break
        head += b
    status = int(head.split(b" ", 2)[1]) if head else 0
    echoed = status == 101
    for msg in (b"one", b"two-two", b"three-three-three"):
        if not echoed:
            break
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            b = s.recv(len(msg) - len(got))
            if not b:
                break
            got += b
        echoed = got == msg
    s.close()
    print(json.dumps({"status": status, "echoed": echoed}))


if __name__ == "__main__":
    if sys.argv[1] == "load":
        load(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    elif sys.argv[1] == "ws":
        ws(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit("usage: httpclient.py load|ws ...")
