"""Answers every TCP connection and every UDP datagram on PORT with the
peer's address as this host sees it (the internet client of the elastic IP
end-to-end test: it shows which source address a VM's traffic arrives
with). The host's python; no packages.

  whoami.py PORT
"""

import sys
import threading

from serving import tcp_listener, udp_bound


def tcp(port):
    s = tcp_listener(port, 64)
    while True:
        c, addr = s.accept()
        with c:
            c.sendall((addr[0] + "\n").encode())


def udp(port):
    s = udp_bound(port)
    while True:
        _, addr = s.recvfrom(2048)
        s.sendto((addr[0] + "\n").encode(), addr)


if __name__ == "__main__":
    port = int(sys.argv[1])
    threading.Thread(target=udp, args=(port,), daemon=True).start()
    tcp(port)
