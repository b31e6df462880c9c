"""Bounded-memory streaming age encryption and decryption.

:func:`encrypt_stream` / :func:`decrypt_stream` turn an async iterable of chunks into an async
iterator of chunks of at least ``chunk_size`` bytes (1 MiB; only the last one may be shorter),
in memory bounded by ``max_buffer`` whatever the object size. pyrage has no incremental API,
so each stream runs ``pyrage.encrypt_io``/``decrypt_io`` in its own worker thread between a
reader fed from the event loop and a writer feeding it back, both through bounded queues
(:class:`_Bridge`); the behaviour the package docstring (:mod:`daulat.crypto`) describes
(back-pressure, errors, early close, GIL time, per-chunk authentication) is this module's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import AsyncIterable, Callable, Sequence
from typing import Final, final

import pyrage  # type: ignore[import-untyped]

from daulat.crypto.errors import CryptoError, _Aborted, decrypt_error, encrypt_error
from daulat.crypto.keys import Identity, Recipient, raw_identities, raw_recipients

MiB: Final = 1024 * 1024
#: Target size of the chunks the streams yield (only the last chunk may be smaller).
DEFAULT_CHUNK_SIZE: Final = 1 * MiB
#: Default bound on the bytes queued between the event loop and a stream's worker thread.
DEFAULT_MAX_BUFFER: Final = 8 * MiB


_Operation = Callable[[object, object], None]


class _Bridge:
    """Bounded byte queues between the event loop and one worker thread running pyrage.

    The loop side feeds input chunks (:meth:`feed`) and takes output chunks
    (:meth:`next_output`); the worker side is the file-like object pyrage reads from
    (:meth:`read`) and writes to (:meth:`write`). One lock and condition guard both queues; only
    the worker ever waits on the condition, and the loop side waits on asyncio events the worker
    sets with ``call_soon_threadsafe`` only when the loop is actually waiting.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        chunk_size: int,
        max_buffer: int,
    ) -> None:
        self._loop = loop
        self._cond = threading.Condition(threading.Lock())
        self._chunk_size = chunk_size
        self._in_limit = max(1, max_buffer // 2)
        self._out_limit = max(1, max_buffer - self._in_limit)
        self._cancelled = False
        # loop -> worker
        self._in: collections.deque[bytes] = collections.deque()
        self._in_bytes = 0
        self._in_eof = False
        self._in_failed = False
        self.source_error: BaseException | None = None
        self._feeder_waiting = False
        self._space = asyncio.Event()
        # worker -> loop
        self._out: collections.deque[bytes] = collections.deque()
        self._out_bytes = 0
        self._out_done = False
        self._out_error: BaseException | None = None
        self._consumer_waiting = False
        self._data = asyncio.Event()
        self._worker_done: asyncio.Future[None] = loop.create_future()
        self._worker: threading.Thread | None = None
        # worker-only state
        self._cur = b""
        self._cur_off = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._write_failed = False
        self._read_failed = False

    # -- loop side -----------------------------------------------------------------------------

    async def feed(self, chunks: AsyncIterable[bytes]) -> None:
        """Copy the source into the input queue, waiting while the queue is full."""
        iterator = aiter(chunks)
        try:
            async for item in iterator:
                if not isinstance(item, (bytes, bytearray, memoryview)):
                    raise TypeError(f"stream chunks must be bytes-like, got {type(item).__name__}")
                if not item:
                    continue
                chunk = bytes(item) if not isinstance(item, bytes) else item
                while True:
                    with self._cond:
                        if self._cancelled:
                            return
                        if not self._in or self._in_bytes + len(chunk) <= self._in_limit:
                            self._in.append(chunk)
                            self._in_bytes += len(chunk)
                            self._cond.notify_all()
                            break
                        self._feeder_waiting = True
                        self._space.clear()
                    await self._space.wait()
        except BaseException as exc:
            # Also on cancellation from outside, so that the worker never waits for input
            # that will not come.
            with self._cond:
                if not self._cancelled:
                    self.source_error = exc
                self._in_failed = True
                self._cond.notify_all()
            if not isinstance(exc, Exception):
                raise
        else:
            with self._cond:
                self._in_eof = True
                self._cond.notify_all()
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def next_output(self) -> bytes | None:
        """The next output chunk; None at the end; raises the stream's error."""
        while True:
            with self._cond:
                if self._out:
                    data = self._out.popleft()
                    self._out_bytes -= len(data)
                    self._cond.notify_all()
                    return data
                if self._out_done:
                    error = self._out_error
                    break
                self._consumer_waiting = True
                self._data.clear()
            await self._data.wait()
        if error is None:
            return None
        if self.source_error is not None:
            raise self.source_error
        raise error

    def start_worker(self, operation: _Operation, name: str) -> None:
        worker = threading.Thread(target=self.run, args=(operation,), name=name, daemon=True)
        try:
            worker.start()
        except BaseException:
            self._worker_done.set_result(None)
            raise
        self._worker = worker

    def cancel(self, feeder: asyncio.Task[None]) -> None:
        """Tell the worker and the feeder to stop, without waiting (idempotent; from any
        thread, as a finaliser may run in one)."""
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()
        if feeder.done():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            feeder.cancel()
        else:
            self._call_loop(feeder.cancel)

    async def shutdown(self, feeder: asyncio.Task[None]) -> None:
        """Stop the worker and the feeder (idempotent) and wait until both have ended."""
        self.cancel(feeder)
        await asyncio.wait([feeder, self._worker_done])
        if self._worker is not None:
            # The worker has reported its end and only has to return: this join is immediate.
            self._worker.join(timeout=1.0)
        if not feeder.cancelled():
            feeder.exception()  # retrieved: the consumer already got source errors

    # -- worker side ---------------------------------------------------------------------------

    def read(self, size: int = -1) -> bytes:
        """File-like read for pyrage: at most ``size`` bytes; b"" at the end of the source."""
        if self._cancelled:
            self._read_failed = True
            raise _Aborted("stream cancelled by its consumer")
        cur = self._cur
        off = self._cur_off
        if off >= len(cur):
            wake = False
            with self._cond:
                while not (self._in or self._in_eof or self._in_failed or self._cancelled):
                    self._cond.wait()
                if self._cancelled or self._in_failed:
                    self._read_failed = True
                    if self._cancelled:
                        raise _Aborted("stream cancelled by its consumer")
                    raise _Aborted("the source of the stream failed")
                if not self._in:
                    return b""
                cur = self._in.popleft()
                self._in_bytes -= len(cur)
                if self._feeder_waiting and (not self._in or self._in_bytes <= self._in_limit // 2):
                    self._feeder_waiting = False
                    wake = True
            if wake:
                self._call_loop(self._space.set)
            off = 0
        if size < 0 or size >= len(cur) - off:
            piece = cur if off == 0 else cur[off:]
            self._cur = b""
            self._cur_off = 0
        else:
            piece = cur[off : off + size]
            self._cur = cur
            self._cur_off = off + size
        return piece

    def write(self, data: bytes) -> int:
        """File-like write for pyrage: coalesce pieces into ``chunk_size`` output chunks."""
        try:
            if self._cancelled:
                raise _Aborted("stream cancelled by its consumer")
            size = len(data)
            self._pending.append(bytes(data))
            self._pending_bytes += size
            if self._pending_bytes >= self._chunk_size:
                self._push_pending()
            return size
        except BaseException:
            self._write_failed = True
            raise

    def flush(self) -> None:
        """File-like flush: nothing to do (chunks are pushed when full and at the end)."""

    def _push_pending(self) -> None:
        if not self._pending:
            return
        chunk = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending = []
        self._pending_bytes = 0
        wake = False
        with self._cond:
            while (
                self._out and self._out_bytes + len(chunk) > self._out_limit and not self._cancelled
            ):
                self._cond.wait()
            if self._cancelled:
                raise _Aborted("stream cancelled by its consumer")
            self._out.append(chunk)
            self._out_bytes += len(chunk)
            if self._consumer_waiting:
                self._consumer_waiting = False
                wake = True
        if wake:
            self._call_loop(self._data.set)

    def run(self, operation: _Operation) -> None:
        """Worker thread body: run pyrage, flush the tail, report the outcome to the loop."""
        error: BaseException | None = None
        try:
            operation(self, self)
            # pyrage flushes its last buffered piece when dropping its BufWriter and ignores
            # errors there, so failures of our reader and writer are checked here rather than
            # trusted to surface through pyrage.
            if self._write_failed:
                raise _Aborted("writing the output failed")
            if self._read_failed:
                raise _Aborted("reading the input failed")
            self._push_pending()
        except BaseException as exc:
            error = exc
        self._pending = []
        self._cur = b""
        with self._cond:
            self._out_done = True
            self._out_error = error
            self._consumer_waiting = False
        self._call_loop(self._finish_on_loop)

    def _finish_on_loop(self) -> None:
        self._data.set()
        if not self._worker_done.done():
            self._worker_done.set_result(None)

    def _call_loop(self, callback: Callable[[], object]) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to tell
            self._loop.call_soon_threadsafe(callback)


def _check_stream_args(chunk_size: int, max_buffer: int) -> None:
    if chunk_size <= 0:
        raise ValueError("chunk_size must be > 0")
    if max_buffer <= 0:
        raise ValueError("max_buffer must be > 0")


@final
class AgeStream:
    """The output of :func:`encrypt_stream` / :func:`decrypt_stream`: an async iterator of
    chunks, with ``aclose()``.

    Deliberately not an async generator. When a run is cancelled, the code that consumes a
    stream (a hashing loop, an upload) may stop without closing it; asyncio then closes
    abandoned async generators itself, concurrently, at garbage collection or when the loop
    shuts down, and a generator that was itself closing an inner one is then "already running"
    (``RuntimeError: aclose(): asynchronous generator is already running``, printed as a
    traceback on Ctrl-C). This object needs no such help: ``aclose()`` is idempotent and may
    run concurrently, and an abandoned stream stops its worker and its feeder without awaiting
    anything (:meth:`__del__`).
    """

    def __init__(
        self,
        chunks: AsyncIterable[bytes],
        operation: _Operation,
        map_error: Callable[[BaseException], CryptoError],
        *,
        name: str,
        chunk_size: int,
        max_buffer: int,
    ) -> None:
        self._chunks: AsyncIterable[bytes] | None = chunks
        self._operation = operation
        self._map_error = map_error
        self._name = name
        self._chunk_size = chunk_size
        self._max_buffer = max_buffer
        self._bridge: _Bridge | None = None
        self._feeder: asyncio.Task[None] | None = None
        self._finished = False

    def __aiter__(self) -> AgeStream:
        return self

    async def __anext__(self) -> bytes:
        if self._finished:
            raise StopAsyncIteration
        bridge = self._bridge if self._bridge is not None else self._start()
        try:
            chunk = await bridge.next_output()
        except CryptoError:
            await self.aclose()
            raise
        except Exception as exc:
            await self.aclose()
            if exc is bridge.source_error:
                raise
            raise self._map_error(exc) from None
        except BaseException:
            # Cancelled: the stream ends, as a generator would; its worker and feeder are
            # stopped and (unless cancelled again meanwhile) awaited, so the source is closed
            # before the consumer goes on to abort what it was writing.
            self._stop()
            with contextlib.suppress(asyncio.CancelledError):
                await self.aclose()
            raise
        if chunk is None:
            await self.aclose()
            raise StopAsyncIteration
        return chunk

    def _start(self) -> _Bridge:
        chunks, self._chunks = self._chunks, None
        assert chunks is not None
        loop = asyncio.get_running_loop()
        bridge = _Bridge(loop, chunk_size=self._chunk_size, max_buffer=self._max_buffer)
        self._bridge = bridge
        self._feeder = loop.create_task(bridge.feed(chunks), name=f"{self._name}-feeder")
        try:
            bridge.start_worker(self._operation, self._name)
        except BaseException:
            self._stop()
            raise
        return bridge

    def _stop(self) -> None:
        """Tell the worker and the feeder to end, without waiting (idempotent)."""
        self._finished = True
        if self._bridge is not None and self._feeder is not None:
            self._bridge.cancel(self._feeder)

    async def aclose(self) -> None:
        """Stop the stream and wait until its worker thread and feeder have ended; closes the
        source. Idempotent, and safe to call from several tasks at once."""
        self._stop()
        if self._bridge is not None and self._feeder is not None:
            await self._bridge.shutdown(self._feeder)
        elif self._chunks is not None:
            # Never started: the source is closed all the same, as the worker would have.
            chunks, self._chunks = self._chunks, None
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def __del__(self) -> None:
        # Abandoned without aclose() (its consumer was cancelled): nothing can be awaited
        # here, so the worker and the feeder are told to end, and end on their own.
        with contextlib.suppress(Exception):
            self._stop()


def encrypt_stream(
    chunks: AsyncIterable[bytes],
    recipients: Sequence[Recipient],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_buffer: int = DEFAULT_MAX_BUFFER,
) -> AgeStream:
    """Encrypt a stream of plaintext chunks to ``recipients`` (binary age format).

    Returns an :class:`AgeStream` (``aclose()`` it, or let it finish, to release the worker;
    one dropped unfinished stops its worker too). Arguments are checked at once.
    Yields chunks of at least ``chunk_size`` bytes; the last may be shorter, and with the default
    chunk size the first holds the whole header. About ``max_buffer`` + 2 x ``chunk_size`` + the
    largest input chunk is held in memory, whatever the stream's length. Errors from ``chunks``
    propagate unchanged; encryption failures raise :class:`EncryptError`. Closing the iterator
    early (or cancelling the consuming task) stops the worker thread and closes ``chunks``.
    """
    raws = raw_recipients(recipients)
    _check_stream_args(chunk_size, max_buffer)

    def operation(reader: object, writer: object) -> None:
        pyrage.encrypt_io(reader, writer, raws)

    return AgeStream(
        chunks,
        operation,
        encrypt_error,
        name="daulat-age-encrypt",
        chunk_size=chunk_size,
        max_buffer=max_buffer,
    )


def decrypt_stream(
    chunks: AsyncIterable[bytes],
    identities: Sequence[Identity],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_buffer: int = DEFAULT_MAX_BUFFER,
) -> AgeStream:
    """Decrypt a stream of age ciphertext chunks (binary or ASCII-armored).

    Same chunking, memory and cancellation behaviour as :func:`encrypt_stream`. A wrong identity
    raises :class:`DecryptError` (:data:`NO_MATCHING_IDENTITY`) before any output; damaged or
    truncated data raises :class:`DecryptError` when the damage is reached, so the output is
    valid only once the iterator has finished without raising.
    """
    raws = raw_identities(identities)
    _check_stream_args(chunk_size, max_buffer)

    def operation(reader: object, writer: object) -> None:
        pyrage.decrypt_io(reader, writer, raws)

    return AgeStream(
        chunks,
        operation,
        decrypt_error,
        name="daulat-age-decrypt",
        chunk_size=chunk_size,
        max_buffer=max_buffer,
    )
