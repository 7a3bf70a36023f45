"""The states of a child process and the one table of the transitions allowed between them.

The names are supervisord's (STOPPED STARTING RUNNING BACKOFF STOPPING EXITED FATAL), and so is
the guard: every change of a child's state is checked against ``TRANSITIONS``, as supervisord's
``_assertInState`` checks its own, and a change the table does not allow raises TransitionError.
That is a bug in tempest, never the user's doing. Two differences from supervisord: STARTING is
entered when a spawn is attempted, so a spawn error is a failed start (STARTING -> BACKOFF), and
crashes after RUNNING back off too (RUNNING -> BACKOFF), except the first in a row, which is
restarted at once (RUNNING -> STARTING).
"""

import enum


class State(str, enum.Enum):
    STOPPED = "STOPPED"  # not running, and not wanted: never started, or stopped on request
    STARTING = "STARTING"  # spawned (or being spawned), not yet up for startsecs
    RUNNING = "RUNNING"  # up for startsecs
    BACKOFF = "BACKOFF"  # waiting before the next spawn, after a failed start or a crash
    STOPPING = "STOPPING"  # sent its stopsignal, waiting for it to exit
    EXITED = "EXITED"  # exited from RUNNING and not to be restarted (autorestart, exitcodes)
    FATAL = "FATAL"  # given up after startretries failed starts in a row


# the states a child rests in until start() is called
SETTLED = (State.STOPPED, State.EXITED, State.FATAL)

# from state: the states it may change to
TRANSITIONS: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({
        State.STARTING,  # start()
    }),
    State.STARTING: frozenset({
        State.RUNNING,  # up for startsecs
        State.BACKOFF,  # exited before startsecs, or could not be spawned
        State.FATAL,  # the same, startretries times in a row
        State.STOPPING,  # stop(): stopsignal sent
        State.STOPPED,  # stop() after it had already exited or failed to spawn
    }),
    State.RUNNING: frozenset({
        State.STOPPING,  # stop(): stopsignal sent
        State.EXITED,  # exited, not to be restarted
        State.BACKOFF,  # crashed again, restarted after a delay
        State.STARTING,  # crashed for the first time in a row: restarted at once
        State.STOPPED,  # stop() after it had already exited
    }),
    State.BACKOFF: frozenset({
        State.STARTING,  # the delay is over, or start() cut it short
        State.STOPPED,  # stop() during the delay
    }),
    State.STOPPING: frozenset({
        State.STOPPED,  # exited (after stopsignal, or SIGKILL after stopwaitsecs)
    }),
    State.EXITED: frozenset({
        State.STARTING,  # start()
    }),
    State.FATAL: frozenset({
        State.STARTING,  # start()
    }),
}


class TransitionError(AssertionError):
    """A child was to change state in a way TRANSITIONS does not allow: a bug in tempest."""

    def __init__(self, child: str, old: State, new: State) -> None:
        super().__init__(f"{child}: illegal state transition {old.value} -> {new.value}")
        self.child, self.old, self.new = child, old, new


def check_transition(name: str, old: State, new: State) -> None:
    """Raise TransitionError unless the child ``name`` may change from ``old`` to ``new``."""
    if new not in TRANSITIONS[old]:
        raise TransitionError(name, old, new)
