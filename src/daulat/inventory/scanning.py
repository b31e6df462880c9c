"""Scan stores into the inventory database (:mod:`daulat.inventory.database`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

from daulat.address import store_only
from daulat.audit import audited
from daulat.census.sharded import DEFAULT_SHARDS, sharded_list
from daulat.config import Config, StoreConfig, placement_of
from daulat.errors import DaulatError, Interrupted, ManifestError
from daulat.filters import EVERYTHING, Filter
from daulat.inventory.database import Manifest, ScanSummary
from daulat.listing import own_places
from daulat.storenotes import store_notes
from daulat.stores import ObjectInfo, Store, open_store
from daulat.transfer.manifests import DST_MANIFEST_PREFIX

SCAN_TRANSACTION = 5000

# daulat's own files in a store (destination manifests, the sealed name key, a drill's scratch
# copy) sit under ``.daulat/`` at the store's root (see
# daulat.transfer.manifests.DST_MANIFEST_PREFIX), and a directory store may hold the local state
# directory (see daulat.listing.own_places). They are bookkeeping, not the data an inventory
# describes: counting them would make a replica look larger than what it replicates. A
# ``.daulat/`` deeper down (``photos/.daulat/x.jpg``) is the user's: it is counted, as copy
# copies it; hiding it would leave it out of every census, drill and plan.
OWN = (DST_MANIFEST_PREFIX,)

# Called after each batch with (objects so far, bytes so far).
Progress = Callable[[int, int], None]


async def scan_store(
    store: Store,
    manifest: Manifest,
    progress: Progress | None = None,
    *,
    filter: Filter = EVERYTHING,
    shards: int = DEFAULT_SHARDS,
    own: tuple[str, ...] = OWN,
) -> ScanSummary:
    """List ``store`` completely into ``manifest``; returns the scan's summary.

    Memory stays flat: each listing batch is merged into SQLite before the next is fetched. If
    the listing fails part-way, the scan is marked failed and nothing is marked removed.
    daulat's own files are left out: those under ``own``, key prefixes from the store's root
    (``.daulat/``; see ``OWN``). Up to
    ``shards`` listings run at once where the store can be listed in shards (see
    :mod:`daulat.census.sharded`; 1: one listing), with the same result.

    ``filter`` (keys relative to the store's root) looks only at the objects it selects,
    records what changed among them, marks nothing removed and leaves the inventory's objects
    as the latest whole scan left them (see :mod:`daulat.inventory.database`).
    """
    scan_id = manifest.begin_scan(store.name)
    objects = size = 0
    excluded = excluded_bytes = 0
    active = filter.active
    pending: list[ObjectInfo] = []

    def flush() -> None:
        nonlocal objects, size
        manifest.record_batch(scan_id, store.name, pending, merge=not active)
        objects += len(pending)
        size += sum(o.size for o in pending)
        pending.clear()
        if progress is not None:
            progress(objects, size)

    try:
        async with contextlib.aclosing(sharded_list(store, shards=shards)) as pages:
            async for batch in pages:
                listed = [o for o in batch if not o.key.startswith(own)]
                if active:
                    selected = [o for o in listed if filter.matches(o.key)]
                    excluded += len(listed) - len(selected)
                    excluded_bytes += sum(o.size for o in listed) - sum(o.size for o in selected)
                    listed = selected
                pending.extend(listed)
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
    if not active:
        return manifest.finish_scan(scan_id, store.name)
    summary = manifest.finish_filtered_scan(scan_id, filter.describe())
    return replace(summary, excluded_objects=excluded, excluded_bytes=excluded_bytes)


def scan_details(summary: ScanSummary) -> Mapping[str, object]:
    """What the audit log keeps of a scan (the filter fields only of a filtered one)."""
    skip = {"started"} if summary.filter is not None else {"started", *_FILTER_FIELDS}
    if summary.report is None:
        skip |= {"report", "report_made"}
    return {k: v for k, v in asdict(summary).items() if k not in skip}


_FILTER_FIELDS = ("filter", "excluded_objects", "excluded_bytes")


async def scan(
    config: Config,
    name: str,
    manifest: Manifest,
    progress: Progress | None = None,
    *,
    filter: Filter = EVERYTHING,
    shards: int = DEFAULT_SHARDS,
) -> ScanSummary:
    """Scan the configured store ``name`` into ``manifest``, recorded in the audit log however
    it ends. Raises what :func:`scan_store` raises (a store failure is a :class:`DaulatError`).
    ``filter``, ``shards``: see :func:`scan_store`."""
    cfg = config.store(store_only(name, "scan"))
    details: dict[str, object] = {"store": name}
    if filter.active:
        details["filter"] = filter.describe()
    with audited(config.state_dir, "scan", details, scan_details) as audit:
        store = open_store(cfg)
        try:
            summary = await scan_store(
                store, manifest, progress, filter=filter, shards=shards, own=own_places(config, cfg)
            )
        finally:
            await store.close()
        audit.done(summary)
    return summary


@dataclass(frozen=True)
class ScanFailure:
    """A store that could not be scanned, and why."""

    store: str
    error: str
    error_class: str

    def to_json(self) -> dict[str, object]:
        return {"store": self.store, "status": "failed", "error": self.error}


@dataclass
class ScanResults:
    """Every store scanned, and those that could not be."""

    summaries: list[ScanSummary] = field(default_factory=list)
    failures: list[ScanFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


async def scan_stores(
    config: Config,
    names: Sequence[str],
    manifest: Manifest,
    progress: Callable[[str], Progress | None] | None = None,
    *,
    filter: Filter = EVERYTHING,
    shards: int = DEFAULT_SHARDS,
) -> ScanResults:
    """Scan each of ``names`` in turn; a store that fails (unreachable, refused) is recorded in
    ``failures`` and the others are still scanned. ``progress(name)`` gives each scan's
    progress callback; ``filter`` applies to each (see :func:`scan_store`). Unknown names raise
    :class:`~daulat.errors.ConfigError` before anything is scanned; a signal stops the whole
    loop."""
    for name in names:
        config.store(store_only(name, "scan"))
    results = ScanResults()
    for name in names:
        try:
            results.summaries.append(
                await scan(
                    config,
                    name,
                    manifest,
                    progress(name) if progress else None,
                    filter=filter,
                    shards=shards,
                )
            )
        except (Interrupted, ManifestError):
            raise  # a signal, or local state that every further scan would meet too
        except DaulatError as exc:
            results.failures.append(ScanFailure(name, str(exc), type(exc).__name__))
    return results


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
    #: The census date of the latest whole scan: when its listing finished, or the date of
    #: the inventory report it was read from (``last_scan_report``, else None).
    last_scan: str | None
    #: What the provider's documentation says this store needs (see :mod:`daulat.storenotes`).
    notes: list[str] = field(default_factory=list)
    last_scan_report: str | None = None


async def probe(store: Store, timeout: float = 10.0) -> str | None:
    """None if the store answers a listing, else a short reason."""
    try:
        async with asyncio.timeout(timeout):
            await _first_page(store.list())
    except TimeoutError:
        return f"no answer within {timeout:.0f} s"
    except DaulatError as exc:
        return str(exc)
    return None


async def _first_page(pages: AsyncIterator[list[ObjectInfo]]) -> None:
    """Read one page and close the listing at once: a listing left open keeps fetching the
    next page in the background, which then fails on the closed store ("Task exception was
    never retrieved") once the caller has moved on."""
    try:
        async for _batch in pages:
            break
    finally:
        aclose = getattr(pages, "aclose", None)
        if aclose is not None:
            await aclose()


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
            last_scan=scan.census_date if scan else None,
            notes=store_notes(cfg),
            last_scan_report=scan.report if scan else None,
        )

    return list(await asyncio.gather(*(one(c) for c in config.stores.values())))
