"""Amazon S3 Inventory reports: ``manifest.json`` and its CSV.gz or Parquet data files.

As AWS documents them (Amazon S3 User Guide, "Locating your inventory list" and "Amazon S3
Inventory list"):

``manifest.json``
    ``sourceBucket``, ``fileFormat`` (``CSV``, ``ORC`` or ``Parquet``), ``fileSchema`` and
    ``files``: each data file's ``key`` in the destination bucket, its ``size`` and
    ``MD5checksum`` (hex). ``manifest.checksum`` beside it holds the manifest's own MD5.
CSV data files
    gzip-compressed, no header row; the columns are ``fileSchema``'s comma-separated names
    (``Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, ...``).
    "When using the CSV file format, the key name is URL-encoded": form encoding, where a
    space is ``+`` and a literal ``+`` is ``%2B`` (as S3's event notifications encode keys).
Parquet data files
    ``fileSchema`` is a Parquet message type; the columns are ``bucket``, ``key`` (not
    encoded), ``version_id``, ``is_latest``, ``is_delete_marker``, ``size``,
    ``last_modified_date`` (TIMESTAMP_MILLIS), ``e_tag``, ...

A report of all versions lists every version and delete marker: only the current version
of each key that is not a delete marker is an object a listing shows. ORC is not read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from daulat.census.reports import InventoryError, ReportFiles, made_when
from daulat.census.rows import (
    csv_rows,
    parquet_rows,
    parse_bool,
    parse_size,
    parse_time,
    required,
    unit_of,
)
from daulat.stores.base import ObjectInfo
from daulat.stores.objectstore import normalise_etag

__all__ = ["S3Inventory", "is_s3_manifest"]

# (CSV name, Parquet name) of the columns read; the first four are required.
_COLUMNS = {
    "bucket": ("Bucket", "bucket"),
    "key": ("Key", "key"),
    "size": ("Size", "size"),
    "modified": ("LastModifiedDate", "last_modified_date"),
    "etag": ("ETag", "e_tag"),
    "latest": ("IsLatest", "is_latest"),
    "deleted": ("IsDeleteMarker", "is_delete_marker"),
}
_REQUIRED = ("bucket", "key", "size", "modified")


# In a URL-encoded key a literal % is %25: one not followed by two hex digits is damage.
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def is_s3_manifest(doc: Any) -> bool:
    return isinstance(doc, dict) and "sourceBucket" in doc and "fileFormat" in doc


@dataclass(frozen=True)
class _File:
    key: str
    size: int | None
    md5: str | None


class S3Inventory:
    """One S3 Inventory report (``doc``: its parsed manifest)."""

    def __init__(self, files: ReportFiles, doc: dict[str, Any]) -> None:
        self.files = files
        self.name = files.manifest_name
        self.bucket = self._str(doc, "sourceBucket")
        self.format = self._str(doc, "fileFormat").lower()
        if self.format not in ("csv", "parquet"):
            raise InventoryError(
                self.name,
                f"fileFormat {doc['fileFormat']!r} is not read: configure the inventory "
                "as CSV or Parquet",
            )
        self.schema = self._str(doc, "fileSchema")
        self.created = self._created(doc.get("creationTimestamp"))
        listed = doc.get("files")
        if not isinstance(listed, list):
            raise InventoryError(self.name, "has no list of files")
        self.data: list[_File] = []
        for i, f in enumerate(listed):
            if not isinstance(f, dict) or not isinstance(f.get("key"), str) or not f["key"]:
                raise InventoryError(self.name, f"files[{i}] has no key")
            size, md5 = f.get("size"), f.get("MD5checksum")
            if size is not None and (not isinstance(size, int) or size < 0):
                raise InventoryError(self.name, f"files[{i}] has a malformed size {size!r}")
            if md5 is not None and not isinstance(md5, str):
                raise InventoryError(self.name, f"files[{i}] has a malformed MD5checksum")
            self.data.append(_File(f["key"], size, md5))

    def _created(self, value: object) -> dt.datetime:
        """When S3 made the report (``creationTimestamp``: milliseconds since the epoch, as
        text): the census is as of then."""
        try:
            ms = (
                int(value)
                if isinstance(value, (str, int)) and not isinstance(value, bool)
                else None
            )
            created = dt.datetime.fromtimestamp(ms / 1000, dt.UTC) if ms is not None else None
        except (ValueError, OverflowError, OSError):
            created = None
        return made_when(self.name, "creationTimestamp", value, created)

    def _str(self, doc: dict[str, Any], field: str) -> str:
        value = doc.get(field)
        if not isinstance(value, str) or not value:
            raise InventoryError(self.name, f"has no {field}")
        return value

    async def check_manifest(self, raw: bytes) -> None:
        """``manifest.checksum``, where it is beside the manifest, is the manifest's MD5."""
        found = await self.files.sibling("manifest.checksum")
        if found is None:
            return
        want = found.decode("ascii", "replace").strip().lower()
        if hashlib.md5(raw, usedforsecurity=False).hexdigest() != want:
            raise InventoryError(self.name, "does not match manifest.checksum beside it")

    async def objects(self) -> AsyncIterator[tuple[str, int, ObjectInfo]]:
        """(file, line, object) for each current object the report lists, keys from the
        bucket's root."""
        for f in self.data:
            path = await self.files.fetch(f.key, f.size, f.md5)
            name = self.files.describe(f.key)
            rows = self._csv(path, name) if self.format == "csv" else self._parquet(path, name)
            for line, info in rows:
                yield name, line, info

    def _csv(self, path: Any, name: str) -> Any:
        header = [c.strip() for c in self.schema.split(",")]
        index = {}
        for field, (column, _) in _COLUMNS.items():
            if column in header:
                index[field] = header.index(column)
        self._require(index)
        width = len(header)
        for line, fields in csv_rows(path, name):
            if len(fields) != width:
                raise InventoryError(
                    name, f"has {len(fields)} fields; fileSchema names {width}", line
                )
            raw = fields[index["key"]]
            if _STRAY_PERCENT.search(raw):
                raise InventoryError(
                    name, "Key is not URL-encoded (a % not followed by two hex digits)", line
                )
            try:
                key = unquote_plus(raw, errors="strict")
            except UnicodeDecodeError:
                raise InventoryError(name, "Key is not URL-encoded UTF-8", line) from None
            info = self._row(name, line, {f: fields[i] for f, i in index.items()}, key)
            if info is not None:
                yield line, info

    def _parquet(self, path: Any, name: str) -> Any:
        wanted = [parquet for _, parquet in _COLUMNS.values()]
        columns, rows = parquet_rows(path, name, wanted)
        present = {f: p for f, (_, p) in _COLUMNS.items() if p in columns}
        self._require(present)
        for line, record in rows:
            values = {f: record.get(p) for f, p in present.items()}
            key = required(values["key"], name, line, "key", "row")
            if not isinstance(key, str):
                raise InventoryError(name, f"key {key!r} is not text", line, unit="row")
            info = self._row(name, line, values, key)
            if info is not None:
                yield line, info

    def _require(self, present: dict[str, Any]) -> None:
        missing = [_COLUMNS[f][0] for f in _REQUIRED if f not in present]
        if missing:
            raise InventoryError(
                self.name,
                f"has no {', '.join(missing)} column: daulat needs Size and LastModifiedDate "
                "(add them to the inventory's optional fields)",
            )

    def _row(self, name: str, line: int, v: dict[str, Any], key: str) -> ObjectInfo | None:
        unit = unit_of(self.format)
        # Columns named as the report's format names them (CSV: Size; Parquet: size).
        col = {f: names[0 if self.format == "csv" else 1] for f, names in _COLUMNS.items()}
        if required(v["bucket"], name, line, col["bucket"], unit) != self.bucket:
            raise InventoryError(
                name,
                f"lists bucket {v['bucket']!r}; the manifest is for {self.bucket!r}",
                line,
                unit=unit,
            )
        if not key:
            raise InventoryError(name, "has an empty Key", line, unit=unit)
        # A report of all versions: only the current version, if not a delete marker.
        if v.get("latest") not in (None, "") and not parse_bool(
            v["latest"], name, line, col["latest"], unit
        ):
            return None
        if v.get("deleted") not in (None, "") and parse_bool(
            v["deleted"], name, line, col["deleted"], unit
        ):
            return None
        etag = v.get("etag")
        return ObjectInfo(
            key=key,
            size=parse_size(v["size"], name, line, col["size"], unit),
            modified=parse_time(v["modified"], name, line, col["modified"], unit),
            etag=normalise_etag(etag) if isinstance(etag, str) and etag else None,
            etag_scheme="s3",
        )
