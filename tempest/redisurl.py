"""Redis URLs beyond what redis-py parses: ``redis+sentinel://``. A leaf module (urllib only),
so that the configuration can check a URL before gevent patches anything.
"""

from __future__ import annotations

import re
import urllib.parse

SENTINEL = "redis+sentinel"  # redis+sentinel://host:port[,host:port...]/service[/db]
# (Sentinels as (host, port), service, db, username, password)
SentinelParts = tuple[list[tuple[str, int]], str, int, str | None, str | None]


def sentinel_parts(url: str) -> SentinelParts:
    """``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]``: the
    Sentinels, the service (master) name, the database and the master's credentials.

    Raises:
        ValueError: not such a URL.
    """
    parsed = urllib.parse.urlsplit(url)
    userinfo, _, hosts = parsed.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    sentinels = []
    for item in filter(None, (h.strip() for h in hosts.split(","))):
        host, sep, port = item.rpartition(":")
        if not sep or host.endswith(":"):  # no port (an IPv6 address alone has colons too)
            host, port = item, "26379"
        if not port.isdigit() or not host.strip("[]"):
            raise ValueError(f"bad Sentinel address {item!r}")
        sentinels.append((host.strip("[]"), int(port)))
    path = [part for part in parsed.path.split("/") if part]
    if not sentinels or not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("expected redis+sentinel://host:port[,host:port...]/service[/db]")
    return (sentinels, urllib.parse.unquote(path[0]), int(path[1]) if len(path) == 2 else 0,
            urllib.parse.unquote(username) or None, urllib.parse.unquote(password) or None)


def redacted(url: str) -> str:
    """``url`` with its password replaced by ``***``, for log lines and error messages."""
    url = _NETLOC_PASSWORD.sub(r"\1:***@", url, count=1)
    return _QUERY_PASSWORD.sub(r"\1***", url)


_NETLOC_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):[^@/]*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*")
