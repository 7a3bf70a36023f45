"""The pub/sub example (examples/pubsub) in a real browser: headless Chromium through Selenium.

tempestd serves the page as static files, the page subscribes with EventSource to
``/sub/chat`` and opens a WebSocket on ``/ws/chat``; a message published from Python must
show up in the page, and a message typed into the page must come back from the example
worker as its ``echo: ...`` answer (and, published by the worker, in the SSE list too).

Needs the ``selenium`` package and Debian's ``chromium`` + ``chromium-driver``
(``.ci/install-browser``); without them the test is skipped, with the reason printed.
"""

import os
import shlex
import shutil
import sys

import pytest

from support import REPO, missing_runtime

EXAMPLE = os.path.join(REPO, "examples", "pubsub")
BROWSER_NAMES = ("chromium", "chromium-browser")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1024,768")
WAIT = 20  # seconds for anything the page has to show


def skip(reason):
    missing_runtime(f"test_browser: {reason}")


def browser_paths():
    """(chromium, chromedriver), or skip the test when one of them is missing."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        skip("the selenium package is not installed (pip install selenium)")
    browser = os.environ.get("CHROMIUM_BIN") or next(filter(None, map(shutil.which, BROWSER_NAMES)), None)
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if not browser or not os.path.exists(browser):
        skip("no chromium on PATH (apt-get install chromium chromium-driver, or .ci/install-browser)")
    if not driver or not os.path.exists(driver):
        skip("no chromedriver on PATH (apt-get install chromium-driver, or .ci/install-browser)")
    return browser, driver


@pytest.fixture
def browser_bins():
    """(chromium, chromedriver); requested first, so that a skip starts nothing."""
    return browser_paths()


@pytest.fixture
def browser(browser_bins, tmp_path):
    browser_bin, driver_bin = browser_bins
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser_bin
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=driver_bin, log_output=str(tmp_path / "chromedriver.log"))
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except WebDriverException as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        skip(f"chromium did not start through {driver_bin}: {first}")
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


GRANT_CHECK = 0.5  # seconds: the example's private inbox ends this long after a logout, at most


@pytest.fixture
def example_daemon(tempestd_factory):
    """examples/pubsub/tempest.ini's settings, on free ports and the tests' Redis."""
    worker = shlex.join([sys.executable, os.path.join(EXAMPLE, "worker.py"), "e2e-browser-ws", "e2e-browser-http"])
    return tempestd_factory(**{
        "front": {"queue": "e2e-browser-http", "session_cookie": "sid",
                  "session_secret": "browser-test-secret-0123456789"},
        "pubsub": {"ws_queue": "e2e-browser-ws", "private": "user.*", "user_field": "user",
                   "grant_check": str(GRANT_CHECK)},
        "static:/examples/": {"directory": EXAMPLE},
        "worker:chat": {"command": worker, "directory": EXAMPLE},
    })


def items(driver, list_id):
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(function (li) {"
        " return li.textContent; });", f"#{list_id} li")


def wait_for_item(driver, daemon, list_id, text):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, WAIT, poll_frequency=0.05).until(lambda d: text in items(d, list_id))
    except TimeoutException:
        pytest.fail(f"{text!r} not in #{list_id} after {WAIT}s; it holds {items(driver, list_id)!r}\n"
                    + diagnostics(driver, daemon))


def diagnostics(driver, daemon):
    try:
        console = "\n".join(entry["message"] for entry in driver.get_log("browser"))
    except Exception as exc:  # the log is a help, not the point
        console = f"(no browser log: {exc})"
    return f"--- browser console ---\n{console}\n--- tempestd log (end) ---\n{daemon.log()[-6000:]}"


@pytest.mark.timeout(120)
def test_example_page_in_chromium(browser_bins, example_daemon, browser, redis_client):
    # tempestd is started before the browser and stopped after it: no stream is open when it stops
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tempest.publish import Publisher

    browser.get(f"{example_daemon.base}/examples/index.html")
    try:
        WebDriverWait(browser, WAIT, poll_frequency=0.05).until(
            lambda d: d.execute_script("return document.body.dataset.ready") == "yes")
    except TimeoutException:
        pytest.fail("the page never got ready (EventSource and WebSocket open)\n"
                    + diagnostics(browser, example_daemon))

    # published from Python: the relay is subscribed (the page's EventSource is open)
    receivers = Publisher(redis_client, patterns=[]).publish("chat", "hello from python")
    assert receivers >= 1, "nobody subscribed to chat in Redis: tempestd's relay is not"
    wait_for_item(browser, example_daemon, "messages", "hello from python")
    # a WebSocket on the channel gets the message as published: the JSON list
    wait_for_item(browser, example_daemon, "ws-messages", '["hello from python"]')

    # typed into the page: a ws job, answered to this socket and published by the worker
    box = browser.find_element(By.ID, "text")
    box.send_keys("hi from the browser")
    browser.find_element(By.ID, "send").click()
    wait_for_item(browser, example_daemon, "ws-messages", "echo: hi from the browser")
    wait_for_item(browser, example_daemon, "messages", "hi from the browser")
    assert box.get_attribute("value") == ""


def wait_for(driver, daemon, script, expected, what, timeout=WAIT):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: d.execute_script(script) == expected)
    except TimeoutException:
        pytest.fail(f"{what}: {script!r} is {driver.execute_script(script)!r}, not {expected!r}, "
                    f"after {timeout}s\n" + diagnostics(driver, daemon))


@pytest.mark.timeout(120)
def test_login_and_a_private_inbox_in_chromium(browser_bins, example_daemon, browser, redis_client):
    """The example's login grants the session user.<name>.*; the page then reads /sub/~inbox
    (user.<name>.inbox); another user's inbox stays closed to it, and to a visitor without the
    cookie; the logout ends the stream (event: revoked) within grant_check."""
    import time

    from selenium.webdriver.common.by import By

    from sseclient import SSE
    from tempest.publish import Publisher

    browser.get(f"{example_daemon.base}/examples/index.html")
    wait_for(browser, example_daemon, "return document.body.dataset.ready", "yes", "the page's streams")
    wait_for(browser, example_daemon, "return document.body.dataset.whoami", "answered", "the page asked /whoami")
    assert browser.find_element(By.ID, "who").text == "not logged in"
    probe = ("window.probe = new EventSource(arguments[0]); "
             "window.probe.onerror = function () { document.body.dataset.probe = String(window.probe.readyState); };")
    browser.execute_script(probe, "/sub/user.carol.inbox")  # before the login: refused, and EventSource gives up
    wait_for(browser, example_daemon, "return document.body.dataset.probe", "2", "a private channel refused")

    browser.find_element(By.ID, "name").send_keys("carol")
    browser.find_element(By.ID, "login").click()
    wait_for(browser, example_daemon, "return document.body.dataset.inbox", "open", "the inbox after the login")
    assert browser.find_element(By.ID, "who").text == "logged in as carol"
    assert Publisher(redis_client, patterns=[]).publish("user.carol.inbox", "for carol only") >= 1
    wait_for_item(browser, example_daemon, "inbox", "for carol only")
    box = browser.find_element(By.ID, "inbox-text")
    box.send_keys("a note to myself")
    browser.find_element(By.ID, "inbox-send").click()  # POST /inbox: the worker publishes to user.carol.inbox
    wait_for_item(browser, example_daemon, "inbox", "a note to myself")

    browser.execute_script("document.body.dataset.probe = ''; " + probe, "/sub/user.dave.inbox")
    wait_for(browser, example_daemon, "return document.body.dataset.probe", "2", "another user's inbox refused")
    stranger = SSE(example_daemon.port, "/sub/user.carol.inbox")  # no cookie: not carol's session
    assert stranger.status_line.split()[1] == "403"

    browser.find_element(By.ID, "logout").click()
    started = time.monotonic()
    wait_for(browser, example_daemon, "return document.body.dataset.inbox", "revoked", "the inbox after the logout",
             timeout=GRANT_CHECK + 5)
    assert time.monotonic() - started < GRANT_CHECK + 2
    assert example_daemon.info()["subscriptions_revoked"] == 1
    wait_for(browser, example_daemon, "return document.getElementById('who').textContent", "not logged in",
             "the page after the logout")
