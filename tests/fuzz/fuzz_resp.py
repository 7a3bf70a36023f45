"""Fuzz tempest.resp.CommandReader (the answer endpoint's and control socket's reader), in process.

    .venv/bin/python tests/fuzz/fuzz_resp.py -max_total_time=3600     # atheris (libFuzzer flags)
    .venv/bin/python tests/fuzz/fuzz_resp.py --plain --seconds 3600  # without atheris

See docs/fuzzing.md.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

try:
    import atheris
except ImportError:
    atheris = None

if atheris is not None:
    with atheris.instrument_imports(include=["tempest", "fuzz"]):
        from fuzz import targets
else:
    from fuzz import targets
from fuzz import driver  # noqa: E402

SEEDS = [
    b"\x03\x01\x05\x09*2\r\n$4\r\nAUTH\r\n$3\r\npwd\r\n",
    b"\x00*3\r\n$7\r\nPUBLISH\r\n$4\r\nchan\r\n$11\r\n[200,{},\"\"]\r\n*1\r\n$4\r\nPING\r\n",
    b"\x01\x02PING\r\nECHO \"a\\x41\\n\" 'b\\'c'\r\n*1\r\n$4\r\nQUIT\r\n",
    b"\x02\x10\x20*1\r\n$999999999999\r\nxxxx",
    b"\x00*-1\r\n*0\r\n*1\r\n$0\r\n\r\n",
    b"\x04\x01\x01\x01\x01%1\r\n*1\r\n:1\r\n:2\r\n",
    b"\x00*4294967295\r\n",
    b"\x00~2\r\n+a\r\n,1.5\r\n",
    b"\x00HELLO 3\r\n*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n",
]
TOKENS = [b"\r\n", b"*", b"$", b"*1\r\n", b"$1\r\n", b"*-1\r\n", b"$-1\r\n", b"%1\r\n", b"~1\r\n", b">1\r\n",
          b":", b"+", b"-", b"_\r\n", b"#t\r\n", b",", b"(", b"=", b"!", b"|1\r\n", b"\"", b"'", b"\\x",
          b"\\", b"\n", b"\x00", b"9999999999", b"4294967295", b"-2"]


def main() -> None:
    driver.main("fuzz_resp", targets.resp_one_input, SEEDS, TOKENS)


if __name__ == "__main__":
    main()
