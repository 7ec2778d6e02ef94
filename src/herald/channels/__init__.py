"""Channel providers, built from settings by ``build_provider`` (imports each lazily)."""

from __future__ import annotations

from herald.channels.base import Provider
from herald.config import Settings
from herald.errors import ConfigError


def build_provider(channel: str, settings: Settings) -> Provider:
    if channel == "email":
        if settings.resolved_email_backend == "smtp":
            from herald.channels.smtp import SmtpProvider, parse_smtp_url

            assert settings.smtp_url is not None
            return SmtpProvider(
                parse_smtp_url(settings.smtp_url),
                sender=settings.email_from,
                timeout=settings.smtp_timeout_seconds,
                pool_size=settings.smtp_pool_size,
            )
        from herald.channels.console import ConsoleEmailProvider

        return ConsoleEmailProvider(sender=settings.email_from)
    raise ConfigError(f"no provider for channel {channel!r}")
