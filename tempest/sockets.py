"""Socket helpers shared by tempestd's servers (the HTTP front, the answer endpoint)."""

from __future__ import annotations

import socket
from typing import Any

DRAIN_SECONDS, DRAIN_BYTES = 1.0, 1 << 20  # what a closing connection still reads from its client


def close_with(sock: Any, reply: bytes, seconds: float = DRAIN_SECONDS, limit: int = DRAIN_BYTES) -> None:
    """Send a last reply and close so that the client reads it: what it sent meanwhile is
    read and thrown away (at most ``limit`` bytes, for ``seconds``), since closing a socket with
    unread bytes resets the connection, and the reset can destroy the reply in flight."""
    try:
        sock.sendall(reply)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(seconds)
        drained = 0
        while drained < limit and (data := sock.recv(65536)):
            drained += len(data)
    except OSError:
        pass
    sock.close()
