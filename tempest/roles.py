"""What one tempestd is on a network: its role (a front, a worker host, or both), its instance
id, and the checks on the addresses it gives to workers on other machines.

A tempestd whose INI file has a ``[front]`` section (or a ``[route:]`` or ``[static:]`` one,
which mean nothing without a front) is a front: the HTTP front, the answer endpoint, the pub/sub
relay and the redeliverer, and the supervisor for its ``[worker:]`` sections. Without them (the
sections absent from the file, whatever the settings table's defaults say) it is a worker host:
the supervisor and the control socket only.
"""

from __future__ import annotations

import ipaddress
import os
import secrets

FRONT, WORKERS = "front", "workers"
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def is_front_section(name: str) -> bool:
    """A section of the INI file that makes its tempestd a front."""
    return name == "front" or name.startswith(("route:", "static:"))


def role_name(front: bool, programs: int) -> str:
    """``front``, ``workers`` or ``front+workers``, as the ready line and the status show it."""
    if not front:
        return WORKERS
    return f"{FRONT}+{WORKERS}" if programs else FRONT


def instance_id() -> str:
    """``host:pid:random``: unique among the instances sharing a Redis, new at each start."""
    import socket  # here: the configuration imports this module before gevent patches socket

    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; an unspecified address (0.0.0.0, ::) or a
    name other than localhost is not."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def address_problem(listen: tuple[str, int], answer_listen: tuple[str, int],
                    answer_advertise: tuple[str, int] | None) -> str | None:
    """Why these [front] addresses cannot work for workers on other machines, or None: a front
    reachable beyond loopback whose answer endpoint would be advertised on loopback (workers
    elsewhere would connect to their own machine and the clients get 504s)."""
    if answer_advertise is not None or is_loopback(listen[0]) or not is_loopback(answer_listen[0]):
        return None
    return (f"listen {listen[0]}:{listen[1]} reaches beyond this machine but the answer endpoint "
            f"({answer_listen[0]}:{answer_listen[1]}) would be advertised on loopback: set answer_listen "
            "to an address workers on other hosts reach, or answer_advertise")


def exposed_without_password(answer_listen: tuple[str, int], password: str) -> bool:
    """An answer endpoint beyond loopback that anyone who reaches it may answer any job on."""
    return not password and not is_loopback(answer_listen[0])


def read_secret_file(path: str) -> str:
    """The secret a file holds: its first line, without the line ending.

    Raises:
        ValueError: the file cannot be read or holds nothing (the message never quotes it).
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.readline(1 << 16).rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    if not text.strip():
        raise ValueError(f"{path}: empty (the first line is the password)")
    return text
