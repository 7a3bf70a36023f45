"""Property tests of tempest.config.load: any text, and any bytes, in an INI file give a Config
or a ConfigError (one line for tempestd --check), never another exception."""

import os
import tempfile

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tempest import config
from tempest.errors import ConfigError

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SECTIONS = ["tempest", "redis", "front", "pubsub", "static:/s/", "worker:w", "route:/r/", "route:r", "worker:",
            "static:", "nope", "front ", "FRONT", "worker:a b"]
KEYS = {"tempest": ["name", "run_dir", "log_level", "log_file"],
        "redis": ["url", "embedded", "data_dir", "server_bin"],
        "front": ["listen", "answer_listen", "answer_advertise", "answer_password", "answer_max_connections",
                  "answer_idle_timeout", "queue", "timeout", "max_body", "max_queue_length", "max_header_size",
                  "max_connections", "body_timeout", "header_timeout", "keepalive_timeout", "max_answer",
                  "max_stream_buffer", "backlog", "graceful_timeout", "access_log", "redeliver_interval",
                  "max_redeliveries", "session_cookie", "session_ttl", "session_secure", "session_secret",
                  "session_secret_file"],
        "pubsub": ["sub_prefix", "ws_prefix", "heartbeat", "allow_origins", "durable", "history", "ws_queue",
                   "client_buffer", "max_frame", "max_channels"],
        "static": ["directory", "index"],
        "worker": ["command", "numprocs", "directory", "environment", "user", "autostart", "autorestart",
                   "exitcodes", "startsecs", "startretries", "stopsignal", "stopwaitsecs", "stdout_logfile",
                   "stderr_logfile", "logfile_maxbytes", "logfile_backups"],
        "route": ["queue", "timeout"]}
VALUES = st.sampled_from(["", "0", "-1", "1", "10000", "99999999999G", "1e400", "nan", "inf", "yes", "maybe",
                          "127.0.0.1:0", "[::1]:0", "*:80", "host:99999", ":", "redis://127.0.0.1:1/0",
                          "unix:///x", "rediss://", "/sub/", "/ws/", "/", "%(process_num)s", "%(nope)s", "%(",
                          "a=1,b=2", "a=", "=b", "TERM", "SIGKILL", "9", "0,2", "x" * 300, "\t", "é", "\\", '"q"',
                          "'q", "1.5", "1K", "1M", "4G", "5G", "0.0001", "86401", "root", "nobody", "."]) \
    | st.text(st.characters(blacklist_characters="\r\n\x00"), max_size=20)


@st.composite
def ini_texts(draw):
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        section = draw(st.sampled_from(SECTIONS) | st.text(st.characters(blacklist_characters="\r\n]"), max_size=10))
        lines.append(f"[{section}]")
        keys = KEYS.get(section.split(":")[0], []) + ["bogus", ""]
        for _ in range(draw(st.integers(0, 5))):
            key = draw(st.sampled_from(keys) | st.text(st.characters(blacklist_characters="\r\n=:[") , max_size=8))
            sep = draw(st.sampled_from([" = ", "=", ": ", " "]))
            lines.append(f"{key}{sep}{draw(VALUES)}")
        if draw(st.booleans()):
            lines.append(draw(st.text(max_size=30)))  # anything: continuation lines, comments, junk
    return "\n".join(lines)


def load_bytes(data: bytes):
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "tempest.ini")
        with open(path, "wb") as handle:
            handle.write(data)
        try:
            return config.load(path)
        except ConfigError as exc:
            message = str(exc)
            assert message and "\n" not in message.strip(), f"not one line: {message!r}"
            assert "Traceback" not in message
            return exc


@FAST
@given(ini_texts())
@example("[front]\nmax_body = 99999999999G\n")
@example("[worker:w]\ncommand = x %(\n")
@example("[front]\nlisten = [::1\n")
@example("[pubsub]\nsub_prefix = /a/\nws_prefix = /a/b/\n")
@example("[front]\n  continued\nlisten = 1\n")
@example("x = 1\n")
@example("[route:/r/]\n[route:/r/]\n")
def test_any_ini_text_is_a_config_or_a_config_error(text):
    result = load_bytes(text.encode("utf-8", "surrogatepass"))
    assert isinstance(result, (config.Config, ConfigError))


@FAST
@given(st.binary(max_size=300) | ini_texts().map(lambda t: t.encode("utf-8", "surrogatepass")).flatmap(
    lambda data: st.binary(max_size=8).map(lambda junk: data[:len(data) // 2] + junk + data[len(data) // 2:])))
@example(b"[front]\nlisten = \xff\n")
@example(b"\xef\xbb\xbf[front]\n")
@example(b"[front]\x00\n")
@example(b"\xed\xa0\x80")
def test_any_bytes_are_a_config_or_a_config_error(data):
    result = load_bytes(data)
    assert isinstance(result, (config.Config, ConfigError))
