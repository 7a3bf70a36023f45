"""Roles, secrets and TLS parameters as the configuration reads them (issue 17, items 1 and 4):
which file makes a front, the answer-address check, password files merged in, TLS files made
absolute and checked, and every way a password is hidden."""

import subprocess
import textwrap

import pytest

from tempest import config, roles, tls
from tempest.control_client import format_table
from tempest.errors import ConfigError
from tempest.redisurl import redact_text, redacted, with_password


def load(tmp_path, text):
    path = tmp_path / "tempest.ini"
    path.write_text(textwrap.dedent(text))
    return config.load(str(path))


@pytest.mark.parametrize("text, front", [
    ("[redis]\nurl = redis://127.0.0.1:6379/0\n[worker:a]\ncommand = true\n", False),
    ("[pubsub]\ndurable = news.*\n", False),  # tempest publish on a worker host reads it
    ("[front]\n", True),
    ("[route:/api/]\nqueue = api\n", True),  # a route means a front, even without [front]
])
def test_a_front_is_a_file_with_a_front_section(tmp_path, text, front):
    assert load(tmp_path, text).has_front is front


def test_the_admin_listener_needs_a_front(tmp_path):
    with pytest.raises(ConfigError, match=r"\[admin\] listen: the admin listener needs a \[front\] section"):
        load(tmp_path, "[admin]\nlisten = 127.0.0.1:0\n")


@pytest.mark.parametrize("listen, answer, advertise, refused", [
    ("0.0.0.0:80", "127.0.0.1:0", None, True),
    ("10.0.0.1:80", "localhost:7000", None, True),
    ("[::]:80", "[::1]:0", None, True),
    ("0.0.0.0:80", "127.0.0.1:0", "10.0.0.1:7000", False),
    ("0.0.0.0:80", "10.0.0.1:0", None, False),
    ("127.0.0.1:80", "127.0.0.1:0", None, False),
])
def test_a_loopback_answer_address_behind_a_public_front(tmp_path, listen, answer, advertise, refused):
    text = f"[front]\nlisten = {listen}\nanswer_listen = {answer}\n" + (f"answer_advertise = {advertise}\n" if advertise else "")
    if refused:
        with pytest.raises(ConfigError, match="reaches beyond this machine"):
            load(tmp_path, text)
    else:
        load(tmp_path, text)
    assert roles.is_loopback("127.0.0.2") and not roles.is_loopback("0.0.0.0") and not roles.is_loopback("example.com")


def test_the_answer_endpoint_warning_condition():
    assert roles.exposed_without_password(("0.0.0.0", 7000), "")
    assert not roles.exposed_without_password(("0.0.0.0", 7000), "pw")
    assert not roles.exposed_without_password(("127.0.0.1", 0), "")


def test_password_files_are_merged_and_never_quoted(tmp_path):
    (tmp_path / "redis.pw").write_text("p@ss/word:1\n")
    (tmp_path / "answer.pw").write_text("answer-secret\nsecond line ignored\n")
    conf = load(tmp_path, """
        [redis]
        url = redis://alice@127.0.0.1:6379/2
        password_file = redis.pw
        [front]
        answer_password_file = answer.pw
    """)
    assert conf.redis.url == "redis://alice:p%40ss%2Fword%3A1@127.0.0.1:6379/2"
    assert conf.front.answer_password == "answer-secret"
    import redis

    kwargs = redis.connection.parse_url(conf.redis.url)  # what redis-py (the workers) will send
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("alice", "p@ss/word:1", 2)
    assert redacted(conf.redis.url) == "redis://alice:***@127.0.0.1:6379/2"


@pytest.mark.parametrize("text, message", [
    ("[redis]\nurl = redis://:inline@h:1/0\npassword_file = pw\n", "[redis] password_file: set a password in url or password_file, not both"),
    ("[redis]\npassword_file = nowhere\n", "[redis] password_file: cannot read"),
    ("[redis]\npassword_file = empty\n", "[redis] password_file: "),
    ("[front]\nanswer_password = a\nanswer_password_file = pw\n", "[front] answer_password_file: set answer_password or"),
])
def test_password_file_errors(tmp_path, text, message):
    (tmp_path / "pw").write_text("from-the-file\n")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert message in str(caught.value)
    assert "from-the-file" not in str(caught.value) and "inline" not in str(caught.value)


@pytest.fixture(scope="module")
def pem(tmp_path_factory):
    """A self-signed certificate and its key (cert.pem, key.pem)."""
    directory = tmp_path_factory.mktemp("pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=t",
                    "-keyout", "key.pem", "-out", "cert.pem"], cwd=directory, check=True, capture_output=True, timeout=60)
    return directory


def test_tls_files_are_made_absolute_and_loaded(tmp_path, pem):
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_bytes((pem / name).read_bytes())
    conf = load(tmp_path, "[redis]\nurl = rediss://:pw@127.0.0.1:6380/0?ssl_ca_certs=cert.pem"
                          "&ssl_certfile=cert.pem&ssl_keyfile=key.pem&ssl_cert_reqs=required\n")
    assert f"ssl_ca_certs={tmp_path}/cert.pem" in conf.redis.url
    import redis

    kwargs = redis.connection.parse_url(conf.redis.url)
    assert kwargs["ssl_ca_certs"] == f"{tmp_path}/cert.pem" and kwargs["ssl_keyfile"] == f"{tmp_path}/key.pem"
    context = tls.context(conf.redis.url)
    import ssl

    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


@pytest.mark.parametrize("url, message", [
    ("rediss://h:1/0?ssl_cert_reqs=maybe", "ssl_cert_reqs= is one of required, optional, none"),
    ("rediss://h:1/0?ssl_keyfile=key.pem", "ssl_keyfile= needs ssl_certfile="),
    ("redis://h:1/0?ssl_ca_certs=cert.pem", "ssl_ca_certs= needs a rediss://"),
    ("rediss://h:1/0?sentinel_ssl=yes", "sentinel_ssl= is for redis+sentinel://"),
    ("redis+sentinel://h:1/m?ssl=perhaps", "ssl= is yes or no"),
    ("rediss://:pw@h:1/0?ssl_ca_certs=key.pem", "cannot load the TLS files"),  # a key is no CA
])
def test_bad_tls_parameters_are_config_errors(tmp_path, pem, url, message):
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_bytes((pem / name).read_bytes())
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f"[redis]\nurl = {url}\n")
    assert "[redis] url: " + message in str(caught.value)
    assert ":pw@" not in str(caught.value)


def test_sentinel_tls_and_credentials_become_redis_py_options(tmp_path, pem):
    url = f"redis+sentinel://:master-pw@127.0.0.1:26379/mymaster/0?ssl=yes&sentinel_ssl=yes&ssl_ca_certs={pem}/cert.pem&sentinel_password=sent-pw"
    conf = load(tmp_path, f"[redis]\nurl = {url}\n")
    assert tls.master_tls(conf.redis.url) and tls.sentinel_tls(conf.redis.url)
    assert tls.redis_py_options(conf.redis.url) == {"ssl": True, "ssl_cert_reqs": "required", "ssl_ca_certs": f"{pem}/cert.pem"}
    shown = redacted(conf.redis.url)
    assert "master-pw" not in shown and "sent-pw" not in shown and "sentinel_password=***" in shown


def test_redaction():
    url = "rediss://user:p%40ss@h:6380/0?password=qq-pw&ssl_password=keypass"
    assert redacted(url) == "rediss://user:***@h:6380/0?password=***&ssl_password=***"
    assert redact_text("AUTH p@ss failed, key keypass, for redis://:x@elsewhere", url) == "AUTH *** failed, key ***, for redis://:***@elsewhere"
    assert with_password("redis+sentinel://h1:1,h2:2/m", "a b") == "redis+sentinel://:a%20b@h1:1,h2:2/m"


def test_a_bad_url_is_quoted_without_its_password(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "[redis]\nurl = redis://:hunter2@h:notaport/0\n")
    assert "bad port" in str(caught.value) and "hunter2" not in str(caught.value)


def test_a_table_without_rows_is_its_header():
    assert format_table(("name", "state"), []) == "NAME  STATE"
