"""Where a delivery goes, as a circuit breaker sees it.

Herald's own providers (the SMTP relay, Twilio, FCM) are shared by every tenant: when one of
them fails as a whole, its circuit opens for everyone. But many destinations are chosen by
callers: a webhook's host, a Web Push endpoint's push service, an Apprise server, the domain
of an email address. A failure there is that destination's, so its circuit is per tenant and
destination, and one tenant's dead hosts never hold back anyone else.
"""

from __future__ import annotations

import hashlib
import json
from urllib.parse import urlsplit

# Channels whose every failure is the destination's: Herald configures no server for them.
CALLER_CHOSEN = frozenset({"webhook", "webpush", "apprise"})
# Schemes whose host is a server's name; in other Apprise schemes (tgram://, discord://) the
# "host" holds a token or an id, which is hashed rather than kept (keys show up in logs).
_HOST_SCHEMES = frozenset({"http", "https", "json", "jsons", "form", "forms", "xml", "xmls"})


def destination(channel: str, recipient: str) -> str | None:
    """The destination ``recipient`` names on ``channel`` (a host, or an email domain); None
    where the channel has no destination of a caller's choosing (SMS, push, in-app)."""
    if channel == "email":
        domain = recipient.rpartition("@")[2].strip().lower()
        return domain or None
    if channel == "webpush":
        try:
            endpoint = json.loads(recipient).get("endpoint")
        except (ValueError, AttributeError):
            return None
        return _host(endpoint) if isinstance(endpoint, str) else None
    if channel in ("webhook", "apprise"):
        return _host(recipient)
    return None


def _host(url: str) -> str | None:
    """``scheme://host``; for Apprise's vendor schemes ``scheme://#<hash of the "host">``,
    which keeps one caller's services apart without naming their tokens."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not scheme:
        return None
    if scheme not in _HOST_SCHEMES:
        host = "#" + hashlib.sha256(host.encode(errors="replace")).hexdigest()[:12]
    return f"{scheme}://{host}"


def circuit_key(tenant: str, destination: str) -> str:
    return f"{tenant} {destination}"
