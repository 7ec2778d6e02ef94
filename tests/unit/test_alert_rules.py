"""The alert rules of deploy/prometheus/alerts.yml, run by Prometheus' own rule engine on the
series Herald exports (tests/prometheus/alerts_test.yml): each alert fires when it should, with
the text an on-call engineer reads."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.services import unavailable

ROOT = Path(__file__).resolve().parents[2]


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        unavailable("promtool", "Debian package prometheus (make test installs it as root)")
    assert found is not None
    return found


def test_the_alert_rules_are_valid() -> None:
    done = subprocess.run(
        [promtool(), "check", "rules", str(ROOT / "deploy/prometheus/alerts.yml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_alert_rules_pass_their_unit_tests() -> None:
    done = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yml"],
        cwd=ROOT / "tests/prometheus",
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboards_error_panels_show_0_on_a_healthy_api(tmp_path: Path) -> None:
    """No 5xx yet: the panels show 0, not "No data" (an empty ratio looks like a broken
    scrape). Each panel's query is evaluated by promtool on series with 2xx answers only."""
    dashboard = json.loads((ROOT / "deploy/grafana/herald.json").read_text())
    queries = [
        target["expr"].replace("$__rate_interval", "5m")
        for panel in dashboard["panels"]
        if "5xx" in panel.get("title", "")
        for target in panel.get("targets", [])
    ]
    assert len(queries) == 3
    ok = 'herald_http_requests_total{method="POST",route="/api/v1/notifications",code="202"}'
    tests = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": ok, "values": "0+60x20"}],
                "promql_expr_test": [
                    {
                        "expr": query,
                        "eval_time": "15m",
                        "exp_samples": [
                            {"labels": '{route="/api/v1/notifications"}', "value": 0}
                            if "by (route)" in query
                            else {"labels": "{}", "value": 0}
                        ],
                    }
                    for query in queries
                ],
            }
        ],
    }
    (tmp_path / "panels_test.yml").write_text(yaml.safe_dump(tests))
    done = subprocess.run(
        [promtool(), "test", "rules", "panels_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
