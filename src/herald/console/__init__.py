"""The operator console: server-rendered pages under /console, served by the API process.

Pages are Jinja2 templates (every value escaped), styles and the one small script static
files; the Content-Security-Policy allows no other script (none inline). Signing in exchanges
an API key for a server-side session (``store/console_sessions``); a key sees only its
tenant, as through the API.
"""

from __future__ import annotations

from fastapi import APIRouter

from herald.console import (
    deadletters,
    keys,
    notifications,
    overview,
    providers,
    rules,
    sign_in,
    templates,
    users,
)

router = APIRouter(include_in_schema=False)
PAGES = (sign_in, overview, notifications, users, rules, templates, deadletters, providers, keys)
for _pages in PAGES:
    router.include_router(_pages.router)
