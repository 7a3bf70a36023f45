"""Sessions without Redis: the cookie's parsing and making, and the worker's answer header."""

import pytest

from tempest import jobs, sessions
from tempest.worker import _with_header

ID = "AbCdEfGhIjKlMnOpQrStUv"
SIGNER = sessions.Signer(sessions.to_secrets("0123456789abcdef"))
SIGNED = SIGNER.sign(ID)


@pytest.mark.parametrize("header, expected", [
    (f"sid={SIGNED}", (ID, False)), (f"a=1; sid={SIGNED}; b=2", (ID, False)), (f' sid="{SIGNED}" ', (ID, False)),
    (f"xsid={SIGNED}", (None, False)), ("", (None, False)), ("sid", (None, False)),
    (f"sid={ID}", (None, True)),  # a bare id, even well formed, was not issued by this server
    ("sid=short", (None, True)), (f"sid={SIGNED}x", (None, True)), ("sid=" + "/" * 22, (None, True)),
    (f"sid=bad; sid={SIGNED}", (ID, False)),  # a later one that verifies is taken
])
def test_id_from_cookies(header, expected):
    assert sessions.id_from_cookies(header, "sid", SIGNER) == expected


def test_new_ids_are_valid_and_distinct():
    ids = {sessions.new_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(sessions.valid_id(i) for i in ids)


def test_set_cookie():
    assert (sessions.set_cookie("sid", SIGNED, 600.0, False)
            == f"sid={SIGNED}; Path=/; Max-Age=600; HttpOnly; SameSite=Lax")
    assert sessions.set_cookie("sid", ID, 60, True).endswith("; Secure")


@pytest.mark.parametrize("answer, expected", [
    ([200, {}, "x"], [200, {"X-S": ID}, "x"]),
    ([200, {"A": "1"}, "x"], [200, {"A": "1", "X-S": ID}, "x"]),
    ([200, [["A", "1"]], "x"], [200, [["A", "1"], ["X-S", ID]], "x"]),
    ([200], [200, {"X-S": ID}]),
    ((200, None, "x"), [200, {"X-S": ID}, "x"]),
    ("not an answer", "not an answer"),
])
def test_the_regenerated_id_joins_any_answer_shape(answer, expected):
    assert _with_header(answer, "X-S", ID) == expected


def test_session_travels_in_the_url_job():
    env = jobs.http_env("GET", "/", {"host": "h"}, b"", "127.0.0.1")
    env["session"] = {"id": ID, "ttl": 600}
    fast = jobs.encode_http_job(env, "127.0.0.1:1", "j")
    assert fast == jobs.encode_job(jobs.HTTP_ACTION, [env], "127.0.0.1:1", "j")
