"""The deadline of a single obstore PUT (``daulat.stores.objectstore._within``): a request that
never finishes ends in TimeoutError at its limit and is cancelled; one that finishes in time
gives its result; a caller's own cancellation stays a cancellation, not a timeout."""

from __future__ import annotations

import asyncio
import time

import pytest

from daulat.stores.objectstore import _within


def test_a_request_that_never_finishes_times_out_and_is_cancelled() -> None:
    async def main() -> tuple[float, bool]:
        request: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await _within(request, 0.2)
        return time.monotonic() - started, request.cancelled()

    took, cancelled = asyncio.run(main())
    assert 0.15 <= took < 5
    assert cancelled


def test_a_request_in_time_gives_its_result() -> None:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        request: asyncio.Future[int] = loop.create_future()
        loop.call_later(0.05, request.set_result, 7)
        pending = await _within(request, 30)
        # Its timer was cancelled: nothing of the 30 s limit is still waiting.
        timers = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        assert timers == []
        return pending

    assert asyncio.run(main()) == 7


def test_a_callers_cancellation_is_not_a_timeout() -> None:
    async def main() -> bool:
        request: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        waiter = asyncio.ensure_future(_within(request, 30))
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
        await _within(request, 30)

    with pytest.raises(ConnectionResetError):
        asyncio.run(main())
