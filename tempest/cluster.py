"""Redis Cluster: what tempestd checks at start. Cluster mode itself does not exist yet, so a
tempestd pointed at a Cluster node refuses to start, with one line that says why (exit status
2), rather than saying "ready" and failing later (503s with MOVED, reliable workers never
registered, redelivery silently off).
"""

from __future__ import annotations

import logging

import redis

from tempest.errors import ExitCode, StartupError
from tempest.redisurl import redacted

log = logging.getLogger(__name__)

DOCS = "docs/operations.md, \"Redis Cluster\""


class ClusterRefused(StartupError):
    """The Redis of [redis] url is a Redis Cluster node, which tempestd does not support yet."""

    exit_code = ExitCode.USAGE  # the configuration names a Redis tempestd cannot use


def refuse_cluster(client: redis.Redis, url: str) -> None:
    """Raise ClusterRefused if ``client``'s Redis says ``cluster_enabled:1`` (INFO cluster).
    A Redis that refuses INFO (an ACL without +info) is taken as it is, with a warning."""
    try:
        info = client.info("cluster")
    except redis.ResponseError as exc:
        log.warning("cannot tell whether Redis at %s is a Redis Cluster node: INFO refused (%s); "
                    "tempestd does not run on Redis Cluster", redacted(url), exc)
        return
    if str(info.get("cluster_enabled", "0")) == "1":
        raise ClusterRefused(f"Redis at {redacted(url)} is a Redis Cluster node (INFO cluster: cluster_enabled:1), "
                             f"and tempestd does not run on Redis Cluster yet: point [redis] url at a standalone "
                             f"Redis or at Sentinel ({DOCS})")
