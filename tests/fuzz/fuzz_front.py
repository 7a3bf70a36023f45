"""Fuzz a real tempestd over sockets: raw bytes to its HTTP port (default) or, with ``--answer``,
to its answer endpoint. It starts its own redis-server and tempestd on free 127.0.0.1 ports.
tempestd runs in another process, so atheris sees no coverage of it: its mutations work from the
seeds and tokens below, much as the plain driver does.

    .venv/bin/python tests/fuzz/fuzz_front.py -max_total_time=3600
    .venv/bin/python tests/fuzz/fuzz_front.py --answer --plain --seconds 3600

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
    with atheris.instrument_imports(include=["fuzz"]):  # the response feedback (targets.feedback)
        from fuzz import targets
else:
    from fuzz import targets
from fuzz import driver  # noqa: E402

HTTP_SEEDS = [
    b"\x00GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x01POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"\x00POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"\x00GET /sub/chan HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
    b"\x00GET /ws/chan HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://x\r\n\r\n",
    b"\x00GET http://h/raw/x?a=1 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"\x00GET /static/%00 HTTP/1.0\r\n\r\n",
    b"\x00GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x00POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"\x01GET / HTTP/1.1\r\nHost: x\r\nCookie: tempest_session=abc\r\n\r\n",
    b"\x00OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x00GET /a/../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
]
HTTP_TOKENS = [b"\r\n", b"\r\n\r\n", b" HTTP/1.1", b" HTTP/1.0", b"Host: x\r\n", b"Content-Length: ", b"Transfer-Encoding: chunked\r\n",
               b"Connection: close\r\n", b"Connection: keep-alive\r\n", b"Upgrade: websocket\r\n", b"Expect: 100-continue\r\n",
               b"GET ", b"POST ", b"HEAD ", b"PUT ", b"CONNECT ", b"%00", b"%2e%2e/", b"/sub/", b"/ws/", b"/static/",
               b"\x00", b"\n", b"\r", b" ", b":", b"0\r\n\r\n", b"ffffffffffffffff\r\n", b"99999999999999999999",
               b"Accept: text/event-stream\r\n", b"Last-Event-ID: 1-1\r\n", b"Origin: http://evil\r\n"]
ANSWER_SEEDS = [
    b"\x00*2\r\n$4\r\nAUTH\r\n$1\r\nx\r\n",
    b"\x00*3\r\n$7\r\nPUBLISH\r\n$8\r\nrespond1\r\n$15\r\n[200,{},\"body\"]\r\n",
    b"\x01PING\r\nINFO\r\nQUIT\r\n",
    b"\x00*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*1\r\n$4\r\nPING\r\n",
    b"\x00*1\r\n$999999999999\r\nxxxx",
    b"\x00*4294967295\r\n",
    b"\x00%1\r\n*1\r\n:1\r\n:2\r\n",
    b"\x01*3\r\n$5\r\nRPUSH\r\n$1\r\nq\r\n$1\r\nv\r\n*1\r\n$6\r\nSELECT\r\n",
]


def main() -> None:
    answer = "--answer" in sys.argv
    if answer:
        sys.argv.remove("--answer")
    from fuzz_resp import SEEDS as _, TOKENS as RESP_TOKENS  # noqa: F401  the RESP tokens

    target = targets.AnswerTarget() if answer else targets.FrontTarget()
    target.close = target.live.stop  # type: ignore[attr-defined]  # driver.main calls it at the end
    if answer:
        driver.main("fuzz_answer", target, ANSWER_SEEDS, RESP_TOKENS, target.finish)
    else:
        driver.main("fuzz_front", target, HTTP_SEEDS, HTTP_TOKENS, target.finish)


if __name__ == "__main__":
    main()
