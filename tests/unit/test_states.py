from __future__ import annotations

import re
from pathlib import Path

import pytest

import herald
from herald.domain.models import DeliveryStatus as D
from herald.domain.models import NotificationStatus as N
from herald.domain.states import (
    DELIVERY_TRANSITIONS,
    aggregate_status,
    can_transition,
    leaving,
    moving,
    sources,
)


def test_every_status_has_a_transition_entry() -> None:
    assert set(DELIVERY_TRANSITIONS) == set(D)


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        (D.PENDING, D.PROCESSING, True),
        (D.PROCESSING, D.SENT, True),
        (D.PROCESSING, D.RETRY_PENDING, True),
        (D.RETRY_PENDING, D.PROCESSING, True),
        (D.PROCESSING, D.PROCESSING, True),  # lease takeover
        (D.SENT, D.PROCESSING, False),  # never send twice
        (D.SENT, D.FAILED, False),
        (D.PENDING, D.SENT, False),  # must be claimed first
        (D.SKIPPED, D.PENDING, False),
        (D.FAILED, D.PENDING, True),  # replay
        (D.DEAD_LETTERED, D.PENDING, True),
        (D.RETRY_PENDING, D.SKIPPED, True),  # its user was deleted
        (D.PROCESSING, D.SKIPPED, True),  # its user was deleted, the attempt did not send
        (D.SENT, D.SKIPPED, False),
        # Receipts, after SENT only, and never backwards.
        (D.SENT, D.DELIVERED, True),
        (D.SENT, D.BOUNCED, True),
        (D.DELIVERED, D.COMPLAINED, True),
        (D.DELIVERED, D.BOUNCED, True),  # the recipient's server accepted, then bounced
        (D.BOUNCED, D.DELIVERED, False),
        (D.UNDELIVERED, D.DELIVERED, False),
        (D.COMPLAINED, D.DELIVERED, False),
        (D.PROCESSING, D.DELIVERED, False),  # the send is recorded first
        (D.DEAD_LETTERED, D.DELIVERED, False),
    ],
)
def test_delivery_transitions(current: D, new: D, allowed: bool) -> None:
    assert can_transition(current, new) is allowed


@pytest.mark.parametrize(
    ("deliveries", "expected"),
    [
        ([], N.PENDING),
        ([D.PENDING], N.PENDING),
        ([D.SENT, D.RETRY_PENDING], N.PENDING),
        ([D.SENT, D.PROCESSING], N.PENDING),
        ([D.SENT], N.SENT),
        ([D.SENT, D.SKIPPED], N.SENT),
        ([D.SENT, D.FAILED], N.PARTIALLY_SENT),
        ([D.SENT, D.DEAD_LETTERED, D.SKIPPED], N.PARTIALLY_SENT),
        ([D.FAILED], N.FAILED),
        ([D.DEAD_LETTERED, D.SKIPPED], N.FAILED),
        ([D.SKIPPED, D.SKIPPED], N.SKIPPED),
        ([D.DELIVERED], N.DELIVERED),
        ([D.DELIVERED, D.COMPLAINED, D.SKIPPED], N.DELIVERED),
        ([D.DELIVERED, D.SENT], N.SENT),  # one not confirmed yet
        ([D.DELIVERED, D.BOUNCED], N.PARTIALLY_SENT),
        ([D.BOUNCED], N.FAILED),
        ([D.REJECTED, D.UNDELIVERED], N.FAILED),
        ([D.DELIVERED, D.PROCESSING], N.PENDING),
    ],
)
def test_aggregate_status(deliveries: list[D], expected: N) -> None:
    assert aggregate_status(deliveries) == expected


def test_a_statement_may_only_name_moves_the_machine_allows() -> None:
    assert moving(D.SKIPPED, D.PENDING, D.RETRY_PENDING) == [D.PENDING, D.RETRY_PENDING]
    assert leaving(D.PROCESSING, to=D.SENT) == D.PROCESSING
    with pytest.raises(ValueError, match="from SENT to PROCESSING"):
        moving(D.PROCESSING, D.PENDING, D.SENT)
    with pytest.raises(ValueError, match="from BOUNCED to DELIVERED"):
        leaving(D.BOUNCED, to=D.DELIVERED)
    assert set(sources(D.DELIVERED)) == {D.SENT}
    assert set(sources(D.BOUNCED)) == {D.SENT, D.DELIVERED}


def test_every_statement_that_sets_a_delivery_status_names_its_moves() -> None:
    """Each UPDATE of deliveries that sets a status guards it with the state machine's
    helpers (moving, leaving, sources): no status change by a hand-written condition."""
    root = Path(herald.__file__).parent
    found = 0
    for path in root.rglob("*.py"):
        text = path.read_text()
        for match in re.finditer(r"sa\.update\(deliveries\)", text):
            statement = _balanced(text, text.rfind("(", 0, match.start()))
            if "status=" not in statement.split(".values(", 1)[-1]:
                continue  # timestamps, a skip reason: no move
            found += 1
            # _claimable: the claim's guard, written with leaving() (store/deliveries.py).
            helpers = ("leaving(", "moving(", "sources(", "_claimable(")
            assert any(h in statement for h in helpers), f"{path.name}: {statement[:300]}"
    assert found >= 8


def _balanced(text: str, start: int) -> str:
    """The text from the "(" at ``start`` to the one that closes it."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start : i + 1]
    return text[start:]
