"""``verify --full --engine ray``: the content is re-read and hashed on Ray workers.

The driver lists both sides, judges what is missing, and keeps the journal, the manifests and
the report, exactly as a single-process verify does (:func:`daulat.transfer.verify.verify`).
Only the reading moves out: the objects the destination lists go to workers in shards of
bounded objects and bytes (:mod:`daulat.scale.shards`); each worker opens both stores from the
config file and its own environment, and its identities from the identity files named in the
job (never an Identity, Store or credential pickled), judges each object with
:func:`daulat.transfer.verify.judge_content`, and streams the verdicts back in batches.

Reading is idempotent: a shard whose worker was lost is sent again (what it had reported is
not); after :data:`~daulat.scale.driver.SHARD_ATTEMPTS` losses its remaining objects are
problems ("could not verify"), never verified.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from daulat.config import Config, load_config
from daulat.crypto import Identity, load_identities
from daulat.errors import AccessDenied, ConfigError, DaulatError
from daulat.scale.cluster import Connection, connect
from daulat.scale.shards import bounds_for, shards
from daulat.stores import open_store
from daulat.transfer.manifests import WrongIdentity
from daulat.transfer.model import Endpoint
from daulat.transfer.verify import ContentJob, Judged, ToCheck, judge_content

# A worker sends what it judged at least this often (and at the end).
REPORT_SECONDS = 0.25
# Attempts of one shard whose worker (or node) was lost.
SHARD_ATTEMPTS = 4


@dataclass(frozen=True)
class VerifySpec:
    """What a worker needs to read shards of one verification; safe to pickle and log."""

    config_path: str
    job: ContentJob
    # Per-store request timeouts the driver was given on its command line.
    request_timeouts: tuple[tuple[str, float], ...] = ()


@dataclass
class Verdicts:
    """A batch of verdicts from a worker; ``final`` on its last one.

    ``stopped`` ("access" or "identity", message): the shard met a refusal or an identity
    that opens nothing, which stops the whole verification; ``error``: it could not run at
    all (config, stores, identity files)."""

    judged: list[Judged] = field(default_factory=list)
    final: bool = False
    stopped: tuple[str, str] | None = None
    error: str | None = None


# --------------------------------------------------------------------------------------------
# On a worker


class _Collected:
    """Verdicts the event loop's thread records, for the generator's thread to send."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batch = Verdicts()
        self._ended = threading.Event()

    def add(self, judged: Judged) -> None:
        with self._lock:
            self._batch.judged.append(judged)

    def end(self, **final: Any) -> None:
        with self._lock:
            self._batch = replace(self._batch, final=True, **final)
        self._ended.set()

    def take(self, timeout: float) -> Verdicts:
        self._ended.wait(timeout)
        with self._lock:
            batch, self._batch = self._batch, Verdicts()
        return batch


def worker_identities(job: ContentJob) -> list[Identity]:
    """The identities from the job's files on this worker; they must be the driver's."""
    if not job.recipients:
        return []
    found: list[Identity] = []
    for path in job.identity_files:
        found += load_identities(path)  # KeyFileError names the file, never the key
    if {str(i.recipient) for i in found} != set(job.recipients):
        raise ConfigError(
            f"the identity files {', '.join(job.identity_files)} on this Ray worker do not hold "
            "the identities the driver read: give every worker the same files"
        )
    return found


async def _read_shard(spec: VerifySpec, items: Sequence[ToCheck], out: _Collected) -> None:
    config = load_config(Path(spec.config_path))
    timeouts = dict(spec.request_timeouts)
    job = spec.job

    def endpoint(name: str, prefix: str) -> Endpoint:
        cfg = config.store(name)
        if name in timeouts:
            cfg = cfg.model_copy(update={"request_timeout": timeouts[name]})
        return Endpoint(open_store(cfg), prefix, label=f"{name}:{prefix}")

    held = worker_identities(job)
    src = endpoint(job.src_store, job.src_prefix)
    dst = endpoint(job.dst_store, job.dst_prefix)
    sem = asyncio.Semaphore(job.concurrency)
    decrypt_with = held if job.decrypt else []

    async def one(item: ToCheck) -> None:
        async with sem:
            out.add(
                await judge_content(
                    src, dst, item, decrypt_with, onward=job.onward, onward_identities=held
                )
            )

    try:
        tasks = [asyncio.create_task(one(item)) for item in items]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await src.store.close()
        await dst.store.close()


def run_verify_shard(spec: VerifySpec, items: list[ToCheck]) -> Iterator[Verdicts]:
    """The Ray task (a generator): judge ``items``, yielding verdicts until the last batch."""
    out = _Collected()

    def main() -> None:
        try:
            asyncio.run(_read_shard(spec, items, out))
            out.end()
        except AccessDenied as exc:
            out.end(stopped=("access", str(exc)))
        except WrongIdentity as exc:
            out.end(stopped=("identity", str(exc)))
        except DaulatError as exc:
            out.end(error=str(exc))
        except BaseException as exc:  # reported to the driver, never lost in a thread
            out.end(error=f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=main, name="daulat-verify-shard", daemon=True)
    thread.start()
    while True:
        batch = out.take(REPORT_SECONDS)
        if batch.judged or batch.final:
            yield batch
        if batch.final:
            break
    thread.join()


# --------------------------------------------------------------------------------------------
# On the driver


async def check_content(
    config: Config,
    address: str | None,
    workers: int | None,
    job: ContentJob,
    items: Iterator[ToCheck],
    planned: tuple[int, int],
    on_judged: Callable[[Sequence[Judged]], None],
) -> tuple[int, int]:
    """Judge ``items`` on Ray workers (at most ``workers`` shards in flight; None: the
    cluster's CPUs), handing verdicts to ``on_judged`` as they come. Returns the shards run
    and the shard attempts lost. Raises :class:`AccessDenied` / :class:`WrongIdentity` when a worker met
    one, as the local reading would."""
    conn = await asyncio.to_thread(connect, address, local_cpus=workers)
    try:
        return await _check(conn, config, workers, job, items, planned, on_judged)
    finally:
        await asyncio.to_thread(conn.close)


async def _check(
    conn: Connection,
    config: Config,
    workers: int | None,
    job: ContentJob,
    items: Iterator[ToCheck],
    planned: tuple[int, int],
    on_judged: Callable[[Sequence[Judged]], None],
) -> tuple[int, int]:
    slots_n = workers or conn.cpus()
    if conn.started_here:  # as the copy's driver: a local Ray's slots at most
        slots_n = min(slots_n, conn.cpus())
    timeouts: list[tuple[str, float]] = []
    for name in sorted({job.src_store, job.dst_store}):
        cfg = config.stores.get(name)
        if cfg is not None and cfg.request_timeout is not None:
            timeouts.append((name, float(cfg.request_timeout)))
    spec = VerifySpec(str(config.path.resolve()), job, tuple(timeouts))
    task = conn.ray.remote(num_cpus=1, max_retries=0)(run_verify_shard)
    bounds = bounds_for(planned[0], planned[1], slots_n)
    slots = asyncio.Semaphore(slots_n)
    running: set[asyncio.Task[None]] = set()
    lost = [0]
    started = 0
    failure: list[BaseException] = []

    async def shard(chunk: list[ToCheck]) -> None:
        remaining = {item.key: item for item in chunk}
        why = ""
        for _ in range(SHARD_ATTEMPTS):
            try:
                async for ref in task.remote(spec, list(remaining.values())):
                    batch: Verdicts = await ref
                    # Each object once: a retried attempt is sent only what was not reported.
                    on_judged([j for j in batch.judged if remaining.pop(j.key, None) is not None])
                    if batch.stopped is not None:
                        kind, message = batch.stopped
                        raise (
                            WrongIdentity(message) if kind == "identity" else AccessDenied(message)
                        )
                    if batch.error is not None:
                        raise AccessDenied(f"a Ray worker could not verify: {batch.error}")
                    if batch.final:
                        break
                return
            except conn.ray.exceptions.RayError as exc:
                if isinstance(exc, conn.ray.exceptions.RayTaskError):
                    raise  # a defect, not a lost worker: it ends the run
                lost[0] += 1
                text = str(exc).strip()
                why = text.splitlines()[0] if text else type(exc).__name__
        on_judged(
            [
                Judged(
                    key, f"could not verify: the Ray worker was lost {SHARD_ATTEMPTS} times: {why}"
                )
                for key in remaining
            ]
        )

    async def one(chunk: list[ToCheck]) -> None:
        try:
            await shard(chunk)
        except BaseException as exc:
            # The first failure stops the verification: the other shards stop with it.
            failure.append(exc)
            for t in running:
                if t is not asyncio.current_task():
                    t.cancel()
        finally:
            slots.release()

    try:
        for chunk in shards(items, bounds):
            await slots.acquire()
            if failure:
                slots.release()
                break
            t = asyncio.create_task(one(chunk))
            started += 1
            running.add(t)
            t.add_done_callback(running.discard)
        await asyncio.gather(*running)
    finally:
        for t in list(running):
            t.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    if failure:
        raise failure[0]
    return started, lost[0]
