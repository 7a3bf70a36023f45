"""Workers of every shipped language together, through a real tempestd and redis-server: a
request passed from Python to Node to Ruby, a fan-out from Go to PHP and Node, and a mixed pool
of hello workers on one queue under 200 concurrent requests."""

import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from support import REPO, http, missing_runtime, wait_until

MIXED = os.path.join(REPO, "tests", "clients", "mixed")
CLIENTS = os.path.join(REPO, "clients")
HELLO = re.compile(r"^(Hello from (node|ruby|php|go|shell) #\d+|Hello world! #\d+)$")
GO_ENV = {"GOPROXY": "off", "GOFLAGS": "-mod=mod", "GOSUMDB": "off", "GOTOOLCHAIN": "local"}


def need(command, probe, what):
    """Skip (on a developer's machine) or fail (in CI) unless ``probe`` runs with ``command``."""
    if shutil.which(command) is None:
        missing_runtime(f"{what}: no {command} on PATH (.ci/install-runtimes installs it)")
    result = subprocess.run(probe, capture_output=True, timeout=60)
    if result.returncode != 0:
        missing_runtime(f"{what}: {' '.join(probe)} failed: {result.stderr.decode(errors='replace')[-300:]}")


@pytest.fixture(scope="module")
def runtimes(tmp_path_factory):
    """Every runtime checked, and the Go workers built: {name: command prefix}."""
    need("node", ["node", "-e", f"require({json.dumps(os.path.join(CLIENTS, 'node'))})"], "Node.js client")
    need("ruby", ["ruby", "-e", 'require "redis"'], "Ruby client")
    need("php", ["php", "-r", 'exit(class_exists("Redis") ? 0 : 1);'], "PHP client")
    need("go", ["go", "version"], "Go client")
    out = tmp_path_factory.mktemp("go")
    env = dict(os.environ, **GO_ENV)
    for target, directory in (("gather", os.path.join(MIXED, "go")), ("hello", os.path.join(CLIENTS, "go", "examples", "hello"))):
        build = subprocess.run(["go", "build", "-o", str(out / target), "."], cwd=directory, env=env,
                               capture_output=True, timeout=300)
        assert build.returncode == 0, build.stderr.decode(errors="replace")
    return {"gather": [str(out / "gather")], "hello-go": [str(out / "hello")]}


def worker(name, command, numprocs=1):
    return {f"worker:{name}": {"command": " ".join(command), "numprocs": str(numprocs), "directory": REPO}}


def test_a_request_goes_from_python_to_node_to_ruby(runtimes, tempestd_factory):
    sections = {}
    sections.update(worker("start", [sys.executable, os.path.join(MIXED, "start.py"), "mixed-start", "mixed-hop"]))
    sections.update(worker("hop", ["node", os.path.join(MIXED, "hop.js"), "mixed-hop", "mixed-finish"]))
    sections.update(worker("finish", ["ruby", os.path.join(MIXED, "finish.rb"), "mixed-finish"]))
    daemon = tempestd_factory(front={"queue": "mixed-start", "timeout": "10"}, **sections)
    status, headers, body = http("GET", daemon.base + "/route/me")
    assert (status, body) == (200, b"/route/me via python,node,ruby")
    assert headers["content-type"] == "text/plain"


def test_a_fan_out_from_go_is_gathered_from_php_and_node(runtimes, tempestd_factory):
    sections = {}
    sections.update(worker("gather", runtimes["gather"] + ["mixed-gather", "mixed-php", "mixed-node"]))
    sections.update(worker("php", ["php", os.path.join(MIXED, "part.php"), "mixed-php"]))
    sections.update(worker("node", ["node", os.path.join(MIXED, "hop.js"), "mixed-node", "unused"]))
    daemon = tempestd_factory(front={"queue": "mixed-gather", "timeout": "10"}, **sections)
    status, _, body = http("GET", daemon.base + "/")
    assert status == 200
    assert json.loads(body) == [{"lang": "php", "n": 1}, {"lang": "node", "n": 2}]


def test_a_mixed_pool_answers_200_concurrent_requests(runtimes, tempestd_factory):
    queue = "mixed-pool"
    sections = {}
    sections.update(worker("python", [sys.executable, "-m", "tempest.examples.hello", queue]))
    sections.update(worker("node", ["node", os.path.join(CLIENTS, "node", "examples", "hello.js"), queue]))
    sections.update(worker("ruby", ["ruby", os.path.join(CLIENTS, "ruby", "examples", "hello.rb"), queue]))
    sections.update(worker("php", ["php", os.path.join(CLIENTS, "php", "examples", "hello.php"), queue]))
    sections.update(worker("go", runtimes["hello-go"] + [queue]))
    daemon = tempestd_factory(front={"queue": queue, "timeout": "20"}, **sections)
    seen = set()

    def every_language_answers():  # each worker is up: one request at a time until all 5 answered
        status, _, body = http("GET", daemon.base + "/")
        assert status == 200
        seen.add(body.decode().split(" #")[0])
        return len(seen) == 5

    wait_until(every_language_answers, timeout=30, message="an answer from each of the five workers")

    def one(i):
        return http("GET", daemon.base + f"/pool/{i}", timeout=30)

    with concurrent.futures.ThreadPoolExecutor(max_workers=200) as pool:
        results = list(pool.map(one, range(200)))
    bodies = [body.decode() for status, _, body in results if status == 200]
    assert len(bodies) == 200, [status for status, _, _ in results if status != 200][:5]
    assert all(HELLO.match(body) for body in bodies), [b for b in bodies if not HELLO.match(b)][:5]
    assert len({body.split(" #")[0] for body in bodies}) >= 2  # the queue was shared, not served by one
