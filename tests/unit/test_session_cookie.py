"""Sessions without Redis: the cookie's parsing and making, and the worker's answer header."""

import pytest

from tempest import jobs, sessions
from tempest.worker import _with_header

ID = "AbCdEfGhIjKlMnOpQrStUv"


@pytest.mark.parametrize("header, expected", [
    (f"sid={ID}", ID), (f"a=1; sid={ID}; b=2", ID), (f' sid="{ID}" ', ID), (f"xsid={ID}", None),
    ("sid=short", None), (f"sid={ID}x", None), ("sid=" + "/" * 22, None), ("", None), ("sid", None),
    (f"sid=bad; sid={ID}", ID),  # a later well-formed one is taken
])
def test_id_from_cookies(header, expected):
    assert sessions.id_from_cookies(header, "sid") == expected


def test_new_ids_are_valid_and_distinct():
    ids = {sessions.new_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(sessions.valid_id(i) for i in ids)


def test_set_cookie():
    assert sessions.set_cookie("sid", ID, 600.0, False) == f"sid={ID}; Path=/; Max-Age=600; HttpOnly; SameSite=Lax"
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
