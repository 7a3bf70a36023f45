"""Pushing jobs to Redis in batches: every job submitted during one turn of the event loop
goes out in one write, one RPUSH (or bounded push) per queue and priority, over a lean
connection of its own. A high job is pushed to the head of its queue (LPUSH), a low one to the
queue's low list (``keys.low``).

Pushes are never retried: a retried RPUSH can enqueue a job twice. A push that fails settles
its requests with UNAVAILABLE (503), and the next batch reconnects.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
import hiredis

from tempest import keys, redisconn, resp
from tempest.waiting import Outcome, Pending, Registry
from tempest.redisconn import ConnectionFailed
from tempest.stats import Stats

if TYPE_CHECKING:
    from tempest.config import Config

log = logging.getLogger(__name__)

# Push as many jobs as the list has room for (ARGV[2]: RPUSH or LPUSH); return how many were pushed.
BOUNDED_PUSH = """
local room = tonumber(ARGV[1]) - redis.call('LLEN', KEYS[1])
local n = math.min(room, #ARGV - 2)
if n <= 0 then return 0 end
return redis.call(ARGV[2], KEYS[1], unpack(ARGV, 3, n + 2)) and n
"""
PUSH_COMMAND = {"high": "LPUSH", "normal": "RPUSH", "low": "RPUSH"}
MAX_BATCH = 1000  # jobs per pipeline; bounds the size of one write to Redis
CALL_TIMEOUT = 2.0  # seconds call() waits for its reply
MAX_RESULTS = 1000  # entries a gatherer's stream keeps (about: MAXLEN ~), whoever adds them
Job = tuple[str, bytes, Pending | None, str]  # (queue, job, the request waiting for it, priority)


class Pusher:
    def __init__(self, url: str, registry: Registry, stats: Stats, max_queue_length: int = 0) -> None:
        self.connection = redisconn.connect(url)
        self._registry = registry
        self._stats = stats
        self.max_queue_length = max_queue_length
        self._bounded_sha = hashlib.sha1(BOUNDED_PUSH.encode()).hexdigest()
        self._batch: list[Job] = []
        self._results: list[resp.Command] = []  # the XADDs of gathered parts' answers
        self._later: list[resp.Command] = []  # sent with the next write, replies ignored (send_later)
        self._calls: list[tuple[resp.Command, gevent.event.AsyncResult[Any]]] = []  # call(): replies awaited
        self._wake = gevent.event.Event()
        self._failing = False
        self.pushed: dict[str, int] = {}  # queue -> jobs pushed to it (all priorities), since the start

    def apply(self, config: Config) -> None:
        """Take a (re)loaded configuration: the queues' bound."""
        self.max_queue_length = config.front.max_queue_length

    def submit(self, queue: str, job: bytes, pending: Pending | None, priority: str = "normal") -> None:
        """Queue ``job`` for the next push; ``pending`` (or None: nobody waits) is settled
        with UNAVAILABLE or QUEUE_FULL if the push fails. ``priority``: high, normal or low."""
        self._batch.append((queue, job, pending, priority))
        if not self._wake.is_set():
            self._wake.set()

    def add_result(self, key: str, part: bytes, answer: bytes) -> None:
        """Queue the answer of a fan-out's part for its gatherer's stream ``key``, added only
        if the stream exists (XADD NOMKSTREAM: once the gatherer stopped waiting, it is gone)."""
        self._results.append(["XADD", key, "NOMKSTREAM", "MAXLEN", "~", MAX_RESULTS, "*", "part", part,
                              "answer", answer])
        if not self._wake.is_set():
            self._wake.set()

    def send_later(self, command: resp.Command) -> None:
        """Send ``command`` with the next write to Redis (the next batch of jobs, or alone if
        none comes in this turn of the event loop), its reply ignored and never retried:
        housekeeping such as refreshing a session's TTL, at no round trip of its own under load."""
        self._later.append(command)
        if not self._wake.is_set():
            self._wake.set()

    def call(self, command: resp.Command, timeout: float = CALL_TIMEOUT) -> Any:
        """Send ``command`` with the next write and wait for its reply: None if none came
        within ``timeout``, a ConnectionFailed or hiredis.ReplyError if it failed. Never
        retried. (An LREM taking back a job nobody took, say: on the connection that pushed it.)"""
        result: gevent.event.AsyncResult[Any] = gevent.event.AsyncResult()
        self._calls.append((command, result))
        if not self._wake.is_set():
            self._wake.set()
        return result.get(timeout=timeout, block=True) if result.wait(timeout) else None

    def run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._batch:
                batch, self._batch = self._batch[:MAX_BATCH], self._batch[MAX_BATCH:]
                self._push(batch)
            if self._results:
                self._push_results()
            if self._calls:
                calls, self._calls = self._calls, []
                for (_, result), reply in zip(calls, self._execute([command for command, _ in calls])):
                    result.set(reply)
            while self._later:
                self._execute([])

    def _push_results(self) -> None:
        results, self._results = self._results, []
        for command, reply in zip(results, self._execute(results)):
            if isinstance(reply, (Exception, hiredis.ReplyError)):
                self._stats.push_errors += 1
                log.warning("cannot add a gathered answer to %s: %s", command[1], reply)
            elif reply is None:  # NOMKSTREAM: no such stream
                self._stats.answers_dropped += 1
                log.debug("dropped the answer of part %s for %s: nobody gathers it any more", command[8], command[1])

    def _push(self, batch: list[Job]) -> None:
        by_list: dict[tuple[str, str], tuple[list[bytes], list[Pending | None]]] = {}
        for queue, job, pending, priority in batch:
            if pending is not None and not self._registry.waiting(pending):
                continue  # its client left or it timed out before the push: skip it
            jobs, waiting = by_list.setdefault((queue, priority), ([], []))
            jobs.append(job)
            waiting.append(pending)
        if not by_list:
            return
        results = self._execute([self._command(queue, priority, jobs) for (queue, priority), (jobs, _) in by_list.items()])
        for ((queue, _), (jobs, waiting)), result in zip(by_list.items(), results):
            self._settle(queue, waiting, result)

    def _command(self, queue: str, priority: str, jobs: list[bytes]) -> resp.Command:
        key = keys.priority_list(queue, priority)
        if self.max_queue_length:
            return ["EVALSHA", self._bounded_sha, 1, key, self.max_queue_length, PUSH_COMMAND[priority], *jobs]
        return [PUSH_COMMAND[priority], key, *jobs]

    def _execute(self, commands: Sequence[resp.Command]) -> list[Any]:
        later, self._later = self._later[:MAX_BATCH], self._later[MAX_BATCH:]
        try:
            results = self.connection.execute([*commands, *later])[:len(commands)]
            if any(_noscript(r) for r in results):  # first use on this Redis: load the script
                self.connection.execute([["SCRIPT", "LOAD", BOUNDED_PUSH]])
                retry = [c for c, r in zip(commands, results) if _noscript(r)]
                again = iter(self.connection.execute(retry))
                results = [next(again) if _noscript(r) else r for r in results]
            return results
        except ConnectionFailed as exc:
            return [exc] * len(commands)

    def _settle(self, queue: str, waiting: list[Pending | None], result: Any) -> None:
        if isinstance(result, (Exception, hiredis.ReplyError)):
            self._stats.push_errors += len(waiting)
            if not self._failing:
                log.warning("cannot push to queue %s: %s", queue, result)
            self._failing = True
            for pending in waiting:
                if pending is not None:
                    self._registry.settle(pending, Outcome.UNAVAILABLE)
            return
        if self._failing:
            log.warning("pushing to Redis again")
            self._failing = False
        pushed = result if self.max_queue_length else len(waiting)
        self._stats.jobs_pushed += pushed
        self.pushed[queue] = self.pushed.get(queue, 0) + pushed
        if pushed < len(waiting):
            log.warning("queue %s is full (%d jobs): %d requests refused",
                        queue, self.max_queue_length, len(waiting) - pushed)
        for pending in waiting[pushed:]:
            self._stats.queue_full += 1
            if pending is not None:
                self._registry.settle(pending, Outcome.QUEUE_FULL)


def _noscript(reply: object) -> bool:
    return isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT")
