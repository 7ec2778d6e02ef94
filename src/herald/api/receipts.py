"""Receipts endpoints: providers report what became of a message after they accepted it.

No API key: a provider proves a receipt is its own by signing it as it documents (Twilio:
``X-Twilio-Signature``, keyed with the provider's auth token from HERALD_PROVIDERS). An
unsigned or forged receipt is a 403 and changes nothing; forgeries are limited per client
address (api/failures), bodies are bounded, and the same receipt twice is applied once
(pipeline/stages/receipts). A receipt is stored before the answer: a 200 means it is kept.
"""

from __future__ import annotations

from typing import Annotated, Any, Final
from urllib.parse import parse_qsl

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ValidationError

from herald.api.context import runtime_of
from herald.api.errors import API_ERRORS, FieldError
from herald.api.failures import AddressFailures
from herald.api.schemas import ErrorOut
from herald.channels import twilio_receipts
from herald.channels.twilio import RECEIPTS_PATH, TwilioConfig
from herald.channels.twilio_signature import HEADER, valid
from herald.domain.receipts import ReceiptOutcome
from herald.errors import ForbiddenError, NotFoundError

router = APIRouter(tags=["receipts"])

MAX_FORM_BYTES: Final = 16_384  # a Twilio status callback is well under 1 KiB
FORGERIES = AddressFailures("receipts")

# A provider's name as HERALD_PROVIDERS spells it (any printable text).
ProviderName = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
DeliveryId = Annotated[str, Query(min_length=1, max_length=36, pattern=r"^[0-9A-Za-z-]+$")]


class ReceiptTaken(BaseModel):
    outcome: ReceiptOutcome


_ANSWERS: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorOut, "description": "Unsigned, or not signed by the provider"},
    404: {"model": ErrorOut, "description": "No such provider of this kind"},
    **{s: API_ERRORS[s] for s in (400, 413, 422, 429, 503)},
}


@router.post(RECEIPTS_PATH, response_model=ReceiptTaken, responses=_ANSWERS)
async def twilio_status_callback(
    request: Request, provider: ProviderName, delivery: DeliveryId
) -> ReceiptTaken:
    """Twilio's status callback for one message (``StatusCallback``, which Herald sets on
    every message it sends through this provider): form fields, signed by Twilio."""
    await FORGERIES.check(request)
    config = _twilio_config(request, provider)
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise FieldError("body", f"a status callback is at most {MAX_FORM_BYTES} bytes", 413)
    try:
        form = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FieldError("body", "must be a form (application/x-www-form-urlencoded)") from exc
    token = config.auth_token.get_secret_value()
    if not valid(token, _called_url(request), form, request.headers.get(HEADER, "")):
        await FORGERIES.failed(request)
        raise ForbiddenError(f"{HEADER} does not match: not signed by this Twilio account")
    try:
        receipt = twilio_receipts.receipt(provider, delivery, dict(form))
    except ValueError as exc:
        raise FieldError(str(exc), "is required") from exc
    (outcome,) = await runtime_of(request).receipts.take([receipt])
    return ReceiptTaken(outcome=outcome)


def _twilio_config(request: Request, provider: str) -> TwilioConfig:
    raw = runtime_of(request).settings.providers.get(provider)
    if raw is None or raw.get("type") != "twilio":
        raise NotFoundError(f"no Twilio provider named {provider!r}")
    try:
        return TwilioConfig.model_validate(raw)
    except ValidationError as exc:  # the workers refuse to start with it too
        raise NotFoundError(f"provider {provider!r} is not configured correctly") from exc


def _called_url(request: Request) -> str:
    """The URL Twilio was given and called (and signed): Herald's public URL, then the path
    and query as they came, still percent-encoded."""
    public = runtime_of(request).settings.public_url.rstrip("/")
    raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
    raw_query: bytes = request.scope.get("query_string", b"")
    path, query = raw_path.decode("latin-1"), raw_query.decode("latin-1")
    return public + path + (f"?{query}" if query else "")
