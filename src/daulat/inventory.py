"""Scan stores into the manifest."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from daulat.config import Config, StoreConfig, placement_of
from daulat.errors import DaulatError
from daulat.manifest import Manifest, ScanSummary
from daulat.stores import ObjectInfo, Store, open_store

SCAN_TRANSACTION = 5000

# Called after each batch with (objects so far, bytes so far).
Progress = Callable[[int, int], None]


async def scan_store(
    store: Store, manifest: Manifest, progress: Progress | None = None
) -> ScanSummary:
    """List ``store`` completely into ``manifest``; returns the scan's summary.

    Memory stays flat: each listing batch is merged into SQLite before the next is fetched. If
    the listing fails part-way, the scan is marked failed and nothing is marked removed.
    """
    scan_id = manifest.begin_scan(store.name)
    objects = size = 0
    pending: list[ObjectInfo] = []

    def flush() -> None:
        nonlocal objects, size
        manifest.record_batch(scan_id, store.name, pending)
        objects += len(pending)
        size += sum(o.size for o in pending)
        pending.clear()
        if progress is not None:
            progress(objects, size)

    try:
        async for batch in store.list():
            pending.extend(batch)
            # Fewer, larger transactions: a commit costs more than the rows it carries.
            if len(pending) >= SCAN_TRANSACTION:
                flush()
        if pending:
            flush()
    except DaulatError as exc:
        manifest.fail_scan(scan_id, str(exc))
        raise
    except BaseException:
        manifest.fail_scan(scan_id, "interrupted")
        raise
    return manifest.finish_scan(scan_id, store.name)


@dataclass(frozen=True)
class StoreStatus:
    """One row of ``daulat stores``."""

    name: str
    url: str
    provider: str
    provider_name: str
    region: str | None
    country: str
    jurisdictions: list[str]
    laws: list[str]
    reachable: bool
    problem: str | None
    objects: int | None
    bytes: int | None
    last_scan: str | None


async def probe(store: Store, timeout: float = 10.0) -> str | None:
    """None if the store answers a listing, else a short reason."""
    try:
        async with asyncio.timeout(timeout):
            async for _batch in store.list():
                break
    except TimeoutError:
        return f"no answer within {timeout:.0f} s"
    except DaulatError as exc:
        return str(exc)
    return None


async def store_statuses(
    config: Config, manifest: Manifest, *, check: bool = True
) -> list[StoreStatus]:
    """Describe every configured store: where, whose law, reachable, last scan."""

    async def one(cfg: StoreConfig) -> StoreStatus:
        placement = placement_of(cfg)
        problem: str | None = None
        if check:
            store = open_store(cfg)
            try:
                problem = await probe(store)
            finally:
                await store.close()
        scan = manifest.last_scan(cfg.name)
        objects, size = manifest.totals(cfg.name) if scan else (None, None)
        return StoreStatus(
            name=cfg.name,
            url=cfg.url,
            provider=cfg.provider.value,
            provider_name=placement.provider.name,
            region=cfg.region,
            country=placement.country,
            jurisdictions=placement.jurisdictions,
            laws=[law.citation for law in placement.provider.laws],
            reachable=problem is None,
            problem=problem,
            objects=objects,
            bytes=size,
            last_scan=scan.finished if scan else None,
        )

    return list(await asyncio.gather(*(one(c) for c in config.stores.values())))
