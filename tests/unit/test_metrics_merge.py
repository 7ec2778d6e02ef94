"""`herald serve`'s /metrics adds its consumer process's metrics to its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from herald.observability.merge import merge_expositions


def _process(sent: int, lag: int, seconds: list[float], only: str) -> str:
    registry = CollectorRegistry()
    counter = Counter("demo_sent", "sent", ["channel"], registry=registry)
    counter.labels("email").inc(sent)
    counter.labels(only).inc(1)
    Gauge("demo_lag", "lag", registry=registry).set(lag)
    histogram = Histogram("demo_seconds", "time", buckets=(0.1, 1), registry=registry)
    for value in seconds:
        histogram.observe(value)
    return generate_latest(registry).decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_and_histograms_add_up_gauges_keep_the_first_and_lone_series_stay() -> None:
    parent = _process(sent=3, lag=7, seconds=[0.05], only="sms")
    child = _process(sent=4, lag=9, seconds=[0.5, 5], only="push")

    merged = _samples(merge_expositions([parent, child]).decode())

    assert merged[("demo_sent_total", (("channel", "email"),))] == 7
    assert merged[("demo_sent_total", (("channel", "sms"),))] == 1
    assert merged[("demo_sent_total", (("channel", "push"),))] == 1
    assert merged[("demo_lag", ())] == 7
    assert merged[("demo_seconds_count", ())] == 3
    assert merged[("demo_seconds_bucket", (("le", "0.1"),))] == 1
    assert merged[("demo_seconds_bucket", (("le", "1.0"),))] == 2
    assert merged[("demo_seconds_bucket", (("le", "+Inf"),))] == 3
    assert merged[("demo_seconds_sum", ())] == 5.55


def test_the_created_timestamp_is_the_earlier_one() -> None:
    def text(value: int, created: int) -> str:  # as prometheus_client writes a counter
        return (
            f'# HELP demo_total help\n# TYPE demo_total counter\ndemo_total{{a="1"}} {value}\n'
            "# HELP demo_created help\n# TYPE demo_created gauge\n"
            f'demo_created{{a="1"}} {created}\n'
        )

    merged = _samples(merge_expositions([text(2, 200), text(1, 100)]).decode())

    assert merged[("demo_total", (("a", "1"),))] == 3
    assert merged[("demo_created", (("a", "1"),))] == 100


def test_one_text_comes_back_unchanged() -> None:
    text = _process(sent=2, lag=1, seconds=[0.2], only="sms")

    assert merge_expositions([text]).decode() == text
