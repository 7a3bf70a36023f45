"""The access log's format check and escaping."""

import pytest

from tempest.logformat import DEFAULT_FORMAT, check_format, escape


def test_the_default_and_gunicorn_style_formats_pass():
    assert check_format(DEFAULT_FORMAT) == DEFAULT_FORMAT
    assert check_format('%(h)s "%(r)s" %(s)s %(D)s %({x-request-id}i)s') == '%(h)s "%(r)s" %(s)s %(D)s %({x-request-id}i)s'


@pytest.mark.parametrize("fmt, message", [
    ("%(h)s %(zz)s", "unknown atom %(zz)s"),
    ("%s %d", "not a format of %(atom)s placeholders"),
    ("%(h)s %({Cookie}i)s", "would write a secret"),
    ("%({authorization}i)s", "would write a secret"),
])
def test_bad_formats_are_refused_with_a_clear_error(fmt, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_format(fmt)


def test_escape_keeps_plain_text_and_escapes_what_could_forge_a_line():
    assert escape("GET /a?b=1 HTTP/1.1") == "GET /a?b=1 HTTP/1.1"
    assert escape('a"b\\c') == 'a\\"b\\\\c'
    assert escape("x\r\ny\x00\xff") == "x\\x0d\\x0ay\\x00\\xff"
    assert escape("\u20ac") == "\\xe2\\x82\\xac"


def test_a_bad_line_that_is_a_python_literal_is_a_clear_config_error(tmp_path):
    """Python 3.13's configparser no longer repr()s the bad line: 42 must stay the text '42'."""
    from tempest import config
    from tempest.errors import ConfigError

    path = tmp_path / "bad.ini"
    path.write_text("[tempest]\n42\n")
    with pytest.raises(ConfigError, match=r"line 2: not 'key = value': '42'"):
        config.load(str(path))
