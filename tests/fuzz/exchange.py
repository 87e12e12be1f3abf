"""One TCP exchange with a server of this process (gevent sockets), for the fuzz tests."""

from __future__ import annotations

import socket

from gevent import socket as gsocket


def exchange(port: int, data: bytes, close_write: bool = True, timeout: float = 10.0) -> bytes:
    """Send `data` to 127.0.0.1:`port` (then half-close, unless `close_write` is off) and read
    until the server closes."""
    sock = gsocket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(data)
        if close_write:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass  # closed with input left unread (malformed, or over a cap): a reset, as it should
        return b"".join(chunks)
    finally:
        sock.close()
