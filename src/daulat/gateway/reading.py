"""Reading an object for a client: from the first replica that answers, every byte checked.

The read covers whole 8 MiB chunks (a range is widened to the chunks it touches, the bytes
outside it read and hashed but not sent) so that every chunk served is hashed in full and
compared with the chunk hash recorded when the copy was made. Two modes:

- **buffered** (the widened span is at most :data:`BUFFER_LIMIT`: small objects, small ranges):
  the span is read and checked before anything is sent, so a replica that fails *or* holds
  other bytes is passed over for the next one and the client never notices;
- **streamed** (larger spans; memory stays at a few pieces per request): bytes go out as they
  arrive, and each chunk is checked when its last byte has been read; the last byte of the
  response is held back until its chunk is checked. A replica that fails mid-read (connection
  reset, 5xx, 403) is replaced by the next one *at the same byte offset*, the hash of the chunk
  in progress continuing over both, so the client sees one uninterrupted response. A chunk that
  does not match cuts the response before its end: the client sees a failed transfer, never a
  complete response with wrong bytes, and the replica is not used for that object again.

Pieces travel as :class:`memoryview` slices of what the store handed over (no copies on the
way to the socket), and each piece is hashed in a worker thread while it is being sent
(hashlib releases the GIL for large buffers), so the event loop only moves bytes.

**Memory.** Every read takes the bytes it is about to hold from the gateway's
:class:`~daulat.gateway.budget.ByteBudget` (``[gateway] read_buffers``) and gives them back
once they are hashed and the server has sent them (known when the server takes the read's
next bytes: it first drains what it holds), so concurrent reads wait for memory instead of
growing it. A streamed read of a plain replica takes :data:`PIECE_HOLD` per piece; a buffered
one its span three times over; an age replica :data:`DECRYPT_HOLD` for its decrypting stream.
The server sends the end of each piece as a small copy (:data:`daulat.gateway.app.SEND_TAIL`),
so a piece is out of memory once the server takes the next bytes. Not counted: the HTTP
clients' read buffers and those copied ends (64 KiB per response).

Age-encrypted replicas are decrypted on the fly (pyrage has no seeking): a read at offset N of
such a replica decrypts and discards the N bytes before it, which costs CPU (about 500 MB/s)
and the provider's bandwidth for those bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from daulat.crypto import Identity, decrypt_stream
from daulat.errors import AccessDenied, DaulatError, NotFound
from daulat.gateway.budget import ByteBudget
from daulat.gateway.health import Health
from daulat.gateway.replicas import Source, Version

BUFFER_LIMIT = 1024 * 1024
#: Parts at least this large are hashed in a worker thread; smaller ones cost less to hash
#: than the hand-off to the thread.
THREAD_HASH_MIN = 256 * 1024
#: The size of the pieces asked of stores that can hand over their buffers: what each
#: concurrent read holds in memory is a few of them.
PIECE = 1024 * 1024
#: What a piece costs while a replica hands it over: obstore assembles it from its HTTP
#: client's buffers and copies it into a ``bytes`` (twice its size for a moment).
PIECE_HOLD = 2 * PIECE
#: The decrypting stream of an age replica: its buffers (``DECRYPT_BUFFER``, in and out) and
#: the pieces on either side of it.
DECRYPT_BUFFER = 2 * PIECE
DECRYPT_HOLD = DECRYPT_BUFFER + 3 * PIECE

Piece = bytes | memoryview
_EMPTY = memoryview(b"")


class Unavailable(DaulatError):
    """No replica could serve the object (S3 503)."""


class ChunkMismatch(DaulatError):
    """A replica's bytes do not hash to the recorded chunk hash."""


class Events(Protocol):
    def failover(self, version: Version, failed: Source, offset: int, error: str) -> None: ...

    def mismatch(self, version: Version, source: Source, chunk: int) -> None: ...


@dataclass
class _Open:
    source: Source
    chunks: AsyncIterator[Piece]
    close: Callable[[], object]


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."


class VerifiedRead:
    """One client read of ``[start, end)`` of ``version``."""

    def __init__(
        self,
        version: Version,
        start: int,
        end: int,
        health: Health,
        events: Events,
        identities: Sequence[Identity],
        budget: ByteBudget,
        skip: Callable[[Source], bool] = lambda s: False,
    ) -> None:
        self.version, self.start, self.end = version, start, end
        self.health, self.events, self.identities = health, events, identities
        self.budget = budget
        # Bytes of the budget this read holds: for its source (decrypting stream, buffered
        # span), for the piece being read, and for pieces handed to the server (given back
        # when the server takes the next bytes, by then it has sent them).
        self._held_source = 0
        self._held_piece = 0
        self._handed = 0
        size, c = version.size, version.chunk_size
        if version.verified:
            self.lo = start - start % c
            self.hi = min(size, -(-end // c) * c) if end > 0 else min(size, c)
        else:
            self.lo, self.hi = start, end
        self.pos = self.lo
        self.skip = skip
        self.queue = [s for s in version.sources if not skip(s)]
        self.current: _Open | None = None
        self.buffered = version.verified and self.hi - self.lo <= BUFFER_LIMIT
        self._data: memoryview | None = None

    # ------------------------------------------------------------------ opening

    async def _open(self, source: Source, pos: int) -> _Open:
        store, key = source.replica.store, source.key
        hold = (DECRYPT_HOLD if source.encrypted else 0) + (
            3 * (self.hi - self.lo) if self.buffered else 0
        )
        if hold:
            self._held_source = await self.budget.take(hold)
        if not source.encrypted:
            reader = await store.get(key, start=pos, end=self.hi)
            # Stores that can hand over their buffers without copying them say so (obstore).
            views = getattr(reader, "views", None)
            it: AsyncIterator[Piece] = views(PIECE) if views is not None else aiter(reader)
            return _Open(source, it, getattr(it, "aclose", lambda: None))
        reader = await store.get(key)
        plain = decrypt_stream(reader, self.identities, chunk_size=PIECE, max_buffer=DECRYPT_BUFFER)
        return _Open(source, _window(plain, pos, self.hi), plain.aclose)

    def _give_back(self) -> None:
        """Give back all this read holds (it then may wait for the budget again)."""
        held = self._held_source + self._held_piece + self._handed
        self._held_source = self._held_piece = self._handed = 0
        self.budget.give(held)

    def _sent(self) -> None:
        """The server took this read's next bytes: the pieces handed to it before are sent."""
        self.budget.give(self._handed)
        self._handed = 0

    def _hand_over(self) -> None:
        """The piece being read has been passed on entirely."""
        self._handed += self._held_piece
        self._held_piece = 0

    def _fit(self, size: int) -> None:
        """The piece read is ``size`` bytes: keep that much of what was taken for it."""
        if size < self._held_piece:
            self.budget.give(self._held_piece - size)
            self._held_piece = size

    async def _next_source(self, last_error: str | None = None) -> None:
        """Open the next usable source at ``self.pos``; :class:`Unavailable` when none opens.
        Called holding nothing of the budget: opening a source may wait for it."""
        self._give_back()
        errors: list[str] = [last_error] if last_error else []
        while self.queue:
            source = self.queue.pop(0)
            name = source.replica.name
            if not self.health.usable(name):
                errors.append(f"{name}: marked down")
                continue
            try:
                self._give_back()  # what an earlier attempt took for its source
                self.current = await self._open(source, self.pos)
                return
            except asyncio.CancelledError:
                raise
            except NotFound as exc:
                errors.append(f"{name}: {describe(exc)}")
            except Exception as exc:  # any failure of a replica moves on to the next
                self.health.failed(name, describe(exc), revoked=isinstance(exc, AccessDenied))
                errors.append(f"{name}: {describe(exc)}")
        raise Unavailable("no replica could serve the object: " + "; ".join(errors))

    async def open(self) -> None:
        """Find a source (and, for a buffered read, read and check it all) before the response
        starts, so that a read nothing can serve is a clean 503."""
        await self._next_source()
        if self.buffered:
            self._data = await self._read_buffered()

    async def _close(self) -> None:
        if self.current is not None:
            close, self.current = self.current.close, None
            with contextlib.suppress(Exception):
                result = close()
                if asyncio.iscoroutine(result):
                    await result

    async def aclose(self) -> None:
        """Close the source and give back the budget (after the response's last send)."""
        await self._close()
        self._give_back()

    def _failed(self, exc: BaseException) -> str:
        assert self.current is not None
        source = self.current.source
        error = describe(exc)
        self.health.failed(source.replica.name, error, revoked=isinstance(exc, AccessDenied))
        self.events.failover(self.version, source, self.pos, error)
        return f"{source.replica.name}: {error}"

    # ------------------------------------------------------------------ buffered

    async def _read_buffered(self) -> memoryview:
        v = self.version
        assert v.chunks is not None
        while True:
            assert self.current is not None
            data = bytearray()
            try:
                async for piece in self.current.chunks:
                    data += piece
                    if len(data) >= self.hi - self.lo:
                        break
                if len(data) < self.hi - self.lo:
                    raise _Short(f"ended after {len(data)} of {self.hi - self.lo} bytes")
            except asyncio.CancelledError:
                await self._close()
                raise
            except Exception as exc:
                error = self._failed(exc)
                await self._close()
                await self._next_source(error)
                continue
            del data[self.hi - self.lo :]
            c, first = v.chunk_size, self.lo // v.chunk_size
            with memoryview(data) as view:
                bad = next(
                    (
                        first + i
                        for i in range(0, -(-len(data) // c))
                        if hashlib.sha256(view[i * c : (i + 1) * c]).digest() != v.chunks[first + i]
                    ),
                    None,
                )
            source = self.current.source
            await self._close()
            if bad is None:
                self.health.succeeded(source.replica.name)
                return memoryview(data)[self.start - self.lo : self.end - self.lo]
            self.events.mismatch(v, source, bad)
            await self._next_source(f"{source.replica.name}: chunk {bad} does not match")

    # ------------------------------------------------------------------ streamed

    async def body(self) -> AsyncGenerator[Piece, None]:
        """The response body; raises (the caller cuts the connection) when it cannot be
        completed with checked bytes."""
        if self._data is not None:
            yield self._data
            return
        try:
            if not self.version.verified:
                async for piece in self._unchecked():
                    yield piece
            else:
                async for piece in self._checked():
                    yield piece
        finally:
            await self._close()

    def _needs_wait(self) -> bool:
        """Take the budget for the next piece if it is free (True: it is not; the caller
        finishes and hands over what it holds, then :meth:`_wait_piece`). A decrypting
        source's pieces are within what the source holds."""
        assert self.current is not None
        if self.current.source.encrypted:
            return False
        self._held_piece = self.budget.try_take(PIECE_HOLD)
        return not self._held_piece

    async def _wait_piece(self) -> None:
        """Wait for the budget of the next piece, holding nothing meanwhile: not even the
        replica's reader, which keeps the last piece it handed over until it reads the next
        one; the read then goes on from the same replica at the same offset."""
        assert self.current is not None
        source = self.current.source
        await self._close()
        self.current = _Open(source, _ended(), lambda: None)  # a failure below is this replica's
        self._give_back()
        self._held_piece = await self.budget.take(PIECE_HOLD)
        self.current = await self._open(source, self.pos)

    async def _piece(self) -> Piece | None:
        """The current source's next piece (None at its end), fitted to the budget."""
        assert self.current is not None
        try:
            piece = await anext(self.current.chunks)
        except StopAsyncIteration:
            self.budget.give(self._held_piece)
            self._held_piece = 0
            return None
        if not self.current.source.encrypted:
            self._fit(len(piece))
        return piece

    async def _unchecked(self) -> AsyncIterator[Piece]:
        # Only the primary holds this version and nothing records its content: served as read.
        assert self.current is not None
        while self.pos < self.end:
            if self._needs_wait():
                if self._handed:
                    yield b""  # the server first sends what this read handed it
                    self._sent()
                await self._wait_piece()
            piece = await self._piece()
            if piece is None:
                break
            take = memoryview(piece)[: self.end - self.pos]
            self.pos += len(take)
            if take:
                yield take
                self._sent()
            # Nothing here may keep the piece alive once its budget is given back.
            piece, take = None, _EMPTY
            self._hand_over()
        if self.pos < self.end:
            raise _Short(f"the primary ended after {self.pos} of {self.end} bytes")
        self.health.succeeded(self.current.source.replica.name)

    async def _checked(self) -> AsyncIterator[Piece]:
        v = self.version
        assert v.chunks is not None
        c = v.chunk_size
        index = self.pos // c
        chunk_end = min(v.size, (index + 1) * c)
        hasher = hashlib.sha256()
        # The hash of the part before, running in a thread while that part is sent; awaited
        # before the next update (one hasher, updated in order) and before a chunk's check.
        hashing: asyncio.Future[None] | None = None
        held: Piece = b""
        while True:
            assert self.current is not None
            try:
                while self.pos < self.hi:
                    if self._needs_wait():
                        if hashing is not None:
                            await hashing
                            hashing = None
                        if self._handed:
                            yield b""  # the server first sends what this read handed it
                            self._sent()
                        await self._wait_piece()
                    piece = await self._piece()
                    if piece is None:
                        break
                    view = memoryview(piece)
                    while len(view) and self.pos < self.hi:
                        take = min(len(view), chunk_end - self.pos)
                        part = view[:take]
                        if hashing is not None:
                            await hashing
                        hashing = _hash(hasher, part)
                        a, b = max(self.pos, self.start), min(self.pos + take, self.end)
                        self.pos += take
                        view = view[take:]
                        if a < b:
                            out = part[a - (self.pos - take) : b - (self.pos - take)]
                            if b == self.end:  # the very last byte waits for its check
                                out, held = out[:-1], out[-1:]
                            if out:
                                yield out
                                self._sent()
                        if self.pos == chunk_end:
                            if hashing is not None:
                                await hashing
                                hashing = None
                            if hasher.digest() != v.chunks[index]:
                                self.events.mismatch(v, self.current.source, index)
                                raise ChunkMismatch(
                                    f"{self.current.source.replica.name}: chunk {index} of "
                                    f"{v.key!r} does not match its recorded SHA-256"
                                )
                            index += 1
                            hasher = hashlib.sha256()
                            chunk_end = min(v.size, (index + 1) * c)
                            if held:
                                yield held
                                self._sent()
                                held = b""
                    # Nothing here may keep the piece alive once its budget is given back.
                    piece, view = None, _EMPTY
                    part = out = _EMPTY
                    self._hand_over()
                if self.pos < self.hi:
                    raise _Short(f"ended at byte {self.pos} of {self.hi}")
                self.health.succeeded(self.current.source.replica.name)
                return
            except (asyncio.CancelledError, ChunkMismatch, GeneratorExit):
                raise
            except Exception as exc:
                error = self._failed(exc)
                await self._close()
                if hashing is not None:  # the chunk's hash goes on over the next replica
                    await hashing
                    hashing = None
                await self._next_source(error)


def _hash(hasher: hashlib._Hash, part: memoryview) -> asyncio.Future[None] | None:
    """Feed ``part`` to ``hasher``: in a worker thread when it is large (hashlib releases the
    GIL for large buffers, so the event loop goes on sending meanwhile), else at once."""
    if len(part) < THREAD_HASH_MIN:
        hasher.update(part)
        return None
    return asyncio.get_running_loop().run_in_executor(None, hasher.update, part)


async def _ended() -> AsyncIterator[Piece]:
    return
    yield b""  # an async generator that yields nothing


class _Short(DaulatError):
    """A replica's stream ended before the bytes it should hold."""


async def _window(chunks: AsyncIterator[bytes], start: int, end: int) -> AsyncIterator[Piece]:
    """Bytes ``[start, end)`` of a stream that begins at 0 (decrypted age data)."""
    pos = 0
    async for data in chunks:
        piece = memoryview(data)
        if pos + len(piece) <= start:
            pos += len(piece)
            continue
        lo = max(0, start - pos)
        hi = min(len(piece), end - pos)
        if lo < hi:
            yield piece[lo:hi]
        pos += len(piece)
        if pos >= end:
            return
