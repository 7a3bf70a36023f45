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


@pytest.mark.parametrize("url, expected", [
    ("redis+cluster://127.0.0.1:7000", ([("127.0.0.1", 7000)], None, None)),
    ("redis+cluster://u:p%40ss@a:7000,b,[::1]:7002/", ([("a", 7000), ("b", 6379), ("::1", 7002)], "u", "p@ss")),
    ("redis+cluster://:pw@a:1/0?ssl=yes", ([("a", 1)], None, "pw")),
])
def test_cluster_urls(url, expected):
    from tempest.redisurl import cluster_parts

    assert cluster_parts(url) == expected


@pytest.mark.parametrize("url", ["redis+cluster://", "redis+cluster://a:1/2", "redis+cluster://a:x", "redis+cluster://a:1/0/1"])
def test_bad_cluster_urls(url):
    from tempest import converters
    from tempest.redisurl import cluster_parts

    with pytest.raises(ValueError):
        cluster_parts(url)
    with pytest.raises(ValueError):
        converters.to_redis_url(url)


def test_slots_match_redis_py_and_the_routing_key_of_each_command():
    import random

    from redis.crc import key_slot as redis_py_slot

    from tempest import slots

    rng = random.Random(17)
    names = ["tempest", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap", "foo{bar}{zap}", "{", "}{", "", "é{ü}"]
    names += ["".join(rng.choice("ab{}:x") for _ in range(rng.randint(0, 12))) for _ in range(500)]
    for name in names:
        assert slots.key_slot(name) == redis_py_slot(name.encode()), name
    assert slots.key_slot("tempest") == slots.key_slot("tempest:low:{tempest}") == slots.key_slot("tempest:processing:{tempest}:w")
    assert slots.command_key(["RPUSH", "q", "job"]) == "q"
    assert slots.command_key(["EVALSHA", "abc", 1, "q", 5]) == "q"
    assert slots.command_key(["EVAL", "return 1", 0]) is None
    assert slots.command_key(["XREAD", "BLOCK", 100, "STREAMS", "tempest:gather:{g}", "0-0"]) == "tempest:gather:{g}"
    assert slots.command_key(["PUBLISH", "chan", "m"]) is None and slots.command_key(["SCRIPT", "LOAD", "x"]) is None


def test_a_braced_queue_name_is_refused_on_a_cluster_only(tmp_path):
    from tempest import config, slots

    assert slots.key_slot("{shop}.orders") != slots.key_slot("tempest:low:{{shop}.orders}")  # why
    path = tmp_path / "t.ini"
    path.write_text("[redis]\nurl = redis+cluster://127.0.0.1:7000\n[route:/a/]\nqueue = {shop}.orders\n")
    with pytest.raises(config.ConfigError, match=r"route:/a/.*queue.*has no \{ or \}"):
        config.load(str(path))
    path.write_text("[redis]\nurl = redis://127.0.0.1:7000\n[route:/a/]\nqueue = {shop}.orders\n")
    assert config.load(str(path)).routes[0].queue == "{shop}.orders"


def test_a_reliable_worker_refuses_a_braced_queue_on_a_cluster():
    from tempest import Worker

    with pytest.raises(ValueError, match="cannot be served reliably on a Redis Cluster"):
        Worker(["plain", "{shop}.orders"], redis_url="redis+cluster://127.0.0.1:7000", reliable=True)
    assert Worker("{shop}.orders", redis_url="redis+cluster://127.0.0.1:7000", reliable=False).queues == ["{shop}.orders"]
    assert Worker("{shop}.orders", redis_url="redis://127.0.0.1:7000", reliable=True).reliable
