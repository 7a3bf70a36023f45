"""The Supervisor: every program of the configuration, started, stopped and restarted by name
(``all``, ``NAME`` or ``NAME:INDEX``), reloaded with a new set of [worker:] sections, and shut
down in order. It also opens the log files the children write to, one per path, shared."""

import fnmatch
import logging
import time
from collections.abc import Iterable, Mapping

import gevent

from tempest.config import ProgramSpec, expand
from tempest.supervisor.child import Child, SinkFactory
from tempest.supervisor.output import LogLines, RotatingFile, Sink
from tempest.supervisor.process import System
from tempest.supervisor.program import Program

log = logging.getLogger(__name__)


class Supervisor:
    """Every program of the configuration; start, stop, restart by name, and reload."""

    def __init__(self, env: Mapping[str, str], system: System | None = None,
                 log_sinks: tuple[SinkFactory, SinkFactory] | None = None, reserved: tuple[str, ...] = ()) -> None:
        self.env = env
        self.reserved = reserved  # programs that ``all`` and globs leave out (the embedded Redis)
        self.system = system or System()
        self.programs: dict[str, Program] = {}
        self._files: dict[str, RotatingFile] = {}
        self._sinks = log_sinks

    def add(self, spec: ProgramSpec, start: bool | None = None) -> Program:
        """Make the program of ``spec``, started if ``start`` (by default: autostart)."""
        program = Program(spec, self.system, self.env, self._sinks or self._default_sinks(spec))
        self.programs[spec.name] = program
        if start if start is not None else spec.autostart:
            program.start()
        return program

    def _default_sinks(self, spec: ProgramSpec) -> tuple[SinkFactory, SinkFactory]:
        def sink(path: str) -> SinkFactory:
            def make(child: Child) -> Sink:
                if not path:
                    return LogLines(child.name)
                real = expand(path, spec.name, child.index)
                if real not in self._files:
                    self._files[real] = RotatingFile(real, spec.logfile_maxbytes, spec.logfile_backups)
                rotating = self._files[real]
                rotating.maxbytes, rotating.backups = spec.logfile_maxbytes, spec.logfile_backups
                return rotating

            return make

        return (sink(spec.stdout_logfile), sink(spec.stderr_logfile))

    def children(self, target: str | None = None) -> list[Child]:
        """The children named by ``target``: None or ``all`` (every program but the reserved
        ones), NAME, NAME:INDEX, or a glob of either (``web*``, ``hello:1*``); KeyError if it
        names none."""
        if target is None or target == "all":
            return [c for name, p in self.programs.items() if name not in self.reserved for c in p.children]
        if any(char in target for char in "*?["):
            found = [c for name, p in self.programs.items() if name not in self.reserved for c in p.children
                     if fnmatch.fnmatchcase(c.name, target) or fnmatch.fnmatchcase(name, target)]
            if not found:
                raise KeyError(target)
            return found
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

    def start(self, target: str | None = None) -> None:
        for child in self.children(target):
            child.start()

    def stop(self, target: str | None = None, timeout: float | None = None) -> bool:
        """Stop the children of ``target`` and wait for them; True if all stopped in time
        (``timeout``, by default their longest stopwaitsecs + 5)."""
        children = self.children(target)
        for child in children:
            child.stop()
        grace = timeout if timeout is not None else max([c.spec.stopwaitsecs for c in children] + [0]) + 5
        deadline = time.monotonic() + grace
        return all(child.wait_settled(max(0, deadline - time.monotonic())) for child in children)

    def restart(self, target: str | None = None) -> None:
        self.stop(target)
        self.start(target)

    def reopen_logs(self) -> None:
        """Reopen the processes' log files (SIGUSR1); a file that cannot be is logged, kept."""
        for path, handle in self._files.items():
            try:
                handle.reopen()
            except OSError as exc:
                log.error("cannot reopen %s: %s; writing to the old file", path, exc.strerror)

    def every_child(self) -> list[Child]:
        """Every child, the reserved programs' included."""
        return [c for p in self.programs.values() for c in p.children]

    def status(self) -> list[dict[str, object]]:
        """One row per child (see Child.status)."""
        return [child.status() for child in self.every_child()]

    def wait_spawned(self, timeout: float = 10.0) -> bool:
        """Wait until every child that should run has been spawned once (or failed to)."""
        deadline = time.monotonic() + timeout
        while any(c.spawn_pending() for c in self.every_child()):
            if time.monotonic() > deadline:
                return False
            gevent.sleep(0.01)
        return True

    def reload(self, specs: Iterable[ProgramSpec],
               keep: Iterable[str] = ()) -> tuple[list[str], list[str], list[str]]:
        """Apply a new set of [worker:] sections: start added programs, stop removed ones,
        restart changed ones, leave the others alone. Programs named in ``keep``, and the
        reserved ones, are not touched. Returns (added, removed, changed) names."""
        kept = set(keep) | set(self.reserved)
        new = {spec.name: spec for spec in specs if spec.name not in kept}
        old = {name: p.spec for name, p in self.programs.items() if name not in kept}
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

    def shutdown(self, names: Iterable[str] | None = None) -> None:
        """Stop the named programs (all when None) and wait for them."""
        names = list(self.programs) if names is None else [n for n in names if n in self.programs]
        for name in names:
            self.programs[name].stop()
        for name in names:
            program = self.programs[name]
            if not program.wait_settled(program.spec.stopwaitsecs + 5):
                log.error("%s did not stop", name)
