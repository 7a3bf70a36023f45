"""``tempest queues`` and ``tempest dead``: the queues as Redis holds them, read from Redis only
(the ``[redis] url`` of the INI file, never tempestd's control socket), so that they work from
any host that has the INI file.

``queues`` shows every queue of the configuration's routes and every queue a reliable worker
registered on: its lists' depths, its reliable workers (live, busy, idle), its jobs per second
in (tempestd's push counts, tempest.queuestats) and out (estimated), its oldest waiting job's
age and its dead letters. ``dead`` lists a queue's dead letters and puts them back on it.
Every read of many keys is pipelined: one round trip per sample, whatever the number of queues.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import redis
import simplejson as json
from redis.backoff import NoBackoff
from redis.retry import Retry

from tempest import jobs, keys, redisconn, reliable
from tempest.config import Config
from tempest.control_client import format_table, uptime
from tempest.errors import ExitCode
from tempest.queuestats import PUSHED, stats_key
from tempest.redisurl import redacted

MAX_QUEUES = 1000  # queues shown at most: the configuration's first, then the registered ones by name
CHUNK = 1000  # dead letters read (LRANGE) or moved per round trip
DEFAULT_LIMIT = 100  # dead letters listed unless --limit says otherwise
QUEUE_FIELDS = ("queue", "queued", "low", "live", "busy", "idle", "in_per_second", "out_per_second",
                "oldest_age", "dead")
QUEUE_HEADER = ("queue", "queued", "low", "live", "busy", "idle", "in/s", "out/s", "oldest", "dead")
DEAD_FIELDS = ("index", "id", "action", "size", "method", "url")

# KEYS: the dead-letter list, the queue; ARGV: the dead letter, the job to push in its place.
# One job moved atomically, never in both lists nor in neither: a script is not rolled back when
# a command fails, so the push that can fail (a key that is not a list, Redis out of memory)
# comes before the removal, which cannot once LPOS found the letter.
REQUEUE = """
if not redis.call('LPOS', KEYS[1], ARGV[1]) then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('LREM', KEYS[1], 1, ARGV[1])
return 1
"""


def run(settings: Config, args: argparse.Namespace) -> int:
    """Run ``tempest queues`` or ``tempest dead``; the exit status."""
    url = settings.redis.url
    # no retries: an unreachable Redis is reported at once, and a requeue is never sent twice
    client = redisconn.client(url, socket_timeout=10, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))
    try:
        if args.command == "queues":
            return queues(client, settings, args)
        return dead(client, args)
    except redis.ConnectionError as exc:
        print(f"tempest: cannot reach Redis at {redacted(url)}: {exc}", file=sys.stderr)
    except redis.RedisError as exc:
        print(f"tempest: Redis at {redacted(url)}: {exc}", file=sys.stderr)
    finally:
        client.close()
    return ExitCode.RUNTIME


# tempest queues


@dataclasses.dataclass
class Sample:
    """What one look at the queues saw: depths (None: not a list) and push counts."""

    at: float  # time.monotonic()
    queued: dict[str, int | None]
    low: dict[str, int | None]
    pushed: dict[str, int]


def queues(client: redis.Redis, settings: Config, args: argparse.Namespace) -> int:
    registered = registered_workers(client)
    names = queue_names(settings, registered)
    known = len(set(configured_queues(settings)) | set(registered))
    if known > len(names):
        print(f"tempest: {known} queues; {len(names)} shown: the INI file's, then the first registered ones by name",
              file=sys.stderr)
    first = sample(client, names)[0] if args.interval else None
    if first is not None:
        time.sleep(args.interval)
    second, details = sample(client, names, registered)
    rows = queue_rows(names, registered, second, details, first, time.time())
    if args.json:
        print(json.dumps(rows))
    else:
        print(format_queues(rows))
    return ExitCode.OK


def configured_queues(settings: Config) -> list[str]:
    """The queues of the INI file: the default route's, every [route:]'s, the WebSocket messages'."""
    return [settings.front.queue, *(route.queue for route in settings.routes), settings.pubsub.ws_queue]


def registered_workers(client: redis.Redis) -> dict[str, list[str]]:
    """Queue -> ids of the reliable workers registered on it (``tempest:workers``)."""
    workers: dict[str, list[str]] = {}
    for member in client.smembers(keys.WORKERS):
        entry = reliable.parse_entry(member if isinstance(member, str) else member.decode("utf-8", "replace"))
        if entry is not None:
            workers.setdefault(entry[0], []).append(entry[1])
    return workers


def queue_names(settings: Config, registered: dict[str, list[str]]) -> list[str]:
    """The queues to show, sorted: the configuration's, then the registered ones, MAX_QUEUES at most."""
    names = list(dict.fromkeys(configured_queues(settings)))
    names += sorted(set(registered) - set(names))
    return sorted(names[:MAX_QUEUES])


def sample(client: redis.Redis, names: Sequence[str],
           registered: dict[str, list[str]] | None = None) -> tuple[Sample, dict[str, dict[Any, Any]]]:
    """One round trip: every queue's depths and push count; with ``registered``, also what the
    table shows besides (details: the workers' heartbeats and processing lists, the dead
    letters, and the jobs at both ends of each list, for the oldest one's age)."""
    reads = _Reads(client)
    for name in names:
        reads.add("queued", name, "LLEN", name)
        reads.add("low", name, "LLEN", keys.low(name))
        reads.add("pushed", name, "HGET", stats_key(name), PUSHED)
    for name, worker in _held(names, registered or {}):
        reads.add("alive", (name, worker), "EXISTS", keys.alive(worker))
        reads.add("processing", (name, worker), "LLEN", keys.processing(name, worker))
    if registered is not None:
        for name in names:
            reads.add("dead", name, "LLEN", keys.dead(name))
            for key in (name, keys.low(name)):
                reads.add("ends", (name, key, 0), "LINDEX", key, 0)
                reads.add("ends", (name, key, -1), "LINDEX", key, -1)
    got = reads.execute()
    counts = {what: {name: _count(got[what][name]) for name in names} for what in ("queued", "low", "pushed")}
    pushed = {name: count or 0 for name, count in counts["pushed"].items()}
    return Sample(time.monotonic(), counts["queued"], counts["low"], pushed), got


def _held(names: Sequence[str], registered: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(queue, worker id) of every worker registered on one of ``names``."""
    return [(name, worker) for name in names for worker in registered.get(name, ())]


class _Reads:
    """Commands pipelined, each with where its reply goes: ``execute()[what][whose]``."""

    def __init__(self, client: redis.Redis) -> None:
        self.pipe = client.pipeline(transaction=False)
        self.plan: list[tuple[str, Any]] = []

    def add(self, what: str, whose: Any, *command: str | int) -> None:
        self.pipe.execute_command(*command)
        self.plan.append((what, whose))

    def execute(self) -> dict[str, dict[Any, Any]]:
        got: dict[str, dict[Any, Any]] = {}
        # errors in place (WRONGTYPE: a queue's key that is not a list), not raised
        for (what, whose), reply in zip(self.plan, self.pipe.execute(raise_on_error=False)):
            got.setdefault(what, {})[whose] = reply
        return got


def _count(reply: Any) -> int | None:
    """An integer reply (LLEN, EXISTS, HGET of a counter); None for an error (a key that is not
    a list, say) or anything else."""
    if isinstance(reply, bool) or isinstance(reply, Exception):
        return None
    try:
        return int(reply) if reply is not None else None
    except ValueError:
        return None


def queue_rows(names: Sequence[str], registered: dict[str, list[str]], now: Sample,
               details: dict[str, dict[Any, Any]], before: Sample | None, wall: float) -> list[dict[str, Any]]:
    """One JSON-ready row per queue (QUEUE_FIELDS); ``before``: the earlier sample for the
    rates (None: no rates); ``wall``: time.time() for the jobs' ages."""
    live: dict[str, int] = dict.fromkeys(names, 0)
    busy: dict[str, int] = dict.fromkeys(names, 0)
    for name, worker in _held(names, registered):
        if _count(details["alive"][name, worker]):  # registered, and its heartbeat is there
            live[name] += 1
            busy[name] += bool(_count(details["processing"][name, worker]))
    ends: dict[str, list[Any]] = {name: [] for name in names}
    for (name, _, _), reply in details["ends"].items():
        ends[name].append(reply)
    rows = []
    for name in names:
        rate_in, rate_out = rates(name, before, now)
        rows.append({"queue": name, "queued": now.queued[name], "low": now.low[name], "live": live[name],
                     "busy": busy[name], "idle": live[name] - busy[name], "in_per_second": rate_in,
                     "out_per_second": rate_out, "oldest_age": oldest_age(ends[name], wall),
                     "dead": _count(details["dead"][name])})
    return rows


def rates(name: str, before: Sample | None, now: Sample) -> tuple[float | None, float | None]:
    """Jobs per second in (pushed, as tempestd counts it) and out: an estimate, what came in
    less what the depth grew by (jobs taken back or given back move it too); None if unknown."""
    if before is None or now.at <= before.at:
        return None, None
    seconds = now.at - before.at
    pushed = now.pushed[name] - before.pushed[name]
    if pushed < 0:  # the counters' hash expired or was deleted in between
        return None, None
    rate_in = pushed / seconds
    depths = [s.queued[name] for s in (before, now)] + [s.low[name] for s in (before, now)]
    if any(depth is None for depth in depths):
        return rate_in, None
    grown = (now.queued[name] + now.low[name]) - (before.queued[name] + before.low[name])  # type: ignore[operator]
    return rate_in, max(0.0, rate_in - grown / seconds)


def oldest_age(ends: Sequence[Any], wall: float) -> float | None:
    """The age of the oldest of these jobs (both ends of each list: normal jobs wait at the
    head, high ones are pushed there), from the ``queued`` time of a url job's env; None if
    none carries one."""
    ages = [wall - queued for queued in map(queued_at, ends) if queued is not None]
    return max(0.0, max(ages)) if ages else None


def queued_at(raw: Any) -> float | None:
    """``env["queued"]`` of a url job (Unix seconds), or None."""
    if not isinstance(raw, bytes):
        return None
    try:
        job = jobs.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    try:
        queued = job[1][0]["queued"] if job[0] == jobs.HTTP_ACTION else None
    except (TypeError, KeyError, IndexError):
        return None
    if isinstance(queued, bool) or not isinstance(queued, (int, float)) or not math.isfinite(queued):
        return None
    return float(queued)


def format_queues(rows: Sequence[dict[str, Any]]) -> str:
    shown = []
    for row in rows:
        cells = {**row, "in_per_second": _rate(row["in_per_second"]), "out_per_second": _rate(row["out_per_second"]),
                 "oldest_age": age(row["oldest_age"])}
        shown.append([_cell(cells[field]) for field in QUEUE_FIELDS])
    return format_table(QUEUE_HEADER, shown)


def _rate(value: float | None) -> str | None:
    return None if value is None else f"{value:.1f}"


def age(seconds: float | None) -> str | None:
    """12.3s under a minute, then as an uptime (0:09:44, 3 days, 2:01:00)."""
    if seconds is None:
        return None
    return f"{seconds:.1f}s" if seconds < 60 else uptime(int(seconds))


def _cell(value: Any) -> str:
    """A table cell: '-' for unknown, control characters escaped (a queue or URL is anyone's text)."""
    if value is None:
        return "-"
    text = str(value)
    return text if text.isprintable() else "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


# tempest dead


def dead(client: redis.Redis, args: argparse.Namespace) -> int:
    if args.requeue is not None:
        return requeue(client, args.queue, args.requeue, args.json)
    key = keys.dead(args.queue)
    pipe = client.pipeline(transaction=False)
    pipe.llen(key)
    pipe.lrange(key, 0, args.limit - 1 if args.limit else -1)
    total, letters = pipe.execute()
    rows = [describe(index, raw) for index, raw in enumerate(letters)]
    if args.json:
        print(json.dumps(rows))
    elif rows:
        print(format_dead(rows))
    else:
        print(f"tempest: no dead letters in {key}")
    if total > len(rows):
        print(f"tempest: {len(rows)} of {total} dead letters shown (--limit N, 0 for all)", file=sys.stderr)
    return ExitCode.OK


def describe(index: int, raw: bytes) -> dict[str, Any]:
    """One dead letter as a row (DEAD_FIELDS): its id and action, and method and url for a url
    job; None for what a job that is not one (pushed by hand) lacks."""
    row: dict[str, Any] = {"index": index, "id": None, "action": None, "size": len(raw), "method": None, "url": None}
    job = _decode(raw)
    if job is None:
        return row
    row["id"], row["action"] = str(job[3]), str(job[0])
    env = job[1][0] if job[0] == jobs.HTTP_ACTION and isinstance(job[1], list) and job[1] else None
    if isinstance(env, dict):
        row["method"], row["url"] = env.get("method"), env.get("url")
    return row


def _decode(raw: bytes) -> list[Any] | None:
    """A job envelope [action, args, respond_to, job_id], or None if ``raw`` is not one."""
    try:
        job = jobs.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return job if isinstance(job, list) and len(job) == 4 else None


def format_dead(rows: Sequence[dict[str, Any]]) -> str:
    return format_table(DEAD_FIELDS, ([_cell(row[field]) for field in DEAD_FIELDS] for row in rows))


def requeue(client: redis.Redis, queue: str, ids: Sequence[str], as_json: bool) -> int:
    """Move dead letters back to the tail of ``queue``, each atomically (REQUEUE): every one,
    or those with these job ids. A url job gets a fresh ``queued`` time and loses its
    ``deadline``: its client is long gone, and a worker drops a job past its deadline."""
    key = keys.dead(queue)
    script = client.register_script(REQUEUE)
    moved: list[bool | Exception] = []
    missing: list[str] = []
    if ids:
        wanted = set(ids)
        letters = [raw for raw in _all_letters(client, key) if _id(raw) in wanted]
        moved = _move(client, script, key, queue, letters)
        found = {_id(raw) for raw, done in zip(letters, moved) if done is True}
        missing = [job_id for job_id in dict.fromkeys(ids) if job_id not in found]
    else:
        budget = client.llen(key)  # what is there now: letters that arrive meanwhile are not chased
        while budget > 0 and not _failure(moved):
            letters = _lrange(client, key, 0, min(CHUNK, budget) - 1)
            if not letters:
                break
            budget -= len(letters)
            moved += _move(client, script, key, queue, letters)
    count = sum(done is True for done in moved)
    failure = _failure(moved)
    if failure is not None:
        missing = []  # not looked for: the failure is the news
        print(f"tempest: cannot put dead letters back on queue {queue}: {failure}", file=sys.stderr)
    for job_id in missing:
        print(f"tempest: no dead letter with id {job_id!r} in {key}", file=sys.stderr)
    if as_json:
        print(json.dumps({"requeued": count, "missing": missing}))
    else:
        print(f"tempest: {count} dead letter{'' if count == 1 else 's'} put back on queue {queue}")
    return ExitCode.RUNTIME if missing or failure is not None else ExitCode.OK


def _failure(moved: Sequence[bool | Exception]) -> Exception | None:
    return next((done for done in moved if isinstance(done, Exception)), None)


def _all_letters(client: redis.Redis, key: str) -> list[bytes]:
    letters: list[bytes] = []
    while chunk := _lrange(client, key, len(letters), len(letters) + CHUNK - 1):
        letters += chunk
        if len(chunk) < CHUNK:
            break
    return letters


def _lrange(client: redis.Redis, key: str, start: int, stop: int) -> list[bytes]:
    return [raw if isinstance(raw, bytes) else raw.encode() for raw in client.lrange(key, start, stop)]


def _move(client: redis.Redis, script: Any, key: str, queue: str, letters: Sequence[bytes]) -> list[bool | Exception]:
    """REQUEUE each letter, in one round trip: whether each was still there to move, or the
    error that left it where it was."""
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for raw in letters:
        script(keys=[key, queue], args=[raw, refreshed(raw, now)], client=pipe)
    return [reply if isinstance(reply, Exception) else reply == 1 for reply in pipe.execute(raise_on_error=False)]


def refreshed(raw: bytes, now: float) -> bytes:
    """The job to push for a dead letter: a url job with ``queued`` = now and no ``deadline``;
    any other job as it was."""
    job = _decode(raw)
    if job is None or job[0] != jobs.HTTP_ACTION or not isinstance(job[1], list) or not job[1]:
        return raw
    env = job[1][0]
    if not isinstance(env, dict):
        return raw
    env.pop("deadline", None)
    env["queued"] = round(now, 3)
    return jobs.dumps(job)


def _id(raw: bytes) -> str | None:
    job = _decode(raw)
    return None if job is None else str(job[3])
