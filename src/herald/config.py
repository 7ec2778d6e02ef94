"""Settings: one pydantic-settings class, every option read from ``HERALD_*`` variables.

Each field is documented in the README's configuration table; keep the two in step.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from herald.errors import ConfigError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERALD_", extra="ignore", frozen=True)

    # Storage and bus
    database_url: str = "sqlite:///./herald.db"
    bus: Literal["embedded"] = "embedded"
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "FULL"
    db_pool_size: int = Field(default=10, ge=1)
    embedded_partitions: int = Field(default=4, ge=1, le=256)
    topic_prefix: str = Field(default="herald.", pattern=r"^[A-Za-z0-9._-]*$")

    # HTTP API
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_message_bytes: int = Field(default=256 * 1024, ge=1)
    idempotency_ttl_seconds: float = Field(default=24 * 3600, gt=0)

    # Email
    email_backend: Literal["smtp", "console"] | None = None
    smtp_url: str | None = None
    smtp_timeout_seconds: float = Field(default=20.0, gt=0)
    smtp_pool_size: int = Field(default=4, ge=1, le=64)
    email_from: str = "Herald <herald@localhost>"

    # Pipeline
    relay_batch_size: int = Field(default=500, ge=1)
    relay_max_attempts: int = Field(default=10, ge=1)
    poll_interval_seconds: float = Field(default=0.2, gt=0)
    worker_max_in_flight: int = Field(default=256, ge=1)
    delivery_lease_seconds: float = Field(default=60.0, gt=0)
    retry_max_attempts: int = Field(default=5, ge=1)
    retry_base_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=300.0, gt=0)
    shutdown_timeout_seconds: float = Field(default=20.0, gt=0)

    # Housekeeping
    outbox_retention_seconds: float = Field(default=3600.0, ge=0)
    log_retention_seconds: float = Field(default=7 * 24 * 3600.0, ge=0)
    maintenance_interval_seconds: float = Field(default=60.0, gt=0)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("log_level", "sqlite_synchronous", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def resolved_email_backend(self) -> Literal["smtp", "console"]:
        """`smtp` when an SMTP URL is set, else `console`, unless chosen explicitly."""
        backend = self.email_backend or ("smtp" if self.smtp_url else "console")
        if backend == "smtp" and not self.smtp_url:
            raise ConfigError("HERALD_EMAIL_BACKEND=smtp needs HERALD_SMTP_URL")
        return backend
