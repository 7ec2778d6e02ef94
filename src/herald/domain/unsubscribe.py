"""Unsubscribe tokens: what the one-click link in an email carries (RFC 8058).

A token names one tenant, one user and one category, and when it expires, signed with
HMAC-SHA256 under a key every Herald process shares (store/server_secrets). Herald signs one
only for a notification of that category it sends to that user, so a token can opt the
user out of that category alone: not another category, user or tenant, and never a category
invented by whoever holds the link.

The MAC also covers the user's own link secret (users.unsubscribe_token), which is new for
every user created: the links of a deleted user do nothing to a new user given its id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

# Long enough for mail read weeks later; counted from when it is sent (send_at).
LINK_TTL: Final = timedelta(days=60)
# The API's Category (api/schemas.py): what a category name may be, at most 64 characters.
CATEGORY_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
MAX_CATEGORY_LENGTH: Final = 64
# Tenant (63) + user (255) + category (64) + expiry, in base64, with the MAC: under 600, so
# the link fits on one List-Unsubscribe line (998) with room for HERALD_PUBLIC_URL.
MAX_TOKEN_LENGTH: Final = 1024

_CATEGORY = re.compile(CATEGORY_PATTERN)
_DOMAIN = b"herald/unsubscribe/v1\x00"  # this MAC is good for nothing else
_SEPARATOR = "\x00"


@dataclass(frozen=True, slots=True)
class Link:
    tenant: str
    user: str
    category: str
    expires: int  # Unix seconds

    def expired(self, now: datetime) -> bool:
        return now.timestamp() >= self.expires


def valid_category(name: str) -> bool:
    """Whether a link may be made for this category (templates do not restrict theirs)."""
    return len(name) <= MAX_CATEGORY_LENGTH and _CATEGORY.fullmatch(name) is not None


def expiry(sent_at: datetime) -> int:
    return int((sent_at + LINK_TTL).timestamp())


def sign(key: bytes, link: Link, user_secret: str) -> str:
    fields = [link.tenant, link.user, link.category, str(link.expires)]
    if any(_SEPARATOR in f for f in fields):  # (tenant, user id and category never hold it)
        raise ValueError("a link's fields may not contain NUL")
    body = _encode(_SEPARATOR.join(fields).encode())
    return f"{body}.{_encode(_mac(key, body, user_secret))}"


def read(token: str) -> Link | None:
    """What a token claims, not yet checked: None unless it has the shape of one."""
    body, dot, _ = token.partition(".")
    if not dot or len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        fields = _decode(body).decode().split(_SEPARATOR)
    except (ValueError, binascii.Error):
        return None
    if len(fields) != 4 or not fields[3].isascii() or not fields[3].isdigit():
        return None
    tenant, user, category, expires = fields
    if not valid_category(category):
        return None
    return Link(tenant, user, category, int(expires))


def verify(key: bytes, token: str, user_secret: str) -> bool:
    """Whether ``token`` was signed with ``key`` for the user whose secret this is."""
    body, _, mac = token.partition(".")
    try:
        given = _decode(mac)
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(given, _mac(key, body, user_secret))


def _mac(key: bytes, body: str, user_secret: str) -> bytes:
    message = _DOMAIN + body.encode() + b"\x00" + user_secret.encode()
    return hmac.new(key, message, hashlib.sha256).digest()


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
