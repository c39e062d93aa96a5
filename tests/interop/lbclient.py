"""The client side of the load balancer end-to-end tests. Prints one JSON
object on stdout.

  lbclient.py count ADDR PORT N [udp]
      N new connections (or datagrams), one after the other; each reads the
      member's greeting. {"counts": {name: n}, "failed": k, "refused": r}
  lbclient.py hold ADDR PORT
      One connection held open, a line echoed every 0.2 s, for as long as
      stdin is open. Prints the member's name on a line of its own as soon
      as it is known. A line "mark" on stdin starts a second count; once
      stdin closes it goes on until 10 echoes followed the mark and the
      connection is 6 s old (at most 30 s more), then prints
      {"member": name, "echoes": n, "after_mark": m or null, "error": null or why}
"""

import json
import socket
import sys
import threading
import time


def count(addr, port, n, udp):
    counts, failed, refused = {}, 0, 0
    for _ in range(n):
        try:
            if udp:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.settimeout(2)
                s.sendto(b"hi", (addr, port))
                name = s.recv(100).decode().strip()
                s.close()
            else:
                s = socket.create_connection((addr, port), timeout=3)
                name = s.makefile("rb").readline().decode().strip()
                s.close()
            if not name:
                failed += 1
                continue
            counts[name] = counts.get(name, 0) + 1
        except ConnectionRefusedError:
            refused += 1
        except OSError:
            failed += 1
    print(json.dumps({"counts": counts, "failed": failed, "refused": refused}))


def hold(addr, port):
    out = {"member": None, "echoes": 0, "after_mark": None, "error": None}
    state = {"mark": None, "eof": None}

    def stdin():
        for line in sys.stdin:
            if line.strip() == "mark":
                state["mark"] = out["echoes"]
        state["eof"] = time.time()

    threading.Thread(target=stdin, daemon=True).start()
    try:
        s = socket.create_connection((addr, port), timeout=3)
        f = s.makefile("rb")
        out["member"] = f.readline().decode().strip()
        print(out["member"], flush=True)
        opened = time.time()
        while True:
            after = None if state["mark"] is None else out["echoes"] - state["mark"]
            out["after_mark"] = after
            done = (after or 0) >= 10 and time.time() >= opened + 6
            if state["eof"] is not None and (done or time.time() > state["eof"] + 30):
                break
            s.sendall(b"ping\n")
            if f.readline().strip() != b"ping":
                out["error"] = "echo lost"
                break
            out["echoes"] += 1
            time.sleep(0.2)
        s.close()
    except OSError as e:
        out["error"] = str(e)
    print(json.dumps(out))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "count":
        udp = len(sys.argv) > 5 and sys.argv[5] == "udp"
        count(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), udp)
    elif mode == "hold":
        hold(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit("usage: lbclient.py count|hold ...")
