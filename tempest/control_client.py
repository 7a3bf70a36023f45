"""``tempest status|start|stop|restart|signal|pid|tail|reload|shutdown``: the command line's
side of the control socket (tempest/control.py is tempestd's), as supervisorctl is to
supervisord: tables with human uptimes, exit status 3 when a process is not RUNNING, ``start``
and ``restart`` that wait until the processes run (or fail), ``tail -f``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
import simplejson as json

from tempest.config import Config
from tempest.control import STATUS_FIELDS, socket_path
from tempest.errors import ExitCode

NOT_RUNNING = 3  # status: some process is not RUNNING (supervisorctl's code)
SETTLED = ("RUNNING", "FATAL", "EXITED", "STOPPED")  # states a start waits for (BACKOFF retries)
POLL = 0.2  # seconds between two looks while waiting, and for tail -f (0.5)


class ControlError(Exception):
    """tempestd refused a command, or cannot be reached: the message says why."""


def run(settings: Config, args: argparse.Namespace) -> int:
    """Run one control command; the exit status."""
    path = socket_path(settings)
    # no retries: redis-py's default takes about 4 s to report a socket nobody listens on, and
    # a retried STOP or START could run twice
    client = redis.Redis(unix_socket_path=path, protocol=2, socket_timeout=120, decode_responses=False,
                         retry=Retry(NoBackoff(), 0))
    try:
        return COMMANDS[args.command](client, args)
    except redis.ConnectionError as exc:
        print(f"tempest: cannot reach tempestd at {path}: {exc}", file=sys.stderr)
        return ExitCode.RUNTIME
    except (redis.ResponseError, ControlError) as exc:
        print(f"tempest: {exc}", file=sys.stderr)
        return ExitCode.RUNTIME


def _rows(client: redis.Redis, targets: Sequence[str] = ()) -> list[dict[str, Any]]:
    rows = client.execute_command("STATUS", *targets)
    return [dict(zip(STATUS_FIELDS, (_text(cell) for cell in row))) for row in rows]


def _text(cell: Any) -> Any:
    return cell.decode("utf-8", "replace") if isinstance(cell, bytes) else cell


def status(client: redis.Redis, args: argparse.Namespace) -> int:
    rows = _rows(client, args.targets)
    if args.json:
        print(json.dumps(rows))
    else:
        print(format_status(rows) if rows else "no processes (no [worker:] section)")
        if not args.targets:  # the instance last: the table's header stays the first line
            instance_id, role = (_text(cell) for cell in client.execute_command("INSTANCE"))
            print(f"instance {instance_id} role {role}")
    return NOT_RUNNING if any(row["state"] != "RUNNING" for row in rows) else ExitCode.OK


def start(client: redis.Redis, args: argparse.Namespace) -> int:
    """START or RESTART, then the table once every process named is RUNNING or has failed."""
    client.execute_command(args.command.upper(), args.target)
    deadline = time.monotonic() + args.timeout
    rows = _rows(client, [args.target])
    while any(row["state"] not in SETTLED for row in rows) and time.monotonic() < deadline:
        time.sleep(POLL)
        rows = _rows(client, [args.target])
    print(format_status(rows))
    return NOT_RUNNING if any(row["state"] != "RUNNING" for row in rows) else ExitCode.OK


def stop(client: redis.Redis, args: argparse.Namespace) -> int:
    client.execute_command("STOP", args.target)  # returns once they stopped (or were killed)
    print(format_status(_rows(client, [args.target])))
    return ExitCode.OK


def signal(client: redis.Redis, args: argparse.Namespace) -> int:
    sent = [_text(name) for name in client.execute_command("SIGNAL", args.signal, args.target)]
    print(f"tempest: signalled {', '.join(sent)}" if sent else "tempest: no process of it is running")
    return ExitCode.OK if sent else ExitCode.RUNTIME


def pid(client: redis.Redis, args: argparse.Namespace) -> int:
    reply = client.execute_command("PID", *args.targets)
    for value in reply if isinstance(reply, list) else [reply]:
        print(value)
    return ExitCode.OK


def tail(client: redis.Redis, args: argparse.Namespace) -> int:
    """What the process wrote lately (tempestd keeps the last 32 KiB of each stream); with
    ``-f``, then what comes, until Ctrl-C."""
    offset = 0
    while True:
        offset, data = client.execute_command("TAIL", args.target, args.stream, offset)
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        if not args.follow:
            return ExitCode.OK
        time.sleep(POLL * 2.5)


def simple(client: redis.Redis, args: argparse.Namespace) -> int:
    """RELOAD, SHUTDOWN."""
    client.execute_command(args.command.upper())
    print(f"tempest: {args.command}: OK")
    return ExitCode.OK


COMMANDS = {"status": status, "start": start, "restart": start, "stop": stop, "signal": signal,
            "pid": pid, "tail": tail, "reload": simple, "shutdown": simple}


def format_status(rows: list[dict[str, Any]]) -> str:
    # a process with a pid has an uptime, 0:00:00 in its first second too
    shown = [{**row, "pid": row["pid"] or "-", "uptime": uptime(row["uptime"]) if row["pid"] else "-"}
             for row in rows]
    return format_table(STATUS_FIELDS, ([row[field] for field in STATUS_FIELDS] for row in shown))


def uptime(seconds: int) -> str:
    """As supervisorctl shows it: 0:09:44, or 3 days, 2:01:00."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    text = f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{days} day{'s' if days > 1 else ''}, {text}" if days else text


def format_table(header: Sequence[object], rows: Iterable[Iterable[object]]) -> str:
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(str(h)), *(len(r[i]) for r in cells)]) for i, h in enumerate(header)]  # no rows: the header's
    lines = ["  ".join(str(h).upper().ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)
