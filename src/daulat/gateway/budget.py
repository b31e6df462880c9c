"""A gateway-wide limit on the replica bytes that reads in flight hold in memory.

Each read takes from one :class:`ByteBudget` before it asks a replica for more bytes and gives
back once those bytes are hashed and the server has taken them, so the memory of any number of
concurrent reads stays near the budget: a read that finds the budget spent waits for it rather
than growing memory. Waiting is first come, first served.

A read waits only while it holds nothing (it first finishes and hands over what it holds), so
reads that each hold part of the budget can never all wait for one another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class ByteBudget:
    """``limit`` bytes shared by the reads of one gateway.

    ``in_use`` is what the reads hold now; ``peak`` the most they ever held at once (never above
    ``limit``); ``waits`` how many times a read had to wait for bytes."""

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("a byte budget must be positive")
        self.limit = limit
        self.in_use = 0
        self.peak = 0
        self.waits = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def clamp(self, n: int) -> int:
        """``n`` bounded by the limit: a read larger than the whole budget runs alone."""
        return min(n, self.limit)

    def try_take(self, n: int) -> int:
        """Take ``n`` bytes (at most the limit) at once if they are free and nobody waits:
        the bytes taken (to give back), or 0."""
        n = self.clamp(n)
        if self._waiters or self.in_use + n > self.limit:
            return 0
        self._take(n)
        return n

    async def take(self, n: int) -> int:
        """Take ``n`` bytes (at most the limit), waiting for them after earlier waiters; the
        bytes taken. Call it only while holding nothing of this budget, else reads could wait
        for each other."""
        if taken := self.try_take(n):
            return taken
        n = self.clamp(n)
        self.waits += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.give(n)  # granted just as the read was cancelled
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove((n, future))
                self._wake()
            raise
        return n

    def give(self, n: int) -> None:
        """Give back ``n`` bytes taken earlier."""
        if n <= 0:
            return
        self.in_use -= n
        assert self.in_use >= 0, "gave back more than was taken"
        self._wake()

    def _take(self, n: int) -> None:
        self.in_use += n
        self.peak = max(self.peak, self.in_use)

    def _wake(self) -> None:
        while self._waiters and self.in_use + self._waiters[0][0] <= self.limit:
            n, future = self._waiters.popleft()
            if future.done():
                continue
            self._take(n)
            future.set_result(None)
