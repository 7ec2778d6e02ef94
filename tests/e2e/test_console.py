"""The operator console in a real browser (Debian's chromium, headless, through chromedriver)
against a real `herald serve`: sign in and out, find a notification by recipient and read its
timeline; a hostile subject renders as text; revoked keys, cross-site forms and another
tenant's ids are refused. Each page's screenshot is written under the test's folder."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoAlertPresentException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.conftest import TEST_OUTBOUND_ALLOW
from tests.e2e.test_cli import herald
from tests.herald_process import HeraldProcess
from tests.services import unavailable
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.slow

HOSTILE = "<img src=x onerror=alert(1)>"


@dataclass
class Console:
    server: HeraldProcess
    sink: SmtpSink
    env: dict[str, str]
    workdir: Path
    keys: dict[str, str]  # name: secret
    key_ids: dict[str, str]  # name: id

    @property
    def url(self) -> str:
        return f"{self.server.url}/console"

    def arrived(self, recipient: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(recipient in m.rcpt_tos for m in self.sink.messages()):
            assert time.monotonic() < deadline, f"nothing arrived for {recipient}"
            time.sleep(0.1)

    def dead_letters(self, count: int, timeout: float = 30.0, naming: str = "") -> None:
        """Wait until the tenant has ``count`` dead letters waiting (DEAD), one of them
        ``naming`` this (in its key: the recipient) if given."""
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {self.keys['admin']}"}
        while True:
            found = httpx.get(f"{self.server.url}/api/v1/dead-letters?status=DEAD", headers=headers)
            items = found.json()["items"]
            if len(items) >= count and (not naming or any(naming in json.dumps(i) for i in items)):
                return
            assert time.monotonic() < deadline, found.text
            time.sleep(0.1)

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
    sink = SmtpSink()
    sink.start()
    env = {
        "HERALD_DATABASE_URL": f"sqlite:///{workdir / 'herald.db'}",
        "HERALD_SMTP_URL": sink.url,
        "HERALD_OUTBOUND_ALLOW": TEST_OUTBOUND_ALLOW,
    }
    keys = {
        "reader": _create_key(env, workdir, "reader", "read", "acme"),
        "revoked": _create_key(env, workdir, "revoked", "read", "acme"),
        "sender": _create_key(env, workdir, "sender", "send", "acme"),
        "other": _create_key(env, workdir, "other", "read", "globex"),
        "admin": _create_key(env, workdir, "admin", "admin", "acme"),
        "initech": _create_key(env, workdir, "initech", "admin", "initech"),
        "operator": _create_key(env, workdir, "operator", "admin", "default"),
    }
    listed = herald("keys", "list", env=env, cwd=workdir).stdout.splitlines()
    key_ids = {
        name: next(line.split()[0] for line in listed if secret[:10] in line)
        for name, secret in keys.items()
    }
    server = HeraldProcess(workdir, env).start()
    try:
        yield Console(server, sink, env, workdir, keys, key_ids)
    finally:
        server.stop()
        sink.stop()


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


def _click(browser: webdriver.Chrome, element: WebElement) -> None:
    """Click a link or a form's button and wait for the next page (a click returns before)."""
    before = browser.find_element(By.TAG_NAME, "html")
    element.click()

    def replaced(_: object) -> bool:
        try:
            before.is_enabled()
        except WebDriverException:  # stale, or (mid-replacement) not in the document
            return True
        return False

    WebDriverWait(browser, 10).until(replaced)


def _sign_in(browser: webdriver.Chrome, console: Console, key: str) -> None:
    browser.get(f"{console.url}/sign-in")
    browser.find_element(By.ID, "key").send_keys(key)
    _click(browser, browser.find_element(By.CSS_SELECTOR, "form.card button[type=submit]"))


def _set(browser: webdriver.Chrome, element_id: str, value: str) -> None:
    """A time input's value as a user's picker would leave it (typing into one depends on the
    browser's locale: 12 or 24 hours)."""
    element = browser.find_element(By.ID, element_id)
    browser.execute_script("arguments[0].value = arguments[1]", element, value)


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
    assert browser.current_url.endswith("/console/overview")
    assert "reader · tenant acme" in browser.find_element(By.CSS_SELECTOR, "form.who").text
    _click(browser, browser.find_element(By.LINK_TEXT, "Notifications"))

    browser.find_element(By.ID, "recipient").send_keys("find-me@example.com")
    _click(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button"))
    rows = browser.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == 1
    assert HOSTILE in rows[0].text  # the subject, as text
    _shot(browser, tmp_path, "notifications")
    _click(browser, rows[0].find_element(By.TAG_NAME, "a"))

    assert browser.current_url.endswith(f"/console/notifications/{wanted}")
    assert browser.find_element(By.ID, "subject").text == HOSTILE
    assert browser.find_elements(By.CSS_SELECTOR, "#subject img") == []
    steps = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#timeline li")]
    assert any("Accepted and stored (channels email)" in step for step in steps), steps
    assert any("Routed to email" in step for step in steps), steps
    _no_dialog(browser)
    _shot(browser, tmp_path, "notification")
    browser.set_window_size(390, 844)  # a phone: the same page, one column
    _shot(browser, tmp_path, "notification-phone")
    assert browser.find_element(By.ID, "timeline").is_displayed()


def test_wrong_and_revoked_keys_are_refused_and_signing_out_ends_the_session(
    console: Console, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    _sign_in(browser, console, "hk_not-a-key")
    assert browser.current_url.endswith("/console/sign-in")
    error = browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    assert error == "That key is not valid (unknown, revoked or expired)."
    _shot(browser, tmp_path, "sign-in-refused")

    _sign_in(browser, console, console.keys["revoked"])
    assert browser.current_url.endswith("/console/overview")
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
    assert browser.current_url.endswith("/console/overview")
    _click(browser, browser.find_element(By.CSS_SELECTOR, "form.who button"))
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
        assert "script-src 'self';" in policy  # the console's own file, nothing inline
        style = client.get("/console/static/console.css")
        assert style.headers["cache-control"] == "public, max-age=31536000, immutable"
        # Sign-in needs the token its own form set.
        bare = httpx.post(f"{console.url}/sign-in", data={"key": console.keys["reader"]})
        assert bare.status_code == 403
        crowded = {f"f{i}": "x" for i in range(60)} | {"csrf": csrf}
        too_many = client.post("/console/sign-out", data=crowded)
        assert too_many.status_code == 422
        assert too_many.json()["errors"][0]["field"] == "form"
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


REFUSED = "550 5.1.1 <{}>: Recipient address rejected: User unknown"


def test_a_bounced_email_is_replayed_from_its_dead_letter_and_arrives(
    console: Console, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    bounced = "moved-away@example.com"
    console.sink.rcpt_replies[bounced] = REFUSED.format(bounced)
    notification_id = console.send(bounced, HOSTILE)  # in the payload: shown as text
    console.dead_letters(1)

    _sign_in(browser, console, console.keys["reader"])  # reading keys see no dead letters
    browser.get(f"{console.url}/dead-letters")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Admin only"
    _click(browser, browser.find_element(By.CSS_SELECTOR, "form.who button"))

    _sign_in(browser, console, console.keys["admin"])
    _click(browser, browser.find_element(By.LINK_TEXT, "Dead letters"))
    browser.find_element(By.ID, "error_class").send_keys("TransientDeliveryError")
    _click(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button"))
    assert browser.find_elements(By.CSS_SELECTOR, "tbody tr") == []  # a 550 is permanent
    browser.get(f"{console.url}/dead-letters?since=2099-01-01T00:00")
    assert browser.find_elements(By.CSS_SELECTOR, "tbody tr") == []  # none failed since
    browser.get(f"{console.url}/dead-letters?until=nonsense")
    assert browser.find_element(By.ID, "until-error").text.startswith("Until is not a date")
    browser.get(f"{console.url}/dead-letters?provider=smtp&error_class=PermanentDeliveryError")
    rows = browser.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == 1
    assert "permanent" in rows[0].text
    _shot(browser, tmp_path, "dead-letters")
    _click(browser, rows[0].find_element(By.TAG_NAME, "a"))
    assert browser.find_element(By.ID, "letter-status").text == "DEAD"
    assert bounced in browser.find_element(By.ID, "payload").text
    assert HOSTILE in browser.find_element(By.ID, "payload").text
    assert browser.find_elements(By.CSS_SELECTOR, "#payload img") == []
    _no_dialog(browser)
    _shot(browser, tmp_path, "dead-letter")

    del console.sink.rcpt_replies[bounced]  # the mailbox is back
    _click(browser, browser.find_element(By.ID, "replay"))
    assert browser.find_element(By.CSS_SELECTOR, "[role=status]").text.startswith("Replayed")
    assert browser.find_element(By.ID, "letter-status").text == "REPLAYED"
    console.arrived(bounced)
    _click(browser, browser.find_element(By.ID, "notification-link"))
    assert browser.current_url.endswith(f"/console/notifications/{notification_id}")
    timeline = browser.find_element(By.ID, "timeline").text
    assert "Parked in the dead-letter queue" in timeline
    assert "Replayed from the dead-letter queue" in timeline


def test_a_selection_is_previewed_then_replayed_and_a_letter_purged(
    console: Console, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    bounced = [f"gone-{i}@example.com" for i in range(2)]
    for address in bounced:
        console.sink.rcpt_replies[address] = REFUSED.format(address)
        console.send(address, "Your invoice")
    console.dead_letters(2)
    for address in bounced:
        del console.sink.rcpt_replies[address]

    waiting = httpx.get(
        f"{console.server.url}/api/v1/dead-letters?status=DEAD",
        headers={"Authorization": f"Bearer {console.keys['admin']}"},
    ).json()["items"]
    _sign_in(browser, console, console.keys["admin"])
    browser.get(f"{console.url}/dead-letters")
    _click(browser, browser.find_element(By.ID, "preview-replay"))
    summary = browser.find_element(By.ID, "replay-summary").text
    n = len(waiting)  # these two, and any an earlier test left
    assert summary.startswith(f"{n} dead letters match; {n} (the oldest) would be replayed now.")
    _shot(browser, tmp_path, "replay-preview")
    time.sleep(1)
    assert not any(set(bounced) & set(m.rcpt_tos) for m in console.sink.messages())  # a preview
    late = "gone-late@example.com"  # dead-lettered after the preview: not in it
    console.sink.rcpt_replies[late] = REFUSED.format(late)
    console.send(late, "Your invoice")
    console.dead_letters(n + 1)
    _click(browser, browser.find_element(By.ID, "replay-selection"))
    summary = browser.find_element(By.ID, "replay-summary").text
    assert summary.startswith(f"{n} of {n} replayed: the ones")
    assert late not in browser.find_element(By.TAG_NAME, "tbody").text
    for address in bounced:
        console.arrived(address)

    browser.get(f"{console.url}/dead-letters?status=REPLAYED")
    first = browser.find_element(By.CSS_SELECTOR, "tbody tr a")
    letter_url = first.get_attribute("href")
    _click(browser, first)
    _click(browser, browser.find_element(By.LINK_TEXT, "Purge…"))
    _click(browser, browser.find_element(By.ID, "purge"))
    assert browser.find_element(By.CSS_SELECTOR, "[role=status]").text == "Purged."
    assert letter_url is not None
    browser.get(letter_url)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not found"


def test_sign_in_is_refused_after_ten_wrong_keys_from_one_address(console: Console) -> None:
    """Counted per client address: this test signs in from 127.0.0.2, the others from
    127.0.0.1, which stays free to sign in."""
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=console.server.url, transport=transport) as guesser:

        def attempt(key: str) -> int:
            form = guesser.get("/console/sign-in")
            token = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert token is not None
            data = {"key": key, "csrf": token.group(1)}
            return guesser.post("/console/sign-in", data=data).status_code

        assert [attempt(f"hk_guess-{i}") for i in range(10)] == [401] * 10
        assert attempt(console.keys["reader"]) == 429  # even the right key, for a minute
    client, _ = _signed_in_client(console)  # another address signs in as before
    client.close()


def test_an_admin_creates_a_key_sees_it_once_and_revokes_it(
    console: Console, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    _sign_in(browser, console, console.keys["admin"])
    _click(browser, browser.find_element(By.LINK_TEXT, "API keys"))
    browser.find_element(By.ID, "name").send_keys("billing-service")
    _click(browser, browser.find_element(By.ID, "create-key"))  # no scope chosen
    errors = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "p.error")]
    assert errors == ["Scopes: choose at least one"]
    assert browser.find_element(By.ID, "name").get_attribute("value") == "billing-service"
    browser.find_element(By.NAME, "scope_send").click()
    browser.find_element(By.ID, "expires_in_days").send_keys("abc")
    _click(browser, browser.find_element(By.ID, "create-key"))
    errors = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "p.error")]
    assert errors == ["Expiry must be a whole number of days from 1 to 3650, or empty"]
    browser.find_element(By.ID, "expires_in_days").clear()
    browser.find_element(By.ID, "expires_in_days").send_keys("30")
    _click(browser, browser.find_element(By.ID, "create-key"))
    secret = browser.find_element(By.ID, "secret").get_attribute("value")
    assert secret is not None
    assert secret.startswith("hk_")
    _shot(browser, tmp_path, "key-created")
    url = f"{console.server.url}/api/v1/notifications"
    mail = {"recipient": "billing@example.com", "subject": "Invoice", "message": "Hello"}
    headers = {"Authorization": f"Bearer {secret}"}
    assert httpx.post(url, json=mail, headers=headers).status_code == 202

    _click(browser, browser.find_element(By.LINK_TEXT, "Back to API keys"))
    assert secret not in browser.page_source  # shown once
    row = next(
        r
        for r in browser.find_elements(By.CSS_SELECTOR, "#keys tbody tr")
        if r.text.startswith("billing-service")
    )
    assert secret[:10] in row.text
    assert "send" in row.text
    _shot(browser, tmp_path, "keys")
    _click(browser, row.find_element(By.TAG_NAME, "button"))
    assert browser.find_element(By.CSS_SELECTOR, "[role=status]").text.startswith("Revoked")
    deadline = time.monotonic() + 10  # each process trusts what it read of a key for 5 s
    while httpx.post(url, json=mail, headers=headers).status_code != 401:
        assert time.monotonic() < deadline
        time.sleep(0.5)


def test_providers_show_their_circuits_and_the_latest_errors(
    console: Console, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    bounced = "no-such-user@example.com"
    console.sink.rcpt_replies[bounced] = REFUSED.format(bounced)
    console.send(bounced, "Hello")
    console.dead_letters(1, naming=bounced)
    del console.sink.rcpt_replies[bounced]
    _sign_in(browser, console, console.keys["admin"])
    _click(browser, browser.find_element(By.LINK_TEXT, "Providers"))
    circuits = browser.find_element(By.ID, "circuits").text
    assert "smtp email all closed" in circuits  # another tenant than the operator's: no workers
    failures = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#failures tbody tr")]
    assert "550 5.1.1 <no-such-user@example.com>" in failures[0]
    assert not any("replayed from dead letter" in f for f in failures)  # markers, not errors
    _shot(browser, tmp_path, "providers")


def test_a_users_preferences_are_read_and_changed_with_errors_on_the_field(
    console: Console, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    admin = {"Authorization": f"Bearer {console.keys['admin']}"}
    user = {"email": "ana@example.com", "timezone": "Europe/Lisbon"}
    made = httpx.put(f"{console.server.url}/api/v1/users/ana", json=user, headers=admin)
    assert made.status_code == 201, made.text
    _sign_in(browser, console, console.keys["admin"])
    _click(browser, browser.find_element(By.LINK_TEXT, "Users"))
    _shot(browser, tmp_path, "users")
    browser.find_element(By.ID, "id").send_keys("ana")
    _click(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button"))
    contacts = browser.find_element(By.ID, "contacts").text
    assert "ana@example.com" in contacts
    assert "Europe/Lisbon" in contacts

    browser.find_element(By.ID, "channel_email").click()  # opt out of email
    _set(browser, "quiet_start", "22:00")  # no end: refused
    browser.find_element(By.ID, "categories").send_keys('{"marketing": {"enabled": "maybe"}}')
    _click(browser, browser.find_element(By.ID, "save-preferences"))
    errors = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "p.error")]
    assert errors == ["Quiet hours: need both a start and an end"]
    assert not browser.find_element(By.ID, "channel_email").is_selected()  # kept as entered
    _set(browser, "quiet_end", "07:00")
    _click(browser, browser.find_element(By.ID, "save-preferences"))
    errors = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "p.error")]
    assert len(errors) == 1
    assert errors[0].startswith("Categories: Input should be a valid boolean")
    categories = browser.find_element(By.ID, "categories")
    categories.clear()
    categories.send_keys('{"marketing": {"enabled": false}}')
    _click(browser, browser.find_element(By.ID, "save-preferences"))
    assert browser.find_element(By.CSS_SELECTOR, "[role=status]").text.startswith("Preferences")
    _shot(browser, tmp_path, "user")

    stored = httpx.get(f"{console.server.url}/api/v1/users/ana/preferences", headers=admin)
    assert stored.json() == {
        "unsubscribed": False,
        "channels": {"email": False},
        "categories": {"marketing": {"enabled": False, "channels": {}}},
        "quiet_hours": {"start": "22:00:00", "end": "07:00:00"},
    }
    assert not browser.find_element(By.ID, "channel_email").is_selected()

    _click(browser, browser.find_element(By.CSS_SELECTOR, "form.who button"))
    _sign_in(browser, console, console.keys["reader"])  # reading keys see, and cannot change
    browser.get(f"{console.url}/users/ana")
    assert browser.find_elements(By.ID, "save-preferences") == []
    assert not browser.find_element(By.ID, "channel_email").is_enabled()


def test_a_rule_is_made_tested_against_a_sample_event_and_turned_off(
    console: Console, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    admin = {"Authorization": f"Bearer {console.keys['admin']}"}
    template = {"channels": {"email": {"default": {"subject": "Shipped", "text": "On its way"}}}}
    made = httpx.put(f"{console.server.url}/api/v1/templates/shipped", json=template, headers=admin)
    assert made.status_code == 201, made.text
    _sign_in(browser, console, console.keys["admin"])
    _click(browser, browser.find_element(By.LINK_TEXT, "Rules"))
    _click(browser, browser.find_element(By.LINK_TEXT, "new rule"))
    browser.find_element(By.ID, "name").send_keys("big-orders")
    browser.find_element(By.ID, "event_type").send_keys("order.shipped")
    browser.find_element(By.ID, "condition").send_keys("data.amount >")  # does not compile
    browser.find_element(By.ID, "channel_sms").click()  # the template has no sms variant
    browser.find_element(By.ID, "template").send_keys("shipped")
    _click(browser, browser.find_element(By.ID, "save-rule"))
    errors = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "p.error")]
    assert len(errors) == 1
    assert errors[0].startswith("Condition: ")
    condition = browser.find_element(By.ID, "condition")
    condition.clear()
    condition.send_keys("data.amount > 1000")
    _click(browser, browser.find_element(By.ID, "save-rule"))
    errors = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "p.error")]
    assert errors == ["Channels: template 'shipped' has no sms variant"]
    browser.find_element(By.ID, "channel_sms").click()
    browser.find_element(By.ID, "channel_email").click()
    _click(browser, browser.find_element(By.ID, "save-rule"))
    assert browser.find_element(By.CSS_SELECTOR, "[role=status]").text == "Rule saved."
    stored = httpx.get(f"{console.server.url}/api/v1/rules/big-orders", headers=admin).json()
    assert stored["condition"] == "data.amount > 1000"
    assert stored["channels"] == ["email"]

    browser.get(f"{console.url}/rules/new")  # a new rule by an existing one's name
    browser.find_element(By.ID, "name").send_keys("big-orders")
    browser.find_element(By.ID, "event_type").send_keys("order.cancelled")
    browser.find_element(By.ID, "channel_email").click()
    browser.find_element(By.ID, "template").send_keys("shipped")
    _click(browser, browser.find_element(By.ID, "save-rule"))
    assert _errors(browser) == ["Name: a rule 'big-orders' exists: change it on its own page"]
    stored = httpx.get(f"{console.server.url}/api/v1/rules/big-orders", headers=admin).json()
    assert stored["event_type"] == "order.shipped"  # not replaced
    browser.get(f"{console.url}/rules/big-orders")
    _click(browser, browser.find_element(By.LINK_TEXT, "Back to rules"))
    for amount, expected in ((1500, "Sends on email with template shipped"), (10, "Sends nothing")):
        browser.find_element(By.ID, "type").clear()
        browser.find_element(By.ID, "type").send_keys("order.shipped")
        data = browser.find_element(By.ID, "data")
        data.clear()
        data.send_keys(f'{{"amount": {amount}}}')
        sent_before = len(console.sink.messages())
        _click(browser, browser.find_element(By.ID, "test-event"))
        assert browser.find_element(By.ID, "test-outcome").text.startswith(expected)
        assert len(console.sink.messages()) == sent_before  # a test sends nothing
    _shot(browser, tmp_path, "rules")

    turn_off = browser.find_element(By.CSS_SELECTOR, "button[aria-label='Turn big-orders off']")
    _click(browser, turn_off)
    assert browser.find_element(By.CSS_SELECTOR, "[role=status]").text == "Rule turned off."
    stored = httpx.get(f"{console.server.url}/api/v1/rules/big-orders", headers=admin).json()
    assert stored["enabled"] is False


def _fill(browser: webdriver.Chrome, element_id: str, text: str) -> None:
    field = browser.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(text)


def _errors(browser: webdriver.Chrome) -> list[str]:
    return [e.text for e in browser.find_elements(By.CSS_SELECTOR, "p.error")]


def test_a_template_version_is_previewed_live_checked_saved_compared_and_used(
    console: Console, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    admin = {"Authorization": f"Bearer {console.keys['admin']}"}
    first = {"channels": {"email": {"default": {"subject": "Welcome", "text": "Hello there"}}}}
    made = httpx.put(f"{console.server.url}/api/v1/templates/welcome", json=first, headers=admin)
    assert made.status_code == 201, made.text
    _sign_in(browser, console, console.keys["admin"])
    _click(browser, browser.find_element(By.LINK_TEXT, "Templates"))
    _shot(browser, tmp_path, "templates")
    _click(browser, browser.find_element(By.LINK_TEXT, "welcome"))
    assert "Hello there" in browser.find_element(By.ID, "channels").get_attribute("value")

    subject = "Welcome {{ name }}"
    text = "Hello {{ name }}, your code is {{ code }}."
    definition = json.dumps({"email": {"default": {"subject": subject, "text": text}}})
    _fill(browser, "channels", definition)
    _fill(browser, "data", '{"name": "Ana"}')
    _click(browser, browser.find_element(By.ID, "preview-button"))
    assert _errors(browser)[0] == (
        "Sample data: email.default.text: variable 'code' is undefined in the sample data"
    )

    # The live preview: typing re-renders it, the page stays.
    page_before = browser.find_element(By.TAG_NAME, "html")
    _fill(browser, "data", '{"name": "Ana", "code": "42"}')
    WebDriverWait(browser, 10).until(
        lambda b: "Hello Ana, your code is 42." in b.find_element(By.ID, "preview").text
    )
    assert page_before.is_displayed()  # not reloaded: the same page, its preview replaced
    assert _errors(browser) == []  # the last submit's message is gone with its cause
    _fill(browser, "data", '{"name": "Ana"}')
    WebDriverWait(browser, 10).until(
        lambda b: "variable 'code' is undefined" in b.find_element(By.ID, "preview").text
    )
    _fill(browser, "data", '{"name": "Ana", "code": "42"}')
    WebDriverWait(browser, 10).until(
        lambda b: "Hello Ana, your code is 42." in b.find_element(By.ID, "preview").text
    )
    assert browser.find_element(By.CSS_SELECTOR, ".preview-subject").text == "Welcome Ana"
    _fill(browser, "data", json.dumps({"name": HOSTILE, "code": "42"}))
    WebDriverWait(browser, 10).until(
        lambda b: b.find_element(By.CSS_SELECTOR, ".preview-subject").text == f"Welcome {HOSTILE}"
    )
    assert browser.find_elements(By.CSS_SELECTOR, "#preview img") == []  # text, not markup
    _no_dialog(browser)
    _shot(browser, tmp_path, "template-preview")

    _fill(browser, "data", '{"name": "Ana\\nBcc: someone@example.com", "code": "42"}')
    _click(browser, browser.find_element(By.ID, "preview-button"))  # a header injected
    assert _errors(browser)[0].startswith("Channels: email.default.subject: must render")
    endless = "{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}"
    _fill(browser, "channels", definition.replace("{{ code }}", endless))
    _fill(browser, "data", '{"name": "Ana", "code": "42"}')
    _click(browser, browser.find_element(By.ID, "save-template"))  # past the render budget
    assert _errors(browser)[0].startswith("Channels: email.default.text: not allowed")
    versions = httpx.get(f"{console.server.url}/api/v1/templates/welcome/versions", headers=admin)
    assert len(versions.json()) == 1  # nothing saved while something is wrong

    _fill(browser, "channels", definition)
    _click(browser, browser.find_element(By.ID, "save-template"))
    assert browser.find_element(By.CSS_SELECTOR, "[role=status]").text.startswith("Saved")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#versions li")) == 2
    _click(browser, browser.find_element(By.ID, "compare"))
    removed = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#diff .removed")]
    added = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#diff .added")]
    assert any("Hello there" in line for line in removed)
    assert any("your code is {{ code }}" in line for line in added)
    _shot(browser, tmp_path, "template-diff")

    data = {"name": "Bo", "code": "7"}
    mail = {"recipient": "bo@example.com", "template": "welcome", "data": data}
    sent = httpx.post(f"{console.server.url}/api/v1/notifications", json=mail, headers=admin)
    assert sent.status_code == 202, sent.text
    console.arrived("bo@example.com")
    (received,) = [m for m in console.sink.messages() if "bo@example.com" in m.rcpt_tos]
    assert received.message["Subject"] == "Welcome Bo"
    assert "Hello Bo, your code is 7." in received.message.get_body(("plain",)).get_content()


def test_the_overview_counts_a_tenants_notifications_live_and_the_operator_sees_the_pipeline(
    console: Console, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    _sign_in(browser, console, console.keys["initech"])  # a tenant with nothing sent yet
    assert browser.current_url.endswith("/console/overview")
    assert "0 in 15 minutes" in browser.find_element(By.ID, "per-minute").text
    assert browser.find_element(By.ID, "latency").text.startswith("nothing sent")
    assert browser.find_elements(By.ID, "outbox") == []  # the pipeline is the operator's
    page_before = browser.find_element(By.TAG_NAME, "html")
    headers = {"Authorization": f"Bearer {console.keys['initech']}"}
    for i in range(3):
        mail = {"recipient": f"initech-{i}@example.com", "subject": "Hi", "message": "Hello"}
        sent = httpx.post(f"{console.server.url}/api/v1/notifications", json=mail, headers=headers)
        assert sent.status_code == 202
    for i in range(3):
        console.arrived(f"initech-{i}@example.com")
    # Refreshed by the page itself: an element read while it is being replaced is stale.
    WebDriverWait(browser, 15, ignored_exceptions=[StaleElementReferenceException]).until(
        lambda b: (
            "Sent: " in b.find_element(By.ID, "per-minute").text
            and "3 in 15 minutes" in b.find_element(By.ID, "per-minute").text.split("Sent: ")[1]
        )
    )
    charts = browser.find_element(By.ID, "per-minute").text
    assert "Accepted: " in charts
    assert "3 in 15 minutes" in charts.split("Accepted: ")[1]
    assert "Failed: 0 this minute, 0 in 15 minutes" in charts
    assert browser.find_element(By.ID, "latency").text.startswith("p50 ")
    assert page_before.is_displayed()  # the same page: its figures were replaced
    _shot(browser, tmp_path, "overview")

    _click(browser, browser.find_element(By.CSS_SELECTOR, "form.who button"))
    _sign_in(browser, console, console.keys["operator"])
    lag = browser.find_element(By.ID, "lag").text
    assert "router" in lag
    assert "worker.email" in lag
    assert browser.find_element(By.ID, "open-circuits").text == "none"
    assert browser.find_element(By.ID, "outbox").text.endswith("due") or "oldest" in (
        browser.find_element(By.ID, "outbox").text
    )


def test_notifications_are_found_by_id_user_channel_and_time(
    console: Console, browser: webdriver.Chrome
) -> None:
    admin = {"Authorization": f"Bearer {console.keys['admin']}"}
    url = console.server.url
    assert httpx.put(f"{url}/api/v1/users/ben", json={"email": "ben@example.com"}, headers=admin)
    mail = {"user_id": "ben", "subject": "For Ben", "message": "Hello"}
    to_ben = httpx.post(f"{url}/api/v1/notifications", json=mail, headers=admin).json()["id"]
    _sign_in(browser, console, console.keys["reader"])
    _click(browser, browser.find_element(By.LINK_TEXT, "Notifications"))

    browser.find_element(By.ID, "user_id").send_keys("ben")
    _click(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button"))
    rows = browser.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert [r.text.split()[2:4] for r in rows] == [["ben@example.com", "For"]]

    Select(browser.find_element(By.ID, "channel")).select_by_value("sms")
    _click(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button"))
    assert browser.find_elements(By.CSS_SELECTOR, "tbody tr") == []  # ben's went by email

    browser.get(f"{console.url}/notifications?user_id=ben&since=2099-01-01T00:00")
    assert browser.find_elements(By.CSS_SELECTOR, "tbody tr") == []  # nothing accepted since
    browser.get(f"{console.url}/notifications?user_id=ben&until=2099-01-01T00:00")
    assert len(browser.find_elements(By.CSS_SELECTOR, "tbody tr")) == 1
    browser.get(f"{console.url}/notifications?since=yesterday")
    assert browser.find_element(By.ID, "since-error").text.startswith("From is not a date")

    browser.get(f"{console.url}/notifications")
    browser.find_element(By.ID, "id").send_keys(to_ben)
    _click(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button"))
    assert browser.current_url.endswith(f"/console/notifications/{to_ben}")
    assert browser.find_element(By.ID, "subject").text == "For Ben"


def test_a_scheduled_notification_is_cancelled_from_its_page(
    console: Console, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    admin = {"Authorization": f"Bearer {console.keys['admin']}"}
    later = {
        "recipient": "later@example.com",
        "subject": "Later",
        "message": "Hi",
        "send_at": "2099-01-01T00:00:00Z",
    }
    sent = httpx.post(f"{console.server.url}/api/v1/notifications", json=later, headers=admin)
    assert sent.json()["status"] == "SCHEDULED"
    _sign_in(browser, console, console.keys["reader"])  # reading keys cannot cancel
    browser.get(f"{console.url}/notifications/{sent.json()['id']}")
    assert browser.find_elements(By.ID, "cancel") == []
    _click(browser, browser.find_element(By.CSS_SELECTOR, "form.who button"))
    _sign_in(browser, console, console.keys["admin"])
    browser.get(f"{console.url}/notifications/{sent.json()['id']}")
    _click(browser, browser.find_element(By.ID, "cancel"))
    assert browser.find_element(By.CSS_SELECTOR, "[role=status]").text.startswith("Cancelled")
    assert browser.find_element(By.ID, "status").text == "CANCELLED"
    assert (
        "Cancelled by an operator before it fell due"
        in browser.find_element(By.ID, "timeline").text
    )
    assert browser.find_elements(By.ID, "cancel") == []  # nothing left to cancel
