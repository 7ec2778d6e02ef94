"""One /metrics text out of several processes' (`herald serve` and its consumer process).

Counters, histograms and summaries are added up series by series, as Prometheus would sum
them; a gauge series both have keeps the first text's value (``process_*`` gauges describe the
process that serves /metrics); a ``_created`` timestamp keeps the earlier one.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

_ADDED = frozenset({"counter", "histogram", "summary"})


class _Families:
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> list[Metric]:
        return self.families


def merge_expositions(texts: Iterable[str]) -> bytes:
    merged: dict[str, Metric] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            into = merged.setdefault(family.name, family)
            if into is not family:
                _add(into, family)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(merged.values()))
    return generate_latest(registry)


def _add(into: Metric, other: Metric) -> None:
    index = {(s.name, tuple(sorted(s.labels.items()))): i for i, s in enumerate(into.samples)}
    for sample in other.samples:
        at = index.get((sample.name, tuple(sorted(sample.labels.items()))))
        if at is None:
            into.samples.append(sample)
            continue
        mine = into.samples[at]
        if sample.name.endswith("_created"):
            into.samples[at] = mine._replace(value=min(mine.value, sample.value))
        elif into.type in _ADDED:
            into.samples[at] = mine._replace(value=mine.value + sample.value)
