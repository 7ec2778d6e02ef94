"""Rules from a YAML file (HERALD_RULES_FILE), loaded at start; and the record a rule the API
or the file gives is stored as."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml
from pydantic import ValidationError

from herald.api.schemas import RuleIn
from herald.clock import utcnow
from herald.errors import ConfigError
from herald.observability.logging import get_logger
from herald.store import rules
from herald.store.database import Database
from herald.store.rules import RuleRecord
from herald.tenancy import DEFAULT_TENANT

log = get_logger(__name__)


def rule_record(name: str, rule: RuleIn) -> RuleRecord:
    now = utcnow()
    return RuleRecord(
        name=name,
        event_type=rule.event_type,
        condition=rule.condition,
        channels=[c.value for c in rule.channels],
        template=rule.template,
        category=rule.category,
        priority=None if rule.priority is None else rule.priority.value,
        enabled=rule.enabled,
        created_at=now,
        updated_at=now,
    )


def read_rules_file(path: str) -> list[tuple[str, RuleIn]]:
    """The rules a YAML file lists (``rules: [{name: ..., event_type: ..., ...}]``)."""
    try:
        document = yaml.safe_load(Path(path).read_text())
        entries = document["rules"]
        parsed = [
            (str(e["name"]), RuleIn.model_validate({k: v for k, v in e.items() if k != "name"}))
            for e in entries
        ]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValidationError) as exc:
        raise ConfigError(f"HERALD_RULES_FILE {path}: {exc}") from exc
    return parsed


async def load_rules_file(db: Database, path: str, tenant: str = DEFAULT_TENANT) -> int:
    """Create or replace, by name, the rules the file lists (the default tenant's)."""
    parsed = await asyncio.to_thread(read_rules_file, path)
    async with db.write() as conn:
        for name, rule in parsed:
            await rules.put(conn, tenant, rule_record(name, rule))
    log.info("rules.loaded", path=path, rules=len(parsed))
    return len(parsed)
