"""Which servers a user's Apprise URL makes Apprise connect to, checked like a webhook URL.

Apprise parses a URL into a plugin object, and the plugins fall in three kinds:

- A server the URL names. Apprise's own metadata gives these plugins a ``host`` template token
  (``json://``, ``form://``, ``xml://``, ``ntfy://host/topic``, ``gotify://``, ``matrix://``,
  ``mqtt://``, ``rocket://``, ``apprise://``, ...) and their ``.host`` is where they connect.
  ``mailto://`` connects to its ``smtp_host`` (``?smtp=``, a known provider's server, else the
  domain). Zulip's organization may name a self-hosted server too.
- A vendor's fixed public API. Plugins without a ``host`` token (``discord://``, ``tgram://``,
  ``slack://``, ...), whose "host" is a token or an id; host-token plugins in their cloud mode
  (``ntfy://topic``) or with no host given; and those whose "host" is only a sender's mail
  domain (``mailgun://``) or an id (``wechat://``).
- Servers known only at send time, from answers or files that the URL's owner controls:
  ``nostr://`` (relays, NIP-05), ``bsky://`` (the PDS named in a DID document), ``vapid://``
  (endpoints in a subscription file), ``matrixs://`` with ``.well-known`` discovery, files on
  this machine or URLs that Apprise reads (FCM key files, e-mail PGP keys, ``template=`` of
  Discord, Telegram and Workflows) and e-mail WKD key look-ups on the recipients' domains. These
  are refused: nothing can be checked before Apprise goes there.

Refused as well, whatever their servers:

- Options of the URL that widen where Apprise goes: ``redirect=yes`` (Herald's asset turns
  redirects off; a URL may turn them back on, and a redirect goes where nobody checked).
  Other options do not change where Apprise connects: ``?port=`` changes the port only (the
  check is by address), ``?smtp=`` is the server checked for ``mailto://``, ``?to=`` names
  recipients, not servers, and Apprise reads no proxy from a URL (requests takes one from the
  environment: the operator's). ``verify=no`` drops the certificate check of the caller's own
  server, not the address check, so it is left to the caller.
- The Herald host itself: ``syslog://`` (its syslog), desktop notifications (``dbus://``,
  ``kde://``, ``qt://``, ``glib://``, ``gio://``, ``gnome://``, ``macosx://``, ``windows://``)
  and ``blink1://`` (a USB light).
- Services whose connections the send's guard cannot see (herald.channels.dns_pin):
  ``xmpp://`` connects from threads of its own, ``mqtt://`` keeps its connection (and
  reconnects) from one, and ``rsyslog://`` sends UDP to a name that the OS resolves directly,
  so it may name an IP address only (checked like any host).

Reviewed against Apprise 2.2's plugins. A server-naming plugin added later without a ``host``
token would pass as a vendor's API: review these tables when Apprise is upgraded. Whatever
slips past them, the send itself is guarded: Apprise's look-ups while it sends are checked
against the same policy (herald.channels.dns_pin.guarded).

Apprise resolves a server's name again when it connects; herald.channels.dns_pin holds that
look-up to the addresses :func:`check` found allowed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import anyio
import apprise

from herald.errors import OutboundRefusedError, TransientDeliveryError
from herald.outbound import IPAddress, OutboundPolicy

# Host-token plugins whose "host" is the sender's mail domain: they call the vendor's API.
_SENDER_DOMAIN = frozenset({"mailgun", "sparkpost", "smtp2go", "sendpulse"})
# The mode in which a host-token plugin talks to its vendor, whatever its "host" holds.
_VENDOR_MODES = {"ntfy": "cloud", "lametric": "cloud", "fluxer": "cloud", "matrix": "t2bot"}
# Where the servers come from at send time (see the module docstring).
_SEND_TIME = {
    "nostr": "its relays and look-ups",
    "bsky": "the server its account's DID document names",
    "vapid": "the endpoints in a subscription file",
}
# Attributes naming files on this machine that a plugin would read (besides the
# AppriseAttachment ones: keyfile=, template=, found by type).
_FILES = ("keyfile", "subfile", "pgp_key", "pgp_privkey")
# Plugins that reach the Herald host itself (its syslog, desktop, USB devices).
_LOCAL = frozenset(
    {"syslog", "dbus", "kde", "qt", "glib", "gio", "gnome", "macosx", "windows", "blink1"}
)
# Plugins whose connections the send's guard cannot see (see the module docstring).
_UNGUARDED = {
    "xmpp": "connects from threads of its own",
    "mqtt": "keeps its connection (and reconnects) from a thread of its own",
}
# Plugins whose host the OS resolves directly (UDP sendto), out of dns_pin's reach.
_ADDRESS_ONLY = frozenset({"rsyslog"})
# A dotless xMatters host is an account on the vendor's domain (see its plugin).
_XMATTERS_DOMAIN = "xmatters.com"
_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Server:
    host: str
    port: int  # 0 if the URL gives none: the check resolves the host, the port changes nothing


def _schemes(plugin: type[Any]) -> list[str]:
    """A plugin's URL schemes, plain ones first (each attribute a str, a tuple or a list)."""
    found: list[str] = []
    for attribute in ("protocol", "secure_protocol"):
        value = getattr(plugin, attribute, None)
        names: Iterable[object] = (value,) if isinstance(value, str) else (value or ())
        found.extend(str(name).lower() for name in names if name)
    return found


def _named(plugin: type[Any]) -> str:
    schemes = _schemes(plugin)
    return f"{schemes[0]}://" if schemes else "this Apprise service"


def _ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return True


def _plain(host: str) -> bool:
    """An IP address or a host name: nothing that Apprise, pasting it into a URL, and the
    resolver, looking it up, could read differently (``a@b``, ``a#b``, ``a/b``, spaces)."""
    if _ip(host):
        return True
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    return _HOST_NAME.fullmatch(ascii_host) is not None


def _reads_files(service: Any) -> bool:
    """Whether ``service`` would read a file on this machine or a URL (key, template, ...)."""
    if any(getattr(service, attribute, None) for attribute in _FILES):
        return True
    values = getattr(service, "__dict__", {}).values()
    return any(isinstance(value, apprise.AppriseAttachment) and len(value) for value in values)


def _unknowable(service: Any, schemes: list[str]) -> str | None:
    """Why ``service`` may not be handed to Apprise, whatever its servers, or None."""
    name = _named(type(service))
    if _LOCAL.intersection(schemes):
        return f"{name} reaches the Herald host itself; not allowed"
    for scheme in schemes:
        if scheme in _SEND_TIME:
            return f"{name} connects to {_SEND_TIME[scheme]}, unknown until sent; not allowed"
        if scheme in _UNGUARDED:
            return f"{name} {_UNGUARDED[scheme]}, out of Herald's checks; not allowed"
    if getattr(service, "redirects", False):
        return f"{name} with redirect=yes is not allowed"
    if _reads_files(service):
        return f"{name} with a file to read (key, subscription or template) is not allowed"
    if _ADDRESS_ONLY.intersection(schemes) and not _ip(str(getattr(service, "host", ""))):
        return f"{name} needs an IP address, not a name; not allowed"
    if getattr(service, "use_wkd", False):
        return f"{name} with wkd= looks up keys on the recipients' domains; not allowed"
    if "matrix" in schemes and getattr(service, "discovery", False) and service.secure:
        return f"{name} with server discovery finds its server at send time: add discovery=no"
    return None


def servers(service: Any) -> list[Server]:
    """Where the Apprise plugin object ``service`` will connect, as far as its URL says; empty
    for a vendor's fixed API. Raises :class:`OutboundRefusedError` for a plugin that finds its
    servers only at send time or may not be used at all (see the module docstring), or a host
    that is not plainly one."""
    found = _servers(service)
    if not all(_plain(server.host) for server in found):
        raise OutboundRefusedError(f"{_named(type(service))} names no plain host; not allowed")
    return found


def _servers(service: Any) -> list[Server]:
    plugin = type(service)
    schemes = _schemes(plugin)
    reason = _unknowable(service, schemes)
    if reason is not None:
        raise OutboundRefusedError(reason)
    port = service.port if isinstance(getattr(service, "port", None), int) else 0
    smtp_host = getattr(service, "smtp_host", None)
    if isinstance(smtp_host, str) and smtp_host:  # mailto://, and its relatives
        return [Server(smtp_host, port)]
    if "zulip" in schemes:
        hostname = getattr(service, "hostname", None)
        if isinstance(hostname, str) and hostname != getattr(plugin, "default_hostname", None):
            return [Server(f"{getattr(service, 'organization', '')}.{hostname}", 0)]
        return []
    token = (getattr(plugin, "template_tokens", None) or {}).get("host")
    # No host token, or one that holds something else (wechat://'s "host" is an agent id).
    if not isinstance(token, dict) or token.get("map_to", "host") != "host":
        return []
    if _SENDER_DOMAIN.intersection(schemes):
        return []
    mode = getattr(service, "mode", None)
    if mode is not None and any(_VENDOR_MODES.get(scheme) == mode for scheme in schemes):
        return []
    host = getattr(service, "host", None)
    if not isinstance(host, str) or not host:  # no host given: the vendor's own server
        return []
    if "xmatters" in schemes and "." not in host:
        host = f"{host}.{_XMATTERS_DOMAIN}"
    return [Server(host, port)]


async def refusal(service: Any, policy: OutboundPolicy) -> str | None:
    """Why Herald may not hand ``service`` to Apprise, or None if it may: the check made when
    an Apprise URL is registered. A host that does not resolve is refused, as for webhooks."""
    try:
        found = servers(service)
    except OutboundRefusedError as exc:
        return exc.reason
    for server in found:
        reason = await policy.host_refusal(server.host, server.port)
        if reason is not None:
            return reason
    return None


async def check(
    service: Any, policy: OutboundPolicy, *, timeout: float
) -> dict[str, list[IPAddress]]:
    """The same check right before ``service`` is handed to Apprise for sending; the addresses
    each server's name resolved to, which the send must be held to (see herald.channels.dns_pin:
    Apprise resolves the names again by itself, and DNS may answer differently by then).

    Raises :class:`OutboundRefusedError` (permanent, naming the host, never the URL) or, if a
    host does not resolve in ``timeout`` seconds, :class:`TransientDeliveryError`.
    """
    try:
        found = servers(service)
    except OutboundRefusedError as exc:
        raise OutboundRefusedError(exc.reason, what="apprise") from None
    checked: dict[str, list[IPAddress]] = {}
    for server in found:
        try:
            with anyio.fail_after(timeout):
                checked[server.host] = await policy.addresses(server.host, server.port)
        except OutboundRefusedError as exc:
            raise OutboundRefusedError(exc.reason, what="apprise") from None
        except TimeoutError:
            raise TransientDeliveryError(
                f"apprise: {server.host[:255]} did not resolve within {timeout:g}s"
            ) from None
        except OSError:
            raise TransientDeliveryError(f"apprise: {server.host[:255]} does not resolve") from None
    return checked
