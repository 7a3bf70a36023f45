"""The answer endpoint: a RESP server that receives workers' answers.

A worker connects to the ``respond_to`` address of a job as to a Redis server and sends
``<action> <job_id> <json>``; the endpoint hands the JSON to the request waiting for that job
and always replies ``+OK`` (the 2012 workers exit on an error, so an answer for an unknown or
expired job is dropped and counted, not refused). Greetings are answered by ``RespServer``.

An answer is a command named after its job's action: ``url``, ``ws`` and ``authorize`` are tempestd's own,
and a worker that answers jobs of other actions (jobs passed between workers) declares them
first with ``ACTIONS <action> [<action> ...]``. Any other command gets Redis' own reply to an
unknown command, so that a typo in a worker's command is an error, not an answer dropped
silently.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from tempest import __version__, jobs, keys, resp
from tempest.respserver import RECV_SIZE, REDIS_VERSION, ClientState, RespServer, arity

if TYPE_CHECKING:
    from tempest.http.websocket import Sockets
    from tempest.pusher import Pusher
    from tempest.stats import Stats
    from tempest.waiting import Registry

log = logging.getLogger(__name__)

COMMAND_OVERHEAD = 64 * 1024  # an answer's command name, job id and framing, generously
BUILTIN_ACTIONS = frozenset((jobs.HTTP_ACTION, "ws", "authorize"))  # authorize: tempest.grants' jobs
MAX_ACTIONS = 256  # declared actions kept (a bound: they are never forgotten)
_ACTION = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
GATHER = b"gather:"  # the job id of a fan-out's part: gather:<gid>:<index>
_GATHER_ID = re.compile(r"^gather:([A-Za-z0-9_-]{1,64}):(\d{1,6})$")
ABORT = (b"abort", b'"abort"')  # end <job_id> abort, as a word or as JSON


class AnswerServer(RespServer):
    what = "answer endpoint"

    def __init__(self, address: tuple[str, int], registry: Registry, stats: Stats, sockets: Sockets,
                 pusher: Pusher, password: str = "", max_answer: int = 64 << 20, backlog: int = 1024,
                 max_connections: int = 0, idle_timeout: float = 0) -> None:
        # an answer, its command and a whole read beyond it: what an incomplete command may hold
        super().__init__(address, password, backlog, max_connections, idle_timeout,
                         max_command=max_answer + COMMAND_OVERHEAD + RECV_SIZE)
        self._sockets = sockets  # the open WebSockets (tempest.http.websocket.Sockets)
        self._pusher = pusher  # for the results of gathered parts
        self._registry = registry
        self._stats = stats
        self._max_answer = max_answer
        self._actions = set(BUILTIN_ACTIONS)

    def connected(self) -> None:
        self._stats.answer_connections += 1

    def refused(self) -> None:
        self._stats.answer_connections_refused += 1

    def closed(self) -> None:
        self._stats.answer_connections_closed += 1

    def execute(self, client: ClientState, command: list[bytes]) -> bytes:
        if command[0] == b"url" and len(command) == 3 and client.authenticated:  # most commands
            return self.answer("url", command[1:])
        return super().execute(client, command)

    def unknown(self, client: ClientState, name: str, args: list[bytes]) -> bytes:
        if len(args) == 2 and (name in self._actions or args[0].startswith(GATHER)):  # <action> <job_id> <json>
            return self.answer(name, args)
        return super().unknown(client, name, args)

    def cmd_actions(self, client: ClientState, args: list[bytes]) -> bytes:
        """``ACTIONS <action>...``: answers named so are answers, not unknown commands."""
        if not args:
            return arity("actions")
        names = [a.decode("utf-8", "replace").lower() for a in args]
        bad = next((n for n in names if not _ACTION.match(n) or hasattr(self, "cmd_" + n)), None)
        if bad is not None:
            return resp.error(f"ERR not an action name: '{bad[:64]}'")
        new = set(names) - self._actions
        if len(self._actions) + len(new) > MAX_ACTIONS + len(BUILTIN_ACTIONS):
            return resp.error(f"ERR too many actions (at most {MAX_ACTIONS} may be declared)")
        self._actions |= new
        return resp.OK

    def answer(self, action: str, args: list[bytes]) -> bytes:
        job_id = args[0].decode("utf-8", "replace")
        payload = self._bounded(action, job_id, args[1])
        if action == "ws":
            self._to_websocket(job_id, payload)
        elif job_id.startswith("gather:"):
            self._gathered(action, job_id, payload)
        else:
            self._registry.answer(job_id, action, payload)
        return resp.OK

    def _gathered(self, action: str, job_id: str, payload: bytes) -> None:
        """The answer to a part of a fan-out (job id ``gather:<gid>:<index>``): added to the
        stream its gatherer reads (if it still does)."""
        match = _GATHER_ID.match(job_id)
        if match is None:
            self._stats.answers_dropped += 1
            log.debug("dropped answer %s %.80s: not a gather:<gid>:<index> id", action, job_id)
            return
        self._stats.answers += 1
        self._pusher.add_result(keys.gather(match[1]), match[2].encode(), payload)

    # a streamed answer: stream <job_id> <[status, headers]>, chunk <job_id> <bytes>..., end <job_id>

    def cmd_stream(self, client: ClientState, args: list[bytes]) -> bytes:
        if len(args) != 2:
            return arity("stream")
        job_id = args[0].decode("utf-8", "replace")
        self._registry.start_stream(job_id, jobs.HTTP_ACTION, self._bounded("stream", job_id, args[1]))
        return resp.OK

    def _bounded(self, action: str, job_id: str, payload: bytes) -> bytes:
        """``payload``, or, above max_answer, a JSON string (not a list: the request gets a 502)."""
        if len(payload) <= self._max_answer:
            return payload
        log.warning("answer to %s %s is %d bytes, over max_answer", action, job_id, len(payload))
        return b'"answer over max_answer"'

    def cmd_chunk(self, client: ClientState, args: list[bytes]) -> bytes:
        if len(args) != 2:
            return arity("chunk")
        self._registry.chunk(args[0].decode("utf-8", "replace"), args[1], self._max_answer)
        return resp.OK

    def cmd_end(self, client: ClientState, args: list[bytes]) -> bytes:
        """``end <job_id> [<json>]``; ``end <job_id> abort``: the worker failed, the body is incomplete."""
        if len(args) not in (1, 2):
            return arity("end")
        job_id = args[0].decode("utf-8", "replace")
        if len(args) == 2 and args[1] in ABORT:  # explicitly: any other JSON ends the stream normally
            self._registry.abort_stream(job_id)
        else:
            self._registry.chunk(job_id, None, self._max_answer)
        return resp.OK

    def _to_websocket(self, socket_id: str, payload: bytes) -> None:
        """``ws <socket_id> <json>``: a text frame for one WebSocket (a JSON string is sent as
        its text, any other JSON value as JSON)."""
        try:
            value = jobs.loads(payload)
        except (ValueError, RecursionError):
            value = payload.decode("utf-8", "replace")
        if self._sockets.push(socket_id, value if isinstance(value, str) else jobs.dumps(value).decode("utf-8")):
            self._stats.answers += 1
        else:
            self._stats.answers_dropped += 1
            log.debug("dropped ws answer for %s: no such socket", socket_id)

    def cmd_info(self, client: ClientState, args: list[bytes]) -> bytes:
        lines = ["# Server", f"redis_version:{REDIS_VERSION}", f"tempest_version:{__version__}",
                 "redis_mode:standalone", "", "# Tempest", f"pending_jobs:{len(self._registry)}"]
        lines += [f"{name}:{value}" for name, value in self._stats.as_dict().items()]
        return resp.bulk("\r\n".join(lines) + "\r\n")
