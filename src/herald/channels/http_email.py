"""What the email providers behind an HTTP API (SendGrid, Mailgun) share: their configuration's
common fields, and a provider's life (one HTTP client, the sender checked once)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from herald.channels import http
from herald.channels.email_message import check_headers
from herald.observability.logging import get_logger

if TYPE_CHECKING:
    from herald.channels import Dependencies
    from herald.config import Settings

log = get_logger(__name__)


class HttpEmailConfig(BaseModel):
    # hide_input_in_errors: a validation error must not quote the API key back.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    base_url: str
    api_key: SecretStr = Field(min_length=1)
    sender: str | None = None  # default: HERALD_EMAIL_FROM
    timeout_seconds: float = Field(default=10.0, gt=0)
    concurrency: int = Field(default=8, ge=1)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http.http_url(value).rstrip("/")


class HttpEmailProvider:
    """A provider sending email with one POST per message; ``send`` is the subclass's."""

    channel = "email"
    kind: ClassVar[str]  # the provider type, in its log lines and errors

    @classmethod
    def from_config(cls, name: str, config: Any, settings: Settings, deps: Dependencies) -> Self:
        return cls(name, config, sender=config.sender or settings.email_from)

    def __init__(self, name: str, config: HttpEmailConfig, *, sender: str) -> None:
        check_headers([("From", sender)])  # a configured sender that could inject headers
        self.name = name
        self.sender = sender
        self.concurrency = config.concurrency
        self._base_url = config.base_url
        self._http = http.ProviderClient(
            f"{self.kind} provider {name!r}",
            config.timeout_seconds,
            max_connections=config.concurrency,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    async def start(self) -> None:
        self._http.open()
        log.info(f"{self.kind}.configured", provider=self.name, base_url=self._base_url)

    async def close(self) -> None:
        await self._http.close()
