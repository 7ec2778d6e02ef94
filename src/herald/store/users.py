"""Users: contact points, locale, time zone, preferences and webhook signing secrets."""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from herald.observability import metrics
from herald.records import record
from herald.store import suppressions
from herald.store.database import Connection
from herald.store.tables import users

U = users.c


@record
class Profile:
    """What a caller sets with PUT /api/v1/users/{id}."""

    email: str | None = None
    phone: str | None = None
    locale: str | None = None
    timezone: str | None = None
    push_tokens: list[str] = field(default_factory=list)
    web_push: list[dict[str, Any]] = field(default_factory=list)
    webhook_url: str | None = None
    apprise_urls: list[str] = field(default_factory=list)

    @property
    def reaches_out(self) -> bool:
        """Whether it names URLs Herald would connect to (checked by herald.outbound)."""
        return bool(self.webhook_url or self.web_push or self.apprise_urls)


@record
class UserRecord:
    tenant_id: str
    id: str
    profile: Profile
    preferences: dict[str, Any]
    webhook_secrets: list[dict[str, Any]]  # {"secret", "expires_at"}, newest first
    # Never shown: the user's part of every unsubscribe link's signature, new for each user
    # created, so a deleted user's links do nothing to a new user with its id.
    unsubscribe_token: str
    created_at: datetime
    updated_at: datetime

    def signing_secrets(self, now: datetime) -> list[str]:
        """Secrets still in use, newest first: more than one while a rotation is in its grace."""
        return [
            s["secret"]
            for s in self.webhook_secrets
            if s.get("expires_at") is None or datetime.fromisoformat(s["expires_at"]) > now
        ]


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def _record(row: sa.Row[tuple[object, ...]]) -> UserRecord:
    m = row._mapping
    return UserRecord(
        tenant_id=m["tenant_id"],
        id=m["id"],
        profile=Profile(
            email=m["email"],
            phone=m["phone"],
            locale=m["locale"],
            timezone=m["timezone"],
            push_tokens=list(m["push_tokens"]),
            web_push=list(m["web_push"]),
            webhook_url=m["webhook_url"],
            apprise_urls=list(m["apprise_urls"]),
        ),
        preferences=dict(m["preferences"]),
        webhook_secrets=list(m["webhook_secrets"]),
        unsubscribe_token=m["unsubscribe_token"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def _profile_values(profile: Profile) -> dict[str, Any]:
    return {
        "email": profile.email,
        "phone": profile.phone,
        "locale": profile.locale,
        "timezone": profile.timezone,
        "push_tokens": profile.push_tokens,
        "web_push": profile.web_push,
        "webhook_url": profile.webhook_url,
        "apprise_urls": profile.apprise_urls,
    }


async def get(
    conn: Connection, tenant: str, user_id: str, *, lock: bool = False
) -> UserRecord | None:
    """``lock``: for the rest of the transaction (PostgreSQL), as a writer reads it."""
    query = sa.select(users).where(U.tenant_id == tenant, U.id == user_id)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return None if row is None else _record(row)


def _unsubscribed(preferences: dict[str, Any]) -> bool:
    return bool(preferences.get("unsubscribed"))


def _suppressible(profile: Profile, unsubscribed: bool) -> list[tuple[str, str]]:
    """The addresses a user unsubscribed from everything has on the suppression list."""
    if not unsubscribed:
        return []
    return [(c, a) for c, a in (("email", profile.email), ("sms", profile.phone)) if a]


async def _follow(
    conn: Connection,
    before: UserRecord,
    profile: Profile,
    preferences: dict[str, Any],
    now: datetime,
) -> None:
    """The suppression list follows the user's unsubscribing from everything (see
    suppressions.follow_unsubscribe_all), whichever of the two changed."""
    had = _suppressible(before.profile, _unsubscribed(before.preferences))
    has = _suppressible(profile, _unsubscribed(preferences))
    if had != has:
        added = await suppressions.follow_unsubscribe_all(
            conn, before.tenant_id, before.id, had, has, now
        )
        for channel, _ in added:
            metrics.suppressions_added.labels(channel=channel, reason="unsubscribe").inc()


async def get_many(conn: Connection, tenant: str, user_ids: Sequence[str]) -> dict[str, UserRecord]:
    if not user_ids:
        return {}
    rows = await conn.execute(
        sa.select(users).where(U.tenant_id == tenant, U.id.in_(set(user_ids)))
    )
    return {r.id: _record(r) for r in rows}


async def put(
    conn: Connection, tenant: str, user_id: str, profile: Profile, now: datetime
) -> tuple[UserRecord, str | None, bool]:
    """Create or replace a user's profile. Returns the user; when a webhook signing secret
    was made just now (the first webhook URL), that secret, shown to the caller once; and
    whether the user was created."""
    existing = await get(conn, tenant, user_id, lock=True)
    fresh_secret = None
    if existing is None:
        secrets_list: list[dict[str, Any]] = []
        if profile.webhook_url:
            fresh_secret = new_secret()
            secrets_list = [{"secret": fresh_secret, "expires_at": None}]
        await conn.execute(
            sa.insert(users).values(
                tenant_id=tenant,
                id=user_id,
                **_profile_values(profile),
                preferences={},
                webhook_secrets=secrets_list,
                unsubscribe_token=secrets.token_urlsafe(24),
                created_at=now,
                updated_at=now,
            )
        )
    else:
        values = {**_profile_values(profile), "updated_at": now}
        if profile.webhook_url and not existing.webhook_secrets:
            fresh_secret = new_secret()
            values["webhook_secrets"] = [{"secret": fresh_secret, "expires_at": None}]
        await conn.execute(
            sa.update(users).where(U.tenant_id == tenant, U.id == user_id).values(**values)
        )
        await _follow(conn, existing, profile, existing.preferences, now)
    found = await get(conn, tenant, user_id)
    assert found is not None
    return found, fresh_secret, existing is None


def subscription_address(subscription: dict[str, Any]) -> str:
    """A Web Push subscription as a delivery's recipient: its JSON, keys sorted."""
    return json.dumps(subscription, sort_keys=True, separators=(",", ":"))


async def forget_address(
    conn: Connection, tenant: str, user_id: str, channel: str, address: str, now: datetime
) -> bool:
    """Remove a push token (``push``) or Web Push subscription (``webpush``, as
    ``subscription_address`` spells it) its provider says is gone; whether the user had it.
    The row is locked first on PostgreSQL: a concurrent PUT of the user is not overwritten
    with the old list."""
    if channel not in ("push", "webpush"):
        return False
    query = sa.select(U.push_tokens, U.web_push).where(U.tenant_id == tenant, U.id == user_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        return False
    if channel == "push":
        tokens = list(row.push_tokens)
        kept: dict[str, Any] = {"push_tokens": [t for t in tokens if t != address]}
        before, after = len(tokens), len(kept["push_tokens"])
    else:
        subscriptions = list(row.web_push)
        kept = {"web_push": [s for s in subscriptions if subscription_address(s) != address]}
        before, after = len(subscriptions), len(kept["web_push"])
    if before == after:
        return False
    await conn.execute(
        sa.update(users)
        .where(U.tenant_id == tenant, U.id == user_id)
        .values(**kept, updated_at=now)
    )
    return True


async def delete(conn: Connection, tenant: str, user_id: str) -> bool:
    """The user's row: contact points, preferences, webhook secrets. What else goes with
    it is store/user_deletion's job."""
    result = await conn.execute(sa.delete(users).where(U.tenant_id == tenant, U.id == user_id))
    return bool(result.rowcount)


async def set_preferences(
    conn: Connection, tenant: str, user_id: str, preferences: dict[str, Any], now: datetime
) -> bool:
    """Store the user's preferences (False: no such user). Unsubscribing from everything
    puts its email address and phone number on the suppression list, subscribing again
    takes them off (see _follow)."""
    before = await get(conn, tenant, user_id, lock=True)
    if before is None:
        return False
    await conn.execute(
        sa.update(users)
        .where(U.tenant_id == tenant, U.id == user_id)
        .values(preferences=preferences, updated_at=now)
    )
    await _follow(conn, before, before.profile, preferences, now)
    return True


async def rotate_secret(
    conn: Connection, tenant: str, user_id: str, *, grace: timedelta, now: datetime
) -> str | None:
    """A new signing secret; the old ones keep signing until ``grace`` has passed, so a
    receiver can switch over without dropping a delivery. None if there is no such user."""
    user = await get(conn, tenant, user_id)
    if user is None:
        return None
    ends = (now + grace).isoformat()
    valid = user.signing_secrets(now)
    kept = [
        {"secret": s["secret"], "expires_at": min(s["expires_at"] or ends, ends)}
        for s in user.webhook_secrets
        if s["secret"] in valid
    ]
    fresh = new_secret()
    await conn.execute(
        sa.update(users)
        .where(U.tenant_id == tenant, U.id == user_id)
        .values(webhook_secrets=[{"secret": fresh, "expires_at": None}, *kept], updated_at=now)
    )
    return fresh
