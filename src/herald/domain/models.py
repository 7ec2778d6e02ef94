"""The vocabulary of Herald: statuses and channels."""

from __future__ import annotations

from enum import StrEnum


class NotificationStatus(StrEnum):
    SCHEDULED = "SCHEDULED"  # send_at is in the future
    PENDING = "PENDING"
    SENT = "SENT"
    # Every delivery sent was confirmed delivered by its provider (or the recipient's server).
    DELIVERED = "DELIVERED"
    PARTIALLY_SENT = "PARTIALLY_SENT"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"  # every delivery was skipped (preferences), none failed
    # Superseded by a newer notification with its collapse_key, or its user was deleted.
    CANCELLED = "CANCELLED"


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    RETRY_PENDING = "RETRY_PENDING"
    SENT = "SENT"  # the provider accepted it
    FAILED = "FAILED"
    DEAD_LETTERED = "DEAD_LETTERED"
    SKIPPED = "SKIPPED"
    # After SENT, from the provider's receipts (see domain/states):
    DELIVERED = "DELIVERED"  # the provider or the recipient's server confirmed it
    BOUNCED = "BOUNCED"  # hard: the address is bad
    COMPLAINED = "COMPLAINED"  # the recipient marked it as spam
    REJECTED = "REJECTED"  # the provider refused it after accepting it
    UNDELIVERED = "UNDELIVERED"  # the provider could not deliver it


class OutboxStatus(StrEnum):
    PENDING = "PENDING"
    PUBLISHED = "PUBLISHED"
    FAILED = "FAILED"  # publishing failed; will be retried at available_at
    DEAD_LETTERED = "DEAD_LETTERED"


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"  # Firebase Cloud Messaging registration tokens
    WEBPUSH = "webpush"  # browser Push API subscriptions (VAPID)
    WEBHOOK = "webhook"
    INAPP = "inapp"
    APPRISE = "apprise"  # Slack, Discord, Telegram, Teams, ... through Apprise URLs


class Priority(StrEnum):
    NORMAL = "normal"
    HIGH = "high"  # goes through quiet hours (opt-outs still apply)
