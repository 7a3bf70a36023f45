"""TLS to Redis: the ``rediss://`` query parameters redis-py's ``from_url`` takes
(``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``, ``ssl_check_hostname``),
checked when the configuration is loaded and turned into an ``ssl.SSLContext`` for tempest's own
sockets (the lean connection, the relay, the questions to the Sentinels). With
``redis+sentinel://``, ``ssl=yes`` puts the master's connections in TLS and ``sentinel_ssl=yes``
the Sentinels'; the same files serve both. With ``redis+cluster://``, ``ssl=yes`` puts every
node's connections in TLS. ``ssl`` is imported when first needed: the
configuration is read before gevent patches it.
"""

from __future__ import annotations

import os
import urllib.parse
from typing import TYPE_CHECKING, Any

from tempest import redisurl

if TYPE_CHECKING:
    import ssl

VERIFY_MODES = ("required", "optional", "none")  # ssl_cert_reqs, as redis-py spells them
YES, NO = ("yes", "true", "1", "on"), ("no", "false", "0", "off", "")


def check(url: str, base: str) -> str:
    """``url`` with its TLS files made absolute (relative to ``base``, the INI file's directory)
    and checked: readable, and a certificate and key that load.

    Raises:
        ValueError: a bad parameter or file, with a message that quotes no secret.
    """
    params = redisurl.query(url)
    scheme = urllib.parse.urlsplit(url).scheme
    used = [key for key in (*redisurl.TLS_PARAMS, *redisurl.SENTINEL_PARAMS) if key in params]
    if scheme == "unix" and used or scheme == "redis" and [k for k in used if k != "ssl"]:
        raise ValueError(f"{used[0]}= needs a rediss:// (or redis+sentinel://, redis+cluster://) URL")
    only_sentinel = [k for k in used if k in redisurl.SENTINEL_PARAMS and not (k == "ssl" and scheme == redisurl.CLUSTER)]
    if scheme != redisurl.SENTINEL and only_sentinel:
        raise ValueError(f"{only_sentinel[0]}= is for redis+sentinel:// URLs")
    for key in ("ssl", "sentinel_ssl", "ssl_check_hostname"):
        if key in params and params[key].lower() not in YES + NO:
            raise ValueError(f"{key}= is yes or no, not {params[key]!r}")
    if params.get("ssl_cert_reqs", "required").lower() not in VERIFY_MODES:
        raise ValueError(f"ssl_cert_reqs= is one of {', '.join(VERIFY_MODES)}, not {params['ssl_cert_reqs']!r}")
    if "ssl_keyfile" in params and "ssl_certfile" not in params:
        raise ValueError("ssl_keyfile= needs ssl_certfile= (the client certificate)")
    for key in redisurl.TLS_FILES:
        if key in params:
            path = os.path.normpath(os.path.join(base, os.path.expanduser(params[key])))
            if not os.access(path, os.R_OK) or not os.path.isfile(path):
                raise ValueError(f"{key}=: cannot read {path}")
            params[key] = path
    fixed = redisurl.with_query(url, params) if params else url
    if used and (scheme == "rediss" or _yes(params, "ssl") or _yes(params, "sentinel_ssl")):
        context(fixed)  # a PEM file that does not load is a configuration error, not a start failure
    return fixed


def context(url: str) -> ssl.SSLContext:
    """The client context the parameters of ``url`` describe (the system's CAs when it names
    none), as redis-py builds its own.

    Raises:
        ValueError: a file that does not load.
    """
    import ssl

    params = redisurl.query(url)
    verify = params.get("ssl_cert_reqs", "required").lower()
    made = ssl.create_default_context()
    made.check_hostname = verify != "none" and params.get("ssl_check_hostname", "yes").lower() in YES
    made.verify_mode = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}[verify]
    try:
        if "ssl_ca_certs" in params:
            made.load_verify_locations(cafile=params["ssl_ca_certs"])
        if "ssl_certfile" in params:
            made.load_cert_chain(params["ssl_certfile"], params.get("ssl_keyfile") or None,
                                 password=params.get("ssl_password") or None)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"cannot load the TLS files of the URL: {getattr(exc, 'reason', None) or exc}") from None
    return made


def master_tls(url: str) -> bool:
    """Whether tempest's connections to the Redis of ``url`` (the master, with Sentinel) use TLS."""
    scheme = urllib.parse.urlsplit(url).scheme
    return scheme == "rediss" or scheme in (redisurl.SENTINEL, redisurl.CLUSTER) and _yes(redisurl.query(url), "ssl")


def sentinel_tls(url: str) -> bool:
    return _yes(redisurl.query(url), "sentinel_ssl")


def redis_py_options(url: str) -> dict[str, Any]:
    """redis-py keyword arguments for the TLS of ``url`` (for the clients that are not made with
    from_url: a Sentinel's master and the Sentinels)."""
    params = redisurl.query(url)
    options: dict[str, Any] = {"ssl": True, "ssl_cert_reqs": params.get("ssl_cert_reqs", "required").lower()}
    options.update((key, params[key]) for key in redisurl.TLS_FILES if key in params)
    if "ssl_check_hostname" in params:
        options["ssl_check_hostname"] = params["ssl_check_hostname"].lower() in YES
    if params.get("ssl_password"):
        options["ssl_password"] = params["ssl_password"]
    return options


def _yes(params: dict[str, str], key: str) -> bool:
    return params.get(key, "no").lower() in YES
