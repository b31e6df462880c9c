"""Reading the rows of inventory data files: CSV (plain or gzip) and Parquet, each row given
with the file and line (Parquet: row) it came from, so that a malformed one is named exactly.

Parquet needs pyarrow, an optional extra (``pip install 'daulat[inventory]'``): it is large,
and only Parquet reports need it.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from daulat.census.reports import InventoryError
from daulat.errors import ConfigError

__all__ = [
    "csv_rows",
    "parquet_rows",
    "parse_bool",
    "parse_size",
    "parse_time",
    "required",
    "unit_of",
]

# Rows handed on at a time from a Parquet file (memory: this many rows of the columns read).
PARQUET_BATCH = 8192
# Some providers' CSV fields (metadata, tags) are long; a key is at most 1,024 bytes.
csv.field_size_limit(16 << 20)


def csv_rows(path: Path, name: str) -> Iterator[tuple[int, list[str]]]:
    """(line, fields) of each record of CSV file ``path`` (gzip-compressed or not), named
    ``name`` in errors. The line is the record's first physical line, counted from 1."""
    with path.open("rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
    with gzip.open(path, "rb") if gz else path.open("rb") as binary:
        text = io.TextIOWrapper(binary, encoding="utf-8", newline="")
        reader = csv.reader(text, strict=True)
        line = 1
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise InventoryError(name, f"is not valid CSV ({exc})", reader.line_num) from None
            except UnicodeDecodeError:
                raise InventoryError(name, "is not UTF-8 text", reader.line_num + 1) from None
            except (OSError, EOFError, zlib.error) as exc:
                raise InventoryError(
                    name, f"cannot be decompressed ({exc}): truncated or not gzip"
                ) from None
            yield line, fields
            line = reader.line_num + 1


def _parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            "reading a Parquet inventory report needs pyarrow: pip install 'daulat[inventory]'"
        ) from None
    return pq


def parquet_rows(
    path: Path, name: str, wanted: Sequence[str]
) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    """The file's column names, and (row, values) of each row for the ``wanted`` columns it
    has (rows counted from 1)."""
    pq = _parquet()
    try:
        pf = pq.ParquetFile(path)
        columns = list(pf.schema_arrow.names)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid and OSError variants
        raise InventoryError(name, f"is not a Parquet file ({exc})") from None
    present = [c for c in wanted if c in columns]

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        n = 0
        try:
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH, columns=present):
                for record in batch.to_pylist():
                    n += 1
                    yield n, record
        except InventoryError:
            raise
        except Exception as exc:
            raise InventoryError(name, f"cannot be read past row {n:,} ({exc})") from None

    return columns, rows()


def unit_of(fmt: str) -> str:
    """What a position in a data file of format ``fmt`` counts: Parquet has rows, CSV lines."""
    return "row" if fmt == "parquet" else "line"


def required(value: object, name: str, line: int, column: str, unit: str = "line") -> object:
    """``value`` of a column every row must fill; a null (Parquet) or empty field (CSV) is
    refused as "COLUMN is empty", at its line or row."""
    if value is None or value == "":
        raise InventoryError(name, f"{column} is empty", line, unit=unit)
    return value


def parse_size(value: object, name: str, line: int, column: str, unit: str = "line") -> int:
    required(value, name, line, column, unit)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    raise InventoryError(name, f"{column} {value!r} is not a size in bytes", line, unit=unit)


def parse_time(value: object, name: str, line: int, column: str, unit: str = "line") -> dt.datetime:
    """A time as the reports write it: ISO 8601 text (CSV), or a timestamp (Parquet's
    TIMESTAMP_MILLIS, which pyarrow gives as a datetime, naive meaning UTC)."""
    required(value, name, line, column, unit)
    when = value if isinstance(value, dt.datetime) else iso_time(value)
    if when is None:
        raise InventoryError(name, f"{column} {value!r} is not a date and time", line, unit=unit)
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def iso_time(value: object) -> dt.datetime | None:
    """``value`` read as ISO 8601 text, or None when it is not such text."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None


def parse_bool(value: object, name: str, line: int, column: str, unit: str = "line") -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InventoryError(name, f"{column} {value!r} is neither true nor false", line, unit=unit)
