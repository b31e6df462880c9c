"""``daulat scan STORE --from-inventory URL``: a provider's inventory report read into the
manifest as a scan of STORE, for estates too large to list.

The report stands in for a listing: its objects under the store's bucket (container) and
prefix are recorded as one complete scan, so that ``daulat plan``, ``stores`` and policies
use it as they use a listed scan. Like a listing, it is the provider's word: what it
reports is checked when the objects are copied and verified, never believed as content.

A report is refused (:class:`~daulat.census.reports.InventoryError`, exit 2), naming the
file and line, when it is not what its provider documents, when a data file differs from
what the manifest says of it, when it is for another bucket or container, when it lists a
key twice, or (Azure) when its rule leaves out part of the store. The scan is then marked
failed and nothing is marked removed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Any

from daulat.audit import audited
from daulat.census.azure_inventory import AzureInventory, is_azure_manifest
from daulat.census.reports import InventoryError, ReportFiles, open_report
from daulat.census.rows import unit_of
from daulat.census.s3_inventory import S3Inventory, is_s3_manifest
from daulat.config import Config
from daulat.errors import ConfigError, DaulatError
from daulat.inventory import Manifest, ScanSummary, scan_details
from daulat.plurals import plural
from daulat.stores.base import ObjectInfo

__all__ = ["scan_from_inventory"]

# Rows merged into the manifest at a time (as a listed scan does).
BATCH = 5000
# daulat's own files at the store's root (see daulat.inventory.scanning.OWN): not part of a
# census. A ``.daulat/`` deeper down is the user's.
_BOOKKEEPING = ".daulat/"

Progress = Callable[[int, int], None]


def parse_json(name: str, raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise InventoryError(name, "is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise InventoryError(name, f"is not JSON ({exc.msg})", exc.lineno) from None


async def scan_from_inventory(
    config: Config,
    name: str,
    manifest: Manifest,
    address: str,
    progress: Progress | None = None,
) -> ScanSummary:
    """Record store ``name`` from the inventory report whose manifest is at ``address`` (see
    :mod:`daulat.census.reports`), audited as a scan. Returns the scan's summary."""
    cfg = config.store(name)
    if cfg.scheme not in ("s3", "az"):
        raise ConfigError(
            f"--from-inventory: store {name!r} is {cfg.scheme}://; inventory reports are read "
            "for S3 (S3 Inventory) and Azure (Blob Inventory) stores"
        )
    details: dict[str, object] = {"store": name, "from_inventory": address}
    with audited(config.state_dir, "scan", details, scan_details) as audit:
        async with open_report(config, address) as files:
            summary = await _import(
                files, cfg.scheme, cfg.bucket, cfg.prefix, name, manifest, progress
            )
        audit.done(summary)
        return summary


async def _import(
    files: ReportFiles,
    scheme: str,
    bucket: str,
    prefix: str,
    store: str,
    manifest: Manifest,
    progress: Progress | None,
) -> ScanSummary:
    raw = await files.manifest()
    doc = parse_json(files.manifest_name, raw)
    root = f"{prefix}/" if prefix else ""
    report: S3Inventory | AzureInventory
    if scheme == "s3":
        if not is_s3_manifest(doc):
            raise InventoryError(
                files.manifest_name, "is not an S3 Inventory manifest.json (no sourceBucket)"
            )
        report = S3Inventory(files, doc)
        if report.bucket != bucket:
            raise InventoryError(
                files.manifest_name,
                f"is the inventory of bucket {report.bucket!r}; store {store!r} is in {bucket!r}",
            )
    else:
        if not is_azure_manifest(doc):
            raise InventoryError(
                files.manifest_name,
                "is not an Azure Blob Inventory manifest (no ruleDefinition and files)",
            )
        report = AzureInventory(files, doc)
        report.check_covers(bucket, prefix)
        root = f"{bucket}/{root}"
    await report.check_manifest(raw)
    created = report.created
    age = dt.datetime.now(dt.UTC) - created
    if age > STALE_REPORT:
        log.warning(
            "daulat: inventory report %s was made %s UTC (%s days ago): the census of %s "
            "is as of then, not now",
            files.manifest_name,
            f"{created:%Y-%m-%d %H:%M}",
            f"{age.days:,}",
            store,
        )

    # The census is as of the report's date, not of this reading of it.
    scan_id = manifest.begin_scan(store, report=files.manifest_name, report_made=created)
    unit = unit_of(report.format)  # a Parquet file's rows are rows, a CSV file's lines lines
    pending: dict[str, tuple[ObjectInfo, str, int]] = {}
    objects = size = rows = 0

    def flush() -> None:
        nonlocal objects, size
        keys = list(pending)
        again = manifest.seen_in_scan(scan_id, store, keys)
        if again:
            _, file, line = pending[again[0]]
            raise InventoryError(file, f"lists {again[0]!r} a second time", line, unit=unit)
        batch = [info for info, _, _ in pending.values()]
        manifest.record_batch(scan_id, store, batch)
        objects += len(batch)
        size += sum(o.size for o in batch)
        pending.clear()
        if progress is not None:
            progress(objects, size)

    def take(file: str, line: int, info: ObjectInfo) -> None:
        # Keys no provider can hold mean a damaged or forged report, not a census.
        if len(info.key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
            raise InventoryError(
                file,
                f"lists a key of {len(info.key.encode('utf-8', 'surrogatepass')):,} bytes; "
                f"S3 and Azure keys are at most {MAX_KEY_BYTES:,}",
                line,
                unit=unit,
            )
        if "\x00" in info.key:
            raise InventoryError(file, "lists a key with a NUL character", line, unit=unit)
        if not info.key.startswith(root):
            return
        key = info.key[len(root) :]
        if not key or key.startswith(_BOOKKEEPING):
            return
        if key in pending:
            raise InventoryError(file, f"lists {key!r} a second time", line, unit=unit)
        pending[key] = (_rekey(info, key), file, line)
        if len(pending) >= BATCH:
            flush()

    try:
        if isinstance(report, S3Inventory):
            async for file, line, info in report.objects():
                rows += 1
                take(file, line, info)
        else:
            async for file, line, info, listed in report.objects():
                rows += 1
                if listed:
                    take(file, line, info)
            if report.object_count is not None and rows != report.object_count:
                raise InventoryError(
                    files.manifest_name,
                    f"counts {plural(report.object_count, 'object')}; its files hold {plural(rows, 'row')}",
                )
        if pending:
            flush()
    except DaulatError as exc:
        manifest.fail_scan(scan_id, str(exc))
        raise
    except BaseException:
        manifest.fail_scan(scan_id, "interrupted")
        raise
    summary = manifest.finish_scan(scan_id, store)
    if summary.objects == 0 and summary.removed:
        # An empty report is legitimate for an empty bucket, and also what a report of the
        # wrong prefix or a broken inventory job looks like.
        log.warning(
            "daulat: inventory report %s lists no object under %s: the %s object(s) the "
            "previous scan saw are recorded as removed",
            files.manifest_name,
            f"{bucket}/{root}" if root else bucket,
            f"{summary.removed:,}",
        )
    return summary


log = logging.getLogger(__name__)
#: A report older than this is said to be so (S3 makes them daily or weekly).
STALE_REPORT = dt.timedelta(days=8)
#: The longest key (UTF-8 bytes) S3 and Azure Blob Storage accept.
MAX_KEY_BYTES = 1024


def _rekey(info: ObjectInfo, key: str) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=info.size,
        modified=info.modified,
        etag=info.etag,
        etag_scheme=info.etag_scheme,
        checksums=info.checksums,
    )
