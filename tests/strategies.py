"""Hypothesis strategies shared by the unit tests: notifications as intake admits them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import strategies as st

from herald.domain.messages import Content
from herald.pipeline.admitted import Admitted
from herald.pipeline.planning import NotificationSpec, Plan, PlannedDelivery

times = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=2))]),
)  # UTC times are remembered as JSON, others not
# No lone surrogates: input safety refuses them before anything is planned.
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
maybe_text, maybe_time = st.none() | text, st.none() | times

contents = st.builds(
    Content,
    subject=maybe_text,
    body=text,
    html=maybe_text,
    data=st.dictionaries(text, st.integers() | text | st.lists(st.booleans()), max_size=2),
    headers=st.dictionaries(text, text, max_size=2),
    unsubscribe=st.booleans(),
)
planned_deliveries = st.builds(
    PlannedDelivery,
    st.sampled_from(["email", "sms", "push", "webhook"]),
    text | st.text(min_size=256, max_size=300),  # a long URL is no primary recipient
    contents,
)
specs = st.builds(
    NotificationSpec,
    tenant_id=text,
    user_id=maybe_text,
    priority=st.sampled_from(["low", "normal", "high", "critical"]),
    send_at=maybe_time,
    collapse_key=maybe_text,
    event_type=maybe_text,
    traceparent=maybe_text,
)
plans = st.builds(
    Plan,
    spec=specs,
    deliveries=st.lists(planned_deliveries, min_size=1, max_size=4),
    category=maybe_text,
    template=maybe_text,
)


@st.composite
def _admitted(draw: st.DrawFn) -> Admitted:
    plan = draw(plans)
    if draw(st.booleans()):  # one content on every channel, as an inline request has
        first = plan.deliveries[0].content
        plan.deliveries = [PlannedDelivery(d.channel, d.recipient, first) for d in plan.deliveries]
    ids = draw(st.lists(text, min_size=len(plan.deliveries), max_size=len(plan.deliveries)))
    return Admitted(plan, draw(text), ids, draw(times))


admitted = _admitted()
