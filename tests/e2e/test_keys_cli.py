"""`herald keys` and HERALD_AUTH, through real processes: the first run needs no key, the
first key turns keys on, a revoked key stops working, open mode stays on loopback."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_cli import herald
from tests.herald_process import HeraldProcess

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("command", ["serve", "api"])
def test_open_mode_is_refused_off_loopback(command: str, tmp_path: Path) -> None:
    result = herald(
        command, "--host", "0.0.0.0", "--port", "0", env={"HERALD_AUTH": "open"}, cwd=tmp_path
    )
    assert result.returncode == 2
    assert "HERALD_AUTH=open is only allowed on a loopback address" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_key_commands_are_one_clear_line(tmp_path: Path) -> None:
    for args, message in [
        (("--name", "x", "--scopes", "root"), "--scopes: unknown ['root']"),
        (("--name", "x", "--tenant", "Not A Tenant"), "--tenant"),
    ]:
        result = herald("keys", "create", *args, env={}, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
    missing = herald("keys", "revoke", "no-such-key", env={}, cwd=tmp_path)
    assert missing.returncode == 2
    assert "key no-such-key not found" in missing.stderr


def test_keys_from_the_cli_turn_auth_on_for_serve(tmp_path: Path) -> None:
    env = {"HERALD_DATABASE_URL": f"sqlite:///{tmp_path / 'herald.db'}"}
    server = HeraldProcess(tmp_path, env)
    # No key yet: the first run is open, and says so.
    server.start()
    try:
        assert httpx.get(f"{server.url}/api/v1/notifications").status_code == 200
        assert "auth.open" in server.log()
    finally:
        server.stop()

    made = herald(
        "keys",
        "create",
        "--name",
        "ops",
        "--scopes",
        "read",
        "--tenant",
        "acme",
        env=env,
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("hk_")
    assert "shown once" in made.stderr
    listed = herald("keys", "list", env=env, cwd=tmp_path)
    assert secret not in listed.stdout
    assert secret[:10] in listed.stdout
    assert "acme" in listed.stdout
    key_id = listed.stdout.split()[0]

    server = HeraldProcess(tmp_path, env, name="herald-2")
    server.start()
    try:
        url = f"{server.url}/api/v1/notifications"
        assert httpx.get(url).status_code == 401
        headers = {"Authorization": f"Bearer {secret}"}
        assert httpx.get(url, headers=headers).status_code == 200
        assert "auth.open" not in server.log()
        revoked = herald("keys", "revoke", key_id, env=env, cwd=tmp_path)
        assert revoked.returncode == 0, revoked.stderr
        deadline = time.monotonic() + 15  # each process trusts a key for a few seconds
        while httpx.get(url, headers=headers).status_code != 401:
            assert time.monotonic() < deadline, "a revoked key kept working"
            time.sleep(0.2)
        assert secret not in server.log()
    finally:
        server.stop()
