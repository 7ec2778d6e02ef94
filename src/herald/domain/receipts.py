"""What a provider tells Herald about a delivery after accepting it, whichever provider.

Each provider's endpoint turns its own callback into a ``Receipt``; what a receipt does to
the delivery (``TARGET``) and to the suppression list (``SUPPRESSES``) is decided here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from herald.domain.models import DeliveryStatus as D

# What a delivery id a receipt names may look like: anything else names no delivery (and must
# not reach the database: NUL, a lone surrogate, a megabyte).
DELIVERY_ID = re.compile(r"[0-9A-Za-z-]{1,36}")


def delivery_named(value: Any) -> str | None:
    """``value``, if it can be a delivery id."""
    return value if isinstance(value, str) and DELIVERY_ID.fullmatch(value) else None


class ReceiptKind(StrEnum):
    PROGRESS = "progress"  # on its way (queued, handed to the carrier): recorded only
    DELIVERED = "delivered"
    SOFT_BOUNCE = "soft_bounce"  # a temporary refusal: recorded, the delivery stays SENT
    BOUNCED = "bounced"  # hard: the address is bad
    COMPLAINED = "complained"
    REJECTED = "rejected"  # the provider would not send it after all
    UNDELIVERED = "undelivered"  # the provider gave up on it


class ReceiptOutcome(StrEnum):
    APPLIED = "applied"  # the delivery moved to the receipt's status
    RECORDED = "recorded"  # nothing to move (progress, a soft bounce)
    LATE = "late"  # the delivery had moved on: it is never moved back
    EARLY = "early"  # the delivery is not recorded as sent yet: applied once it is
    UNKNOWN = "unknown"  # no such delivery (never Herald's, or deleted with its user)
    DUPLICATE = "duplicate"  # this receipt came before (not stored again)
    # Not stored: an unsigned one (by mail) for no delivery Herald knows, or one more for a
    # delivery that has had its fill (domain of MAX_PER_DELIVERY).
    DROPPED = "dropped"


TARGET: dict[ReceiptKind, D] = {
    ReceiptKind.DELIVERED: D.DELIVERED,
    ReceiptKind.BOUNCED: D.BOUNCED,
    ReceiptKind.COMPLAINED: D.COMPLAINED,
    ReceiptKind.REJECTED: D.REJECTED,
    ReceiptKind.UNDELIVERED: D.UNDELIVERED,
}

# The suppression list's reason a receipt of this kind puts the address there with.
SUPPRESSES: dict[ReceiptKind, str] = {
    ReceiptKind.BOUNCED: "hard_bounce",
    ReceiptKind.COMPLAINED: "complaint",
}


@dataclass(frozen=True, slots=True)
class Receipt:
    provider: str  # the configured provider's name
    key: str  # the provider's identity of this receipt (a replay has the same)
    delivery_id: str
    kind: ReceiptKind
    code: str | None = None  # the provider's code (an SMTP status, Twilio's ErrorCode)
    detail: str | None = None
    occurred_at: datetime | None = None
    # A reason to suppress the address with that its kind alone does not imply (a recipient
    # who replied STOP to texts: Twilio refuses to send, "unsubscribe").
    suppress: str | None = None
    # The channel the reporting provider sends on: a receipt names a delivery of it only.
    channel: str | None = None

    @property
    def suppression(self) -> str | None:
        return self.suppress or SUPPRESSES.get(self.kind)
