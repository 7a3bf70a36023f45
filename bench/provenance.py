"""Which machine and which code ran: recorded with the results."""

import hashlib
import io
import os
import platform
import subprocess
import tarfile

from processes import HERE, BenchError


def machine_info(wrk):
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        pass
    info = {"nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version(), "wrk": None}
    if wrk:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10)
        info["wrk"] = (out.stdout or out.stderr).splitlines()[0].strip()
    try:
        import gevent

        info["gevent"] = gevent.__version__
    except ImportError:
        pass
    return info


def tempest_package(python, env):
    """The directory of the ``tempest`` package that ``python`` imports (the code measured)."""
    out = subprocess.run([python, "-c", "import os, tempest; print(os.path.dirname(tempest.__file__))"],
                         capture_output=True, text=True, timeout=30, env=env, cwd="/")
    return out.stdout.strip() or None


def extract_commit(rev, dest):
    """Extract the ``tempest`` package of commit ``rev`` of this repository into ``dest``
    (``git archive``: the repository and its working tree are only read); return the full hash."""
    repo = os.path.dirname(HERE)
    try:
        commit = subprocess.run(["git", "-C", repo, "rev-parse", "--verify", rev + "^{commit}"],
                                capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        archive = subprocess.run(["git", "-C", repo, "archive", "--format=tar", commit, "tempest"],
                                 capture_output=True, timeout=60, check=True).stdout
    except subprocess.CalledProcessError as exc:
        raise BenchError(f"--commit {rev}: {exc.stderr.strip() if exc.stderr else exc}") from None
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        try:
            tar.extractall(dest, filter="data")
        except TypeError:  # Python before 3.11.4: no filter; git archive of our own repository
            tar.extractall(dest)
    return commit


def code_digest(package):
    """SHA-256 over the package's .py files: tells whether the code changed during the run."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                digest.update(os.path.relpath(path, package).encode() + b"\0")
                with open(path, "rb") as handle:
                    digest.update(handle.read())
    return digest.hexdigest()[:16]


def git_state(package):
    """Commit of the repository holding the package, and its files that differ from it."""
    repo = os.path.dirname(package)
    state = {}
    try:
        head = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode == 0:
            state["commit"] = head.stdout.strip()
            status = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", os.path.basename(package)],
                                    capture_output=True, text=True, timeout=10)
            state["tempest_changes"] = [line[3:] for line in status.stdout.splitlines()]
    except OSError:
        pass
    return state
