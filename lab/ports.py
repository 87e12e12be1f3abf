"""Free local ports, so that parallel test runs never fight over a fixed number."""

from __future__ import annotations

import socket
from typing import Literal

PortKind = Literal["tcp", "udp", "both"]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bindable(kind: int, host: str, port: int) -> int:
    """Bind `port` (0: any) with socket type `kind`; return the bound port, or 0 if taken."""
    with socket.socket(_family(host), kind) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return 0
        return int(sock.getsockname()[1])


def free_port(kind: PortKind = "tcp", host: str = "127.0.0.1", prefer: int | None = None) -> int:
    """A port that is free right now on `host` for TCP, UDP or both.

    `prefer` when it is free (a number easy to type, for the demo); otherwise the kernel picks
    it (bind to port 0), so it comes from the ephemeral range and is unlikely to be handed out
    again soon. The caller should bind it promptly.
    """
    if kind not in ("tcp", "udp", "both"):
        raise ValueError(f"free_port: kind must be 'tcp', 'udp' or 'both', not {kind!r}")
    first = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    if (
        prefer
        and _bindable(first, host, prefer)
        and (kind != "both" or _bindable(socket.SOCK_DGRAM, host, prefer))
    ):
        return prefer
    for _ in range(100):
        port = _bindable(first, host, 0)
        if kind != "both" or _bindable(socket.SOCK_DGRAM, host, port):
            return port
    raise RuntimeError(f"free_port: no port free for both TCP and UDP on {host} after 100 tries")
