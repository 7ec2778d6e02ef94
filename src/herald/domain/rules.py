"""Rule matching: which of an event's rules hold, and what the ones that hold ask for together.

Pure: the rules come from the store, the event from the API, and what they decide goes to
the planner as a notification's channels, templates, priority and category.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from herald.domain.expressions import Expression, ExpressionError, compile_expression
from herald.observability.logging import get_logger

log = get_logger(__name__)


class Rule(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def condition(self) -> str | None: ...
    @property
    def channels(self) -> list[str]: ...
    @property
    def template(self) -> str: ...
    @property
    def category(self) -> str | None: ...
    @property
    def priority(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Decision:
    """What the matched rules ask for, together."""

    rules: list[str]  # names of the rules that matched, oldest first
    channel_templates: dict[str, str]  # channel -> template (the oldest rule naming it wins)
    high: bool  # high priority: the event's own or any matched rule's
    category: str | None  # the event's own, else the first matched rule's


@functools.lru_cache(maxsize=1024)
def _compiled(condition: str) -> Expression:
    """Rules are few and events many: parse each condition once."""
    return compile_expression(condition)


def holds(rule: Rule, context: dict[str, Any]) -> bool:
    """Whether ``rule``'s condition holds for an event (no condition: always)."""
    if rule.condition is None:
        return True
    try:
        return _compiled(rule.condition).evaluate(context)
    except ExpressionError:  # stored before a stricter build; the API validates new ones
        log.warning("rules.bad_condition", rule=rule.name)
        return False


def decide(
    rules: Sequence[Rule], context: dict[str, Any], *, high: bool, category: str | None
) -> Decision | None:
    """What the rules (oldest first) that hold for the event decide; None if none holds."""
    matched = [rule for rule in rules if holds(rule, context)]
    if not matched:
        return None
    channel_templates: dict[str, str] = {}
    for rule in matched:
        for channel in rule.channels:
            channel_templates.setdefault(channel, rule.template)
    return Decision(
        rules=[rule.name for rule in matched],
        channel_templates=channel_templates,
        high=high or any(rule.priority == "high" for rule in matched),
        category=category or next((r.category for r in matched if r.category), None),
    )
