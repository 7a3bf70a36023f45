"""The instance registry: each running tempestd's entry in Redis, read by ``tempest status --all``.

Every tempestd has an id unique to its process run (``roles.instance_id``: host, pid and a
random part). Every ``REFRESH`` seconds it writes a JSON description of itself (name, host, role,
version, addresses, uptime, its programs' status rows, a few counters) to
``tempest:instance:<id>`` with a TTL of ``TTL`` seconds, and adds its id to the sorted set
``tempest:instances`` (score: when its entry expires, in its own clock's milliseconds). A
tempestd that stops cleanly removes both; one that is killed leaves its key to expire, and
readers drop the ids whose key is gone. Writers also drop ids past ``PRUNE_AFTER`` (by score,
so that the index cannot grow with every restart even if nobody reads it; an hour's margin
covers the clock differences between hosts). Ages are measured with the key's PTTL, the Redis
server's clock, never by comparing two hosts' clocks.

Also here: the name tempestd gives its Redis connections (``CLIENT SETNAME``, shown by
``CLIENT LIST``), sent on connection with any refusal (an ACL without ``+client|setname``)
logged at debug and otherwise ignored.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import gevent
import hiredis
import redis
import simplejson as json

from tempest import __version__, keys, redisconn
from tempest.errors import ExitCode
from tempest.redisconn import ConnectionFailed, RawConnection
from tempest.roles import role_name

if TYPE_CHECKING:
    from tempest.config import Config
    from tempest.daemon import Daemon

log = logging.getLogger(__name__)

REFRESH = 2.0  # seconds between two writes of an instance's entry
TTL = 3 * REFRESH  # seconds an entry outlives its last write: a killed tempestd is gone after this
PRUNE_AFTER = 3600  # seconds past its expiry (the writer's clock) after which any writer unindexes an id
COUNTERS = ("requests", "jobs_pushed", "answers", "subscribers", "connections_open", "jobs_redelivered",
            "jobs_dead", "jobs_refused", "timeouts")  # of Stats: the ones the registry shows
TABLE = ("instance", "host", "role", "name", "state", "pid", "uptime", "restarts", "last_exit")
NOT_RUNNING = 3  # status --all: some process is not RUNNING, or no instance is registered


def short_id(instance: str) -> str:
    """The random part of an instance id (``roles.instance_id``: host:pid:random), which
    CLIENT LIST and the table show."""
    return instance.rpartition(":")[2]


def role(config: Config) -> str:
    """``front``, ``workers`` (no [front]: a worker host) or ``front+workers`` (tempest.roles)."""
    return role_name(getattr(config, "has_front", True), len(config.programs))


def connection_name(role_name: str, name: str, instance: str) -> str:
    """``tempest:<role>:<name>:<short id>``; CLIENT SETNAME takes no spaces nor newlines."""
    return re.sub(r"[^!-~]", "_", f"tempest:{role_name}:{name}:{short_id(instance)}")


def setname(name: str) -> list[str]:
    """The command that names a connection (a RawConnection's greeting)."""
    return ["CLIENT", "SETNAME", name]


def naming(name: str) -> Callable[[Any], None]:
    """A redis-py ``redis_connect_func``: the usual connection set-up, then CLIENT SETNAME,
    whose refusal is logged at debug (redis-py's own ``client_name`` fails the connection)."""
    def connect(connection: Any) -> None:
        connection.on_connect()
        try:
            connection.send_command("CLIENT", "SETNAME", name)
            connection.read_response()
        except redis.ResponseError as exc:
            log.debug("Redis refused to name a connection %s: %s", name, exc)
    return connect


def name_raw(connections: Sequence[RawConnection], name: str) -> None:
    """Name lean connections from their next (re)connection on."""
    for connection in connections:
        connection.greeting.append(setname(name))


def _address(part: Any) -> str | None:
    """``host:port`` of a listening part (a server with ``address``), or None."""
    address = getattr(part, "address", None) if part is not None else None
    if not isinstance(address, tuple):
        return address
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe(daemon: Daemon, instance: str, started: float, stopping: bool = False) -> dict[str, Any]:
    """What the registry says of a tempestd; ``started`` is its time.monotonic() at start."""
    config = daemon.config
    admin = getattr(daemon, "admin", None)
    control = getattr(daemon, "control", None)
    supervisor = getattr(daemon, "supervisor", None)
    uptime = int(time.monotonic() - started)
    return {
        "id": instance, "name": config.tempest.name, "host": socket.gethostname(), "pid": os.getpid(),
        "role": role(config), "version": __version__, "state": "STOPPING" if stopping else "RUNNING",
        "started_at": round(time.time() - uptime), "uptime": uptime, "ttl": TTL,
        "addresses": {"front": _address(getattr(daemon, "front", None)),
                      "answers": _address(getattr(daemon, "answers", None)),
                      "respond_to": getattr(daemon, "respond_to", None),
                      "admin": _address(admin.server) if admin is not None else None,
                      "control": control.path if control is not None else None},
        "programs": supervisor.status() if supervisor is not None else [],
        "counters": {name: getattr(daemon.stats, name) for name in COUNTERS},
    }


class Registration:
    """Keeps this tempestd's entry in the registry (``run``) and removes it at a clean stop
    (``withdraw``), over a lean connection of its own; never raises for Redis being away."""

    def __init__(self, url: str, describe: Callable[[], dict[str, Any]], instance: str,
                 interval: float = REFRESH, ttl: float = TTL) -> None:
        self.connection = redisconn.connect(url, timeout=5)
        self.describe = describe
        self.instance = instance
        self.interval = interval
        self.ttl = ttl

    def run(self) -> None:
        while True:
            self.refresh()
            gevent.sleep(self.interval)

    def refresh(self) -> None:
        now_ms = int(time.time() * 1000)
        try:
            entry = json.dumps(self.describe())
        except Exception:  # a bug: the entry of the last refresh expires, tempestd goes on
            log.exception("cannot describe this instance for the registry")
            return
        commands: list[list[str | int]] = [
            ["SET", keys.instance(self.instance), entry, "PX", int(self.ttl * 1000)],
            ["ZADD", keys.INSTANCES, now_ms + int(self.ttl * 1000), self.instance],
            ["ZREMRANGEBYSCORE", keys.INSTANCES, "-inf", now_ms - PRUNE_AFTER * 1000]]
        self._send(commands, "register")

    def withdraw(self) -> None:
        self._send([["DEL", keys.instance(self.instance)], ["ZREM", keys.INSTANCES, self.instance]], "unregister")

    def _send(self, commands: list[list[str | int]], what: str) -> None:
        try:
            replies = self.connection.execute(commands)
        except ConnectionFailed as exc:
            log.debug("cannot %s instance %s: %s", what, self.instance, exc)
            return
        for command, reply in zip(commands, replies):
            if isinstance(reply, hiredis.ReplyError):
                log.warning("cannot %s instance %s: %s refused: %s", what, self.instance, command[0], reply)


# the reader's side: tempest status --all


def live_instances(client: redis.Redis) -> list[dict[str, Any]]:
    """Every registered instance whose entry has not expired, by name, host and start; each
    entry's ``age`` is the seconds since its last refresh, and its uptimes are brought up to
    now by it. Ids whose entry is gone are removed from the index."""
    ids = [_text(instance) for instance in cast(list[bytes], client.zrange(keys.INSTANCES, 0, -1))]
    pipe = client.pipeline(transaction=False)
    for instance in ids:
        pipe.get(keys.instance(instance))
        pipe.pttl(keys.instance(instance))
    replies = pipe.execute() if ids else []
    found, gone = [], []
    for instance, raw, pttl in zip(ids, replies[::2], replies[1::2]):
        entry = _entry(raw)
        if entry is None:
            gone.append(instance)
            continue
        age = max(0.0, float(entry.get("ttl", TTL)) - max(pttl, 0) / 1000)
        entry["age"] = round(age, 1)
        entry["uptime"] = int(entry.get("uptime", 0) + age)
        for row in entry.get("programs", []):
            if row.get("pid") and row.get("state") in ("STARTING", "RUNNING", "STOPPING"):
                row["uptime"] = int(row.get("uptime", 0) + age)
        found.append(entry)
    if gone:
        try:
            client.zrem(keys.INSTANCES, *gone)
        except redis.ResponseError as exc:  # a read-only user: the next writer's prune does it
            log.debug("cannot unindex %d expired instances: %s", len(gone), exc)
    return sorted(found, key=lambda e: (str(e.get("name")), str(e.get("host")), e.get("started_at", 0)))


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _entry(raw: bytes | None) -> dict[str, Any] | None:
    """A decoded entry; None if it expired or is not one of ours."""
    if raw is None:
        return None
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and "id" in entry else None


def select(entries: list[dict[str, Any]], targets: Sequence[str]) -> list[dict[str, Any]]:
    """The entries with only the program processes that match ``targets`` (globs of NAME or
    NAME:INDEX, or ``all``); all of them without targets."""
    if not targets:
        return entries
    return [{**entry, "programs": [row for row in entry.get("programs", [])
                                   if any(_matches(str(row.get("name")), t) for t in targets)]}
            for entry in entries]


def _matches(name: str, target: str) -> bool:
    return target == "all" or fnmatch.fnmatchcase(name, target) or fnmatch.fnmatchcase(name.partition(":")[0], target)


def table_rows(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row for each instance (NAME ``tempestd``), then one per program process of it."""
    rows = []
    for entry in entries:
        common = {"instance": f"{entry.get('name')}/{short_id(str(entry['id']))}", "host": entry.get("host"),
                  "role": entry.get("role")}
        rows.append({**common, "name": "tempestd", "state": entry.get("state", "RUNNING"), "pid": entry.get("pid"),
                     "uptime": entry.get("uptime", 0), "restarts": "-", "last_exit": "-"})
        rows += [{**common, **{k: row.get(k) for k in TABLE[3:]}} for row in entry.get("programs", [])]
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    from tempest.control_client import format_table, uptime

    def cells(row: dict[str, Any]) -> list[object]:
        # a process with a pid has an uptime, as in tempest status
        shown = {**row, "pid": row["pid"] or "-", "uptime": uptime(row["uptime"] or 0) if row["pid"] else "-"}
        return ["-" if shown[field] is None else shown[field] for field in TABLE]

    return format_table(TABLE, (cells(row) for row in rows))


def run(settings: Config, args: Any) -> int:
    """``tempest status --all [--json] [TARGET...]``: every live instance and its programs, read
    from the Redis of the INI file (never a control socket); the exit status (3: a process
    is not RUNNING, or no instance is registered)."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from tempest import redisconn
    from tempest.redisurl import redacted

    url = settings.redis.url
    client = redisconn.client(url, socket_timeout=10, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))
    try:
        entries = select(live_instances(client), args.targets)
    except redis.ConnectionError as exc:
        print(f"tempest: cannot reach Redis at {redacted(url)}: {exc}", file=sys.stderr)
        return ExitCode.RUNTIME
    except redis.RedisError as exc:
        print(f"tempest: Redis at {redacted(url)}: {exc}", file=sys.stderr)
        return ExitCode.RUNTIME
    finally:
        client.close()
    rows = table_rows(entries)
    print(json.dumps(entries) if args.json else format_rows(rows))
    if not entries:
        print(f"tempest: no live tempestd is registered in Redis at {redacted(url)}", file=sys.stderr)
    return NOT_RUNNING if not entries or any(row["state"] != "RUNNING" for row in rows) else ExitCode.OK
