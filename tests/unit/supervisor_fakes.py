"""The fake operating system of the supervisor's unit tests, and their fixtures and helpers.

FakeSystem has the interface of tempest.supervisor.System (clock, spawn, signal, wait) and makes
FakeProcs that exit when a test (or a signal) says so, so that nothing forks. Time is real but
short: the tests shrink startsecs, stopwaitsecs and the backoff tunables, and wait with
deadlines. Every transition a Child makes is recorded and checked against the table of
tempest.supervisor.states (the ``transitions`` fixture, used by every test module of the
supervisor): a test fails if the guard refused one it did not expect.

Test modules import the fixtures they use by name (pytest finds them among the module's names).
"""

import logging
import os
import signal
import time

import gevent
import gevent.event
import pytest

import support
from tempest.config import program_spec
from tempest.supervisor import Supervisor, TransitionError, backoff, child as child_module, states

JITTER = (0.8, 1.2)  # backoff_delay multiplies by uniform(0.8, 1.2)


# the fake operating system


class FakeProc:
    """A process that exits when the test (or a signal) says so; quacks like a Popen."""

    def __init__(self, number, argv, env, cwd, user):
        self.number = number  # 1 for the first spawn of the system, 2 for the next...
        self.pid = 1000 + number
        self.argv, self.env, self.cwd, self.user = argv, env, cwd, user
        self.returncode = None
        self.spawned_at = time.monotonic()
        self.exited_at = None
        self.signals = []  # (signal, monotonic time)
        self.ignore = set()  # signals it survives (SIGKILL is never ignored)
        self._exit = gevent.event.AsyncResult()

    def exit(self, returncode):
        if self.returncode is None:
            self.returncode = returncode
            self.exited_at = time.monotonic()
            self._exit.set(returncode)

    def receive(self, sig):
        self.signals.append((sig, time.monotonic()))
        if sig == signal.SIGKILL or sig not in self.ignore:
            gevent.spawn(self.exit, -sig)  # dies soon after, as a real one would


class FakeSystem:
    """Same interface as tempest.supervisor.System: clock, spawn, signal, wait."""

    def __init__(self):
        self.procs = []
        self.attempts = []  # every spawn call, including those that raised
        self.spawn_error = None  # an OSError to raise from spawn
        self.behave = None  # called with each new FakeProc: schedule its exit, set .ignore...
        self.output = (b"", b"")  # what each process writes on stdout and stderr, then EOF
        self.inherit = {}  # by program: descriptors passed (System.inherit)
        self.offset = 0.0
        self._timers = []

    def clock(self):
        return time.monotonic() + self.offset

    def advance(self, seconds):
        self.offset += seconds

    def later(self, seconds, func, *args):
        self._timers.append(gevent.spawn_later(seconds, func, *args))

    def spawn(self, argv, env, cwd, user, fds=()):
        self.attempts.append(list(argv))
        if self.spawn_error is not None:
            raise self.spawn_error
        proc = FakeProc(len(self.procs) + 1, list(argv), dict(env), cwd, user)
        self.procs.append(proc)
        fds = []
        for data in self.output:
            read_end, write_end = os.pipe()
            os.write(write_end, data)
            os.close(write_end)  # the drain greenlet sees EOF after the data
            fds.append(read_end)
        if self.behave is not None:
            self.behave(proc)
        return proc, fds[0], fds[1]

    def signal(self, proc, sig):
        proc.receive(sig)

    def wait(self, proc, timeout=None):
        try:
            return proc._exit.get(timeout=timeout)
        except gevent.Timeout:
            return None

    def close(self):
        gevent.killall(self._timers)


# behaviours of fake processes, per spawn


def exits_after(system, seconds, code=1):
    """Every process exits ``seconds`` after its spawn with ``code``."""
    return lambda proc: system.later(seconds, proc.exit, code)


def script(*behaviours):
    """Spawn N behaves as behaviours[N-1]; the last one repeats. None: runs until signalled."""

    def behave(proc):
        chosen = behaviours[min(proc.number, len(behaviours)) - 1]
        if chosen is not None:
            chosen(proc)

    return behave


# fixtures and helpers


class Sink:
    def __init__(self, store, child, stream):
        self.store, self.key = store, (child.name, stream)

    def write(self, data):
        self.store[self.key] = self.store.get(self.key, b"") + data


class Recording(Supervisor):
    """A Supervisor that remembers every Program it made, so teardown can close them all."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.made = []

    def add(self, spec, start=None):
        program = super().add(spec, start)
        self.made.append(program)
        return program


@pytest.fixture
def system():
    fake = FakeSystem()
    yield fake
    fake.close()


@pytest.fixture
def written():
    return {}


@pytest.fixture
def sup(system, written):
    sinks = (lambda child: Sink(written, child, "stdout"), lambda child: Sink(written, child, "stderr"))
    supervisor = Recording(env={"BASE": "1"}, system=system, log_sinks=sinks)
    yield supervisor
    for program in supervisor.made:
        program.close()
    gevent.sleep(0)


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO, logger="tempest.supervisor")
    return caplog


@pytest.fixture
def fast_backoff(monkeypatch):
    """BACKOFF_BASE 0.05s, BACKOFF_CAP 0.2s: delays 0, .05, .1, .2, .2..."""
    monkeypatch.setattr(backoff, "BACKOFF_BASE", 0.05)
    monkeypatch.setattr(backoff, "BACKOFF_CAP", 0.2)


def spec(name="hello", **overrides):
    """A [worker:] section with the table's defaults, short times and a fake command."""
    values = dict(command=("worker", "--index=%(process_num)d", "%(program_name)s"), directory="/srv/app",
                  startsecs=0.05, stopwaitsecs=0.5, logfile_maxbytes=1024 * 1024, logfile_backups=2)
    values.update(overrides)
    return program_spec(name, **values)


def wait_until(predicate, timeout=3.0, message="condition"):
    """Poll ``predicate`` while letting the greenlets run; fail after ``timeout`` seconds."""
    return support.wait_until(predicate, timeout, 0.002, message, sleep=gevent.sleep)


def child_of(sup, target="hello:0"):
    (child,) = sup.children(target)
    return child


watchers = []  # the sampling greenlets of watch_states, killed after each test


def watch_states(child):
    """Sample child.state every millisecond; returns a function that gives the distinct states
    seen so far, in order (the current one included)."""
    seen = [child.state]

    def sample():
        if child.state != seen[-1]:
            seen.append(child.state)
        return seen

    def loop():
        while True:
            sample()
            gevent.sleep(0.001)

    watchers.append(gevent.spawn(loop))
    return sample


@pytest.fixture(autouse=True)
def _kill_watchers():
    yield
    gevent.killall(watchers)
    watchers.clear()


def messages(logs, word):
    return [r.getMessage() for r in logs.records if r.name.startswith("tempest.supervisor.") and r.getMessage().startswith(word)]


def backoffs(logs):
    """(delay, failures in a row) of each 'backoff:' line."""
    return [(r.args[1], r.args[2]) for r in logs.records if r.getMessage().startswith("backoff:")]


def assert_jittered(delay, nominal):
    assert JITTER[0] * nominal - 1e-9 <= delay <= JITTER[1] * nominal + 1e-9, (delay, nominal)


def gaps(procs):
    """Seconds between each process' exit and the next spawn."""
    return [later.spawned_at - earlier.exited_at for earlier, later in zip(procs, procs[1:])]



class Transitions:
    """Every (child name, from, to) the guard was asked about, and what it refused."""

    def __init__(self):
        self.made = []
        self.refused = []

    def of(self, name):
        """The states child ``name`` went through, from its first: [STOPPED, STARTING, ...]."""
        made = [(old, new) for who, old, new in self.made if who == name]
        return [made[0][0]] + [new for _, new in made] if made else []

    def check(self, name, old, new):
        try:
            states.check_transition(name, old, new)
        except TransitionError as exc:
            self.refused.append(exc)
            raise
        self.made.append((name, old, new))


@pytest.fixture(autouse=True)
def transitions(monkeypatch):
    """Records the transitions of every Child; fails the test if the guard refused one."""
    recorder = Transitions()
    monkeypatch.setattr(child_module, "check_transition", recorder.check)
    yield recorder
    assert not recorder.refused, f"illegal transitions: {[str(e) for e in recorder.refused]}"
