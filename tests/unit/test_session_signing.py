"""Signed session cookies without Redis: the format (pinned against hmac computed here, as
docs/protocol.md section 5 gives it), verification, rotation, and the secrets' settings, which
never show a secret."""

import base64
import hashlib
import hmac

import pytest

from tempest import config, sessions
from tempest.errors import ConfigError

ID = "AbCdEfGhIjKlMnOpQrStUv"
NEW, OLD = "new-secret-0123456789", "old-secret-9876543210"


def documented_mac(secret, session_id):
    digest = hmac.new(secret.encode(), session_id.encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def test_the_cookie_is_the_id_a_dot_and_the_documented_mac():
    value = sessions.Signer(sessions.to_secrets(NEW)).sign(ID)
    assert value == f"{ID}.{documented_mac(NEW, ID)}" and len(value) == 45


def test_verify_takes_only_what_this_server_signed():
    signer = sessions.Signer(sessions.to_secrets(NEW))
    value = signer.sign(ID)
    assert signer.verify(value) == ID
    flipped = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
    for bad in [ID, ID + ".", flipped, value[:-1], value + "A", f"{ID}.{documented_mac(OLD, ID)}",
                sessions.new_id() + value[22:], value.replace(".", ":"), "é" * 45, ""]:
        assert signer.verify(bad) is None, bad


def test_rotation_the_first_signs_every_one_verifies():
    rotated = sessions.Signer(sessions.to_secrets(f"{NEW}, {OLD}"))
    assert rotated.sign(ID) == f"{ID}.{documented_mac(NEW, ID)}"
    assert rotated.verify(f"{ID}.{documented_mac(OLD, ID)}") == ID
    assert rotated.verify(f"{ID}.{documented_mac('another-secret-000', ID)}") is None


@pytest.mark.parametrize("text, count", [(NEW, 1), (f"{NEW},{OLD}", 2), (f" {NEW} \n {OLD} ,", 2)])
def test_secrets_separated_by_commas_or_spaces(text, count):
    assert len(sessions.to_secrets(text)) == count


def test_a_short_secret_is_refused_and_never_quoted():
    with pytest.raises(ValueError) as info:
        sessions.to_secrets(f"{NEW}, tooshort")
    assert "secret 2 of 2 is 8 bytes" in str(info.value) and "tooshort" not in str(info.value)


def test_secrets_never_show_in_a_repr():
    secrets = sessions.to_secrets(f"{NEW} {OLD}")
    for text in (repr(secrets), str(secrets), repr(sessions.Signer(secrets))):
        assert NEW not in text and OLD not in text and "2 session secrets" in text


def write(tmp_path, front, name="tempest.ini"):
    path = tmp_path / name
    path.write_text("[front]\n" + "".join(f"{k} = {v}\n" for k, v in front.items()), encoding="utf-8")
    return str(path)


def load_error(path):
    with pytest.raises(ConfigError) as info:
        config.load(path)
    return str(info.value)


def test_session_cookie_needs_a_secret(tmp_path):
    message = load_error(write(tmp_path, {"session_cookie": "sid"}))
    assert "[front] session_secret:" in message and "session_secret_file" in message


def test_the_secret_settings(tmp_path):
    loaded = config.load(write(tmp_path, {"session_cookie": "sid", "session_secret": f"{NEW}, {OLD}"}))
    assert loaded.session_secrets == (NEW.encode(), OLD.encode())
    assert NEW not in repr(loaded.front) and NEW not in repr(loaded.session_secrets)
    assert config.load(write(tmp_path, {})).session_secrets == ()


def test_a_short_secret_in_the_ini_file_is_refused_unquoted(tmp_path):
    message = load_error(write(tmp_path, {"session_cookie": "sid", "session_secret": "short-secret"}))
    assert "[front] session_secret:" in message and "12 bytes" in message and "short-secret" not in message


def test_the_secret_file_is_relative_to_the_ini_file_first_line_signing(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "secrets").write_text(f"{NEW}\n\n  {OLD}  \n", encoding="utf-8")
    loaded = config.load(write(tmp_path, {"session_cookie": "sid", "session_secret_file": "secrets"}, "conf/t.ini"))
    assert loaded.front.session_secret_file == str(tmp_path / "conf" / "secrets")
    assert loaded.session_secrets == (NEW.encode(), OLD.encode())


def test_an_unreadable_secret_file_is_refused_at_load(tmp_path):
    """A file tempestd cannot read: a missing one here (permissions mean nothing to root, which
    CI runs as); the error is the same OSError path."""
    message = load_error(write(tmp_path, {"session_cookie": "sid", "session_secret_file": "missing-secrets"}))
    assert "[front] session_secret_file: cannot read" in message and "No such file" in message


@pytest.mark.parametrize("content, expected", [
    ("", "no secret given"), ("\n\n", "no secret given"), (f"{NEW}\nshort\n", "secret 2 of 2 is 5 bytes"),
])
def test_a_bad_secret_file_is_refused_unquoted(tmp_path, content, expected):
    (tmp_path / "secrets").write_text(content, encoding="utf-8")
    message = load_error(write(tmp_path, {"session_cookie": "sid", "session_secret_file": "secrets"}))
    assert "[front] session_secret_file:" in message and expected in message
    assert NEW not in message and "short\n" not in message


def test_a_directory_as_secret_file_is_refused_at_load(tmp_path):
    (tmp_path / "secrets").mkdir()
    message = load_error(write(tmp_path, {"session_cookie": "sid", "session_secret_file": "secrets"}))
    assert "[front] session_secret_file: cannot read" in message and "Is a directory" in message


def test_a_missing_secret_file_is_refused_even_without_session_cookie(tmp_path):
    assert "cannot read" in load_error(write(tmp_path, {"session_secret_file": "nowhere"}))


def test_not_both(tmp_path):
    (tmp_path / "secrets").write_text(NEW, encoding="utf-8")
    message = load_error(write(tmp_path, {"session_cookie": "sid", "session_secret": OLD,
                                          "session_secret_file": "secrets"}))
    assert "not both" in message and OLD not in message
