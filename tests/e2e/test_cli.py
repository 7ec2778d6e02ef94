"""The `herald` command: clear errors for bad configuration, and `migrate`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from herald.store.migrate import head_revision
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
    assert f"database at revision {head_revision()}" in migrated.stdout
    assert herald("migrate", env=env, cwd=tmp_path).returncode == 0  # again: nothing to do

    server = HeraldProcess(tmp_path, env).start()
    try:
        assert httpx.get(f"{server.url}/readyz").status_code == 200
    finally:
        server.stop()


async def _file_a_dead_letter(url: str) -> str:
    from herald.bus.base import Message
    from herald.bus.topics import Topics
    from herald.clock import utcnow
    from herald.errors import PoisonMessageError
    from herald.pipeline.deadletter import DeadLetterOffice
    from herald.pipeline.unit import Units
    from herald.store.database import Database
    from herald.wakeup import Wakeup

    db = Database(url)
    office = DeadLetterOffice(Units(db, Wakeup()), Topics())
    poison = Message("herald.deliveries.email", 1, 42, "k", b"\xff not json", {}, utcnow())
    letter_id = await office.poison(poison, PoisonMessageError("cannot decode"))
    await db.close()
    return letter_id


def test_dlq_commands(fresh_sqlite_url: str, tmp_path: Path) -> None:
    from tests.services import run_sync

    letter_id = run_sync(_file_a_dead_letter(fresh_sqlite_url))
    env = {"HERALD_DATABASE_URL": fresh_sqlite_url}

    listed = herald("dlq", "list", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert letter_id in listed.stdout
    assert "poison" in listed.stdout
    assert "1 shown of 1 matching" in listed.stdout

    shown = herald("dlq", "show", letter_id, env=env, cwd=tmp_path)
    assert '"source": "herald.deliveries.email[1]@42"' in shown.stdout

    assert (
        f"{letter_id}  replayed" in herald("dlq", "replay", letter_id, env=env, cwd=tmp_path).stdout
    )
    again = herald("dlq", "replay", letter_id, env=env, cwd=tmp_path)
    assert f"{letter_id}  already replayed" in again.stdout

    assert "0 shown of 0 matching" in herald("dlq", "list", env=env, cwd=tmp_path).stdout
    counted = herald("dlq", "purge", "--all", "--status", "any", "--dry-run", env=env, cwd=tmp_path)
    assert "would purge 1" in counted.stdout
    assert (
        "purged 1"
        in herald("dlq", "purge", "--all", "--status", "any", env=env, cwd=tmp_path).stdout
    )

    refused = herald("dlq", "replay", env=env, cwd=tmp_path)
    assert refused.returncode == 2
    assert "give dead letter ids, or --all" in refused.stderr


@pytest.mark.parametrize(
    "command", [(), ("serve",), ("dlq", "replay"), ("keys", "create")], ids=" ".join
)
def test_help_names_a_type_only_where_an_option_takes_a_value(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    done = herald(*command, "--help", env={}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "<bool>" not in done.stdout  # flags take no value
    help_line = next(line for line in done.stdout.splitlines() if "--help" in line)
    assert help_line.split() == ["--help", "Show", "this", "message", "and", "exit."]
