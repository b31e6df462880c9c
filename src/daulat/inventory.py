"""Scan stores into the manifest."""

from __future__ import annotations

from collections.abc import Callable

from daulat.errors import DaulatError
from daulat.manifest import Manifest, ScanSummary
from daulat.stores.base import Store

# Called after each batch with (objects so far, bytes so far).
Progress = Callable[[int, int], None]


async def scan_store(store: Store, manifest: Manifest, progress: Progress | None = None) -> ScanSummary:
    """List ``store`` completely into ``manifest``; returns the scan's summary.

    Memory stays flat: each listing batch is merged into SQLite before the next is fetched. If
    the listing fails part-way, the scan is marked failed and nothing is marked removed.
    """
    scan_id = manifest.begin_scan(store.name)
    objects = size = 0
    try:
        async for batch in store.list():
            manifest.record_batch(scan_id, store.name, batch)
            objects += len(batch)
            size += sum(o.size for o in batch)
            if progress is not None:
                progress(objects, size)
    except DaulatError as exc:
        manifest.fail_scan(scan_id, str(exc))
        raise
    except BaseException:
        manifest.fail_scan(scan_id, "interrupted")
        raise
    return manifest.finish_scan(scan_id, store.name)
