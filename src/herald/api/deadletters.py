"""/api/v1/dead-letters: inspect, replay and purge what could not be delivered."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from herald.api.auth import Admin
from herald.api.context import runtime_of
from herald.api.limits import enforce_rate_limit
from herald.api.pages import decode_cursor, encode_cursor
from herald.api.schemas import (
    BulkReplayOut,
    DeadLetterDetail,
    DeadLetterOut,
    DeadLetterPage,
    DeadLetterSelection,
    ErrorOut,
    PurgeOut,
    ReplayOut,
    ReplaySelection,
    Timestamp,
)
from herald.errors import NotFoundError
from herald.store import deadletters
from herald.store.deadletters import Filters

router = APIRouter(
    prefix="/api/v1/dead-letters",
    tags=["dead letters"],
    dependencies=[Depends(enforce_rate_limit)],
)


@router.get("", response_model=DeadLetterPage, summary="Dead letters, newest first")
async def list_dead_letters(
    request: Request,
    principal: Admin,
    status: Literal["DEAD", "REPLAYED"] | None = None,
    kind: Literal["delivery", "message", "event", "status_webhook"] | None = None,
    reason: Literal["permanent", "exhausted", "poison", "refused"] | None = None,
    channel: Annotated[str | None, Query(max_length=32)] = None,
    provider: Annotated[str | None, Query(max_length=64)] = None,
    error_class: Annotated[str | None, Query(max_length=100)] = None,
    since: Timestamp | None = None,
    until: Timestamp | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> DeadLetterPage:
    filters = Filters(
        status, kind, reason, channel, provider, error_class, since, until, principal.tenant
    )
    before_id = decode_cursor(cursor) if cursor else None
    async with runtime_of(request).db.read() as conn:
        letters = await deadletters.list_page(conn, filters, limit=limit + 1, before_id=before_id)
    page, more = letters[:limit], len(letters) > limit
    return DeadLetterPage(
        items=[DeadLetterOut.of(letter) for letter in page],
        next_cursor=encode_cursor(page[-1].id) if more else None,
    )


@router.get(
    "/{letter_id}",
    response_model=DeadLetterDetail,
    responses={404: {"model": ErrorOut}},
    summary="One dead letter, with the payload that failed",
)
async def get_dead_letter(letter_id: str, request: Request, principal: Admin) -> DeadLetterDetail:
    async with runtime_of(request).db.read() as conn:
        letter = await deadletters.get(conn, letter_id, tenant=principal.tenant)
    if letter is None:
        raise NotFoundError(f"dead letter {letter_id} not found")
    return DeadLetterDetail.of(letter)


@router.post(
    "/{letter_id}/replay",
    response_model=ReplayOut,
    status_code=202,
    responses={
        200: {"model": ReplayOut, "description": "Nothing to do (already replayed)"},
        404: {"model": ErrorOut},
    },
    summary="Deliver it again (idempotent: a second replay does nothing)",
)
async def replay_dead_letter(letter_id: str, request: Request, principal: Admin) -> JSONResponse:
    outcome = await runtime_of(request).replayer.replay(letter_id, tenant=principal.tenant)
    if outcome.detail == "not found":
        raise NotFoundError(f"dead letter {letter_id} not found")
    body = ReplayOut(**asdict(outcome))
    return JSONResponse(body.model_dump(), status_code=202 if outcome.replayed else 200)


@router.post(
    "/replay",
    response_model=BulkReplayOut,
    summary="Replay every dead letter matching a selection (spaced out; dry_run to preview)",
)
async def replay_matching(
    selection: ReplaySelection, request: Request, principal: Admin
) -> BulkReplayOut:
    matched, letters, outcomes = await runtime_of(request).replayer.replay_matching(
        selection.filters(principal.tenant), limit=selection.limit, dry_run=selection.dry_run
    )
    items = (
        [
            ReplayOut(dead_letter_id=letter.id, replayed=False, detail="would replay")
            for letter in letters
        ]
        if selection.dry_run
        else [ReplayOut(**asdict(o)) for o in outcomes]
    )
    return BulkReplayOut(
        matched=matched,
        selected=len(letters),
        dry_run=selection.dry_run,
        replayed=sum(item.replayed for item in items),
        items=items,
    )


@router.delete(
    "/{letter_id}",
    status_code=204,
    responses={404: {"model": ErrorOut}},
    summary="Purge one dead letter",
)
async def purge_dead_letter(letter_id: str, request: Request, principal: Admin) -> Response:
    async with runtime_of(request).db.write() as conn:
        if await deadletters.get(conn, letter_id, tenant=principal.tenant) is None:
            raise NotFoundError(f"dead letter {letter_id} not found")
        await deadletters.purge_ids(conn, [letter_id])
    return Response(status_code=204)


@router.post(
    "/purge",
    response_model=PurgeOut,
    summary="Purge every dead letter matching a selection (dry_run to count them)",
)
async def purge_matching(
    selection: DeadLetterSelection, request: Request, principal: Admin
) -> PurgeOut:
    filters = selection.filters(principal.tenant)
    async with runtime_of(request).db.write() as conn:
        if selection.dry_run:
            return PurgeOut(dry_run=True, purged=await deadletters.count(conn, filters))
        purged = await deadletters.purge(conn, filters)
    return PurgeOut(dry_run=False, purged=purged)
