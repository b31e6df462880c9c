"""Getting Ray ready while the driver lists and plans (issue 12: the workers' start-up).

Every ``daulat`` run is a new Ray job, whose worker processes start and import Ray and
daulat before they run a shard: seconds on a busy node, paid by every worker at once.
:class:`EarlyStart` connects to Ray in a thread of its own at the beginning of the run and
submits one warm-up task per worker slot (:func:`daulat.scale.worker.warm_worker`), so that
those processes start and import while the driver lists both sides and plans; the shards
then run on processes Ray already has. The warm-up carries only the config file's path and
two store names: no Store object, credential or token is pickled.

A warm-up is only a head start: one that fails is ignored (the shard that follows meets the
same failure and reports it). Connecting failing is raised where the runner connected
before: when the run has something to copy (:meth:`EarlyStart.connection`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Sequence
from typing import Any

from daulat.scale.cluster import Connection, connect
from daulat.scale.worker import warm_worker

# How long a first shard waits for a warm-up to end, at most: submitted while a slot is free,
# a shard would make Ray start a process of its own (with --workers below the cluster's CPUs)
# instead of taking the one that is warming. A warm-up that takes longer is not waited for
# further (its slot's shard starts anyway).
WARM_WAIT = 60.0
# How long the end of a run that was interrupted waits for a connection still being made
# before leaving it to its thread (which closes it once made): Ctrl-C ends the command in
# about this time, not in the minutes a local Ray may take to start.
INTERRUPTED_WAIT = 2.0


class EarlyStart:
    """A connection to Ray made, and later closed, by one daemon thread of its own, with the
    workers warming."""

    def __init__(
        self,
        address: str | None,
        workers: int | None,
        config_path: str,
        stores: Sequence[str],
    ) -> None:
        self._address = address
        self._workers = workers
        self._config_path = config_path
        self._stores = tuple(stores)
        self._close_requested = threading.Event()
        self._closed: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._closed.set_running_or_notify_cancel()
        self.warmed = 0  # warm-up tasks submitted (tests, benchmarks)
        self._refs: list[Any] = []  # their results (None), to wait for
        self._made: concurrent.futures.Future[Connection] = concurrent.futures.Future()
        # Running from the start: cancelling an await on it cannot cancel the thread's result.
        self._made.set_running_or_notify_cancel()
        threading.Thread(target=self._start, name="daulat-ray-start", daemon=True).start()

    def _start(self) -> None:
        try:
            conn = connect(self._address, local_cpus=self._workers)
        except BaseException as exc:  # raised where the runner connects (see connection())
            self._made.set_exception(exc)
            return
        with contextlib.suppress(Exception):
            self._warm(conn)
        self._made.set_result(conn)
        # This thread lives until the connection is closed, and closes it itself: a local
        # Ray's core processes are started with a parent-death signal, which Linux sends when
        # the *thread* that started them ends, not the process. Ending here would kill the
        # Ray this run is about to use.
        self._close_requested.wait()
        try:
            with contextlib.suppress(Exception):
                conn.close()
        finally:
            self._closed.set_result(None)

    def _warm(self, conn: Connection) -> None:
        # One per slot that can run now: warm-ups queued beyond the cluster's CPUs would only
        # make Ray start processes for a backlog.
        slots = min(self._workers or conn.cpus(), conn.cpus())
        task = conn.ray.remote(num_cpus=1, max_retries=0)(warm_worker)
        for _ in range(slots):
            self._refs.append(task.remote(self._config_path, self._stores))
            self.warmed += 1

    def warm_ups(self) -> list[Any]:
        """The warm-up tasks' references (once: the caller waits for them)."""
        refs, self._refs = self._refs, []
        return refs

    async def connection(self) -> Connection:
        """The connection, once made; raises what connecting raised
        (:class:`~daulat.scale.cluster.RayUnavailable`)."""
        return await asyncio.wrap_future(self._made)

    def close_soon(self) -> None:
        """Begin closing the connection (stopping a Ray this run started) in the thread that
        made it: the driver's end of run (the verification listing, the manifest) goes on
        meanwhile."""
        self._close_requested.set()

    async def close(self, *, interrupted: bool) -> None:
        """Close the connection, once made (a run that failed while listing still stops the
        Ray it started). ``interrupted``: wait at most :data:`INTERRUPTED_WAIT` for a
        connection still being made, then leave it to its thread to close once made."""
        self._close_requested.set()
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(self._made)),
                INTERRUPTED_WAIT if interrupted else None,
            )
        if not self._made.done() or self._made.exception() is not None:
            return  # left to its thread, or nothing was started
        await asyncio.wrap_future(self._closed)


async def free_when_warm(ref: Any, slots: asyncio.Semaphore) -> None:
    """Release one of ``slots`` (held for this warm-up) when the warm-up ``ref`` ended, however
    it ended, or after :data:`WARM_WAIT`: each shard slot opens as a process becomes warm,
    not when the slowest of them is."""
    try:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(_awaited(ref), WARM_WAIT)
    finally:
        slots.release()


async def _awaited(ref: Any) -> Any:
    # A Ray ObjectRef is awaitable in an event loop (as the driver awaits reports).
    return await ref
