"""Draw the suite's result as one PNG: throughput and latency per configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on a server; must precede pyplot

import matplotlib.pyplot as plt


def _bars(ax: Any, labels: list[str], series: dict[str, list[float]]) -> None:
    width = 0.8 / len(series)
    for k, (name, values) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(labels))]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.legend(fontsize=8, loc="upper left")


def draw(result: dict[str, Any], path: Path) -> None:
    runs = [r for r in result["runs"] if "error" not in r]
    labels = [r["configuration"].replace("herald ", "herald\n") for r in runs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))

    _bars(
        left,
        labels,
        {
            "delivered/s (first POST -> last SMTP arrival)": [r["per_second"] for r in runs],
            "accepted/s (POST 202s)": [r["accept_per_second"] for r in runs],
        },
    )
    smtp = result["limits"].get("smtp", {}).get("per_second")
    if smtp:
        left.axhline(smtp, color="grey", linestyle="--", linewidth=1)
        left.annotate(
            f"SMTP sink limit, 1 connection: {smtp}/s",
            (0.01, smtp),
            xycoords=("axes fraction", "data"),
            fontsize=8,
            va="bottom",
        )
        left.set_ylim(0, smtp * 1.15)
    left.set_ylabel("notifications per second")
    left.set_title("Throughput (higher is better)")

    _bars(
        right,
        labels,
        {
            "POST p50": [r["post_ms"]["p50"] for r in runs],
            "POST p99": [r["post_ms"]["p99"] for r in runs],
            "POST -> SMTP p50": [r["e2e_ms"]["p50"] for r in runs],
            "POST -> SMTP p99": [r["e2e_ms"]["p99"] for r in runs],
        },
    )
    right.set_ylabel("milliseconds")
    right.set_title("Latency (lower is better)")

    kafka = result["limits"].get("kafka", {}).get("per_second")
    note = f"; Kafka raw produce {kafka}/s" if kafka else ""
    fig.suptitle(
        f"{result['count']} notifications per configuration, {result['concurrency']} concurrent"
        f" POSTs, {result['machine']['cpus']} CPUs{note}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
