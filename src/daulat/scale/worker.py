"""One shard on a Ray worker: the engine's own copy loop over a list of planned objects.

The task receives a :class:`ShardSpec` (the config file's path, store names, prefixes and
options: nothing secret) and the shard's items. It loads the config and opens both stores
itself, so credentials come from the worker's own config file and environment and are never
pickled into the task, Ray's object store or its logs; the proof key is read from the state
directory beside that config (never created here: a worker without it would write proofs
the driver cannot check).

It never opens the journal. Outcomes, the ``completing`` rows of streamed objects and the
multipart uploads begun and ended go back to the driver as :class:`Report` batches through a
Ray generator; the driver commits them. A report is sent at least every ``REPORT_SECONDS``,
and at once for a large object's outcome or ``completing`` row.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daulat.config import load_config
from daulat.crypto import parse_recipients
from daulat.errors import ConfigError, DaulatError
from daulat.stores import open_store
from daulat.transfer.adoption import KEY_FILE, proof_key
from daulat.transfer.engine import Endpoint, Options, Progress, copy_items
from daulat.transfer.journal import Completing, Outcome, State, WorkItem
from daulat.transfer.retry import RetryPolicy

if TYPE_CHECKING:
    from daulat.stores.base import Store
    from daulat.stores.s3raw import FallbackS3Store

REPORT_SECONDS = 0.25


@dataclass(frozen=True)
class ShardSpec:
    """What a worker needs to run shards of one transfer; safe to pickle and log."""

    config_path: str
    src_store: str
    src_prefix: str
    dst_store: str
    dst_prefix: str
    pair: str
    run_id: int
    concurrency: int
    max_bytes_in_flight: int
    bwlimit: float | None  # bytes/s for this worker
    retry: RetryPolicy
    encrypt_to: tuple[str, ...] = ()  # age recipients (public keys)
    encrypt_names: bool = False
    proof: bool = True
    as_stored: bool = False
    # Per-store request timeouts the driver was given on its command line.
    request_timeouts: tuple[tuple[str, float], ...] = ()


@dataclass
class Report:
    """A batch of what a worker did since its last report."""

    outcomes: list[Outcome] = field(default_factory=list)
    completing: list[Completing] = field(default_factory=list)
    # ("start" | "end", key, upload id) of multipart uploads, in order.
    uploads: list[tuple[str, str, str]] = field(default_factory=list)
    in_flight_bytes: int = 0
    retries: int = 0
    sent_bytes: int = 0  # by this attempt so far (as retries)
    final: bool = False
    stopped: str | None = None  # a permanent refusal ended the shard early
    error: str | None = None  # the shard could not run at all (config, stores, key)
    throttled: int = 0

    def __reduce__(self) -> tuple[Any, ...]:
        # Outcomes travel as plain tuples: the driver unpickles every worker's reports, and
        # a tuple of str and int loads about 4x faster than a dataclass holding an enum.
        fields = dict(self.__dict__)
        fields["outcomes"] = [_packed(o) for o in self.outcomes]
        return (_report_of, (fields,))


_STATES = {s.value: s for s in State}


def _packed(o: Outcome) -> tuple[Any, ...]:
    return (
        o.key, o.size, o.src_etag, o.state.value, o.sha256, o.dst_size, o.dst_etag, o.error,
        o.plain_size, o.stored_as, o.chunks, o.chunk_size,
    )  # fmt: skip


def _report_of(fields: dict[str, Any]) -> Report:
    states = _STATES
    fields["outcomes"] = [
        Outcome(k, n, e, states[st], h, ds, de, err, ps, sa, ch, cs)
        for k, n, e, st, h, ds, de, err, ps, sa, ch, cs in fields["outcomes"]
    ]
    return Report(**fields)


class _Stream:
    """The engine's bookkeeping on a worker (:class:`~daulat.transfer.engine.Bookkeeping`):
    collects what the event loop's thread records for the generator's thread to send."""

    def __init__(self, items: Sequence[WorkItem]) -> None:
        self._items = items
        self._lock = threading.Lock()
        self._report = Report()
        self._urgent = threading.Event()

    # Bookkeeping
    def work(self) -> Sequence[WorkItem]:
        return self._items

    def record(
        self, pair: str, run_id: int, outcomes: Sequence[Outcome], settled: Sequence[str] = ()
    ) -> None:
        with self._lock:
            self._report.outcomes.extend(outcomes)
        if settled:
            self._urgent.set()

    def record_completing(self, pair: str, run_id: int, row: Completing) -> None:
        with self._lock:
            self._report.completing.append(row)
        self._urgent.set()

    # Ledger
    def upload(self, what: str, key: str, upload_id: str) -> None:
        with self._lock:
            self._report.uploads.append((what, key, upload_id))

    def progress(self, p: Progress) -> None:
        with self._lock:
            self._report.in_flight_bytes = p.in_flight_bytes
            self._report.retries = p.retries
            self._report.sent_bytes = p.sent_bytes

    def end(self, **final: Any) -> None:
        with self._lock:
            self._report = replace(self._report, final=True, **final)
        self._urgent.set()

    def take(self, timeout: float) -> Report:
        """The report so far (waits up to ``timeout`` unless something urgent came)."""
        self._urgent.wait(timeout)
        with self._lock:
            self._urgent.clear()
            report = self._report
            self._report = Report(
                in_flight_bytes=report.in_flight_bytes,
                retries=report.retries,
                sent_bytes=report.sent_bytes,
            )
        return report


class _Ledger:
    """Multipart uploads begun and ended, reported to the driver, which records them in the
    journal; a failed one is aborted here, where its store is."""

    def __init__(self, stream: _Stream, store: FallbackS3Store) -> None:
        self._stream = stream
        self._store = store

    def started(self, key: str, upload_id: str) -> None:
        self._stream.upload("start", key, upload_id)

    def finished(self, key: str, upload_id: str) -> None:
        self._stream.upload("end", key, upload_id)

    async def failed(self, key: str, upload_id: str) -> None:
        # Not aborted (the store refused): stays recorded at the driver for the next run.
        with contextlib.suppress(DaulatError):
            await self._store.raw.abort_multipart_upload(key, upload_id)
            self._stream.upload("end", key, upload_id)


def _s3_destination(store: Store) -> FallbackS3Store | None:
    """The S3 store under ``store`` (whose multipart uploads the driver records), or None.
    Only opening an S3 store imports its module: a worker between other stores never pays for
    that import (issue 12: every worker process imports this module as it starts)."""
    if "daulat.stores.s3raw" not in sys.modules:
        return None  # no FallbackS3Store can exist
    from daulat.stores.s3raw import unwrap_fallback

    return unwrap_fallback(store)


def worker_proof_key(state_dir: Path) -> bytes:
    """The proof key from the state directory beside the config; never created here."""
    if not (state_dir / KEY_FILE).exists():
        raise ConfigError(
            f"this Ray worker has no proof key at {state_dir / KEY_FILE}: give every worker "
            "the driver's config and its state directory's keys/proof (0600)"
        )
    return proof_key(state_dir)


async def _copy_shard(spec: ShardSpec, items: Sequence[WorkItem], stream: _Stream) -> Report:
    config = load_config(Path(spec.config_path))
    timeouts = dict(spec.request_timeouts)

    def endpoint(name: str, prefix: str) -> Endpoint:
        cfg = config.store(name)
        if name in timeouts:
            cfg = cfg.model_copy(update={"request_timeout": timeouts[name]})
        return Endpoint(open_store(cfg), prefix, label=f"{name}:{prefix}")

    src = endpoint(spec.src_store, spec.src_prefix)
    dst = endpoint(spec.dst_store, spec.dst_prefix)
    try:
        opts = Options(
            concurrency=spec.concurrency,
            max_bytes_in_flight=spec.max_bytes_in_flight,
            bwlimit=spec.bwlimit,
            retry=spec.retry,
            encrypt_to=parse_recipients(spec.encrypt_to) if spec.encrypt_to else (),
            encrypt_names=spec.encrypt_names,
            proof_key=worker_proof_key(config.state_dir) if spec.proof else None,
        )
        dst_s3 = _s3_destination(dst.store)
        summary = await copy_items(
            src,
            dst,
            stream,
            opts,
            spec.pair,
            spec.run_id,
            ledger=_Ledger(stream, dst_s3) if dst_s3 is not None else None,
            as_stored=spec.as_stored,
            on_progress=stream.progress,
        )
    finally:
        await src.store.close()
        await dst.store.close()
    return Report(
        stopped=summary.stopped,
        throttled=summary.throttled,
        retries=summary.retries,
        sent_bytes=summary.sent_bytes,
    )


def warm_worker(config_path: str, stores: Sequence[str]) -> None:
    """A warm-up task (:mod:`daulat.scale.warmup`): run on a fresh worker process while the
    driver plans, it has imported this module (Ray imports a task's module before it runs
    it), loads the config and opens and closes the run's stores, so that what opening a store
    imports (its SDK, its credential chain's code) is imported too. Nothing is kept: a shard
    opens its own stores. A failure is left to the shard that follows, which reports it."""
    with contextlib.suppress(Exception):
        config = load_config(Path(config_path))
        opened = [open_store(config.store(name)) for name in stores]

        async def close() -> None:
            for store in opened:
                await store.close()

        asyncio.run(close())


def run_shard(spec: ShardSpec, items: list[WorkItem]) -> Iterator[Report]:
    """The Ray task (a generator): copy ``items``, yielding reports until the last one."""
    stream = _Stream(items)

    def main() -> None:
        try:
            done = asyncio.run(_copy_shard(spec, items, stream))
            stream.end(
                stopped=done.stopped,
                throttled=done.throttled,
                retries=done.retries,
                sent_bytes=done.sent_bytes,
            )
        except DaulatError as exc:
            stream.end(error=str(exc))
        except BaseException as exc:  # reported to the driver, never lost in a thread
            stream.end(error=f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=main, name="daulat-shard", daemon=True)
    thread.start()
    while True:
        # Sent even when empty: its in-flight bytes move the progress bar.
        report = stream.take(REPORT_SECONDS)
        yield report
        if report.final:
            break
    thread.join()
