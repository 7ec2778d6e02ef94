"""Accept notifications: store each, its deliveries and its outbox event in one transaction.

Nothing is published from here; the relay does that (or the embedded bus, in the same
transaction). A notification with something left to decide when it is sent (its user's
preferences and quiet hours, a schedule, a channel with a daily cap) goes to the router as a
``notification.requested`` event; a delivery with nothing left to decide (to an inline
recipient, now, on a channel without a cap) is routed here: its job goes straight to its
channel's topic, a hop through the bus and the router fewer. With an Idempotency-Key, the stored
response of the first request is returned for every repeat with the same body. A batch is
one transaction for all the items that could be planned; the others are reported per item.

Staged batches: a batch of at least ``stage_from`` accepted notifications is planned and
answered as any, but stored as one row (its plans and ids, see staged_codec) instead of its
notifications', deliveries', jobs' and journal's rows, and without building their records (see
admitted); the expander (stages/expand.py) writes those out later with ``expand``, and a read
that needs them first with ``catch_up``. Whatever a tenant sends while one of its batches
waits is staged behind it, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from weakref import WeakKeyDictionary

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from herald.bus.base import OutgoingMessage
from herald.bus.topics import Topics
from herald.clock import utcnow
from herald.domain.messages import Content, DeliveryJob, NotificationRequested
from herald.domain.models import NotificationStatus
from herald.errors import IdempotencyKeyReusedError
from herald.ids import uuid7s
from herald.observability import metrics, tracing
from herald.observability.logging import get_logger
from herald.pipeline import staged_codec
from herald.pipeline.admitted import Admitted, admit
from herald.pipeline.envelope import envelope_fields
from herald.pipeline.group_commit import GroupCommit
from herald.pipeline.idempotency_reads import IdempotencyReads
from herald.pipeline.lookups import Lookups
from herald.pipeline.planning import (
    Draft,
    NotificationSpec,
    Plan,
    PlannedDelivery,
    Planner,
    PlanningError,
)
from herald.pipeline.staged_codec import Planned
from herald.pipeline.unit import Unit, Units
from herald.store import idempotency, journal, notifications, staged_batches, suppressions
from herald.store.idempotency_cache import IdempotencyCache
from herald.store.notifications import DeliveryRecord, NotificationRecord
from herald.store.tables import idempotency_keys
from herald.store.tables import staged_batches as staged_batches_table

log = get_logger(__name__)

Render = Callable[[NotificationRecord], dict[str, Any]]
# A batch's response body from each item's outcome: accepted, or the error that refused it.
RenderBatch = Callable[[list[Admitted | PlanningError]], dict[str, Any]]

# Facts of a tenant that intake asks once per transaction (see Intake._known).
_STAGED, _SUPPRESSING = "staged", "suppressing"
# Both facts in one statement, built once (building one per transaction cost more than
# running it).
_TENANT_FACTS = sa.select(
    staged_batches.pending_of(sa.bindparam("tenant")), suppressions.any_of(sa.bindparam("tenant"))
)
# (tenant, channel, address) triples on a suppression list.
_Addresses = set[tuple[str, str, str]]
# A notification's deliveries, each with what planning made of it.
_Pairs = list[tuple[DeliveryRecord, PlannedDelivery]]

EMAIL_ONLY = Planner(channels=("email",), critical_categories=frozenset(), public_url="")


@dataclass(frozen=True, slots=True)
class IdempotencyRequest:
    scope: str
    key: str
    request_hash: str


@dataclass(frozen=True, slots=True)
class _Built:
    """Notifications ready to write: all but a collapse key's supersede, which reads the
    database."""

    planned: list[Planned]
    # Those with a collapse key, in order: each with its user key and collapse key.
    collapsing: list[tuple[NotificationRecord, str, str]]
    rows: notifications.Rows
    events: list[OutgoingMessage]
    steps: list[journal.Step]


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A request's accepted notifications and its response; ``built``: their rows, or None
    when they are to be staged (a large batch)."""

    accepted: list[Admitted]
    body: dict[str, Any]
    built: _Built | None


@dataclass(frozen=True, slots=True)
class Accepted:
    status: int
    body: dict[str, Any]
    replayed: bool


class Intake:
    def __init__(
        self,
        units: Units,
        topics: Topics,
        *,
        idempotency_ttl: float,
        cache: IdempotencyCache | None = None,
        planner: Planner = EMAIL_ONLY,
        capped_channels: Collection[str] = (),
        stage_from: int = 0,
    ) -> None:
        self.units = units
        self.db = units.db
        # Concurrent requests share a transaction (see group_commit).
        self.group = GroupCommit(units)
        self.reads = IdempotencyReads(units.db, cache)  # and their look-ups share a read
        self.topics = topics
        self.idempotency_ttl = idempotency_ttl
        self.planner = planner
        self.capped_channels = frozenset(capped_channels)  # the router counts their sends
        # Batches of at least this many accepted notifications are staged (0: none are).
        self.stage_from = stage_from
        # Per transaction, facts about a tenant asked once: whether it has a staged batch
        # pending, whether it suppresses any address (see _known).
        self._facts: WeakKeyDictionary[Unit, dict[tuple[str, str], bool]] = WeakKeyDictionary()

    async def submit(
        self, spec: NotificationSpec, render: Render, idem: IdempotencyRequest | None = None
    ) -> Accepted:
        """Store one notification; raises PlanningError if it cannot be sent as asked."""

        def render_one(outcomes: list[Admitted | PlanningError]) -> dict[str, Any]:
            (outcome,) = outcomes
            if isinstance(outcome, PlanningError):
                raise outcome
            return render(outcome.record)

        return await self._accept([spec], render_one, idem)

    async def submit_batch(
        self,
        specs: Sequence[NotificationSpec],
        render: RenderBatch,
        idem: IdempotencyRequest | None = None,
    ) -> Accepted:
        return await self._accept(specs, render, idem)

    async def _accept(
        self,
        specs: Sequence[NotificationSpec],
        render: RenderBatch,
        idem: IdempotencyRequest | None,
    ) -> Accepted:
        for _ in range(3):
            if idem is not None:
                stored = await self._stored(idem)
                if stored is not None:
                    return _replay(stored, idem)
            try:
                return await self._accept_once(specs, render, idem)
            except IntegrityError:
                # A concurrent request with the same key committed first (the key is the
                # primary key of its row): the next round finds its stored response.
                if idem is None:
                    raise
        raise RuntimeError("idempotency key kept conflicting")  # pragma: no cover

    async def _stored(self, idem: IdempotencyRequest) -> idempotency.StoredResponse | None:
        return await self.reads.find(idem.scope, idem.key)

    async def _accept_once(
        self,
        specs: Sequence[NotificationSpec],
        render: RenderBatch,
        idem: IdempotencyRequest | None,
    ) -> Accepted:
        # Inline URLs are resolved (DNS) first, all at once, and without holding a connection.
        refusals = await self.planner.outbound_refusals(specs)
        drafts: list[Draft | Plan | PlanningError] = []
        async with Lookups.reading(self.db) as lookups:
            for tenant in {s.tenant_id for s in specs}:
                ids = {s.user_id for s in specs if s.tenant_id == tenant and s.user_id}
                await lookups.load_users(tenant, ids)
            for spec, refusal in zip(specs, refusals, strict=True):
                if refusal is not None:
                    drafts.append(refusal)
                    continue
                try:
                    if spec.inline:
                        drafts.append(self.planner.plan_inline(spec))  # nothing to look up
                    else:
                        drafts.append(await self.planner.draft(lookups, spec))
                except PlanningError as exc:
                    drafts.append(exc)
        # Rendered with the connection back in the pool: a render may wait for its turn.
        plans: list[Plan | PlanningError] = []
        for draft in drafts:
            if not isinstance(draft, Draft):  # refused, or planned already
                plans.append(draft)
                continue
            try:
                plans.append(await self.planner.finish(draft))
            except PlanningError as exc:
                plans.append(exc)
        refused: list[Admitted | PlanningError] = [p for p in plans if isinstance(p, PlanningError)]
        if len(refused) == len(plans) and idem is None:
            # Nothing to store: one notification's render raises its error, a batch's
            # reports each item refused (even when it has only one).
            return Accepted(202, render(refused), replayed=False)
        # Built before the transaction: the one writer's turn (SQLite: its write lock) is
        # spent on what needs the database, and while it writes one request's rows the loop
        # builds the next's.
        prepared = await self._prepare(plans, render, utcnow())
        body, accepted = await self.group.write(lambda unit: self._store(unit, prepared, idem))
        metrics.notifications_accepted.inc(len(accepted))
        if len(accepted) == 1:
            (one,) = accepted
            log.info(
                "notification.accepted",
                notification_id=one.id,
                channels=",".join(sorted({d.channel for d in one.plan.deliveries})),
            )
        elif accepted:
            # One line for a batch (a line each cost it a tenth of its time); each notification's
            # acceptance is in its timeline, and its ids (time-ordered) lie between these two.
            log.info(
                "notifications.accepted",
                count=len(accepted),
                first_id=accepted[0].id,
                last_id=accepted[-1].id,
                staged=prepared.built is None,
            )
        return Accepted(202, body, replayed=False)

    async def _prepare(
        self, plans: list[Plan | PlanningError], render: RenderBatch, now: datetime
    ) -> _Prepared:
        """The accepted notifications, the response and (unless they are to be staged) their
        rows, events and journal steps; raises PlanningError if the render refuses (nothing is
        stored then)."""
        outcomes: list[Admitted | PlanningError] = []
        accepted: list[Admitted] = []
        count = sum(1 + len(p.deliveries) for p in plans if not isinstance(p, PlanningError))
        ids = iter(uuid7s(count))  # a notification's and its deliveries'
        for plan in plans:
            if isinstance(plan, PlanningError):
                outcomes.append(plan)
                continue
            admitted = admit(plan, now, ids)
            outcomes.append(admitted)
            accepted.append(admitted)
        body = render(outcomes)
        if 0 < self.stage_from <= len(accepted):
            return _Prepared(accepted, body, None)  # staged: records built when written out
        # Built as if no address were suppressed (most tenants suppress none): _store builds
        # again, in its transaction, if one is.
        planned = [(a.record, a.plan) for a in accepted]
        return _Prepared(accepted, body, self._build(planned, now, set()))

    def _build(self, planned: list[Planned], now: datetime, suppressed: _Addresses) -> _Built:
        """``suppressed``: the (tenant, channel, address) of these deliveries on a suppression
        list, left to the router (which skips them)."""
        collapsing: list[tuple[NotificationRecord, str, str]] = []
        events: list[OutgoingMessage] = []
        steps: list[journal.Step] = []
        for record, plan in planned:
            if plan.spec.collapse_key is not None:
                collapsing.append((record, plan.user_key, plan.spec.collapse_key))
            here, later = self._split(record, plan, suppressed)
            if here:
                events += self._jobs(record, plan, here)
                routed = ",".join(d.channel for d, _ in here)
                steps.append(journal.Step(record.id, journal.ROUTED, now, detail=f"to {routed}"))
            if later:
                events.append(self._requested(record, plan, later))
        records = [record for record, _ in planned]
        return _Built(planned, collapsing, notifications.rows_of(records), events, steps)

    async def _store(
        self, unit: Unit, prepared: _Prepared, idem: IdempotencyRequest | None
    ) -> tuple[dict[str, Any], list[Admitted]]:
        """Store the prepared notifications (or stage them), their events and the response
        under the key; in a group commit (run again alone if the group fails)."""
        built, accepted = prepared.built, prepared.accepted
        if built is not None and await self._behind_staged(unit, accepted):
            built = None  # in order behind the tenant's staged batches: staged too
        if built is not None and (suppressed := await self._suppressed(unit, built.planned)):
            built = self._build(built.planned, accepted[0].created_at, suppressed)
        if built is not None:
            await self._write(unit, built)
        elif accepted:
            self._stage(unit, accepted)
        if idem is not None:
            response = idempotency.StoredResponse(
                idem.request_hash, accepted[0].id if accepted else "", 202, prepared.body
            )
            row = idempotency.row(
                idem.scope, idem.key, response, now=unit.now, ttl_seconds=self.idempotency_ttl
            )
            unit.insert({idempotency_keys: [row]})
        return prepared.body, accepted

    async def _write(self, unit: Unit, built: _Built) -> None:
        superseded: list[journal.Step] = []
        for record, user_key, collapse_key in built.collapsing:  # in order
            await unit.write_rows()  # a notification buffered before this one is seen
            older = await notifications.supersede(
                unit.conn, record.tenant_id, user_key, collapse_key, by=record.id, now=unit.now
            )
            superseded += older
            # One partly sent keeps its status from what was sent: settled at commit.
            unit.settle(step.notification_id for step in older)
        unit.insert(built.rows)
        unit.publish(built.events)
        unit.record([*superseded, *built.steps])

    # -- staged batches -------------------------------------------------------------------

    def _stage(self, unit: Unit, accepted: list[Admitted]) -> None:
        """Store these notifications as one staged batch per tenant: one row, written out by
        the expander (see the module docstring)."""
        facts = self._facts.setdefault(unit, {})
        for tenant in dict.fromkeys(a.tenant_id for a in accepted):
            theirs = [a for a in accepted if a.tenant_id == tenant]
            ids = [a.id for a in theirs]
            row = staged_batches.row(tenant, theirs[0].created_at, ids, staged_codec.encode(theirs))
            unit.insert({staged_batches_table: [row]})
            facts[(_STAGED, tenant)] = True
        metrics.notifications_staged.inc(len(accepted))
        unit.wake_outbox()

    async def _behind_staged(self, unit: Unit, accepted: list[Admitted]) -> bool:
        """Whether a tenant of these notifications has a batch staged and not yet expanded
        (in the database, or in this unit): what comes after it must not overtake it. Asked
        once per tenant per transaction."""
        tenants = dict.fromkeys(a.tenant_id for a in accepted)
        return any([await self._known(unit, _STAGED, t) for t in tenants])

    async def _suppressed(self, unit: Unit, planned: list[Planned]) -> _Addresses:
        """The (tenant, channel, address) of these deliveries that are on a suppression list,
        among those that intake may route (see _split); a tenant that suppresses nothing is
        asked once per transaction."""
        wanted: dict[str, set[tuple[str, str]]] = {}
        for record, _ in planned:
            if record.user_id is not None or record.status != NotificationStatus.PENDING:
                continue  # the router's to route
            for d in record.deliveries:
                wanted.setdefault(record.tenant_id, set()).add((d.channel, d.recipient))
        found: _Addresses = set()
        for tenant, pairs in wanted.items():
            if await self._known(unit, _SUPPRESSING, tenant):
                hits = await suppressions.among(unit.conn, tenant, pairs)
                found |= {(tenant, channel, address) for channel, address in hits}
        return found

    async def _known(self, unit: Unit, fact: str, tenant: str) -> bool:
        """``fact`` (_STAGED or _SUPPRESSING) of ``tenant``: both read at once, once per
        transaction (a round trip each per group commit cost PostgreSQL's single POSTs a
        tenth of the API's CPU)."""
        facts = self._facts.setdefault(unit, {})
        if (fact, tenant) not in facts:
            asked = await unit.conn.execute(_TENANT_FACTS, {"tenant": tenant})
            staged, suppressing = asked.one()
            facts.setdefault((_STAGED, tenant), bool(staged))
            facts[(_SUPPRESSING, tenant)] = bool(suppressing)
        return facts[(fact, tenant)]

    async def expand(self, unit: Unit, batches: list[staged_batches.StagedBatch]) -> None:
        """Write out the notifications of these staged batches (taken in ``unit``), in order,
        as intake would have written them when it accepted them."""
        for batch in batches:
            planned = staged_codec.decode(
                batch.payload, batch.tenant_id, batch.created_at, written_at=unit.now
            )
            suppressed = await self._suppressed(unit, planned)
            await self._write(unit, self._build(planned, unit.now, suppressed))
        if batches:
            metrics.notifications_expanded.inc(sum(b.count for b in batches))

    async def catch_up(self, tenant: str, notification_id: str | None = None) -> bool:
        """Expand ``tenant``'s staged batches now (up to the one holding ``notification_id``,
        if given), for a read that must see them; whether there were any (written out here,
        or by the expander meanwhile: taking them waited for its commit)."""
        async with self.db.read() as conn:
            if notification_id is None:
                up_to = None
                if not await staged_batches.pending(conn, tenant):
                    return False
            else:
                up_to = await staged_batches.holding(conn, tenant, notification_id)
                if up_to is None:
                    return False
        async with self.units.begin() as unit:
            batches = await staged_batches.take_tenant(unit.conn, tenant, now=unit.now, up_to=up_to)
            await self.expand(unit, batches)
        return True

    def _split(
        self, record: NotificationRecord, plan: Plan, suppressed: _Addresses
    ) -> tuple[_Pairs, _Pairs]:
        """The deliveries routed here, and those left to the router: a delivery has nothing
        left to decide when it is sent if its notification has no user (whose preferences and
        quiet hours apply then) and no schedule, its channel has no daily cap (which the
        router counts) and its address is not suppressed (the router skips it). For an inline
        recipient this is decided by channel and address, so its jobs on one channel take the
        same way, in order (unless its address leaves the suppression list meanwhile).
        (A check added to routing must be added here.)"""
        pairs = list(zip(record.deliveries, plan.deliveries, strict=True))
        if plan.spec.user_id is not None or record.status != NotificationStatus.PENDING:
            return [], pairs
        tenant = record.tenant_id
        here: _Pairs = []
        later: _Pairs = []
        for pair in pairs:
            d = pair[0]
            routed = d.channel in self.capped_channels or (tenant, d.channel, d.recipient) in (
                suppressed
            )
            (later if routed else here).append(pair)
        return here, later

    def _jobs(self, record: NotificationRecord, plan: Plan, pairs: _Pairs) -> list[OutgoingMessage]:
        """These deliveries' jobs, as the router would make them (route._job)."""
        spec = plan.spec
        extra = {tracing.HEADER: spec.traceparent} if spec.traceparent else None
        return [
            envelope_fields(
                self.topics.deliveries(d.channel),
                plan.user_key,
                DeliveryJob,
                {  # DeliveryJob's fields, in its order
                    "delivery_id": d.id,
                    "tenant_id": record.tenant_id,
                    "notification_id": record.id,
                    "channel": d.channel,
                    "recipient": d.recipient,
                    "user_key": plan.user_key,
                    "content": planned.content,
                    "accepted_at": record.created_at,
                    "user_id": spec.user_id,
                    "category": plan.category,
                    "priority": spec.priority,
                },
                extra,
            )
            for d, planned in pairs
        ]

    def _requested(self, record: NotificationRecord, plan: Plan, pairs: _Pairs) -> OutgoingMessage:
        """The NotificationRequested event of these deliveries, encoded without validating
        what was just built."""
        spec = plan.spec
        event = {
            "notification_id": record.id,
            "tenant_id": record.tenant_id,
            "user_key": plan.user_key,
            "user_id": spec.user_id,
            "deliveries": [
                # DeliveryPlan's fields, in its order. The record's deliveries were made from
                # the plan's, in its order.
                {
                    "delivery_id": d.id,
                    "channel": d.channel,
                    "recipient": d.recipient,
                    "content": planned.content,
                }
                for d, planned in pairs
            ],
            "content": Content(subject=record.subject, body=record.body),
            "created_at": record.created_at,
            "category": plan.category,
            "priority": spec.priority,
            "send_at": spec.send_at,
        }
        extra = {tracing.HEADER: spec.traceparent} if spec.traceparent else None
        return envelope_fields(
            self.topics.requested, plan.user_key, NotificationRequested, event, extra
        )


def _replay(stored: idempotency.StoredResponse, idem: IdempotencyRequest) -> Accepted:
    if stored.request_hash != idem.request_hash:
        raise IdempotencyKeyReusedError(idem.key)
    return Accepted(stored.status, stored.body, replayed=True)
