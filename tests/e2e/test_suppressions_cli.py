"""`herald suppressions` through the real command: what it adds the API lists and routing
skips; bad input is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_cli import herald

pytestmark = pytest.mark.slow


def test_addresses_are_added_listed_and_removed(tmp_path: Path) -> None:
    env = {"HERALD_DATABASE_URL": f"sqlite:///{tmp_path / 'herald.db'}"}
    added = herald(
        "suppressions",
        "add",
        "email",
        "Ann@Example.com",
        "--detail",
        "old list",
        env=env,
        cwd=tmp_path,
    )
    assert added.returncode == 0, added.stderr
    assert "suppressed: email Ann@Example.com" in added.stdout
    again = herald("suppressions", "add", "email", "ann@example.com", env=env, cwd=tmp_path)
    assert "already suppressed" in again.stdout
    other = herald(
        "suppressions", "add", "sms", "+14155550100", "--tenant", "acme", env=env, cwd=tmp_path
    )
    assert other.returncode == 0, other.stderr

    listed = herald("suppressions", "list", env=env, cwd=tmp_path).stdout.splitlines()
    assert len(listed) == 2  # the default tenant's only
    assert listed[0].split()[:3] == ["email", "ann@example.com", "manual"]
    assert listed[0].endswith("old list")
    assert listed[-1] == "1 suppressed address(es)"

    removed = herald("suppressions", "remove", "email", "ANN@example.com", env=env, cwd=tmp_path)
    assert removed.returncode == 0, removed.stderr
    gone = herald("suppressions", "remove", "email", "ann@example.com", env=env, cwd=tmp_path)
    assert gone.returncode == 2
    assert "email ann@example.com is not suppressed" in gone.stderr
    left = herald("suppressions", "list", "--tenant", "acme", env=env, cwd=tmp_path).stdout
    assert "+14155550100" in left


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add", "fax", "123"), "channel: 'fax' is none of"),
        (("add", "email", "nobody"), "address: 'nobody' is not an email address"),
        (("add", "email", "a@example.com", "--reason", "why"), "--reason: 'why' is none of"),
        (("add", "email", "a@example.com", "--tenant", "Not A Tenant"), "--tenant"),
    ],
)
def test_bad_input_is_one_clear_line(args: tuple[str, ...], message: str, tmp_path: Path) -> None:
    env = {"HERALD_DATABASE_URL": f"sqlite:///{tmp_path / 'herald.db'}"}
    result = herald("suppressions", *args, env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
