"""Exit codes, and the exceptions that several parts of tempest raise or catch; imports
nothing of tempest.

An exception that one module raises for its own callers lives in that module, as a subclass
of ``TempestError``: ``jobs.BadAnswer`` (a worker's answer that cannot become a response),
``events.BadMessage`` (a published message that cannot be relayed) and
``redisconn.ConnectionFailed`` (the lean Redis connection failed).
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    RUNTIME = 1  # a runtime failure: Redis unreachable, a port taken
    USAGE = 2  # a user error: bad INI file, bad command line


class TempestError(Exception):
    """Base class of tempest's own errors."""


class ConfigError(TempestError):
    """A configuration value is wrong; the message names file, section and key."""

    def __init__(self, message: str, path: str | None = None, section: str | None = None,
                 key: str | None = None) -> None:
        self.path, self.section, self.key = path, section, key
        super().__init__(message)

    def __str__(self) -> str:
        where = [str(self.path)] if self.path else []
        if self.section:
            where.append(f"[{self.section}]")
        if self.key:
            where[-1:] = [f"{where[-1]} {self.key}:" if where else f"{self.key}:"]
        elif where:
            where[-1] += ":"
        return " ".join(where + [self.args[0]])


class StartupError(TempestError):
    """tempestd cannot start: a port is taken, Redis does not answer."""

    exit_code = ExitCode.RUNTIME  # tempestd's exit status (a subclass for a user error: USAGE)


class ProtocolError(TempestError):
    """A peer sent something that does not follow the wire protocol."""
