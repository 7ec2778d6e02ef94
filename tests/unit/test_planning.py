"""Planning a request that names no user and no template at once (Planner.plan_inline, most of a
batch) gives what the two halves, draft and finish, give: the same plan or the same refusal."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from herald.pipeline.lookups import Lookups
from herald.pipeline.planning import (
    NotificationSpec,
    Plan,
    Planner,
    PlanningError,
    _addresses,
    _reachable,
)
from herald.store.users import Profile

PLANNER = Planner(
    channels=("email", "sms", "webhook", "push"),
    critical_categories=frozenset({"security"}),
    public_url="http://127.0.0.1:8000",
    unsubscribe_links=True,
)
CHANNELS = ("email", "sms", "webhook", "push", "inapp", "apprise")

PROFILES = st.builds(
    Profile,
    email=st.none() | st.just("a@example.com"),
    phone=st.none() | st.just("+15550100"),
    push_tokens=st.lists(st.sampled_from(["t1", "t2"]), max_size=2),
    webhook_url=st.none() | st.just("http://127.0.0.1:9/hook"),
    web_push=st.lists(st.just({"endpoint": "http://127.0.0.1:9/p", "keys": {}}), max_size=1),
    apprise_urls=st.lists(st.just("json://127.0.0.1:9/"), max_size=1),
)
SPECS = st.builds(
    NotificationSpec,
    contacts=st.none() | PROFILES,
    channels=st.none() | st.lists(st.sampled_from(CHANNELS), max_size=3).map(tuple),
    data=st.sampled_from([{}, {"n": 1}]),
    subject=st.none() | st.sampled_from(["", "Hi"]),
    body=st.none() | st.just("Hello"),
    category=st.none() | st.sampled_from(["", "news", "security"]),
)


def _outcome(plan: Any) -> Plan | tuple[str, str]:
    return (plan.field, plan.message) if isinstance(plan, PlanningError) else plan


async def _in_halves(spec: NotificationSpec) -> Plan | tuple[str, str]:
    async with AsyncExitStack() as stack:
        lookups = Lookups(None, stack)  # type: ignore[arg-type]  # asked nothing: never reads
        try:
            return await PLANNER.finish(await PLANNER.draft(lookups, spec))
        except PlanningError as exc:
            return _outcome(exc)


@settings(max_examples=300)
@given(SPECS)
def test_planning_at_once_is_planning_in_halves(spec: NotificationSpec) -> None:
    try:
        at_once: Plan | tuple[str, str] = PLANNER.plan_inline(spec)
    except PlanningError as exc:
        at_once = _outcome(exc)
    assert at_once == asyncio.run(_in_halves(spec))


@given(PROFILES, st.none() | st.sampled_from(["", "u1"]))
def test_a_channel_is_reachable_where_it_has_addresses(
    contacts: Profile, user_id: str | None
) -> None:
    for channel in (*CHANNELS, "webpush", "unknown"):
        assert _reachable(channel, contacts, user_id) == bool(
            _addresses(channel, contacts, user_id)
        ), channel
