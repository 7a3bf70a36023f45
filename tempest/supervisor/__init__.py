"""Process angels: tempestd starts, watches and restarts the processes of [worker:NAME].

Supervisor > Program (one [worker:NAME] section) > Child (one process), as circus' Arbiter >
Watcher > Process. The modules, each named for what it owns: ``states`` (the State enum and the
one table of allowed transitions), ``child`` (a process and the greenlet that walks those
states), ``program``, ``supervisor``, ``backoff`` (the restart delays), ``output`` (draining
the children's pipes into log lines or rotating files) and ``process`` (``System``, through which
all operating-system access goes so that the unit tests can replace it, and the OS helpers).
"""

from tempest.supervisor.backoff import backoff_delay  # its tunables: tempest.supervisor.backoff
from tempest.supervisor.child import Child
from tempest.supervisor.process import System, alive, describe, die_with_parent
from tempest.supervisor.program import Program
from tempest.supervisor.states import SETTLED, TRANSITIONS, State, TransitionError, check_transition
from tempest.supervisor.supervisor import Supervisor

__all__ = [
    "SETTLED", "TRANSITIONS", "Child", "Program", "State", "Supervisor", "System", "TransitionError",
    "alive", "backoff_delay", "check_transition", "describe", "die_with_parent",
]
