"""Private and per-user channels: the visitor's session decides who may subscribe.

A stream (SSE or WebSocket) naming a channel that matches ``[pubsub] private`` is admitted only
when the session of the request's signed cookie allows every such channel: a pattern of its
grants (the Redis set ``tempest:grants:<session id>``, written by workers) matches it, or the
worker of ``[pubsub] authorize_queue`` answered an ``authorize`` job for it with an allow.
``<sub_prefix>~<name>`` names the channel of the session's user (``user_field``,
``user_channel``). One pipelined round trip reads what a subscription needs (SMEMBERS of the
grants, EXISTS of the session, HGET of its user field), never one per message. ``Access.run``
re-checks every live private stream every ``grant_check`` seconds, in one pipelined round trip
for all of them (one per CHECK_BATCH sessions, so that 10,000 streams never hold the event loop
for a quarter of a second at once), and ends those no longer allowed (``relay.Revoked``): a revoke, a logout (the
session's hash gone) or a new user id takes effect within that time. docs/pubsub.md tells the
whole story.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import re
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
import redis

from tempest import jobs, keys, redisconn, resp, sessions
from tempest.redisconn import ConnectionFailed
from tempest.relay import Revoked
from tempest.waiting import Outcome

if TYPE_CHECKING:
    from tempest.config import Config
    from tempest.http.request import Request
    from tempest.pusher import Pusher
    from tempest.relay import Subscriber
    from tempest.stats import Stats
    from tempest.waiting import Pending, Registry

log = logging.getLogger(__name__)

AUTHORIZE_ACTION = "authorize"
USER_PREFIX = "~"  # <sub_prefix>~<name>: the session's user's channel (with [pubsub] user_field)
MAX_CACHED = 100_000  # authorize answers kept (per session and channel), the oldest dropped first
MAX_ASKING = 1024  # authorize jobs awaited at once; a subscription that would need more gets 503
MAX_TTL = 86400.0  # seconds an authorize answer may be cached at most
MAX_USER = 256  # characters of a user id put into a channel name
CHECK_BATCH = 1000  # sessions read per round trip of a check: some 25 ms of the event loop each
LOG_BURST = 20  # refusal lines logged per second at most (a flood of refusals is counted, not logged)
_CHANNEL = re.compile(r"^[^\x00-\x20,\x7f]+$")  # as tempest.http.sse accepts in a path
# what may follow ~: a separator outside these sits between {user} and {name} in user_channel
# (tempest.converters), so that a channel comes from one user and one name only
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SPECIAL = re.compile(r"[*?\[]")  # what makes an fnmatch pattern more than its text
FORBIDDEN = (b"403 Forbidden: this session may not subscribe to every channel of this stream "
             b"(private channels need a grant)\n")
UNAVAILABLE = b"503 Service Unavailable: cannot check who may subscribe now; try again later\n"
TEXT = [(b"Content-Type", b"text/plain; charset=utf-8")]


class Unavailable(Exception):
    """The decision cannot be made now (Redis failing, too many authorize jobs awaited): 503."""


def granted(channel: str, patterns: Iterable[str]) -> bool:
    """Whether a grant pattern (fnmatch, case-sensitive) matches ``channel``. The usual ones,
    a name or a prefix and ``*``, are compared as text: fnmatch compiles each pattern into a
    regex kept in a cache of 32,768, which the grants of 20,000 sessions would thrash."""
    for pattern in patterns:
        special = _SPECIAL.search(pattern)
        if special is None:
            if channel == pattern:
                return True
        elif special.start() == len(pattern) - 1 and pattern[-1] == "*":
            if channel.startswith(pattern[:-1]):
                return True
        elif fnmatch.fnmatchcase(channel, pattern):
            return True
    return False


def decision(payload: bytes) -> tuple[bool, float]:
    """(allow, ttl) of an authorize answer: ``{"allow": true|false, "ttl": seconds}`` (a bare
    ``true`` or ``false`` is taken too). A ttl that is not a number of seconds counts as 0.

    Raises:
        ValueError: not such an answer.
    """
    try:
        value = jobs.loads(payload)
    except RecursionError:
        raise ValueError("nested too deep") from None
    if isinstance(value, bool):
        return value, 0.0
    if not isinstance(value, dict) or not isinstance(value.get("allow"), bool):
        raise ValueError('not {"allow": true|false, "ttl": seconds}')
    ttl = value.get("ttl", 0)
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl < 0:
        ttl = 0.0
    return value["allow"], min(float(ttl), MAX_TTL)


def user_id(raw: bytes | None) -> str | None:
    """The user id of a session's user field (the JSON list ``[value]``): a string or an
    integer fit for a channel name, else None."""
    if raw is None:
        return None
    try:
        value = jobs.loads(raw)
    except (ValueError, RecursionError):
        return None
    value = value[0] if isinstance(value, list) and len(value) == 1 else None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value)
    return text if len(text) <= MAX_USER and _CHANNEL.match(text) else None


class Decisions:
    """Authorize answers with a ttl, per (session, channel), until they expire. An entry made
    while the session's hash existed stops counting once it is gone (a logout)."""

    def __init__(self, limit: int = MAX_CACHED) -> None:
        self.limit = limit
        self._entries: dict[tuple[str, str], tuple[bool, float, bool]] = {}  # -> (allow, until, existed)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, session_id: str, channel: str, exists: bool, now: float) -> tuple[bool, float] | None:
        entry = self._entries.get((session_id, channel))
        if entry is None:
            return None
        allow, until, existed = entry
        if until <= now or (existed and not exists):
            del self._entries[(session_id, channel)]
            return None
        return allow, until

    def put(self, session_id: str, channel: str, allow: bool, until: float, existed: bool, now: float) -> None:
        key = (session_id, channel)
        self._entries.pop(key, None)
        if len(self._entries) >= self.limit:
            self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
            while len(self._entries) >= self.limit:
                del self._entries[next(iter(self._entries))]  # the oldest
        self._entries[key] = (allow, until, existed)


class Watch:
    """A live stream with private or per-user channels, re-checked every grant_check."""

    __slots__ = ("session", "peer", "private", "authorized", "derived", "user", "existed", "headers",
                 "subscriber", "asking", "revoked")

    def __init__(self, session_id: str | None, peer: str, private: list[str], derived: list[str],
                 user: str | None, existed: bool, headers: dict[str, str]) -> None:
        self.session = session_id
        self.peer = peer
        self.private = private  # private channels named as such: a grant or the authorize worker allows each
        self.authorized: dict[str, float] = {}  # channel -> until when the authorize worker allows it (monotonic)
        self.derived = derived  # the channels of ~names, allowed while the session's user stays ``user``
        self.user = user
        self.existed = existed  # the session's hash existed: its disappearance is a logout
        self.headers = headers  # for the authorize jobs that ask again
        self.subscriber: Subscriber | None = None
        self.asking = False
        self.revoked = False


class Admission:
    """What a subscription may do: its channels (the ~names resolved), or its refusal."""

    __slots__ = ("channels", "status", "watch")

    def __init__(self, channels: list[str], status: int = 200, watch: Watch | None = None) -> None:
        self.channels = channels
        self.status = status  # 200, or 400, 403, 503: refused
        self.watch = watch

    def refusal(self) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The refusal's status, headers and short text body."""
        body = FORBIDDEN if self.status == 403 else UNAVAILABLE if self.status == 503 else b"400 Bad Request\n"
        return self.status, TEXT, body


class Access:
    """Who may subscribe to what: the admission of each stream, and the re-check of live ones.

    Args:
        client: a redis-py client many greenlets share (a blocking pool).
        pusher, registry: to push authorize jobs and await their answers.
        respond_to: the answer endpoint, for the authorize jobs.
    """

    def __init__(self, config: Config, client: redis.Redis, pusher: Pusher, registry: Registry, stats: Stats,
                 respond_to: str) -> None:
        self.client = client
        self.pusher = pusher
        self.registry = registry
        self.stats = stats
        self.respond_to = respond_to
        self.watches: set[Watch] = set()
        self.decisions = Decisions()
        self.asking = 0  # authorize jobs awaited now
        # the checks' own lean connection (hiredis, no pool): 10,000 streams' commands in one
        # write, their replies parsed in C; redis-py's pipeline took 0.4 s of the event loop
        self._checks = redisconn.connect(config.redis.url, timeout=10, connect_timeout=2)
        self._logged = (0.0, 0, 0)  # (second, lines logged in it, lines left out since the last one logged)
        self.apply(config)

    def apply(self, config: Config) -> None:
        """Take a (re)loaded configuration: for new subscriptions and the next checks."""
        self.settings = pubsub = config.pubsub
        self.cookie = config.front.session_cookie
        self.session_ttl = int(config.front.session_ttl)
        self.signer = sessions.Signer(config.session_secrets) if self.cookie else None
        self.enabled = bool(pubsub.private or pubsub.user_field)
        if pubsub.user_field:
            sample = pubsub.user_channel.format(user="42", name="inbox")
            if not self.private(sample):
                log.warning("[pubsub] user_channel %s is not private: anyone may subscribe to %s by name "
                            "(add a private pattern that matches it)", pubsub.user_channel, sample)

    def private(self, channel: str) -> bool:
        return granted(channel, self.settings.private)

    # admission

    def admit(self, request: Request, peer: str, names: list[str]) -> Admission:
        """Whether the request's session may subscribe to the channels ``names`` (those of
        the path): the channels to subscribe to, or a refusal (counted and logged)."""
        if not self.enabled:
            return Admission(names)
        settings = self.settings
        per_user = [n for n in names if settings.user_field and n.startswith(USER_PREFIX)]
        private = [n for n in names if n not in per_user and self.private(n)]
        if not per_user and not private:
            return Admission(names)  # public channels: as without private ones
        if not all(_NAME.match(n[len(USER_PREFIX):]) for n in per_user):
            return Admission(names, 400)
        session_id = self._session(request)
        try:
            patterns, exists, user = self._read(session_id, bool(per_user))
        except redis.RedisError as exc:
            log.warning("%s: cannot read the grants of session %s: %s: 503", peer, sessions.short(session_id), exc)
            return Admission(names, 503)
        watch = Watch(session_id, peer, private, [], None, exists,
                      request.headers if settings.authorize_queue else {})
        channels = [n for n in names if n not in per_user]
        if per_user:
            if user is None:
                return self._refused(peer, session_id, per_user[0], "no user in the session")
            watch.user = user
            watch.derived = [settings.user_channel.format(user=user, name=n[len(USER_PREFIX):]) for n in per_user]
            channels = list(dict.fromkeys(channels + watch.derived))
        try:
            refused = self._decide(watch, [c for c in private if not granted(c, patterns)], request.headers)
        except Unavailable as exc:
            log.warning("%s: cannot authorize session %s now: %s: 503", peer, sessions.short(session_id), exc)
            return Admission(names, 503)
        if refused is not None:
            return self._refused(peer, session_id, *refused)
        return Admission(channels, 200, watch)

    def _session(self, request: Request) -> str | None:
        """The session id of the request's cookie if it verifies, else None."""
        assert self.signer is not None  # the configuration needs session_cookie with private channels
        found, _ = sessions.id_from_cookies(request.header("cookie"), self.cookie, self.signer)
        return found

    def _read(self, session_id: str | None, with_user: bool) -> tuple[set[str], bool, str | None]:
        """(grants, whether the session's hash exists, its user id) in one round trip."""
        if session_id is None:
            return set(), False, None
        pipe = self.client.pipeline(transaction=False)
        pipe.smembers(keys.grants(session_id))
        pipe.exists(keys.session(session_id))
        if with_user:
            pipe.hget(keys.session(session_id), self.settings.user_field)
        replies = pipe.execute()  # a command error (a key of another type) raises: 503
        return (_patterns(replies[0]), bool(replies[1]), user_id(replies[2]) if with_user else None)

    def _decide(self, watch: Watch, ungranted: list[str], headers: dict[str, str]) -> tuple[str, str] | None:
        """Ask (or find in the cache) the authorize decisions of the private channels no grant
        allows; (channel, why) of the first refused, or None when all are allowed."""
        if not ungranted:
            return None
        queue = self.settings.authorize_queue
        now = time.monotonic()
        ask = []
        for channel in ungranted:
            cached = self.decisions.get(watch.session, channel, watch.existed, now) if watch.session else None
            if cached is None:
                ask.append(channel)
            elif not cached[0]:
                return channel, "denied by the authorize worker (cached)"
            else:
                watch.authorized[channel] = cached[1]
        if ask and queue is None:
            return ask[0], "no grant"
        for channel, (allow, until) in self._ask(watch, ask, headers).items():
            if not allow:
                return channel, "denied by the authorize worker" if until else "no authorize answer in time"
            watch.authorized[channel] = until
        return None

    def _ask(self, watch: Watch, channels: list[str], headers: dict[str, str]) -> dict[str, tuple[bool, float]]:
        """Send one authorize job per channel, await their answers together (at most
        authorize_timeout): {channel: (allow, until)}; a deny or no answer has until 0 for no
        answer. Answers with a ttl are cached.

        Raises:
            Unavailable: too many jobs awaited already, or the jobs could not be pushed.
        """
        if not channels:
            return {}
        if self.asking + len(channels) > MAX_ASKING:
            raise Unavailable(f"{self.asking} authorize jobs awaited already")
        settings, wake = self.settings, gevent.event.Event()
        timeout = settings.authorize_timeout
        session = {"id": watch.session, "ttl": self.session_ttl} if watch.session else None
        deadline = round(time.time() + timeout, 3)  # the library drops a job taken past it
        waiting: dict[str, tuple[Pending, bytes]] = {}
        for channel in channels:
            job_id = jobs.new_job_id()
            pending = self.registry.add(job_id, AUTHORIZE_ACTION, timeout + 60, wake.set)  # settled by us first
            args = {"channel": channel, "session": session, "headers": headers, "deadline": deadline}
            job = jobs.encode_job(AUTHORIZE_ACTION, [args], self.respond_to, job_id)
            self.pusher.submit(settings.authorize_queue, job, pending)
            waiting[channel] = (pending, job)
        self.asking += len(channels)
        try:
            return self._answers(watch, waiting, time.monotonic() + timeout, wake)
        finally:
            self.asking -= len(channels)

    def _answers(self, watch: Watch, waiting: dict[str, tuple[Pending, bytes]], end: float,
                 wake: gevent.event.Event) -> dict[str, tuple[bool, float]]:
        while any(p.outcome is None for p, _ in waiting.values()) and (left := end - time.monotonic()) > 0:
            wake.wait(left)
            wake.clear()
        found: dict[str, tuple[bool, float]] = {}
        failed = None
        now = time.monotonic()
        for channel, (pending, job) in waiting.items():
            if pending.outcome is None:
                self.registry.forget(pending)
                self.stats.authorize_timeouts += 1
                log.warning("no answer to authorize job %s (channel %s) on queue %s within %ss: denied",
                            pending.job_id, channel[:200], self.settings.authorize_queue, self.settings.authorize_timeout)
                self.pusher.send_later(["LREM", self.settings.authorize_queue, 1, job])  # nobody took it: not later
                found[channel] = (False, 0.0)
            elif pending.outcome is not Outcome.ANSWER:
                failed = pending.outcome.value
            else:
                found[channel] = self._decision(watch, channel, pending, now)
        if failed is not None:
            raise Unavailable(f"cannot push to queue {self.settings.authorize_queue} ({failed})")
        return found

    def _decision(self, watch: Watch, channel: str, pending: Pending, now: float) -> tuple[bool, float]:
        try:
            allow, ttl = decision(pending.payload)
        except ValueError as exc:
            self.stats.bad_answers += 1
            log.warning("bad answer to authorize job %s (channel %s): %s: denied", pending.job_id, channel[:200], exc)
            return False, now
        if ttl and watch.session is not None:
            self.decisions.put(watch.session, channel, allow, now + ttl, watch.existed, now)
        return allow, now + ttl

    def _refused(self, peer: str, session_id: str | None, channel: str, why: str) -> Admission:
        self.stats.subscriptions_refused += 1
        self._log("subscription refused: %s: session %s may not subscribe to %s (%s): 403",
                  peer, sessions.short(session_id), channel[:200], why)
        return Admission([], 403)

    def _log(self, message: str, *args: Any) -> None:
        """An INFO line, at most LOG_BURST a second: a flood of refusals is counted, not logged."""
        second, lines, left_out = self._logged
        now = int(time.monotonic())
        if now != second:
            second, lines = now, 0
        if lines >= LOG_BURST:
            self._logged = (second, lines, left_out + 1)
            return
        if left_out:
            message += " (%d more refused or revoked, not logged)"
            args = (*args, left_out)
        self._logged = (second, lines + 1, 0)
        log.info(message, *args)

    # live streams

    def watch(self, watch: Watch | None, subscriber: Subscriber) -> None:
        """Re-check ``watch`` (an admitted stream's) every grant_check until ``unwatch``."""
        if watch is not None and (watch.private or watch.derived):
            watch.subscriber = subscriber
            self.watches.add(watch)

    def unwatch(self, watch: Watch | None) -> None:
        if watch is not None:
            self.watches.discard(watch)

    def run(self) -> None:
        """Re-check the live private streams every grant_check seconds."""
        while True:
            gevent.sleep(self.settings.grant_check)
            if self.watches:
                try:
                    self.check()
                except ConnectionFailed as exc:  # nothing is relayed while Redis fails: the next check catches up
                    log.warning("cannot re-check the grants of %d private streams: %s", len(self.watches), exc)
                except Exception:  # a bug: logged, and the checks go on
                    log.exception("the re-check of the private streams failed")

    def check(self) -> None:
        """Read every live private stream's session (one pipelined round trip per
        CHECK_BATCH sessions), then end each stream no longer allowed."""
        watches = list(self.watches)
        wanted: dict[str, bool] = {}  # session id -> whether its user field is needed
        for watch in watches:
            if watch.session is not None:
                wanted[watch.session] = wanted.get(watch.session, False) or bool(watch.derived)
        state: dict[str | None, tuple[set[str], bool, str | None] | Exception] = {None: (set(), False, None)}
        sessions_ = list(wanted.items())
        for start in range(0, len(sessions_), CHECK_BATCH):
            state.update(self._read_batch(sessions_[start:start + CHECK_BATCH]))
        now = time.monotonic()
        for number, watch in enumerate(watches, 1):
            if watch in self.watches and not watch.revoked:
                found = state[watch.session]
                if isinstance(found, Exception):
                    self._revoke(watch, watch.private + watch.derived, f"cannot read its grants: {found}")
                else:
                    self._recheck(watch, *found, now)
            if number % CHECK_BATCH == 0:
                gevent.sleep(0)  # the other greenlets run between two batches

    def _read_batch(self, batch: list[tuple[str, bool]]) -> dict[str | None, tuple[set[str], bool, str | None] | Exception]:
        """(grants, whether the hash exists, user id) of each session, or the error of one of
        its commands (a key of another type: that session's alone, its streams end)."""
        commands: list[resp.Command] = []
        for session_id, with_user in batch:
            commands += [["SMEMBERS", keys.grants(session_id)], ["EXISTS", keys.session(session_id)]]
            if with_user:
                commands.append(["HGET", keys.session(session_id), self.settings.user_field])
        replies = iter(self._checks.execute(commands))
        found: dict[str | None, tuple[set[str], bool, str | None] | Exception] = {}
        for session_id, with_user in batch:
            mine = [next(replies) for _ in range(3 if with_user else 2)]
            failed = next((r for r in mine if isinstance(r, Exception)), None)  # a hiredis.ReplyError
            found[session_id] = failed or (_patterns(mine[0]), bool(mine[1]), user_id(mine[2]) if with_user else None)
        return found

    def _recheck(self, watch: Watch, patterns: set[str], exists: bool, user: str | None, now: float) -> None:
        if watch.existed and not exists:
            return self._revoke(watch, watch.private + watch.derived, "the session is gone: logout or expiry")
        if watch.derived and user != watch.user:
            return self._revoke(watch, watch.derived, "the session's user changed")
        need = [c for c in watch.private if not granted(c, patterns) and watch.authorized.get(c, 0.0) <= now]
        ask = []
        for channel in need:
            cached = self.decisions.get(watch.session, channel, exists, now) if watch.session else None
            if cached is None:
                ask.append(channel)
            elif not cached[0]:
                return self._revoke(watch, [channel], "denied by the authorize worker (cached)")
            else:
                watch.authorized[channel] = cached[1]
        if ask and self.settings.authorize_queue is None:
            return self._revoke(watch, ask, "no grant any more")
        if ask and not watch.asking:
            watch.asking = True
            gevent.spawn(self._ask_again, watch, ask)
        return None

    def _ask_again(self, watch: Watch, channels: list[str]) -> None:
        """A live stream's authorize decisions expired: asked again; a deny or no answer ends it."""
        try:
            answers = self._ask(watch, channels, watch.headers)
        except Unavailable as exc:  # kept: the next check asks again
            log.warning("%s: cannot authorize session %s again now: %s", watch.peer, sessions.short(watch.session), exc)
            return
        finally:
            watch.asking = False
        for channel, (allow, until) in answers.items():
            if not allow:
                self._revoke(watch, [channel], "denied by the authorize worker" if until else "no authorize answer in time")
                return
            watch.authorized[channel] = until

    def _revoke(self, watch: Watch, channels: list[str], why: str) -> None:
        if watch.revoked or watch.subscriber is None or watch not in self.watches:
            return
        watch.revoked = True
        self.stats.subscriptions_revoked += 1
        self._log("subscription revoked: %s: session %s may no longer subscribe to %s (%s): stream ended",
                  watch.peer, sessions.short(watch.session), ",".join(channels)[:200], why)
        watch.subscriber.push(Revoked(channels))


def _patterns(members: Iterable[bytes | str]) -> set[str]:
    return {m.decode("utf-8", "replace") if isinstance(m, bytes) else m for m in members}
