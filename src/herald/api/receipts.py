"""Receipts endpoints: providers report what became of a message after they accepted it.

Twilio's callbacks and SendGrid's and Mailgun's events take no API key: the provider proves a
receipt is its own by signing it as it documents (Twilio: ``X-Twilio-Signature``, keyed with the
provider's auth token; SendGrid: ECDSA, checked with the provider's webhook verification key;
Mailgun: HMAC-SHA256 with the provider's webhook signing key). An unsigned or forged receipt
is a 403 and changes nothing (not counted against its address: providers post from addresses
all their customers share), bodies are bounded, and the same receipt twice is applied once
(pipeline/stages/receipts). A receipt is stored before the answer: a 200 means it is kept.

Bounces by mail reach ``herald inbound``, or this API from an MTA that pipes them here
(``/api/v1/receipts/mail``, the raw message): that takes an admin key of the operator's
tenant, since a report may concern any tenant's delivery.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, Final, NoReturn, TypeVar
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ValidationError

from herald.api.auth import Admin
from herald.api.context import runtime_of
from herald.api.errors import API_ERRORS, FieldError
from herald.api.input_safety import body_problem, parse_json
from herald.api.limits import enforce_rate_limit
from herald.api.schemas import ErrorOut
from herald.channels import bounce_mail, mailgun_events, sendgrid_events, twilio_receipts
from herald.channels.mailgun import MailgunConfig
from herald.channels.sendgrid import SendGridConfig
from herald.channels.twilio import RECEIPTS_PATH, TwilioConfig
from herald.channels.twilio_signature import HEADER, valid
from herald.domain.receipts import DELIVERY_ID, Receipt, ReceiptKind, ReceiptOutcome
from herald.errors import ForbiddenError, NotFoundError
from herald.tenancy import DEFAULT_TENANT

router = APIRouter(tags=["receipts"])

MAX_FORM_BYTES: Final = 16_384  # a Twilio status callback is well under 1 KiB
MAX_EVENTS_BYTES: Final = 1_048_576  # SendGrid posts up to a few hundred events at once
SENDGRID_PATH: Final = "/api/v1/receipts/sendgrid/{provider}"
MAILGUN_PATH: Final = "/api/v1/receipts/mailgun/{provider}"
Config = TypeVar("Config", TwilioConfig, SendGridConfig, MailgunConfig)

# A provider's name as HERALD_PROVIDERS spells it (any printable text).
ProviderName = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
DeliveryId = Annotated[str, Query(min_length=1, max_length=36, pattern=rf"^{DELIVERY_ID.pattern}$")]


class ReceiptTaken(BaseModel):
    outcome: ReceiptOutcome


class EventsTaken(BaseModel):
    outcomes: list[ReceiptOutcome]  # one per event about a message Herald sent, in order


class MailReceipt(BaseModel):
    delivery_id: str
    kind: ReceiptKind
    outcome: ReceiptOutcome


class MailReceipts(BaseModel):
    receipts: list[MailReceipt]


_RAW_MESSAGE: dict[str, Any] = {
    "required": True,
    "content": {"message/rfc822": {"schema": {"type": "string", "format": "binary"}}},
}


_ANSWERS: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorOut, "description": "Unsigned, or not signed by the provider"},
    404: {"model": ErrorOut, "description": "No such provider of this kind"},
    **{s: API_ERRORS[s] for s in (400, 413, 422, 429, 503)},
}


@router.post(
    "/api/v1/receipts/mail",
    response_model=MailReceipts,
    responses={
        **API_ERRORS,
        403: {"model": ErrorOut, "description": "Not an admin key of the operator's tenant"},
    },
    dependencies=[Depends(enforce_rate_limit)],
    openapi_extra={"requestBody": _RAW_MESSAGE},
)
async def bounce_by_mail(request: Request, principal: Admin) -> MailReceipts:
    """A bounce (RFC 3464) or complaint (RFC 5965) as the mail server received it, the raw
    message as the body; for an MTA that pipes the bounce domain's mail here instead of
    running `herald inbound`. Mail that is no report is taken and carries no receipt."""
    if principal.tenant != DEFAULT_TENANT:
        raise ForbiddenError("only the operator's keys (the default tenant's) may post bounces")
    runtime = runtime_of(request)
    body = await request.body()
    if len(body) > runtime.settings.inbound_max_bytes:
        raise FieldError("body", "larger than HERALD_INBOUND_MAX_BYTES", 413)
    found = bounce_mail.receipts_in(body, bounce_domain=runtime.settings.bounce_domain)
    outcomes = await runtime.receipts.take(found, signed=False) if found else []
    return MailReceipts(
        receipts=[
            MailReceipt(delivery_id=r.delivery_id, kind=r.kind, outcome=o)
            for r, o in zip(found, outcomes, strict=True)
        ]
    )


@router.post(RECEIPTS_PATH, response_model=ReceiptTaken, responses=_ANSWERS)
async def twilio_status_callback(
    request: Request, provider: ProviderName, delivery: DeliveryId
) -> ReceiptTaken:
    """Twilio's status callback for one message (``StatusCallback``, which Herald sets on
    every message it sends through this provider): form fields, signed by Twilio."""
    config = _config(request, provider, TwilioConfig)
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise FieldError("body", f"a status callback is at most {MAX_FORM_BYTES} bytes", 413)
    try:
        form = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FieldError("body", "must be a form (application/x-www-form-urlencoded)") from exc
    token = config.auth_token.get_secret_value()
    if not valid(token, _called_url(request), form, request.headers.get(HEADER, "")):
        raise ForbiddenError(f"{HEADER} does not match: not signed by this Twilio account")
    try:
        receipt = twilio_receipts.receipt(provider, delivery, dict(form))
    except ValueError as exc:
        raise FieldError(str(exc), "is required") from exc
    (outcome,) = await runtime_of(request).receipts.take([receipt])
    return ReceiptTaken(outcome=outcome)


@router.post(SENDGRID_PATH, response_model=EventsTaken, responses=_ANSWERS)
async def sendgrid_event_webhook(request: Request, provider: ProviderName) -> EventsTaken:
    """SendGrid's Event Webhook (set its URL to this, with the provider's name, and turn on
    the Signed Event Webhook): a JSON array of events, signed by SendGrid."""
    config = _config(request, provider, SendGridConfig)
    body = await _bounded_body(request)
    signature = request.headers.get(sendgrid_events.SIGNATURE_HEADER, "")
    timestamp = request.headers.get(sendgrid_events.TIMESTAMP_HEADER, "")
    key = config.webhook_verification_key
    if key is None or not sendgrid_events.verified(key, timestamp, body, signature):
        _forged(f"{sendgrid_events.SIGNATURE_HEADER}: not signed by SendGrid")
    events = _json(body)
    found = _parsed(lambda: sendgrid_events.receipts(provider, events))
    return EventsTaken(outcomes=await _take(request, found))


@router.post(MAILGUN_PATH, response_model=EventsTaken, responses=_ANSWERS)
async def mailgun_webhook(request: Request, provider: ProviderName) -> EventsTaken:
    """Mailgun's webhooks (set each event's URL to this, with the provider's name): one
    event as JSON, signed with the provider's webhook signing key."""
    config = _config(request, provider, MailgunConfig)
    body = await _bounded_body(request)
    try:
        post = parse_json(body)
    except ValueError:
        post = None  # not Mailgun's: refused below
    if post is not None and (problem := body_problem(post)) is not None:
        raise FieldError(*problem)
    key = config.webhook_signing_key
    if key is None or not mailgun_events.verified(key.get_secret_value(), post, time.time()):
        _forged("signature: not signed with the provider's webhook_signing_key")
    assert isinstance(post, dict)  # verified() looked inside it
    found = _parsed(lambda: mailgun_events.receipts(provider, post))
    return EventsTaken(outcomes=await _take(request, found))


def _json(body: bytes) -> Any:
    """A signed body as JSON, or a 422 naming what in it cannot be read or stored."""
    try:
        parsed = parse_json(body)
    except ValueError as exc:
        raise FieldError("body", f"not valid JSON: {exc}") from exc
    if (problem := body_problem(parsed)) is not None:
        raise FieldError(*problem)
    return parsed


async def _bounded_body(request: Request) -> bytes:
    body = await request.body()
    if len(body) > MAX_EVENTS_BYTES:
        raise FieldError("body", f"an event post is at most {MAX_EVENTS_BYTES} bytes", 413)
    return body


def _forged(why: str) -> NoReturn:
    """A post the provider did not sign: refused. Not counted against the address it came
    from: providers post from addresses all their customers share, and a signature cannot
    be guessed anyway (a limit would let anyone with an account of theirs block ours)."""
    raise ForbiddenError(why)


def _parsed(read: Callable[[], list[Receipt]]) -> list[Receipt]:
    try:
        return read()
    except ValueError as exc:
        raise FieldError("body", str(exc)) from exc


async def _take(request: Request, found: list[Receipt]) -> list[ReceiptOutcome]:
    return await runtime_of(request).receipts.take(found) if found else []


def _config(request: Request, provider: str, model: type[Config]) -> Config:
    """The provider's configuration, if it is one of ``model``'s type."""
    raw = runtime_of(request).settings.providers.get(provider)
    kind = model.model_fields["type"].default
    if raw is None or raw.get("type") != kind:
        raise NotFoundError(f"no {kind} provider named {provider!r}")
    try:
        return model.model_validate(raw)
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
