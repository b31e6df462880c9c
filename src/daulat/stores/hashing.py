"""SHA-256 over streams without stalling the event loop."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Callable

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


class Hashed:
    """``chunks`` passed through, each fed to ``hasher`` before it is handed on; once they
    ended, the digest is checked against ``expected`` (:class:`IntegrityError`), then the
    callbacks given to :meth:`then` run, all before the consumer learns of the end.

    Raising before the end makes the consumer (an upload) fail and abort, so a mismatching
    object is never completed.

    A store given a :class:`Hashed` body may take its digest from ``hasher`` instead of
    hashing the same bytes once more (:func:`hashed_by`).
    """

    def __init__(
        self,
        chunks: AsyncIterable[bytes],
        hasher: StreamHasher,
        *,
        expected: str | None,
        store: str,
        key: str,
    ) -> None:
        self.hasher = hasher
        self._chunks = chunks
        self._it: AsyncIterator[bytes] | None = None
        self._expected = expected
        self._store = store
        self._key = key
        self._at_end: list[Callable[[int], None]] = []
        self._started = False

    def then(self, at_end: Callable[[int], None]) -> Hashed:
        """Call ``at_end(bytes passed)`` once the stream is exhausted and its digest checked,
        before the consumer learns that it ended (an upload cannot complete before that)."""
        self._at_end.append(at_end)
        return self

    @property
    def untouched(self) -> bool:
        """Whether no chunk has been asked for yet (``hasher`` will see every byte)."""
        return not self._started

    def __aiter__(self) -> Hashed:
        return self

    async def __anext__(self) -> bytes:
        self._started = True
        if self._it is None:
            self._it = aiter(self._chunks)
        try:
            chunk = await anext(self._it)
        except StopAsyncIteration:
            check_digest(self.hasher, self._expected, store=self._store, key=self._key)
            for at_end in self._at_end:
                at_end(self.hasher.size)
            self._at_end = []
            raise
        await self.hasher.update(chunk)
        return chunk

    async def aclose(self) -> None:
        close = getattr(self._it if self._it is not None else self._chunks, "aclose", None)
        if close is not None:
            await close()


def hashed(
    chunks: AsyncIterable[bytes],
    hasher: StreamHasher,
    *,
    expected: str | None,
    store: str,
    key: str,
) -> Hashed:
    """Pass chunks through, hashing them; raise :class:`IntegrityError` at the end on mismatch
    (see :class:`Hashed`)."""
    return Hashed(chunks, hasher, expected=expected, store=store, key=key)


def hashed_by(body: object) -> StreamHasher | None:
    """The hasher that will have seen every byte of ``body`` once it is read to its end, when
    ``body`` is an unread :class:`Hashed` (its digest and size are then the body's own): a
    store need not hash such a body again. None for anything else."""
    if isinstance(body, Hashed) and body.untouched:
        return body.hasher
    return None


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
