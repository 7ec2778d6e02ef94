"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from herald.domain.models import Channel, DeliveryStatus, NotificationStatus
from herald.store.notifications import DeliveryRecord, NotificationRecord

# A header line may not exceed 998 characters (RFC 5322 2.1.1).
MAX_SUBJECT_CHARS = 998


def _email_address(value: str) -> str:
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from exc


def _single_line(value: str) -> str:
    # CR or LF in a header value would let a caller inject headers of their own.
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
        raise ValueError("must be a single line without control characters")
    return value


EmailAddress = Annotated[str, Field(max_length=320), AfterValidator(_email_address)]
SingleLine = Annotated[str, AfterValidator(_single_line)]


class NotificationCreate(BaseModel):
    """A notification to send. Today one email; more channels and templates come later."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"recipient": "a@example.com", "subject": "Welcome", "message": "Welcome to Herald"}
            ]
        },
    )

    recipient: EmailAddress = Field(description="Email address of the recipient.")
    subject: Annotated[SingleLine, Field(min_length=1, max_length=MAX_SUBJECT_CHARS)]
    message: str = Field(min_length=1, description="Plain-text body.")
    channels: list[Channel] = Field(
        default_factory=lambda: [Channel.EMAIL], min_length=1, max_length=1
    )
    user_id: Annotated[SingleLine, Field(min_length=1, max_length=255)] | None = Field(
        default=None,
        description="Your id for the recipient; notifications with one user_id stay in order.",
    )

    @field_validator("channels")
    @classmethod
    def _unique(cls, channels: list[Channel]) -> list[Channel]:
        if len(set(channels)) != len(channels):
            raise ValueError("each channel may appear once")
        return channels


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

    @classmethod
    def of(cls, d: DeliveryRecord) -> DeliveryOut:
        return cls(
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
        )


class NotificationOut(BaseModel):
    id: str
    status: NotificationStatus
    recipient: str | None
    user_id: str | None
    subject: str | None
    channels: list[str]
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    deliveries: list[DeliveryOut]

    @classmethod
    def of(cls, n: NotificationRecord) -> NotificationOut:
        return cls(
            id=n.id,
            status=n.status,
            recipient=n.recipient,
            user_id=n.user_id,
            subject=n.subject,
            channels=[d.channel for d in n.deliveries],
            created_at=n.created_at,
            updated_at=n.updated_at,
            completed_at=n.completed_at,
            deliveries=[DeliveryOut.of(d) for d in n.deliveries],
        )


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
