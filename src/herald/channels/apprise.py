"""Chat and everything else Apprise reaches (Slack, Discord, Telegram, Teams, ...) by URL.

The recipient is an Apprise URL (``slack://...``, ``tgram://...``, ``json://host/path``).
Apprise URLs carry their credentials (tokens, passwords, even as the "host"), so errors name
only the scheme, plus the host for the schemes where it is really a host.

A URL Apprise cannot use is permanent; a failed or timed-out notification is transient
(Apprise reports only success or failure, not whether the service would ever accept it).

Every recipient URL comes from an API caller (a user's ``apprise_urls`` or a notification's
``contacts``): the provider's configuration holds no URLs. So, like webhook URLs, each is
checked when registered (:func:`refusal`) and again right before Apprise gets it: the servers
it names must be public or allowed by ``HERALD_OUTBOUND_ALLOW``, and options that widen where
Apprise goes (``redirect=yes``) or reach the Herald host itself (``syslog://``) are refused
(herald.channels.apprise_hosts). While Apprise sends, its own look-ups of those names get the
checked addresses only, and every look-up it makes for the send is checked against the same
policy (herald.channels.dns_pin): whatever the URL check missed still reaches nothing inside.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import warnings
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import anyio
import apprise
from pydantic import BaseModel, ConfigDict, Field

from herald.channels import apprise_hosts, dns_pin
from herald.channels.base import OutboundMessage, SendResult
from herald.errors import OutboundRefusedError, PermanentDeliveryError, TransientDeliveryError
from herald.observability.logging import get_logger
from herald.outbound import SETTING, OutboundPolicy

if TYPE_CHECKING:
    from herald.channels import Dependencies
    from herald.config import Settings


log = get_logger(__name__)

# Schemes whose host part names a server rather than holding a token.
_HOST_SCHEMES = frozenset({"http", "https", "json", "jsons", "form", "forms", "xml", "xmls"})
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]{0,31}")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s'\"<>]*")


class AppriseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["apprise"] = "apprise"
    # Apprise's services are blocking calls in a shared thread pool: keep this modest.
    concurrency: int = Field(4, ge=1)
    timeout_seconds: float = Field(10.0, gt=0)


def redact(url: str) -> str:
    """What of an Apprise URL is safe to show: its scheme, and its host where it is one."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "an unparseable URL"
    scheme = parts.scheme.lower()
    if not _SCHEME.fullmatch(scheme):
        return "a URL without a scheme"
    if scheme in _HOST_SCHEMES and host:
        return f"{scheme}://{host}"
    return f"{scheme}://"


def load_plugins() -> None:
    """Import Apprise's plugins now rather than on the first message.

    Apprise imports them lazily, and its email plugin imports the stdlib ``imghdr``, whose
    DeprecationWarning (Python 3.11-3.12) would otherwise surface in the middle of a send.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="'imghdr' is deprecated", category=DeprecationWarning
        )
        apprise.NotificationManager().load_modules()  # type: ignore[no-untyped-call]


# Set while this task has Apprise parse a recipient URL (see _LibraryLogFilter).
_parsing: ContextVar[bool] = ContextVar("herald_apprise_parsing", default=False)


class _LibraryLogFilter(logging.Filter):
    """Keeps secrets out of Apprise's log lines.

    While it parses a URL, Apprise's complaints quote the offending part verbatim ("An invalid
    Slack Token (xoxb-...) was specified", phone numbers): those lines are dropped, and the
    PermanentDeliveryError names the scheme instead. Elsewhere it masks the URLs it logs by
    heuristics that miss some tokens, so every URL is cut down to what :func:`redact` keeps.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _parsing.get():
            return False
        message = record.getMessage()
        if "://" in message:
            record.msg = _URL_IN_TEXT.sub(lambda m: redact(m.group()), message)
            record.args = None
        return True


_LOG_FILTER = _LibraryLogFilter()


def quiet_library_logging() -> None:
    """Apprise logs every notification at INFO and whole payloads and URLs at DEBUG/TRACE;
    its warnings and errors, with URLs redacted, are what we want."""
    logger = logging.getLogger(apprise.LOGGER_NAME)
    if logger.level == logging.NOTSET:  # an operator's explicit choice wins
        logger.setLevel(logging.WARNING)
    if _LOG_FILTER not in logger.filters:
        logger.addFilter(_LOG_FILTER)


def _asset(timeout: float) -> apprise.AppriseAsset:
    return apprise.AppriseAsset(
        # Like our httpx client: a redirect would carry the message (and credentials)
        # somewhere nobody chose.
        http_redirects=False,
        secure_logging=True,
        service_timeout=timeout,
        # Nothing on disk: no persistent cache, no generated PGP or PEM keys.
        storage_mode="memory",
        pgp_autogen=False,
        pem_autogen=False,
    )


def _parse(url: str, asset: apprise.AppriseAsset) -> Any:
    """Apprise's plugin object for ``url``; ValueError, naming what :func:`redact` keeps, if
    Apprise has none."""
    where = redact(url)
    parsing = _parsing.set(True)
    try:
        service = apprise.Apprise.instantiate(url, asset=asset)
    except Exception as exc:
        # Plugins parse the URL themselves; one that chokes on it rejects the URL. (No
        # chaining: the cause's text may quote the URL.)
        raise ValueError(f"{where} is not a URL Apprise can use ({type(exc).__name__})") from None
    finally:
        _parsing.reset(parsing)
    if service is None:
        raise ValueError(f"{where} is not a URL Apprise can use")
    return service


_PREPARING = threading.Lock()


@functools.cache
def _checking_asset() -> apprise.AppriseAsset:
    quiet_library_logging()
    load_plugins()
    return _asset(timeout=10.0)


def _prepare() -> apprise.AppriseAsset:
    with _PREPARING:  # once, even if several requests come at the same time
        return _checking_asset()


async def refusal(url: str, policy: OutboundPolicy) -> str | None:
    """Why an Apprise URL may not be registered, or None if it may: Apprise must understand
    it, and the servers it names must be allowed by ``policy`` (apprise_hosts.refusal)."""
    # The first time, loading Apprise's plugins takes a second or two: not on the event loop.
    asset = await anyio.to_thread.run_sync(_prepare)
    try:
        service = _parse(url.strip(), asset)
    except ValueError as exc:
        return str(exc)
    return await apprise_hosts.refusal(service, policy)


class AppriseProvider:
    """Sends ``subject`` and ``body`` to the Apprise URL in ``message.recipient``."""

    channel = "apprise"

    @classmethod
    def from_config(
        cls, name: str, config: AppriseConfig, settings: Settings, deps: Dependencies
    ) -> AppriseProvider:
        return cls(name, config, outbound=settings.outbound_policy())

    def __init__(
        self, name: str, config: AppriseConfig, *, outbound: OutboundPolicy | None = None
    ) -> None:
        self.name = name
        self.config = config
        self.concurrency = config.concurrency
        self._asset = _asset(config.timeout_seconds)
        # Recipients are user-supplied URLs: only public servers, unless allowed (SSRF).
        self._outbound = outbound or OutboundPolicy()
        self._started = False

    def __repr__(self) -> str:
        return f"AppriseProvider(name={self.name!r})"

    async def start(self) -> None:
        # Loads the plugins (a second or two, once per process) off the event loop.
        await anyio.to_thread.run_sync(_prepare)
        self._started = True
        log.info("apprise.configured", provider=self.name, concurrency=self.concurrency)

    async def close(self) -> None:
        pass

    async def send(self, message: OutboundMessage) -> SendResult:
        if not self._started:
            raise TransientDeliveryError("apprise: provider not started")
        url = message.recipient.strip()
        where = redact(url)
        if not message.body and not message.subject:
            raise PermanentDeliveryError("apprise: nothing to send (no subject, no body)")
        try:
            service = _parse(url, self._asset)
        except ValueError as exc:
            raise PermanentDeliveryError(f"apprise: {exc}") from None
        # Checked when registered, and again now: the allowance or the DNS may have changed.
        # Apprise then connects by itself, held to the addresses just checked.
        checked = await apprise_hosts.check(
            service, self._outbound, timeout=self.config.timeout_seconds
        )
        notifier = apprise.Apprise(asset=self._asset)
        notifier.add(service)
        try:
            # Asynchronous services run on this loop; blocking ones in Apprise's thread pool,
            # in copies of this task's context: the guard goes with them, and nowhere else.
            with dns_pin.pinned(checked), dns_pin.guarded(self._outbound) as refused:
                result = await notifier.async_notify(
                    body=message.body,
                    title=message.subject or "",
                    body_format=apprise.NotifyFormat.TEXT,
                    timeout=self.config.timeout_seconds,
                )
        except Exception as exc:
            # (No chaining: the cause's text may quote the URL.)
            raise TransientDeliveryError(f"apprise: {where}: {type(exc).__name__}") from None
        if refused:
            # Apprise went beyond the server checked (a proxy, a plugin's own look-up): the
            # host is in the log (outbound.refused), not in the caller's error.
            log.warning("apprise.connection_refused", provider=self.name, where=where)
            raise OutboundRefusedError(
                f"the service tried to connect somewhere not allowed ({SETTING})", what="apprise"
            )
        if not result:
            raise TransientDeliveryError(
                f"apprise: {where}: notification {result.status.name.lower()}"
            )
        return SendResult(self.name)
