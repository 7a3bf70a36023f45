"""tempestd patches with gevent first: the modules it loads before monkey.patch_all() (the CLI
and the configuration it checks) must not import what gets patched."""

import json
import subprocess
import sys


def test_the_cli_imports_nothing_that_gevent_patches():
    code = "import json, sys, tempest.cli; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    loaded = set(json.loads(out.stdout))
    assert not {"redis", "ssl", "hiredis", "socket"} & loaded
