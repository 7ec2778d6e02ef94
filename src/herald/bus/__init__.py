"""The message bus: one protocol (base.py), one module per backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

from herald.errors import ConfigError

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
    if settings.bus == "kafka":
        try:
            from herald.bus.kafka import KafkaBus
        except ImportError as exc:
            raise ConfigError(
                "HERALD_BUS=kafka needs the kafka extra: pip install 'herald[kafka]'"
            ) from exc

        return KafkaBus(
            settings.kafka_client(),
            partitions=settings.kafka_partitions,
            replication_factor=settings.kafka_replication_factor,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            fetch_wait_max_ms=settings.kafka_fetch_wait_max_ms,
            publish_timeout=settings.kafka_publish_timeout_seconds,
            drain_timeout=settings.shutdown_timeout_seconds,
        )
    raise NotImplementedError(f"bus {settings.bus!r}")  # pragma: no cover - Literal-checked
