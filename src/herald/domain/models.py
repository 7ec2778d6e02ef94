"""The vocabulary of Herald: statuses and channels."""

from __future__ import annotations

from enum import StrEnum


class NotificationStatus(StrEnum):
    PENDING = "PENDING"
    SENT = "SENT"
    PARTIALLY_SENT = "PARTIALLY_SENT"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"  # every delivery was skipped (preferences), none failed


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    RETRY_PENDING = "RETRY_PENDING"
    SENT = "SENT"
    FAILED = "FAILED"
    DEAD_LETTERED = "DEAD_LETTERED"
    SKIPPED = "SKIPPED"


class OutboxStatus(StrEnum):
    PENDING = "PENDING"
    PUBLISHED = "PUBLISHED"
    FAILED = "FAILED"  # publishing failed; will be retried at available_at
    DEAD_LETTERED = "DEAD_LETTERED"


class Channel(StrEnum):
    EMAIL = "email"
