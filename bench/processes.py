"""The children of the harness: started in their own session, stopped by process group."""

import os
import resource
import select
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))  # bench/: the scripts the children run


class BenchError(Exception):
    pass


class Processes:
    """Children started in their own session, stopped by process group, last started first."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.children = []  # (name, Popen)

    def start(self, name, argv, env=None, stdout=None, stdin=subprocess.DEVNULL):
        log = open(os.path.join(self.log_dir, name + ".log"), "wb")
        try:
            proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout or log, stderr=log,
                                    env=env, cwd=self.log_dir, start_new_session=True)
        finally:
            log.close()
        self.children.append((name, proc))
        return proc

    def log_tail(self, name, lines=15):
        try:
            with open(os.path.join(self.log_dir, name + ".log"), "rb") as handle:
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def forget(self, proc):
        self.children = [(n, p) for n, p in self.children if p is not proc]

    def check_alive(self):
        for name, proc in self.children:
            code = proc.poll()
            if code is not None:
                raise BenchError(f"{name} (pid {proc.pid}) exited with {code}:\n{self.log_tail(name)}")

    def stop(self, proc, grace=10.0):
        """SIGTERM the process group of ``proc``, SIGKILL it after ``grace`` seconds."""
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(proc, signal.SIGKILL)  # if it ignored SIGTERM
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self, grace=12.0):
        """Stop every child, last started first (workers before tempestd, Redis last); the
        children of one kind (the workers) are stopped together."""
        groups = []
        for name, proc in reversed(self.children):
            kind = name.rstrip("0123456789")
            if groups and groups[-1][0] == kind:
                groups[-1][1].append((name, proc))
            else:
                groups.append((kind, [(name, proc)]))
        for kind, members in groups:
            for name, proc in members:
                _signal_group(proc, signal.SIGTERM)
            deadline = time.monotonic() + grace
            for name, proc in members:
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    print(f"bench: {name} (pid {proc.pid}) ignored SIGTERM: SIGKILL", file=sys.stderr)
            for name, proc in members:
                _signal_group(proc, signal.SIGKILL)  # if it ignored SIGTERM
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    print(f"bench: {name} (pid {proc.pid}) survived SIGKILL", file=sys.stderr)
        self.children = []


def _signal_group(proc, sig):
    # start_new_session=True: the child leads its own group, whose id is its pid. Once the
    # child is reaped (returncode set) its pid may be reused: it is never signalled again.
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_child(procs, name, argv, timeout):
    """Run a short-lived child in its own group; return its stdout (text) and the CPU seconds it
    used (from ``getrusage(RUSAGE_CHILDREN)``: the only child reaped meanwhile)."""
    out_path = os.path.join(procs.log_dir, name + ".out")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out_path, "wb") as out:
        proc = procs.start(name, argv, stdout=out)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            procs.stop(proc, grace=2)
            raise BenchError(f"{name} did not finish within {timeout:.0f}s") from None
    procs.forget(proc)  # reaped: its pid must not be signalled again
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    with open(out_path, encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    if proc.returncode != 0:
        raise BenchError(f"{name} exited with {proc.returncode}:\n{text[-2000:]}\n{procs.log_tail(name)}")
    return text, spent


class LineReader:
    """The lines a child writes on its stdout (a pipe), each awaited at most a timeout."""

    def __init__(self, proc):
        self.proc = proc
        self.buffer = b""  # what was read after the last line returned

    def read_line(self, timeout):
        """The next line (bytes, without its newline) within ``timeout`` seconds, or None (also
        when the child closed its stdout)."""
        end = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = end - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:  # it exited
                    return None
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line
