"""Static files under a [static:] prefix: served with their type, never outside the directory,
and a bad path is a 4xx, never a dropped connection."""

import pytest

from support import http, raw_exchange


@pytest.fixture(scope="module")
def site(module_tempestd_factory, tmp_path_factory):
    """One tempestd for the module: every test only reads the files."""
    top = tmp_path_factory.mktemp("static")
    root = top / "www"
    (root / "docs").mkdir(parents=True)
    (root / "index.html").write_text("<p>home</p>")
    (root / "docs" / "app.js").write_text("let x = 1;")
    (top / "secret.txt").write_text("not for you")
    return module_tempestd_factory(front={"queue": "static-none", "timeout": "2"},
                                   **{"static:/files/": {"directory": str(root)}})


def test_a_file_is_served_with_its_type(site):
    status, headers, body = http("GET", site.base + "/files/docs/app.js")
    assert (status, body) == (200, b"let x = 1;")
    assert headers["content-type"] == "text/javascript; charset=utf-8" or headers["content-type"].startswith("application/javascript")


def test_a_directory_serves_its_index_and_head_has_no_body(site):
    assert http("GET", site.base + "/files/")[2] == b"<p>home</p>"
    status, headers, body = http("HEAD", site.base + "/files/")
    assert (status, body, headers["content-length"]) == (200, b"", "11")


@pytest.mark.parametrize("path", ["/files/../secret.txt", "/files/%2e%2e/secret.txt", "/files/docs/%2e%2e/%2e%2e/secret.txt",
                                  "/files/missing.html", "/files/%00", "/files/docs/app.js%00.png"])
def test_nothing_outside_and_no_bad_name_is_served(site, path):
    reply = raw_exchange(site.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 404 Not Found\r\n")  # an answer, not a dropped connection
    assert b"not for you" not in reply


def test_only_get_and_head(site):
    assert http("POST", site.base + "/files/index.html", body=b"x")[0] == 405


def test_a_static_prefix_without_its_slash_is_redirected(site):
    status, headers, body = http("GET", site.base + "/files?x=1")
    assert status == 301 and headers["location"] == "/files/?x=1"
