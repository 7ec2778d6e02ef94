"""Accept a notification: store it, its deliveries and its outbox event in one transaction.

Nothing is published from here; the relay does that. With an Idempotency-Key, the stored
response of the first request is returned for every repeat with the same body.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from herald.bus.base import OutgoingMessage
from herald.bus.topics import Topics
from herald.clock import utcnow
from herald.domain.messages import Content, DeliveryPlan, NotificationRequested
from herald.domain.models import DeliveryStatus, NotificationStatus
from herald.errors import IdempotencyKeyReusedError
from herald.ids import uuid7
from herald.observability import metrics, tracing
from herald.observability.logging import get_logger
from herald.pipeline.envelope import envelope
from herald.store import idempotency, notifications, outbox
from herald.store.database import Database
from herald.store.idempotency_cache import IdempotencyCache
from herald.store.notifications import DeliveryRecord, NotificationRecord
from herald.wakeup import Wakeup

log = get_logger(__name__)

Render = Callable[[NotificationRecord], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class NotificationRequest:
    channels: tuple[str, ...]
    recipient: str
    subject: str | None
    body: str
    user_id: str | None = None
    traceparent: str | None = None  # W3C trace context, carried on every message

    @property
    def user_key(self) -> str:
        """The partition key: a user's notifications stay in order."""
        return self.user_id or self.recipient


@dataclass(frozen=True, slots=True)
class IdempotencyRequest:
    scope: str
    key: str
    request_hash: str


@dataclass(frozen=True, slots=True)
class Accepted:
    status: int
    body: dict[str, Any]
    replayed: bool


class Intake:
    def __init__(
        self,
        db: Database,
        topics: Topics,
        outbox_wakeup: Wakeup,
        *,
        idempotency_ttl: float,
        cache: IdempotencyCache | None = None,
    ) -> None:
        self.db = db
        self.topics = topics
        self.outbox_wakeup = outbox_wakeup
        self.idempotency_ttl = idempotency_ttl
        self.cache = cache

    async def submit(
        self,
        request: NotificationRequest,
        render: Render,
        idem: IdempotencyRequest | None = None,
    ) -> Accepted:
        """Store the notification; ``render`` makes the response body that repeats get back."""
        if idem is not None and self.cache is not None:
            cached = await self.cache.get(idem.scope, idem.key)
            if cached is not None:
                return _replay(cached, idem)
        for _ in range(3):
            try:
                return await self._submit_once(request, render, idem)
            except IntegrityError:
                # PostgreSQL: a concurrent request with the same key committed first. The
                # next round finds its stored response.
                if idem is None:
                    raise
        raise RuntimeError("idempotency key kept conflicting")  # pragma: no cover

    async def _submit_once(
        self, request: NotificationRequest, render: Render, idem: IdempotencyRequest | None
    ) -> Accepted:
        now = utcnow()
        async with self.db.write() as conn:
            if idem is not None:
                stored = await idempotency.find(conn, idem.scope, idem.key, now)
                if stored is not None:
                    return _replay(stored, idem)
            record = _new_record(request, now)
            await notifications.insert(conn, record)
            await outbox.add(conn, [self._requested(record, request)], now=now)
            body = render(record)
            response = None
            if idem is not None:
                response = idempotency.StoredResponse(idem.request_hash, record.id, 202, body)
                await idempotency.save(
                    conn, idem.scope, idem.key, response, now=now, ttl_seconds=self.idempotency_ttl
                )
        self.outbox_wakeup.notify()
        metrics.notifications_accepted.inc()
        if idem is not None and response is not None and self.cache is not None:
            await self.cache.put(idem.scope, idem.key, response, self.idempotency_ttl)
        log.info(
            "notification.accepted", notification_id=record.id, channels=",".join(request.channels)
        )
        return Accepted(202, body, replayed=False)

    def _requested(
        self, record: NotificationRecord, request: NotificationRequest
    ) -> OutgoingMessage:
        event = NotificationRequested(
            notification_id=record.id,
            user_key=request.user_key,
            user_id=request.user_id,
            deliveries=[
                DeliveryPlan(delivery_id=d.id, channel=d.channel, recipient=d.recipient)
                for d in record.deliveries
            ],
            content=Content(subject=request.subject, body=request.body),
            created_at=record.created_at,
        )
        extra = {tracing.HEADER: request.traceparent} if request.traceparent else None
        return envelope(self.topics.requested, request.user_key, event, extra)


def _replay(stored: idempotency.StoredResponse, idem: IdempotencyRequest) -> Accepted:
    if stored.request_hash != idem.request_hash:
        raise IdempotencyKeyReusedError(idem.key)
    return Accepted(stored.status, stored.body, replayed=True)


def _new_record(request: NotificationRequest, now: datetime) -> NotificationRecord:
    notification_id = uuid7()
    return NotificationRecord(
        id=notification_id,
        user_id=request.user_id,
        recipient=request.recipient,
        subject=request.subject,
        body=request.body,
        status=NotificationStatus.PENDING,
        created_at=now,
        updated_at=now,
        completed_at=None,
        deliveries=[
            DeliveryRecord(
                id=uuid7(),
                notification_id=notification_id,
                channel=channel,
                recipient=request.recipient,
                status=DeliveryStatus.PENDING,
                attempts=0,
                last_error=None,
                provider=None,
                provider_message_id=None,
                next_attempt_at=None,
                created_at=now,
                updated_at=now,
                last_attempt_at=None,
                sent_at=None,
            )
            for channel in request.channels
        ],
    )
