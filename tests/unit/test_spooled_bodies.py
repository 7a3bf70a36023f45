"""The spool's settings and its file side, without a daemon: how a route takes [front]'s body
settings, what a spooled file looks like, what prepare removes at start, and how a worker opens
a body (tempest.spool). The whole path, with Redis and tempestd, is in tests/e2e/test_spool.py."""

import hashlib
import io
import os
import stat
import textwrap

import pytest

from tempest import config, spool
from tempest.errors import ConfigError


@pytest.fixture
def load_ini(tmp_path):
    def load(text):
        path = tmp_path / "tempest.ini"
        path.write_text(textwrap.dedent(text))
        return config.load(str(path))

    return load


def test_routes_take_fronts_body_settings_unless_they_set_their_own(load_ini, tmp_path):
    conf = load_ini("""
        [front]
        spool = redis
        spool_over = 1M
        max_body = 10G
        [route:/up/]
        queue = up
        spool = yes
        spool_dir = uploads
        max_body = 2G
        [route:/api/]
        queue = api
    """)
    up, api = conf.route_for("/up/x"), conf.route_for("/api/x")
    assert (up.spool, up.spool_dir, up.max_body, up.spool_over) == ("yes", str(tmp_path / "uploads"), 2 << 30, 1 << 20)
    assert (api.spool, api.max_body, api.spool_over) == ("redis", 10 << 30, 1 << 20)
    assert api.spool_dir == conf.default_route.spool_dir == str(tmp_path / "data" / "spool")  # beside the INI file
    assert (conf.default_route.spool, conf.default_route.max_body) == ("redis", 10 << 30)


def test_the_default_is_no_spool_and_a_1m_body(load_ini):
    route = load_ini("[route:/a/]\nqueue = a\n").route_for("/a/")
    assert (route.spool, route.max_body, route.spool_over) == ("no", 1 << 20, 64 << 10)


@pytest.mark.parametrize("raw, value", [("no", "no"), ("off", "no"), ("yes", "yes"), ("file", "yes"), ("Redis", "redis")])
def test_spool_values(load_ini, raw, value):
    assert load_ini(f"[front]\nspool = {raw}\n").front.spool == value


def test_a_body_in_memory_is_4g_at_most(load_ini):
    assert load_ini("[front]\nmax_body = 4G\n").front.max_body == 4 << 30
    with pytest.raises(ConfigError, match=r"\[front\] max_body: over 4G needs spool = yes or redis"):
        load_ini("[front]\nmax_body = 5G\n")
    # a route that spools may take more than [front] allows in memory
    route = load_ini("[route:/up/]\nqueue = up\nspool = yes\nmax_body = 100G\n").route_for("/up/")
    assert route.max_body == 100 << 30
    with pytest.raises(ConfigError, match=r"\[front\] spool_dir: spool = yes needs a spool_dir"):
        load_ini("[front]\nspool = yes\nspool_dir =\n")


def test_a_spooled_file_is_new_private_and_hashed(tmp_path):
    body = spool.FileBody(str(tmp_path), "tempest")
    body.write(b"hello ")
    body.write(b"world")
    body.finish()
    token = body.token()["body_file"]
    assert token == {"path": body.path, "size": 11, "sha256": hashlib.sha256(b"hello world").hexdigest()}
    assert stat.S_IMODE(os.stat(body.path).st_mode) == 0o600
    assert open(body.path, "rb").read() == b"hello world"
    other = spool.FileBody(str(tmp_path), "tempest")
    assert other.path != body.path  # an unguessable name each time
    body.discard()
    other.discard()
    assert os.listdir(tmp_path) == []
    body.discard()  # twice: nothing to do, no error


def test_a_spool_directory_that_cannot_take_a_file_is_a_500(tmp_path):
    with pytest.raises(spool.SpoolError) as info:
        spool.FileBody(str(tmp_path / "missing"), "tempest")
    assert info.value.status == 500 and "cannot create" in str(info.value)


def test_prepare_makes_the_directories_and_removes_only_this_tempestds_bodies(tmp_path, load_ini):
    conf = load_ini("[tempest]\nname = my app\n[front]\nspool = yes\n[route:/r/]\nqueue = r\nspool = redis\n")
    directory = conf.default_route.spool_dir
    assert spool.prepare([conf.default_route, *conf.routes], conf.tempest.name) == 0
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    leftover = spool.FileBody(directory, spool.file_prefix("my app"))
    assert os.path.basename(leftover.path).startswith("my_app.")
    kept = ["notes.txt", "tempest." + "0" * 32 + ".body", "my_app.short.body"]
    for name in kept:
        open(os.path.join(directory, name), "w").close()
    assert spool.prepare([conf.default_route], conf.tempest.name, clean=False) == 0  # a reload removes nothing
    assert spool.prepare([conf.default_route, *conf.routes], conf.tempest.name) == 1
    assert sorted(os.listdir(directory)) == sorted(kept)


def test_open_body_gives_a_file_for_every_kind_of_body(tmp_path):
    assert spool.open_body({"body": "h\u00e9"}).read() == "h\u00e9".encode()
    assert spool.open_body({"body_base64": "AAEC"}).read() == b"\x00\x01\x02"
    assert spool.open_body({}).read() == b""
    path = tmp_path / "b.body"
    path.write_bytes(b"spooled")
    env = {"body_file": {"path": str(path), "size": 7, "sha256": hashlib.sha256(b"spooled").hexdigest()}}
    with spool.open_body(env) as body:
        assert body.read() == b"spooled"
    assert spool.stored(env) == env["body_file"] and spool.stored({"body": "x"}) is None
    path.unlink()
    with pytest.raises(spool.BodyGone):
        spool.open_body(env)
    with pytest.raises(ValueError, match="needs a Redis client"):
        spool.open_body({"body_key": {"key": "k", "size": 1, "sha256": "", "chunks": 1}})


@pytest.mark.parametrize("content, message", [(b"spooles", "sha256"), (b"spool", "5 of 7 bytes"),
                                              (b"spooled!", "longer than its 7 bytes")])
def test_a_spooled_file_that_is_not_its_tokens_body_raises_at_its_end(tmp_path, content, message):
    path = tmp_path / "b.body"
    path.write_bytes(content)
    env = {"body_file": {"path": str(path), "size": 7, "sha256": hashlib.sha256(b"spooled").hexdigest()}}
    with spool.open_body(env) as body, pytest.raises(spool.BodyGone, match=message):
        body.read()


def test_the_wsgi_environ_of_a_spooled_body(tmp_path):
    from tempest.wsgi import environ

    path = tmp_path / "b.body"
    path.write_bytes(b"x" * 100_000)
    env = {"method": "POST", "url": "/up", "headers": {"content-length": "100000"},
           "body_file": {"path": str(path), "size": 100_000, "sha256": ""}}
    result = environ(env)
    assert result["CONTENT_LENGTH"] == "100000"
    assert isinstance(result["wsgi.input"], io.BufferedReader) and result["wsgi.input"].read() == b"x" * 100_000
    result["wsgi.input"].close()


@pytest.mark.parametrize("token", [
    {"body_file": {"path": "/srv/tempest/data/spool/tempest.0123abcd.body", "size": 3 << 30, "sha256": "ab" * 32}},
    {"body_key": {"key": "tempest:body:{0123abcd}", "size": 70000, "sha256": "cd" * 32, "chunks": 1}},
])
def test_a_jobs_token_is_the_generic_encoding(token):
    """The front's hand-written url job (jobs.encode_http_job) carries the token as the generic
    encoder would, and nothing of the body."""
    from tempest import jobs

    env = jobs.http_env("POST", "/up", {"host": "x", "content-length": "70000"}, b"", "127.0.0.1")
    env.update(token)
    fast = jobs.encode_http_job(env, "127.0.0.1:4000", "id-1")
    assert fast == jobs.encode_job(jobs.HTTP_ACTION, [env], "127.0.0.1:4000", "id-1")
    assert jobs.decode_job(fast)[1] == [env] and "body" not in env
