"""Answers every TCP connection and every UDP datagram on PORT with the
peer's address as this host sees it (the internet client of the elastic IP
end-to-end test: it shows which source address a VM's traffic arrives
with). The host's python; no packages.

  whoami.py PORT
"""

import socket
import sys
import threading


def tcp(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)
    while True:
        c, addr = s.accept()
        with c:
            c.sendall((addr[0] + "\n").encode())


def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        _, addr = s.recvfrom(2048)
        s.sendto((addr[0] + "\n").encode(), addr)


if __name__ == "__main__":
    port = int(sys.argv[1])
    threading.Thread(target=udp, args=(port,), daemon=True).start()
    tcp(port)
