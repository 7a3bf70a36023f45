"""The systemd notify protocol (sd_notify): READY=1, RELOADING=1, STOPPING=1, STATUS=..."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def notify(state: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send ``state`` to $NOTIFY_SOCKET; False when not run by systemd (no socket)."""
    path = environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):  # an abstract socket
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.sendall(state.encode())
        return True
    except OSError as exc:
        log.warning("cannot notify systemd (%s): %s", environ.get("NOTIFY_SOCKET"), exc)
        return False
