"""One process of a program: the Child, and the greenlet that keeps it in its wanted state.

Each Child runs one greenlet that spawns the process, watches it, and decides what follows its
exit: RUNNING after startsecs, BACKOFF and a new spawn after a failed start or a crash, FATAL
after startretries failed starts in a row, EXITED when it is not to be restarted. Every
transition is logged with stable words (``spawned:``, ``success:``, ``exited:``, ``backoff:``,
``gave up:``, ``stopped:``) and goes through ``Child._change_state``, which checks it against
the table of states.py. An illegal one is a bug: it is logged with its traceback, the process is
killed so that none runs unsupervised, and the child rests FATAL. All operating-system access
goes through the injected ``System``.
"""

import logging
import signal
from collections.abc import Callable, Mapping

import gevent
import gevent.event

from tempest.config import ProgramSpec, expand
from tempest.supervisor import backoff, output
from tempest.supervisor.backoff import backoff_delay
from tempest.supervisor.process import Proc, System, describe
from tempest.supervisor.states import SETTLED, State, TransitionError, check_transition

log = logging.getLogger(__name__)

SinkFactory = Callable[["Child"], output.Sink]  # makes the sink of one stream of a child


class Child:
    """One process of a program, and the greenlet that keeps it in its wanted state."""

    def __init__(self, spec: ProgramSpec, index: int, system: System, env: Mapping[str, str],
                 sinks: tuple[SinkFactory, SinkFactory]) -> None:
        self.spec = spec
        self.index = index
        self.name = f"{spec.name}:{index}"
        self.system = system
        self.env = {**env, **dict(spec.environment), "TEMPEST_WORKER": self.name}
        self.sinks = sinks  # (stdout sink, stderr sink) factories: callables of the child
        self.recent = {"stdout": output.Recent(), "stderr": output.Recent()}  # for tempest tail
        self.state = State.STOPPED  # where every child begins
        self.proc: Proc | None = None
        self.started_at = 0.0
        self.restarts = 0
        self.last_exit = ""
        self.failures = 0  # failed starts or crashes in a row: the backoff delay grows with it
        self.start_failures = 0  # failed starts in a row: FATAL after startretries
        self.wanted = False
        self._stopped_proc: Proc | None = None  # the process stop() was asked to stop
        self._kick = gevent.event.Event()
        self._settled = gevent.event.Event()
        self._settled.set()
        self._greenlet = gevent.spawn(self._run)

    @property
    def pid(self) -> int | None:
        """The pid of its process while that runs."""
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    def status(self) -> dict[str, object]:
        """One row of STATUS: name, state, pid, uptime, restarts, last_exit."""
        up = self.state in (State.STARTING, State.RUNNING, State.STOPPING) and self.started_at
        return {"name": self.name, "state": self.state.value, "pid": self.pid or 0,
                "uptime": int(self.system.clock() - self.started_at) if up else 0,
                "restarts": self.restarts, "last_exit": self.last_exit}

    def signal(self, sig: int) -> bool:
        """Send ``sig`` to its process group; False when it has no process now."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return False
        self.system.signal(proc, sig)
        return True

    def start(self) -> None:
        """Want it running: spawn it, with a fresh count of failures, unless already wanted."""
        if not self.wanted:
            self.wanted = True
            self.failures = self.start_failures = 0
            self._settled.clear()
            self._kick.set()

    def stop(self) -> None:
        """Ask the process to stop (stopsignal, SIGKILL after stopwaitsecs)."""
        self.wanted = False
        self._kick.set()
        proc = self.proc
        if proc is not None and proc.returncode is None and self.state in (State.STARTING, State.RUNNING):
            try:
                self._stop_process(proc)
            except TransitionError:
                self._bug()

    def spawn_pending(self) -> bool:
        """Wanted, but not yet spawned once: its spawn is not attempted yet or still under way."""
        spawning = self.state == State.STARTING and self.proc is None
        return self.wanted and (self.state == State.STOPPED or spawning)

    def wait_settled(self, timeout: float | None = None) -> bool:
        """Wait until STOPPED, EXITED or FATAL; True if it got there in time."""
        return bool(self._settled.wait(timeout))

    def close(self) -> None:
        """End its greenlet (the process itself is left as it is)."""
        self._greenlet.kill(block=False)

    def _change_state(self, new: State, message: str | None = None, *args: object) -> None:
        """The one place a child's state changes: checked against the table, then logged."""
        check_transition(self.name, self.state, new)
        self.state = new
        if new in SETTLED and not self.wanted:
            self._settled.set()
        if message:
            log.info(message, *args)

    def _bug(self) -> None:
        """After an illegal transition: log it with its traceback, kill the process so that
        none runs unsupervised, and rest FATAL. Called in the except clause."""
        log.exception("bug: %s: its supervision stopped, its process killed", self.name)
        self.wanted = False
        if self.proc is not None and self.proc.returncode is None:
            self.system.signal(self.proc, signal.SIGKILL)
        self.state = State.FATAL  # any -> FATAL, past the table, which has just been found wrong
        self._settled.set()
        if gevent.getcurrent() is not self._greenlet:
            self._greenlet.kill(block=False)

    def _stop_process(self, proc: Proc) -> None:
        self._stopped_proc = proc
        self._change_state(State.STOPPING)  # STARTING or RUNNING -> STOPPING
        self.system.signal(proc, self.spec.stopsignal)
        gevent.spawn(self._escalate, proc)

    def _escalate(self, proc: Proc) -> None:
        if self.system.wait(proc, self.spec.stopwaitsecs) is None:
            log.warning("killing: %s pid=%d still running %ss after %s: SIGKILL", self.name, proc.pid,
                        self.spec.stopwaitsecs, signal.Signals(self.spec.stopsignal).name)
            self.system.signal(proc, signal.SIGKILL)

    def _run(self) -> None:
        try:
            while True:
                self._wait_until_wanted()
                self._run_once()
        except TransitionError:
            self._bug()

    def _wait_until_wanted(self) -> None:
        while not self.wanted:
            if self.state not in SETTLED:
                self._change_state(State.STOPPED, "stopped: %s", self.name)  # BACKOFF -> STOPPED
            self._settled.set()
            self._kick.wait()
            self._kick.clear()

    def _run_once(self) -> None:
        """One spawn, watched until its process exits, and what follows the exit."""
        running, returncode = self._spawn_and_watch()
        self.last_exit = describe(returncode)
        on_exit = getattr(self.system, "on_exit", None)
        if on_exit is not None and self.proc is not None and returncode is not None:
            on_exit(self.proc.pid)  # the jobs it held go to other workers now (tempest.redeliver)
        if not self.wanted or (self.proc is not None and self.proc is self._stopped_proc):
            # STOPPING -> STOPPED, or STARTING or RUNNING -> STOPPED if it had exited before
            # stop() could signal it (a start() asked meanwhile spawns it afresh)
            self._change_state(State.STOPPED, "stopped: %s (%s)", self.name, self.last_exit)
            self._stopped_proc = None
        elif running:
            self._after_exit(returncode)
        else:
            self._after_failed_start(returncode)

    def _spawn_and_watch(self) -> tuple[bool, int | None]:
        """STARTING, then RUNNING after startsecs; returns (reached RUNNING, return code)."""
        spec = self.spec
        self.started_at = self.system.clock()
        self.proc = None
        # STOPPED, EXITED or FATAL (start()), BACKOFF (its delay over) or RUNNING (its first
        # crash in a row) -> STARTING
        self._change_state(State.STARTING)
        proc = self._spawn()
        if proc is None:
            return False, None
        self.proc = proc
        if not self.wanted:  # stop() came while it was being spawned, with nothing to signal yet
            self._stop_process(proc)  # STARTING -> STOPPING
        returncode = self.system.wait(proc, spec.startsecs) if spec.startsecs else None
        if returncode is not None:
            return False, returncode
        if self.state == State.STARTING:  # STARTING -> RUNNING
            self._change_state(State.RUNNING, "success: %s entered RUNNING state (up %ss)",
                               self.name, spec.startsecs)
        return True, self.system.wait(proc)

    def _spawn(self) -> Proc | None:
        """Open its sinks and spawn the process, its output drained; None if either failed."""
        spec = self.spec
        argv = [expand(arg, spec.name, self.index) for arg in spec.command]
        try:
            out_sink, err_sink = (make(self) for make in self.sinks)
        except OSError as exc:
            log.error("spawnerr: %s: cannot open its log file: %s", self.name, exc)
            return None
        try:
            proc, out_fd, err_fd = self.system.spawn(argv, self.env, spec.directory, spec.user,
                                                     fds=self.system.inherit.get(spec.name, ()))
        except OSError as exc:
            log.error("spawnerr: %s: cannot run %s: %s", self.name, argv[0], exc.strerror or exc)
            return None
        output.spawn_drain(out_fd, output.Tee(out_sink, self.recent["stdout"]))
        output.spawn_drain(err_fd, output.Tee(err_sink, self.recent["stderr"]))
        log.info("spawned: %s pid=%d", self.name, proc.pid)
        return proc

    def _log_exit(self, returncode: int | None) -> bool:
        """Log an exit nobody asked for; returns whether its code is one of exitcodes."""
        expected = returncode is not None and returncode in self.spec.exitcodes
        if returncode is not None:
            log.info("exited: %s (%s; %s)", self.name, self.last_exit, "expected" if expected else "not expected")
        return expected

    def _after_failed_start(self, returncode: int | None) -> None:
        """It exited before startsecs, or was never spawned: BACKOFF, or FATAL after startretries."""
        self._log_exit(returncode)
        self.failures += 1
        self.start_failures += 1
        if self.start_failures > self.spec.startretries:
            self.wanted = False
            self._change_state(State.FATAL, "gave up: %s entered FATAL state, too many start retries too quickly",
                               self.name)  # STARTING -> FATAL
            return
        self._backoff(backoff_delay(self.failures + 1))  # STARTING -> BACKOFF

    def _after_exit(self, returncode: int | None) -> None:
        """It exited from RUNNING: EXITED, or restarted (at once if it is the first failure in a row)."""
        spec = self.spec
        expected = self._log_exit(returncode)
        self.start_failures = 0
        if self.system.clock() - self.started_at >= max(backoff.STABLE_SECS, spec.startsecs):
            self.failures = 0
        if spec.autorestart is False or (spec.autorestart == "unexpected" and expected):
            self.wanted = False
            self._change_state(State.EXITED)  # RUNNING -> EXITED
            return
        self.failures += 1
        delay = backoff_delay(self.failures)
        if delay:
            self._backoff(delay)  # RUNNING -> BACKOFF
        else:
            self.restarts += 1  # RUNNING -> STARTING at once, in the next round of _run

    def _backoff(self, delay: float) -> None:
        self.restarts += 1
        # STARTING or RUNNING -> BACKOFF
        self._change_state(State.BACKOFF, "backoff: %s retrying in %.2fs (failure %d in a row)",
                           self.name, delay, self.failures)
        self._kick.clear()
        self._kick.wait(delay)
