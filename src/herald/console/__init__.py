"""The operator console: server-rendered pages under /console, served by the API process.

Pages are Jinja2 templates (every value escaped), styles a static file; no script runs, so the
Content-Security-Policy allows none. Signing in exchanges an API key for a server-side session
(``store/console_sessions``); a key sees only its tenant, as through the API.
"""

from __future__ import annotations

from fastapi import APIRouter

from herald.console import (
    deadletters,
    keys,
    notifications,
    providers,
    rules,
    sign_in,
    users,
)

router = APIRouter(include_in_schema=False)
for _pages in (sign_in, notifications, users, rules, deadletters, providers, keys):
    router.include_router(_pages.router)
