"""What route handlers share: the process's Runtime, kept on the application's state."""

from __future__ import annotations

from fastapi import Request

from herald.runtime import Runtime


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime
