"""One-click unsubscribe links, signed when an email is sent.

Routing only marks an email as getting a link (``Content.unsubscribe``); the link itself, a
token that opts the user out of a category (domain/unsubscribe), is made here, by the worker,
just before the send. So no bus message and no stored delivery carries a token: every team
reading the topics could otherwise unsubscribe anyone. The expiry counts from the send.
"""

from __future__ import annotations

from urllib.parse import urlencode

from herald.clock import utcnow
from herald.domain import unsubscribe
from herald.store import users
from herald.store.database import Database
from herald.store.server_secrets import ServerSecret


class UnsubscribeLinks:
    def __init__(self, db: Database, key: ServerSecret, public_url: str) -> None:
        self.db = db
        self.key = key
        self.public_url = public_url.rstrip("/")

    async def headers(self, tenant_id: str, user_id: str, category: str) -> dict[str, str]:
        """RFC 2369 and RFC 8058 headers for this user and category; none if the user is gone
        (a deleted user's deliveries are cancelled, and a new one of that id has no links of
        the old one's)."""
        async with self.db.read() as conn:
            user = await users.get(conn, tenant_id, user_id)
        if user is None:
            return {}
        link = unsubscribe.Link(tenant_id, user.id, category, unsubscribe.expiry(utcnow()))
        token = unsubscribe.sign(await self.key.value(), link, user.unsubscribe_token)
        query = urlencode({"token": token})
        return {
            "List-Unsubscribe": f"<{self.public_url}/api/v1/unsubscribe?{query}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
