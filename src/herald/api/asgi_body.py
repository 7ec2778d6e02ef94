"""A request body read by a middleware, handed on to the app behind it as if unread."""

from __future__ import annotations

from starlette.types import Message, Receive


def replaying(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the app behind: the body already read, then whatever comes next."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
