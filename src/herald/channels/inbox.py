"""The in-app channel: a delivery becomes an item in the user's inbox, in the database.

The item's id is the delivery id, so a delivery sent twice (a crash between the insert and
recording the outcome) still leaves one item.
"""

from __future__ import annotations

from herald.channels.base import OutboundMessage, SendResult
from herald.clock import utcnow
from herald.store import inbox
from herald.store.database import Database
from herald.wakeup import Wakeup


class InboxProvider:
    channel = "inapp"
    concurrency = 32

    def __init__(self, name: str, db: Database, wakeup: Wakeup | None = None) -> None:
        self.name = name
        self.db = db
        self.wakeup = wakeup  # wakes Server-Sent Events streams in this process

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def send(self, message: OutboundMessage) -> SendResult:
        item = inbox.InboxItem(
            id=message.delivery_id,
            tenant_id=message.tenant_id,
            user_id=message.recipient,
            notification_id=message.notification_id,
            category=message.category,
            title=message.subject,
            body=message.body,
            data=message.data,
            status="unread",
            created_at=utcnow(),
            read_at=None,
        )
        async with self.db.write() as conn:
            await inbox.add(conn, item)
        if self.wakeup is not None:
            self.wakeup.notify([inbox.stream_key(message.tenant_id, message.recipient)])
        return SendResult(self.name, message.delivery_id)
