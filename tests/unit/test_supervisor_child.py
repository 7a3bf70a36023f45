"""Unit tests of tempest.supervisor's Child: the states it walks (STARTING, RUNNING, BACKOFF,
FATAL, EXITED, STOPPING, STOPPED), its restarts and their backoff, driven by the fake operating
system of supervisor_fakes so that nothing forks. The real System is exercised end to end in
tests/e2e/test_angels.py.
"""

import signal
import time

import gevent
import pytest
from supervisor_fakes import (  # noqa: F401  (fixtures, found by pytest among the module's names)
    JITTER, _kill_watchers, assert_jittered, backoffs, child_of, exits_after, fast_backoff, gaps, logs, messages,
    script, spec, sup, system, transitions, wait_until, watch_states, written)

from tempest.supervisor import State, backoff, backoff_delay, describe
from tempest.supervisor.backoff import BACKOFF_CAP, STABLE_SECS

pytestmark = pytest.mark.timeout(30)


# STOPPED -> STARTING -> RUNNING


def test_starting_then_running_after_startsecs(sup, system, logs):
    sup.add(spec(startsecs=0.2))
    child = child_of(sup)
    states = watch_states(child)
    proc = wait_until(lambda: system.procs and system.procs[0])
    assert child.state == State.STARTING
    assert child.pid == proc.pid == child.status()["pid"]
    gevent.sleep(0.1)
    assert child.state == State.STARTING  # not before startsecs
    wait_until(lambda: child.state == State.RUNNING)
    assert time.monotonic() - proc.spawned_at >= 0.2 - 0.01
    assert states() == [State.STOPPED, State.STARTING, State.RUNNING]
    assert messages(logs, "spawned:") == [f"spawned: hello:0 pid={proc.pid}"]
    assert messages(logs, "success:") == ["success: hello:0 entered RUNNING state (up 0.2s)"]
    assert len(system.procs) == 1 and not proc.signals


def test_startsecs_zero_is_running_at_once(sup, system):
    sup.add(spec(startsecs=0))
    child = child_of(sup)
    wait_until(lambda: system.procs)
    assert child.state == State.RUNNING  # in the same step as the spawn, no wait


def test_autostart_false_stays_stopped_until_started(sup, system):
    sup.add(spec(autostart=False))
    child = child_of(sup)
    gevent.sleep(0.05)
    assert child.state == State.STOPPED and not system.attempts
    assert child.wait_settled(0)
    sup.start("hello")
    wait_until(lambda: child.state == State.RUNNING)
    assert len(system.procs) == 1


def test_wait_spawned_returns_once_every_wanted_child_was_spawned(sup, system):
    sup.add(spec(numprocs=3, startsecs=1))
    sup.add(spec("idle", autostart=False))
    assert sup.wait_spawned(2)
    assert len(system.procs) == 3
    assert {c.state for c in sup.programs["hello"].children} == {State.STARTING}


def test_a_spawn_under_way_is_starting_and_still_pending(sup, system):
    seen = []
    system.behave = lambda proc: seen.append((child.state, child.pid, child.spawn_pending()))
    sup.add(spec(startsecs=1))
    child = child_of(sup)
    assert child.spawn_pending()  # wanted, not spawned yet
    assert sup.wait_spawned(2)
    assert seen == [(State.STARTING, None, True)]  # STARTING as the spawn is attempted, no pid yet
    assert not child.spawn_pending() and child.pid == system.procs[0].pid


def test_stop_while_being_spawned_stops_the_new_process(sup, system, logs):
    # System.spawn yields to other greenlets (gevent's Popen waits for the exec): a stop() then
    # finds no process to signal, and the one spawned must not be left running unwanted
    sup.add(spec(startsecs=0, autostart=False))
    child = child_of(sup)
    system.behave = lambda proc: child.stop()
    child.start()
    assert child.wait_settled(1)
    (proc,) = system.procs
    assert [s for s, _ in proc.signals] == [signal.SIGTERM] and proc.returncode == -signal.SIGTERM
    assert child.state == State.STOPPED and not messages(logs, "success:")
    assert messages(logs, "stopped:") == ["stopped: hello:0 (terminated by SIGTERM)"]


# failed starts: BACKOFF, then FATAL


@pytest.mark.parametrize("startretries", [0, 1, 3])
def test_exit_before_startsecs_backs_off_then_fatal(sup, system, logs, fast_backoff, startretries):
    system.behave = exits_after(system, 0.02, code=1)
    sup.add(spec(startsecs=0.1, startretries=startretries))
    child = child_of(sup)
    states = watch_states(child)
    wait_until(lambda: child.state == State.FATAL)
    assert len(system.procs) == startretries + 1
    assert child.wait_settled(0)
    assert child.last_exit == "exit status 1" and child.pid is None
    # a failed start waits even the first time, and longer each time
    assert [f for _, f in backoffs(logs)] == list(range(1, startretries + 1))
    for n, (delay, _) in enumerate(backoffs(logs)):
        assert_jittered(delay, 0.05 * 2 ** n)
    for gap, (delay, _) in zip(gaps(system.procs), backoffs(logs)):
        assert gap >= delay - 0.005  # the delay was really waited
    if startretries:
        assert states()[:4] == [State.STOPPED, State.STARTING, State.BACKOFF, State.STARTING]
    assert messages(logs, "gave up:") == ["gave up: hello:0 entered FATAL state, too many start retries too quickly"]
    assert len(messages(logs, "exited: hello:0 (exit status 1; not expected)")) == startretries + 1
    gevent.sleep(0.3)  # longer than any backoff: nothing more happens
    assert len(system.procs) == startretries + 1 and child.state == State.FATAL
    assert states()[-1] == State.FATAL


def test_start_on_fatal_spawns_again_with_a_fresh_count(sup, system, logs, fast_backoff):
    system.behave = exits_after(system, 0.005, code=1)
    sup.add(spec(startsecs=0.1, startretries=1))
    child = child_of(sup)
    wait_until(lambda: child.state == State.FATAL)
    assert len(system.procs) == 2
    system.behave = None  # the cause went away
    sup.start("hello:0")
    assert not child.wait_settled(0)
    wait_until(lambda: child.state == State.RUNNING)
    assert len(system.procs) == 3
    child.stop()
    assert child.wait_settled(1)
    system.behave = exits_after(system, 0.005, code=1)
    child.start()
    wait_until(lambda: child.state == State.FATAL)
    assert len(system.procs) == 5  # startretries + 1 again: failures were reset by start()


def test_spawn_oserror_is_a_failed_start_and_leads_to_fatal(sup, system, logs, fast_backoff):
    system.spawn_error = FileNotFoundError(2, "No such file or directory")
    sup.add(spec(command=("nothere", "x"), startretries=2))
    child = child_of(sup)
    wait_until(lambda: child.state == State.FATAL)
    assert system.attempts == [["nothere", "x"]] * 3 and not system.procs
    assert child.last_exit == "could not be spawned"
    assert messages(logs, "spawnerr:") == ["spawnerr: hello:0: cannot run nothere: No such file or directory"] * 3
    assert [f for _, f in backoffs(logs)] == [1, 2]
    row = child.status()
    assert (row["state"], row["pid"], row["uptime"], row["last_exit"]) == ("FATAL", 0, 0, "could not be spawned")
    assert child.wait_settled(0)
    gevent.sleep(0.3)
    assert len(system.attempts) == 3
    system.spawn_error = None  # installed meanwhile
    child.start()
    wait_until(lambda: child.state == State.RUNNING)


def test_spawn_error_then_success_goes_on_normally(sup, system, fast_backoff):
    system.spawn_error = PermissionError(13, "Permission denied")
    sup.add(spec(startretries=3))
    child = child_of(sup)
    wait_until(lambda: child.state == State.BACKOFF)
    system.spawn_error = None
    wait_until(lambda: child.state == State.RUNNING)
    assert len(system.attempts) == 2 and len(system.procs) == 1


def test_a_failed_start_after_crashes_still_gets_startretries(sup, system, logs, fast_backoff):
    # startretries is documented as "Failed starts in a row before it is given up (FATAL)". Here the
    # process crashes three times after RUNNING (say Redis went away), then one start fails: with
    # startretries=3 it deserves three more attempts, but the shared failure count is already 4.
    crash = lambda proc: system.later(0.08, proc.exit, 1)  # noqa: E731  after RUNNING (startsecs 0.03)
    fail = lambda proc: system.later(0.005, proc.exit, 1)  # noqa: E731  before startsecs
    system.behave = script(crash, crash, crash, fail, fail, None)
    sup.add(spec(startsecs=0.03, startretries=3))
    child = child_of(sup)
    wait_until(lambda: len(system.procs) >= 6 or child.state == State.FATAL, timeout=5)
    assert len(system.procs) == 6 and child.state != State.FATAL


# crashes after RUNNING


def test_crash_after_running_restarts_at_once_then_backs_off_capped(sup, system, logs, fast_backoff):
    system.behave = script(*[exits_after(system, 0.03, code=3)] * 6, None)
    sup.add(spec(startsecs=0.01))
    child = child_of(sup)
    wait_until(lambda: len(system.procs) == 7 and child.state == State.RUNNING, timeout=5)
    first_gap, *other_gaps = gaps(system.procs)
    assert first_gap < 0.8 * 0.05  # the first crash is restarted at once, no backoff
    # crash n (n >= 2) waits BASE * 2**(n-2), capped: .05 .1 .2 .2 .2
    nominal = [0.05, 0.1, 0.2, 0.2, 0.2]
    assert [f for _, f in backoffs(logs)] == [2, 3, 4, 5, 6]
    for (delay, _), expected in zip(backoffs(logs), nominal):
        assert_jittered(delay, expected)
    for gap, (delay, _) in zip(other_gaps, backoffs(logs)):
        assert gap >= delay - 0.005
    assert max(d for d, _ in backoffs(logs)) <= 0.2 * JITTER[1]
    assert child.restarts == 6 and child.status()["restarts"] == 6
    assert child.last_exit == "exit status 3"
    assert len(messages(logs, "exited: hello:0 (exit status 3; not expected)")) == 6


@pytest.mark.parametrize("up_for, logged", [
    (STABLE_SECS, [2, 2]),  # stayed up STABLE_SECS: its crash counts as the first again
    (STABLE_SECS - 1, [2, 3, 4]),  # not quite: the count goes on
])
def test_failures_reset_after_the_process_stayed_up_stable_secs(sup, system, logs, fast_backoff, up_for, logged):
    # each process reaches RUNNING (startsecs 0.01) well before it crashes (0.25), even on a
    # loaded machine: a crash before RUNNING would count as a failed start instead
    def crash(proc):
        system.later(0.25, proc.exit, 1)

    def crash_after_a_long_life(proc):
        def later():
            system.advance(up_for)  # the fake clock says the process lived that long
            proc.exit(1)

        system.later(0.25, later)

    system.behave = script(crash, crash, crash_after_a_long_life, crash, None)
    sup.add(spec(startsecs=0.01))
    child = child_of(sup)
    wait_until(lambda: len(system.procs) == 5 and child.state == State.RUNNING, timeout=5)
    assert [f for _, f in backoffs(logs)] == logged


def test_a_stable_run_forgets_earlier_failed_starts(sup, system, logs, fast_backoff):
    # two failed starts, then a run of STABLE_SECS, then a crash: restarted at once
    fail = lambda proc: system.later(0.005, proc.exit, 1)  # noqa: E731

    def long_life(proc):
        def later():
            system.advance(STABLE_SECS)
            proc.exit(1)

        system.later(0.05, later)

    system.behave = script(fail, fail, long_life, None)
    sup.add(spec(startsecs=0.02, startretries=3))
    child = child_of(sup)
    wait_until(lambda: len(system.procs) == 4 and child.state == State.RUNNING, timeout=5)
    assert [f for _, f in backoffs(logs)] == [1, 2]
    assert gaps(system.procs)[-1] < 0.04


# autorestart and exitcodes


@pytest.mark.parametrize("autorestart, exitcodes, code, restarted", [
    (True, {0}, 0, True),
    (True, {0}, 1, True),
    (True, {0}, -9, True),
    (False, {0}, 1, False),
    (False, {0}, 0, False),
    ("unexpected", {0}, 0, False),
    ("unexpected", {0}, 2, True),
    ("unexpected", {0, 2}, 2, False),
    ("unexpected", {0}, -15, True),
])
def test_autorestart_and_exitcodes(sup, system, logs, autorestart, exitcodes, code, restarted):
    system.behave = script(exits_after(system, 0.05, code), None)
    sup.add(spec(startsecs=0.01, autorestart=autorestart, exitcodes=frozenset(exitcodes)))
    child = child_of(sup)
    expected = code in exitcodes
    if restarted:
        wait_until(lambda: len(system.procs) == 2 and child.state == State.RUNNING)
        assert child.restarts == 1
        assert not child.wait_settled(0)
    else:
        wait_until(lambda: child.state == State.EXITED)
        assert child.wait_settled(0) and not child.wanted
        gevent.sleep(0.1)
        assert len(system.procs) == 1 and child.state == State.EXITED and child.restarts == 0
    assert child.last_exit == describe(code)
    assert messages(logs, "exited:") == [
        f"exited: hello:0 ({describe(code)}; {'expected' if expected else 'not expected'})"]


def test_start_after_exited_spawns_again(sup, system):
    system.behave = script(exits_after(system, 0.03, 0), None)
    sup.add(spec(startsecs=0.01, autorestart=False))
    child = child_of(sup)
    wait_until(lambda: child.state == State.EXITED)
    sup.start("hello")
    wait_until(lambda: child.state == State.RUNNING)
    assert len(system.procs) == 2


# stop


def test_stop_sends_stopsignal_then_stopping_then_stopped(sup, system, logs):
    sup.add(spec(startsecs=0, stopsignal=signal.SIGINT))
    child = child_of(sup)
    wait_until(lambda: child.state == State.RUNNING)
    (proc,) = system.procs
    child.stop()
    assert child.state == State.STOPPING  # at once, before the process is gone
    assert [sig for sig, _ in proc.signals] == [signal.SIGINT]
    assert child.wait_settled(1)
    assert child.state == State.STOPPED
    assert child.last_exit == "terminated by SIGINT"
    assert messages(logs, "stopped:") == ["stopped: hello:0 (terminated by SIGINT)"]
    assert not messages(logs, "exited:")  # a stop asked for is not an exit
    gevent.sleep(0.1)
    assert len(system.procs) == 1 and [sig for sig, _ in proc.signals] == [signal.SIGINT]
    assert child.status()["pid"] == 0 and child.status()["uptime"] == 0


def test_supervisor_stop_waits_until_stopped(sup, system):
    sup.add(spec(numprocs=2, startsecs=0))
    sup.add(spec("other", startsecs=0))
    wait_until(lambda: len(system.procs) == 3)
    assert sup.stop("hello") is True
    assert [c.state for c in sup.programs["hello"].children] == [State.STOPPED] * 2
    assert child_of(sup, "other:0").state == State.RUNNING


def test_a_process_ignoring_stopsignal_gets_sigkill_after_stopwaitsecs(sup, system, logs):
    system.behave = lambda proc: proc.ignore.add(signal.SIGTERM)
    sup.add(spec(startsecs=0, stopwaitsecs=0.2))
    child = child_of(sup)
    wait_until(lambda: child.state == State.RUNNING)
    (proc,) = system.procs
    child.stop()
    stopped_at = time.monotonic()
    gevent.sleep(0.1)
    assert child.state == State.STOPPING and [s for s, _ in proc.signals] == [signal.SIGTERM]
    assert child.wait_settled(1)
    assert [s for s, _ in proc.signals] == [signal.SIGTERM, signal.SIGKILL]
    assert proc.signals[1][1] - stopped_at >= 0.2 - 0.01
    assert child.state == State.STOPPED and child.last_exit == "terminated by SIGKILL"
    assert messages(logs, "killing:") == [f"killing: hello:0 pid={proc.pid} still running 0.2s after SIGTERM: SIGKILL"]


def test_no_sigkill_when_the_process_stops_in_time(sup, system):
    sup.add(spec(startsecs=0, stopwaitsecs=0.1))
    child = child_of(sup)
    wait_until(lambda: child.state == State.RUNNING)
    child.stop()
    assert child.wait_settled(1)
    gevent.sleep(0.2)
    assert [s for s, _ in system.procs[0].signals] == [signal.SIGTERM]


def test_stop_during_backoff_goes_to_stopped_without_spawning(sup, system, logs, monkeypatch):
    monkeypatch.setattr(backoff, "BACKOFF_BASE", 0.4)
    system.behave = exits_after(system, 0.005, 1)
    sup.add(spec(startsecs=0.05))
    child = child_of(sup)
    wait_until(lambda: child.state == State.BACKOFF)
    child.stop()
    assert child.wait_settled(0.2)  # well before the backoff delay is over
    assert child.state == State.STOPPED
    gevent.sleep(0.6)
    assert len(system.procs) == 1 and child.state == State.STOPPED
    assert not system.procs[0].signals  # it was already dead: nothing to signal
    assert messages(logs, "stopped:") == ["stopped: hello:0"]


def test_stop_during_starting_never_reaches_running(sup, system, logs):
    sup.add(spec(startsecs=0.3))
    child = child_of(sup)
    wait_until(lambda: child.state == State.STARTING)
    child.stop()
    assert child.state == State.STOPPING
    assert child.wait_settled(1) and child.state == State.STOPPED
    gevent.sleep(0.4)
    assert child.state == State.STOPPED and not messages(logs, "success:") and len(system.procs) == 1


def test_stop_of_a_stopped_child_settles_at_once(sup, system):
    sup.add(spec(autostart=False))
    assert sup.stop("hello", timeout=0.5) is True
    assert not system.attempts


def test_start_then_stop_before_the_spawn_spawns_nothing(sup, system):
    sup.add(spec(autostart=False))
    child = child_of(sup)
    child.start()
    child.stop()  # the child's greenlet has not run yet
    assert child.wait_settled(1)
    gevent.sleep(0.05)
    assert not system.attempts and child.state == State.STOPPED


def test_start_while_stopping_runs_the_process_again(sup, system, logs):
    system.behave = lambda proc: proc.ignore.add(signal.SIGTERM)  # takes stopwaitsecs to stop
    sup.add(spec(startsecs=0, stopwaitsecs=0.1, autorestart=False))
    child = child_of(sup)
    wait_until(lambda: child.state == State.RUNNING)
    child.stop()
    child.start()  # e.g. a second control client, or restart() after its grace ran out
    wait_until(lambda: child.state in (State.RUNNING, State.EXITED, State.FATAL) and system.procs[0].returncode,
               message="the old process gone and the child settled or running")
    gevent.sleep(0.05)
    assert child.state == State.RUNNING and len(system.procs) == 2
    assert not messages(logs, "exited:")  # a stop asked for is not an unexpected exit


def test_restart_stops_then_starts_a_new_process(sup, system):
    sup.add(spec(startsecs=0))
    child = child_of(sup)
    wait_until(lambda: child.state == State.RUNNING)
    old = system.procs[0]
    sup.restart("hello:0")
    wait_until(lambda: len(system.procs) == 2 and child.state == State.RUNNING)
    assert old.returncode == -signal.SIGTERM and child.pid == system.procs[1].pid


# backoff_delay and describe


def test_backoff_delay_is_zero_for_the_first_retry():
    assert backoff_delay(0) == backoff_delay(1) == 0.0


def test_backoff_delay_doubles_and_is_capped():
    plain = [backoff_delay(n, rand=lambda a, b: 1.0) for n in range(2, 12)]
    base = backoff.BACKOFF_BASE
    expected = [min(BACKOFF_CAP, base * 2 ** k) for k in range(10)]
    assert plain == pytest.approx(expected)
    assert plain[0] == base and plain[1] == 2 * base and plain[2] == 4 * base
    assert plain[-1] == BACKOFF_CAP
    assert backoff_delay(60, rand=lambda a, b: 1.0) == BACKOFF_CAP


def test_backoff_delay_follows_the_monkeypatched_tunables(monkeypatch):
    monkeypatch.setattr(backoff, "BACKOFF_BASE", 0.01)
    monkeypatch.setattr(backoff, "BACKOFF_CAP", 0.05)
    assert [backoff_delay(n, rand=lambda a, b: 1.0) for n in range(2, 7)] == pytest.approx(
        [0.01, 0.02, 0.04, 0.05, 0.05])


def test_backoff_delay_jitter_is_within_20_percent():
    asked = []

    def rand(low, high):
        asked.append((low, high))
        return high

    assert backoff_delay(3, rand=rand) == pytest.approx(2 * backoff.BACKOFF_BASE * 1.2)
    assert asked == [(0.8, 1.2)]
    for failures in (2, 4, 30):
        nominal = backoff_delay(failures, rand=lambda a, b: 1.0)
        samples = [backoff_delay(failures) for _ in range(300)]
        assert all(0.8 * nominal <= s <= 1.2 * nominal for s in samples)
        assert max(samples) - min(samples) > 0.2 * nominal  # really random, not a constant factor


def test_backoff_delay_does_not_overflow_after_many_failures():
    assert backoff_delay(1100, rand=lambda a, b: 1.0) == BACKOFF_CAP


def test_a_crash_loop_goes_on_forever(sup, system, monkeypatch):
    monkeypatch.setattr(backoff, "BACKOFF_BASE", 1e-6)
    monkeypatch.setattr(backoff, "BACKOFF_CAP", 1e-6)
    system.behave = lambda proc: proc.exit(1)  # crashes as soon as it is RUNNING
    sup.add(spec(startsecs=0))
    last, changed = 0, time.monotonic()
    while len(system.procs) <= 1100 and time.monotonic() - changed < 0.5:
        gevent.sleep(0.01)
        if len(system.procs) != last:
            last, changed = len(system.procs), time.monotonic()
    assert len(system.procs) > 1100  # the bug: it stops at 1026


@pytest.mark.parametrize("returncode, text", [
    (None, "could not be spawned"),
    (0, "exit status 0"),
    (1, "exit status 1"),
    (255, "exit status 255"),
    (-signal.SIGKILL, "terminated by SIGKILL"),
    (-signal.SIGTERM, "terminated by SIGTERM"),
    (-signal.SIGSEGV, "terminated by SIGSEGV"),
    (-200, "terminated by signal 200"),
])
def test_describe(returncode, text):
    assert describe(returncode) == text

