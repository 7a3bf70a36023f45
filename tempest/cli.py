"""Command lines: ``tempestd`` (the daemon) and ``tempest`` (tools).

The only module that installs logging handlers, monkey-patches gevent (first thing, before
redis is imported) and decides exit codes: 0 clean stop, 1 runtime failure, 2 user error.
"""

import argparse
import logging
import sys

from tempest import __version__, config
from tempest.errors import ConfigError, ExitCode, StartupError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(argv=None):
    """tempestd -c FILE [--check]"""
    parser = argparse.ArgumentParser(prog="tempestd", description="The tempest application server.")
    parser.add_argument("-c", "--config", required=True, metavar="FILE", help="the INI file")
    parser.add_argument("--check", action="store_true", help="validate the INI file and exit")
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
        return Daemon(settings).run()
    except StartupError as exc:
        logging.getLogger("tempest").error("cannot start: %s", exc)
        return ExitCode.RUNTIME


def setup_logging(level, path=""):
    handler = logging.FileHandler(path) if path else logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())


def tempest_main(argv=None):
    """tempest check|config-docs|version"""
    parser = argparse.ArgumentParser(prog="tempest", description="Tools for tempest.")
    parser.add_argument("--version", action="version", version=f"tempest {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate an INI file")
    check.add_argument("-c", "--config", required=True, metavar="FILE")
    commands.add_parser("config-docs", help="print the settings reference (Markdown)")
    args = parser.parse_args(argv)
    if args.command == "config-docs":
        print(config.markdown())
        return ExitCode.OK
    try:
        config.load(args.config)
    except ConfigError as exc:
        print(f"tempest: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    print(f"tempest: {args.config}: OK")
    return ExitCode.OK
