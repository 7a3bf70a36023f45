"""Importing tempest and its worker library must not load gevent (nor, for the package, redis).

tempestd monkey-patches before anything else loads, and the worker library is used by plain
sequential programs: each check runs in a fresh interpreter, since this one may already hold
gevent or redis.
"""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def modules_after(code, tmp_path):
    """Run ``code`` in a fresh interpreter importing this checkout; return its sys.modules."""
    script = (
        "import sys, json\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        f"{code}\n"
        "import tempest\n"
        f"assert tempest.__file__.startswith({str(ROOT)!r}), tempest.__file__\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def top_level(modules):
    return {name.split(".", 1)[0] for name in modules}


def test_import_tempest_imports_neither_redis_nor_gevent(tmp_path):
    modules = top_level(modules_after("import tempest", tmp_path))
    assert "tempest" in modules
    assert "gevent" not in modules
    assert "redis" not in modules
    assert "tempest.worker" not in modules_after("import tempest", tmp_path)


@pytest.mark.parametrize("code", [
    "import tempest; tempest.Worker",
    "import tempest; tempest.Context",
    "import tempest.worker",
    "from tempest import Worker",
])
def test_worker_library_does_not_import_gevent(tmp_path, code):
    modules = modules_after(code, tmp_path)
    assert "tempest.worker" in modules  # the worker library really was imported
    assert "gevent" not in top_level(modules)


def test_lazy_worker_attribute_is_the_worker_class(tmp_path):
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import tempest, tempest.worker\n"
        "assert tempest.Worker is tempest.worker.Worker\n"
        "assert tempest.Context is tempest.worker.Context\n"
        "try:\n"
        "    tempest.Nope\n"
        "except AttributeError:\n"
        "    print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
