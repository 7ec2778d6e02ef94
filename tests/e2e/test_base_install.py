"""`pip install herald` with no extras, then `herald serve`: the default deployment starts, and
a channel whose library an extra brings is left out, said so, and refused by name."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.herald_process import HeraldProcess
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SEED = {"recipient": "a@example.com", "subject": "Welcome", "message": "Welcome to Herald"}


@pytest.fixture(scope="module")
def base_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A virtualenv with Herald installed from this checkout and nothing else."""
    venv = tmp_path_factory.mktemp("base-install") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = [python, "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt")]
    subprocess.run([*install, str(ROOT)], check=True, timeout=900)
    for extra in ("apprise", "asyncpg", "confluent_kafka", "redis", "pywebpush"):
        found = subprocess.run([python, "-c", f"import {extra}"], capture_output=True)
        assert found.returncode != 0, f"{extra} came with the base install"
    return python


@pytest.fixture
def herald(base_python: str, smtp_sink: SmtpSink, tmp_path: Path) -> Iterator[HeraldProcess]:
    env = {"HERALD_SMTP_URL": smtp_sink.url, "HERALD_SQLITE_SYNCHRONOUS": "NORMAL"}
    process = HeraldProcess(tmp_path, env, python=base_python).start()
    yield process
    process.stop()


async def test_a_base_install_serves_and_names_what_it_left_out(
    herald: HeraldProcess, smtp_sink: SmtpSink
) -> None:
    async with httpx.AsyncClient(base_url=herald.url) as http:
        sent = await http.post("/api/v1/notifications", json=SEED)
        refused = await http.post(
            "/api/v1/notifications", json={**SEED, "channels": ["email", "apprise"]}
        )
        ready = await http.get("/readyz")
        [mail] = await smtp_sink.wait_for(1)

    assert sent.status_code == 202
    assert mail.notification_id == sent.json()["id"]
    why = "the apprise library is not installed: pip install 'herald[apprise]'"
    assert refused.status_code == 422
    assert refused.json()["errors"] == [
        {"field": "channels[1]", "message": f"apprise is unavailable: {why}"}
    ]
    assert ready.status_code == 200
    assert ready.json()["unavailable_channels"] == {"apprise": why}
    warned = [e for e in herald.events() if e["event"] == "channel.unavailable"]
    assert [(e["channel"], e["reason"]) for e in warned] == [("apprise", why)]
