"""Unit tests of tempest.supervisor.states: the table of allowed transitions, the guard that
refuses the others (a bug, logged as such, never a user error), and scenarios, driven by the
fake operating system of supervisor_fakes, that show the real Child making every transition of
the table and none outside it.
"""

import logging
import signal

import gevent
import pytest
from supervisor_fakes import (  # noqa: F401  (fixtures, found by pytest among the module's names)
    child_of, exits_after, logs, script, spec, sup, system, transitions, wait_until, written)

from tempest.errors import TempestError
from tempest.supervisor import SETTLED, TRANSITIONS, State, TransitionError, backoff, check_transition, states

pytestmark = pytest.mark.timeout(30)

ALLOWED = {(old, new) for old, targets in TRANSITIONS.items() for new in targets}
STOPPED, STARTING, RUNNING, BACKOFF, STOPPING, EXITED, FATAL = State


# the table


def test_every_state_has_a_row_and_none_leads_to_itself():
    assert set(TRANSITIONS) == set(State)
    assert all(set(targets) <= set(State) for targets in TRANSITIONS.values())
    assert not [old for old, new in ALLOWED if old == new]


def test_every_state_is_reached_from_stopped_and_leads_back_to_a_settled_one():
    def reachable(start, edges):
        seen, todo = {start}, [start]
        while todo:
            for new in edges.get(todo.pop(), ()):
                if new not in seen:
                    seen.add(new)
                    todo.append(new)
        return seen

    assert reachable(STOPPED, TRANSITIONS) == set(State)
    for state in State:
        assert reachable(state, TRANSITIONS) & set(SETTLED), state


def test_a_settled_state_is_left_only_by_a_start():
    assert SETTLED == (STOPPED, EXITED, FATAL)
    for state in SETTLED:
        assert TRANSITIONS[state] == {STARTING}


def test_state_names_are_supervisords():
    assert [s.value for s in State] == ["STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL"]
    assert State.RUNNING == "RUNNING"  # a str Enum: STATUS rows carry the names


# the guard


@pytest.mark.parametrize("old", list(State))
@pytest.mark.parametrize("new", list(State))
def test_the_guard_allows_exactly_the_table(old, new):
    if (old, new) in ALLOWED:
        check_transition("hello:0", old, new)
        return
    with pytest.raises(TransitionError) as raised:
        check_transition("hello:0", old, new)
    assert str(raised.value) == f"hello:0: illegal state transition {old.value} -> {new.value}"
    assert (raised.value.child, raised.value.old, raised.value.new) == ("hello:0", old, new)


def test_an_illegal_transition_is_a_bug_not_a_user_error():
    assert issubclass(TransitionError, AssertionError)
    assert not issubclass(TransitionError, TempestError)


def test_a_child_refuses_an_illegal_transition(sup, transitions):
    sup.add(spec(autostart=False))
    child = child_of(sup)
    with pytest.raises(TransitionError, match=r"^hello:0: illegal state transition STOPPED -> RUNNING$"):
        child._change_state(State.RUNNING)
    assert child.state == STOPPED
    assert [str(e) for e in transitions.refused] == ["hello:0: illegal state transition STOPPED -> RUNNING"]
    transitions.refused.clear()  # expected here


def bugs(logs):
    return [r for r in logs.records if r.levelno == logging.ERROR and r.getMessage().startswith("bug:")]


def test_an_illegal_transition_in_the_childs_greenlet_is_logged_and_the_process_killed(
        sup, system, logs, transitions, monkeypatch):
    monkeypatch.setitem(states.TRANSITIONS, STARTING, TRANSITIONS[STARTING] - {RUNNING})
    sup.add(spec(startsecs=0.01))
    child = child_of(sup)
    wait_until(lambda: bugs(logs))
    (record,) = bugs(logs)
    assert record.getMessage() == "bug: hello:0: its supervision stopped, its process killed"
    assert record.exc_info[0] is TransitionError  # with its traceback
    assert str(record.exc_info[1]) == "hello:0: illegal state transition STARTING -> RUNNING"
    (proc,) = system.procs
    assert [s for s, _ in proc.signals] == [signal.SIGKILL]  # none left running unsupervised
    assert child.state == FATAL and child.wait_settled(0) and not child.wanted
    wait_until(lambda: proc.returncode is not None)
    assert len(system.procs) == 1 and child.state == FATAL
    assert len(transitions.refused) == 1
    transitions.refused.clear()  # expected here


def test_an_illegal_transition_in_stop_is_logged_and_the_process_killed(sup, system, logs, transitions, monkeypatch):
    sup.add(spec(startsecs=0))
    child = child_of(sup)
    wait_until(lambda: child.state == RUNNING)
    monkeypatch.setitem(states.TRANSITIONS, RUNNING, TRANSITIONS[RUNNING] - {STOPPING})
    child.stop()  # does not raise into the caller (a control client, say)
    (record,) = bugs(logs)
    assert str(record.exc_info[1]) == "hello:0: illegal state transition RUNNING -> STOPPING"
    (proc,) = system.procs
    assert [s for s, _ in proc.signals] == [signal.SIGKILL]
    assert child.state == FATAL and child.wait_settled(0)
    wait_until(lambda: proc.returncode is not None)
    gevent.sleep(0.05)
    assert child.state == FATAL and len(system.procs) == 1  # its greenlet ended, nothing else moved
    assert len(transitions.refused) == 1
    transitions.refused.clear()  # expected here


# the real Child makes every transition of the table, and only those


def fast_backoff(monkeypatch, base=0.05):
    monkeypatch.setattr(backoff, "BACKOFF_BASE", base)
    monkeypatch.setattr(backoff, "BACKOFF_CAP", 4 * base)


def started_run_stopped(sup, system, monkeypatch):
    sup.add(spec(startsecs=0.01))
    child = child_of(sup)
    wait_until(lambda: child.state == RUNNING)
    child.stop()
    assert child.wait_settled(1)


def crashes(sup, system, monkeypatch):
    fast_backoff(monkeypatch)
    system.behave = script(exits_after(system, 0.1), exits_after(system, 0.1), None)
    sup.add(spec(startsecs=0.01))
    wait_until(lambda: len(system.procs) == 3 and child_of(sup).state == RUNNING)


def failed_starts_fatal_then_started(sup, system, monkeypatch):
    fast_backoff(monkeypatch)
    system.behave = exits_after(system, 0.005)
    sup.add(spec(startsecs=0.1, startretries=1))
    child = child_of(sup)
    wait_until(lambda: child.state == FATAL)
    system.behave = None
    child.start()
    wait_until(lambda: child.state == RUNNING)


def spawn_errors(sup, system, monkeypatch):
    fast_backoff(monkeypatch)
    system.spawn_error = FileNotFoundError(2, "No such file or directory")
    sup.add(spec(startretries=1))
    wait_until(lambda: child_of(sup).state == FATAL)


def exited_then_started(sup, system, monkeypatch):
    system.behave = script(exits_after(system, 0.1, code=0), None)
    sup.add(spec(startsecs=0.01, autorestart=False))
    child = child_of(sup)
    wait_until(lambda: child.state == EXITED)
    child.start()
    wait_until(lambda: child.state == RUNNING)


def stopped_while_starting(sup, system, monkeypatch):
    sup.add(spec(startsecs=0.3))
    child = child_of(sup)
    wait_until(lambda: child.pid)
    child.stop()
    assert child.wait_settled(1)


def stopped_while_spawning(sup, system, monkeypatch):
    sup.add(spec(startsecs=0.3, autostart=False))
    child = child_of(sup)
    system.behave = lambda proc: child.stop()  # inside System.spawn: the child has no proc yet
    child.start()
    assert child.wait_settled(1)


def stopped_during_backoff(sup, system, monkeypatch):
    fast_backoff(monkeypatch, base=0.4)
    system.behave = exits_after(system, 0.005)
    sup.add(spec(startsecs=0.05))
    child = child_of(sup)
    wait_until(lambda: child.state == BACKOFF)
    child.stop()
    assert child.wait_settled(1)


def exited_as_stopped_while_starting(sup, system, monkeypatch):
    sup.add(spec(startsecs=0.3))
    child = child_of(sup)
    wait_until(lambda: child.pid)
    system.procs[0].exit(1)
    child.stop()  # in the same step: the exit is not reaped yet, there is nothing to signal
    assert child.wait_settled(1)


def exited_as_stopped_while_running(sup, system, monkeypatch):
    sup.add(spec(startsecs=0))
    child = child_of(sup)
    wait_until(lambda: child.state == RUNNING)
    system.procs[0].exit(1)
    child.stop()
    assert child.wait_settled(1)


SCENARIOS = {  # what a scenario does to hello:0, and the states it must go through
    "started, up, stopped": (started_run_stopped, [STOPPED, STARTING, RUNNING, STOPPING, STOPPED]),
    "crashes: restarted at once, then after a delay": (
        crashes, [STOPPED, STARTING, RUNNING, STARTING, RUNNING, BACKOFF, STARTING, RUNNING]),
    "failed starts, FATAL, started again": (
        failed_starts_fatal_then_started, [STOPPED, STARTING, BACKOFF, STARTING, FATAL, STARTING, RUNNING]),
    "spawn errors": (spawn_errors, [STOPPED, STARTING, BACKOFF, STARTING, FATAL]),
    "exited, started again": (exited_then_started, [STOPPED, STARTING, RUNNING, EXITED, STARTING, RUNNING]),
    "stopped while starting": (stopped_while_starting, [STOPPED, STARTING, STOPPING, STOPPED]),
    "stopped while being spawned": (stopped_while_spawning, [STOPPED, STARTING, STOPPING, STOPPED]),
    "stopped during backoff": (stopped_during_backoff, [STOPPED, STARTING, BACKOFF, STOPPED]),
    "exited as it was stopped, starting": (exited_as_stopped_while_starting, [STOPPED, STARTING, STOPPED]),
    "exited as it was stopped, running": (exited_as_stopped_while_running, [STOPPED, STARTING, RUNNING, STOPPED]),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_goes_through_the_expected_states(name, sup, system, transitions, monkeypatch):
    scenario, expected = SCENARIOS[name]
    scenario(sup, system, monkeypatch)
    assert transitions.of("hello:0") == expected
    assert all((old, new) in ALLOWED for _, old, new in transitions.made)  # the guard agreed


def test_the_scenarios_make_every_transition_of_the_table():
    made = {pair for _, expected in SCENARIOS.values() for pair in zip(expected, expected[1:])}
    assert made <= ALLOWED  # else the scenario's own test fails on the guard
    assert made == ALLOWED, f"never made: {sorted((a.value, b.value) for a, b in ALLOWED - made)}"
