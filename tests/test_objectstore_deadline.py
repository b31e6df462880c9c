"""The deadlines of single obstore PUTs (``daulat.stores.timeouts.Deadlines``): a request
that never finishes ends in TimeoutError at its limit (within a quarter of it) and is
cancelled, while others in flight keep running; one that finishes in time gives its result;
a caller's own cancellation stays a cancellation, not a timeout; the watch works again in a
later event loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from daulat.stores.timeouts import Deadlines


def test_a_request_that_never_finishes_times_out_and_is_cancelled() -> None:
    deadlines = Deadlines()

    async def main() -> tuple[float, bool, int]:
        loop = asyncio.get_running_loop()
        stuck: asyncio.Future[int] = loop.create_future()
        slow: asyncio.Future[int] = loop.create_future()
        loop.call_later(0.6, slow.set_result, 3)
        later = asyncio.ensure_future(deadlines.run(slow, 30))
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(deadlines.run(stuck, 0.4), 10)  # never hangs the suite
        took = time.monotonic() - started
        return took, stuck.cancelled(), await later

    for _ in range(2):  # a second event loop: the watch starts again there
        took, cancelled, other = asyncio.run(main())
        assert 0.35 <= took < 0.4 * 1.25 + 1.0  # within a quarter (plus a loaded machine)
        assert cancelled
        assert other == 3  # the other request in flight was not cut


def test_a_request_in_time_gives_its_result() -> None:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        request: asyncio.Future[int] = loop.create_future()
        loop.call_later(0.05, request.set_result, 7)
        return await Deadlines().run(request, 30)

    assert asyncio.run(main()) == 7


def test_a_callers_cancellation_is_not_a_timeout() -> None:
    async def main() -> bool:
        request: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        waiter = asyncio.ensure_future(Deadlines().run(request, 30))
        await asyncio.sleep(0.05)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        return request.cancelled()

    assert asyncio.run(main())


def test_a_failing_request_raises_its_own_error() -> None:
    async def main() -> None:
        request: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        request.set_exception(ConnectionResetError("reset"))
        await Deadlines().run(request, 30)

    with pytest.raises(ConnectionResetError):
        asyncio.run(main())
