"""Redis Cluster: what tempestd checks at start. A ``redis+cluster://`` URL runs in cluster
mode (tempest.clusterconn, redis-py's RedisCluster); a plain URL that names a Cluster node is
refused with one line that says to write ``redis+cluster://`` (exit status 2), rather than
saying "ready" and failing later (503s with MOVED, reliable workers never registered,
redelivery silently off).
"""

from __future__ import annotations

import logging
import urllib.parse

import hiredis
import redis

from tempest.errors import ExitCode, StartupError
from tempest.redisurl import CLUSTER, redact_text, redacted

log = logging.getLogger(__name__)

DOCS = "docs/operations.md, \"Redis Cluster\""


class ClusterRefused(StartupError):
    """The Redis of [redis] url is a Redis Cluster node named by a plain URL, or a
    ``redis+cluster://`` URL names a Redis that is not a cluster."""

    exit_code = ExitCode.USAGE  # the configuration names a Redis tempestd cannot use


def refuse_cluster(client: redis.Redis, url: str) -> None:
    """Raise ClusterRefused if ``client``'s Redis says ``cluster_enabled:1`` (INFO cluster) and
    ``url`` is not a ``redis+cluster://`` one. A Redis that refuses INFO (an ACL without +info)
    is taken as it is, with a warning. (A ``redis+cluster://`` URL's client, redis-py's
    RedisCluster, checked its seeds when it was made: see ``not_a_cluster``.)"""
    if urllib.parse.urlsplit(url).scheme == CLUSTER:
        return
    try:
        info = client.info("cluster")
    except redis.ResponseError as exc:
        log.warning("cannot tell whether Redis at %s is a Redis Cluster node: INFO refused (%s); "
                    "a Redis Cluster needs a redis+cluster:// URL", redacted(url), exc)
        return
    if str(info.get("cluster_enabled", "0")) == "1":
        seed = urllib.parse.urlsplit(url)
        raise ClusterRefused(f"Redis at {redacted(url)} is a Redis Cluster node (INFO cluster: cluster_enabled:1): "
                             f"write [redis] url = redis+cluster://{seed.hostname}:{seed.port or 6379} (other nodes "
                             f"after commas) to run on the cluster ({DOCS})")


def not_a_cluster(url: str, problem: str) -> ClusterRefused:
    """The error for a ``redis+cluster://`` URL whose seeds redis-py's RedisCluster refused:
    ``problem``, its message ("Cluster mode is not enabled on this node", no seed reachable,
    slots not all covered)."""
    return ClusterRefused(f"Redis at {redacted(url)} cannot be used as a Redis Cluster: "
                          f"{redact_text(problem, url)} ({DOCS})")


def require_sharded(url: str) -> None:
    """Raise ClusterRefused if the Redis of ``url`` has no sharded pub/sub (before Redis 7.0:
    COMMAND INFO SSUBSCRIBE names no command), which [pubsub] sharded needs. Asked over the
    lean connection: redis-py cannot parse the reply of a Redis that lacks the command."""
    from tempest import redisconn

    connection = redisconn.connect(url, timeout=10, connect_timeout=2)
    try:
        [found] = connection.execute([["COMMAND", "INFO", "SSUBSCRIBE"]])
    except redisconn.ConnectionFailed as exc:
        raise StartupError(f"Redis at {redacted(url)} does not answer: {redact_text(str(exc), url)}") from None
    finally:
        connection.close()
    if isinstance(found, hiredis.ReplyError):
        log.warning("cannot tell whether Redis at %s has sharded pub/sub: COMMAND INFO refused (%s)", redacted(url), found)
        return
    if not found or not found[0]:
        raise ClusterRefused(f"[pubsub] sharded = yes needs sharded pub/sub (SSUBSCRIBE, Redis 7.0 and later), which "
                             f"Redis at {redacted(url)} does not have")
