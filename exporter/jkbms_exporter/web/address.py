"""Listen addresses (no sockets here: the command line checks them before serving)."""

from __future__ import annotations

from typing import Tuple

DEFAULT_PORT = 10025
DEFAULT_LISTEN_ADDRESS = ":%d" % DEFAULT_PORT


def parse_listen_address(text: str) -> Tuple[str, int]:
    """``:10025``, ``0.0.0.0:10025``, ``[::1]:10025``, ``localhost:10025`` → (host, port).

    An empty host means every interface (IPv6 and IPv4 where the system allows it).
    """
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError("listen address %r must look like HOST:PORT or :PORT" % text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError("listen address %r has no valid port number" % text) from None
    if not 0 <= port <= 65535:
        raise ValueError("port %d in %r is out of range" % (port, text))
    return host, port
