"""Operating-system helpers for the child processes tempestd starts."""

import ctypes
import ctypes.util
import os
import pwd
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent(sig=signal.SIGKILL, user=None):
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

    def preexec():
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)
        if ids is not None:
            uid, gid, groups = ids
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)

    return preexec


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
