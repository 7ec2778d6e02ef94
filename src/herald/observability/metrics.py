"""Every Prometheus metric Herald exports, defined once here.

Counters and histograms are updated where things happen; gauges that describe stored state
(outbox, dead letters, consumer lag) are sampled by ``observability.sampler``. When roles run in
separate processes on one host, set ``PROMETHEUS_MULTIPROC_DIR`` to a fresh directory shared by
them: every process writes its values there and any ``/metrics`` endpoint serves the sum
(prometheus_client's multiprocess mode). The dashboard and alert rules in ``deploy/`` may only
reference names from ``CATALOG`` (a test checks).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from herald import __version__

# Seconds; from a fast in-process send up to a retry after minutes.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)

build_info = Gauge(
    "herald_build_info", "Herald's version; always 1", ["version"], multiprocess_mode="max"
)
build_info.labels(__version__).set(1)

# -- HTTP API -------------------------------------------------------------------------------
http_requests = Counter(
    "herald_http_requests",
    "HTTP requests answered, by route template and status code",
    ["method", "route", "code"],
)
http_request_seconds = Histogram(
    "herald_http_request_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
notifications_accepted = Counter(
    "herald_notifications_accepted", "Notifications accepted (idempotent repeats not counted)"
)
notifications_staged = Counter(
    "herald_notifications_staged",
    "Notifications accepted in staged batches (stored as one row, written out by the expander)",
)
notifications_expanded = Counter(
    "herald_notifications_expanded", "Notifications of staged batches written out"
)
staged_pending = Gauge(
    "herald_staged_notifications_pending",
    "Notifications in staged batches not yet written out (sampled by the expander)",
    multiprocess_mode="mostrecent",
)
staged_failures = Counter(
    "herald_staged_batch_failures", "Expansions of a staged batch that failed (each retried)"
)
suppressed_skips = Counter(
    "herald_suppressed_skips",
    "Deliveries skipped because their address is on the tenant's suppression list",
    ["channel"],
)
addresses_removed = Counter(
    "herald_addresses_removed",
    "Push tokens and Web Push subscriptions removed from users because their provider said "
    "they are gone",
    ["channel"],
)
suppressions_added = Counter(
    "herald_suppressions_added", "Addresses put on a suppression list", ["channel", "reason"]
)
receipts = Counter(
    "herald_receipts",
    "Receipts providers sent about deliveries after accepting them, by kind and by what Herald "
    "did with them (applied, recorded, late, early, unknown, duplicate)",
    ["provider", "kind", "outcome"],
)
daily_cap_skips = Counter(
    "herald_daily_cap_skips",
    "Deliveries skipped because their recipient reached the channel's daily cap",
    ["channel"],
)
api_rate_limited = Counter(
    "herald_api_rate_limited", "API requests refused with 429 by the per-client rate limit"
)

# -- Outbox and bus -------------------------------------------------------------------------
outbox_pending = Gauge(
    "herald_outbox_pending",
    "Outbox events not yet published (sampled)",
    multiprocess_mode="mostrecent",
)
outbox_oldest_age_seconds = Gauge(
    "herald_outbox_oldest_age_seconds",
    "Age of the oldest unpublished outbox event (sampled)",
    multiprocess_mode="mostrecent",
)
events_published = Counter(
    "herald_events_published",
    "Events published to the bus: by the outbox relay, or appended by a stage in its own "
    "transaction (embedded bus)",
    ["topic"],
)
publish_failures = Counter(
    "herald_publish_failures", "Outbox events the bus refused (each retried later)"
)
consumer_lag = Gauge(
    "herald_consumer_lag",
    "Messages a consumer group has yet to read (sampled)",
    ["group", "topic", "partition"],
    multiprocess_mode="mostrecent",
)
messages_handled = Counter(
    "herald_messages_handled", "Bus messages a consumer group has handled", ["group"]
)
consumer_stalled = Gauge(
    "herald_consumer_stalled",
    "1 while a partition of the group has messages waiting and its committed offset has not "
    "moved for HERALD_CONSUMER_STALL_SECONDS (see /readyz)",
    ["group"],
    multiprocess_mode="livemax",
)

db_commits = Counter(
    "herald_db_commits", "Write transactions committed (each stage commits once per batch)"
)

# -- Deliveries -----------------------------------------------------------------------------
deliveries = Counter(
    "herald_deliveries", "Deliveries that reached a final status", ["channel", "provider", "status"]
)
delivery_attempts = Counter(
    "herald_delivery_attempts",
    "Delivery attempts, by what they ended in",
    ["channel", "provider", "outcome"],
)
deliveries_postponed = Counter(
    "herald_deliveries_postponed",
    "Delivery jobs put off, without an attempt, while their destination's circuit was open",
    ["channel"],
)
delivery_retries = Counter(
    "herald_delivery_retries",
    "Retries scheduled after a transient failure",
    ["channel", "provider"],
)
end_to_end_seconds = Histogram(
    "herald_end_to_end_seconds",
    "From a notification's acceptance to its delivery being sent",
    ["channel"],
    buckets=_LATENCY_BUCKETS,
)
provider_call_seconds = Histogram(
    "herald_provider_call_seconds",
    "Time a provider took to send (or fail)",
    ["channel", "provider", "outcome"],
    buckets=_LATENCY_BUCKETS,
)

# -- Status webhooks ------------------------------------------------------------------------
status_webhook_events = Counter(
    "herald_status_webhook_events",
    "Status events made for tenants' webhook subscriptions (one per subscription that wants it)",
)
status_webhook_posts = Counter(
    "herald_status_webhook_posts",
    "Attempts to post a status event, by what they ended in (sent, retry, dead_lettered, "
    "put_off: its destination's circuit was open)",
    ["outcome"],
)

# -- Failure handling -----------------------------------------------------------------------
dead_letters = Counter("herald_dead_letters", "Dead letters filed", ["kind", "reason", "channel"])
dead_letters_pending = Gauge(
    "herald_dead_letters_pending",
    "Dead letters not yet replayed: the DLQ depth (sampled)",
    ["kind", "channel"],
    multiprocess_mode="mostrecent",
)
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}
circuit_state = Gauge(
    "herald_circuit_state",
    "A provider's circuit breaker: 0 closed, 1 half-open, 2 open",
    ["channel", "provider"],
    multiprocess_mode="livemax",
)
rate_limit_waits = Counter(
    "herald_rate_limit_waits", "Sends that waited for a provider's rate limit", ["provider"]
)
rate_limit_wait_seconds = Counter(
    "herald_rate_limit_wait_seconds",
    "Time sends spent waiting for a provider's rate limit",
    ["provider"],
)

# What a delivery attempt ends in, and which of those are a delivery's final status
# (pipeline/stages/deliver.py); the reasons a delivery is dead-lettered (reliability/retry.py).
_ATTEMPT_OUTCOMES = ("SENT", "RETRY_PENDING", "DEAD_LETTERED")
_FINAL_STATUSES = ("SENT", "DEAD_LETTERED")
_GIVE_UP_REASONS = ("permanent", "exhausted")


def zero_channel(channel: str, providers: Sequence[str]) -> None:
    """Create a channel worker's series at 0 when it starts. A counter that first appears at 1
    is invisible to increase() and rate(): the first failures of a new series would not alert."""
    for provider in providers:
        for outcome in _ATTEMPT_OUTCOMES:
            delivery_attempts.labels(channel, provider, outcome)
        for status in _FINAL_STATUSES:
            deliveries.labels(channel, provider, status)
        delivery_retries.labels(channel, provider)
        rate_limit_waits.labels(provider)
        rate_limit_wait_seconds.labels(provider)
    deliveries_postponed.labels(channel)
    for reason in _GIVE_UP_REASONS:
        dead_letters.labels("delivery", reason, channel)


def zero_consumers(channels: Sequence[str]) -> None:
    """The series of a process that consumes the bus (router, status), at 0 (see zero_channel)."""
    dead_letters.labels("message", "poison", "")
    for channel in channels:
        daily_cap_skips.labels(channel)


def zero_relay() -> None:
    """The outbox relay's series at 0 (see zero_channel)."""
    dead_letters.labels("event", "refused", "")


_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}

#: Every series name a scrape of Herald can show (``herald_deliveries_total``, …).
CATALOG: frozenset[str] = frozenset(
    family.name + suffix
    for family in REGISTRY.collect()  # every metric defined above registered itself here
    if family.name.startswith("herald_")
    for suffix in _SUFFIXES[family.type]
)


def exposition() -> tuple[bytes, str]:
    """The text ``/metrics`` serves: this process's metrics, or every process's in
    multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
