"""Command lines: ``tempestd`` (the daemon) and ``tempest`` (tools).

The only module that installs logging handlers, monkey-patches gevent (first thing, before
redis is imported) and decides exit codes: 0 clean stop, 1 runtime failure, 2 user error.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from tempest import __version__, config
from tempest.converters import to_queue
from tempest.errors import ConfigError, ExitCode, StartupError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# where tempestd and tempest look for the INI file when -c is not given, in this order
CONFIG_PLACES = ("./tempest.ini", "/etc/tempest/tempest.ini")
CONFIG_HELP = f"the INI file (default: the first of {', '.join(CONFIG_PLACES)})"


def main(argv: Sequence[str] | None = None) -> ExitCode:
    """tempestd [-c FILE] [--check] | tempestd --init DIR"""
    parser = argparse.ArgumentParser(prog="tempestd", description="The tempest application server.")
    parser.add_argument("-c", "--config", metavar="FILE", help=CONFIG_HELP)
    parser.add_argument("--check", action="store_true", help="validate the INI file and exit")
    parser.add_argument("--pidfile", metavar="FILE", help="write the pid here; refuse to start if a live tempestd holds it")
    parser.add_argument("--init", metavar="DIR", help="write the sample tempest.ini and tempestd.service into DIR and exit")
    parser.add_argument("--version", action="version", version=f"tempestd {__version__}")
    parser.add_argument("--front-process", type=int, metavar="INDEX", help=argparse.SUPPRESS)  # tempest.fronts
    args = parser.parse_args(argv)
    if args.init is not None:
        if args.config or args.check or args.pidfile:
            parser.error("--init DIR takes no other option")
        return _init(args.init)
    path = args.config or _find_config("tempestd")
    if path is None:
        return ExitCode.USAGE
    if not args.check:
        from gevent import monkey

        monkey.patch_all()
    try:
        settings = config.load(path)
    except ConfigError as exc:
        print(f"tempestd: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    if args.check:
        print(f"tempestd: {path}: OK")
        return ExitCode.OK
    setup_logging(settings.tempest.log_level, settings.tempest.log_file)
    if not args.config:
        logging.getLogger("tempest").info("no -c: using %s (looked in %s)", path, _looked_in(path))
    from tempest.daemon import Daemon

    try:
        return Daemon(settings, pidfile=args.pidfile, front_index=args.front_process).run()
    except StartupError as exc:
        logging.getLogger("tempest").error("cannot start: %s", exc)
        return exc.exit_code
    except Exception:
        logging.getLogger("tempest").exception("tempestd failed")
        return ExitCode.RUNTIME


def _find_config(prog: str) -> str | None:
    """The first of CONFIG_PLACES that exists; None, with the places on stderr, if none does."""
    for place in CONFIG_PLACES:
        if os.path.exists(place):
            return place
    print(f"{prog}: no -c FILE, and no INI file in {', '.join(CONFIG_PLACES)} "
          f"(tempestd --init DIR writes a sample one)", file=sys.stderr)
    return None


def _looked_in(found: str) -> str:
    return ", ".join(CONFIG_PLACES[:CONFIG_PLACES.index(found) + 1])


def _init(directory: str) -> ExitCode:
    from tempest import sample

    try:
        ini, unit = sample.write(directory)
    except FileExistsError as exc:
        print(f"tempestd: --init: {exc.filename} exists; not overwritten (nothing written)", file=sys.stderr)
        return ExitCode.USAGE
    except OSError as exc:
        print(f"tempestd: --init: cannot write into {directory}: {exc.strerror or exc}", file=sys.stderr)
        return ExitCode.USAGE
    print(f"tempestd: wrote {ini} and {unit}")
    print(f"start it with: cd {os.path.dirname(ini)} && {sample.tempestd_path()}")
    return ExitCode.OK


def setup_logging(level: str, path: str = "") -> None:
    handler: logging.Handler
    if path:
        from tempest.logfiles import ReopeningFileHandler

        handler = ReopeningFileHandler(path)  # reopened on SIGUSR1
    else:
        handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())


CONTROL_COMMANDS = ("status", "start", "stop", "restart", "signal", "pid", "tail", "reload", "shutdown")
HELP = {"status": "the processes, or those named (exit status 3 if any is not RUNNING)",
        "start": "start processes, and wait until they run", "stop": "stop processes",
        "restart": "stop, then start processes, and wait until they run",
        "signal": "send a signal to processes", "pid": "tempestd's pid, or the processes'",
        "tail": "the recent output of a process", "reload": "re-read the INI file",
        "shutdown": "stop tempestd", "check": "validate an INI file"}


def tempest_main(argv: Sequence[str] | None = None) -> int:
    """tempest status|start|stop|restart|signal|pid|tail|reload|shutdown|check|publish|queues|dead|config-docs"""
    try:
        return _tempest(argv)
    except KeyboardInterrupt:
        return ExitCode.OK  # tail -f, or a wait, interrupted: what the user asked for
    except BrokenPipeError:  # tempest status | head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return ExitCode.OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tempest", description="Tools for tempest.")
    parser.add_argument("--version", action="version", version=f"tempest {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("check",) + CONTROL_COMMANDS:
        sub = commands.add_parser(name, help=HELP[name])
        sub.add_argument("-c", "--config", metavar="FILE", help=CONFIG_HELP)
        if name in ("status", "pid"):
            sub.add_argument("targets", nargs="*", metavar="TARGET", help="NAME, NAME:INDEX, a glob, or all")
        if name == "status":
            sub.add_argument("--json", action="store_true", help="the rows as JSON objects")
            sub.add_argument("--all", action="store_true",
                             help="every live tempestd on this Redis and its processes (reads Redis, not the control socket)")
        if name == "signal":
            sub.add_argument("signal", help="TERM, HUP, USR1...")
        if name in ("start", "stop", "restart", "signal"):
            sub.add_argument("target", help="NAME, NAME:INDEX, a glob (web*), or all (not the embedded Redis)")
        if name in ("start", "restart"):
            sub.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
        if name == "tail":
            sub.add_argument("-f", "--follow", action="store_true", help="go on printing what comes")
            sub.add_argument("target", help="NAME:INDEX (or NAME of a single process)")
            sub.add_argument("stream", nargs="?", choices=("stdout", "stderr"), default="stdout")
    publish = commands.add_parser("publish", help="publish a message to a pub/sub channel")
    publish.add_argument("-c", "--config", metavar="FILE", help=CONFIG_HELP)
    publish.add_argument("channel")
    publish.add_argument("data", help="the message's data (text; with --json, a JSON value)")
    publish.add_argument("--event", help="SSE event name")
    publish.add_argument("--json", action="store_true", help="DATA is JSON, not text")
    commands.add_parser("config-docs", help="print the settings reference (Markdown)")
    _queue_parsers(commands)
    return parser


def _queue_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """tempest queues, tempest dead (tempest/queuetools.py): they read Redis, not tempestd."""
    queues = commands.add_parser("queues", help="every queue's depths, workers, rates and dead letters (reads Redis)")
    queues.add_argument("-c", "--config", metavar="FILE", help=CONFIG_HELP)
    queues.add_argument("--json", action="store_true", help="the rows as JSON objects")
    queues.add_argument("--interval", type=_seconds, default=1.0, metavar="SECONDS",
                        help="seconds between the two looks the rates are measured over (default 1; 0: no rates)")
    dead = commands.add_parser("dead", help="a queue's dead letters, or --requeue to put them back (reads Redis)")
    dead.add_argument("-c", "--config", metavar="FILE", help=CONFIG_HELP)
    dead.add_argument("queue", type=_queue_name, metavar="QUEUE", help="the queue whose dead letters (tempest:dead:{QUEUE}) to list")
    dead.add_argument("--json", action="store_true", help="JSON instead of a table")
    dead.add_argument("--limit", type=_count, default=100, metavar="N", help="list the first N (default 100; 0: all)")
    dead.add_argument("--requeue", nargs="*", action="extend", metavar="ID",
                      help="put them back on the queue instead: all of them, or those with these job ids "
                           "(an id that begins with '-': --requeue=-ID)")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:  # nan fails both comparisons
        raise argparse.ArgumentTypeError(f"not a number of seconds from 0 to 3600: {text!r}")
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(text)


def _queue_name(text: str) -> str:
    try:
        return to_queue(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _tempest(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "config-docs":
        print(config.markdown())
        return ExitCode.OK
    path = args.config or _find_config("tempest")
    if path is None:
        return ExitCode.USAGE
    try:
        settings = config.load(path)
    except ConfigError as exc:
        print(f"tempest: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    if args.command == "check":
        print(f"tempest: {path}: OK")
        return ExitCode.OK
    if args.command == "publish":
        return _publish(settings, args)
    if args.command in ("queues", "dead"):
        from tempest import queuetools

        return queuetools.run(settings, args)
    if args.command == "status" and args.all:
        from tempest import instances

        return instances.run(settings, args)
    from tempest.control_client import run

    return run(settings, args)


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
    publisher = Publisher(redisconn.client(settings.redis.url, socket_timeout=10), patterns, settings.pubsub.sharded)
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
