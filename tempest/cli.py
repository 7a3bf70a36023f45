"""Command lines: ``tempestd`` (the daemon) and ``tempest`` (tools).

The only module that installs logging handlers, monkey-patches gevent (first thing, before
redis is imported) and decides exit codes: 0 clean stop, 1 runtime failure, 2 user error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable, Sequence

from tempest import __version__, config
from tempest.errors import ConfigError, ExitCode, StartupError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(argv: Sequence[str] | None = None) -> ExitCode:
    """tempestd -c FILE [--check]"""
    parser = argparse.ArgumentParser(prog="tempestd", description="The tempest application server.")
    parser.add_argument("-c", "--config", required=True, metavar="FILE", help="the INI file")
    parser.add_argument("--check", action="store_true", help="validate the INI file and exit")
    parser.add_argument("--pidfile", metavar="FILE", help="write the pid here; refuse to start if a live tempestd holds it")
    parser.add_argument("--version", action="version", version=f"tempestd {__version__}")
    args = parser.parse_args(argv)
    if not args.check:
        from gevent import monkey

        monkey.patch_all()
    try:
        settings = config.load(args.config)
    except ConfigError as exc:
        print(f"tempestd: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    if args.check:
        print(f"tempestd: {args.config}: OK")
        return ExitCode.OK
    setup_logging(settings.tempest.log_level, settings.tempest.log_file)
    from tempest.daemon import Daemon

    try:
        return Daemon(settings, pidfile=args.pidfile).run()
    except StartupError as exc:
        logging.getLogger("tempest").error("cannot start: %s", exc)
        return ExitCode.RUNTIME
    except Exception:
        logging.getLogger("tempest").exception("tempestd failed")
        return ExitCode.RUNTIME


def setup_logging(level: str, path: str = "") -> None:
    handler: logging.Handler
    if path:
        handler = logging.FileHandler(path)
    else:
        handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())


CONTROL_COMMANDS = ("status", "start", "stop", "restart", "reload", "shutdown")


def tempest_main(argv: Sequence[str] | None = None) -> ExitCode:
    """tempest status|start|stop|restart|reload|shutdown|check|config-docs"""
    parser = argparse.ArgumentParser(prog="tempest", description="Tools for tempest.")
    parser.add_argument("--version", action="version", version=f"tempest {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("check",) + CONTROL_COMMANDS:
        sub = commands.add_parser(name, help="validate an INI file" if name == "check"
                                  else f"{name} through the control socket of a running tempestd")
        sub.add_argument("-c", "--config", required=True, metavar="FILE")
        if name in ("start", "stop", "restart"):
            sub.add_argument("target", help="NAME, NAME:INDEX or all")
    publish = commands.add_parser("publish", help="publish a message to a pub/sub channel")
    publish.add_argument("-c", "--config", required=True, metavar="FILE")
    publish.add_argument("channel")
    publish.add_argument("data", help="the message's data (text; with --json, a JSON value)")
    publish.add_argument("--event", help="SSE event name")
    publish.add_argument("--json", action="store_true", help="DATA is JSON, not text")
    commands.add_parser("config-docs", help="print the settings reference (Markdown)")
    args = parser.parse_args(argv)
    if args.command == "config-docs":
        print(config.markdown())
        return ExitCode.OK
    try:
        settings = config.load(args.config)
    except ConfigError as exc:
        print(f"tempest: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    if args.command == "check":
        print(f"tempest: {args.config}: OK")
        return ExitCode.OK
    if args.command == "publish":
        return _publish(settings, args)
    return _control(settings, args)


def _publish(settings: config.Config, args: argparse.Namespace) -> ExitCode:
    import redis
    import simplejson as json

    from tempest.events import BadMessage
    from tempest import redisconn
    from tempest.publish import Publisher

    try:
        data = json.loads(args.data) if args.json else args.data
    except ValueError as exc:
        print(f"tempest: --json data is not JSON: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    patterns = [(pattern, settings.pubsub.history) for pattern in settings.pubsub.durable]
    publisher = Publisher(redisconn.client(settings.redis.url, socket_timeout=10), patterns)
    try:
        result = publisher.publish(args.channel, data, args.event)
    except BadMessage as exc:
        print(f"tempest: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except redis.RedisError as exc:
        print(f"tempest: cannot publish: {exc}", file=sys.stderr)
        return ExitCode.RUNTIME
    print(f"id {result}" if isinstance(result, str) else f"{result} subscribers")
    return ExitCode.OK


def _control(settings: config.Config, args: argparse.Namespace) -> ExitCode:
    import redis

    from tempest.control import STATUS_FIELDS, socket_path

    path = socket_path(settings)
    client = redis.Redis(unix_socket_path=path, protocol=2, socket_timeout=120, decode_responses=True)
    command = [args.command.upper()] + ([args.target] if getattr(args, "target", None) else [])
    try:
        reply = client.execute_command(*command)
    except redis.ConnectionError as exc:
        print(f"tempest: cannot reach tempestd at {path}: {exc}", file=sys.stderr)
        return ExitCode.RUNTIME
    except redis.ResponseError as exc:
        print(f"tempest: {exc}", file=sys.stderr)
        return ExitCode.RUNTIME
    if args.command == "status":
        print(format_table(STATUS_FIELDS, reply))
    elif args.command != "shutdown" and args.command != "reload":
        print(format_table(STATUS_FIELDS, client.execute_command("STATUS")))
    else:
        print(f"tempest: {args.command}: OK")
    return ExitCode.OK


def format_table(header: Sequence[object], rows: Iterable[Iterable[object]]) -> str:
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    lines = ["  ".join(str(h).upper().ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)
