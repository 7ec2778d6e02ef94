"""Twilio's request signature (``X-Twilio-Signature``), as Twilio documents and its libraries
compute it: HMAC-SHA1, keyed with the account's auth token, over the URL Twilio called (the
one Herald gave it) followed by each POST parameter's name and value, names sorted, a name's
distinct values sorted; base64."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

HEADER = "X-Twilio-Signature"


def signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    signed = url + "".join(name + v for name in sorted(values) for v in sorted(values[name]))
    digest = hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def valid(auth_token: str, url: str, params: Iterable[tuple[str, str]], given: str) -> bool:
    """Whether ``given`` is Twilio's signature of the request (compared in constant time)."""
    expected = signature(auth_token, url, params)
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))
