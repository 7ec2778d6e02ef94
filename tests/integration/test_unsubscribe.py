"""The one-click unsubscribe link (RFC 8058), attacked from outside: a token acts on the one
category, user and tenant Herald signed it for, only by POST, only until it expires; it can
never add a category; and wrong tokens are rate-limited per client address."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import sqlalchemy as sa

from herald.api.app import create_app
from herald.clock import utcnow
from herald.domain import unsubscribe
from herald.runtime import Runtime
from herald.store import api_keys, server_secrets, users
from herald.store.server_secrets import UNSUBSCRIBE_KEY
from herald.store.tables import deliveries, notifications
from herald.tenancy import DEFAULT_TENANT
from tests.pipeline_harness import PipelineFactory

URL = "/api/v1/unsubscribe"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@asynccontextmanager
async def from_address(
    runtime: Runtime, host: str, *, open_access: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """A client calling from ``host``: the failure limit is per address."""
    app = create_app(runtime, open_access=open_access)
    transport = httpx.ASGITransport(app=app, client=(host, 4321))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        yield http


async def emailed_link(
    client: httpx.AsyncClient,
    runtime: Runtime,
    user: str,
    category: str,
    headers: dict[str, str] | None = None,
) -> str:
    """The List-Unsubscribe link of an email Herald accepted for ``user``, as the worker signs
    it when sending: its path and query, as a mail client would call it."""
    sent = await client.post(
        "/api/v1/notifications",
        json={
            "user_id": user,
            "channels": ["email"],
            "subject": "S",
            "message": "M",
            "category": category,
        },
        headers=headers,
    )
    assert sent.status_code == 202, sent.text
    async with runtime.db.read() as conn:
        content, tenant = (
            await conn.execute(
                sa.select(deliveries.c.content, notifications.c.tenant_id)
                .join(notifications, notifications.c.id == deliveries.c.notification_id)
                .where(deliveries.c.notification_id == sent.json()["id"])
            )
        ).one()
    assert content["unsubscribe"] is True
    assert "List-Unsubscribe" not in content["headers"]  # no token stored or on the bus
    headers = await runtime.unsubscribe_links.headers(tenant, user, category)
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = headers["List-Unsubscribe"]
    assert link.startswith("<http://127.0.0.1:8000/api/v1/unsubscribe?")
    assert link.endswith(">")
    parts = urlsplit(link[1:-1])
    return f"{parts.path}?{parts.query}"


def token_of(link: str) -> str:
    [token] = parse_qs(urlsplit(link).query)["token"]
    return token


async def emailed_token(
    client: httpx.AsyncClient,
    runtime: Runtime,
    user: str,
    category: str,
    headers: dict[str, str] | None = None,
) -> str:
    return token_of(await emailed_link(client, runtime, user, category, headers))


async def make_user(client: httpx.AsyncClient, user: str, **headers: str) -> None:
    response = await client.put(
        f"/api/v1/users/{user}", json={"email": f"{user}@example.com"}, headers=headers
    )
    assert response.status_code == 201, response.text


async def preferences(
    client: httpx.AsyncClient, user: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    response = await client.get(f"/api/v1/users/{user}/preferences", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def tampered(token: str, **changes: Any) -> str:
    """The token with fields of its payload changed and its signature kept."""
    body, _, mac = token.partition(".")
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    tenant, user, category, expires = raw.decode().split("\x00")
    fields = {"tenant": tenant, "user": user, "category": category, "expires": expires}
    fields.update(changes)
    changed = "\x00".join(str(v) for v in fields.values()).encode()
    return base64.urlsafe_b64encode(changed).rstrip(b"=").decode() + "." + mac


async def signed(runtime: Runtime, link: unsubscribe.Link) -> str:
    """A token signed with Herald's own key: what only Herald could make."""
    async with runtime.db.read() as conn:
        key = await server_secrets.get(conn, UNSUBSCRIBE_KEY)
        user = await users.get(conn, link.tenant, link.user)
    assert key is not None
    assert user is not None
    return unsubscribe.sign(key, link, user.unsubscribe_token)


async def test_get_shows_a_confirmation_page_and_changes_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await make_user(client, "u1")
    link = await emailed_link(client, runtime, "u1", "news")

    page = await client.get(link)  # a person clicking, or a scanner prefetching
    assert (await preferences(client, "u1"))["categories"] == {}
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert '<form method="post" action="/api/v1/unsubscribe?token=' in page.text
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in page.text
    assert "news" in page.text
    bad = await client.get(URL, params={"token": tampered(token_of(link), category="other")})
    assert bad.status_code == 404
    assert bad.headers["content-type"].startswith("text/html")


async def test_the_one_click_post_unsubscribes_from_the_links_category(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await make_user(client, "u1")
    news = await emailed_link(client, runtime, "u1", "news")
    offers = await emailed_token(client, runtime, "u1", "offers")

    # Without the RFC 8058 body (a prefetch, a bare POST) nothing happens.
    for body in ({}, {"List-Unsubscribe": "yes"}):
        refused = await client.post(news, data=body)
        assert (await preferences(client, "u1"))["categories"] == {}
        assert refused.status_code == 422, refused.text

    done = await client.post(news, data=ONE_CLICK)
    assert done.status_code == 200
    assert done.json() == {"status": "unsubscribed", "category": "news"}
    again = await client.post(news, data=ONE_CLICK)  # idempotent
    assert again.json() == {"status": "unsubscribed", "category": "news"}
    # multipart/form-data, as RFC 8058 prefers; a browser's form gets a page back.
    multipart = await client.post(
        URL,
        params={"token": offers},
        files={"List-Unsubscribe": (None, "One-Click")},
        headers={"Accept": "text/html"},
    )
    assert multipart.status_code == 200, multipart.text
    assert "offers" in multipart.text
    assert multipart.headers["content-type"].startswith("text/html")
    assert (await preferences(client, "u1"))["categories"] == {
        "news": {"enabled": False, "channels": {}},
        "offers": {"enabled": False, "channels": {}},
    }


async def test_a_token_for_one_category_cannot_unsubscribe_another(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await make_user(client, "u1")
    news = await emailed_link(client, runtime, "u1", "news")

    # A category added to the link is not looked at: the token's own is used.
    beside = await client.post(f"{news}&category=billing", data=ONE_CLICK)
    assert list((await preferences(client, "u1"))["categories"]) == ["news"]
    assert beside.json() == {"status": "unsubscribed", "category": "news"}
    forged = await client.post(
        URL, params={"token": tampered(token_of(news), category="billing")}, data=ONE_CLICK
    )
    assert forged.status_code == 404
    assert list((await preferences(client, "u1"))["categories"]) == ["news"]


async def test_a_token_of_one_user_cannot_act_on_another(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await make_user(client, "u1")
    await make_user(client, "u2")
    await emailed_token(client, runtime, "u2", "news")  # u2 has links of its own
    token = await emailed_token(client, runtime, "u1", "news")

    forged = await client.post(URL, params={"token": tampered(token, user="u2")}, data=ONE_CLICK)
    assert forged.status_code == 404
    assert (await preferences(client, "u2"))["categories"] == {}
    done = await client.post(URL, params={"token": token}, data=ONE_CLICK)
    assert done.status_code == 200
    assert (await preferences(client, "u2"))["categories"] == {}


async def test_a_token_of_one_tenant_cannot_act_on_another(runtime: Runtime) -> None:
    keys = {}
    async with runtime.db.write() as conn:
        for tenant in ("acme", "globex"):
            _, secret = await api_keys.create(conn, tenant, tenant, ["send", "read"], now=utcnow())
            keys[tenant] = {"Authorization": f"Bearer {secret}"}
    async with from_address(runtime, "127.0.0.1", open_access=False) as client:
        for tenant in keys:  # the same user id in both tenants
            await make_user(client, "u1", **keys[tenant])
        acme = await emailed_token(client, runtime, "u1", "news", keys["acme"])
        await emailed_token(client, runtime, "u1", "news", keys["globex"])

        forged = tampered(acme, tenant="globex")
        assert (await client.post(URL, params={"token": forged}, data=ONE_CLICK)).status_code == 404
        assert (await preferences(client, "u1", keys["globex"]))["categories"] == {}
        done = await client.post(URL, params={"token": acme}, data=ONE_CLICK)
        assert done.status_code == 200
        assert (await preferences(client, "u1", keys["acme"]))["categories"] == {
            "news": {"enabled": False, "channels": {}}
        }
        assert (await preferences(client, "u1", keys["globex"]))["categories"] == {}


async def test_an_expired_token_is_refused(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await make_user(client, "u1")
    token = await emailed_token(client, runtime, "u1", "news")
    link = unsubscribe.read(token)
    assert link is not None
    # Links last LINK_TTL from when they are sent.
    lifetime = link.expires - utcnow().timestamp()
    assert abs(lifetime - unsubscribe.LINK_TTL.total_seconds()) < 60

    past = int((utcnow() - timedelta(seconds=1)).timestamp())
    expired = await signed(runtime, unsubscribe.Link(DEFAULT_TENANT, "u1", "news", past))
    assert (await client.post(URL, params={"token": expired}, data=ONE_CLICK)).status_code == 404
    assert (await client.get(URL, params={"token": expired})).status_code == 404
    assert (await preferences(client, "u1"))["categories"] == {}


async def test_no_category_can_be_invented_and_preferences_do_not_grow(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await make_user(client, "u1")
    link = await emailed_link(client, runtime, "u1", "news")
    token = token_of(link)
    invented_names = ["evil\r\nX-Injected: 1", "<script>alert(1)</script>"]
    invented_names += [f"invented-{i}" for i in range(20)]
    for invented in invented_names:  # a category added to a real link is not looked at
        await client.post(f"{link}&category={quote(invented)}", data=ONE_CLICK)
    before = await preferences(client, "u1")
    assert list(before["categories"]) == ["news"]

    async with from_address(runtime, "10.0.0.1") as attacker:
        for invented in ("brand-new", "evil\r\nX-Injected: 1", "<script>alert(1)</script>"):
            forged = tampered(token, category=invented)
            response = await attacker.post(URL, params={"token": forged}, data=ONE_CLICK)
            assert response.status_code == 404
    # Not even Herald's own key makes a name the API refuses into a category.
    for name in ("evil\r\nX-Injected: 1", "<script>", "x" * 65):
        evil = await signed(runtime, unsubscribe.Link(DEFAULT_TENANT, "u1", name, 2**40))
        response = await client.post(URL, params={"token": evil}, data=ONE_CLICK)
        assert response.status_code == 404
    assert await preferences(client, "u1") == before

    # A template's category may be any text: such email carries no link at all.
    template = {
        "category": "odd <category>",
        "channels": {"email": {"default": {"subject": "Hi", "text": "Hello"}}},
    }
    assert (await client.put("/api/v1/templates/odd", json=template)).status_code == 201
    sent = await client.post(
        "/api/v1/notifications", json={"user_id": "u1", "template": "odd", "channels": ["email"]}
    )
    assert sent.status_code == 202, sent.text
    async with runtime.db.read() as conn:
        content = await conn.scalar(
            sa.select(deliveries.c.content).where(deliveries.c.notification_id == sent.json()["id"])
        )
    assert "List-Unsubscribe" not in content["headers"]


async def test_wrong_tokens_are_rate_limited_per_address(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await make_user(client, "u1")
    link = await emailed_link(client, runtime, "u1", "news")
    wrong = link.replace("token=", "token=x")

    async with from_address(runtime, "203.0.113.7") as guesser:
        answers = [(await guesser.post(wrong, data=ONE_CLICK)).status_code for _ in range(5)]
        assert answers == [404] * 5
        limited = await guesser.get(wrong)
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 1
        # Refused before the token is looked at: a right guess would learn nothing either.
        right = await guesser.post(link, data=ONE_CLICK)
        assert right.status_code == 429
    assert (await preferences(client, "u1"))["categories"] == {}

    # Other addresses are not held back, and successes cost nothing.
    async with from_address(runtime, "198.51.100.1") as person:
        for _ in range(8):
            done = await person.post(link, data=ONE_CLICK)
            assert done.status_code == 200


async def test_the_links_of_a_deleted_user_do_nothing_to_a_new_user_with_its_id(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await make_user(client, "u1")
    old = await emailed_token(client, runtime, "u1", "news")
    assert (await client.delete("/api/v1/users/u1")).status_code == 204
    await make_user(client, "u1")

    assert (await client.post(URL, params={"token": old}, data=ONE_CLICK)).status_code == 404
    assert (await preferences(client, "u1"))["categories"] == {}


async def test_the_email_carries_rfc_8058_headers_whose_link_works(
    start_pipeline: PipelineFactory,
) -> None:
    async with start_pipeline(public_url="https://herald.example.com/") as p:
        await make_user(p.http, "u1")
        sent = await p.send(recipient=None, user_id="u1", category="news", channels=["email"])
        done = await p.wait_until_done(sent["id"])
        assert done["status"] == "SENT"
        [mail] = list(p.sink.received)
        header = str(mail.message["List-Unsubscribe"])
        assert str(mail.message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
        assert header.startswith("<https://herald.example.com/api/v1/unsubscribe?token=")
        assert header.endswith(">")
        assert "\n" not in header
        link = urlsplit(header[1:-1])
        # What a mail client does (RFC 8058 section 3.2): POST the body to exactly that URL.
        response = await p.http.post(
            f"{link.path}?{link.query}",
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.json() == {"status": "unsubscribed", "category": "news"}


async def test_email_to_an_inline_recipient_gets_no_link(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """No registered user, no preferences to change: nothing to unsubscribe from."""
    sent = await client.post(
        "/api/v1/notifications",
        json={"recipient": "a@example.com", "subject": "S", "message": "M", "category": "news"},
    )
    assert sent.status_code == 202, sent.text
    async with runtime.db.read() as conn:
        content = await conn.scalar(
            sa.select(deliveries.c.content).where(deliveries.c.notification_id == sent.json()["id"])
        )
    assert content["unsubscribe"] is False
    assert "List-Unsubscribe" not in content["headers"]
