"""Process angels: tempestd starts, watches and restarts the processes of [worker:NAME].

Supervisor > Program (one [worker:NAME] section) > Child (one process), as circus' Arbiter >
Watcher > Process. Each Child runs one greenlet that walks the states of supervisord
(STOPPED STARTING RUNNING BACKOFF STOPPING EXITED FATAL) and logs every transition with stable
words (``spawned:``, ``success:``, ``exited:``, ``backoff:``, ``gave up:``, ``stopped:``).

Restarts use capped exponential backoff with jitter on a monotonic clock. The count of
failures in a row covers failed starts and crashes after RUNNING alike, and is reset only once
a process has stayed up STABLE_SECS: a process crashing in a loop slows down instead of spinning
(supervisord restarts such a process immediately and forever). All operating-system access goes
through ``System``, which the unit tests replace.
"""

import enum
import logging
import os
import random
import signal
import time

import gevent
import gevent.event
from gevent import subprocess

from tempest import output, process
from tempest.config import expand

log = logging.getLogger(__name__)

BACKOFF_BASE = 0.5  # seconds before the second restart in a row; doubles each time
BACKOFF_CAP = 30.0  # the delay grows to this, then stays there (each delay is jittered ±20%)
STABLE_SECS = 10.0  # a process up this long (and at least startsecs) has its failures forgotten


class State(str, enum.Enum):
    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    EXITED = "EXITED"
    FATAL = "FATAL"


SETTLED = (State.STOPPED, State.EXITED, State.FATAL)


def backoff_delay(failures, rand=random.uniform):
    """Seconds to wait before attempt number ``failures`` + 1 (0 for the first retry)."""
    if failures <= 1:
        return 0.0
    return min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(failures - 2, 32)) * rand(0.8, 1.2)


def describe(returncode):
    if returncode is None:
        return "could not be spawned"
    if returncode < 0:
        try:
            return f"terminated by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"terminated by signal {-returncode}"
    return f"exit status {returncode}"


class System:
    """The operating system as the supervisor uses it."""

    clock = staticmethod(time.monotonic)

    def spawn(self, argv, env, cwd, user):
        """Start a process in its own session; returns (popen, stdout_fd, stderr_fd)."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out_w,
                                    stderr=err_w, start_new_session=True,
                                    preexec_fn=process.die_with_parent(user=user))
        except BaseException:
            for fd in (out_r, err_r):
                os.close(fd)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        return proc, out_r, err_r

    def signal(self, proc, sig):
        """Signal the child's whole process group (what it forked goes too)."""
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            proc.send_signal(sig)

    def wait(self, proc, timeout=None):
        """The child's return code, or None if it still runs after ``timeout`` seconds."""
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


class Child:
    """One process of a program, and the greenlet that keeps it in its wanted state."""

    def __init__(self, spec, index, system, env, sinks):
        self.spec = spec
        self.index = index
        self.name = f"{spec.name}:{index}"
        self.system = system
        self.env = {**env, **dict(spec.environment), "TEMPEST_WORKER": self.name}
        self.sinks = sinks  # (stdout sink, stderr sink) factories: callables of the child
        self.state = State.STOPPED
        self.proc = None
        self.started_at = None
        self.restarts = 0
        self.last_exit = ""
        self.failures = 0  # failed starts or crashes in a row: the backoff delay grows with it
        self.start_failures = 0  # failed starts in a row: FATAL after startretries
        self.wanted = False
        self._stopped_proc = None  # the process stop() was asked to stop
        self._kick = gevent.event.Event()
        self._settled = gevent.event.Event()
        self._settled.set()
        self._greenlet = gevent.spawn(self._run)

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    def status(self):
        up = self.state in (State.STARTING, State.RUNNING, State.STOPPING) and self.started_at
        return {"name": self.name, "state": self.state.value, "pid": self.pid or 0,
                "uptime": int(self.system.clock() - self.started_at) if up else 0,
                "restarts": self.restarts, "last_exit": self.last_exit}

    def start(self):
        if not self.wanted:
            self.wanted = True
            self.failures = self.start_failures = 0
            self._settled.clear()
            self._kick.set()

    def stop(self):
        """Ask the process to stop (stopsignal, SIGKILL after stopwaitsecs)."""
        self.wanted = False
        self._kick.set()
        proc = self.proc
        if proc is not None and proc.returncode is None and self.state in (State.STARTING, State.RUNNING):
            self._stopped_proc = proc
            self._set(State.STOPPING)
            self.system.signal(proc, self.spec.stopsignal)
            gevent.spawn(self._escalate, proc)

    def wait_settled(self, timeout=None):
        """Wait until STOPPED, EXITED or FATAL; True if it got there in time."""
        return self._settled.wait(timeout)

    def close(self):
        self._greenlet.kill(block=False)

    def _set(self, state, message=None, *args):
        self.state = state
        if state in SETTLED and not self.wanted:
            self._settled.set()
        if message:
            log.info(message, *args)

    def _escalate(self, proc):
        if self.system.wait(proc, self.spec.stopwaitsecs) is None:
            log.warning("killing: %s pid=%d still running %ss after %s: SIGKILL", self.name, proc.pid,
                        self.spec.stopwaitsecs, signal.Signals(self.spec.stopsignal).name)
            self.system.signal(proc, signal.SIGKILL)

    def _run(self):
        while True:
            while not self.wanted:
                if self.state not in SETTLED:  # BACKOFF -> STOPPED
                    self._set(State.STOPPED, "stopped: %s", self.name)
                self._settled.set()
                self._kick.wait()
                self._kick.clear()
            running, returncode = self._spawn_and_watch()
            self.last_exit = describe(returncode)
            if not self.wanted or (self.proc is not None and self.proc is self._stopped_proc):
                # STOPPING -> STOPPED (and a start() asked meanwhile spawns it afresh)
                self._set(State.STOPPED, "stopped: %s (%s)", self.name, self.last_exit)
                self._stopped_proc = None
                continue
            delay = self._after_exit(running, returncode)
            if delay is not None:
                self._backoff(delay)

    def _spawn_and_watch(self):
        """STARTING, then RUNNING after startsecs; returns (reached RUNNING, return code)."""
        spec = self.spec
        argv = [expand(arg, spec.name, self.index) for arg in spec.command]
        self.started_at = self.system.clock()
        self.proc = None
        try:
            out_sink, err_sink = (make(self) for make in self.sinks)
        except OSError as exc:
            log.error("spawnerr: %s: cannot open its log file: %s", self.name, exc)
            return False, None
        try:
            self.proc, out_fd, err_fd = self.system.spawn(argv, self.env, spec.directory, spec.user)
        except OSError as exc:
            log.error("spawnerr: %s: cannot run %s: %s", self.name, argv[0], exc.strerror or exc)
            return False, None
        output.spawn_drain(out_fd, out_sink)
        output.spawn_drain(err_fd, err_sink)
        self._set(State.STARTING, "spawned: %s pid=%d", self.name, self.proc.pid)
        returncode = self.system.wait(self.proc, spec.startsecs) if spec.startsecs else None
        if returncode is not None:
            return False, returncode
        if self.state == State.STARTING:  # STARTING -> RUNNING
            self._set(State.RUNNING, "success: %s entered RUNNING state (up %ss)", self.name, spec.startsecs)
        return True, self.system.wait(self.proc)

    def _after_exit(self, running, returncode):
        """Decide what follows an exit nobody asked for; returns the backoff delay or None."""
        spec = self.spec
        expected = returncode is not None and returncode in spec.exitcodes
        if returncode is not None:
            log.info("exited: %s (%s; %s)", self.name, self.last_exit, "expected" if expected else "not expected")
        if not running:  # STARTING -> BACKOFF or FATAL
            self.failures += 1
            self.start_failures += 1
            if self.start_failures > spec.startretries:
                self.wanted = False
                self._set(State.FATAL, "gave up: %s entered FATAL state, too many start retries too quickly",
                          self.name)
                return None
            return backoff_delay(self.failures + 1)
        self.start_failures = 0
        if self.system.clock() - self.started_at >= max(STABLE_SECS, spec.startsecs):
            self.failures = 0
        if spec.autorestart is False or (spec.autorestart == "unexpected" and expected):
            self.wanted = False  # RUNNING -> EXITED
            self._set(State.EXITED)
            return None
        self.failures += 1
        return backoff_delay(self.failures)

    def _backoff(self, delay):
        self.restarts += 1
        if delay:
            self._set(State.BACKOFF, "backoff: %s retrying in %.2fs (failure %d in a row)",
                      self.name, delay, self.failures)
            self._kick.clear()
            self._kick.wait(delay)


class Program:
    """The processes of one [worker:NAME] section."""

    def __init__(self, spec, system, env, sinks):
        self.spec = spec
        self.children = [Child(spec, i, system, env, sinks) for i in range(spec.numprocs)]

    def start(self):
        for child in self.children:
            child.start()

    def stop(self):
        for child in self.children:
            child.stop()

    def wait_settled(self, timeout):
        deadline = time.monotonic() + timeout
        return all(child.wait_settled(max(0, deadline - time.monotonic())) for child in self.children)

    def close(self):
        for child in self.children:
            child.close()


class Supervisor:
    """Every program of the configuration; start, stop, restart by name, and reload."""

    def __init__(self, env, system=None, log_sinks=None):
        self.env = env
        self.system = system or System()
        self.programs = {}
        self._files = {}
        self._sinks = log_sinks

    def add(self, spec, start=None):
        program = Program(spec, self.system, self.env, self._sinks or self._default_sinks(spec))
        self.programs[spec.name] = program
        if start if start is not None else spec.autostart:
            program.start()
        return program

    def _default_sinks(self, spec):
        def sink(path):
            def make(child):
                if not path:
                    return output.LogLines(child.name)
                real = expand(path, spec.name, child.index)
                if real not in self._files:
                    self._files[real] = output.RotatingFile(real, spec.logfile_maxbytes, spec.logfile_backups)
                rotating = self._files[real]
                rotating.maxbytes, rotating.backups = spec.logfile_maxbytes, spec.logfile_backups
                return rotating

            return make

        return (sink(spec.stdout_logfile), sink(spec.stderr_logfile))

    def children(self, target=None):
        """The children named by ``target``: None or 'all', NAME, or NAME:INDEX."""
        if target in (None, "all"):
            return [c for p in self.programs.values() for c in p.children]
        name, _, index = target.partition(":")
        program = self.programs.get(name)
        if program is None:
            raise KeyError(target)
        if not index:
            return list(program.children)
        found = [c for c in program.children if str(c.index) == index]
        if not found:
            raise KeyError(target)
        return found

    def start(self, target=None):
        for child in self.children(target):
            child.start()

    def stop(self, target=None, timeout=None):
        children = self.children(target)
        for child in children:
            child.stop()
        grace = timeout if timeout is not None else max([c.spec.stopwaitsecs for c in children] + [0]) + 5
        deadline = time.monotonic() + grace
        return all(child.wait_settled(max(0, deadline - time.monotonic())) for child in children)

    def restart(self, target=None):
        self.stop(target)
        self.start(target)

    def status(self):
        return [child.status() for child in self.children()]

    def wait_spawned(self, timeout=10.0):
        """Wait until every child that should run has been spawned once (or failed to)."""
        deadline = time.monotonic() + timeout
        while any(c.wanted and c.state == State.STOPPED for c in self.children()):
            if time.monotonic() > deadline:
                return False
            gevent.sleep(0.01)
        return True

    def reload(self, specs, keep=()):
        """Apply a new set of [worker:] sections: start added programs, stop removed ones,
        restart changed ones, leave the others alone. Programs named in ``keep`` are not
        touched. Returns (added, removed, changed) names."""
        new = {spec.name: spec for spec in specs if spec.name not in keep}
        old = {name: p.spec for name, p in self.programs.items() if name not in keep}
        removed = [name for name in old if name not in new]
        changed = [name for name in old if name in new and new[name] != old[name]]
        added = [name for name in new if name not in old]
        for name in removed + changed:
            log.info("reload: stopping %s (%s)", name, "removed" if name in removed else "changed")
            self.stop(name)
            self.programs.pop(name).close()
        for name in changed + added:
            log.info("reload: starting %s (%s)", name, "changed" if name in changed else "added")
            self.add(new[name])
        return added, removed, changed

    def shutdown(self, names=None):
        """Stop the named programs (all when None) and wait for them."""
        names = list(self.programs) if names is None else [n for n in names if n in self.programs]
        for name in names:
            self.programs[name].stop()
        for name in names:
            program = self.programs[name]
            if not program.wait_settled(program.spec.stopwaitsecs + 5):
                log.error("%s did not stop", name)
