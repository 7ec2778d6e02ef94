"""The message bus: one protocol (base.py), one module per backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from herald.bus.base import Bus
    from herald.config import Settings
    from herald.store.database import Database


def build_bus(settings: Settings, db: Database) -> Bus:
    """The configured backend, imported only when chosen."""
    if settings.bus == "embedded":
        from herald.bus.embedded import EmbeddedBus

        return EmbeddedBus(
            db,
            partitions=settings.embedded_partitions,
            poll_interval=settings.poll_interval_seconds,
        )
    raise NotImplementedError(f"bus {settings.bus!r}")  # pragma: no cover - Literal-checked
