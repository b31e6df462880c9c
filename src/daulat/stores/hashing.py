"""SHA-256 over streams without stalling the event loop."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterable, AsyncIterator

from daulat.errors import IntegrityError

# hashlib releases the GIL for buffers above 2 KiB, but hashing 16 MiB still blocks the loop for
# ~9 ms; chunks this large go to a worker thread, small ones are cheaper inline.
THREAD_HASH_BYTES = 4 * 1024 * 1024


class StreamHasher:
    """Accumulates size and SHA-256 of a stream, chunk by chunk."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.size = 0

    async def update(self, chunk: bytes | memoryview) -> None:
        self.size += len(chunk)
        if len(chunk) >= THREAD_HASH_BYTES:
            await asyncio.to_thread(self._h.update, chunk)
        else:
            self._h.update(chunk)

    def feed(self, chunk: bytes | memoryview) -> None:
        """Hash in the calling thread (for code already running in a worker thread)."""
        self.size += len(chunk)
        self._h.update(chunk)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


async def hashed(
    chunks: AsyncIterable[bytes],
    hasher: StreamHasher,
    *,
    expected: str | None,
    store: str,
    key: str,
) -> AsyncIterator[bytes]:
    """Pass chunks through, hashing them; raise :class:`IntegrityError` at the end on mismatch.

    Raising from inside the body before it ends makes the consumer (an upload) fail and abort,
    so a mismatching object is never completed.
    """
    async for chunk in chunks:
        await hasher.update(chunk)
        yield chunk
    check_digest(hasher, expected, store=store, key=key)


async def body_digest(
    body: bytes, expected: str | None, *, prehashed: bool, store: str, key: str
) -> str:
    """SHA-256 of a whole body, checked against ``expected`` (:class:`IntegrityError`).

    ``prehashed`` says the caller computed ``expected`` from this very body a moment ago; it is
    then taken as is rather than hashed a second time.
    """
    if prehashed and expected is not None:
        return expected.lower()
    hasher = StreamHasher()
    await hasher.update(body)
    check_digest(hasher, expected, store=store, key=key)
    return hasher.hexdigest()


def check_digest(hasher: StreamHasher, expected: str | None, *, store: str, key: str) -> None:
    if expected is not None and hasher.hexdigest() != expected.lower():
        raise IntegrityError(
            f"content of {key!r} does not match its expected SHA-256 "
            f"(expected {expected}, got {hasher.hexdigest()}); nothing was written to {store!r}",
            store=store,
            key=key,
        )
