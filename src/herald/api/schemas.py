"""Request and response bodies of the HTTP API."""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any, Literal

import email_validator
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)
from pydantic_core import to_jsonable_python

from herald.domain.expressions import compile_expression
from herald.domain.models import Channel, DeliveryStatus, NotificationStatus, Priority
from herald.pipeline.admitted import Admitted
from herald.pipeline.planning import PlannedDelivery
from herald.store.deadletters import DeadLetter, Filters
from herald.store.deliveries import Attempt
from herald.store.notifications import DeliveryRecord, NotificationRecord

# A header line may not exceed 998 characters (RFC 5322 2.1.1).
MAX_SUBJECT_CHARS = 998
# The largest value of an INTEGER column (PostgreSQL int4; see store/tables.py).
DB_INT_MAX = 2**31 - 1


def _email_address(value: str) -> str:
    normalized, problem = _checked_email(value)
    if problem is not None:
        raise ValueError(f"not a valid email address: {problem}")
    return normalized


_SPECIAL_USE = tuple(email_validator.SPECIAL_USE_DOMAIN_NAMES)


def accept_special_use_domains(names: list[str]) -> None:
    """Let recipients be at these special-use domains (HERALD_EMAIL_SPECIAL_USE_DOMAINS):
    email_validator refuses the names left in its list, which is global to the process."""
    email_validator.SPECIAL_USE_DOMAIN_NAMES = [d for d in _SPECIAL_USE if d not in names]
    _checked_email.cache_clear()


@lru_cache(maxsize=8192)
def _checked_email(value: str) -> tuple[str, str | None]:
    """The address as stored, or why it is not one. Cached: the same recipients come again
    and again, and checking one is a good part of what accepting a notification costs."""
    try:
        found = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        return "", str(exc)
    # An internationalised domain in its IDNA (xn--) form, which any SMTP relay takes; only
    # a non-ASCII local part needs SMTPUTF8 (api/deliverable.py refuses it unless enabled).
    return found.ascii_email or found.normalized, None


# Control characters but tab (C0 and DEL), and the line breaks beyond them (NEL, U+2028,
# U+2029; the others are C0): all that _single_line refuses, found in one scan.
_NOT_SINGLE_LINE = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")


def _single_line(value: str) -> str:
    # A line break in a header value would let a caller inject headers of their own.
    if _NOT_SINGLE_LINE.search(value) is not None:
        raise ValueError("must be a single line without control characters")
    return value


def _not_blank(value: str) -> str:
    # Whitespace alone is nothing to send: SMS and Apprise providers refuse it for good.
    if not value.strip():
        raise ValueError("must contain more than whitespace")
    return value


def _utc_representable(value: datetime) -> datetime:
    # Stored in UTC (store/tables.UTCDateTime): an offset that moves it before year 1 or past
    # 9999 cannot be converted, let alone stored.
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC (years 1 to 9999)") from None
    return value


EmailAddress = Annotated[
    str, Field(max_length=320), AfterValidator(_single_line), AfterValidator(_email_address)
]
# Every time a request gives: with a UTC offset, and storable once in UTC.
Timestamp = Annotated[AwareDatetime, AfterValidator(_utc_representable)]


PHONE = r"^\+[1-9][0-9]{6,14}$"  # E.164
Phone = Annotated[str, Field(pattern=PHONE, description="E.164, e.g. +14155550100")]
HttpUrl = Annotated[str, Field(max_length=2000, pattern=r"^https?://[^\s]+$")]
# Length constraints before the validators written in Python, so that pydantic checks them in
# its core (after one, each would be another Python call per field: a batch has thousands).
Identifier = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_single_line)]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
Name = Annotated[str, Field(min_length=1, max_length=100, pattern=NAME_PATTERN)]
# Widths of the columns they are stored in: a category is String(64); a notification stores
# its template as "name@version" in String(100), room for a name of 89 and a 10-digit version.
Category = Annotated[str, Field(min_length=1, max_length=64, pattern=NAME_PATTERN)]
TemplateRef = Annotated[str, Field(min_length=1, max_length=89, pattern=NAME_PATTERN)]


class WebPushKeys(BaseModel):
    model_config = ConfigDict(extra="forbid")

    p256dh: str = Field(min_length=1, max_length=200)
    auth: str = Field(min_length=1, max_length=100)


class WebPushSubscription(BaseModel):
    """A browser's PushSubscription, as `subscription.toJSON()` gives it."""

    model_config = ConfigDict(extra="forbid")

    endpoint: HttpUrl = Field(description="The push service's URL: https")
    keys: WebPushKeys
    expirationTime: float | None = Field(  # the browser's name for it
        default=None, description="Milliseconds since the epoch, as the browser gives it"
    )


class Contacts(BaseModel):
    """Where a recipient can be reached; on a notification these override the user's own."""

    model_config = ConfigDict(extra="forbid")

    email: EmailAddress | None = None
    phone: Phone | None = None
    push_tokens: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        default_factory=list, max_length=20, description="FCM registration tokens"
    )
    web_push: list[WebPushSubscription] = Field(default_factory=list, max_length=20)
    webhook_url: HttpUrl | None = None
    apprise_urls: list[Annotated[str, Field(min_length=3, max_length=2000)]] = Field(
        default_factory=list,
        max_length=20,
        description="Apprise URLs: slack://..., discord://..., tgram://..., json://...",
    )


class NotificationCreate(BaseModel):
    """A notification: to a user (by id) or to inline contacts, on the given channels or on
    every channel the user can be reached on; from a template with data, or inline content."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "recipient": "a@example.com",
                    "subject": "Welcome",
                    "message": "Welcome to Herald",
                },
                {
                    "user_id": "user-42",
                    "template": "order-shipped",
                    "data": {"order": {"id": "A-1001"}},
                    "category": "orders",
                },
            ]
        },
    )

    user_id: Identifier | None = Field(
        default=None,
        description="A registered user (PUT /api/v1/users/{id}); also the ordering key.",
    )
    recipient: EmailAddress | None = Field(
        default=None, description="Shorthand for contacts.email."
    )
    contacts: Contacts | None = None
    channels: list[Channel] | None = Field(
        default=None,
        min_length=1,
        max_length=len(Channel),
        description="Omitted: every channel the recipient can be reached on, per preferences.",
    )
    template: TemplateRef | None = None
    template_version: int | None = Field(default=None, ge=1, le=DB_INT_MAX)
    data: dict[str, Any] = Field(default_factory=dict, description="Template variables.")
    locale: (
        Annotated[str, Field(max_length=35, pattern=r"^[A-Za-z]{2,8}([-_][A-Za-z0-9]{1,8})*$")]
        | None
    ) = None
    subject: (
        Annotated[
            str,
            Field(min_length=1, max_length=MAX_SUBJECT_CHARS),  # (see Identifier)
            AfterValidator(_single_line),
            AfterValidator(_not_blank),
        ]
        | None
    ) = None
    message: Annotated[str, Field(min_length=1), AfterValidator(_not_blank)] | None = Field(
        default=None, description="Plain-text body."
    )
    category: Category | None = None
    priority: Priority = Priority.NORMAL
    send_at: Timestamp | None = Field(default=None, description="Deliver at this time.")
    collapse_key: Identifier | None = Field(
        default=None,
        description="A newer notification with this key supersedes an undelivered older one.",
    )

    @field_validator("channels")
    @classmethod
    def _unique(cls, channels: list[Channel] | None) -> list[Channel] | None:
        if channels is not None and len(set(channels)) != len(channels):
            raise ValueError("each channel may appear once")
        return channels


class AttemptOut(BaseModel):
    attempt: int
    provider: str | None
    outcome: DeliveryStatus
    error_class: str | None
    error: str | None
    started_at: datetime
    finished_at: datetime
    retry_at: datetime | None

    @classmethod
    def of(cls, a: Attempt) -> AttemptOut:
        return cls(
            attempt=a.attempt,
            provider=a.provider,
            outcome=a.outcome,
            error_class=a.error_class,
            error=a.error,
            started_at=a.started_at,
            finished_at=a.finished_at,
            retry_at=a.retry_at,
        )


class DeliveryOut(BaseModel):
    id: str
    channel: str
    recipient: str
    status: DeliveryStatus
    attempts: int
    last_error: str | None
    provider: str | None
    created_at: datetime
    updated_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    sent_at: datetime | None
    skip_reason: str | None = Field(
        description="Why a SKIPPED delivery was skipped: unsubscribed, category_opted_out, "
        "channel_opted_out, superseded or daily_cap"
    )
    history: list[AttemptOut] | None = Field(
        default=None, description="Every attempt, oldest first (on the single-notification view)."
    )

    @classmethod
    def of(cls, d: DeliveryRecord, history: list[Attempt] | None = None) -> DeliveryOut:
        return cls(
            history=None if history is None else [AttemptOut.of(a) for a in history],
            id=d.id,
            channel=d.channel,
            recipient=d.recipient,
            status=d.status,
            attempts=d.attempts,
            last_error=d.last_error,
            provider=d.provider,
            created_at=d.created_at,
            updated_at=d.updated_at,
            last_attempt_at=d.last_attempt_at,
            next_attempt_at=d.next_attempt_at,
            sent_at=d.sent_at,
            skip_reason=d.skip_reason,
        )


class WebhookPayload(BaseModel):
    """What Herald POSTs to a webhook (channels/webhook.py builds it; the OpenAPI document
    declares it under ``webhooks``)."""

    id: str = Field(description="The delivery id, the same on every retry: deduplicate on it")
    type: Literal["notification"]
    tenant: str = Field(description="The sending tenant: refuse a message meant for another")
    notification_id: str
    user_id: str | None
    channel: Literal["webhook"]
    category: str | None
    priority: Priority
    subject: str | None
    body: str
    data: dict[str, Any]
    attempt: int = Field(description="1 on the first try, then 2, 3, … on retries")


class NotificationOut(BaseModel):
    id: str
    status: NotificationStatus
    recipient: str | None
    user_id: str | None
    subject: str | None
    channels: list[str]
    category: str | None
    priority: str
    template: str | None = Field(description="name@version it was rendered from")
    event_type: str | None = Field(description="The event that triggered it, if any")
    send_at: datetime | None
    collapse_key: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    deliveries: list[DeliveryOut]

    @classmethod
    def of(
        cls, n: NotificationRecord, history: dict[str, list[Attempt]] | None = None
    ) -> NotificationOut:
        return cls(
            id=n.id,
            status=n.status,
            recipient=n.recipient,
            user_id=n.user_id,
            subject=n.subject,
            channels=list(dict.fromkeys(d.channel for d in n.deliveries)),
            category=n.category,
            priority=n.priority,
            template=n.template,
            event_type=n.event_type,
            send_at=n.send_at,
            collapse_key=n.collapse_key,
            created_at=n.created_at,
            updated_at=n.updated_at,
            completed_at=n.completed_at,
            deliveries=[
                DeliveryOut.of(d, None if history is None else history.get(d.id, []))
                for d in n.deliveries
            ],
        )


def notification_json(n: NotificationRecord) -> dict[str, Any]:
    """``NotificationOut.of(n).model_dump(mode="json")`` without building the models (a batch
    answers with a thousand): the same keys in the same order and the same values, converted
    here as pydantic would (tests/unit/test_notification_json.py holds them equal) — its
    to_jsonable_python over the whole dict cost 18 µs a notification. A time that is None is
    not passed to _json_time (2.5 µs a notification, 1.9 without those calls)."""
    deliveries = n.deliveries
    # A new notification's times are one object, its deliveries' too: each written once.
    created = _json_time(n.created_at)
    updated = created if n.updated_at is n.created_at else _json_time(n.updated_at)
    return {
        "id": n.id,
        "status": n.status._value_,  # (.value: a property, five times slower)
        "recipient": n.recipient,
        "user_id": n.user_id,
        "subject": n.subject,
        "channels": _channels(deliveries),
        "category": n.category,
        "priority": n.priority,
        "template": n.template,
        "event_type": n.event_type,
        "send_at": None if n.send_at is None else _json_time(n.send_at),
        "collapse_key": n.collapse_key,
        "created_at": created,
        "updated_at": updated,
        "completed_at": None if n.completed_at is None else _json_time(n.completed_at),
        "deliveries": [
            {
                "id": d.id,
                "channel": d.channel,
                "recipient": d.recipient,
                "status": d.status._value_,
                "attempts": d.attempts,
                "last_error": d.last_error,
                "provider": d.provider,
                "created_at": created if d.created_at is n.created_at else _json_time(d.created_at),
                "updated_at": updated if d.updated_at is n.updated_at else _json_time(d.updated_at),
                "last_attempt_at": (
                    None if d.last_attempt_at is None else _json_time(d.last_attempt_at)
                ),
                "next_attempt_at": (
                    None if d.next_attempt_at is None else _json_time(d.next_attempt_at)
                ),
                "sent_at": None if d.sent_at is None else _json_time(d.sent_at),
                "skip_reason": d.skip_reason,
                "history": None,
            }
            for d in deliveries
        ],
    }


def admitted_json(admitted: Admitted) -> dict[str, Any]:
    """``notification_json(admitted.record)`` without building the record, which a staged
    batch never needs (tests/unit/test_notification_json.py holds them equal): a notification
    just accepted, nothing of it attempted yet."""
    plan = admitted.plan
    spec, deliveries = plan.spec, plan.deliveries
    created = _json_time(admitted.created_at)
    send_at = None if spec.send_at is None else _json_time(spec.send_at)
    scheduled = admitted.scheduled
    return {
        "id": admitted.id,
        "status": admitted.status._value_,
        "recipient": plan.primary_recipient,
        "user_id": spec.user_id,
        "subject": deliveries[0].content.subject,
        "channels": _channels(deliveries),
        "category": plan.category,
        "priority": spec.priority,
        "template": plan.template,
        "event_type": spec.event_type,
        "send_at": send_at,
        "collapse_key": spec.collapse_key,
        "created_at": created,
        "updated_at": created,
        "completed_at": None,
        "deliveries": [
            {
                "id": delivery_id,
                "channel": d.channel,
                "recipient": d.recipient,
                "status": _DELIVERY_PENDING,
                "attempts": 0,
                "last_error": None,
                "provider": None,
                "created_at": created,
                "updated_at": created,
                "last_attempt_at": None,
                "next_attempt_at": send_at if scheduled else None,
                "sent_at": None,
                "skip_reason": None,
                "history": None,
            }
            for delivery_id, d in zip(admitted.delivery_ids, deliveries, strict=True)
        ],
    }


_DELIVERY_PENDING = DeliveryStatus.PENDING._value_


def _channels(deliveries: Sequence[DeliveryRecord] | Sequence[PlannedDelivery]) -> list[str]:
    """Its deliveries' channels, each once, in order (most notifications have one)."""
    if len(deliveries) == 1:
        return [deliveries[0].channel]
    return list(dict.fromkeys(d.channel for d in deliveries))


def _json_time(value: datetime | None) -> str | None:
    """pydantic's JSON for a datetime; a batch's notifications share their times, so UTC ones
    are remembered (only UTC: equal times in other offsets are written differently)."""
    if value is None:
        return None
    if value.tzinfo is UTC:
        return _utc_json(value)
    text: str = to_jsonable_python(value)
    return text


@lru_cache(maxsize=256)
def _utc_json(value: datetime) -> str:
    text: str = to_jsonable_python(value)
    return text


class NotificationPage(BaseModel):
    items: list[NotificationOut]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page.")


class FieldProblem(BaseModel):
    field: str
    message: str


class ErrorOut(BaseModel):
    code: str
    message: str
    errors: list[FieldProblem] = Field(default_factory=list)


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[NotificationCreate] = Field(min_length=1, max_length=10_000)


class BatchItemOut(BaseModel):
    index: int
    status: int = Field(description="202 accepted, 422 refused")
    notification: NotificationOut | None = None
    error: ErrorOut | None = None


class BatchOut(BaseModel):
    accepted: int
    refused: int
    items: list[BatchItemOut]


class DeadLetterOut(BaseModel):
    id: str
    kind: str = Field(
        description="delivery, message (poison), event (refused by the bus) or status_webhook"
    )
    status: str = Field(description="DEAD, or REPLAYED")
    reason: str = Field(description="permanent, exhausted, poison or refused")
    error_class: str
    error: str
    channel: str | None
    provider: str | None
    notification_id: str | None
    delivery_id: str | None
    topic: str
    source: str | None
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime
    replay_count: int
    replayed_at: datetime | None

    @classmethod
    def of(cls, letter: DeadLetter) -> DeadLetterOut:
        return cls(**{name: getattr(letter, name) for name in cls.model_fields})


class DeadLetterDetail(DeadLetterOut):
    payload: str
    payload_encoding: Literal["utf-8", "base64"]
    headers: dict[str, str]

    @classmethod
    def of(cls, letter: DeadLetter) -> DeadLetterDetail:
        base = DeadLetterOut.of(letter).model_dump()
        try:
            payload, encoding = letter.payload.decode(), "utf-8"
        except UnicodeDecodeError:
            payload, encoding = base64.b64encode(letter.payload).decode(), "base64"
        return cls(
            **base,
            payload=payload,
            payload_encoding=encoding,
            headers=letter.headers,
        )


class DeadLetterPage(BaseModel):
    items: list[DeadLetterOut]
    next_cursor: str | None


class DeadLetterSelection(BaseModel):
    """Which dead letters a bulk action applies to; every field narrows the selection."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["DEAD", "REPLAYED"] | None = "DEAD"
    kind: Literal["delivery", "message", "event", "status_webhook"] | None = None
    reason: Literal["permanent", "exhausted", "poison", "refused"] | None = None
    channel: str | None = None
    provider: str | None = None
    error_class: str | None = None
    since: Timestamp | None = None
    until: Timestamp | None = None
    dry_run: bool = Field(default=False, description="Only say what would be done.")

    def filters(self, tenant: str) -> Filters:
        return Filters(
            tenant=tenant,
            status=self.status,
            kind=self.kind,
            reason=self.reason,
            channel=self.channel,
            provider=self.provider,
            error_class=self.error_class,
            since=self.since,
            until=self.until,
        )


class ReplaySelection(DeadLetterSelection):
    limit: int = Field(
        default=100, ge=1, le=1000, description="Replay at most this many, oldest first"
    )


class ReplayOut(BaseModel):
    dead_letter_id: str
    replayed: bool
    detail: str


class BulkReplayOut(BaseModel):
    matched: int = Field(description="Dead letters matching the selection")
    selected: int = Field(description="The oldest of them, up to `limit`, acted on")
    dry_run: bool
    replayed: int
    items: list[ReplayOut]


class PurgeOut(BaseModel):
    dry_run: bool
    purged: int


class ProviderOut(BaseModel):
    provider: str
    channel: str
    worker: str | None = Field(
        description="The worker process; only the operator's (default) tenant sees workers, "
        "every other tenant one row per provider with its worst state"
    )
    state: str = Field(description="closed, open or half_open")
    consecutive_failures: int
    opened_at: datetime | None
    updated_at: datetime
    rate_limit_waits: int = Field(
        default=0, description="Sends that waited for the provider's rate limit"
    )
    rate_limit_wait_seconds: float = Field(default=0.0, description="How long they waited")


class TimelineStepOut(BaseModel):
    at: datetime
    step: str = Field(
        description="accepted, published, routed, sent, attempt_failed, retry_scheduled, "
        "dead_lettered, replayed or completed"
    )
    delivery_id: str | None = None
    channel: str | None = None
    provider: str | None = None
    attempt: int | None = None
    status: str | None = Field(
        default=None, description="What an attempt ended in; a dead letter's reason"
    )
    error_class: str | None = None
    error: str | None = None
    retry_at: datetime | None = None
    detail: str | None = None


class TimelineOut(BaseModel):
    notification_id: str
    status: NotificationStatus
    steps: list[TimelineStepOut]


# -- rules ---------------------------------------------------------------------------------

EventType = Annotated[
    str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
]


class RuleIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "event_type": "order.shipped",
                    "condition": "data.amount > 1000",
                    "channels": ["sms"],
                    "template": "order-shipped",
                    "priority": "high",
                }
            ]
        },
    )

    event_type: EventType
    condition: Annotated[str, Field(max_length=1000)] | None = Field(
        default=None,
        description='e.g. `data.amount > 1000 and data.country in ["PT", "BR"]`; omitted: always',
    )
    channels: list[Channel] = Field(min_length=1, max_length=len(Channel))
    template: Name
    category: Category | None = None
    priority: Priority | None = Field(default=None, description="high goes through quiet hours")
    enabled: bool = True

    @field_validator("condition")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            compile_expression(value)  # ExpressionError is a ValueError: a 422 naming it
        return value
