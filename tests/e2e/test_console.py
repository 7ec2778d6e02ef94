"""The operator console in a real browser (Debian's chromium, headless, through chromedriver)
against a real `herald serve`: sign in and out, find a notification by recipient and read its
timeline; a hostile subject renders as text; revoked keys, cross-site forms and another
tenant's ids are refused. Each page's screenshot is written under the test's folder."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.e2e.test_cli import herald
from tests.herald_process import HeraldProcess
from tests.services import unavailable

pytestmark = pytest.mark.slow

HOSTILE = "<img src=x onerror=alert(1)>"


@dataclass
class Console:
    server: HeraldProcess
    env: dict[str, str]
    workdir: Path
    keys: dict[str, str]  # name: secret
    key_ids: dict[str, str]  # name: id

    @property
    def url(self) -> str:
        return f"{self.server.url}/console"

    def send(self, recipient: str, subject: str) -> str:
        response = httpx.post(
            f"{self.server.url}/api/v1/notifications",
            json={"recipient": recipient, "subject": subject, "message": "Hello"},
            headers={"Authorization": f"Bearer {self.keys['sender']}"},
        )
        assert response.status_code == 202, response.text
        notification_id: str = response.json()["id"]
        return notification_id


def _create_key(env: dict[str, str], cwd: Path, name: str, scopes: str, tenant: str) -> str:
    made = herald(
        "keys", "create", "--name", name, "--scopes", scopes, "--tenant", tenant, env=env, cwd=cwd
    )
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    workdir = tmp_path_factory.mktemp("console")
    env = {"HERALD_DATABASE_URL": f"sqlite:///{workdir / 'herald.db'}"}
    keys = {
        "reader": _create_key(env, workdir, "reader", "read", "acme"),
        "revoked": _create_key(env, workdir, "revoked", "read", "acme"),
        "sender": _create_key(env, workdir, "sender", "send", "acme"),
        "other": _create_key(env, workdir, "other", "read", "globex"),
    }
    listed = herald("keys", "list", env=env, cwd=workdir).stdout.splitlines()
    key_ids = {
        name: next(line.split()[0] for line in listed if secret[:10] in line)
        for name, secret in keys.items()
    }
    server = HeraldProcess(workdir, env).start()
    try:
        yield Console(server, env, workdir, keys, key_ids)
    finally:
        server.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    driver, binary = shutil.which("chromedriver"), shutil.which("chromium")
    if driver is None or binary is None:
        unavailable(
            "chromium",
            "Debian packages chromium and chromium-driver (make test installs them as root)",
        )
    assert driver is not None
    assert binary is not None
    options = Options()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.implicitly_wait(5)
    try:
        yield chrome
    finally:
        chrome.quit()


def _shot(browser: webdriver.Chrome, folder: Path, name: str) -> None:
    browser.save_screenshot(str(folder / f"{name}.png"))


def _sign_in(browser: webdriver.Chrome, console: Console, key: str) -> None:
    browser.get(f"{console.url}/sign-in")
    browser.find_element(By.ID, "key").send_keys(key)
    browser.find_element(By.CSS_SELECTOR, "form.card button[type=submit]").click()


def _no_dialog(browser: webdriver.Chrome) -> None:
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - raises when no script opened one


def test_sign_in_find_a_notification_and_read_its_timeline(
    console: Console, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    wanted = console.send("find-me@example.com", HOSTILE)
    console.send("someone-else@example.com", "Not this one")
    browser.get(console.url)
    assert browser.current_url.endswith("/console/sign-in")  # no session: sign in first
    _shot(browser, tmp_path, "sign-in")
    _sign_in(browser, console, console.keys["reader"])
    assert browser.current_url.endswith("/console/notifications")
    assert "reader · tenant acme" in browser.find_element(By.CSS_SELECTOR, "form.who").text

    browser.find_element(By.ID, "recipient").send_keys("find-me@example.com")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    rows = browser.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == 1
    assert HOSTILE in rows[0].text  # the subject, as text
    _shot(browser, tmp_path, "notifications")
    rows[0].find_element(By.TAG_NAME, "a").click()

    assert browser.current_url.endswith(f"/console/notifications/{wanted}")
    assert browser.find_element(By.ID, "subject").text == HOSTILE
    assert browser.find_elements(By.CSS_SELECTOR, "#subject img") == []
    steps = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#timeline li")]
    assert any("Accepted and stored (channels email)" in step for step in steps), steps
    assert any("Routed to email" in step for step in steps), steps
    _no_dialog(browser)
    _shot(browser, tmp_path, "notification")


def test_wrong_and_revoked_keys_are_refused_and_signing_out_ends_the_session(
    console: Console, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    _sign_in(browser, console, "hk_not-a-key")
    assert browser.current_url.endswith("/console/sign-in")
    error = browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    assert error == "That key is not valid (unknown, revoked or expired)."
    _shot(browser, tmp_path, "sign-in-refused")

    _sign_in(browser, console, console.keys["revoked"])
    assert browser.current_url.endswith("/console/notifications")
    revoked = herald(
        "keys", "revoke", console.key_ids["revoked"], env=console.env, cwd=console.workdir
    )
    assert revoked.returncode == 0, revoked.stderr
    browser.get(f"{console.url}/notifications")  # the session ended with its key
    assert browser.current_url.endswith("/console/sign-in")
    _sign_in(browser, console, console.keys["revoked"])
    assert browser.find_element(By.CSS_SELECTOR, "[role=alert]").text.startswith(
        "That key is not valid"
    )

    _sign_in(browser, console, console.keys["reader"])
    assert browser.current_url.endswith("/console/notifications")
    browser.find_element(By.CSS_SELECTOR, "form.who button").click()
    assert browser.current_url.endswith("/console/sign-in")
    browser.get(f"{console.url}/notifications")
    assert browser.current_url.endswith("/console/sign-in")


def test_another_tenants_notification_is_not_found(
    console: Console, browser: webdriver.Chrome
) -> None:
    theirs = console.send("acme-only@example.com", "For acme")
    _sign_in(browser, console, console.keys["other"])
    browser.get(f"{console.url}/notifications/{theirs}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not found"
    browser.get(f"{console.url}/notifications?recipient=acme-only@example.com")
    assert browser.find_elements(By.CSS_SELECTOR, "tbody tr") == []


def _signed_in_client(console: Console) -> tuple[httpx.Client, str]:
    """A client with a session (as a browser has), and its forms' CSRF token."""
    client = httpx.Client(base_url=console.server.url)
    form = client.get("/console/sign-in")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    signed = client.post(
        "/console/sign-in", data={"key": console.keys["reader"], "csrf": token.group(1)}
    )
    assert signed.status_code == 303
    page = client.get("/console/notifications")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    return client, csrf.group(1)


def test_forms_from_elsewhere_are_refused_and_pages_forbid_scripts_and_frames(
    console: Console,
) -> None:
    client, csrf = _signed_in_client(console)
    try:
        # Another site's form: no token, or its own Origin. The session lives on.
        assert client.post("/console/sign-out", data={}).status_code == 403
        elsewhere = {"Origin": "https://evil.example"}
        refused = client.post("/console/sign-out", data={"csrf": csrf}, headers=elsewhere)
        assert refused.status_code == 403
        page = client.get("/console/notifications")
        assert page.status_code == 200
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy
        assert "frame-ancestors 'none'" in policy
        assert "script-src" not in policy  # none allowed at all
        # Sign-in needs the token its own form set.
        bare = httpx.post(f"{console.url}/sign-in", data={"key": console.keys["reader"]})
        assert bare.status_code == 403
        # With its token, from this origin, signing out works.
        out = client.post("/console/sign-out", data={"csrf": csrf})
        assert out.status_code == 303
        assert client.get("/console/notifications").status_code == 303
    finally:
        client.close()


def test_the_session_cookie_is_http_only_and_same_site_strict(console: Console) -> None:
    client = httpx.Client(base_url=console.server.url)
    with client:
        form = client.get("/console/sign-in")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token is not None
        signed = client.post(
            "/console/sign-in", data={"key": console.keys["reader"], "csrf": token.group(1)}
        )
    cookie = next(
        value
        for name, value in signed.headers.multi_items()
        if name == "set-cookie" and value.startswith("herald_console=")
    )
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP here; behind TLS it is set
