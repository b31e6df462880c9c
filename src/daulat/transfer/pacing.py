"""How much a run holds and how fast it reads, and what it shows while it runs.

:class:`ByteBudget` caps the bytes objects in flight hold (peak memory depends neither on
object sizes nor on their number), :class:`RateLimit` is ``--bwlimit``'s token bucket over
bytes read from the source, and :class:`Progress` the live counters a progress display reads.
The executor (:mod:`daulat.transfer.executor`) owns one of each per run.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass
class Progress:
    """Live counters, for a progress display.

    ``done_bytes`` counts objects committed to the journal; ``in_flight_bytes`` the bytes read
    so far from the source by objects still being copied (a retried object starts again from
    0), so ``done_bytes + in_flight_bytes`` moves while a large object streams.

    ``waiting_for``: before the run has a plan (the counts are all 0 until then), what it is
    doing instead, such as ``"listing dst"`` (a destination that does not answer keeps a run
    there until the request timeout); None once copying has begun.
    """

    planned_objects: int = 0
    planned_bytes: int = 0
    done_objects: int = 0
    done_bytes: int = 0
    failed: int = 0
    refused: int = 0
    retries: int = 0
    concurrency: int = 0
    in_flight_bytes: int = 0
    waiting_for: str | None = None

    @property
    def moved_bytes(self) -> int:
        """Bytes of the plan handled so far, including those of objects in flight."""
        return self.done_bytes + self.in_flight_bytes


class ByteBudget:
    """Caps the bytes held by objects in flight."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = asyncio.Condition()

    async def acquire(self, n: int) -> int:
        n = min(n, self.limit)
        async with self._cond:
            await self._cond.wait_for(lambda: self.used + n <= self.limit)
            self.used += n
        return n

    async def release(self, n: int) -> None:
        async with self._cond:
            self.used -= n
            self._cond.notify_all()


class RateLimit:
    """A token bucket over bytes read from the source (``--bwlimit``)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        # Empty at the start: a full bucket let every run (and every Ray shard, each with its
        # own limiter) send a second's worth of bytes at once, over the limit on average.
        self._tokens = 0.0
        self._last = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, n: int) -> None:
        async with self._lock:
            while True:
                t = time.monotonic()
                self._tokens = min(self.rate, self._tokens + (t - self._last) * self.rate)
                self._last = t
                if self._tokens >= n or self._tokens >= self.rate:
                    self._tokens -= n
                    return
                await asyncio.sleep((min(n, self.rate) - self._tokens) / self.rate)
