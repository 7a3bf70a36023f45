"""The converters of the settings table: each takes a setting's raw string and returns its
value, or raises ValueError with a message that names the bad value. A converter's return
annotation is the type of its setting's field in the section classes (config.py)."""

import os
import pwd
import re
import shlex
import signal
import string
import urllib.parse

from tempest import keys, redisurl

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)b?\s*$", re.IGNORECASE)
_QUEUE = re.compile(r"^[^\s]+$")
_CHANNEL = re.compile(r"^[^\x00-\x20,\x7f]+$")  # as tempest.http.sse accepts in a path
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def to_str(raw: str) -> str:
    return raw.strip()


def to_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("yes", "true", "on", "1"):
        return True
    if value in ("no", "false", "off", "0"):
        return False
    raise ValueError(f"not a boolean (yes/no): {raw!r}")


REDELIVERIES = ("idempotent", "always", "never")  # which jobs of a dead worker go to another one


def to_priority(raw: str) -> str:
    """A route's priority: high, normal or low."""
    value = raw.strip().lower()
    if value not in keys.PRIORITIES:
        raise ValueError(f"not a priority (high, normal, low): {raw!r}")
    return value


def to_redeliver(raw: str) -> str:
    """A route's redelivery rule: idempotent (not POST or PATCH), always or never."""
    value = raw.strip().lower()
    if value not in REDELIVERIES:
        raise ValueError(f"not a redelivery rule (idempotent, always, never): {raw!r}")
    return value


def to_access_log(raw: str) -> str:
    """[front] access_log: "" (off), "log" (tempestd's own log) or a file's path."""
    value = raw.strip()
    if value.lower() in ("no", "false", "off", "0", ""):
        return ""
    if value.lower() in ("yes", "true", "on", "1", "log"):
        return "log"
    return value


def to_positive_int(raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"not a positive integer: {raw!r}")
    return value


def to_processes(raw: str) -> int:
    """A positive integer, or ``auto``: the number of cores tempestd may run on."""
    if raw.strip().lower() == "auto":
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    try:
        return to_positive_int(raw)
    except ValueError:
        raise ValueError(f"not a positive integer nor auto: {raw!r}") from None


def to_count(raw: str) -> int:
    """A non-negative integer (0 usually means 'no limit')."""
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"not a non-negative integer: {raw!r}")
    return value


def to_seconds(raw: str) -> float:
    try:
        value = float(raw.strip().removesuffix("s"))
    except ValueError:
        value = -1.0
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"not a positive number of seconds: {raw!r}")
    return value


def to_size(raw: str) -> int:
    match = _SIZE.match(raw)
    if not match:
        raise ValueError(f"not a size in bytes (like 512, 64K, 10M, 1G): {raw!r}")
    number, unit = match.groups()
    return int(number) * 1024 ** " kmg".index(unit.lower() or " ")


def to_hostport(raw: str) -> tuple[str, int]:
    host, sep, port = raw.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"not host:port: {raw!r}")
    return host, int(port)


def to_optional_hostport(raw: str) -> tuple[str, int] | None:
    return to_hostport(raw) if raw.strip() else None


def to_redis_url(raw: str) -> str:
    url = raw.strip()
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == redisurl.SENTINEL:
        try:
            redisurl.sentinel_parts(url)
        except ValueError as exc:
            raise ValueError(f"{exc}: {redisurl.redacted(raw)!r}") from None
        return url
    if parsed.scheme == redisurl.CLUSTER:
        try:
            redisurl.cluster_parts(url)
        except ValueError as exc:
            raise ValueError(f"{exc}: {redisurl.redacted(raw)!r}") from None
        return url
    if parsed.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("not a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL: "
                         f"{redisurl.redacted(raw)!r}")
    if parsed.scheme != "unix" and not parsed.hostname:
        raise ValueError(f"no host in Redis URL: {redisurl.redacted(raw)!r}")
    try:
        parsed.port
    except ValueError:
        raise ValueError(f"bad port in Redis URL: {redisurl.redacted(raw)!r}") from None
    return url


def to_log_level(raw: str) -> str:
    value = raw.strip().lower()
    if value not in LOG_LEVELS:
        raise ValueError(f"not a log level ({', '.join(LOG_LEVELS)}): {raw!r}")
    return value


def to_command(raw: str) -> tuple[str, ...]:
    try:
        argv = shlex.split(raw)
    except ValueError as exc:
        raise ValueError(f"cannot split command ({exc}): {raw!r}") from None
    if not argv:
        raise ValueError("empty command")
    return tuple(argv)


def to_environment(raw: str) -> tuple[tuple[str, str], ...]:
    """KEY=value pairs separated by commas or newlines; values may be quoted. Returns the
    sorted (key, value) pairs (hashable, so that equal sections compare equal)."""
    env = {}
    lexer = shlex.shlex(raw.replace("\n", ","), posix=True, punctuation_chars=False)
    lexer.whitespace = ","
    lexer.whitespace_split = True
    try:
        items = [item.strip() for item in lexer if item.strip()]
    except ValueError as exc:
        raise ValueError(f"cannot parse environment ({exc}): {raw!r}") from None
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key.strip()):
            raise ValueError(f"not KEY=value: {item!r}")
        env[key.strip()] = value.strip()
    return tuple(sorted(env.items()))


def to_autorestart(raw: str) -> bool | str:
    value = raw.strip().lower()
    if value == "unexpected":
        return value
    try:
        return to_bool(value)
    except ValueError:
        raise ValueError(f"not true, false or unexpected: {raw!r}") from None


def to_exitcodes(raw: str) -> frozenset[int]:
    try:
        codes = frozenset(int(code) for code in raw.replace(" ", "").split(",") if code)
    except ValueError:
        codes = frozenset([-1])
    if not codes or not all(0 <= code <= 255 for code in codes):
        raise ValueError(f"not a list of exit codes (like 0,2): {raw!r}")
    return codes


def to_signal(raw: str) -> signal.Signals:
    name = raw.strip().upper().removeprefix("SIG")
    try:
        return signal.Signals["SIG" + name]
    except KeyError:
        raise ValueError(f"not a signal name (TERM, INT, QUIT, HUP, KILL, USR1, USR2): {raw!r}") from None


def to_user(raw: str) -> str:
    name = raw.strip()
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise ValueError(f"no such user: {raw!r}") from None
    return name


def to_duration0(raw: str) -> float:
    """Seconds, zero allowed."""
    try:
        value = float(raw.strip().removesuffix("s"))
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ValueError(f"not a number of seconds: {raw!r}")
    return value


def to_list(raw: str) -> tuple[str, ...]:
    """Words separated by commas or spaces."""
    return tuple(word for word in re.split(r"[,\s]+", raw.strip()) if word)


def to_prefix(raw: str) -> str:
    value = raw.strip()
    if not value.startswith("/") or not value.endswith("/"):
        raise ValueError(f"not a path prefix starting and ending with '/': {raw!r}")
    return value


def to_cookie_name(raw: str) -> str:
    value = raw.strip()
    if value and not _TOKEN.match(value):
        raise ValueError(f"not a cookie name (letters, digits and !#$%&'*+-.^_`|~): {raw!r}")
    return value


def to_channel_template(raw: str) -> str:
    """A per-user channel's name with ``{user}`` (the session's user id) and ``{name}`` (what
    follows ``~`` in the path): ``user.{user}.{name}``."""
    value = raw.strip()
    try:
        parsed = list(string.Formatter().parse(value))
        sample = value.format(user="42", name="inbox")
    except (ValueError, IndexError, KeyError) as exc:
        raise ValueError(f"not a channel template ({exc}): {raw!r}") from None
    fields = [field for _, field, _, _ in parsed if field is not None]
    if ("user" not in fields or set(fields) - {"user", "name"} or len(fields) != len(set(fields))
            or any(spec or conv for _, f, spec, conv in parsed if f)):
        raise ValueError(f"not a channel template (with {{user}} once, maybe {{name}} once, nothing else in "
                         f"braces): {raw!r}")
    if not _CHANNEL.match(sample):
        raise ValueError(f"not a channel name once filled in (no spaces, commas or control characters): {raw!r}")
    if "name" in fields:
        # a name is letters, digits, '_' and '-' only: with a character outside these between
        # {user} and {name}, a channel comes from one (user, name) pair only, so that the user
        # "bob" asking for ~smith.inbox never reaches the inbox of the user "bob.smith"
        user, name = value.index("{user}"), value.index("{name}")
        between = value[user + len("{user}"):name] if user < name else value[name + len("{name}"):user]
        if not re.search(r"[^A-Za-z0-9_-]", between):
            raise ValueError(f"not a channel template: {{user}} and {{name}} need a separator that is not a "
                             f"letter, digit, '_' or '-' (user.{{user}}.{{name}}): {raw!r}")
    return value


def to_queue(raw: str) -> str:
    value = raw.strip()
    if not _QUEUE.match(value):
        raise ValueError(f"not a queue name (non-empty, no spaces): {raw!r}")
    return value


def to_spool(raw: str) -> str:
    """Where a route's large request bodies go: no (memory), yes (a file) or redis."""
    value = raw.strip().lower()
    if value in ("no", "false", "off", "0"):
        return "no"
    if value in ("yes", "true", "on", "1", "file"):
        return "yes"
    if value == "redis":
        return value
    raise ValueError(f"not no, yes or redis: {raw!r}")


def to_directory(raw: str) -> str:
    """A directory's path (an empty one is unset: the route takes [front]'s)."""
    return raw.strip()
