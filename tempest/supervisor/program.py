"""One [worker:NAME] section as it runs: a Program and its numprocs Children."""

import time
from collections.abc import Mapping

from tempest.config import ProgramSpec
from tempest.supervisor.child import Child, SinkFactory
from tempest.supervisor.process import System


class Program:
    """The processes of one [worker:NAME] section."""

    def __init__(self, spec: ProgramSpec, system: System, env: Mapping[str, str],
                 sinks: tuple[SinkFactory, SinkFactory]) -> None:
        self.spec = spec
        self.children = [Child(spec, i, system, env, sinks) for i in range(spec.numprocs)]

    def start(self) -> None:
        for child in self.children:
            child.start()

    def stop(self) -> None:
        """Ask every child to stop, without waiting (see wait_settled)."""
        for child in self.children:
            child.stop()

    def wait_settled(self, timeout: float) -> bool:
        """Wait until every child is STOPPED, EXITED or FATAL; True if they got there in time."""
        deadline = time.monotonic() + timeout
        return all(child.wait_settled(max(0, deadline - time.monotonic())) for child in self.children)

    def close(self) -> None:
        """End the children's greenlets."""
        for child in self.children:
            child.close()
