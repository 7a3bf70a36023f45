"""Unit tests of tempest.supervisor's Supervisor and Program: targets, status, reload, what each
child is given, and the default sinks (log lines or rotating files). Driven by the fake
operating system of supervisor_fakes so that nothing forks.
"""

import logging
import signal

import gevent
import pytest
from supervisor_fakes import (  # noqa: F401  (fixtures, found by pytest among the module's names)
    Recording, _kill_watchers, child_of, spec, sup, system, transitions, wait_until, written)

from tempest.supervisor import State, backoff
from tempest.supervisor.output import RotatingFile

pytestmark = pytest.mark.timeout(30)


# Supervisor: targets, status, reload


def test_children_targets(sup):
    sup.add(spec("a", numprocs=2, autostart=False))
    sup.add(spec("b", autostart=False))
    names = lambda target: [c.name for c in sup.children(target)]  # noqa: E731
    assert names(None) == names("all") == ["a:0", "a:1", "b:0"]
    assert names("a") == ["a:0", "a:1"]
    assert names("a:1") == ["a:1"]
    assert names("b:0") == ["b:0"]
    for unknown in ("c", "c:0", "a:2", "a:x", "a:-1", "A", ""):
        with pytest.raises(KeyError):
            sup.children(unknown)


def test_start_and_stop_by_target(sup, system):
    sup.add(spec("a", numprocs=2, startsecs=0))
    wait_until(lambda: len(system.procs) == 2)
    sup.stop("a:1")
    assert [c.state for c in sup.children("a")] == [State.RUNNING, State.STOPPED]
    sup.start("a:1")
    wait_until(lambda: child_of(sup, "a:1").state == State.RUNNING)
    assert len(system.procs) == 3
    with pytest.raises(KeyError):
        sup.start("nope")


def test_status_rows(sup, system):
    def behave(proc):  # hello:0 crashes once, after RUNNING
        if proc.env["TEMPEST_WORKER"] == "hello:0" and not any(
                p.env["TEMPEST_WORKER"] == "hello:0" for p in system.procs[:-1]):
            system.later(0.03, proc.exit, 4)

    system.behave = behave
    sup.add(spec(numprocs=2, startsecs=0.01))
    sup.add(spec("idle", autostart=False))
    wait_until(lambda: len(system.procs) == 3 and all(c.state == State.RUNNING for c in sup.children("hello")))
    system.advance(42)
    rows = sup.status()
    assert [r["name"] for r in rows] == ["hello:0", "hello:1", "idle:0"]
    for row in rows:
        assert set(row) == {"name", "state", "pid", "uptime", "restarts", "last_exit"}
    by_name = {r["name"]: r for r in rows}
    pids = {c.name: c.pid for c in sup.children("hello")}
    assert by_name["hello:0"] == {"name": "hello:0", "state": "RUNNING", "pid": pids["hello:0"], "uptime": 42,
                                  "restarts": 1, "last_exit": "exit status 4"}
    assert by_name["hello:1"] == {"name": "hello:1", "state": "RUNNING", "pid": pids["hello:1"], "uptime": 42,
                                  "restarts": 0, "last_exit": ""}
    assert by_name["idle:0"] == {"name": "idle:0", "state": "STOPPED", "pid": 0, "uptime": 0,
                                 "restarts": 0, "last_exit": ""}


def test_reload_adds_removes_changes_and_leaves_the_rest(sup, system):
    for name in ("same", "changed", "gone"):
        sup.add(spec(name, startsecs=0))
    wait_until(lambda: len(system.procs) == 3)
    same = sup.programs["same"]
    same_child, same_proc = same.children[0], same.children[0].proc
    old_changed, old_gone = child_of(sup, "changed:0").proc, child_of(sup, "gone:0").proc
    result = sup.reload([spec("same", startsecs=0), spec("changed", startsecs=0, numprocs=2),
                         spec("new", startsecs=0)])
    assert result == (["new"], ["gone"], ["changed"])
    assert set(sup.programs) == {"same", "changed", "new"}
    # unchanged: the same Program, Child and process, never signalled
    assert sup.programs["same"] is same and same.children[0] is same_child
    assert same_child.proc is same_proc and not same_proc.signals and same_child.state == State.RUNNING
    # changed and removed: stopped
    assert [s for s, _ in old_changed.signals] == [signal.SIGTERM] and old_changed.returncode is not None
    assert [s for s, _ in old_gone.signals] == [signal.SIGTERM] and old_gone.returncode is not None
    # changed and added: started with the new spec
    wait_until(lambda: all(c.state == State.RUNNING for c in sup.children("changed") + sup.children("new")))
    assert [c.name for c in sup.children("changed")] == ["changed:0", "changed:1"]
    assert len(system.procs) == 3 + 2 + 1
    with pytest.raises(KeyError):
        sup.children("gone")


def test_reload_leaves_kept_programs_alone(sup, system):
    sup.add(spec("redis", startsecs=0))
    sup.add(spec("worker", startsecs=0))
    wait_until(lambda: len(system.procs) == 2)
    redis_child = child_of(sup, "redis:0")
    redis_proc = redis_child.proc
    assert sup.reload([spec("worker", startsecs=0)], keep=("redis",)) == ([], [], [])
    assert sup.programs["redis"].children[0] is redis_child and redis_child.proc is redis_proc
    assert not redis_proc.signals and redis_child.state == State.RUNNING
    assert sup.reload([], keep=("redis",)) == ([], ["worker"], [])
    assert set(sup.programs) == {"redis"} and not redis_proc.signals


def test_reload_does_not_touch_a_kept_program_even_if_specs_name_it(sup, system):
    # tempest.daemon passes keep=('redis',) on every reload, also when [redis] embedded = no, and then
    # a [worker:redis] section is allowed
    sup.add(spec("redis", startsecs=0))
    wait_until(lambda: len(system.procs) == 1)
    old = child_of(sup, "redis:0").proc
    sup.reload([spec("redis", startsecs=0)], keep=("redis",))
    gevent.sleep(0.05)
    running = [p for p in system.procs if p.returncode is None]
    assert running == [old]  # the bug: two processes run, the old one no longer supervised
    assert child_of(sup, "redis:0").proc is old


# what each child is given


def test_each_child_gets_its_name_and_expanded_argv(sup, system):
    sup.add(spec("thumbs", numprocs=3, startsecs=0, environment=(("EXTRA", "a b"),), user="nobody"))
    wait_until(lambda: len(system.procs) == 3)
    by_worker = {p.env["TEMPEST_WORKER"]: p for p in system.procs}
    assert set(by_worker) == {"thumbs:0", "thumbs:1", "thumbs:2"}
    for index in range(3):
        proc = by_worker[f"thumbs:{index}"]
        assert proc.argv == ["worker", f"--index={index}", "thumbs"]
        assert proc.env == {"BASE": "1", "EXTRA": "a b", "TEMPEST_WORKER": f"thumbs:{index}"}
        assert proc.cwd == "/srv/app" and proc.user == "nobody"


def test_environment_naming_tempest_worker_does_not_crash(sup, system):
    sup.add(spec(startsecs=0, environment=(("TEMPEST_WORKER", "mine"),)))
    wait_until(lambda: system.procs)
    assert system.procs[0].env["TEMPEST_WORKER"] == "hello:0"


def test_output_reaches_the_sinks_made_for_that_child(sup, system, written):
    system.output = (b"to stdout\n", b"to stderr\n")
    sup.add(spec(numprocs=2, startsecs=0))
    wait_until(lambda: len(written) == 4)
    assert written == {("hello:0", "stdout"): b"to stdout\n", ("hello:0", "stderr"): b"to stderr\n",
                       ("hello:1", "stdout"): b"to stdout\n", ("hello:1", "stderr"): b"to stderr\n"}


def test_default_sinks_files_per_process_and_shared(tmp_path, system):
    system.output = (b"out\n", b"err\n")
    sup = Recording(env={}, system=system)
    try:
        sup.add(spec(numprocs=2, startsecs=0, stdout_logfile=str(tmp_path / "%(program_name)s-%(process_num)d.log"),
                     stderr_logfile=str(tmp_path / "errors.log")))
        paths = [tmp_path / "hello-0.log", tmp_path / "hello-1.log"]
        wait_until(lambda: all(p.exists() and p.read_bytes() == b"out\n" for p in paths)
                   and (tmp_path / "errors.log").exists() and (tmp_path / "errors.log").read_bytes() == b"err\n" * 2)
        assert len(sup._files) == 3  # one RotatingFile per path, shared by the children writing to it
        assert all(isinstance(f, RotatingFile) for f in sup._files.values())
    finally:
        for program in sup.made:
            program.close()
        for rotating in sup._files.values():
            rotating.close()


def test_a_log_file_that_cannot_be_opened_is_a_failed_start(tmp_path, system, monkeypatch):
    monkeypatch.setattr(backoff, "BACKOFF_BASE", 0.01)
    (tmp_path / "file").write_text("not a directory")
    sup = Recording(env={}, system=system)
    try:
        sup.add(spec(startsecs=0, startretries=1, stdout_logfile=str(tmp_path / "file" / "out.log")))
        child = child_of(sup)
        wait_until(lambda: child.state == State.FATAL, timeout=1, message="FATAL")
        assert all(proc.returncode is not None for proc in system.procs)  # none left unsupervised
    finally:
        for program in sup.made:
            program.close()


def test_reload_applies_new_logfile_settings(tmp_path, system):
    system.output = (b"0123456789abcdef\n", b"")
    path = tmp_path / "out.log"
    sup = Recording(env={}, system=system)
    try:
        sup.add(spec(startsecs=0, stdout_logfile=str(path), logfile_maxbytes=1024 * 1024))
        wait_until(lambda: path.exists() and path.stat().st_size == 17)
        sup.reload([spec(startsecs=0, stdout_logfile=str(path), logfile_maxbytes=20, logfile_backups=1)])
        wait_until(lambda: len(system.procs) == 2)
        gevent.sleep(0.05)  # the new process' output is drained
        assert (tmp_path / "out.log.1").exists()  # 17 + 17 bytes > 20: rotated
    finally:
        for program in sup.made:
            program.close()
        for rotating in sup._files.values():
            rotating.close()


def test_default_sinks_without_logfile_log_lines(system, caplog):
    caplog.set_level(logging.INFO, logger="tempest.child")
    system.output = (b"hello\npartial", b"")
    sup = Recording(env={}, system=system)
    try:
        sup.add(spec(startsecs=0))
        wait_until(lambda: len([r for r in caplog.records if r.name == "tempest.child"]) == 2)
        assert [r.getMessage() for r in caplog.records if r.name == "tempest.child"] == [
            "[hello:0] hello", "[hello:0] partial"]
        assert not sup._files  # no RotatingFile without a logfile
    finally:
        for program in sup.made:
            program.close()
