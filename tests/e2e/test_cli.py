"""The `herald` command: clear errors for bad configuration, and `migrate`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.herald_process import HeraldProcess

pytestmark = pytest.mark.slow


def herald(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    return subprocess.run(
        [sys.executable, "-m", "herald", *args],
        env=clean | env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HERALD_DATABASE_URL": "mysql://db/herald"}, "HERALD_DATABASE_URL: unsupported database"),
        ({"HERALD_PORT": "eighty"}, "HERALD_PORT"),
        ({"HERALD_BUS": "carrier-pigeon"}, "HERALD_BUS"),
        ({"HERALD_SMTP_URL": "http://mail"}, "HERALD_SMTP_URL must start with smtp://"),
        (
            {"HERALD_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"},
            "cannot reach the database",
        ),
    ],
)
def test_bad_configuration_is_one_clear_line(
    env: dict[str, str], message: str, tmp_path: Path
) -> None:
    result = herald("serve", "--port", "0", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_taken_port_is_reported(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = herald("serve", "--port", str(port), env={}, cwd=tmp_path)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


@pytest.mark.postgres
def test_postgres_needs_migrate_then_serves(blank_pg_url: str, tmp_path: Path) -> None:
    env = {"HERALD_DATABASE_URL": blank_pg_url}
    refused = herald("serve", "--port", "0", env=env, cwd=tmp_path)
    assert refused.returncode == 2
    assert "run `herald migrate`" in refused.stderr

    migrated = herald("migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "database at revision 0001" in migrated.stdout
    assert herald("migrate", env=env, cwd=tmp_path).returncode == 0  # again: nothing to do

    server = HeraldProcess(tmp_path, env).start()
    try:
        assert httpx.get(f"{server.url}/readyz").status_code == 200
    finally:
        server.stop()
