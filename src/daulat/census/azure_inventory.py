"""Azure Blob Inventory reports: ``<rule>-manifest.json`` and its CSV or Parquet files.

As Microsoft documents them (Azure Storage, "Azure Storage blob inventory"):

``<rule>-manifest.json``
    ``destinationContainer``, ``files`` (each data file's ``blob`` name in that container and
    its ``size``), ``ruleDefinition`` (``format``: ``csv`` or ``parquet``; ``objectType``;
    ``filters``: ``blobTypes``, ``prefixMatch``, ``excludePrefix``, ``includeSnapshots``,
    ``includeBlobVersions``, ``includeDeleted``; ``schemaFields``), ``status`` and
    ``summary`` (``objectCount``), ``inventoryStartTime`` and ``inventoryCompletionTime``
    (ISO 8601, UTC: when the run began and ended; the census is as of its completion).
    ``<rule>-manifest.checksum`` beside it holds the manifest's MD5.
Data files
    CSV with a header row of the schema fields; Parquet with columns of those names, dates as
    TIMESTAMP_MILLIS. ``Name`` is the blob's path including its container
    (``container/dir/blob``); ``Content-Length``, ``Last-Modified`` and ``Etag`` as a
    listing gives them. Rows are in no particular order.

A report covers the whole storage account unless its rule's filters narrow it: a report
whose filters leave out part of the scanned store (a prefix, a blob type) is refused, since
scanning from it would mark what it left out as removed. Snapshots, old versions, deleted
blobs and hierarchical-namespace folders are not objects a listing shows, and are skipped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from daulat.census.reports import InventoryError, ReportFiles, made_when
from daulat.census.rows import (
    csv_rows,
    iso_time,
    parquet_rows,
    parse_bool,
    parse_size,
    parse_time,
    required,
    unit_of,
)
from daulat.stores.base import ObjectInfo
from daulat.stores.objectstore import normalise_etag

__all__ = ["AzureInventory", "is_azure_manifest"]

_NAME, _LENGTH, _MODIFIED = "name", "content-length", "last-modified"
_REQUIRED = (_NAME, _LENGTH, _MODIFIED)
# Optional fields read (lower case: the documentation spells "ETag" and "Etag" both).
_OPTIONAL = ("etag", "snapshot", "iscurrentversion", "deleted", "hdi_isfolder")
# Blob types a listing of a container shows; a report must include those the account has.
_LISTED_TYPES = {"blockblob", "appendblob"}


def is_azure_manifest(doc: Any) -> bool:
    return isinstance(doc, dict) and "ruleDefinition" in doc and "files" in doc


class AzureInventory:
    """One rule's Blob Inventory report (``doc``: its parsed manifest)."""

    def __init__(self, files: ReportFiles, doc: dict[str, Any]) -> None:
        self.files = files
        self.name = files.manifest_name
        rule = doc.get("ruleDefinition")
        if not isinstance(rule, dict):
            raise InventoryError(self.name, "has no ruleDefinition")
        self.rule_name = str(doc.get("ruleName") or "")
        status = doc.get("status")
        if status is not None and status != "Succeeded":
            raise InventoryError(
                self.name, f"records an inventory run that ended {status!r}, not 'Succeeded'"
            )
        if str(rule.get("objectType", "blob")).lower() != "blob":
            raise InventoryError(self.name, "is a container inventory, not a blob inventory")
        self.format = str(rule.get("format", "")).lower()
        if self.format not in ("csv", "parquet"):
            raise InventoryError(
                self.name, f"has format {rule.get('format')!r}, not csv or parquet"
            )
        filters = rule.get("filters") or {}
        if not isinstance(filters, dict):
            raise InventoryError(self.name, "has malformed filters")
        self.filters = filters
        listed = doc.get("files")
        if not isinstance(listed, list):
            raise InventoryError(self.name, "has no list of files")
        self.data: list[tuple[str, int | None]] = []
        for i, f in enumerate(listed):
            if not isinstance(f, dict) or not isinstance(f.get("blob"), str) or not f["blob"]:
                raise InventoryError(self.name, f"files[{i}] has no blob")
            size = f.get("size")
            if size is not None and (not isinstance(size, int) or size < 0):
                raise InventoryError(self.name, f"files[{i}] has a malformed size {size!r}")
            self.data.append((f["blob"], size))
        summary = doc.get("summary")
        count = summary.get("objectCount") if isinstance(summary, dict) else None
        self.object_count = count if isinstance(count, int) else None
        self.created = self._completed(doc.get("inventoryCompletionTime"))

    def _completed(self, value: object) -> dt.datetime:
        """When the inventory run completed (``inventoryCompletionTime``): the census is as
        of then, as an S3 report's is as of its ``creationTimestamp``."""
        return made_when(self.name, "inventoryCompletionTime", value, iso_time(value))

    async def check_manifest(self, raw: bytes) -> None:
        """``<rule>-manifest.checksum``, where it is beside the manifest, is its MD5."""
        if not self.rule_name:
            return
        found = await self.files.sibling(f"{self.rule_name}-manifest.checksum")
        if found is None:
            return
        want = found.decode("ascii", "replace").strip().strip('"').lower()
        if hashlib.md5(raw, usedforsecurity=False).hexdigest() != want:
            raise InventoryError(
                self.name, f"does not match {self.rule_name}-manifest.checksum beside it"
            )

    def check_covers(self, container: str, prefix: str) -> None:
        """Refuse a report whose filters leave out part of ``container/prefix``."""
        scope = f"{container}/{prefix}" if prefix else f"{container}/"
        match = self.filters.get("prefixMatch") or []
        if match and not any(isinstance(p, str) and scope.startswith(p) for p in match):
            raise InventoryError(
                self.name,
                f"covers only prefixes {match}, not all of {scope!r}: a scan from it would "
                "mark the rest removed",
            )
        for p in self.filters.get("excludePrefix") or []:
            if isinstance(p, str) and (p.startswith(scope) or scope.startswith(p)):
                raise InventoryError(
                    self.name,
                    f"leaves out prefix {p!r} of {scope!r}: a scan from it would mark those "
                    "blobs removed",
                )
        types = {str(t).lower() for t in self.filters.get("blobTypes") or ()}
        if types and not types >= _LISTED_TYPES:
            raise InventoryError(
                self.name,
                f"covers blob types {sorted(types)} only; a scan needs blockBlob and "
                "appendBlob (and pageBlob where the account has them)",
            )

    async def objects(self) -> AsyncIterator[tuple[str, int, ObjectInfo, bool]]:
        """(file, line, object with its Name as the key, counted) for each row: ``counted``
        is False for rows that are not listed objects (snapshots, old versions, deleted
        blobs, folders), which are still counted against the summary's objectCount."""
        for blob, size in self.data:
            path = await self.files.fetch(blob, size, None)
            name = self.files.describe(blob)
            for line, info, listed in self._rows(path, name):
                yield name, line, info, listed

    def _rows(self, path: Path, name: str) -> Iterator[tuple[int, ObjectInfo, bool]]:
        if self.format == "csv":
            rows = csv_rows(path, name)
            header_line, header = next(rows, (1, []))
            lower = [h.strip().lower() for h in header]
            self._require(name, lower, header_line)
            index = {f: lower.index(f) for f in (*_REQUIRED, *_OPTIONAL) if f in lower}
            for line, fields in rows:
                if len(fields) != len(header):
                    raise InventoryError(
                        name, f"has {len(fields)} fields; the header names {len(header)}", line
                    )
                yield self._row(name, line, {f: fields[i] for f, i in index.items()})
            return
        columns, records = parquet_rows(path, name, [])
        by_lower = {c.lower(): c for c in columns}
        self._require(name, list(by_lower), None)
        wanted = [by_lower[f] for f in (*_REQUIRED, *_OPTIONAL) if f in by_lower]
        columns, records = parquet_rows(path, name, wanted)
        for line, record in records:
            yield self._row(name, line, {k.lower(): v for k, v in record.items()})

    def _require(self, name: str, present: list[str], line: int | None) -> None:
        missing = [f for f in _REQUIRED if f not in present]
        if missing:
            raise InventoryError(
                name,
                f"has no {', '.join(missing)} field: daulat needs Name, Content-Length and "
                "Last-Modified in the rule's schemaFields",
                line,
            )

    def _row(self, name: str, line: int, v: dict[str, Any]) -> tuple[int, ObjectInfo, bool]:
        unit = unit_of(self.format)
        full = required(v[_NAME], name, line, "Name", unit)
        if not isinstance(full, str) or "/" not in full.strip("/"):
            raise InventoryError(name, f"Name {full!r} is not container/blob", line, unit=unit)
        listed = True
        if v.get("snapshot") not in (None, ""):
            listed = False
        for field, keep in (
            ("iscurrentversion", True),
            ("deleted", False),
            ("hdi_isfolder", False),
        ):
            if (
                v.get(field) not in (None, "")
                and parse_bool(v[field], name, line, field, unit) != keep
            ):
                listed = False
        etag = v.get("etag")
        info = ObjectInfo(
            key=full,
            size=parse_size(v[_LENGTH], name, line, "Content-Length", unit),
            modified=parse_time(v[_MODIFIED], name, line, "Last-Modified", unit),
            etag=normalise_etag(etag) if isinstance(etag, str) and etag else None,
            etag_scheme="azure",
        )
        return line, info, listed
