"""Several front processes on one box: ``[front] processes = N`` (or ``auto``, one per core).

tempestd, the master, binds the front's listening socket and runs N front processes under its
supervisor as the program ``front`` (``front:0`` ... ``front:N-1``), each ``tempestd
--front-process I -c FILE`` with the socket's descriptor in TEMPEST_FRONT_FD. They all accept on
that one socket, so the kernel hands each new connection to one of them, and a front process
that dies leaves the connections waiting in the backlog to the others. Each has its own answer
endpoint (answer_listen's port + I, advertised as answer_advertise's port + I: the jobs it
pushes name it), relay (one Redis subscription per process: SSE and WebSocket clients are
served in every one), pusher, redeliverer, and admin listener ([admin] listen's port + 1 + I).

The master keeps what there is one of: the workers, the control socket, the embedded Redis,
its admin listener (the processes' states, queues, /healthz) and its instance entry (each front
process has one too). It passes SIGHUP on to the front processes, which reload the INI file
themselves, and at SIGTERM stops them first, so that they drain their requests while the
workers still answer.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import socket
import sys
from typing import TYPE_CHECKING, Any

from tempest.config import program_spec

if TYPE_CHECKING:
    from tempest.config import Config

NAME = "front"  # the program of the front processes, reserved like the embedded Redis
FD_ENV = "TEMPEST_FRONT_FD"  # the listening socket's descriptor, in each front process
READY_ENV = "TEMPEST_FRONT_READY_FD"  # a pipe to the master: "<index> <pid>\n" once serving
START_TIMEOUT = 30.0  # seconds the master waits for every front process to be RUNNING


def listening_socket(address: tuple[str, int], backlog: int) -> socket.socket:
    """The front's socket, bound and listening, for the front processes to inherit."""
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def program(config: Config, fd: int, ready: int) -> Any:
    """The ProgramSpec of the front processes, which inherit the listening socket ``fd`` and
    the write end ``ready`` of the master's readiness pipe."""
    command = (sys.executable, "-m", "tempest", "--front-process", "%(process_num)d", "-c",
               os.path.abspath(config.path))
    return program_spec(NAME, command=command, numprocs=config.front.processes,
                        directory=os.path.dirname(os.path.abspath(config.path)),
                        environment=((FD_ENV, str(fd)), (READY_ENV, str(ready))),
                        stopwaitsecs=config.front.graceful_timeout + 5)  # it drains for graceful_timeout


def shifted(address: tuple[str, int] | None, by: int) -> tuple[str, int] | None:
    """``address`` with its port moved up by ``by`` (port 0, any free port, stays 0)."""
    if address is None:
        return None
    host, port = address
    return (host, port + by) if port else (host, 0)


def for_process(config: Config, index: int) -> Config:
    """The configuration as front process ``index`` runs it: its own answer and admin ports."""
    shaped = copy.copy(config)
    front = config.front
    shaped.front = dataclasses.replace(front, answer_listen=shifted(front.answer_listen, index),
                                       answer_advertise=shifted(front.answer_advertise, index))
    shaped.admin = dataclasses.replace(config.admin, listen=shifted(config.admin.listen, index + 1))
    shaped.programs = []  # the master runs the workers
    return shaped


def inherited_socket() -> socket.socket:
    """The listening socket that the master passed (TEMPEST_FRONT_FD); ValueError if none."""
    raw = os.environ.pop(FD_ENV, "")
    if not raw.isdigit():
        raise ValueError(f"no listening socket: {FD_ENV} is {raw!r} (front processes are started by tempestd)")
    sock = socket.socket(fileno=int(raw))
    if sock.type != socket.SOCK_STREAM:
        raise ValueError(f"{FD_ENV}={raw} is not a stream socket")
    return sock


def tell_ready(index: int) -> None:
    """Tell the master that front process ``index`` serves (a line on the readiness pipe)."""
    raw = os.environ.pop(READY_ENV, "")
    if not raw.isdigit():
        return
    try:
        os.write(int(raw), b"%d %d\n" % (index, os.getpid()))  # one write under PIPE_BUF: never mixed with a sibling's
        os.close(int(raw))
    except OSError:
        pass
