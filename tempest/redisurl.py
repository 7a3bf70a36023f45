"""Redis URLs beyond what redis-py parses: ``redis+sentinel://``, ``redis+cluster://``, the TLS query parameters,
a password merged in from a file, and the URL with its secrets hidden for logs. A leaf module
(urllib only), so that the configuration can check a URL before gevent patches anything.
"""

from __future__ import annotations

import re
import urllib.parse

SENTINEL = "redis+sentinel"  # redis+sentinel://host:port[,host:port...]/service[/db]
# (Sentinels as (host, port), service, db, username, password)
SentinelParts = tuple[list[tuple[str, int]], str, int, str | None, str | None]


CLUSTER = "redis+cluster"  # redis+cluster://host:port[,host:port...][/][?ssl=yes...]: seeds of a Redis Cluster
# (seed nodes as (host, port), username, password)
ClusterParts = tuple[list[tuple[str, int]], str | None, str | None]


def sentinel_parts(url: str) -> SentinelParts:
    """``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]``: the
    Sentinels, the service (master) name, the database and the master's credentials.

    Raises:
        ValueError: not such a URL.
    """
    parsed = urllib.parse.urlsplit(url)
    sentinels, username, password = _hosts(parsed, 26379, "Sentinel")
    path = [part for part in parsed.path.split("/") if part]
    if not sentinels or not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("expected redis+sentinel://host:port[,host:port...]/service[/db]")
    return sentinels, urllib.parse.unquote(path[0]), int(path[1]) if len(path) == 2 else 0, username, password


def cluster_parts(url: str) -> ClusterParts:
    """``redis+cluster://[[user]:password@]host:port[,host:port...][/]``: the seed nodes and
    the credentials (a cluster has database 0 only).

    Raises:
        ValueError: not such a URL.
    """
    parsed = urllib.parse.urlsplit(url)
    nodes, username, password = _hosts(parsed, 6379, "cluster node")
    if not nodes:
        raise ValueError("expected redis+cluster://host:port[,host:port...]")
    if parsed.path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has database 0 only: no path after redis+cluster://host:port[,...]")
    return nodes, username, password


def _hosts(parsed: urllib.parse.SplitResult, default_port: int, what: str) -> ClusterParts:
    """The ``host:port`` list of a URL with several hosts, and its credentials."""
    userinfo, _, hosts = parsed.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    found = []
    for item in filter(None, (h.strip() for h in hosts.split(","))):
        host, sep, port = item.rpartition(":")
        if not sep or host.endswith(":"):  # no port (an IPv6 address alone has colons too)
            host, port = item, str(default_port)
        if not port.isdigit() or not host.strip("[]"):
            raise ValueError(f"bad {what} address {item!r}")
        found.append((host.strip("[]"), int(port)))
    return found, urllib.parse.unquote(username) or None, urllib.parse.unquote(password) or None


def redacted(url: str) -> str:
    """``url`` with its passwords (the user's, ``password=``, ``sentinel_password=``,
    ``ssl_password=``) replaced by ``***``, for log lines, error messages and status output."""
    url = _NETLOC_PASSWORD.sub(r"\1:***@", url)
    return _QUERY_PASSWORD.sub(r"\1***", url)


def redact_text(text: str, url: str) -> str:
    """``text`` (an exception's message, say) with every password of ``url`` in it hidden."""
    for secret in secrets_of(url):
        text = text.replace(secret, "***")
        text = text.replace(urllib.parse.quote(secret, safe=""), "***")
    return redacted(text)


def secrets_of(url: str) -> list[str]:
    """The passwords ``url`` holds (decoded), longest first."""
    found = []
    password = urllib.parse.urlsplit(url).netloc.rpartition("@")[0].partition(":")[2]
    if password:
        found.append(urllib.parse.unquote(password))
    found += [v for k, v in query(url).items() if k in SECRET_PARAMS and v]
    return sorted(set(found), key=len, reverse=True)


def query(url: str) -> dict[str, str]:
    """The URL's query parameters (the last of a repeated one)."""
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True))


def with_query(url: str, params: dict[str, str]) -> str:
    """``url`` with its query replaced by ``params`` (none: no query)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(params, safe="/")))


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` as its user's password (the user kept, if any)."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    username = userinfo.partition(":")[0] if at else ""
    netloc = f"{username}:{urllib.parse.quote(password, safe='')}@{hosts}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def has_password(url: str) -> bool:
    return bool(urllib.parse.urlsplit(url).netloc.rpartition("@")[0].partition(":")[2])


# the TLS parameters, as redis-py's from_url takes them (for rediss://, for redis+sentinel://
# with ssl=yes or sentinel_ssl=yes, for redis+cluster:// with ssl=yes); the Sentinels' own credentials
TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
TLS_PARAMS = (*TLS_FILES, "ssl_cert_reqs", "ssl_check_hostname")
SENTINEL_PARAMS = ("ssl", "sentinel_ssl", "sentinel_username", "sentinel_password")
SECRET_PARAMS = ("password", "sentinel_password", "ssl_password")

_NETLOC_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@/\s]*@")
_QUERY_PASSWORD = re.compile(r"([?&](?:password|sentinel_password|ssl_password)=)[^&\s]*")


def answer_endpoint(respond_to: str, password: str | None = None) -> str:
    """The redis:// URL of the answer endpoint ``respond_to`` (``host:port``, an IPv6 host
    bracketed or not), with the answer password if any.

    Raises:
        ValueError: the port is not a number.
    """
    host, _, port = respond_to.rpartition(":")
    host = host.strip("[]")
    netloc = f"[{host}]:{int(port)}" if ":" in host else f"{host}:{int(port)}"
    if password:
        netloc = ":" + urllib.parse.quote(password, safe="") + "@" + netloc
    return "redis://" + netloc
