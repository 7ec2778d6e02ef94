"""Tenants: every API key belongs to one, and everything a key creates is scoped to it."""

from __future__ import annotations

import re

# Where rows from before tenancy, the open (keyless) API and the rules file live, and where
# dead letters that name no notification go (they are the operator's).
DEFAULT_TENANT = "default"
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_TENANT = re.compile(TENANT_PATTERN)


def valid_tenant(tenant: str) -> bool:
    return bool(_TENANT.fullmatch(tenant))
