"""Settings: one pydantic-settings class, every option read from ``HERALD_*`` variables.

Each field is documented in the README's configuration table; keep the two in step.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from herald.domain.models import Channel
from herald.errors import ConfigError
from herald.outbound import OutboundPolicy


class RetryOverrides(BaseModel):
    """Per-channel retry settings; what is left out falls back to the global HERALD_RETRY_*."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int | None = Field(default=None, ge=1)
    base_seconds: float | None = Field(default=None, gt=0)
    max_seconds: float | None = Field(default=None, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERALD_", extra="ignore", frozen=True)

    # Storage and bus
    database_url: str = "sqlite:///./herald.db"
    bus: Literal["embedded", "kafka"] = "embedded"
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "FULL"
    # The writing connection's page cache (store.sqlite_inline.CACHE_MB, kept equal by a test).
    sqlite_cache_mb: int = Field(default=64, ge=1)
    db_pool_size: int = Field(default=10, ge=1)
    embedded_partitions: int = Field(default=4, ge=1, le=256)
    topic_prefix: str = Field(default="herald.", pattern=r"^[A-Za-z0-9._-]*$")

    # Kafka (HERALD_BUS=kafka)
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_partitions: int = Field(default=6, ge=1, le=10_000)
    kafka_replication_factor: int = Field(default=-1, ge=-1)  # -1: the broker's default
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1000)
    # How long a fetch may wait for data; brokers that do not answer early make this latency.
    kafka_fetch_wait_max_ms: int = Field(default=100, ge=1, le=10_000)
    kafka_publish_timeout_seconds: float = Field(default=20.0, gt=0)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: str | None = None
    # Any other librdkafka property, as JSON: {"ssl.certificate.location": "/etc/herald/cert.pem"}
    kafka_client_config: dict[str, str | int | float | bool] = Field(default_factory=dict)

    # Redis (rate limits shared by all API processes, idempotency cache)
    redis_url: str | None = None
    redis_prefix: str = "herald:"

    # HTTP API
    # open: no API keys (loopback only); required: every /api/v1 call needs one. Unset:
    # open for `herald serve` on loopback until a key exists, required otherwise.
    auth: Literal["open", "required"] | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # `herald serve`: run the consumers in a second process (auto: when more than one core).
    serve_consumer_process: Literal["auto", "on", "off"] = "auto"
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_message_bytes: int = Field(default=256 * 1024, ge=1)
    idempotency_ttl_seconds: float = Field(default=24 * 3600, gt=0)
    # Token bucket per client (API key, else address); 0 turns the limit off.
    rate_limit_per_second: float = Field(default=100.0, ge=0)
    rate_limit_burst: int = Field(default=200, ge=1)

    # Email
    email_backend: Literal["smtp", "console"] | None = None
    smtp_url: str | None = None
    smtp_timeout_seconds: float = Field(default=20.0, gt=0)
    smtp_pool_size: int = Field(default=4, ge=1, le=64)
    email_from: str = "Herald <herald@localhost>"
    # Special-use domains (RFC 6761: test, local, ...) recipients may be at, for staging.
    email_special_use_domains: list[str] = Field(default_factory=list)
    # The SMTP relays take SMTPUTF8 (RFC 6531): addresses with non-ASCII before the @ are
    # accepted (and sent with it); without it the API refuses them, as no relay would take them.
    smtp_utf8: bool = False
    # Bounces come back here: email goes out with the return path bounce+<delivery id>@ this
    # domain (VERP), whose MX is `herald inbound` (or an MTA piping to /api/v1/receipts/mail).
    bounce_domain: str | None = Field(
        default=None, max_length=253, pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$"
    )
    # `herald inbound`: the SMTP listener for the bounce domain's mail.
    inbound_host: str = "127.0.0.1"
    inbound_port: int = Field(default=2525, ge=0, le=65535)
    inbound_max_bytes: int = Field(default=1_048_576, ge=1024)

    # Providers beyond the built-in ones, by name: {"twilio": {"type": "twilio", ...}}.
    providers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Providers of a channel in priority order (failover): {"sms": ["twilio", "twilio-eu"]}.
    channel_providers: dict[str, list[str]] = Field(default_factory=dict)
    # Signs the default tenant's webhooks to URLs given inline until that tenant first rotates
    # its secret through the API; other tenants (and users) have secrets of their own.
    webhook_secret: SecretStr | None = None
    # Webhook URLs and Web Push endpoints (user-supplied) must resolve to public addresses
    # only; these comma-separated CIDRs and host names may be contacted as well.
    outbound_allow: str = ""

    # Routing
    # Categories that go through opt-outs and quiet hours (security alerts, receipts, ...).
    critical_categories: list[str] = Field(default_factory=list)
    # Most deliveries one recipient gets per channel per UTC day; more are SKIPPED (daily_cap).
    daily_caps: dict[str, int] = Field(default_factory=lambda: {"sms": 20})
    # Rules loaded (created or replaced by name) when the API starts, from a YAML file.
    rules_file: str | None = None
    # The address users reach Herald at: unsubscribe links in email point here.
    public_url: str = "http://127.0.0.1:8000"
    inbox_poll_seconds: float = Field(default=1.0, gt=0)
    max_batch_items: int = Field(default=1000, ge=1, le=10_000)
    # A batch of at least this many accepted notifications is stored as one row and written
    # out by the expander (0: never): see "Staged batches" in the README.
    stage_batches_from: int = Field(default=100, ge=0)
    # The expander writes staged batches out while the pipeline's consumers have fewer than
    # this many messages waiting (0: no limit).
    expand_ahead: int = Field(default=10_000, ge=0)

    # Pipeline
    relay_batch_size: int = Field(default=500, ge=1)
    # Publish every delivery status change on the status topic, for consumers outside Herald
    # (Herald settles a notification's status in the transaction that changed a delivery).
    status_events: bool = False
    # After a wake-up the relay waits this long for more commits to publish with (0: none).
    relay_linger_seconds: float = Field(default=0.01, ge=0, le=1)
    # ... and up to this long after a large batch (a busy relay's batches fill further);
    # unset: four times the linger.
    relay_linger_max_seconds: float | None = Field(default=None, ge=0, le=1)
    relay_max_attempts: int = Field(default=10, ge=1)
    relay_shard_lease_seconds: float = Field(default=30.0, gt=0)
    poll_interval_seconds: float = Field(default=0.2, gt=0)
    worker_max_in_flight: int = Field(default=256, ge=1)
    # Stages handle messages in batches of up to this many (one per key each), one
    # transaction per batch; a batch that is not full waits up to the linger for more.
    batch_size: int = Field(default=100, ge=1, le=10_000)
    batch_linger_ms: float = Field(default=2.0, ge=0, le=1000)
    # Batches of one stage that may run at once (keys never overlap between them).
    stage_concurrency: int = Field(default=2, ge=1, le=64)
    # A group whose committed offset stays put this long in a partition where messages wait
    # is stalled: its members report not ready (/readyz, herald_consumer_stalled).
    consumer_stall_seconds: float = Field(default=120.0, gt=0)
    delivery_lease_seconds: float = Field(default=60.0, gt=0)
    retry_max_attempts: int = Field(default=5, ge=1)
    retry_base_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=300.0, gt=0)
    # {"email": {"max_attempts": 8, "base_seconds": 2, "max_seconds": 600}}
    retry_policies: dict[str, RetryOverrides] = Field(default_factory=dict)

    # Providers
    circuit_failure_threshold: int = Field(default=5, ge=1)
    circuit_reset_seconds: float = Field(default=30.0, gt=0)
    circuit_max_reset_seconds: float = Field(default=300.0, gt=0)
    # Sends per second per provider, shared by all workers (through Redis when configured).
    provider_rate_limits: dict[str, float] = Field(default_factory=dict)

    # Dead letters and recovery
    dlq_replay_per_second: float = Field(default=10.0, gt=0)
    recovery_after_seconds: float = Field(default=300.0, gt=0)
    shutdown_timeout_seconds: float = Field(default=20.0, gt=0)

    # Housekeeping
    # 0: each outbox row is deleted as it is published (see OutboxRelay's keep_published).
    outbox_retention_seconds: float = Field(default=0.0, ge=0)
    log_retention_seconds: float = Field(default=7 * 24 * 3600.0, ge=0)
    status_event_retention_seconds: float = Field(default=7 * 24 * 3600.0, ge=0)
    maintenance_interval_seconds: float = Field(default=60.0, gt=0)

    # Observability
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # json: one JSON object per line; text: key=value; auto: text on a terminal, else json.
    log_format: Literal["auto", "json", "text"] = "auto"
    # `herald relay` and `herald worker` serve /metrics here when a port is set (the API
    # serves it on its own port).
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_sample_seconds: float = Field(default=5.0, gt=0)
    # OpenTelemetry spans (the otel extra): otlp to OTEL_EXPORTER_OTLP_ENDPOINT, or console.
    otel_exporter: Literal["none", "otlp", "console"] = "none"

    @field_validator("log_level", "sqlite_synchronous", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("email_special_use_domains")
    @classmethod
    def _special_use(cls, value: list[str]) -> list[str]:
        from email_validator import SPECIAL_USE_DOMAIN_NAMES

        unknown = sorted(set(value) - set(SPECIAL_USE_DOMAIN_NAMES))
        if unknown:
            raise ValueError(f"not special-use domains: {unknown}")
        return value

    @field_validator("outbound_allow")
    @classmethod
    def _allowlist(cls, value: str) -> str:
        OutboundPolicy.parse(value)  # a ValueError names the entry at fault
        return value

    @field_validator("daily_caps")
    @classmethod
    def _caps(cls, value: dict[str, int]) -> dict[str, int]:
        channels = {c.value for c in Channel}
        for channel, cap in value.items():
            if channel not in channels:
                raise ValueError(f"{channel!r} is not a channel ({', '.join(sorted(channels))})")
            if cap < 1:
                raise ValueError(f"{channel}: a cap is at least 1 (leave the channel out for none)")
        return value

    @model_validator(mode="after")
    def _publish_within_the_shard_lease(self) -> Settings:
        if (
            self.bus == "kafka"
            and self.kafka_publish_timeout_seconds >= self.relay_shard_lease_seconds
        ):
            raise ValueError(
                "HERALD_KAFKA_PUBLISH_TIMEOUT_SECONDS must be shorter than "
                "HERALD_RELAY_SHARD_LEASE_SECONDS, or two relays could publish one shard at once"
            )
        return self

    def kafka_client(self) -> dict[str, str | int | float | bool]:
        """librdkafka settings shared by producers, consumers and the admin client."""
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.kafka_bootstrap_servers,
            "security.protocol": self.kafka_security_protocol,
        }
        optional = {
            "sasl.mechanism": self.kafka_sasl_mechanism,
            "sasl.username": self.kafka_sasl_username,
            "sasl.password": self.kafka_sasl_password.get_secret_value()
            if self.kafka_sasl_password
            else None,
            "ssl.ca.location": self.kafka_ssl_ca_location,
        }
        config.update({k: v for k, v in optional.items() if v is not None})
        config.update(self.kafka_client_config)
        return config

    def outbound_policy(self) -> OutboundPolicy:
        """What user-supplied URLs may reach besides public addresses (HERALD_OUTBOUND_ALLOW)."""
        return OutboundPolicy.parse(self.outbound_allow)

    def retry_policy_for(self, channel: str) -> tuple[int, float, float]:
        """(max attempts, backoff base, backoff cap) for a channel."""
        o = self.retry_policies.get(channel, RetryOverrides())
        return (
            o.max_attempts or self.retry_max_attempts,
            o.base_seconds or self.retry_base_seconds,
            o.max_seconds or self.retry_max_seconds,
        )

    @property
    def resolved_email_backend(self) -> Literal["smtp", "console"]:
        """`smtp` when an SMTP URL is set, else `console`, unless chosen explicitly."""
        backend = self.email_backend or ("smtp" if self.smtp_url else "console")
        if backend == "smtp" and not self.smtp_url:
            raise ConfigError("HERALD_EMAIL_BACKEND=smtp needs HERALD_SMTP_URL")
        return backend


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
