"""The container deployment (issue 17, item 6): examples/compose/ (Redis, two fronts, a worker
host) and the Dockerfile. No container runtime runs here or in CI, so they are checked by other
means: the compose file's and the Dockerfile's references are real, and the very INI files the
containers mount are run as processes on 127.0.0.1, the containers' names and addresses
replaced by loopback ones: a request through each front is answered by the worker host, with the
answer password from the secret file, and each front's admin listener answers /healthz."""

import json
import os
import re
import subprocess
import sys

import yaml

from support import REPO, RedisServer, Tempestd, free_port, free_ports_in_a_row, http, wait_until

COMPOSE = os.path.join(REPO, "examples", "compose")
PASSWORD = "compose-answer-password"


def compose():
    with open(os.path.join(COMPOSE, "compose.yaml")) as handle:
        return yaml.safe_load(handle)


def dockerfile():
    with open(os.path.join(REPO, "Dockerfile")) as handle:
        return handle.read()


def test_the_compose_file_starts_redis_two_fronts_and_a_worker_host():
    services = compose()["services"]
    assert set(services) == {"redis", "front1", "front2", "workers"}
    for name in ("front1", "front2", "workers"):
        service = services[name]
        assert service["build"]["context"] == "../.." and service["depends_on"]["redis"]["condition"] == "service_healthy"
        [mount] = service["volumes"]
        source, target, mode = mount.split(":")
        assert target == "/etc/tempest/tempest.ini" and mode == "ro"
        assert os.path.isfile(os.path.join(COMPOSE, source)), source
    for name in ("front1", "front2"):
        text = open(os.path.join(COMPOSE, f"{name}.ini")).read()
        assert f"answer_advertise = {name}:7000" in text  # the name the worker host reaches it by
        assert "answer_password_file = /run/secrets/answer_password" in text
        assert services[name]["secrets"] == ["answer_password"]
        assert services[name]["ports"] == [f"127.0.0.1:808{name[-1]}:1337"]
    assert "[front]" not in open(os.path.join(COMPOSE, "workers.ini")).read().splitlines()  # a worker host
    assert "TEMPEST_ANSWER_PASSWORD" in services["workers"]["environment"]
    assert compose()["secrets"]["answer_password"] == {"environment": "TEMPEST_ANSWER_PASSWORD"}


def test_the_dockerfile_copies_what_exists_and_runs_tempestd():
    text = dockerfile()
    for line in re.findall(r"^COPY (.+)$", text, re.MULTILINE):
        *sources, _ = line.split()
        for source in sources:
            assert os.path.exists(os.path.join(REPO, source)), source
    assert 'ENTRYPOINT ["tempestd"]' in text and 'CMD ["-c", "/etc/tempest/tempest.ini"]' in text
    assert re.search(r"^USER tempest$", text, re.MULTILINE)  # not root
    assert "http://127.0.0.1:1338/healthz" in text  # the fronts' [admin] listen port
    for name in ("front1", "front2"):
        assert "[admin]\nlisten = 0.0.0.0:1338" in open(os.path.join(COMPOSE, f"{name}.ini")).read()
    ignored = open(os.path.join(REPO, ".dockerignore")).read().split()
    assert ".git" in ignored and ".venv" in ignored and "tests" in ignored


def localised(name, redis_url, tmp_path, ports):
    """examples/compose/NAME.ini with the containers' addresses replaced by loopback ones."""
    text = open(os.path.join(COMPOSE, f"{name}.ini")).read()
    text = text.replace("redis://redis:6379/0", redis_url)
    text = text.replace("/var/lib/tempest/run", str(tmp_path / name / "run"))
    text = text.replace("/run/secrets/answer_password", str(tmp_path / "answer_password"))
    if name.startswith("front"):
        text = text.replace("0.0.0.0:1337", f"127.0.0.1:{ports['front']}")
        text = text.replace("0.0.0.0:7000", f"127.0.0.1:{ports['answer']}")
        text = text.replace(f"{name}:7000", f"127.0.0.1:{ports['answer']}")
        text = text.replace("0.0.0.0:1338", f"127.0.0.1:{ports['admin']}")
    assert "0.0.0.0" not in text and "redis:6379" not in text
    os.makedirs(tmp_path / name, exist_ok=True)
    path = tmp_path / name / "tempest.ini"
    path.write_text(text)
    return str(path)


def test_the_compose_configs_serve_requests_as_processes(tmp_path):
    redis = RedisServer(tmp_path / "redis").start()
    (tmp_path / "answer_password").write_text(PASSWORD + "\n")
    cores = len(os.sched_getaffinity(0))  # processes = auto: front process I answers on port + I, its admin on + 1 + I
    ports = {name: {"front": free_port(), "answer": free_ports_in_a_row(cores), "admin": free_ports_in_a_row(cores + 1)}
             for name in ("front1", "front2")}
    daemons = []
    try:
        for name in ("front1", "front2", "workers"):
            daemon = Tempestd(tmp_path / name, redis.url,
                              env={"TEMPEST_ANSWER_PASSWORD": PASSWORD} if name == "workers" else None)
            daemon.ini = localised(name, redis.url, tmp_path, ports.get(name))
            daemon.start(wait=False)
            daemons.append(daemon)
        for daemon in daemons:
            wait_until(lambda: "tempestd ready:" in daemon.log() or daemon.proc.poll() is not None, 30,
                       message="tempestd ready")
            assert daemon.proc.poll() is None, daemon.log()
        wait_until(lambda: daemons[2].log().count("worker on tempest") == 4, 30, message="the 4 hello workers")
        for name in ("front1", "front2"):
            for _ in range(4):
                status, _, body = http("GET", f"http://127.0.0.1:{ports[name]['front']}/", headers={"Connection": "close"})
                assert status == 200 and body.startswith(b"Hello world!"), (status, body)
            status, _, body = http("GET", f"http://127.0.0.1:{ports[name]['admin']}/healthz")
            assert (status, body) == (200, b"ok\n")
        def status_all():  # exit status 0 once every process is RUNNING (past startsecs)
            shown = subprocess.run([sys.executable, "-c", "import sys; from tempest.cli import tempest_main; "
                                    "sys.exit(tempest_main())", "status", "--all", "--json", "-c", daemons[2].ini],
                                   capture_output=True, text=True, timeout=60)
            return json.loads(shown.stdout) if shown.returncode == 0 else None

        entries = wait_until(status_all, 20, interval=0.5, message="tempest status --all: every process RUNNING")
        roles = sorted(entry["role"] for entry in entries)  # 3 tempestd and their front processes
        fronts = 2 * len(os.sched_getaffinity(0))
        assert roles == sorted(["front", "front", "workers"] + ["front"] * fronts), roles
        everything = "".join(daemon.log() for daemon in daemons)
        assert PASSWORD not in everything and "Traceback" not in everything
    finally:
        Tempestd.stop_all(daemons)
        redis.stop()
    assert [daemon.proc.returncode for daemon in daemons] == [0, 0, 0]
