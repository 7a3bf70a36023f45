"""Parsing redis+sentinel:// URLs (the connection itself is tested end to end)."""

import pytest

from tempest.redisurl import sentinel_parts


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
