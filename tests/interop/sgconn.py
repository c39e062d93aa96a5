"""Long-lived TCP connections for the security group end-to-end test, run
inside VM namespaces (the host's python; no packages).

  sgconn.py serve PORT...            echo every line back, on every PORT
  sgconn.py connect HOST PORT SECONDS exit 0 when a TCP connection opens
  sgconn.py follow HOST PORT...      one connection per PORT; every 0.1 s
                                     send a line and wait for its echo, for
                                     as long as stdin is open; one JSON line
                                     per event, as it happens: {"port", "echo":
                                     n} when echo n came back, {"port",
                                     "waiting": n} every 0.5 s without it;
                                     each with "retrans" (the socket's TCP
                                     retransmissions so far); and at the end
                                     {"port", "final": true, "echoes",
                                     "retrans", "error"} ("reset": the
                                     connection was reset),
                                     also as soon as a connection ends
"""

import json
import socket
import struct
import sys
import threading
import time

from serving import tcp_listener


def serve(ports):
    def conn(c):
        with c:
            f = c.makefile("rwb", buffering=0)
            for line in f:
                f.write(line)

    def listen(p):
        s = tcp_listener(p, 64)
        while True:
            c, _ = s.accept()
            threading.Thread(target=conn, args=(c,), daemon=True).start()

    for p in ports:
        threading.Thread(target=listen, args=(p,), daemon=True).start()
    while True:
        time.sleep(3600)


def total_retrans(s):
    # struct tcp_info: tcpi_total_retrans is the u32 at offset 100.
    info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("I", info, 100)[0]


def follow(host, ports):
    stop = threading.Event()
    lock = threading.Lock()

    def emit(d):
        with lock:
            print(json.dumps(d), flush=True)

    def run(p):
        try:
            s = socket.create_connection((host, p), timeout=5)
        except OSError as e:
            emit({"port": p, "final": True, "echoes": 0, "retrans": 0, "error": f"connect: {e}"})
            return
        # Closing aborts (one RST) instead of leaving a socket behind that
        # retransmits its FIN and unacknowledged data for minutes into a
        # path a rule now cuts: those drops would be counted while later
        # checks of the test read the same counters.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.settimeout(0.5)
        n, buf, echoes, err = 0, b"", 0, None
        while not stop.is_set() and err is None:
            n += 1
            try:
                s.sendall(f"{n}\n".encode())
            except (ConnectionResetError, BrokenPipeError):
                err = "reset"
                break
            except OSError as e:
                err = f"send: {e}"
                break
            while not stop.is_set():
                try:
                    chunk = s.recv(100)
                except socket.timeout:
                    emit({"port": p, "waiting": n, "retrans": total_retrans(s)})
                    continue
                except (ConnectionResetError, BrokenPipeError):
                    err = "reset"
                    break
                except OSError as e:
                    err = f"recv: {e}"
                    break
                if not chunk:
                    err = "closed"
                    break
                buf += chunk
                if b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    echoes += 1
                    emit({"port": p, "echo": int(line), "retrans": total_retrans(s)})
                    break
            stop.wait(0.1)
        emit({"port": p, "final": True, "echoes": echoes, "retrans": total_retrans(s), "error": err})
        s.close()

    ts = [threading.Thread(target=run, args=(p,)) for p in ports]
    for t in ts:
        t.start()
    sys.stdin.read()
    stop.set()
    for t in ts:
        t.join()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve([int(p) for p in sys.argv[2:]])
    elif sys.argv[1] == "connect":
        try:
            socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=float(sys.argv[4])).close()
        except OSError as e:
            sys.exit(f"{e}")
    elif sys.argv[1] == "follow":
        follow(sys.argv[2], [int(p) for p in sys.argv[3:]])
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
