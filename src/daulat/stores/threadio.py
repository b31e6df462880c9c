"""Blocking clients under an async Store: calls on threads, bodies through bounded pipes.

The Google Cloud Storage client (:mod:`daulat.stores.gcs`) blocks. Its short calls (one
request and its answer) run on a :class:`DaemonPool`; a transfer (a download or an upload,
which lasts as long as the object takes) runs on a thread of its own (:func:`in_thread`), its
bytes coming back through a :class:`ToLoop` pipe or going out through a :class:`FromLoop`
pipe. Both pipes hold a few chunks at most, so memory stays flat whatever the object's size,
and each side can give up on the other: a reader that stops reading, or an upload that failed,
ends the other side's next wait with :class:`Abandoned` instead of leaving it blocked.

Transfers get threads of their own because a copy between two prefixes of one store has a
download feeding an upload: with a bounded pool, enough of them could take every thread and
wait for each other for ever. Short calls share a pool because starting a thread makes the
event loop wait until the new thread runs (milliseconds on a busy machine, per request). All
threads are daemons, so a request hanging until its timeout never holds up the end of the
process (Ctrl-C exits at once).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
from collections.abc import AsyncIterable, Callable
from typing import Any, TypeVar

from daulat.errors import DaulatError

T = TypeVar("T")

#: How often a thread blocked on a pipe looks whether the other side has gone.
_POLL = 0.25


class Abandoned(DaulatError):
    """The other side of a pipe has gone (closed, failed or its event loop ended)."""


def in_thread(fn: Callable[[], T], *, name: str) -> asyncio.Future[T]:
    """Run ``fn`` on a new daemon thread; its result (or exception) as an awaitable.

    Cancelling the awaitable does not stop the thread: ``fn`` must notice by itself (through
    a pipe's :class:`Abandoned`, or its requests' timeouts) that nobody waits any more.
    """
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def target() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed to the awaiting coroutine, not lost
            future.set_exception(exc)

    threading.Thread(target=target, name=name, daemon=True).start()
    return asyncio.wrap_future(future)


class DaemonPool:
    """Up to ``size`` daemon threads for short blocking calls, started as they are needed."""

    def __init__(self, size: int, *, name: str) -> None:
        self._size = size
        self._name = name
        self._work: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[[], Any]]] = (
            queue.SimpleQueue()
        )
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads = 0

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._work.put((future, fn))
        if self._idle.acquire(blocking=False):
            return future  # an idle thread takes it
        with self._lock:
            start = self._threads < self._size
            if start:
                self._threads += 1
        if start:
            threading.Thread(
                target=self._run, name=f"{self._name}-{self._threads}", daemon=True
            ).start()
        return future

    def _run(self) -> None:
        while True:
            future, fn = self._work.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to the caller, not lost
                    future.set_exception(exc)
            del future, fn
            self._idle.release()

    def run(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """``fn`` on a pool thread, as an awaitable."""
        return asyncio.wrap_future(self.submit(fn))


class _End:
    """End of a pipe's stream: normal, or failed with ``error``."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class ToLoop:
    """Bytes from a worker thread to a coroutine, at most ``depth`` chunks ahead.

    The thread calls :meth:`send` and finally :meth:`finish`; the coroutine iterates with
    :meth:`receive` until it returns None, and calls :meth:`close` when it stops early.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[bytes | _End] = asyncio.Queue(depth)
        self._closed = threading.Event()

    def _put(self, item: bytes | _End) -> None:
        if self._closed.is_set():
            raise Abandoned
        try:
            future = asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop)
        except RuntimeError:  # the event loop has ended
            raise Abandoned from None
        while True:
            try:
                future.result(timeout=_POLL)
                return
            except concurrent.futures.TimeoutError:
                if self._closed.is_set() or self._loop.is_closed():
                    future.cancel()
                    raise Abandoned from None
            except concurrent.futures.CancelledError:
                raise Abandoned from None

    def send(self, chunk: bytes) -> None:
        """(Thread) Hand over one chunk; :class:`Abandoned` if the reader has gone."""
        self._put(chunk)

    def finish(self, error: BaseException | None = None) -> None:
        """(Thread) The stream ended, normally or with ``error``. Never raises."""
        with contextlib.suppress(Abandoned):
            self._put(_End(error))

    async def receive(self) -> bytes | None:
        """(Loop) The next chunk, None at the end; the thread's error is raised here."""
        item = await self._queue.get()
        if isinstance(item, _End):
            if item.error is not None:
                raise item.error
            return None
        return item

    def close(self) -> None:
        """(Loop) Stop: the thread's next :meth:`send` raises :class:`Abandoned`."""
        self._closed.set()


class TooLong(DaulatError):
    """A download sent more bytes than were asked for."""


class PipeWriter:
    """A write-only file for a blocking download: gathers its small writes (the Google client
    writes 8 KiB at a time) into chunks of ``chunk`` bytes for a :class:`ToLoop` pipe. More
    than ``limit`` bytes in all raise :class:`TooLong` (a server may send more than a range
    asked for; the client only logs it)."""

    def __init__(self, pipe: ToLoop, chunk: int, *, limit: int | None = None) -> None:
        self._pipe = pipe
        self._chunk = chunk
        self._limit = limit
        self._buffer = bytearray()
        self.written = 0

    def write(self, data: bytes) -> int:
        self.written += len(data)
        if self._limit is not None and self.written > self._limit:
            raise TooLong(f"{self.written} bytes where {self._limit} were asked for")
        self._buffer += data
        if len(self._buffer) >= self._chunk:
            self._pipe.send(bytes(self._buffer))
            self._buffer.clear()
        return len(data)

    def flush(self) -> None:
        if self._buffer:
            self._pipe.send(bytes(self._buffer))
            self._buffer.clear()


class FromLoop:
    """An async body feeding a blocking upload, read on a worker thread as a file.

    :meth:`pump` (a task on the loop) reads the body ahead by at most ``limit`` bytes (and at
    least one chunk, whatever its size); :meth:`read` (on the thread) takes them. A body that
    fails hands its error to the thread, which raises :class:`BodyFailed` there, and keeps it
    in :attr:`error` for the coroutine to raise unchanged. :meth:`seek` goes back within the
    bytes the last :meth:`read` returned (a resumable upload resends what the server did not
    keep).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self._loop = loop
        self._limit = limit
        self._queue: asyncio.Queue[bytes | _End] = asyncio.Queue()
        self._queued = 0  # bytes in the queue
        self._room = asyncio.Condition()
        self._closed = threading.Event()
        self.error: BaseException | None = None
        self.eof = False
        self._pos = 0
        self._pending = bytearray()
        self._last = b""

    async def pump(self, body: AsyncIterable[bytes]) -> None:
        """(Loop) Feed ``body`` to the thread, then its end or its error."""
        try:
            async for chunk in body:
                if not chunk:
                    continue
                data = bytes(chunk)
                async with self._room:
                    await self._room.wait_for(lambda: self._queued < self._limit)
                    self._queued += len(data)
                self._queue.put_nowait(data)
        except Exception as exc:
            self.error = exc
            self._queue.put_nowait(_End(exc))
            return
        self._queue.put_nowait(_End())

    async def _get(self) -> bytes | _End:
        item = await self._queue.get()
        if isinstance(item, bytes):
            async with self._room:
                self._queued -= len(item)
                self._room.notify_all()
        return item

    def close(self) -> None:
        """(Loop) The upload is given up: the thread's next :meth:`read` raises."""
        self._closed.set()

    def _take(self) -> bytes | _End:
        if self._closed.is_set():
            raise Abandoned
        try:
            future = asyncio.run_coroutine_threadsafe(self._get(), self._loop)
        except RuntimeError:
            raise Abandoned from None
        while True:
            try:
                return future.result(timeout=_POLL)
            except concurrent.futures.TimeoutError:
                if self._closed.is_set() or self._loop.is_closed():
                    future.cancel()
                    raise Abandoned from None
            except concurrent.futures.CancelledError:
                raise Abandoned from None

    # -- the file interface the upload reads (on its thread) ----------------------------------

    def read(self, size: int = -1) -> bytes:
        while (size < 0 or len(self._pending) < size) and not self.eof:
            item = self._take()
            if isinstance(item, _End):
                if item.error is not None:
                    raise BodyFailed from None
                self.eof = True
            else:
                self._pending += item
        n = len(self._pending) if size < 0 else min(size, len(self._pending))
        out = bytes(self._pending[:n])
        del self._pending[:n]
        self._last = out
        self._pos += n
        return out

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        back = self._pos - pos
        if whence != 0 or back < 0 or back > len(self._last):
            raise OSError("an upload body can only go back within its last chunk")
        if back:
            self._pending[0:0] = self._last[len(self._last) - back :]
            self._last = self._last[: len(self._last) - back]
            self._pos = pos
        return pos


class BodyFailed(DaulatError):
    """(Thread) The upload's body failed; its own error is in :attr:`FromLoop.error`."""
