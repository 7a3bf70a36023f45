"""Unit tests of tempest.config: the INI file, the converters and the error messages."""

import os
import pathlib
import re
import textwrap

import pytest

from tempest import config
from tempest.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "conf" / "tempest.ini"
DOCS = ROOT / "docs" / "configuration.md"


def no_spool(conf):
    """The body settings of a route that sets none: [front]'s defaults."""
    return {"max_body": 1 << 20, "spool": "no", "spool_dir": conf.front.spool_dir, "spool_over": 64 << 10}


@pytest.fixture
def write_ini(tmp_path):
    """Write an INI file (dedented) under tmp_path and return its path."""

    def write(text, name="tempest.ini"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def load_ini(write_ini):
    def load(text, name="tempest.ini"):
        return config.load(str(write_ini(text, name)))

    return load


def load_error(load_ini, text):
    with pytest.raises(ConfigError) as info:
        load_ini(text)
    return info.value


# the sample file


def test_sample_ini_loads_with_its_values_and_documented_defaults():
    conf = config.load(str(SAMPLE))
    # values written in the sample
    assert conf.tempest.name == "tempest"
    assert conf.tempest.log_level == "info"
    assert conf.tempest.run_dir == str(ROOT / "run")  # ../run, relative to conf/
    assert conf.redis.url == "redis://127.0.0.1:6379/0"
    assert conf.redis.embedded is True
    assert conf.redis.data_dir == str(ROOT / "data")
    assert conf.front.listen == ("127.0.0.1", 1337)
    assert conf.front.answer_listen == ("127.0.0.1", 0)
    assert conf.front.queue == "tempest"
    assert conf.front.timeout == 30.0
    assert conf.front.max_body == 1024 * 1024
    assert conf.front.max_queue_length == 10000
    assert conf.front.access_log == str(ROOT / "log" / "access.log")  # relative to the INI file
    assert conf.admin.listen == ("127.0.0.1", 1338)
    # keys the sample leaves out take the documented defaults
    assert conf.tempest.log_file == ""
    assert conf.redis.server_bin == ""
    assert conf.front.answer_advertise is None
    assert conf.front.answer_password == ""
    assert conf.front.max_header_size == 64 * 1024
    assert conf.front.header_timeout == 10.0
    assert conf.front.keepalive_timeout == 75.0
    assert conf.front.max_answer == 64 * 1024 * 1024
    assert conf.front.backlog == 2048
    assert conf.front.graceful_timeout == 10.0
    assert conf.front.access_log_format == '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(L)s'
    assert conf.admin.max_connections == 64
    # the [route:/slow/] example is commented out
    assert conf.routes == []
    assert conf.route_for("/slow/x") == config.Route("/", "tempest", 30.0, "normal", "idempotent", **no_spool(conf))


def test_empty_file_gives_every_default(load_ini, tmp_path):
    conf = load_ini("")
    assert conf.tempest.name == "tempest"
    assert conf.tempest.run_dir == str(tmp_path / "run")
    assert conf.tempest.log_level == "info"
    assert conf.redis.url == "redis://127.0.0.1:6379/0"
    assert conf.redis.embedded is False
    assert conf.redis.data_dir == str(tmp_path / "data")
    assert conf.front.listen == ("127.0.0.1", 1337)
    assert conf.front.answer_listen == ("127.0.0.1", 0)
    assert conf.front.timeout == 30.0
    assert conf.front.max_body == 1024 * 1024
    assert conf.front.max_queue_length == 0


def test_every_default_in_settings_is_valid():
    for setting in config.SETTINGS:
        if setting.default:  # None: required, "": empty allowed
            setting.convert(setting.default)


# converters


@pytest.mark.parametrize("raw, expected", [
    ("0", 0),
    ("512", 512),
    (" 512 ", 512),
    ("64K", 64 * 1024),
    ("64k", 64 * 1024),
    ("64KB", 64 * 1024),
    ("10M", 10 * 1024 ** 2),
    ("10m", 10 * 1024 ** 2),
    ("1G", 1024 ** 3),
    ("2g", 2 * 1024 ** 3),
])
def test_to_size(raw, expected):
    assert config.to_size(raw) == expected


@pytest.mark.parametrize("raw", ["abc", "", "1.5M", "-1", "10T", "M", "1 0K", "0x10"])
def test_to_size_rejects(raw):
    with pytest.raises(ValueError, match="not a size"):
        config.to_size(raw)


@pytest.mark.parametrize("raw, expected", [
    ("yes", True), ("no", False), ("true", True), ("false", False), ("on", True), ("off", False),
    ("YES", True), (" Off ", False), ("True", True), ("1", True), ("0", False),
])
def test_to_bool(raw, expected):
    assert config.to_bool(raw) is expected


@pytest.mark.parametrize("raw", ["maybe", "", "y", "2", "yess"])
def test_to_bool_rejects(raw):
    with pytest.raises(ValueError, match="not a boolean"):
        config.to_bool(raw)


@pytest.mark.parametrize("raw, expected", [("1", 1), ("2048", 2048), (" 7 ", 7)])
def test_to_positive_int(raw, expected):
    assert config.to_positive_int(raw) == expected


@pytest.mark.parametrize("raw", ["0", "-3", "abc", "1.5", ""])
def test_to_positive_int_rejects(raw):
    with pytest.raises(ValueError, match="not a positive integer"):
        config.to_positive_int(raw)


def test_to_count_accepts_zero_and_rejects_negative():
    assert config.to_count("0") == 0
    assert config.to_count("10000") == 10000
    for raw in ("-1", "x", "1.5"):
        with pytest.raises(ValueError, match="non-negative"):
            config.to_count(raw)


@pytest.mark.parametrize("raw, expected", [("30", 30.0), ("0.5", 0.5), ("2s", 2.0), (" 120 ", 120.0)])
def test_to_seconds(raw, expected):
    assert config.to_seconds(raw) == expected


@pytest.mark.parametrize("raw", ["0", "-1", "abc", "", "nan", "inf", "-inf", "5m"])
def test_to_seconds_rejects(raw):
    with pytest.raises(ValueError, match="not a positive number of seconds"):
        config.to_seconds(raw)


@pytest.mark.parametrize("raw, expected", [
    ("127.0.0.1:1337", ("127.0.0.1", 1337)),
    ("localhost:0", ("localhost", 0)),
    ("0.0.0.0:65535", ("0.0.0.0", 65535)),
    ("[::1]:8080", ("::1", 8080)),
    (" example.org:80 ", ("example.org", 80)),
])
def test_to_hostport(raw, expected):
    assert config.to_hostport(raw) == expected


@pytest.mark.parametrize("raw", [
    "127.0.0.1", "127.0.0.1:", ":80", "host:65536", "host:-1", "host:abc", "host:80x", "",
])
def test_to_hostport_rejects(raw):
    with pytest.raises(ValueError, match="not host:port"):
        config.to_hostport(raw)


def test_to_optional_hostport():
    assert config.to_optional_hostport("") is None
    assert config.to_optional_hostport("  ") is None
    assert config.to_optional_hostport("10.0.0.5:7000") == ("10.0.0.5", 7000)
    with pytest.raises(ValueError):
        config.to_optional_hostport("10.0.0.5")


@pytest.mark.parametrize("raw", [
    "redis://127.0.0.1:6379/0",
    "redis://localhost",
    "redis://:secret@redis.example:6380/2",
    "rediss://redis.example:6380",
    "unix:///tmp/redis.sock",
])
def test_to_redis_url(raw):
    assert config.to_redis_url(" " + raw + " ") == raw


@pytest.mark.parametrize("raw, message", [
    ("http://127.0.0.1:6379", "not a redis://"),
    ("127.0.0.1:6379", "not a redis://"),
    ("", "not a redis://"),
    ("redis://", "no host"),
    ("redis://:6379/0", "no host"),
    ("redis://127.0.0.1:99999", "bad port"),
    ("redis://127.0.0.1:abc", "bad port"),
])
def test_to_redis_url_rejects(raw, message):
    with pytest.raises(ValueError, match=message):
        config.to_redis_url(raw)


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error", "critical"])
def test_to_log_level(level):
    assert config.to_log_level(level) == level
    assert config.to_log_level(level.upper()) == level


@pytest.mark.parametrize("raw", ["trace", "warn", "", "fatal"])
def test_to_log_level_rejects(raw):
    with pytest.raises(ValueError, match="not a log level"):
        config.to_log_level(raw)


def test_to_queue():
    assert config.to_queue(" jobs:{http} ") == "jobs:{http}"
    for raw in ("", "two words"):
        with pytest.raises(ValueError, match="not a queue name"):
            config.to_queue(raw)


def test_converted_values_through_the_file(load_ini):
    conf = load_ini("""
        [tempest]
        log_level = DEBUG
        [redis]
        url = rediss://:pw@cache.example:6380/3
        [front]
        listen = 0.0.0.0:8080
        answer_listen = 10.1.2.3:0
        max_body = 10M
        max_header_size = 8K
        max_answer = 1G
        timeout = 2.5
        backlog = 16
        access_log = on
        max_queue_length = 0
    """)
    assert conf.tempest.log_level == "debug"
    assert conf.redis.url == "rediss://:pw@cache.example:6380/3"
    assert conf.front.listen == ("0.0.0.0", 8080)
    assert conf.front.answer_listen == ("10.1.2.3", 0)
    assert conf.front.max_body == 10 * 1024 ** 2
    assert conf.front.max_header_size == 8 * 1024
    assert conf.front.max_answer == 1024 ** 3
    assert conf.front.timeout == 2.5
    assert conf.front.backlog == 16
    assert conf.front.access_log == "log"  # on: tempestd's own log
    assert conf.front.max_queue_length == 0


# error messages


def test_configerror_str_shapes():
    assert str(ConfigError("boom")) == "boom"
    assert str(ConfigError("boom", "/etc/t.ini")) == "/etc/t.ini: boom"
    assert str(ConfigError("boom", "/etc/t.ini", "front")) == "/etc/t.ini [front]: boom"
    assert str(ConfigError("boom", "/etc/t.ini", "front", "timeout")) == "/etc/t.ini [front] timeout: boom"
    assert str(ConfigError("boom", None, "front", "timeout")) == "[front] timeout: boom"
    assert str(ConfigError("boom", None, None, "timeout")) == "timeout: boom"


def test_bad_value_message_has_the_exact_shape(load_ini, tmp_path):
    error = load_error(load_ini, "[front]\nmax_body = abc\n")
    path = tmp_path / "tempest.ini"
    assert (error.path, error.section, error.key) == (str(path), "front", "max_body")
    assert str(error) == f"{path} [front] max_body: not a size in bytes (like 512, 64K, 10M, 1G): 'abc'"


@pytest.mark.parametrize("section, key, value", [
    ("tempest", "log_level", "loud"),
    ("redis", "url", "http://x"),
    ("redis", "embedded", "perhaps"),
    ("front", "listen", "1337"),
    ("front", "answer_listen", "host:70000"),
    ("front", "answer_advertise", "nohost"),
    ("front", "timeout", "0"),
    ("front", "max_body", "1.5M"),
    ("front", "max_queue_length", "-5"),
    ("front", "backlog", "0"),
    ("front", "queue", "a b"),
])
def test_every_bad_value_names_file_section_key_and_value(load_ini, tmp_path, section, key, value):
    error = load_error(load_ini, f"[{section}]\n{key} = {value}\n")
    text = str(error)
    assert text.startswith(f"{tmp_path / 'tempest.ini'} [{section}] {key}: ")
    assert repr(value) in text
    assert "\n" not in text


def test_unknown_section_names_file_and_section_and_suggests(load_ini, tmp_path):
    error = load_error(load_ini, "[frnt]\nlisten = 127.0.0.1:80\n")
    text = str(error)
    assert str(tmp_path / "tempest.ini") in text
    assert "[frnt]" in text
    assert "unknown section" in text
    assert "did you mean 'front'?" in text


def test_unknown_route_like_section_suggests_route(load_ini):
    text = str(load_error(load_ini, "[rout:/x/]\nqueue = a\n"))
    assert "[rout:/x/]" in text and "did you mean 'route:" in text


def test_default_section_is_not_special(load_ini):
    text = str(load_error(load_ini, "[DEFAULT]\ntimeout = 5\n"))
    assert "[DEFAULT]" in text and "unknown section" in text


def test_unknown_key_names_file_section_key_and_suggests(load_ini, tmp_path):
    error = load_error(load_ini, "[front]\ntimout = 5\n")
    text = str(error)
    assert (error.section, error.key) == ("front", "timout")
    assert text.startswith(f"{tmp_path / 'tempest.ini'} [front] timout: ")
    assert "unknown key" in text
    assert "did you mean 'timeout'?" in text


def test_unknown_key_far_from_anything_has_no_suggestion(load_ini):
    text = str(load_error(load_ini, "[redis]\nzzzzzz = 1\n"))
    assert "[redis] zzzzzz: unknown key" in text
    assert "did you mean" not in text


def test_keys_are_case_sensitive_with_a_suggestion(load_ini):
    text = str(load_error(load_ini, "[front]\nTimeout = 5\n"))
    assert "[front] Timeout: unknown key" in text and "'timeout'" in text


def test_unreadable_file_names_it(tmp_path):
    missing = tmp_path / "nope.ini"
    with pytest.raises(ConfigError) as info:
        config.load(str(missing))
    assert str(info.value).startswith(f"{missing}: cannot read")


def test_duplicate_key_gives_line_number(load_ini, tmp_path):
    text = str(load_error(load_ini, "[front]\ntimeout = 5\nqueue = q\ntimeout = 6\n"))
    assert text.startswith(str(tmp_path / "tempest.ini"))
    assert "line 4" in text
    assert "duplicate key 'timeout'" in text and "[front]" in text


def test_duplicate_section_gives_line_number(load_ini):
    text = str(load_error(load_ini, "[front]\ntimeout = 5\n\n[front]\nqueue = x\n"))
    assert "line 4" in text and "duplicate section [front]" in text


def test_key_before_any_section_gives_line_number(load_ini):
    text = str(load_error(load_ini, "; comment\ntimeout = 5\n[front]\n"))
    assert "line 2" in text and "before any [section]" in text and "timeout = 5" in text


def test_line_that_is_not_key_value_gives_line_number(load_ini):
    text = str(load_error(load_ini, "[front]\ntimeout = 5\njunk line\n"))
    assert "line 3" in text and "not 'key = value'" in text and "junk line" in text


# regression: configparser (3.11/3.12) hands the bad line over already repr()'d; quoting it
# again gave "'junk line\\n'" with a literal backslash-n
def test_line_that_is_not_key_value_is_quoted_once(load_ini):
    text = str(load_error(load_ini, "[front]\njunk line\n"))
    assert text.endswith("line 2: not 'key = value': 'junk line'")


# routes


def test_routes_longest_prefix_wins(load_ini):
    conf = load_ini("""
        [route:/api/]
        queue = api
        [route:/api/slow/]
        queue = slow
        timeout = 120
        [route:/a]
        queue = a
        [front]
        queue = default
        timeout = 5
    """)
    assert [r.prefix for r in conf.routes] == ["/api/slow/", "/api/", "/a"]
    assert conf.route_for("/api/slow/report?x=1").queue == "slow"
    assert conf.route_for("/api/slow/report").timeout == 120.0
    assert conf.route_for("/api/users").queue == "api"
    assert conf.route_for("/api/users").timeout == 5.0
    assert conf.route_for("/about").queue == "a"
    assert conf.route_for("/other") == config.Route("/", "default", 5.0, "normal", "idempotent", **no_spool(conf))


def test_route_timeout_defaults_to_front_timeout_when_route_comes_first(load_ini):
    conf = load_ini("""
        [route:/slow/]
        queue = slow
        [front]
        timeout = 7
    """)
    assert conf.routes == [config.Route("/slow/", "slow", 7.0, "normal", "idempotent", **no_spool(conf))]


def test_route_timeout_defaults_to_front_timeout_when_route_comes_last(load_ini):
    conf = load_ini("[front]\ntimeout = 9\n[route:/x/]\nqueue = x\ntimeout =\n")
    assert conf.routes[0].timeout == 9.0


def test_route_timeout_defaults_to_builtin_front_timeout(load_ini):
    conf = load_ini("[route:/x/]\nqueue = x\n")
    assert conf.routes[0].timeout == 30.0


def test_route_prefix_must_start_with_slash(load_ini):
    error = load_error(load_ini, "[route:slow]\nqueue = s\n")
    assert error.section == "route:slow"
    assert "[route:slow]" in str(error) and "starts with '/'" in str(error)


def test_route_queue_is_required(load_ini):
    error = load_error(load_ini, "[route:/slow/]\ntimeout = 5\n")
    assert (error.section, error.key) == ("route:/slow/", "queue")
    assert "[route:/slow/] queue: required" in str(error)


def test_route_unknown_key_is_refused(load_ini):
    text = str(load_error(load_ini, "[route:/x/]\nqueue = x\nqeue = y\n"))
    assert "[route:/x/] qeue: unknown key" in text and "did you mean 'queue'?" in text


def test_duplicate_route_prefix_is_refused(load_ini):
    text = str(load_error(load_ini, "[route:/a/]\nqueue = a\n[route: /a/]\nqueue = b\n"))
    assert "duplicate route prefix '/a/'" in text


# checks across keys


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]"])
def test_answer_listen_on_every_interface_needs_advertise(load_ini, host):
    error = load_error(load_ini, f"[front]\nanswer_listen = {host}:0\n")
    assert (error.section, error.key) == ("front", "answer_advertise")
    assert "answer_advertise" in str(error)


def test_answer_listen_on_every_interface_with_advertise_is_accepted(load_ini):
    conf = load_ini("[front]\nanswer_listen = 0.0.0.0:7000\nanswer_advertise = 10.0.0.5:7000\n")
    assert conf.front.answer_listen == ("0.0.0.0", 7000)
    assert conf.front.answer_advertise == ("10.0.0.5", 7000)


@pytest.mark.parametrize("url", ["unix:///tmp/redis.sock", "rediss://127.0.0.1:6380"])
def test_embedded_redis_needs_a_redis_url(load_ini, url):
    error = load_error(load_ini, f"[redis]\nurl = {url}\nembedded = yes\n")
    assert (error.section, error.key) == ("redis", "url")
    assert "embedded" in str(error)


def test_unix_url_without_embedded_is_accepted(load_ini):
    assert load_ini("[redis]\nurl = unix:///tmp/redis.sock\n").redis.url == "unix:///tmp/redis.sock"


# paths


def test_relative_dirs_resolve_against_the_ini_directory(write_ini, tmp_path, monkeypatch):
    path = write_ini("""
        [tempest]
        run_dir = ../run
        log_file = logs/tempest.log
        [redis]
        data_dir = data
    """, name="etc/tempest.ini")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for given in (str(path), os.path.relpath(path)):
        conf = config.load(given)
        assert conf.tempest.run_dir == str(tmp_path / "run")
        assert conf.tempest.log_file == str(tmp_path / "etc" / "logs" / "tempest.log")
        assert conf.redis.data_dir == str(tmp_path / "etc" / "data")


def test_absolute_dirs_are_kept(load_ini, tmp_path):
    conf = load_ini("[tempest]\nrun_dir = /var/run/tempest\n[redis]\ndata_dir = /var/lib/tempest\n")
    assert conf.tempest.run_dir == "/var/run/tempest"
    assert conf.redis.data_dir == "/var/lib/tempest"
    assert conf.tempest.log_file == ""  # empty stays empty: standard error


def test_inline_comments_are_stripped(load_ini):
    conf = load_ini("[front]\ntimeout = 12 ; seconds\nqueue = q # the queue\n")
    assert conf.front.timeout == 12.0
    assert conf.front.queue == "q"


# documentation


def test_markdown_lists_every_setting():
    text = config.markdown()
    for setting in config.SETTINGS:
        assert f"| `{setting.key}` |" in text


def test_every_setting_is_documented_in_docs_configuration_md():
    assert DOCS.is_file(), f"{DOCS} does not exist"
    text = DOCS.read_text(encoding="utf-8")
    missing = [
        f"[{s.section}] {s.key}" for s in config.SETTINGS
        if f"`{s.key}`" not in text and not re.search(rf"^\s*{re.escape(s.key)}\s*=", text, re.M)
    ]
    assert not missing, f"not in {DOCS}: {missing}"
    for section in {s.section for s in config.SETTINGS}:
        assert f"[{section}" in text, f"section [{section}] not in {DOCS}"


@pytest.mark.parametrize("text, expected", [
    ("[worker:w]\ncommand = x\nnumprocs = 10000\n", "[worker:w] numprocs: out of range (1 to 1024): '10000'"),
    ("[front]\nmax_body = 99999999999G\n", "[front] max_body: out of range (0 to 1024G): '99999999999G'"),
    ("[front]\nmax_body = 5G\n", "[front] max_body: over 4G needs spool = yes or redis"),
    ("[route:/up/]\nqueue = q\nmax_body = 5G\nspool = no\n", "[route:/up/] max_body: over 4G needs spool"),
    ("[front]\nspool_over = 2G\n", "[front] spool_over: out of range (0 to 1G): '2G'"),
    ("[route:/up/]\nqueue = q\nspool = maybe\n", "[route:/up/] spool: not no, yes or redis: 'maybe'"),
    ("[front]\ntimeout = 1e9\n", "[front] timeout: out of range (0.001 to 86400): '1e9'"),
    ("[pubsub]\nmax_frame = 0\n", "[pubsub] max_frame: out of range (1 to 64M): '0'"),
    ("[route:/api/]\nqueue = q\ntimeout = 100000\n", "[route:/api/] timeout: out of range (0.001 to 86400): '100000'"),
])
def test_values_out_of_a_sane_range_are_refused(load_ini, text, expected):
    assert expected in str(load_error(load_ini, text))


@pytest.mark.parametrize("text, expected", [
    ("[pubsub]\nsub_prefix = /s/\nws_prefix = /s/\n", "[pubsub] ws_prefix: overlaps sub_prefix '/s/'"),
    ("[pubsub]\nsub_prefix = /live/\nws_prefix = /live/ws/\n", "[pubsub] ws_prefix: overlaps sub_prefix '/live/'"),
    ("[static:/sub/files/]\ndirectory = {dir}\n", "[static:/sub/files/]: under [pubsub] sub_prefix '/sub/'"),
    ("[route:/ws/jobs/]\nqueue = q\n", "[route:/ws/jobs/]: under [pubsub] ws_prefix '/ws/'"),
    ("[static:/files/]\ndirectory = {dir}\n[route:/files/api/]\nqueue = q\n",
     "[route:/files/api/]: under [static:/files/] '/files/'"),
])
def test_prefixes_that_hide_a_section_are_refused(load_ini, tmp_path, text, expected):
    assert expected in str(load_error(load_ini, text.format(dir=tmp_path)))


def test_bounds_are_in_the_docs():
    assert "| `numprocs` | `1` | How many processes of it to run. From 1 to 1024. |" in config.markdown()
