"""Parsing redis+sentinel:// URLs (the connection itself is tested end to end)."""

import pytest

from tempest.redisurl import redacted, sentinel_parts


@pytest.mark.parametrize("url, expected", [
    ("redis+sentinel://127.0.0.1:26379/mymaster", ([("127.0.0.1", 26379)], "mymaster", 0, None, None)),
    ("redis+sentinel://a:1,b:2, c:3/svc/4", ([("a", 1), ("b", 2), ("c", 3)], "svc", 4, None, None)),
    ("redis+sentinel://:p%40ss@h/svc", ([("h", 26379)], "svc", 0, None, "p@ss")),
    ("redis+sentinel://user:pw@[::1]:5000/svc", ([("::1", 5000)], "svc", 0, "user", "pw")),
])
def test_sentinel_urls(url, expected):
    assert sentinel_parts(url) == expected


@pytest.mark.parametrize("url", ["redis+sentinel://h:1", "redis+sentinel:///svc", "redis+sentinel://h:x/svc",
                                 "redis+sentinel://h:1/svc/db", "redis+sentinel://h:1/a/1/2"])
def test_bad_sentinel_urls(url):
    with pytest.raises(ValueError):
        sentinel_parts(url)


@pytest.mark.parametrize("url, shown", [
    ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
    ("rediss://user:s3cret@h/1", "rediss://user:***@h/1"),
    ("redis+sentinel://:s3cret@a:26379,b:26379/main", "redis+sentinel://:***@a:26379,b:26379/main"),
    ("unix:///run/redis.sock?db=2&password=s3cret", "unix:///run/redis.sock?db=2&password=***"),
    ("redis://h:6379/0", "redis://h:6379/0"),
])
def test_a_url_is_shown_without_its_password(url, shown):
    assert redacted(url) == shown


def test_the_answer_endpoint_url_of_a_respond_to():
    from tempest.redisurl import answer_endpoint

    assert answer_endpoint("127.0.0.1:4000") == "redis://127.0.0.1:4000"
    assert answer_endpoint("[::1]:4000") == answer_endpoint("::1:4000") == "redis://[::1]:4000"
    assert answer_endpoint("h:1", "p@ss:/w") == "redis://:p%40ss%3A%2Fw@h:1"
    with pytest.raises(ValueError):
        answer_endpoint("h:port")
