"""A load balancer member for the end-to-end tests: on TCP PORT every
connection is greeted with NAME and a newline, then every line received is
echoed back until the client closes (a long-lived connection); on UDP PORT
every datagram is answered with NAME. The host's python; no packages.

  lbserver.py NAME PORT
"""

import sys
import threading

from serving import tcp_listener, udp_bound


def serve(c, name):
    with c:
        try:
            c.sendall((name + "\n").encode())
            f = c.makefile("rb")
            for line in f:
                c.sendall(line)
        except OSError:
            pass


def tcp(name, port):
    s = tcp_listener(port, 512)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c, name), daemon=True).start()


def udp(name, port):
    s = udp_bound(port)
    while True:
        _, addr = s.recvfrom(2048)
        s.sendto((name + "\n").encode(), addr)


if __name__ == "__main__":
    name, port = sys.argv[1], int(sys.argv[2])
    threading.Thread(target=udp, args=(name, port), daemon=True).start()
    tcp(name, port)
