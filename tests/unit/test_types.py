"""The package type-checks: ``mypy --check-untyped-defs tempest`` with setup.cfg's [mypy]
settings finds nothing, and the ``py.typed`` marker that tells type checkers to read tempest's
annotations is shipped.

mypy is in the ``test`` extra, so the check never skips. It keeps its cache in the checkout's
``.mypy_cache`` (git ignores it): the first run takes some seconds, later ones about one.
"""

import configparser
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)  # a first run, with no cache, checks the stubs of every dependency too
def test_mypy_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "mypy", "--check-untyped-defs", "tempest"], cwd=ROOT,
                            capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, f"mypy failed (exit status {result.returncode}):\n{result.stdout}{result.stderr}"


def test_py_typed_is_shipped():
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert (ROOT / "tempest" / "py.typed").is_file()
    assert "py.typed" in setup["options.package_data"]["tempest"].split()
    assert setup["mypy"]["check_untyped_defs"] == "True"
