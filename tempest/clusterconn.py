"""The lean connection on a Redis Cluster (``redis+cluster://``): RawConnection's interface,
one RawConnection per master.

A batch is split by the slot of each command's key (tempest.slots); each master gets its part
in one write, all of them before any reply is read, so that a batch costs one round trip
whatever the number of masters; the replies are put back in the batch's order. ``-MOVED``
(the slot has another master now) updates the map and sends the command there; ``-ASK`` (a slot
being migrated) sends ``ASKING`` and the command to the node named, once; at most
MAX_REDIRECTIONS for one command. The map of slots is read with ``CLUSTER SLOTS`` from a known
node or a seed: at the first batch, after a MOVED, and after any connection failure (a master
killed: its replica takes its slots over after the cluster's node timeout; until then the
batches sent to it fail). As RawConnection, it never retries a batch whose outcome is unknown.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any

import hiredis

from tempest import resp, slots
from tempest.redisconn import ConnectionFailed, RawConnection
from tempest.redisurl import cluster_parts, query, redacted, with_query

MAX_REDIRECTIONS = 5
DOWN_FOR = 0.5  # seconds a node whose connection failed is not tried again
Address = tuple[str, int]

log = logging.getLogger(__name__)


class NodeFailed(hiredis.ReplyError):
    """The reply of a command whose master's connection failed while others answered their
    part of the batch: its outcome is unknown (a ReplyError, so that every caller that checks
    replies counts it as failed)."""


class ClusterConnection:
    """A lean connection to the Redis Cluster of a ``redis+cluster://`` URL (see the module)."""

    def __init__(self, url: str, timeout: float = 10.0, connect_timeout: float = 2.0,
                 greeting: Iterable[resp.Command] = ()) -> None:
        self.url = urllib.parse.urlparse(url)
        self.seeds, self._username, self._password = cluster_parts(url)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.greeting = list(greeting)
        self._tls = query(url).get("ssl", "").lower() in ("yes", "true", "1", "on")
        self._params = {k: v for k, v in query(url).items() if k.startswith("ssl_")}
        self._nodes: dict[Address, RawConnection] = {}
        self._slots: list[Address | None] = [None] * slots.SLOTS
        self._masters: list[Address] = []
        self._stale = True  # read the map before the next batch
        self._down: dict[Address, float] = {}  # node -> when it may be tried again (it failed)
        self._closed_connects = 0  # connections made by node connections since closed

    @property
    def connects(self) -> int:
        return self._closed_connects + sum(node.connects for node in self._nodes.values())

    def execute(self, commands: Sequence[resp.Command]) -> list[Any]:
        """Send every command to the master of its key's slot; their replies, in order (a
        hiredis.ReplyError for a command refused).

        Raises:
            ConnectionFailed: every master's connection the batch needed failed (its outcome is
                unknown), or no node gave the map of slots. When only some failed, their
                commands' replies are NodeFailed errors, and the others' are kept.
        """
        if self._stale:
            self._refresh()
        replies: list[Any] = [None] * len(commands)
        routes: dict[int, Address] = {}
        for index, command in enumerate(commands):
            if slots.command_name(command) in slots.EVERY_MASTER:  # SCRIPT LOAD: each master its own
                replies[index] = self._on_every_master(command)
            else:
                routes[index] = self._route(command)
        asking: set[int] = set()
        for attempt in range(MAX_REDIRECTIONS + 1):
            redirected = self._round(commands, routes, asking, replies, first=attempt == 0)
            if not redirected:
                return replies
            routes, asking = redirected
        return replies  # the last redirections stay as the replies: "MOVED ..." errors

    def _round(self, commands: Sequence[resp.Command], routes: dict[int, Address], asking: set[int],
               replies: list[Any], first: bool = True) -> tuple[dict[int, Address], set[int]] | None:
        """Send the commands ``routes`` names to their nodes, put the replies in ``replies``;
        the commands redirected, with their new routes and which of them ASK, if any. Raises
        ConnectionFailed when every node of the ``first`` round failed; in a later round (the
        redirected commands alone) the others were done, and the failed get NodeFailed."""
        groups: dict[Address, list[int]] = {}
        for index, address in routes.items():
            groups.setdefault(address, []).append(index)
        sent: list[tuple[RawConnection, list[int], int]] = []
        failed: list[tuple[list[int], ConnectionFailed]] = []
        for address, indexes in groups.items():
            batch: list[resp.Command] = []
            for index in indexes:
                if index in asking:
                    batch.append(["ASKING"])
                batch.append(commands[index])
            node = self._node(address)
            if (resting := self._down.get(address, 0.0) - time.monotonic()) > 0:  # failed just now: not again yet
                failed.append((indexes, ConnectionFailed(f"{address[0]}:{address[1]}: failed {DOWN_FOR - resting:.1f}s ago, "
                                                         f"tried again in {resting:.1f}s")))
                self._stale = True
                continue
            try:
                node.send(batch)
            except ConnectionFailed as exc:
                failed.append((indexes, self._failed(address, exc)))
                continue
            sent.append((node, indexes, len(batch)))
        for node, indexes, count in sent:  # every reply read, so that each connection stays in step
            try:
                got = node.receive(count)
            except ConnectionFailed as exc:
                failed.append((indexes, self._failed(_address(node), exc)))
                continue
            if len(got) > len(indexes):  # drop the replies to ASKING
                got = [reply for reply, command in zip(got, _flatten(indexes, asking)) if command]
            for index, reply in zip(indexes, got):
                replies[index] = reply
        if first and failed and len(failed) == len(groups):
            raise failed[0][1]
        for indexes, problem in failed:  # the other masters' parts were done: only these are unknown
            for index in indexes:
                replies[index] = NodeFailed(f"CONNECTION {problem}")
        moved: dict[int, Address] = {}
        ask: set[int] = set()
        for index in routes:
            redirect = _redirection(replies[index])
            if redirect is None:
                continue
            kind, slot, address = redirect
            moved[index] = address
            if kind == "ASK":
                ask.add(index)
            else:
                self._slots[slot] = address
                self._stale = True
        if moved and self._stale:
            try:
                self._refresh()
            except ConnectionFailed as exc:
                log.debug("cannot read the cluster's slots again after MOVED: %s", exc)
        return (moved, ask) if moved else None

    def _on_every_master(self, command: resp.Command) -> Any:
        """``command``'s reply from every master: the first error, else the first master's."""
        replies = []
        for address in self._masters or self.seeds[:1]:
            try:
                [reply] = self._node(address).execute([command])
            except ConnectionFailed as exc:
                raise self._failed(address, exc) from None
            replies.append(reply)
        return next((r for r in replies if isinstance(r, hiredis.ReplyError)), replies[0])

    def _failed(self, address: Address, exc: ConnectionFailed) -> ConnectionFailed:
        """A node's connection failed: the map is read again before the next batch, and the
        node is not tried again for DOWN_FOR seconds (on a network where a dead host does not
        refuse, each try would cost the connect timeout to every batch, the other masters' too)."""
        self._stale = True
        self._down[address] = time.monotonic() + DOWN_FOR
        return ConnectionFailed(f"{address[0]}:{address[1]}: {exc}")

    def _route(self, command: resp.Command) -> Address:
        key = slots.command_key(command)
        if key is not None:
            address = self._slots[slots.key_slot(key)]
            if address is not None:
                return address
        return self._masters[0] if self._masters else self.seeds[0]

    def master_of(self, key: str | bytes) -> Address:
        """The master that serves ``key``'s slot, as the map says (read first if need be).

        Raises:
            ConnectionFailed: no node gave the map.
        """
        if self._stale:
            self._refresh()
        return self._slots[slots.key_slot(key)] or (self._masters[0] if self._masters else self.seeds[0])

    def refresh(self) -> None:
        """Read the map of slots again now.

        Raises:
            ConnectionFailed: no node gave it.
        """
        self._refresh()

    def _node(self, address: Address) -> RawConnection:
        node = self._nodes.get(address)
        if node is None:
            node = self._nodes[address] = RawConnection(self._node_url(address), self.timeout, self.connect_timeout)
            node.greeting = self.greeting  # one list: a name given later (instances.name_raw) reaches every node
        return node

    def _node_url(self, address: Address) -> str:
        host, port = address
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if self._password is not None:
            user = urllib.parse.quote(self._username or "", safe="")
            netloc = f"{user}:{urllib.parse.quote(self._password, safe='')}@{netloc}"
        url = f"{'rediss' if self._tls else 'redis'}://{netloc}/0"
        return with_query(url, self._params) if self._params else url

    def _refresh(self) -> None:
        """Read the map of slots (CLUSTER SLOTS) from the first known master or seed that gives it."""
        problems = []
        now = time.monotonic()
        candidates = list(dict.fromkeys([*self._masters, *self.seeds]))
        candidates.sort(key=lambda a: self._down.get(a, 0.0) > now)  # the nodes that failed just now last
        for address in candidates:
            node = self._node(address)
            try:
                [reply] = node.execute([["CLUSTER", "SLOTS"]])
            except ConnectionFailed as exc:
                self._down[address] = time.monotonic() + DOWN_FOR
                problems.append(f"{address[0]}:{address[1]}: {exc}")
                continue
            if isinstance(reply, hiredis.ReplyError) or not reply:
                problems.append(f"{address[0]}:{address[1]}: {reply or 'no slots served'}")
                continue
            try:
                self._apply(reply, address)
            except (TypeError, ValueError, IndexError, AttributeError, UnicodeDecodeError):
                problems.append(f"{address[0]}:{address[1]}: CLUSTER SLOTS gave what is not a map of slots")
                continue
            self._down.pop(address, None)
            return
        raise ConnectionFailed("no Redis Cluster node gave its slots (" + "; ".join(problems) + ")")

    def _apply(self, reply: list[Any], asked: Address) -> None:
        """Take CLUSTER SLOTS' reply as the map (checked whole first: a reply that is not one
        raises, and the map stays as it was)."""
        table: list[Address | None] = [None] * slots.SLOTS
        masters: dict[Address, None] = {}
        for start, end, master, *_ in reply:
            host = master[0].decode() if master[0] else ""
            address = (host if host and host != "?" else asked[0], int(master[1]))
            first, last = int(start), int(end)
            if not 0 <= first <= last < slots.SLOTS or not 0 < address[1] < 65536:
                raise ValueError("a slot range or port out of bounds")
            masters[address] = None
            table[first:last + 1] = [address] * (last - first + 1)
        self._slots, self._masters, self._stale = table, list(masters), False
        for address in [a for a in self._nodes if a not in masters and a not in self.seeds]:
            gone = self._nodes.pop(address)
            self._closed_connects += gone.connects
            gone.close()

    def close(self) -> None:
        for node in self._nodes.values():
            node.close()

    def __repr__(self) -> str:
        return f"<ClusterConnection {redacted(self.url.geturl())}>"


def _address(node: RawConnection) -> Address:
    return node.url.hostname or "", node.url.port or 6379


def _flatten(indexes: list[int], asking: set[int]) -> list[bool]:
    """For each command sent to a node, False for an ASKING, True for one of the batch's."""
    flat: list[bool] = []
    for index in indexes:
        if index in asking:
            flat.append(False)
        flat.append(True)
    return flat


def _redirection(reply: Any) -> tuple[str, int, Address] | None:
    """("MOVED" or "ASK", slot, (host, port)) of a redirection reply, else None."""
    if not isinstance(reply, hiredis.ReplyError):
        return None
    words = str(reply).split()
    if len(words) != 3 or words[0] not in ("MOVED", "ASK") or not words[1].isdigit():
        return None
    host, _, port = words[2].rpartition(":")
    if not port.isdigit():
        return None
    return words[0], int(words[1]), (host.strip("[]"), int(port))
