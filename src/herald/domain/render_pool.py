"""Where templates render: every render (a preview, or a notification with a template at
intake) goes through :func:`render`.

A render is pure Python and may take up to its budget (render_budget), so it runs off the
event loop, in a pool of RENDER_THREADS threads of its own: the default executor (DNS look-ups,
file reads) is never filled with renders, and under the GIL more threads would only take more
time from the event loop, not render faster. Each API key has one turn at the pool: its renders
run one after the other, so one key never holds more than one thread and another key's render
waits for at most the render in front of it. A key may have RENDERS_PER_KEY renders running or
waiting; more are refused at once with :class:`RendersBusyError` (HTTP 429 with Retry-After),
instead of queueing behind a caller that previews slow templates in a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import weakref
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final

from herald.domain import templates as rendering
from herald.errors import RateLimitedError

RENDER_THREADS: Final = 2
RENDERS_PER_KEY: Final = 8  # running or waiting; each takes well under a second
RETRY_AFTER_SECONDS: Final = 1.0

_threads = ThreadPoolExecutor(RENDER_THREADS, thread_name_prefix="herald-render")


class RendersBusyError(RateLimitedError):
    """The API key already has RENDERS_PER_KEY renders running or waiting (HTTP 429)."""

    def __init__(self) -> None:
        super().__init__(RETRY_AFTER_SECONDS)


class _Key:
    """One API key's renders: how many are admitted, and its turn at the pool."""

    __slots__ = ("admitted", "turn")

    def __init__(self) -> None:
        self.admitted = 0
        self.turn = asyncio.Lock()


# Per event loop (a lock belongs to one), per API key; "" for open mode, where every caller is
# the same admin.
_keys: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Key]] = (
    weakref.WeakKeyDictionary()
)


async def render(
    fields: Mapping[str, str], data: Mapping[str, Any], *, where: str, caller: str | None
) -> dict[str, str]:
    """:func:`herald.domain.templates.render` in the render pool, for the API key ``caller``
    (None in open mode). Raises RendersBusyError when the key has too many renders already."""
    loop = asyncio.get_running_loop()
    keys = _keys.setdefault(loop, {})
    name = caller or ""
    key = keys.get(name) or keys.setdefault(name, _Key())
    if key.admitted >= RENDERS_PER_KEY:
        raise RendersBusyError()
    key.admitted += 1
    try:
        await key.turn.acquire()
    except BaseException:  # cancelled while waiting
        _leave(keys, name, key, turn=False)
        raise
    try:
        job = _threads.submit(
            contextvars.copy_context().run,
            functools.partial(rendering.render, fields, data, where=where),
        )
    except BaseException:
        _leave(keys, name, key)
        raise
    # The turn is given back when the render has ended in its thread, not when this coroutine
    # stops waiting for it: a caller that goes away must not leave its render running while
    # the key starts another.
    job.add_done_callback(functools.partial(_ended, loop, keys, name, key))
    return await asyncio.wrap_future(job)


def _ended(
    loop: asyncio.AbstractEventLoop, keys: dict[str, _Key], name: str, key: _Key, _: Future[Any]
) -> None:
    # In the render thread: the key's state belongs to the event loop.
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(_leave, keys, name, key)


def _leave(keys: dict[str, _Key], name: str, key: _Key, *, turn: bool = True) -> None:
    if turn:
        key.turn.release()
    key.admitted -= 1
    if key.admitted == 0:
        keys.pop(name, None)
