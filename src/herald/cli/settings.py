"""The settings every herald command starts from (its own module: the subcommand apps need it
and the main app imports them)."""

from __future__ import annotations

from pydantic import ValidationError

from herald.cli.errors import fail
from herald.config import Settings
from herald.observability.logging import configure_logging


def settings_or_exit() -> Settings:
    """Settings from the environment, logging configured by them; or a one-line error naming
    each bad variable, and exit 2."""
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"HERALD_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        fail(f"invalid configuration: {problems}")
    configure_logging(settings.log_level, settings.log_format)
    return settings
