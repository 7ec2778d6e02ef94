"""Rules: the tenant's rules, one rule's form (admin keys save it, turn it on or off), and a
test of a sample event: which rules hold and what they would send, without sending."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from herald.api.context import runtime_of
from herald.api.errors import FieldError
from herald.api.rules import check_template
from herald.api.rules_file import rule_record
from herald.api.schemas import RuleIn
from herald.console.render import (
    NAME_PROBLEM,
    admin_form,
    checked_form,
    field_errors,
    is_admin,
    message,
    notice_of,
    page,
    redirect,
    refused,
    signed_in,
    valid_name,
)
from herald.domain.models import Channel, Priority
from herald.domain.rules import decide, holds
from herald.store import rules
from herald.store.console_sessions import Session
from herald.store.rules import RuleRecord

router = APIRouter()
CHANNELS = [c.value for c in Channel]
PRIORITIES = [p.value for p in Priority]
NOTICES = {"saved": "Rule saved.", "enabled": "Rule turned on.", "disabled": "Rule turned off."}


@router.get("/console/rules")
async def rule_list(request: Request) -> Response:
    session = await signed_in(request)
    if session is None:
        return redirect("/console/sign-in")
    async with runtime_of(request).db.read() as conn:
        found = await rules.list_all(conn, session.key.tenant_id)
    context = {
        "session": session,
        "rules": found,
        "test": {},
        "notice": notice_of(request, NOTICES),
    }
    return page(request, "rules.html", context)


@router.get("/console/rules/{name}")
async def rule_page(name: str, request: Request) -> Response:
    session = await signed_in(request)
    if session is None:
        return redirect("/console/sign-in")
    async with runtime_of(request).db.read() as conn:
        rule = await rules.get(conn, session.key.tenant_id, name)
    if rule is None and name != "new":
        return message(request, session, "Not found", f"No rule {name} here.", 404)
    fields = _fields_of(rule) if rule else {"enabled": "on"}
    notice = notice_of(request, NOTICES)
    return _form_page(request, session, None if rule is None else name, fields, {}, notice, 200)


@router.post("/console/rules/{name}")
async def save_rule(name: str, request: Request) -> Response:
    """Create (``name`` "new": the form names it) or replace a rule."""
    answer = await admin_form(request, "Changing rules")
    if isinstance(answer, Response):
        return answer
    session, fields = answer
    named = fields.get("name", "").strip() if name == "new" else name
    current = None if name == "new" else name
    rule, errors = _rule_from(fields)
    if not valid_name(named):
        errors["name"] = NAME_PROBLEM
    if rule is None or errors:
        return _form_page(request, session, current, fields, errors, None, 422)
    try:
        async with runtime_of(request).db.write() as conn:
            if current is None and await rules.get(conn, session.key.tenant_id, named):
                raise FieldError("name", f"a rule {named!r} exists: change it on its own page")
            await check_template(conn, session.key.tenant_id, rule)
            await rules.put(conn, session.key.tenant_id, rule_record(named, rule))
    except FieldError as exc:
        field = "channels" if exc.field.startswith("channels") else exc.field
        return _form_page(request, session, current, fields, {field: exc.message}, None, 422)
    return redirect(f"/console/rules/{named}?notice=saved")


@router.post("/console/rules/{name}/enabled")
async def switch_rule(name: str, request: Request) -> Response:
    answer = await admin_form(request, "Changing rules")
    if isinstance(answer, Response):
        return answer
    session, fields = answer
    async with runtime_of(request).db.write() as conn:
        rule = await rules.get(conn, session.key.tenant_id, name)
        if rule is None:
            return message(request, session, "Not found", f"No rule {name} here.", 404)
        on = fields.get("enabled") == "on"
        changed = RuleRecord(**{**_as_dict(rule), "enabled": on})
        await rules.put(conn, session.key.tenant_id, changed)
    return redirect(f"/console/rules?notice={'enabled' if on else 'disabled'}")


@router.post("/console/rules-test")
async def test_event(request: Request) -> Response:
    """What a sample event would trigger: each of its type's rules, whether it holds, and
    what the matched rules would send together. Reading only: anyone signed in."""
    session = await signed_in(request)
    if session is None:
        return redirect("/console/sign-in")
    fields = await checked_form(request, session)
    if fields is None:
        return refused(request, session)
    errors: dict[str, str] = {}
    event_type = fields.get("type", "").strip()
    if not event_type:
        errors["type"] = "is required"
    try:
        data = json.loads(fields.get("data") or "{}")
        if not isinstance(data, dict):
            errors["data"] = "must be a JSON object"
    except ValueError as exc:
        errors["data"] = f"is not JSON: {exc}"
    priority = fields.get("priority") or "normal"
    if priority not in PRIORITIES:
        errors["priority"] = f"is not one of {', '.join(PRIORITIES)}"
    async with runtime_of(request).db.read() as conn:
        listed = await rules.list_all(conn, session.key.tenant_id)
        tenant = session.key.tenant_id
        candidates = [] if errors else await rules.for_event(conn, tenant, event_type)
    outcome = None
    checked: list[tuple[RuleRecord, bool]] = []
    if not errors:
        category = fields.get("category", "").strip() or None
        context = {
            "type": event_type,
            "user_id": fields.get("user_id", "").strip(),
            "data": data,
            "category": category,
            "priority": priority,
        }
        checked = [(rule, holds(rule, context)) for rule in candidates]
        outcome = decide(candidates, context, high=priority == "high", category=category)
    context_page = {
        "session": session,
        "rules": listed,
        "test": fields,
        "errors": errors,
        "tested": not errors,
        "checked": checked,
        "outcome": outcome,
    }
    return page(request, "rules.html", context_page, 422 if errors else 200)


def _form_page(
    request: Request,
    session: Session,
    name: str | None,
    fields: dict[str, str],
    errors: dict[str, str],
    notice: str | None,
    status: int,
) -> Response:
    context = {
        "session": session,
        "name": name,
        "fields": fields,
        "errors": errors,
        "channels": CHANNELS,
        "priorities": PRIORITIES,
        "notice": notice,
        "can_edit": is_admin(session),
    }
    return page(request, "rule.html", context, status)


def _fields_of(rule: RuleRecord) -> dict[str, str]:
    fields = {
        "event_type": rule.event_type,
        "condition": rule.condition or "",
        "template": rule.template,
        "category": rule.category or "",
        "priority": rule.priority or "",
    }
    fields |= {f"channel_{c}": "on" for c in rule.channels}
    if rule.enabled:
        fields["enabled"] = "on"
    return fields


def _rule_from(fields: dict[str, str]) -> tuple[RuleIn | None, dict[str, str]]:
    """The form's rule as the API would take it, or None and what is wrong, by field."""
    value: dict[str, Any] = {
        "event_type": fields.get("event_type", "").strip(),
        "condition": fields.get("condition", "").strip() or None,
        "channels": [c for c in CHANNELS if fields.get(f"channel_{c}") == "on"],
        "template": fields.get("template", "").strip(),
        "category": fields.get("category", "").strip() or None,
        "priority": fields.get("priority") or None,
        "enabled": fields.get("enabled") == "on",
    }
    try:
        return RuleIn.model_validate(value), {}
    except ValidationError as exc:
        return None, field_errors(exc, "rule")


def _as_dict(rule: RuleRecord) -> dict[str, Any]:
    return {name: getattr(rule, name) for name in RuleRecord.__dataclass_fields__}
