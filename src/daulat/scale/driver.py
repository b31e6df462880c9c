"""The driver of ``--engine ray``: shards out the plan, commits what comes back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from daulat.config import Config
from daulat.errors import AccessDenied, StoreError
from daulat.scale.cluster import Connection, connect
from daulat.scale.shards import Taper, bounds_for, shards
from daulat.scale.warmup import EarlyStart, free_when_warm
from daulat.scale.worker import Report, ShardSpec, run_shard
from daulat.transfer.adoption import ADOPT_CONCURRENCY, PROOF_FIELD
from daulat.transfer.engine import SMALL_OBJECT, Executor
from daulat.transfer.journal import (
    BatchWriter,
    Candidate,
    Completing,
    Journal,
    Outcome,
    State,
    WorkItem,
)
from daulat.transfer.model import Endpoint
from daulat.transfer.verify import ContentJob, Judged, ToCheck

# Outcomes per journal commit on the driver. Larger than a single process's batches: every
# worker already batches, and the driver commits for all of them (one fsync per commit). An
# outcome a killed driver had not committed is adopted by proof on the rerun.
DRIVER_BATCH = 5000

# Attempts of one shard whose worker (or node) was lost before it gives up on what is left.
SHARD_ATTEMPTS = 4


@dataclass
class RayRunner:
    """``Options.runner`` for ``--engine ray`` (see :mod:`daulat.scale`).

    ``workers``: shards in flight at once (None: the cluster's CPUs); ``bwlimit`` applies per
    worker (``Options.bwlimit``); each worker runs ``Options.concurrency`` objects at once."""

    config: Config
    address: str | None = None
    workers: int | None = None
    # Filled by a run, for tests and benchmarks: shard attempts lost, and objects adopted
    # by proof after a loss.
    lost_attempts: int = 0
    adopted_after_loss: int = 0
    shards_run: int = 0
    used_workers: int = 0
    warmed_workers: int = 0
    # Connecting and warming since the run began (warm()); None outside it.
    _early: EarlyStart | None = field(default=None, repr=False)

    @contextlib.asynccontextmanager
    async def warm(self, src: Endpoint, dst: Endpoint) -> AsyncIterator[None]:
        """Connect and start one warm worker process per slot while the run lists and plans
        (:class:`~daulat.transfer.executor.Warming`, :mod:`daulat.scale.warmup`); on leaving,
        close what was connected, whether the runner ran or not."""
        early = EarlyStart(
            self.address,
            self.workers,
            str(self.config.path.resolve()),
            sorted({src.store.name, dst.store.name}),
        )
        self._early = early
        try:
            yield
        except BaseException as exc:
            # Ctrl-C (a cancelled run) does not wait for a Ray still starting.
            await early.close(interrupted=not isinstance(exc, Exception))
            raise
        else:
            await early.close(interrupted=False)
        finally:
            self._early = None
            self.warmed_workers = early.warmed

    async def __call__(self, executor: Executor) -> None:
        driver_batches(executor)
        executor.report()  # the plan's size shows while Ray starts
        early = self._early
        if early is not None:
            conn = await early.connection()
        else:
            # ray.init blocks for seconds while a local Ray starts: off the event loop (and
            # off the main thread, so that Ray leaves daulat's signal handlers alone).
            conn = await asyncio.to_thread(connect, self.address, local_cpus=self.workers)
        try:
            await self._run(conn, executor, early.warm_ups() if early is not None else [])
        except asyncio.CancelledError:
            # Interrupted: what a shard finished since its last report is at the destination
            # but not in the journal, and is not counted in the summary's figures.
            executor.summary.notes.append(
                "objects the Ray workers finished after their last report are not counted "
                "here: the next run finds them at the destination and adopts them by proof, "
                "without sending them again"
            )
            raise
        finally:
            executor.finish()
            if executor.stop is not None and not executor.summary.stopped:
                executor.summary.stopped = str(executor.stop)
            if early is not None:
                # Ray stops while the driver verifies and writes the manifest; the end of
                # warm() waits for it.
                early.close_soon()
            else:
                await asyncio.to_thread(conn.close)

    async def _run(self, conn: Connection, ex: Executor, warm_ups: list[Any]) -> None:
        workers = self.workers or conn.cpus()
        if conn.started_here:
            # A local Ray has this machine's CPUs at most (cluster.connect): shards beyond its
            # slots would only queue. A cluster's own may grow (an autoscaler): not capped.
            workers = min(workers, conn.cpus())
        self.used_workers = workers
        spec = self._spec(ex)
        task = conn.ray.remote(num_cpus=1, max_retries=0)(run_shard)
        bounds = bounds_for(ex.summary.planned_objects, ex.summary.planned_bytes, workers)
        slots = asyncio.Semaphore(workers)
        in_flight: dict[int, int] = {}
        running: set[asyncio.Task[None]] = set()
        # A slot whose process is warming opens when it is warm, so that its shard takes that
        # process (daulat.scale.warmup).
        warming: set[asyncio.Task[None]] = set()
        for ref in warm_ups[:workers]:
            await slots.acquire()
            warming.add(asyncio.create_task(free_when_warm(ref, slots)))

        async def one(n: int, shard: list[WorkItem]) -> None:
            try:
                await self._shard(conn, task, spec, ex, shard, n, in_flight)
            finally:
                in_flight.pop(n, None)
                slots.release()

        try:
            planned = Taper(ex.summary.planned_objects, ex.summary.planned_bytes, workers)
            for n, shard in enumerate(shards(ex.journal.work(), bounds, planned)):
                await slots.acquire()
                if ex.stop is not None:
                    slots.release()
                    break
                t = asyncio.create_task(one(n, shard))
                running.add(t)
                t.add_done_callback(running.discard)
                self.shards_run += 1
            await asyncio.gather(*running)
        finally:
            # Warm-ups still running when every shard is done are nobody's wait.
            for t in [*running, *warming]:
                t.cancel()
            await asyncio.gather(*running, *warming, return_exceptions=True)

    async def check_content(
        self,
        job: ContentJob,
        items: Iterator[ToCheck],
        planned: tuple[int, int],
        on_judged: Callable[[Sequence[Judged]], None],
    ) -> None:
        """``verify --full`` on the cluster (a
        :class:`~daulat.transfer.verify.ContentChecker`; see :mod:`daulat.scale.verifying`)."""
        from daulat.scale.verifying import check_content

        run, lost = await check_content(
            self.config, self.address, self.workers, job, items, planned, on_judged
        )
        self.shards_run += run
        self.lost_attempts += lost

    def _spec(self, ex: Executor) -> ShardSpec:
        opts = ex.opts
        timeouts: list[tuple[str, float]] = []
        for name in sorted({ex.src.store.name, ex.dst.store.name}):
            cfg = self.config.stores.get(name)
            if cfg is not None and cfg.request_timeout is not None:
                timeouts.append((name, float(cfg.request_timeout)))
        return ShardSpec(
            config_path=str(self.config.path.resolve()),
            src_store=ex.src.store.name,
            src_prefix=ex.src.prefix,
            dst_store=ex.dst.store.name,
            dst_prefix=ex.dst.prefix,
            pair=ex.pair,
            run_id=ex.summary.run_id,
            concurrency=opts.concurrency,
            max_bytes_in_flight=opts.max_bytes_in_flight,
            bwlimit=opts.bwlimit,
            retry=opts.retry,
            encrypt_to=tuple(str(r) for r in opts.encrypt_to),
            encrypt_names=opts.encrypt_names,
            proof=opts.proof_key is not None,
            as_stored=ex.as_stored,
            request_timeouts=tuple(timeouts),
        )

    async def _shard(
        self,
        conn: Connection,
        task: Any,
        spec: ShardSpec,
        ex: Executor,
        shard: list[WorkItem],
        n: int,
        in_flight: dict[int, int],
    ) -> None:
        state = _Shard(n, {item.key: item for item in shard})
        remaining = state.remaining
        lost = ""
        for _ in range(SHARD_ATTEMPTS):
            state.retries_seen = state.sent_seen = 0
            try:
                gen = task.remote(spec, list(remaining.values()))
                async for ref in gen:
                    report: Report = await ref
                    _apply(ex, report, state, in_flight)
                    if report.final:
                        break
                return
            except conn.ray.exceptions.RayError as exc:
                if isinstance(exc, conn.ray.exceptions.RayTaskError):
                    raise  # a defect, not a lost worker: it ends the run
                self.lost_attempts += 1
                in_flight.pop(n, None)
                lost = _first_line(exc)
            # The lost attempt's unfinished uploads are aborted; what it completed without
            # reporting is adopted by proof, so only the rest is sent again.
            await _abort(ex, state.uploads)
            adopted = await adopt_sent(ex, list(remaining.values()))
            for outcome in adopted:
                remaining.pop(outcome.key, None)
            self.adopted_after_loss += len(adopted)
            ex.commit_many(adopted)
            if not remaining:
                return
        ex.commit_many(
            [
                Outcome(
                    item.key,
                    item.size,
                    item.etag,
                    State.FAILED,
                    error=f"the Ray worker was lost {SHARD_ATTEMPTS} times: {lost}",
                    stored_as=item.dkey,
                )
                for item in remaining.values()
            ]
        )


def driver_batches(ex: Executor) -> None:
    """Commit the outcomes that come back in batches of :data:`DRIVER_BATCH` (or each second)."""
    ex.writer = BatchWriter(
        ex.writer.journal,
        ex.pair,
        ex.summary.run_id,
        every=DRIVER_BATCH,
        immediate_over=SMALL_OBJECT,
    )


@dataclass
class _Shard:
    """What the driver knows of one shard while it runs."""

    n: int
    remaining: dict[str, WorkItem]  # not yet reported, by key
    uploads: set[tuple[str, str]] = field(default_factory=set)  # (key, upload id) open
    retries_seen: int = 0  # retries the current attempt reported so far
    sent_seen: int = 0  # bytes the current attempt reported sent so far


def _apply(ex: Executor, report: Report, state: _Shard, in_flight: dict[int, int]) -> None:
    """Take one worker report: uploads, completing rows and outcomes to the journal."""
    ledger = ex.ledger
    for what, key, upload_id in report.uploads:
        if what == "start":
            state.uploads.add((key, upload_id))
            if ledger is not None:
                ledger.started(key, upload_id)
        else:
            state.uploads.discard((key, upload_id))
            if ledger is not None:
                ledger.finished(key, upload_id)
    for row in report.completing:
        ex.completing(row)
    # Reported once: a retried attempt is sent only what was not. Committed as one batch,
    # counted once (Executor.commit_many).
    remaining = state.remaining
    ex.commit_many([o for o in report.outcomes if remaining.pop(o.key, None) is not None])
    ex.progress.retries += report.retries - state.retries_seen
    state.retries_seen = report.retries
    # Bytes a lost attempt sent were sent all the same: counted, never taken back.
    if report.sent_bytes > state.sent_seen:
        ex.summary.sent_bytes += report.sent_bytes - state.sent_seen
        state.sent_seen = report.sent_bytes
    if report.final:
        in_flight.pop(state.n, None)
        ex.limiter.throttled += report.throttled
        if report.error is not None:
            ex.stop = ex.stop or AccessDenied(f"a Ray worker could not run: {report.error}")
        elif report.stopped is not None:
            ex.stop = ex.stop or AccessDenied(report.stopped)
    else:
        in_flight[state.n] = report.in_flight_bytes
    ex.progress.in_flight_bytes = sum(in_flight.values())
    ex.report()


async def _abort(ex: Executor, uploads: set[tuple[str, str]]) -> None:
    """Abort (and forget) the uploads a lost attempt left open."""
    ledger = ex.ledger
    if ledger is not None:
        for key, upload_id in sorted(uploads):
            await ledger.failed(key, upload_id)
    uploads.clear()


async def adopt_sent(ex: Executor, items: list[WorkItem]) -> list[Outcome]:
    """Of ``items``, those complete at the destination whose proof verifies against the
    source version planned (see :mod:`daulat.transfer.adoption`): one metadata request each.
    """
    prover = ex.prover
    if prover is None or not items:
        return []
    book = ex.journal
    completing = (
        _completing(book, ex.pair, [i.key for i in items]) if isinstance(book, Journal) else {}
    )
    sem = asyncio.Semaphore(ADOPT_CONCURRENCY)
    dst = ex.dst

    async def one(item: WorkItem) -> Outcome | None:
        dst_key = dst.prefix + (item.key if item.dkey is None else item.dkey)
        async with sem:
            try:
                reader = await ex.opts.retry.call(lambda: dst.store.get(dst_key, start=0, end=0))
            except AccessDenied:
                raise
            except StoreError:
                return None
        info = reader.info
        candidate = Candidate(
            0,
            item.key,
            item.dkey,
            item.size,
            item.etag,
            info.size,
            info.etag,
            completing.get(item.key),
        )
        proven = prover.check(reader.metadata.get(PROOF_FIELD), candidate, dst_key)
        if proven is None:
            return None
        return Outcome(
            item.key,
            item.size,
            item.etag,
            State.DONE,
            sha256=proven.sha256,
            dst_size=info.size,
            dst_etag=info.etag,
            plain_size=proven.plain_size,
            stored_as=item.dkey,
        )

    found = await asyncio.gather(*(one(i) for i in items))
    return [o for o in found if o is not None]


def _completing(journal: Journal, pair: str, keys: list[str]) -> Mapping[str, Completing]:
    rows: dict[str, Completing] = {}
    for i in range(0, len(keys), 500):
        chunk = keys[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for r in journal.db.execute(
            "SELECT key, size, src_etag, nonce, sha256, plain_size, dst_size, stored_as "
            f"FROM completing WHERE pair = ? AND key IN ({marks})",
            (pair, *chunk),
        ):
            rows[r[0]] = Completing(*r)
    return rows


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
