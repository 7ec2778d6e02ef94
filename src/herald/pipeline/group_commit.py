"""Group commit: concurrent writes share one transaction, each waiting for its own result.

Thirty-two clients each POSTing a notification would otherwise make thirty-two transactions,
each a commit (an fsync with SQLite's ``synchronous=FULL``) waiting its turn for the one
writer. Here a write is queued; one writer takes every write queued so far, runs them in one
unit of work and commits once; each caller gets its own result only after that commit, so
what it answers (a 202) still means "stored". Meanwhile the next writes queue up, so the
busier the API, the larger the groups.

A write that fails spoils the transaction for the others, so a failed group is split: each
of its writes runs again alone, and only the one at fault fails (an Idempotency-Key that a
concurrent twin took first, a render that refuses its data). Writes must therefore be safe to
run twice: they only touch the unit they are given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from herald.observability.logging import get_logger
from herald.pipeline.unit import Unit, Units

log = get_logger(__name__)

T = TypeVar("T")
Write = Callable[[Unit], Awaitable[T]]


@dataclass
class _Queued(Generic[T]):
    write: Write[T]
    result: asyncio.Future[T]


class GroupCommit:
    def __init__(self, units: Units, *, max_group: int = 256) -> None:
        self.units = units
        self.max_group = max_group
        self._queue: list[_Queued[Any]] = []
        self._writer: asyncio.Task[None] | None = None

    async def write(self, write: Write[T]) -> T:
        """Run ``write`` in a transaction shared with the writes queued beside it; return its
        result once that transaction has committed."""
        queued: _Queued[T] = _Queued(write, asyncio.get_running_loop().create_future())
        self._queue.append(queued)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(), name="group-commit")
        return await queued.result

    async def _write_all(self) -> None:
        try:
            await self._write_queued()
        except BaseException as exc:  # cancelled (the process stops): nobody may wait forever
            for queued in self._queue:
                _settle(queued, exc if isinstance(exc, Exception) else RuntimeError("stopped"))
            self._queue = []
            raise

    async def _write_queued(self) -> None:
        while self._queue:
            group, self._queue = self._queue[: self.max_group], self._queue[self.max_group :]
            group = [q for q in group if not q.result.done()]  # callers that went away
            if not group:
                continue
            try:
                results = await self._run(group)
            except Exception as exc:
                if len(group) == 1:
                    _settle(group[0], exc)
                    continue
                log.debug("group_commit.split", writes=len(group), error=type(exc).__name__)
                for queued in group:
                    try:
                        (result,) = await self._run([queued])
                    except Exception as alone:
                        _settle(queued, alone)
                    else:
                        _settle(queued, None, result)
                continue
            for queued, result in zip(group, results, strict=True):
                _settle(queued, None, result)

    async def _run(self, group: list[_Queued[Any]]) -> list[Any]:
        async with self.units.begin() as unit:
            return [await queued.write(unit) for queued in group]


def _settle(queued: _Queued[Any], error: BaseException | None, result: Any = None) -> None:
    if queued.result.done():
        return
    if error is not None:
        queued.result.set_exception(error)
    else:
        queued.result.set_result(result)
