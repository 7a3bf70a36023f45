"""Log files that logrotate can move: reopened on SIGUSR1 (tempestd's own log, the access log,
the workers' output files), as nginx and gunicorn do. logrotate renames the file, then sends
SIGUSR1; until the signal, lines go to the renamed file, so none is lost."""

from __future__ import annotations

import logging


class ReopeningFileHandler(logging.FileHandler):
    """A FileHandler whose file can be opened again under its name."""

    def reopen(self) -> None:
        self.acquire()
        try:
            new = self._open()  # an error leaves the old stream in use
            old, self.stream = self.stream, new
            if old is not None:
                old.close()
        finally:
            self.release()


def reopen_handlers(logger: logging.Logger | None = None) -> int:
    """Reopen the files of the root logger's handlers (or ``logger``'s); how many."""
    count = 0
    for handler in (logger or logging.getLogger()).handlers:
        if isinstance(handler, ReopeningFileHandler):
            handler.reopen()
            count += 1
    return count
