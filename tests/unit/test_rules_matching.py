"""Which rules hold for an event, and what the ones that hold decide together."""

from __future__ import annotations

from dataclasses import dataclass, field

from herald.domain.rules import decide, holds


@dataclass
class R:
    name: str
    condition: str | None = None
    channels: list[str] = field(default_factory=lambda: ["email"])
    template: str = "t"
    category: str | None = None
    priority: str | None = None


EVENT = {"type": "order.shipped", "data": {"amount": 1500, "country": "PT"}}


def test_a_rule_holds_when_its_condition_does_and_always_without_one() -> None:
    assert holds(R("a"), EVENT)
    assert holds(R("a", "data.amount > 1000 and data.country in ['PT', 'BR']"), EVENT)
    assert not holds(R("a", "data.amount > 2000"), EVENT)
    assert not holds(R("a", "data.amount >"), EVENT)  # stored before a stricter build


def test_the_oldest_matching_rule_wins_a_channel_and_any_may_raise_priority() -> None:
    rules = [
        R("old", channels=["email", "sms"], template="first"),
        R("never", "data.amount > 2000", channels=["push"], template="x", priority="high"),
        R("new", channels=["sms", "inapp"], template="second", category="orders", priority="high"),
    ]
    decision = decide(rules, EVENT, high=False, category=None)
    assert decision is not None
    assert decision.rules == ["old", "new"]
    assert decision.channel_templates == {"email": "first", "sms": "first", "inapp": "second"}
    assert decision.high
    assert decision.category == "orders"
    # The event's own category and priority come first.
    own = decide(rules[:1], EVENT, high=True, category="billing")
    assert own is not None
    assert own.high
    assert own.category == "billing"


def test_nothing_is_decided_when_no_rule_holds() -> None:
    assert decide([R("a", "data.amount > 2000")], EVENT, high=False, category=None) is None
