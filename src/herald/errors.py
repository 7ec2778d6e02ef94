"""Herald's error tree. Whether a failure is worth retrying is a property of its class."""

from __future__ import annotations


class HeraldError(Exception):
    """Base of every error Herald raises on purpose."""


class ConfigError(HeraldError):
    """The configuration is invalid; the process cannot start with it."""


class NotFoundError(HeraldError):
    """The object asked for does not exist (or is not visible to the caller)."""


class UnauthorizedError(HeraldError):
    """No API key, or one that is unknown, revoked or expired (HTTP 401)."""


class ForbiddenError(HeraldError):
    """The API key lacks the scope a route needs (HTTP 403)."""


class HostNotAllowedError(ForbiddenError):
    """An API that needs no key was called with a ``Host`` that does not name loopback."""


class IdempotencyKeyReusedError(HeraldError):
    """An Idempotency-Key was sent again with a different request body."""


class RateLimitedError(HeraldError):
    """The caller used up its request budget; it may try again after ``retry_after`` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limit exceeded, retry in {retry_after:.2f}s")
        self.retry_after = retry_after


class PoisonMessageError(HeraldError):
    """A bus message cannot be decoded or validated; retrying it can never succeed."""


class BusError(HeraldError):
    """The message bus refused a message or an operation (the message may be at fault)."""


class BusUnavailableError(BusError):
    """The bus cannot be reached or timed out; nothing is wrong with the messages."""


class DeliveryError(HeraldError):
    """A provider failed to deliver. Subclasses say whether a retry can help; ``destination``
    says the failure is the recipient's side (an email domain's server deferring it), not the
    provider's as a whole, so it counts against that destination's circuit only."""

    transient: bool = True

    def __init__(
        self, message: str, *, retry_after: float | None = None, destination: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.destination = destination


class TransientDeliveryError(DeliveryError):
    """The provider may accept the same message later (timeouts, 4xx SMTP, HTTP 429/5xx)."""

    transient = True


class PermanentDeliveryError(DeliveryError):
    """The provider will never accept this message (unknown mailbox, invalid recipient)."""

    transient = False


class AddressGoneError(PermanentDeliveryError):
    """The provider says the address itself is gone for good (an uninstalled app's push
    token, an expired browser subscription): it is removed from its user, not tried again."""


class OutboundRefusedError(PermanentDeliveryError):
    """A user-supplied URL leads somewhere Herald must not connect to (SSRF): not http(s), a
    host that does not resolve (at registration), or an address that is not public (loopback,
    private, link-local, ...) and not allowed by ``HERALD_OUTBOUND_ALLOW``. ``reason`` says
    which, without the channel's name."""

    def __init__(self, reason: str, *, what: str | None = None) -> None:
        super().__init__(f"{what}: {reason}" if what else reason)
        self.reason = reason
