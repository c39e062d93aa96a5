"""Sockets the interop servers (whoami.py, sgconn.py, lbserver.py) listen
on, imported from beside them. The host's python; no packages."""

import socket


def tcp_listener(port, backlog):
    """A TCP socket listening on every address at PORT."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(backlog)
    return s


def udp_bound(port):
    """A UDP socket bound to every address at PORT."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    return s
