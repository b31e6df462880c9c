"""One incoming body, streamed to several stores at once with bounded buffers.

Each store reads its own stream (:meth:`Fanout.stream`); the pieces are shared, not copied
per store. A store that falls behind holds the others back once :data:`DEPTH` pieces wait
for it: memory per request stays within ``DEPTH + 1`` pieces plus what each store's upload
buffers itself, whatever the object's size. A store whose put fails stops being fed (its
stream is never read again); the rest go on.

The first put is the one the write cannot do without (the primary's): once it failed, the
others are failed too (their streams raise :class:`Abandoned`, so each store aborts its
upload as for any failed body) and the rest of the body is left unread.

A store's put commits the object only when its stream ends (the Store contract: S3's
single PUT or CompleteMultipartUpload, Azure's block list, a file's rename, all after the
last piece; a stream that raises instead leaves the key as it was). So the ends are handed
out in order: the end of the body reaches the first put only after the source has ended
without error (the source checks the body's promises before it ends:
:mod:`daulat.gateway.payload`), and the others' only after the first put has *returned*
(and ``committed``, the caller's step between the two, has run). A first put that fails
at its very end (a description its filesystem cannot keep, a file it may not replace)
has the others' streams raise :class:`Abandoned` instead: whatever they held of the key
they still hold. When the source fails, every stream raises that error instead of ending.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TypeVar

from daulat.errors import DaulatError

T = TypeVar("T")

#: Pieces queued per store (each up to payload.PIECE: 1 MiB).
DEPTH = 4


class Abandoned(DaulatError):
    """The put every other one depends on failed: this one is given up."""


class _End:
    pass


_END = _End()


class _Feed:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | _End | BaseException] = asyncio.Queue(DEPTH)
        self.task: asyncio.Task[object] | None = None

    @property
    def alive(self) -> bool:
        return self.task is None or not self.task.done()

    async def give(self, item: bytes | _End | BaseException) -> None:
        """Queue ``item`` unless the store's put has ended (then it is dropped)."""
        if not self.alive:
            return
        if not self.queue.full():
            self.queue.put_nowait(item)
            return
        assert self.task is not None
        put = asyncio.ensure_future(self.queue.put(item))
        try:
            await asyncio.wait({put, self.task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not put.done():
                put.cancel()

    async def stream(self) -> AsyncIterator[bytes]:
        while True:
            item = await self.queue.get()
            if isinstance(item, _End):
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class Fanout:
    """Run ``len(puts)`` puts, each given its own stream of ``source``'s pieces; the first
    is required (see the module docstring)."""

    def __init__(
        self,
        source: AsyncIterable[bytes],
        committed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.source = source
        #: Awaited once the first put has returned, before any other stream ends.
        self.committed = committed
        self.error: BaseException | None = None  # what ended the source or `committed`

    async def run(
        self, puts: list[Callable[[AsyncIterator[bytes]], Awaitable[T]]]
    ) -> list[T | BaseException]:
        """Each put's result, or the exception it raised, in order. Reads the source while
        any put is still taking it; a put's failure never stops the others."""
        feeds = [_Feed() for _ in puts]
        for feed, put in zip(feeds, puts, strict=True):
            feed.task = asyncio.ensure_future(put(feed.stream()))
        try:
            await self._pump(feeds)
        except asyncio.CancelledError:
            for feed in feeds:
                assert feed.task is not None
                feed.task.cancel()
            raise
        out: list[T | BaseException] = []
        for feed in feeds:
            assert feed.task is not None
            try:
                out.append(await feed.task)  # type: ignore[arg-type]
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                out.append(exc)
        return out

    async def _pump(self, feeds: list[_Feed]) -> None:
        try:
            async for piece in self.source:
                if not feeds[0].alive:
                    # The first put ended before its stream did: it failed.
                    for feed in feeds[1:]:
                        await feed.give(Abandoned("the primary did not take the write"))
                    return  # the rest of the body is left unread
                for feed in feeds:
                    await feed.give(piece)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = exc
            for feed in feeds:
                await feed.give(exc)
            return
        first, rest = feeds[0], feeds[1:]
        await first.give(_END)
        assert first.task is not None
        # The first put's own outcome is read from its task by run(); here only whether it
        # committed matters (asyncio.wait neither raises it nor consumes it).
        await asyncio.wait({first.task})
        if first.task.cancelled() or first.task.exception() is not None:
            for feed in rest:
                await feed.give(Abandoned("the primary did not take the write"))
            return
        if self.committed is not None:
            try:
                await self.committed()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.error = exc
                for feed in rest:
                    await feed.give(Abandoned(f"the write could not be recorded: {exc}"))
                return
        for feed in rest:
            await feed.give(_END)
