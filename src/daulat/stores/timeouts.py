"""Request timeouts *without progress*, for every store client.

``request_timeout`` (per store in the config, ``--request-timeout`` for a run; 30 s by
default) bounds how long a request may go without progress: no connection, no byte sent, no
byte received. It must never bound a whole transfer: an 8 MiB part on a slow link, or a GET of
a 5 GiB object, may take many minutes while moving steadily.

How each client gets there:

* botocore (listings, streamed uploads, odd keys): ``connect_timeout`` and ``read_timeout``,
  which urllib3 applies to every socket operation, sends included. That *is* "no progress".
* google-cloud-storage (every request of a GCS store) sends through requests and urllib3 too:
  each request gets the same (connect, read) pair, and the client's own retry gives up once
  ``request_timeout`` has passed, so a silent endpoint fails after one timeout.
* obstore (reqwest) has ``connect_timeout`` and ``read_timeout`` (each read, reset after
  progress) but only a *whole-request* ``timeout``, and no write timeout. So its ``timeout``
  is set out of the way (a day), reads are bounded by ``read_timeout``, and a put is watched
  from Python: a single PUT gets ``request_timeout`` plus its size at :data:`MIN_UPLOAD_RATE`
  (a server that accepts the body but never answers cannot keep a run waiting); a streamed put
  (Azure) is cancelled when the client has not asked for the next chunk of the body for that
  long while the body had one ready (:func:`watch_stream`).

An endpoint that refuses connections (nothing listens on its port, its name does not resolve)
is not a passing fault when it has never answered since the store was opened: :class:`Liveness`
lets the stores call it :class:`~daulat.errors.Unresponsive` once it has refused for
``request_timeout`` seconds, so that the run stops within that time instead of retrying for the
whole retry budget. An endpoint that answered and then goes away (a provider pulling the plug
mid-exit, a server that is not coming back) is given longer, :func:`outage_limit` (four times
``request_timeout``, at least two minutes: a server restarting comes back well within that), of
nothing but refusals and silence since its last answer; after that it is Unresponsive too,
rather than each remaining object being retried in turn for hours.

None switches daulat's own limits off (the clients' defaults stay).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable
from datetime import timedelta
from typing import Any, TypeVar

from daulat.errors import Unresponsive

T = TypeVar("T")

#: Below this rate a single request's body counts as stalled (8 MiB: 128 s on top).
MIN_UPLOAD_RATE = 64 * 1024
#: A whole request of obstore's, which must never cut a large GET that still moves.
WHOLE_REQUEST = timedelta(days=1)
#: A limit of None: effectively none.
UNLIMITED = 24 * 3600.0
#: The shortest outage after which an endpoint that had answered counts as gone.
MIN_OUTAGE = 120.0


def client_options(request_timeout: float | None) -> dict[str, Any]:
    """obstore ``client_options`` for a store's request timeout."""
    if request_timeout is None:
        return {"connect_timeout": timedelta(seconds=10), "timeout": WHOLE_REQUEST}
    return {
        "connect_timeout": timedelta(seconds=min(request_timeout, 10.0)),
        "read_timeout": timedelta(seconds=request_timeout),
        "timeout": WHOLE_REQUEST,
    }


def body_limit(request_timeout: float | None, size: int) -> float:
    """Seconds one request carrying ``size`` bytes may take before it counts as stalled."""
    if request_timeout is None:
        return UNLIMITED
    return request_timeout + size / MIN_UPLOAD_RATE


async def bounded(call: Awaitable[T], limit: float) -> T:
    """``call``, or :class:`TimeoutError` once ``limit`` seconds passed."""
    return await asyncio.wait_for(call, limit)


def outage_limit(request_timeout: float | None) -> float | None:
    """Seconds an endpoint that has answered may refuse or stay silent before it counts as gone
    (None: never; only the retry budget ends the run)."""
    if request_timeout is None:
        return None
    return max(4 * request_timeout, MIN_OUTAGE)


class Liveness:
    """Whether a store's endpoint is still there (see the module docstring).

    The stores call :meth:`answer` whenever the endpoint says anything (an object, a page, an
    HTTP error) and :meth:`gone` for each request that could not connect or got no answer."""

    __slots__ = ("_since", "answered", "request_timeout")

    def __init__(self, request_timeout: float | None) -> None:
        self.request_timeout = request_timeout
        self.answered = False  # the endpoint has answered since the store was opened
        self._since: float | None = None  # first fault since the last answer

    def answer(self) -> None:
        self.answered = True
        self._since = None

    def gone(self, *, refused: bool) -> str | None:
        """Note one request that was refused (``refused``) or got no answer in time; why the
        endpoint now counts as gone, or None while this may still be a passing fault."""
        now = time.monotonic()
        if self._since is None:
            self._since = now
        lasted = now - self._since
        limit = self.request_timeout
        if not self.answered:
            if not refused:
                # Not one answer since this store was opened, from an endpoint that accepts
                # connections: retrying would only wait again.
                within = f"{limit:g} s" if limit is not None else "the time limit"
                return f"no answer within {within} (request_timeout)"
            if limit is not None and lasted >= limit:
                return f"cannot connect (refused or unreachable for {limit:g} s, request_timeout)"
            return None
        outage = outage_limit(limit)
        if outage is not None and lasted >= outage:
            return (
                f"stopped answering: every request refused, unreachable or unanswered for "
                f"{lasted:.0f} s after it had answered (four times request_timeout, at least "
                f"{MIN_OUTAGE:g} s)"
            )
        return None

    def unresponsive(
        self, *, refused: bool, store: str, key: str | None, where: str
    ) -> Unresponsive | None:
        """:meth:`gone`, as the error a store raises once its endpoint counts as gone (``where``:
        the request, e.g. ``put 'a.txt'``), or None while it may still be a passing fault."""
        gone = self.gone(refused=refused)
        if gone is None:
            return None
        return Unresponsive(
            f"store {store!r}: {where} failed: {gone}; is the endpoint right and up?",
            store=store,
            key=key,
        )


class StreamWatch:
    """Tracks whether a consumer of a body keeps asking for it (see :func:`watch_stream`)."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.mark = time.monotonic()
        self.in_source = False  # the body's own source is producing: not the client's stall

    def stalled(self) -> bool:
        return not self.in_source and time.monotonic() - self.mark > self.limit


async def guarded(body: AsyncIterable[bytes], watch: StreamWatch) -> AsyncGenerator[bytes, None]:
    """``body``, noting when the consumer asks for more and when the source is busy."""
    it = aiter(body)
    while True:
        watch.in_source = True
        try:
            chunk = await anext(it, None)
        finally:
            watch.in_source = False
            watch.mark = time.monotonic()
        if chunk is None:
            return
        yield chunk


async def watch_stream(call: Awaitable[T], watch: StreamWatch) -> T:
    """Run ``call`` (a put consuming a :func:`guarded` body); :class:`TimeoutError` when the
    client stops consuming for ``watch.limit`` seconds while the body has data ready, or
    takes that long to answer after the last chunk."""
    task = asyncio.ensure_future(call)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=min(watch.limit, 1.0))
            if done:
                return task.result()
            if watch.stalled():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise TimeoutError("no progress")
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class Deadlines:
    """Deadlines of the single PUTs of one store, watched by one timer per event loop.

    Each request is a future already (obstore's); one that is still running at its deadline
    is cancelled and its caller gets :class:`TimeoutError`, as with ``asyncio.wait_for``.
    A timer of its own per request (``wait_for``, or ``call_later``) costs ~0.03 ms of CPU,
    a sixth of a small object's whole PUT; here a request costs a dict entry, and one timer
    checks every request in flight each ``tick`` seconds (at most a quarter of the shortest
    limit, so a deadline is kept within a quarter of its length)."""

    def __init__(self, tick: float = 1.0) -> None:
        self._tick = tick
        self._due: dict[asyncio.Future[Any], list[Any]] = {}  # future -> [deadline, fired]
        self._timer: tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle] | None = None

    async def run(self, call: Awaitable[T], limit: float) -> T:
        """``call``, or :class:`TimeoutError` once ``limit`` seconds passed."""
        loop = asyncio.get_running_loop()
        fut = asyncio.ensure_future(call)
        entry: list[Any] = [loop.time() + limit, False]
        self._due[fut] = entry
        tick = min(self._tick, limit / 4)
        if self._timer is None or self._timer[0] is not loop or tick < self._tick:
            self._tick = min(self._tick, tick)
            if self._timer is not None:
                self._timer[1].cancel()
            self._timer = (loop, loop.call_later(self._tick, self._check, loop))
        try:
            return await fut
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if entry[1] and (task is None or task.cancelling() == 0):
                raise TimeoutError from None  # cancelled by its deadline, not by our caller
            raise
        finally:
            del self._due[fut]

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for fut, entry in list(self._due.items()):
            if fut.get_loop() is loop and not entry[1] and now >= entry[0]:
                entry[1] = True
                fut.cancel()
        if any(fut.get_loop() is loop for fut in self._due):
            self._timer = (loop, loop.call_later(self._tick, self._check, loop))
        else:
            self._timer = None
