from __future__ import annotations

import pytest

from herald.channels.smtp import parse_smtp_url
from herald.config import Settings
from herald.errors import ConfigError
from herald.store.database import driver_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///./herald.db", "sqlite+pysqlite:///./herald.db"),
        ("sqlite:////var/lib/herald.db", "sqlite+pysqlite:////var/lib/herald.db"),
        ("postgresql://u:p@db:5432/herald", "postgresql+asyncpg://u:***@db:5432/herald"),
        ("postgres://u@db/herald", "postgresql+asyncpg://u@db/herald"),
        ("postgresql+psycopg2://u@db/herald", "postgresql+asyncpg://u@db/herald"),
        ("postgresql+asyncpg://u@db/herald", "postgresql+asyncpg://u@db/herald"),
        (
            "postgresql://u@db/herald?sslmode=require&connect_timeout=5",
            "postgresql+asyncpg://u@db/herald?ssl=require&timeout=5",
        ),
    ],
)
def test_database_urls_get_the_driver_herald_uses(given: str, expected: str) -> None:
    assert str(driver_url(given)) == expected


@pytest.mark.parametrize(
    ("given", "complaint"),
    [
        ("mysql://u@db/herald", "unsupported database"),
        ("sqlite://", "needs a file path"),
        ("sqlite:///:memory:", "needs a file path"),
        ("not a url", "not a database URL"),
    ],
)
def test_bad_database_urls_are_refused(given: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        driver_url(given)


def test_smtp_url_with_credentials_and_defaults() -> None:
    target = parse_smtp_url("smtp://user%40corp:p%3Ass@mail.example.com")
    assert (target.host, target.port) == ("mail.example.com", 25)
    assert (target.username, target.password) == ("user@corp", "p:ss")
    assert target.use_tls is False
    assert target.start_tls is None  # upgrade when offered
    assert "p:ss" not in str(target)


def test_smtps_url_uses_implicit_tls() -> None:
    target = parse_smtp_url("smtps://relay:2465?verify=false")
    assert (target.port, target.use_tls, target.start_tls, target.validate_certs) == (
        2465,
        True,
        False,
        False,
    )


def test_smtp_starttls_options() -> None:
    assert parse_smtp_url("smtp://h:587?starttls=require").start_tls is True
    assert parse_smtp_url("smtp://h:1025?starttls=off").start_tls is False


@pytest.mark.parametrize(
    "url",
    ["http://h", "smtp://", "smtp://h:notaport", "smtp://h?starttls=maybe", "smtp://h?bogus=1"],
)
def test_bad_smtp_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="HERALD_SMTP_URL"):
        parse_smtp_url(url)


def test_email_backend_follows_smtp_url() -> None:
    assert Settings().resolved_email_backend == "console"
    assert Settings(smtp_url="smtp://h:25").resolved_email_backend == "smtp"
    assert (
        Settings(smtp_url="smtp://h:25", email_backend="console").resolved_email_backend
        == "console"
    )
    with pytest.raises(ConfigError):
        _ = Settings(email_backend="smtp").resolved_email_backend


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_DATABASE_URL", "postgresql://db/herald")
    monkeypatch.setenv("HERALD_IDEMPOTENCY_TTL_SECONDS", "60")
    monkeypatch.setenv("HERALD_LOG_LEVEL", "debug")
    settings = Settings()
    assert settings.database_url == "postgresql://db/herald"
    assert settings.idempotency_ttl_seconds == 60
    assert settings.log_level == "DEBUG"
