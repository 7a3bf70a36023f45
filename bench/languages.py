"""The hello workers in other languages (``--workers-lang``): what each needs, how it is built
and started, and the CPU of its processes (the worker and every process it started, e.g. the
shell client's redis-cli) and the strays it may leave (a process group of its own).

The clients always run from the working tree of this repository (``clients/<lang>``), also
with ``--commit``, which applies to the ``tempest`` package only."""

import dataclasses
import os
import shutil
import signal
import subprocess
import time

from probes import CLK_TCK
from processes import HERE, run_child

ROOT = os.path.dirname(HERE)  # the repository: clients/ is read from its working tree


@dataclasses.dataclass(frozen=True)
class Language:
    name: str
    program: str  # what has to be on PATH
    hello: str  # the hello world, relative to ROOT
    needs: tuple = ()  # more paths it needs, relative to ROOT: (path, what to do if missing)
    build: tuple = ()  # the build command (argv, relative paths from ROOT), if any
    run: tuple = ()  # the argv before the queue; "./x" is the path x relative to ROOT

    def argv(self, queue):
        return resolve(self.run) + [queue]


def resolve(argv):
    """``argv`` with each "./x" made the absolute path of x in the repository."""
    return [os.path.join(ROOT, a[2:]) if a.startswith("./") else a for a in argv]


LANGUAGES = {
    "node": Language("node", "node", "clients/node/examples/hello.js",
                     needs=(("clients/node/node_modules", "run npm install in clients/node"),),
                     run=("node", "./clients/node/examples/hello.js")),
    "ruby": Language("ruby", "ruby", "clients/ruby/examples/hello.rb",
                     run=("ruby", "./clients/ruby/examples/hello.rb")),
    "php": Language("php", "php", "clients/php/examples/hello.php",
                    run=("php", "./clients/php/examples/hello.php")),
    "go": Language("go", "go", "clients/go/examples/hello", needs=(("clients/go/Makefile", ""),),
                   build=("make", "-C", "./clients/go", "bin/hello"), run=("./clients/go/bin/hello",)),
    "shell": Language("shell", "bash", "clients/shell/hello.sh", needs=(("clients/shell/tempest-worker.sh", ""),),
                      run=("bash", "./clients/shell/hello.sh")),
}


def problems(names):
    """Why a hello worker cannot run, one line per language that cannot (empty: all can)."""
    lines = []
    for name in names:
        lang = LANGUAGES[name]
        missing = [(lang.hello, "")] + list(lang.needs)
        missing = [(p, hint) for p, hint in missing if not os.path.exists(os.path.join(ROOT, p))]
        if missing:
            path, hint = missing[0]
            lines.append(f"no hello worker for {name} (missing {path}" + (f": {hint}" if hint else "") + ")")
            continue
        programs = [lang.program] + ([lang.build[0]] if lang.build else [])
        absent = [p for p in programs if not shutil.which(p)]
        if absent:
            lines.append(f"no hello worker for {name} ({absent[0]} is not on PATH)")
    return lines


def build(name, procs):
    """Build the hello worker of ``name`` if it needs it (go: ``make -C clients/go bin/hello``)."""
    lang = LANGUAGES[name]
    if not lang.build:
        return None
    argv = resolve(lang.build)
    run_child(procs, f"build-{name}", argv, timeout=600)
    return argv


def clients_state(names):
    """The commit of the working tree the clients run from and their uncommitted files."""
    state = {"source": "working tree", "root": ROOT, "languages": list(names)}
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--"]
                                + [f"clients/{n}" for n in names], capture_output=True, text=True, timeout=10)
    except OSError:
        return state
    if head.returncode == 0:
        state["commit"] = head.stdout.strip()
        state["changes"] = [line[3:] for line in status.stdout.splitlines()]
    return state


def process_table():
    """Every process: {pid: (ppid, starttime, CPU seconds of its own + of its reaped children)}."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rpartition(")")[2].split()
            cpu = sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK  # utime stime cutime cstime
            table[int(entry)] = (int(fields[1]), int(fields[19]), cpu)
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return table


class ProcessTree:
    """The CPU of a worker and all its descendants, and the descendants seen (to stop strays).

    CPU = the sum over the live tree of utime + stime + cutime + cstime: a process that ends is
    counted in its parent's cutime once reaped, so the difference of two samples is the CPU the
    tree used meanwhile (commands a shell worker runs per job included)."""

    def __init__(self):
        self.seen = {}  # pid -> starttime of every descendant seen (not the roots)

    def cpu_seconds(self, root):
        table = process_table()
        if root not in table:
            return None
        children = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        total, stack = 0.0, [root]
        while stack:
            pid = stack.pop()
            total += table[pid][2]
            if pid != root:
                self.seen[pid] = table[pid][1]
            stack.extend(children.get(pid, ()))
        return total

    def stop_strays(self, grace=5.0):
        """SIGTERM (then SIGKILL) the descendants seen that still run (same pid and start time):
        e.g. a worker loop in a process group of its own whose parent was killed."""
        def alive():
            table = process_table()
            return [p for p, start in self.seen.items() if table.get(p, (0, None))[1] == start]

        strays = alive()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in strays:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + grace
            while strays and time.monotonic() < deadline:
                time.sleep(0.1)  # they are not our children: polled, not waited
                strays = alive()
            if not strays:
                break
        return strays
