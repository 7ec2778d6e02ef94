"""What HTTP providers share: a client that follows no redirects, and error classification."""

from __future__ import annotations

import asyncio
from email.utils import parsedate_to_datetime

import httpx

from herald.clock import utcnow
from herald.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError
from herald.outbound import OutboundPolicy

# Statuses a later identical request may get past: timeouts, throttling, server trouble.
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# Longest excerpt of a provider's answer kept in an error (never echoed to API callers raw).
ERROR_EXCERPT = 300
# Enough for any sensible acknowledgement; beyond it the connection is dropped rather than
# reading an unbounded answer from a URL someone else controls.
DRAIN_LIMIT = 64 * 1024
# provider_message_id is stored in a VARCHAR(255).
MAX_MESSAGE_ID = 255


def client(
    timeout: float,
    *,
    max_connections: int = 10,
    outbound: OutboundPolicy | None = None,
    what: str = "http",
) -> httpx.AsyncClient:
    """Redirects are not followed: a provider that redirects is misconfigured, and following
    one would send the message (and credentials) somewhere nobody chose.

    With ``outbound``, for URLs that users supply, connections go only where it allows
    (see herald.outbound); a refusal is an OutboundRefusedError naming ``what``."""
    limits = httpx.Limits(max_connections=max_connections)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        limits=limits,
        transport=None if outbound is None else outbound.transport(what, limits),
        headers={"User-Agent": "Herald/0.1"},
    )


def http_url(value: str) -> str:
    """A configured endpoint (a provider's base URL, a token URI): http(s) only."""
    if not value.startswith(("https://", "http://")):
        raise ValueError("must be an http(s) URL")
    return value


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), if any."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - utcnow()).total_seconds())
    except (TypeError, ValueError):
        return None


def classify_api(
    response: httpx.Response, what: str, *, refused: frozenset[int], credentials: str
) -> DeliveryError:
    """A provider API's non-2xx answer (``what`` says it, with the provider's own detail):
    its refusal of this message (``refused``) is permanent; rejected credentials (401/403:
    our configuration, not the message, which can go once it is fixed) and throttling or
    server trouble are transient."""
    status = response.status_code
    if status in (401, 403):
        return TransientDeliveryError(
            f"{what} (credentials rejected: check {credentials})", retry_after=retry_after(response)
        )
    if status in refused:
        return PermanentDeliveryError(what)
    if status in TRANSIENT_STATUSES or status >= 500:
        return TransientDeliveryError(what, retry_after=retry_after(response))
    return classify_status(response, what.partition(":")[0])


def classify_status(response: httpx.Response, what: str) -> DeliveryError:
    """A non-2xx answer as a typed error: transient for 408/425/429/5xx, else permanent."""
    excerpt = response.text[:ERROR_EXCERPT].replace("\n", " ")
    text = f"{what}: HTTP {response.status_code} {excerpt}".rstrip()
    if 300 <= response.status_code < 400:
        return PermanentDeliveryError(
            f"{what}: redirect (HTTP {response.status_code}) not followed"
        )
    if response.status_code in TRANSIENT_STATUSES or response.status_code >= 500:
        return TransientDeliveryError(text, retry_after=retry_after(response))
    return PermanentDeliveryError(text)


def classify_exception(exc: httpx.HTTPError, what: str) -> DeliveryError:
    """Connection failures and timeouts are transient; a malformed request is not."""
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return PermanentDeliveryError(f"{what}: {exc}")
    return TransientDeliveryError(f"{what}: {type(exc).__name__}: {exc}")


class ProviderClient:
    """A provider's one httpx client: opened by ``start``, shared by every send, closed by
    ``close`` (never a client per message)."""

    def __init__(
        self,
        what: str,
        timeout: float,
        *,
        max_connections: int,
        outbound: OutboundPolicy | None = None,
    ) -> None:
        self.what = what
        self.timeout = timeout
        self.max_connections = max_connections
        #: Set for providers that POST to URLs users gave (webhooks, Web Push).
        self.outbound = outbound
        self._client: httpx.AsyncClient | None = None

    def open(self) -> None:
        if self._client is None:
            self._client = client(
                self.timeout,
                max_connections=self.max_connections,
                outbound=self.outbound,
                what=self.what,
            )

    async def close(self) -> None:
        if self._client is not None:
            opened, self._client = self._client, None
            await opened.aclose()

    def get(self) -> httpx.AsyncClient:
        if self._client is None:
            raise TransientDeliveryError(f"{self.what}: provider not started")
        return self._client

    async def post_bounded(
        self, url: httpx.URL, body: bytes, headers: dict[str, str]
    ) -> httpx.Response:
        """POST to a URL someone else controls (webhooks, push endpoints): one deadline for
        the whole exchange (httpx's timeout is per read, so a receiver trickling bytes could
        hold a slot forever), at most DRAIN_LIMIT of the answer read, failures typed."""
        client = self.get()
        try:
            async with asyncio.timeout(self.timeout):
                async with client.stream("POST", url, content=body, headers=headers) as response:
                    # Reading a small answer to the end lets the connection go back to the pool.
                    received = 0
                    async for chunk in response.aiter_raw():
                        received += len(chunk)
                        if received > DRAIN_LIMIT:
                            break
                    return response
        except TimeoutError as exc:
            raise TransientDeliveryError(
                f"{self.what}: no answer within {self.timeout:g}s"
            ) from exc
        except httpx.HTTPError as exc:
            raise classify_exception(exc, self.what) from exc
