"""The access log: Combined Log Format + request time, streams logged when they end with
their bytes, escaping of what the client sent, SIGUSR1 reopening the file."""

import os
import re
import signal
import socket

from operator_support import ECHO, STREAMER, worker
from support import http, in_thread, wait_until

QUOTED = r'"([^"\\]*(?:\\.[^"\\]*)*)"'  # a quoted field, \" and \\ escaped inside
LINE = re.compile(r'^(\S+) - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] ' + QUOTED + r' (\d{3}) (\d+|-) '
                  + QUOTED + " " + QUOTED + r' (\d+\.\d{3})$')


def lines(path, count, timeout=10):
    """The log's lines once it has ``count`` (it is flushed every second)."""
    def enough():
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as handle:
            found = handle.read().splitlines()
        return found if len(found) >= count else None
    return wait_until(enough, timeout=timeout, message=f"{count} access log lines")


def test_combined_format_with_streams_logged_at_their_end(tempestd_factory, redis_client, tmp_path):
    log_path = str(tmp_path / "logs" / "access.log")
    daemon = tempestd_factory(front={"queue": "acc", "timeout": "5", "access_log": log_path},
                              **{"route:/e/": {"queue": "acc-echo"}, "worker:echo": worker(ECHO, "acc-echo"),
                                 "worker:streamer": worker(STREAMER, "acc")})
    wait_until(lambda: all(s["state"] == "RUNNING" for s in daemon.status().values()), timeout=20)
    status, _, body = http("GET", daemon.base + "/e/x?q=1", headers={"Referer": "http://ref/", "User-Agent": "ua/1"})
    assert status == 200
    thread, result = in_thread(http, "GET", daemon.base + "/stream")
    wait_until(lambda: redis_client.exists("gate:acc") == 0 and daemon.info()["pending_jobs"] == 1, timeout=10)
    redis_client.rpush("gate:acc", "go")  # the stream ends now
    thread.join(10)
    assert http("GET", daemon.base + "/big")[0] == 200  # 1 MB streamed, chunked
    echo, stream, big = [LINE.match(line) for line in lines(log_path, 3)]
    assert echo and stream and big
    assert echo.groups()[:6] == ("127.0.0.1", "GET /e/x?q=1 HTTP/1.1", "200", str(len(body)), "http://ref/", "ua/1")
    assert stream.group(2, 3) == ("GET /stream HTTP/1.1", "200")
    assert int(stream.group(4)) > len(b"first second")  # the chunks, with their framing
    assert int(big.group(4)) > 1_000_000
    assert float(stream.group(7)) >= 0.0


def test_what_the_client_sends_cannot_forge_a_line(tempestd_factory, tmp_path):
    log_path = str(tmp_path / "access.log")
    daemon = tempestd_factory(front={"queue": "acc-forge", "timeout": "0.3", "access_log": log_path})
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as conn:
        conn.sendall(b'GET /a"b\\c HTTP/1.1\r\nHost: x\r\nUser-Agent: x" 200 1 "\xff\r\nConnection: close\r\n\r\n')
        while conn.recv(65536):
            pass
    [line] = lines(log_path, 1)
    assert LINE.match(line), line
    assert '"GET /a\\"b\\\\c HTTP/1.1"' in line and '"x\\" 200 1 \\"\\xff"' in line


def test_sigusr1_reopens_the_access_log(tempestd_factory, tmp_path):
    log_path = str(tmp_path / "access.log")
    daemon = tempestd_factory(front={"queue": "acc-rot", "timeout": "0.2", "access_log": log_path})
    http("GET", daemon.base + "/one")
    lines(log_path, 1)
    os.rename(log_path, log_path + ".1")  # as logrotate does, then its postrotate sends SIGUSR1
    os.kill(daemon.proc.pid, signal.SIGUSR1)
    wait_until(lambda: "SIGUSR1: log files reopened" in daemon.log(), timeout=10)
    http("GET", daemon.base + "/two")
    [line] = lines(log_path, 1)
    assert '"GET /two HTTP/1.1"' in line
    with open(log_path + ".1") as handle:
        assert '"GET /one HTTP/1.1"' in handle.read()
