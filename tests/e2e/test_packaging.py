"""The package as a user gets it: a wheel that pip builds from a copy of the checkout (PEP 517,
setuptools' backend in an isolated build environment), installed into a new virtualenv, then
``tempestd --init DIR`` and tempestd started in DIR (not the checkout, no -c), answering a
request through the sample's hello workers, which run from the wheel too.

The new virtualenv takes tempest from the wheel only; for its dependencies a .pth file points
at this interpreter's site-packages (installing gevent and the rest again would take a minute).
A .pth line adds a directory without reading the .pth files in it, so the editable install of
the checkout found there stays out.
"""

import os
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest

from support import REPO, free_port, http, stop_group, wait_until

pytestmark = pytest.mark.timeout(300)

SOURCES = ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "tempest", "conf")


def run(command, timeout, **options):
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **options)
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout}{result.stderr}"
    return result.stdout


def build_wheel(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        origin = os.path.join(REPO, name)
        if os.path.isdir(origin):  # tempest/conf stays the symbolic link to ../conf it is in git
            shutil.copytree(origin, source / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(origin, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(source)], 240)
    (wheel,) = os.listdir(tmp_path / "dist")
    return str(tmp_path / "dist" / wheel)


def make_venv(tmp_path, wheel):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], 60)
    python = str(venv / "bin" / "python")
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel], 120)
    site_packages = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], 30).strip()
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    with open(os.path.join(site_packages, "tempest_test_dependencies.pth"), "w") as handle:
        handle.write("".join(f"{path}\n" for path in sorted(ours)))
    return venv


def clean_env():
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def free_ports(ini, redis_port):
    """The written sample on free ports: the embedded Redis on redis_port, every listen on 0."""
    with open(ini) as handle:
        text = handle.read()
    text = re.sub(r"^(\w*listen\s*=\s*127\.0\.0\.1:)\d+", r"\g<1>0", text, flags=re.MULTILINE)
    text, count = re.subn(r"redis://127\.0\.0\.1:6379/", f"redis://127.0.0.1:{redis_port}/", text)
    assert count == 1, "the sample's Redis URL is not redis://127.0.0.1:6379/"
    with open(ini, "w") as handle:
        handle.write(text)


def test_wheel_installed_in_a_new_venv_serves_from_another_directory(tmp_path):
    venv = make_venv(tmp_path, build_wheel(tmp_path))
    env, elsewhere = clean_env(), str(tmp_path)
    where = run([str(venv / "bin" / "python"), "-c", "import tempest; print(tempest.__file__)"], 30,
                cwd=elsewhere, env=env)
    assert where.startswith(str(venv) + os.sep), f"tempest imported from {where}, not from the wheel"

    site = tmp_path / "site"
    out = run([str(venv / "bin" / "tempestd"), "--init", str(site)], 30, cwd=elsewhere, env=env)
    assert str(site / "tempest.ini") in out
    assert f"ExecStart={venv}/bin/tempestd -c {site}/tempest.ini " in (site / "tempestd.service").read_text()
    free_ports(site / "tempest.ini", free_port())

    log_path = tmp_path / "tempestd.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(venv / "bin" / "tempestd")], cwd=str(site), env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def ready():
            assert proc.poll() is None, f"tempestd exited {proc.returncode}:\n{log_path.read_text()}"
            return re.search(r"tempestd ready: front on http://127\.0\.0\.1:(\d+)/", log_path.read_text())

        port = int(wait_until(ready, 60, message="tempestd ready").group(1))
        status, _, body = http("GET", f"http://127.0.0.1:{port}/", timeout=30)
        assert (status, body[:13]) == (200, b"Hello world! "), log_path.read_text()
        assert "no -c: using ./tempest.ini (looked in ./tempest.ini)" in log_path.read_text()
        assert os.path.isdir(site / "run") and os.path.isdir(site / "data")
    finally:
        stop_group(proc)
