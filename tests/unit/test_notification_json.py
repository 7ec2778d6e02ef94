"""A notification's and a batch's JSON, built without the response models, are exactly what
the models would make."""

from __future__ import annotations

import pydantic_core
from hypothesis import given
from hypothesis import strategies as st

from herald.api.notifications import batch_json
from herald.api.schemas import BatchOut, NotificationOut, admitted_json, notification_json
from herald.domain.models import DeliveryStatus, NotificationStatus
from herald.pipeline.admitted import Admitted
from herald.pipeline.planning import PlanningError
from herald.store.notifications import DeliveryRecord, NotificationRecord
from tests.strategies import admitted, maybe_text, maybe_time, text, times

deliveries = st.builds(
    DeliveryRecord,
    id=text,
    notification_id=text,
    channel=st.sampled_from(["email", "sms", "push", "webhook"]),
    recipient=text,
    status=st.sampled_from(list(DeliveryStatus)),
    attempts=st.integers(0, 20),
    last_error=maybe_text,
    provider=maybe_text,
    provider_message_id=maybe_text,
    next_attempt_at=maybe_time,
    created_at=times,
    updated_at=times,
    last_attempt_at=maybe_time,
    sent_at=maybe_time,
    skip_reason=maybe_text,
)
records = st.builds(
    NotificationRecord,
    id=text,
    tenant_id=text,
    user_id=maybe_text,
    recipient=maybe_text,
    subject=maybe_text,
    body=text,
    status=st.sampled_from(list(NotificationStatus)),
    created_at=times,
    updated_at=times,
    completed_at=maybe_time,
    category=maybe_text,
    priority=st.sampled_from(["low", "normal", "high"]),
    template=maybe_text,
    event_type=maybe_text,
    send_at=maybe_time,
    collapse_key=maybe_text,
    deliveries=st.lists(deliveries, max_size=4),
)


@given(records)
def test_a_notifications_json_is_the_models(record: NotificationRecord) -> None:
    built, modelled = notification_json(record), NotificationOut.of(record).model_dump(mode="json")
    assert pydantic_core.to_json(built) == pydantic_core.to_json(modelled)  # order too


@given(admitted)
def test_a_just_accepted_notifications_json_is_its_records(accepted: Admitted) -> None:
    built, recorded = admitted_json(accepted), notification_json(accepted.record)
    assert pydantic_core.to_json(built) == pydantic_core.to_json(recorded)  # order too


@given(st.lists(admitted | st.builds(PlanningError, st.just("channel"), text), max_size=5))
def test_a_batchs_json_is_the_models(outcomes: list[Admitted | PlanningError]) -> None:
    built = batch_json(outcomes)
    modelled = BatchOut.model_validate(built).model_dump(mode="json")  # drops unknown keys
    assert pydantic_core.to_json(built) == pydantic_core.to_json(modelled)
    assert [item["status"] for item in built["items"]] == [
        202 if isinstance(o, Admitted) else 422 for o in outcomes
    ]
