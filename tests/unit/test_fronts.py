"""[front] processes (tempest.fronts): the setting, the ports each front process takes, and the
checks at load."""

import os
import textwrap

import pytest

from tempest import config, fronts
from tempest.errors import ConfigError


def load(tmp_path, text):
    path = tmp_path / "tempest.ini"
    path.write_text(textwrap.dedent(text))
    return config.load(str(path))


def test_processes_default_to_one_and_auto_is_the_cores_tempestd_may_use(tmp_path):
    assert load(tmp_path, "[front]\n").front.processes == 1
    assert load(tmp_path, "[front]\nprocesses = auto\n").front.processes == len(os.sched_getaffinity(0))
    assert load(tmp_path, "[front]\nprocesses = 3\n").front.processes == 3


def test_each_front_process_takes_the_next_ports(tmp_path):
    settings = load(tmp_path, """\
        [front]
        processes = 3
        answer_listen = 127.0.0.1:7000
        answer_advertise = 10.0.0.5:7100
        [admin]
        listen = 127.0.0.1:8000
        [worker:hello]
        command = python -m tempest.examples.hello
        """)
    second = fronts.for_process(settings, 2)
    assert second.front.answer_listen == ("127.0.0.1", 7002)
    assert second.front.answer_advertise == ("10.0.0.5", 7102)
    assert second.admin.listen == ("127.0.0.1", 8003)  # the master's is 8000
    assert second.programs == [] and len(settings.programs) == 1  # the master runs the workers
    assert second.front.listen == settings.front.listen  # the one shared socket
    anywhere = fronts.for_process(load(tmp_path, "[front]\nprocesses = 2\n"), 1)
    assert anywhere.front.answer_listen == ("127.0.0.1", 0) and anywhere.admin.listen is None


@pytest.mark.parametrize("text, where, message", [
    ("[front]\nprocesses = 2\nanswer_listen = 127.0.0.1:65535\n", "answer_listen", "port 65535 + 1 is over 65535"),
    ("[front]\nprocesses = 2\n[admin]\nlisten = 127.0.0.1:65534\n", "listen", "port 65534 + 2 is over 65535"),
    ("[front]\nprocesses = 2\n[worker:front]\ncommand = true\n", "worker:front", "the name 'front' is taken"),
    ("[front]\nprocesses = 0\n", "processes", "not a positive integer nor auto"),
])
def test_bad_processes_settings_are_refused(tmp_path, text, where, message):
    with pytest.raises(ConfigError) as error:
        load(tmp_path, text)
    assert where in str(error.value) and message in str(error.value)


def test_a_front_process_without_its_socket_says_so(monkeypatch):
    monkeypatch.delenv(fronts.FD_ENV, raising=False)
    with pytest.raises(ValueError, match="started by tempestd"):
        fronts.inherited_socket()
