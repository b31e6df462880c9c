"""Retries and adaptive concurrency, written once.

Retries use exponential backoff with full jitter inside a *time budget* per operation rather than
a fixed count: under a sustained fault rate of 30 % a fixed count of attempts loses requests over
~10,000 requests, a time budget does not. Only :class:`Transient` errors are retried;
:class:`AccessDenied` and other permanent refusals surface at once, so a revoked credential stops
the run instead of hammering the provider.

:class:`RetryingStore` wraps any Store (so it runs the same conformance suite). A put whose body is
a stream cannot be replayed, so the transfer engine retries whole objects with the same
:class:`RetryPolicy` instead.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from daulat.errors import Transient
from daulat.stores.base import ObjectInfo, ObjectReader, OnUpload, PutResult, Store
from daulat.stores.forwarding import ForwardingStore

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff from ``base`` doubling up to ``cap`` seconds, for at most ``budget`` seconds."""

    base: float = 0.1
    cap: float = 10.0
    budget: float = 300.0

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        return random.uniform(0, min(self.cap, self.base * (2**attempt)))

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        on_retry: Callable[[Transient], None] | None = None,
    ) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.budget
        attempt = 0
        while True:
            try:
                return await fn()
            except Transient as exc:
                delay = self.delay(attempt)
                if loop.time() + delay > deadline:
                    raise
                if on_retry is not None:
                    on_retry(exc)
                attempt += 1
                await asyncio.sleep(delay)


class AdaptiveLimiter:
    """A concurrency limit that halves on throttling and creeps back up on success (AIMD)."""

    def __init__(self, limit: int, *, minimum: int = 1, recover_after: int = 50) -> None:
        self.maximum = limit
        self.limit = limit
        self.minimum = minimum
        self._active = 0
        self._successes = 0
        self._recover_after = recover_after
        self._cond = asyncio.Condition()
        self.throttled = 0

    async def acquire(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self._active < self.limit)
            self._active += 1

    async def release(self, *, success: bool) -> None:
        async with self._cond:
            self._active -= 1
            if success:
                self._successes += 1
                if self._successes >= self._recover_after and self.limit < self.maximum:
                    self.limit += 1
                    self._successes = 0
            self._cond.notify_all()

    def backoff(self) -> None:
        """Called on a throttling signal: halve the limit (not below the minimum)."""
        self.throttled += 1
        self.limit = max(self.minimum, self.limit // 2)
        self._successes = 0


class RetryingStore(ForwardingStore):
    """A Store that retries transient failures of its inner store within a time budget."""

    def __init__(
        self,
        inner: Store,
        policy: RetryPolicy | None = None,
        on_retry: Callable[[Transient], None] | None = None,
    ) -> None:
        super().__init__(inner)
        self.policy = policy or RetryPolicy()
        self._on_retry = on_retry

    async def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        # A listing restarts from the beginning on failure; callers insert idempotently.
        attempt = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.budget
        while True:
            try:
                async for batch in self.inner.list(prefix):
                    yield batch
                return
            except Transient as exc:
                delay = self.policy.delay(attempt)
                if loop.time() + delay > deadline:
                    raise
                if self._on_retry is not None:
                    self._on_retry(exc)
                attempt += 1
                await asyncio.sleep(delay)

    async def head(self, key: str) -> ObjectInfo:
        return await self.policy.call(lambda: self.inner.head(key), on_retry=self._on_retry)

    async def get(self, key: str, *, start: int = 0, end: int | None = None) -> ObjectReader:
        return await self.policy.call(
            lambda: self.inner.get(key, start=start, end=end), on_retry=self._on_retry
        )

    async def put(
        self,
        key: str,
        data: bytes | AsyncIterable[bytes],
        *,
        sha256: str | None = None,
        metadata: Mapping[str, str] | None = None,
        prehashed: bool = False,
        on_upload: OnUpload | None = None,
    ) -> PutResult:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            return await self.inner.put(
                key,
                data,
                sha256=sha256,
                metadata=metadata,
                prehashed=prehashed,
                on_upload=on_upload,
            )
        return await self.policy.call(
            lambda: self.inner.put(
                key,
                data,
                sha256=sha256,
                metadata=metadata,
                prehashed=prehashed,
                on_upload=on_upload,
            ),
            on_retry=self._on_retry,
        )

    async def delete(self, key: str) -> None:
        await self.policy.call(lambda: self.inner.delete(key), on_retry=self._on_retry)
