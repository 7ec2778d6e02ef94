"""Channel providers: which ones serve a channel, and building them from settings.

A provider is either built in (``smtp``/``console`` for email, ``inbox`` for in-app,
``webhook``, ``apprise``) or configured by name in ``HERALD_PROVIDERS`` with a ``type``.
A channel's providers, in failover order, come from ``HERALD_CHANNEL_PROVIDERS``, else the
built-in one followed by every configured provider of that channel. Provider modules are
imported lazily: an extra that is not installed only matters to the channel that needs it.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, SecretStr, ValidationError

from herald.channels.base import Provider
from herald.config import Settings
from herald.errors import ConfigError
from herald.store.database import Database
from herald.wakeup import Wakeup

if TYPE_CHECKING:
    from herald.channels.webhook import SigningSecrets


@dataclass(frozen=True, slots=True)
class ProviderType:
    channel: str
    module: str  # herald.channels.<module>
    config: str  # the pydantic config class in it
    provider: str  # the provider class in it


TYPES: dict[str, ProviderType] = {
    "smtp": ProviderType("email", "smtp", "SmtpConfig", "SmtpProvider"),
    "sendgrid": ProviderType("email", "sendgrid", "SendGridConfig", "SendGridProvider"),
    "mailgun": ProviderType("email", "mailgun", "MailgunConfig", "MailgunProvider"),
    "twilio": ProviderType("sms", "twilio", "TwilioConfig", "TwilioProvider"),
    "fcm": ProviderType("push", "fcm", "FcmConfig", "FcmProvider"),
    "webpush": ProviderType("webpush", "webpush", "WebPushConfig", "WebPushProvider"),
    "webhook": ProviderType("webhook", "webhook", "WebhookConfig", "WebhookProvider"),
    "apprise": ProviderType("apprise", "apprise", "AppriseConfig", "AppriseProvider"),
}

# Built-in providers that need no configuration, by channel.
BUILT_IN = {"inapp": "inbox", "webhook": "webhook", "apprise": "apprise"}
# Built-in providers whose library comes with an extra: (module to import, extra). Without it
# the provider is left out, and with it its channel, unless configured explicitly.
_NEEDS_EXTRA = {"apprise": ("apprise", "apprise")}
# Every built-in provider's channel (smtp when HERALD_SMTP_URL is set).
_BUILT_IN_CHANNEL = {"smtp": "email", "console": "email", **{v: k for k, v in BUILT_IN.items()}}


@dataclass(frozen=True, slots=True)
class Dependencies:
    """What some providers need from the process: the database (in-app inbox, webhook
    secrets) and the wake-up for in-process inbox streams."""

    db: Database
    inbox_wakeup: Wakeup | None = None
    signing_secrets: SigningSecrets | None = None


def _type_of(name: str, settings: Settings) -> ProviderType:
    raw = settings.providers[name]
    kind = raw.get("type")
    if kind not in TYPES:
        raise ConfigError(
            f"HERALD_PROVIDERS.{name}.type: {kind!r} is not one of {', '.join(sorted(TYPES))}"
        )
    return TYPES[kind]


def providers_for(channel: str, settings: Settings) -> list[str]:
    """The channel's provider names in failover order; empty if nothing can send on it."""
    if channel in settings.channel_providers:
        names = list(settings.channel_providers[channel])
        for name in names:
            known = _channel_of(name, settings)
            if known != channel:
                raise ConfigError(
                    f"HERALD_CHANNEL_PROVIDERS.{channel}: provider {name!r} "
                    + ("is not configured" if known is None else f"sends {known}, not {channel}")
                )
        return names
    configured = [n for n in settings.providers if _type_of(n, settings).channel == channel]
    builtin = BUILT_IN.get(channel)
    if channel == "email":
        if settings.email_backend == "console":
            return ["console"]
        if settings.resolved_email_backend == "smtp":
            builtin = "smtp"
        elif not configured:
            builtin = "console"
    if builtin is not None and builtin not in configured and _installed(builtin):
        return [builtin, *configured]
    return configured


def _installed(builtin: str) -> bool:
    needed = _NEEDS_EXTRA.get(builtin)
    return needed is None or importlib.util.find_spec(needed[0]) is not None


def unavailable_channels(settings: Settings) -> dict[str, str]:
    """Channels left out because their built-in provider's library is not installed (and
    nothing else sends on them), with why."""
    return {
        channel: f"the {needed[0]} library is not installed: pip install 'herald[{needed[1]}]'"
        for channel, builtin in BUILT_IN.items()
        if (needed := _NEEDS_EXTRA.get(builtin)) is not None
        and not _installed(builtin)
        and not providers_for(channel, settings)
    }


def _channel_of(name: str, settings: Settings) -> str | None:
    if name in settings.providers:
        return _type_of(name, settings).channel
    if name == "smtp" and not settings.smtp_url:
        return None
    return _BUILT_IN_CHANNEL.get(name)


def available_channels(settings: Settings) -> list[str]:
    from herald.domain.models import Channel

    return [c.value for c in Channel if providers_for(c.value, settings)]


def build_provider(name: str, settings: Settings, deps: Dependencies) -> Provider:
    if name in settings.providers:
        return _configured(name, settings, deps)
    if name == "smtp":
        from herald.channels.smtp import SmtpConfig, SmtpProvider

        assert settings.smtp_url is not None
        config = SmtpConfig(type="smtp", url=SecretStr(settings.smtp_url))
        return SmtpProvider.from_config(name, config, settings, deps)
    if name == "console":
        from herald.channels.console import ConsoleEmailProvider

        return ConsoleEmailProvider(sender=settings.email_from)
    if name == "inbox":
        from herald.channels.inbox import InboxProvider

        return InboxProvider(name, deps.db, deps.inbox_wakeup)
    if name in ("webhook", "apprise"):
        return _instantiate(name, TYPES[name], {"type": name}, settings, deps)
    raise ConfigError(f"no provider named {name!r}")


def _configured(name: str, settings: Settings, deps: Dependencies) -> Provider:
    return _instantiate(name, _type_of(name, settings), settings.providers[name], settings, deps)


def _instantiate(
    name: str, kind: ProviderType, raw: dict[str, Any], settings: Settings, deps: Dependencies
) -> Provider:
    try:
        module = importlib.import_module(f"herald.channels.{kind.module}")
    except ImportError as exc:
        raise ConfigError(
            f"provider {name!r} needs a library that is not installed ({exc.name}): "
            "pip install 'herald[all]'"
        ) from exc
    config_class: type[BaseModel] = getattr(module, kind.config)
    try:
        config = config_class.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"HERALD_PROVIDERS.{name}: {problems}") from exc
    # Each provider class takes from the settings and the process what it needs.
    provider: Provider = getattr(module, kind.provider).from_config(name, config, settings, deps)
    return provider
