"""The pid file: written at start, refused when a live tempestd holds it, removed at exit."""

from __future__ import annotations

import os

from tempest.errors import StartupError
from tempest.supervisor.process import alive


class Pidfile:
    def __init__(self, path: str) -> None:
        self.path = path
        self.pid: int | None = None

    def create(self, pid: int | None = None) -> None:
        pid = pid or os.getpid()
        other = self.read()
        if other and other != pid and alive(other):
            raise StartupError(f"pid file {self.path}: tempestd already runs with pid {other}")
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        temporary = f"{self.path}.{pid}.tmp"
        with open(temporary, "w") as handle:
            handle.write(f"{pid}\n")
        os.replace(temporary, self.path)
        self.pid = pid

    def read(self) -> int | None:
        try:
            with open(self.path) as handle:
                return int(handle.read().strip() or 0)
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        if self.pid is not None and self.read() == self.pid:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
