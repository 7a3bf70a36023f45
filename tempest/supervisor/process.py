"""The operating system as the supervisor uses it: ``System`` (clock, spawn, signal, wait),
which the unit tests replace with a fake, and the helpers it and the pid file need.

Children run in their own session, so that a signal reaches what they forked too, and ask the
kernel to kill them when tempestd dies.
"""

import ctypes
import ctypes.util
import os
import pwd
import signal
import time
from collections.abc import Callable
from typing import Protocol

from gevent import subprocess

PR_SET_PDEATHSIG = 1


class Proc(Protocol):
    """What the supervisor uses of a process that System.spawn returned (a Popen)."""

    pid: int
    returncode: int | None

    def send_signal(self, sig: int) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class System:
    """The operating system as the supervisor uses it."""

    clock = staticmethod(time.monotonic)
    on_exit: Callable[[int], object] | None = None  # called with the pid of each child that exited

    def __init__(self) -> None:
        self.inherit: dict[str, tuple[int, ...]] = {}  # by program: the descriptors its processes get

    def spawn(self, argv: list[str], env: dict[str, str], cwd: str, user: str,
              fds: tuple[int, ...] = ()) -> tuple[Proc, int, int]:
        """Start a process in its own session, with ``fds`` open in it under the same numbers
        (the front processes' listening socket); returns (popen, stdout_fd, stderr_fd)."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out_w,
                                    stderr=err_w, start_new_session=True, pass_fds=fds,
                                    preexec_fn=die_with_parent(user=user))
        except BaseException:
            for fd in (out_r, err_r):
                os.close(fd)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        return proc, out_r, err_r

    def signal(self, proc: Proc, sig: int) -> None:
        """Signal the child's whole process group (what it forked goes too)."""
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            proc.send_signal(sig)

    def wait(self, proc: Proc, timeout: float | None = None) -> int | None:
        """The child's return code, or None if it still runs after ``timeout`` seconds."""
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


def die_with_parent(sig: int = signal.SIGKILL, user: str | None = None) -> Callable[[], None]:
    """A preexec_fn that asks the kernel to send ``sig`` to the child when tempestd dies,
    and switches to ``user`` if given.

    libc and the user's ids are looked up here, in the parent, so that the child between fork
    and exec only makes system calls. If the parent died before the prctl took effect, the
    child kills itself.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    parent = os.getpid()
    ids = None
    if user and os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        ids = (entry.pw_uid, entry.pw_gid, os.getgrouplist(user, entry.pw_gid))

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)
        if ids is not None:
            uid, gid, groups = ids
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)

    return preexec


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (ours to signal or not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(returncode: int | None) -> str:
    """How a process ended, in supervisord's words: 'exit status 1', 'terminated by SIGTERM'."""
    if returncode is None:
        return "could not be spawned"
    if returncode < 0:
        try:
            return f"terminated by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"terminated by signal {-returncode}"
    return f"exit status {returncode}"
