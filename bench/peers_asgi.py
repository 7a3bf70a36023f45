"""The ASGI hello world that bench/peers.py serves with uvicorn: the hello worker's answer,
``Hello world! #N`` (text/html, with Content-Length), N counted per process."""

count = 0
HEAD = [(b"content-type", b"text/html; charset=utf-8")]


async def app(scope, receive, send):
    global count
    if scope["type"] != "http":
        return
    count += 1
    body = f"Hello world! #{count}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": HEAD + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
