"""The Flask application of tests/e2e/test_frameworks.py, served through tempest (the gunicorn
worker class) and by gunicorn's own sync worker over HTTP, response by response the same.

Its routes cover what web applications do: text (non-ASCII, a path parameter, HEAD), JSON with
the query string and request headers, a form POST, a redirect, a 404, a cookie set and read, a
Flask session (a signed cookie), a file sent with send_file (gunicorn gives it a
wsgi.file_wrapper, tempest does not: werkzeug's own is used), binary bytes, a body streamed from
a generator, one that fails half-way, an exception (500). A WSGI middleware in front of it answers /legacy/write with the
write() callable that start_response returns, as old applications do. /tempest/session is the one
route that differs by design: the tempest session (environ["tempest.session"], None without
tempestd's session_cookie) and the client address (REMOTE_ADDR).
"""

import os

from flask import Flask, Response, jsonify, redirect, request, send_file, session, url_for

HERE = os.path.dirname(os.path.abspath(__file__))
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))

app = Flask(__name__)
app.secret_key = "tempest-test-only-flask-secret"


@app.route("/")
def text():
    return Response("hello from Flask, caf\u00e9\n", mimetype="text/plain")


@app.route("/hello/<name>")
def hello(name):
    return f"<p>hello, {name}</p>"


@app.route("/json")
def as_json():
    return jsonify(args=request.args.to_dict(flat=False), method=request.method,
                   thing=request.headers.get("X-Thing"), agent=request.headers.get("User-Agent"),
                   remote_addr=request.remote_addr, scheme=request.scheme, path=request.path)


@app.route("/form", methods=["POST"])
def form():
    files = {name: [part.filename, part.read().decode("utf-8")] for name, part in request.files.items()}
    return jsonify(form=request.form.to_dict(flat=False), files=files, content_type=request.mimetype,
                   length=request.content_length)


@app.route("/echo", methods=["POST", "PUT"])
def echo():
    return Response(request.get_data(), mimetype=request.mimetype or "application/octet-stream")


@app.route("/redirect")
def moved():
    return redirect(url_for("hello", name="redirected"))


@app.route("/cookie/set")
def cookie_set():
    response = Response("set\n", mimetype="text/plain")
    response.set_cookie("flavour", request.args.get("flavour", "plain"), httponly=True, samesite="Lax")
    response.set_cookie("second", "2")
    return response


@app.route("/cookie/read")
def cookie_read():
    return jsonify(cookies=request.cookies.to_dict())


@app.route("/login", methods=["POST"])
def login():
    session["user"] = request.form["user"]
    return redirect(url_for("whoami"))


@app.route("/whoami")
def whoami():
    return jsonify(user=session.get("user"))


@app.route("/file")
def a_file():
    return send_file(os.path.join(HERE, "static.txt"), mimetype="text/plain")


@app.route("/binary")
def binary():
    return Response(PNG, mimetype="image/png")


@app.route("/stream")
def stream():
    def blocks():
        for number in range(5):
            yield f"block {number} \u00e9\n"

    return Response(blocks(), mimetype="text/plain")


@app.route("/stream/broken")
def broken_stream():
    def blocks():
        yield "first block\n"
        yield "second block\n"
        raise RuntimeError("the stream failed")

    return Response(blocks(), mimetype="text/plain")


@app.route("/boom")
def boom():
    raise RuntimeError("the application failed")


@app.route("/tempest/session")
def tempest_session():
    found = request.environ.get("tempest.session")
    visits = None
    if found is not None:
        visits = int(found.get("visits") or 0) + 1
        found["visits"] = visits
    return jsonify(remote_addr=request.remote_addr, session=found.id if found is not None else None,
                   visits=visits)


def legacy_write(wsgi_app):
    """A WSGI middleware: /legacy/write answers with start_response's write() callable."""

    def middleware(environ, start_response):
        if environ["PATH_INFO"] != "/legacy/write":
            return wsgi_app(environ, start_response)
        write = start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
        write(b"written first, ")
        return [b"then returned\n"]

    return middleware


app.wsgi_app = legacy_write(app.wsgi_app)
