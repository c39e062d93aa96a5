"""Long-lived TCP connections for the security group end-to-end test, run
inside VM namespaces (the host's python; no packages).

  sgconn.py serve PORT...            echo every line back, on every PORT
  sgconn.py connect HOST PORT SECONDS exit 0 when a TCP connection opens
  sgconn.py hold HOST SECONDS PORT... one connection per PORT; every 0.1 s
                                     send a line and wait (1 s) for its echo;
                                     print JSON: per port, the monotonic
                                     times (s since start) of the echoes that
                                     came back, and the error that ended it
                                     ("reset": the connection was reset)
"""

import json
import socket
import sys
import threading
import time


def serve(ports):
    def conn(c):
        with c:
            f = c.makefile("rwb", buffering=0)
            for line in f:
                f.write(line)

    def listen(p):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", p))
        s.listen(64)
        while True:
            c, _ = s.accept()
            threading.Thread(target=conn, args=(c,), daemon=True).start()

    for p in ports:
        threading.Thread(target=listen, args=(p,), daemon=True).start()
    while True:
        time.sleep(3600)


def hold(host, seconds, ports):
    start = time.monotonic()
    out = {}

    def run(p):
        r = {"echoes": [], "error": None}
        out[str(p)] = r
        try:
            s = socket.create_connection((host, p), timeout=2)
        except OSError as e:
            r["error"] = f"connect: {e}"
            return
        s.settimeout(1.0)
        f = s.makefile("rwb", buffering=0)
        n = 0
        while time.monotonic() - start < seconds:
            n += 1
            try:
                f.write(f"{n}\n".encode())
                line = f.readline()
            except (ConnectionResetError, BrokenPipeError):
                # The other end (or whoever now owns its address) reset it.
                r["error"] = "reset"
                return
            except OSError as e:
                # A timeout: the echo did not come (dropped); keep trying so
                # a later recovery would show.
                r.setdefault("timeouts", 0)
                r["timeouts"] += 1
                continue
            if not line:
                r["error"] = "closed"
                return
            r["echoes"].append(round(time.monotonic() - start, 3))
            time.sleep(0.1)

    ts = [threading.Thread(target=run, args=(p,)) for p in ports]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve([int(p) for p in sys.argv[2:]])
    elif sys.argv[1] == "connect":
        try:
            socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=float(sys.argv[4])).close()
        except OSError as e:
            sys.exit(f"{e}")
    elif sys.argv[1] == "hold":
        hold(sys.argv[2], float(sys.argv[3]), [int(p) for p in sys.argv[4:]])
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
