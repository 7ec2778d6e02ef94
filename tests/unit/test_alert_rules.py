"""The alert rules of deploy/prometheus/alerts.yml, run by Prometheus' own rule engine on the
series Herald exports (tests/prometheus/alerts_test.yml): each alert fires when it should, with
the text an on-call engineer reads."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

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
