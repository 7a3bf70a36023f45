"""The Python, Go, Ruby, PHP, Node and shell hello workers on a real Redis Cluster whose every node answers
CLUSTERDOWN for a while (a slot unassigned on every node, cluster-require-full-coverage being
yes): each logs it as a passing outage ("Redis unreachable (CLUSTERDOWN ...); retrying in Xs",
not "Redis refused to give jobs"), backs off 0.1 s doubling to 2 s at most, and serves a job
pushed once the slot is back within 3 s."""

import os
import re
import shlex
import socketserver
import subprocess
import threading
import time

import hiredis
import pytest
from redis.crc import key_slot

from support import REPO, LocalCluster, client_hello, hand_job, stop_groups, wait_until

LANGUAGES = ("python", "go", "ruby", "php", "node", "shell")
RETRYING = re.compile(r"retrying in ([0-9.]+)s")


class Answers(socketserver.ThreadingTCPServer):
    """A minimal answer endpoint: +OK to every command (AUTH, ACTIONS, CLIENT...), the time each
    url answer's job id arrived kept in ``received``."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), AnswerConnection)
        self.received = {}

    @property
    def address(self):
        return "127.0.0.1:%d" % self.server_address[1]


class AnswerConnection(socketserver.BaseRequestHandler):
    def handle(self):
        reader = hiredis.Reader()
        while data := self.request.recv(65536):
            reader.feed(data)
            while (command := reader.gets()) is not False:
                self.request.sendall(b"+OK\r\n")
                if command[0] == b"url":
                    self.server.received[command[1].decode()] = time.monotonic()


def log_of(directory, language):
    with open(os.path.join(str(directory), f"{language}.log"), encoding="utf-8", errors="replace") as handle:
        return handle.read()


def longest_delay(log):
    """The longest pause a log announced ("...; retrying in 1.6s"), 0 without one."""
    return max((float(delay) for delay in RETRYING.findall(log)), default=0.0)


def push_jobs(client, queues, endpoint, tag):
    env = {"method": "GET", "url": "/", "headers": {"host": "x"}}
    for language, queue in queues.items():
        client.rpush(queue, hand_job("url", [env], endpoint.address, f"{tag}-{language}"))
    return time.monotonic()


def slot_owner(cluster, slot):
    """The master that serves ``slot`` (this cluster has no replicas), by CLUSTER SLOTS."""
    for first, last, owner, *_ in cluster.masters[0].client().execute_command("CLUSTER", "SLOTS"):
        if first <= slot <= last:
            return next(node for node in cluster.masters if node.port == int(owner[1]))
    raise AssertionError(f"no master serves slot {slot}")


@pytest.mark.timeout(90)
def test_clusterdown_is_retried_as_a_lost_connection_backing_off_to_2s(tmp_path):
    queues = {language: f"transient-{language}" for language in LANGUAGES}
    commands = {language: client_hello(language, queue) for language, queue in queues.items()}
    # a slot away from the queues (their low and processing lists are in their slots) and the
    # registry: every command a worker sends meets the CLUSTERDOWN reply itself, never a map of
    # slots with that one missing (which a client may take for a lost connection anyway)
    used = {key_slot(key.encode()) for key in [*queues.values(), "tempest:workers"]}
    down = next(slot for slot in range(16384) if slot not in used)
    cluster = LocalCluster(tmp_path / "cluster", masters=3, replicas=0).start()
    endpoint = Answers()
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    workers = []
    try:
        client = cluster.client()
        env = dict(os.environ, TEMPEST_REDIS_URL=cluster.url)
        for language in LANGUAGES:
            with open(tmp_path / f"{language}.log", "wb") as log:
                workers.append(subprocess.Popen(shlex.split(commands[language]), cwd=REPO, env=env,
                                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True))
        push_jobs(client, queues, endpoint, "before")
        wait_until(lambda: all(f"before-{language}" in endpoint.received for language in LANGUAGES), 30,
                   message="every worker answering")

        # the slot unassigned on every node: each says cluster_state:fail and answers CLUSTERDOWN
        owner = slot_owner(cluster, down)
        for node in cluster.masters:
            node.client().execute_command("CLUSTER", "DELSLOTS", down)
        # down until every worker's backoff reached its limit (0.1 + 0.2 + ... + 1.6 s, then 2.0)
        wait_until(lambda: all(longest_delay(log_of(tmp_path, language)) >= 2.0 for language in LANGUAGES), 20,
                   message="every worker backing off to 2 s")
        for language in LANGUAGES:
            log = log_of(tmp_path, language)
            assert "Redis unreachable (CLUSTERDOWN" in log, (language, log)
            assert "refused to give jobs" not in log, (language, log)
            assert longest_delay(log) == 2.0, (language, log)
        owner.client().execute_command("CLUSTER", "ADDSLOTS", down)  # the others learn it from its owner
        wait_until(cluster.healthy, 10, message="the cluster's state ok again")

        pushed = push_jobs(client, queues, endpoint, "after")
        wait_until(lambda: all(f"after-{language}" in endpoint.received for language in LANGUAGES), 10,
                   message="every worker answering again")
        late = {language: round(endpoint.received[f"after-{language}"] - pushed, 2) for language in LANGUAGES}
        assert max(late.values()) < 3.0, late
        assert all(longest_delay(log_of(tmp_path, language)) == 2.0 for language in LANGUAGES)
    finally:
        stop_groups(workers, timeout=5)
        endpoint.shutdown()
        endpoint.server_close()
        cluster.stop()
