"""A staged batch's payload, encoded from what intake admitted, decodes as the records intake
would have written then (written out later) and the plans routing reads."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from herald import json_bytes
from herald.domain.messages import Content
from herald.pipeline import staged_codec
from herald.pipeline.admitted import Admitted
from tests.strategies import admitted, times


@given(st.lists(admitted, min_size=1, max_size=3), times)
def test_a_payload_decodes_as_the_records_and_plans_admitted(
    accepted: list[Admitted], written_at: datetime
) -> None:
    tenant, created_at = accepted[0].tenant_id, accepted[0].created_at
    for a in accepted:  # one batch: one tenant, one time
        a.plan.spec = dataclasses.replace(a.plan.spec, tenant_id=tenant)
        a.created_at = created_at

    decoded = staged_codec.decode(staged_codec.encode(accepted), tenant, created_at, written_at)

    for a, (record, plan) in zip(accepted, decoded, strict=True):
        expected = a.record
        expected.updated_at = written_at  # as written out
        for d in expected.deliveries:
            d.updated_at = written_at
        assert record == expected
        assert plan.deliveries == a.plan.deliveries
        assert (plan.category, plan.template, plan.user_key) == (
            a.plan.category,
            a.plan.template,
            a.plan.user_key,
        )
        spec, asked = plan.spec, a.plan.spec
        assert (spec.tenant_id, spec.user_id, spec.priority, spec.send_at) == (
            asked.tenant_id,
            asked.user_id,
            asked.priority,
            asked.send_at,
        )
        assert (spec.collapse_key, spec.event_type, spec.traceparent) == (
            asked.collapse_key,
            asked.event_type,
            asked.traceparent,
        )


def test_a_payload_staged_before_plain_contents_were_null_still_decodes() -> None:
    """Written by the API of an earlier version: each delivery's content in full."""
    content = {"subject": "Hi", "body": "Yes", "html": None, "data": {}, "headers": {}}
    payload = (
        b'[["n1",null,"a@example.com","Hi","Yes","PENDING",null,"normal",null,null,null,null,'
        b'null,[["d1","email","a@example.com",'
        + json_bytes.dumps(content | {"unsubscribe": False})
        + b",null]]]]"
    )
    at = datetime(2026, 12, 6, tzinfo=UTC)
    ((record, plan),) = staged_codec.decode(payload, "default", at, at)
    (delivery,) = record.deliveries
    assert (record.id, record.subject, record.body, delivery.id) == ("n1", "Hi", "Yes", "d1")
    assert delivery.content == content | {"unsubscribe": False}
    assert plan.deliveries[0].content == Content(subject="Hi", body="Yes")
    # And what this version writes for it is the same, its content null.
    assert staged_codec.encode([Admitted(plan, "n1", ["d1"], at)]).endswith(b",null,null]]]]")
