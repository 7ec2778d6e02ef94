"""Addresses a request may give that no provider could ever deliver to, refused at the API
(422 naming the field) instead of being accepted and dead-lettered later.

These are not in the schema types because one depends on a setting (SMTPUTF8) and because
the same models also validate contact points read back from the database (``UserOut``), which
must not start failing for data stored before these checks: routes call them on requests.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from herald.api.errors import FieldError
from herald.api.schemas import Contacts, NotificationCreate
from herald.config import Settings

# FCM registration tokens are printable ASCII; a space or control character is a paste error.
_PUSH_TOKEN = re.compile(r"[\x21-\x7e]+")
# The Web Push provider also takes plain HTTP to a push service on this machine (tests; see
# channels/webpush.parse_subscription); anything else must be https.
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def check_email(field: str, address: str | None, settings: Settings) -> None:
    if (
        address is None
        or address.isascii()  # most are: nothing to split
        or settings.smtp_utf8
        or address.rpartition("@")[0].isascii()
    ):
        return
    raise FieldError(
        field,
        "has non-ASCII characters before the @, which an SMTP relay only takes with SMTPUTF8 "
        "(HERALD_SMTP_UTF8 is off)",
    )


def is_push_endpoint(url: str) -> bool:
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    return bool(host) and (
        parts.scheme == "https" or (parts.scheme == "http" and host in _LOOPBACK)
    )


def check_contacts(contacts: Contacts | None, settings: Settings, prefix: str = "") -> None:
    if contacts is None:
        return
    check_email(f"{prefix}email", contacts.email, settings)
    for i, token in enumerate(contacts.push_tokens):
        if not _PUSH_TOKEN.fullmatch(token):
            raise FieldError(f"{prefix}push_tokens[{i}]", "must be printable ASCII without spaces")
    for i, subscription in enumerate(contacts.web_push):
        if not is_push_endpoint(subscription.endpoint):
            raise FieldError(
                f"{prefix}web_push[{i}].endpoint", "must be an https URL (push services are)"
            )


def check_notification(payload: NotificationCreate, settings: Settings, prefix: str = "") -> None:
    check_email(f"{prefix}recipient", payload.recipient, settings)
    check_contacts(payload.contacts, settings, f"{prefix}contacts.")
