"""The control CLI's status table (tempest/control_client.py), without a tempestd."""

from tempest.control_client import format_status


def row(name, state, pid, uptime):
    return {"name": name, "state": state, "pid": pid, "uptime": uptime, "restarts": 0, "last_exit": ""}


def test_a_process_in_its_first_second_shows_its_uptime():
    lines = format_status([row("echo:0", "RUNNING", 42, 0), row("idle:0", "STOPPED", 0, 0),
                           row("old:0", "RUNNING", 43, 3 * 86400 + 3661)]).splitlines()
    assert lines[1].split()[:4] == ["echo:0", "RUNNING", "42", "0:00:00"]
    assert lines[2].split()[:4] == ["idle:0", "STOPPED", "-", "-"]
    assert lines[3].split()[:6] == ["old:0", "RUNNING", "43", "3", "days,", "1:01:01"]
