"""Reading an object for a client: from the first replica that answers, every byte checked
*before* it is sent.

The read covers whole 8 MiB chunks (a range is widened to the chunks it touches, the bytes
outside it read and hashed but not sent) so that every chunk served is hashed in full and
compared with the chunk hash recorded when the copy was made. No byte of a chunk reaches the
client before the whole chunk has matched its hash. Two modes:

- **buffered** (the widened span is at most :data:`BUFFER_LIMIT`: small objects): the span
  is read and checked before the response starts;
- **streamed** (larger spans): chunk by chunk. A chunk is read from a replica and held, its
  SHA-256 checked, and only then sent; the next chunk is read and checked while the previous
  one is being sent, so a read holds at most two chunks. The first chunk is checked before the
  response starts.

In both modes a replica that fails (connection reset, 5xx, 403) or whose chunk does not match
is replaced by the next one *at the start of that chunk*, and nothing of the chunk has been
sent yet, so the client sees one uninterrupted, correct response. A replica whose chunk does
not match is not used for that object again (audited as ``gateway.mismatch``). When no replica
is left: before the response starts, S3's 503; after, the response is cut at the end of the
last chunk that matched, so the client sees a failed transfer whose bytes are all right.

Pieces travel as :class:`memoryview` slices of what the store handed over (no copies on the
way to the socket), and each piece is hashed in a worker thread while the next one is read
(hashlib releases the GIL for large buffers), so the event loop only moves bytes.

**Memory.** Every read takes the bytes it is about to hold from the gateway's
:class:`~daulat.gateway.budget.ByteBudget` (``[gateway] read_buffers``) and gives them back
once the server has sent them (known when the server takes the read's next bytes: it first
drains what it holds), so concurrent reads wait for memory instead of growing it. A streamed
read of a plain replica takes a chunk and a piece (:data:`PIECE_HOLD`) for each chunk it reads
and gives the chunk back once sent; when the budget is spent it first finishes sending what it
holds, closes the replica's stream and waits (its only holding then being a chunk already
handed to the server, which is given back whatever the budget does, reads cannot wait for one
another). A buffered read takes its span three times over; an age replica
:data:`DECRYPT_HOLD` for its decrypting stream and, streamed, two chunks, for as long as it is
read (it is not reopened to wait: that would decrypt it again from its start). Not counted: the
HTTP clients' read buffers and the copied ends of pieces sent (64 KiB per response).

Age-encrypted replicas are decrypted on the fly (pyrage has no seeking): a read at offset N of
such a replica decrypts and discards the N bytes before it, which costs CPU (about 500 MB/s)
and the provider's bandwidth for those bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from daulat.crypto import NO_MATCHING_IDENTITY, DecryptError, Identity, decrypt_stream
from daulat.errors import DaulatError, NotFound
from daulat.gateway.budget import ByteBudget
from daulat.gateway.health import Health, answered, refused_access
from daulat.gateway.replicas import Source, Version
from daulat.stores.described import Described, of_reader

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

#: Benchmark-only: ``bench/gateway.py --ceiling`` sets this to False in the server process it
#: starts, to measure what the chunk check costs (the same read path with hashing left out).
#: Never set from configuration or the environment: a gateway always checks what it serves.
_CHECK_CHUNKS = True
_EMPTY = memoryview(b"")


class Unavailable(DaulatError):
    """No replica could serve the object (S3 503)."""


class Events(Protocol):
    def failover(self, version: Version, failed: Source, offset: int, error: str) -> None: ...

    def mismatch(self, version: Version, source: Source, chunk: int, why: str = "") -> None: ...


@dataclass
class _Chunk:
    """One chunk read and checked, held until it is sent: object bytes ``[lo, hi)``."""

    lo: int
    hi: int
    pieces: list[Piece]
    taken: int  # of the budget, given back once it is sent


@dataclass
class _Open:
    source: Source
    chunks: AsyncIterator[Piece]
    close: Callable[[], object]


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."


async def described(
    version: Version, health: Health, skip: Callable[[Source], bool] = lambda s: False
) -> Described:
    """How ``version`` is described (a HEAD's headers): by the replica a GET would begin
    from (the first usable one of its sources holding it verified, of the recorded size), so
    that HEAD and GET answer alike; nothing from an age replica (none is kept) or none."""
    for source in version.sources:
        if skip(source) or not health.usable(source.replica.name):
            continue
        if source.encrypted:
            return Described()
        try:
            reader = await health.within(
                source.replica.name, source.replica.store.get(source.key, start=0, end=0)
            )
        except asyncio.CancelledError:
            raise
        except Exception:  # the read that follows, if any, judges the replica
            continue
        if reader.info.size != version.size:  # replaced there: a GET would fail over from it
            continue
        return of_reader(reader)
    return Described()


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
        missing: Callable[[Source], Awaitable[str]] | None = None,
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
        # Streamed checked reads: the chunk being read, the chunks read (checked, to be sent
        # or being sent), and a source's hold kept until the chunk being sent (which it may
        # cover) is out.
        self._filling = 0
        self._chunks_held = 0
        self._retired = 0
        self._sending = False
        self._first: _Chunk | None = None
        # Bytes a source handed over past the end of the chunk being read: the next chunk's.
        self._carry: Piece = _EMPTY
        size, c = version.size, version.chunk_size
        if version.verified:
            self.lo = start - start % c
            self.hi = min(size, -(-end // c) * c) if end > 0 else min(size, c)
        else:
            self.lo, self.hi = start, end
        self.pos = self.lo
        self.skip = skip
        # Asked when a replica answers that it does not hold the object: whether it is gone
        # (down) or withholds a copy it is recorded to hold (a finding); says which, for the
        # 503's message.
        self.missing = missing
        self.queue = [s for s in version.sources if not skip(s)]
        self.current: _Open | None = None
        self.buffered = version.verified and self.hi - self.lo <= BUFFER_LIMIT
        self._data: memoryview | None = None
        #: How the replica last opened describes the object (Content-Type, user metadata):
        #: after :meth:`open`, the one the response's headers are of.
        self.described = Described()

    # ------------------------------------------------------------------ opening

    async def _open(self, source: Source, pos: int) -> _Open:
        store, key = source.replica.store, source.key
        hold = 3 * (self.hi - self.lo) if self.buffered else 0
        if source.encrypted:
            # Streamed, the chunk being sent and the one being read are within this hold: the
            # decrypting stream never waits for the budget while it is open.
            streamed = 0 if self.buffered or not self.version.verified else 2
            hold += DECRYPT_HOLD + streamed * min(self.version.chunk_size, self.hi - self.lo)
        if hold:
            self._held_source = await self.budget.take(hold)
        if not source.encrypted:
            reader = await store.get(key, start=pos, end=self.hi)
            self.described = of_reader(reader)
            # Stores that can hand over their buffers without copying them say so (obstore).
            views = getattr(reader, "views", None)
            it: AsyncIterator[Piece] = views(PIECE) if views is not None else aiter(reader)
            return _Open(source, it, getattr(it, "aclose", lambda: None))
        reader = await store.get(key)
        # Nothing describes the plaintext beside ciphertext (see daulat.gateway.writes).
        self.described = Described()
        plain = decrypt_stream(reader, self.identities, chunk_size=PIECE, max_buffer=DECRYPT_BUFFER)
        return _Open(source, _window(plain, pos, self.hi), plain.aclose)

    def _give_back(self) -> None:
        """Give back all this read holds (it then may wait for the budget again)."""
        held = self._held_source + self._held_piece + self._handed + self._retired
        held += self._filling + self._chunks_held
        self._held_source = self._held_piece = self._handed = self._retired = 0
        self._filling = self._chunks_held = 0
        self.budget.give(held)

    def _drop_source(self) -> None:
        """Give back what the current source holds, before another is opened. A decrypting
        source's hold covers the chunk being sent, if any: kept until that chunk is out."""
        self.budget.give(self._held_piece + self._handed)
        self._held_piece = self._handed = 0
        self._retired += self._held_source
        self._held_source = 0
        self._carry = _EMPTY
        if not self._sending:
            self.budget.give(self._retired)
            self._retired = 0

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
        Called holding nothing of the budget but a chunk being sent (which is given back
        whatever the budget does): opening a source may wait for it."""
        self._drop_source()
        errors: list[str] = [last_error] if last_error else []
        while self.queue:
            source = self.queue.pop(0)
            name = source.replica.name
            if not self.health.usable(name):
                last = self.health.circuit(name).last_error
                errors.append(f"{name}: down" + (f" ({last})" if last else ""))
                continue
            try:
                self._drop_source()  # what an earlier attempt took for its source
                self.current = await self._open(source, self.pos)
                return
            except asyncio.CancelledError:
                raise
            except NotFound as exc:
                why = describe(exc)
                if self.missing is not None:
                    # Asking why lists the replica: a failure of that is this replica's too.
                    with contextlib.suppress(Exception):
                        why = await self.missing(source)
                errors.append(f"{name}: {why}")
            except Exception as exc:  # any failure of a replica moves on to the next
                self.health.failed(name, describe(exc), revoked=refused_access(exc))
                errors.append(f"{name}: {describe(exc)}")
        raise Unavailable("no replica could serve the object: " + "; ".join(errors))

    async def open(self) -> None:
        """Find a source (and, for a buffered read, read and check it all) before the response
        starts, so that a read nothing can serve is a clean 503."""
        await self._next_source()
        if self.buffered:
            self._data = await self._read_buffered()
        elif self.version.verified:
            self._first = await self._fill()

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
        source, error = self.current.source, describe(exc)
        if source.encrypted and isinstance(exc, DecryptError) and str(exc) != NO_MATCHING_IDENTITY:
            # Age ciphertext that does not authenticate: the replica holds other bytes than
            # were copied (an altered object, not an outage): that object is not read from it
            # again, and the replica stays up for every other object.
            index = self.pos // self.version.chunk_size
            self.events.mismatch(self.version, source, index, error)
            return f"{source.replica.name}: its copy is altered ({error})"
        gone = not answered(exc) and not isinstance(exc, DecryptError)  # broke off: down now
        self.health.failed(source.replica.name, error, revoked=refused_access(exc), gone=gone)
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
        """The checked chunks in turn, each read (and checked) while the one before is sent."""
        chunk, self._first = self._first, None
        ahead: asyncio.Task[_Chunk] | None = None
        try:
            while chunk is not None:
                if self.pos < self.hi:
                    ahead = asyncio.get_running_loop().create_task(self._fill())
                self._sending = True
                a, b = max(self.start, chunk.lo), min(self.end, chunk.hi)
                at = chunk.lo
                for piece in chunk.pieces:
                    lo, at = at, at + len(piece)
                    if max(a, lo) < min(b, at):
                        yield piece[max(a, lo) - lo : min(b, at) - lo]
                # The server took every piece of the chunk (their ends as copies): it is out.
                piece = _EMPTY
                chunk.pieces.clear()
                self._sending = False
                self._chunks_held -= chunk.taken
                self.budget.give(chunk.taken + self._retired)
                self._retired = 0
                chunk = None
                if ahead is not None:
                    chunk, ahead = await ahead, None
        finally:
            self._sending = False
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(BaseException):
                    await ahead  # its budget is counted in what aclose gives back

    async def _fill(self) -> _Chunk:
        """Read the chunk at ``self.pos`` and check it, from the next source when one fails or
        does not match (starting the chunk again); :class:`Unavailable` when none is left."""
        v = self.version
        assert v.chunks is not None
        index = self.pos // v.chunk_size
        lo, hi = self.pos, min(self.hi, (index + 1) * v.chunk_size)
        while True:
            assert self.current is not None
            pieces: list[Piece] = []
            hasher = hashlib.sha256()
            hashing: asyncio.Future[None] | None = None
            try:
                await self._take_chunk(hi - lo)
                got = 0
                while got < hi - lo:
                    piece = await self._next_piece()
                    if piece is None:
                        raise _Short(f"ended at byte {lo + got} of {self.hi}")
                    view = memoryview(piece)
                    if len(view) > hi - lo - got:
                        # The rest is the next chunk's: a copy, so that this chunk's pieces
                        # are freed once it is sent.
                        self._carry = bytes(view[hi - lo - got :])
                        view = view[: hi - lo - got]
                    if hashing is not None:
                        await hashing
                    hashing = _hash(hasher, view) if _CHECK_CHUNKS else None
                    pieces.append(view)
                    got += len(view)
                if hashing is not None:
                    await hashing
                    hashing = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if hashing is not None:
                    with contextlib.suppress(Exception):
                        await hashing
                pieces.clear()
                self.budget.give(self._filling)
                self._filling = 0
                error = self._failed(exc)
                await self._close()
                await self._next_source(error)
                continue
            source = self.current.source
            if not _CHECK_CHUNKS or hasher.digest() == v.chunks[index]:
                self.health.succeeded(source.replica.name)
                # Keep the chunk's bytes; the piece being assembled is done with.
                keep = min(self._filling, hi - lo)
                self.budget.give(self._filling - keep)
                self._filling = 0
                self._chunks_held += keep
                self.pos = hi
                return _Chunk(lo, hi, pieces, keep)
            pieces.clear()
            self.budget.give(self._filling)
            self._filling = 0
            self.events.mismatch(v, source, index)
            await self._close()
            await self._next_source(f"{source.replica.name}: chunk {index} does not match")

    async def _next_piece(self) -> Piece | None:
        assert self.current is not None
        if self._carry:
            piece, self._carry = self._carry, _EMPTY
            return piece
        try:
            return await anext(self.current.chunks)
        except StopAsyncIteration:
            return None

    async def _take_chunk(self, size: int) -> None:
        """Take the budget for reading a chunk of ``size`` bytes from a plain source (a
        decrypting source's hold covers its chunks). When it is spent: close the replica's
        stream (it keeps the last piece it handed over), wait, holding nothing but a chunk
        being sent, and open it again at the same offset."""
        assert self.current is not None
        if self.current.source.encrypted:
            return
        self._filling = self.budget.try_take(size + PIECE_HOLD)
        if self._filling:
            return
        source = self.current.source
        await self._close()
        self._carry = _EMPTY
        self.current = _Open(source, _ended(), lambda: None)  # a failure below is this replica's
        self._filling = await self.budget.take(size + PIECE_HOLD)
        self.current = await self._open(source, self.pos)


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
