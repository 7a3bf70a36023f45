"""Streamed answers sent the way a generic client sends everything, ``<action> <job_id> <json>``:
``end <job_id> null`` ends the body, only an explicit abort aborts, and a head flagged
``{"chunks": "json"}`` has JSON chunks."""

import json
import socket

import pytest

from support import in_thread, wait_until


@pytest.fixture
def site(tempestd_factory, request):
    queue = "generic-" + request.node.name[5:40]
    daemon = tempestd_factory(front={"queue": queue, "timeout": "3"})
    daemon.queue = queue
    return daemon


def exchange(site, redis_client, answer):
    """Send GET / to the front, take its job as a worker would, run ``answer(client, job_id)``
    on the answer endpoint; returns everything the HTTP client received until the server closed
    or 3 s of silence."""
    def request():
        with socket.create_connection(("127.0.0.1", site.port), timeout=3) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            received = b""
            try:
                while chunk := sock.recv(65536):
                    received += chunk
            except socket.timeout:
                received += b"<silence>"
            return received

    thread, result = in_thread(request)
    _, raw = redis_client.blpop([site.queue], timeout=5)
    job_id = json.loads(raw)[3]
    client = site.answer_client()
    answer(client, job_id)
    thread.join(10)
    return result["value"]


def test_end_with_json_null_ends_the_body(site, redis_client):
    def answer(client, job_id):
        client.execute_command("stream", job_id, json.dumps([200, {"Content-Type": "text/plain"}]))
        client.execute_command("chunk", job_id, "raw bytes")
        client.execute_command("end", job_id, "null")

    received = exchange(site, redis_client, answer)
    assert b"Transfer-Encoding: chunked" in received
    assert received.endswith(b"9\r\nraw bytes\r\n0\r\n\r\n")  # complete: the last chunk is there


@pytest.mark.parametrize("how", ["abort", '"abort"'])
def test_only_an_explicit_abort_cuts_the_body(site, redis_client, how):
    def answer(client, job_id):
        client.execute_command("stream", job_id, json.dumps([200, {}]))
        client.execute_command("chunk", job_id, "part")
        client.execute_command("end", job_id, how)

    received = exchange(site, redis_client, answer)
    assert received.endswith(b"4\r\npart\r\n")  # cut: no last chunk


def test_json_chunks_are_decoded(site, redis_client):
    def answer(client, job_id):
        client.execute_command("stream", job_id, json.dumps([200, {}, {"chunks": "json"}]))
        client.execute_command("chunk", job_id, json.dumps("caf\u00e9 "))
        client.execute_command("chunk", job_id, json.dumps({"base64": "AAE="}))
        client.execute_command("end", job_id, "[]")

    received = exchange(site, redis_client, answer)
    assert received.endswith(b"6\r\ncaf\xc3\xa9 \r\n2\r\n\x00\x01\r\n0\r\n\r\n")


def test_a_json_chunk_that_is_not_a_string_cuts_the_stream(site, redis_client):
    def answer(client, job_id):
        client.execute_command("stream", job_id, json.dumps([200, {}, {"chunks": "json"}]))
        client.execute_command("chunk", job_id, '"ok"')
        client.execute_command("chunk", job_id, "[1, 2]")

    received = exchange(site, redis_client, answer)
    assert received.endswith(b"2\r\nok\r\n")  # closed at once, without the last chunk
    wait_until(lambda: site.info()["bad_answers"] == 1, message="the bad chunk counted")


def test_bad_stream_options_are_a_502(site, redis_client):
    def answer(client, job_id):
        client.execute_command("stream", job_id, json.dumps([200, {}, {"chunks": "xml"}]))

    received = exchange(site, redis_client, answer)
    assert received.startswith(b"HTTP/1.1 502 Bad Gateway")
