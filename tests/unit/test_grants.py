"""Unit tests of tempest.grants' pure parts (grant matching, authorize answers, user ids, the
decision cache) and of the [pubsub] settings of private channels. The admission and the
re-check run against a real Redis in tests/e2e/test_private.py."""

import pytest

from tempest import config, grants
from tempest.converters import to_channel_template
from tempest.errors import ConfigError

SECRET = "a-secret-of-sixteen-bytes-or-more"


@pytest.mark.parametrize("channel, patterns, expected", [
    ("user.42.inbox", ["user.42.*"], True),
    ("user.42.inbox", ["user.4.*"], False),
    ("user.42.a.b", ["user.42.*"], True),  # * crosses dots
    ("user.42.inbox", ["*"], True),  # * grants every channel
    ("User.42.inbox", ["user.42.*"], False),  # case-sensitive
    ("user.*.inbox", ["user.[*].*"], True),  # an escaped * matches only itself
    ("user.bob.inbox", ["user.[*].*"], False),
    ("user.[a]lice.x", ["user.alice.*"], False),  # a channel's [ ] are text
    ("user.42.inbox", [], False),
    ("user.42.inbox", ["user.42.inbox"], True),  # a plain name: itself only
    ("user.42.inboxes", ["user.42.inbox"], False),
    ("user.42", ["user.42.*"], False),
    ("user.42.", ["user.42.*"], True),
    ("user.42.inbox", ["user.4?.*"], True),
    ("user.42.inbox", ["user.[0-9][0-9].*"], True),
    ("user.42.inbox", ["*.inbox"], True),
    ("user.42.inbox", ["user.*.outbox", "nope", "user.42.*"], True),
])
def test_grants_match_as_fnmatch_patterns(channel, patterns, expected):
    assert grants.granted(channel, patterns) is expected


@pytest.mark.parametrize("pattern", ["user.42.*", "user.42.inbox", "*", "user.*.inbox", "u?er.*", "[!x]*", "a*b*",
                                     "user.4[2].*", "user.42.**", "*.*"])
@pytest.mark.parametrize("channel", ["user.42.inbox", "user.42.", "user.4", "a", "ab", "xuser.42.inbox", "user.42.x\ny"])
def test_the_fast_paths_agree_with_fnmatch(pattern, channel):
    import fnmatch

    assert grants.granted(channel, [pattern]) is fnmatch.fnmatchcase(channel, pattern)


@pytest.mark.parametrize("payload, expected", [
    (b'{"allow": true, "ttl": 60}', (True, 60.0)),
    (b'{"allow": false, "ttl": 5.5}', (False, 5.5)),
    (b'{"allow": true}', (True, 0.0)),
    (b'{"allow": true, "ttl": -3}', (True, 0.0)),
    (b'{"allow": true, "ttl": "60"}', (True, 0.0)),
    (b'{"allow": true, "ttl": true}', (True, 0.0)),
    (b'{"allow": true, "ttl": 1e308}', (True, grants.MAX_TTL)),
    (b"true", (True, 0.0)),
    (b"false", (False, 0.0)),
])
def test_authorize_answers(payload, expected):
    assert grants.decision(payload) == expected


@pytest.mark.parametrize("payload", [b'{"allow": 1}', b'{"allow": "yes"}', b"{}", b"[200, {}, \"x\"]", b"null",
                                     b"not json", b'"true"',
                                     b'{"allow": true, "ttl": NaN}', b"[" * 100000 + b"]" * 100000])
def test_malformed_authorize_answers_are_refused(payload):
    with pytest.raises(ValueError):
        grants.decision(payload)


@pytest.mark.parametrize("raw, expected", [
    (b'["alice"]', "alice"), (b"[42]", "42"), (None, None), (b'[true]', None), (b'[null]', None),
    (b'[["a"]]', None), (b'["a b"]', None), (b'["a,b"]', None), (b'["a\\nb"]', None), (b'[""]', None),
    (b'"alice"', None), (b"garbage", None), (("[\"" + "x" * 257 + "\"]").encode(), None),
    ('["é-ü"]'.encode(), "é-ü"),
])
def test_user_ids_fit_for_a_channel_name(raw, expected):
    assert grants.user_id(raw) == expected


def test_cached_decisions_expire_and_a_logout_drops_them():
    cache = grants.Decisions()
    cache.put("s1", "team.7", True, until=110.0, existed=True, now=100.0)
    cache.put("s2", "team.7", False, until=110.0, existed=False, now=100.0)
    assert cache.get("s1", "team.7", exists=True, now=105.0) == (True, 110.0)
    assert cache.get("s1", "team.8", exists=True, now=105.0) is None  # per channel
    assert cache.get("s3", "team.7", exists=True, now=105.0) is None  # per session
    assert cache.get("s2", "team.7", exists=False, now=105.0) == (False, 110.0)  # made without a hash
    assert cache.get("s1", "team.7", exists=False, now=106.0) is None  # its hash gone: a logout
    assert cache.get("s1", "team.7", exists=True, now=106.0) is None  # and forgotten
    assert cache.get("s2", "team.7", exists=False, now=110.0) is None  # expired


def test_the_cache_is_bounded_expired_entries_first_then_the_oldest():
    cache = grants.Decisions(limit=3)
    cache.put("a", "c", True, 50.0, False, now=10.0)  # expires first
    cache.put("b", "c", True, 500.0, False, now=10.0)
    cache.put("c", "c", True, 500.0, False, now=10.0)
    cache.put("d", "c", True, 500.0, False, now=100.0)  # full: "a" has expired, it goes
    assert len(cache) == 3 and cache.get("a", "c", False, 100.0) is None
    cache.put("e", "c", True, 500.0, False, now=100.0)  # full, none expired: the oldest ("b") goes
    assert len(cache) == 3 and cache.get("b", "c", False, 100.0) is None
    assert all(cache.get(s, "c", False, 100.0) for s in "cde")


@pytest.mark.parametrize("template", ["user.{user}.{name}", "inbox-{user}", "{name}@{user}", "u.{user}"])
def test_channel_templates(template):
    assert to_channel_template(f" {template} ") == template


@pytest.mark.parametrize("template", ["user.{name}", "user", "user.{user}.{other}", "user.{user.__class__}",
                                      "user.{user!r}", "user.{user:>9}", "user.{0}", "user.{user", "user {user}",
                                      "user,{user}", "{user}}", "{name}{user}", "user-{user}-{name}",
                                      "u.{user}_{name}", "{user}.{user}", "{user}.{name}.{name}"])
def test_bad_channel_templates(template):
    with pytest.raises(ValueError):
        to_channel_template(template)


@pytest.fixture
def load(tmp_path):
    def load(text):
        path = tmp_path / "tempest.ini"
        path.write_text(text, encoding="utf-8")
        return config.load(str(path))

    return load


def test_private_settings_and_their_defaults(load):
    conf = load(f"[front]\nsession_cookie = sid\nsession_secret = {SECRET}\n"
                "[pubsub]\nprivate = user.*, team.*\nauthorize_queue = auth\nuser_field = user\n")
    pubsub = conf.pubsub
    assert pubsub.private == ("user.*", "team.*") and pubsub.authorize_queue == "auth"
    assert (pubsub.grant_check, pubsub.authorize_timeout) == (5.0, 2.0)
    assert (pubsub.user_field, pubsub.user_channel) == ("user", "user.{user}.{name}")
    defaults = load("").pubsub
    assert (defaults.private, defaults.authorize_queue, defaults.user_field) == ((), None, "")


@pytest.mark.parametrize("text, expected", [
    ("[pubsub]\nprivate = user.*\n", "[pubsub] private: needs [front] session_cookie"),
    ("[pubsub]\nuser_field = user\n", "[pubsub] user_field: needs [front] session_cookie"),
    (f"[front]\nsession_cookie = sid\nsession_secret = {SECRET}\n[pubsub]\nauthorize_queue = auth\n",
     "[pubsub] authorize_queue: authorize_queue without private"),
    ("[pubsub]\nuser_channel = inbox\n", "[pubsub] user_channel: not a channel template"),
    ("[pubsub]\ngrant_check = 0\n", "[pubsub] grant_check: "),
    ("[pubsub]\nauthorize_timeout = 61\n", "[pubsub] authorize_timeout: out of range (0.001 to 60): '61'"),
])
def test_private_setting_errors(load, tmp_path, text, expected):
    with pytest.raises(ConfigError) as caught:
        load(text)
    assert str(caught.value).startswith(f"{tmp_path / 'tempest.ini'} {expected}"), str(caught.value)
