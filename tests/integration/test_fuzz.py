"""Fuzzing: every operation in the OpenAPI schema, sent generated requests (valid and invalid),
answers without a server error and as the schema declares: status code, content type, body;
on SQLite and on PostgreSQL (which refuses more: NUL, strings longer than their column)."""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from herald.api.app import create_app
from herald.runtime import Runtime
from tests.conftest import settings_for
from tests.fakes.mta import bounce_report

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def openapi_document() -> dict[str, Any]:
    """What /openapi.json serves, read when the tests are collected. It depends on no
    setting, so an app whose runtime never starts (nor opens its database) gives it; as in
    every test, the settings come from here, never from the developer's shell."""
    with pytest.MonkeyPatch.context() as env:
        for name in [n for n in os.environ if n.startswith("HERALD_")]:
            env.delenv(name)
        runtime = Runtime(settings_for("sqlite:///never-opened.db"))
        document: dict[str, Any] = create_app(runtime, open_access=True).openapi()
    return document


schema = schemathesis.openapi.from_dict(openapi_document())
# A raw message (bounces piped in by an MTA): a real report about no known delivery, or bytes.
schemathesis.openapi.media_type(
    "message/rfc822",
    st.one_of(st.binary(max_size=2000), st.just(bounce_report("no-such-delivery"))),
)


def with_lifespan(app: ASGIApp, runtime: Runtime) -> ASGIApp:
    """The app, with the runtime started and closed by the ASGI lifespan: schemathesis runs
    that on the event loop it sends its requests on, which the runtime must share."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        await receive()  # lifespan.startup
        await runtime.start(migrate=False)
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await runtime.close()
        await send({"type": "lifespan.shutdown.complete"})

    return wrapped


@pytest.fixture
def herald(database_url: str) -> ASGIApp:
    """Herald on a database of its own, for the examples of one operation. The schemathesis
    plugin ends the lifespan (closing the runtime) when the test ends."""
    # No rate limit: a fuzzer sending as fast as it can would mostly collect 429s (those are
    # tested in test_rate_limit.py).
    runtime = Runtime(settings_for(database_url, rate_limit_per_second=0))
    return with_lifespan(create_app(runtime, open_access=True), runtime)


# An event stream does not end while its client listens: the fuzzer would wait for ever.
@schema.exclude(path="/api/v1/users/{user_id}/inbox/stream").parametrize()
@settings(
    max_examples=15,
    deadline=None,  # calls through a database vary in time: no flaky deadline errors
    derandomize=True,  # the same examples on every run: what fails in CI fails locally
    # One app (and database) per operation serves all its examples, on purpose; generating
    # schema-valid bodies is slow and may filter a lot, which is not a failure.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_every_operation_answers_as_its_schema_says(
    case: schemathesis.Case, herald: ASGIApp
) -> None:
    case.call_and_validate(app=herald, checks=CHECKS)
