"""The garbage collector's settings for a long-running Herald process.

CPython collects its young generation when the container objects allocated and not yet freed
since the last collection pass a threshold (3.11 counts a free back down). Herald's stages
hold many such objects alive at once: a batch of a thousand notifications is about 60 000 of
them while it is planned, stored and answered. With a threshold below a few batches' worth,
collections came every few milliseconds under load, each walking objects that were all still
in use and freeing none of them (at 50 000: 12 % of the API's CPU while it accepted batches,
`benchmarks/batch_ingest.py`).

So the allocation-driven collection waits for far more objects, and the event loop collects
on a clock instead: the young and middle generations every five seconds (Herald leaves little
in reference cycles: a few thousand objects in a minute of batches), everything every minute.
"""

from __future__ import annotations

import asyncio
import gc
import itertools

# Net new container objects before an allocation-driven young collection: a safety net for a
# loop too busy to run the paced one, well above what the stages hold while they work.
YOUNG_THRESHOLD = 1_000_000
PACE_SECONDS = 5.0
FULL_EVERY = 12  # paced collections between two full ones (a minute)


def settle() -> None:
    """Everything allocated at start-up (modules, the app, compiled statements) lives as long
    as the process: moved out of the collector's sight (gc.freeze), so full collections walk
    only what was allocated since."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


async def pace() -> None:
    """Collects on the clock until cancelled (see the module docstring)."""
    for count in itertools.count(1):
        await asyncio.sleep(PACE_SECONDS)
        gc.collect(2 if count % FULL_EVERY == 0 else 1)
