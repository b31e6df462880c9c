"""The manifest: what each store holds, kept in SQLite under ``.daulat/``.

Scans stream listings into the database in batches, so memory stays flat however many objects a
store holds. A re-scan compares each batch with what the previous scan saw (in SQL, not in
Python) and records additions, changes and, at the end, deletions.

A scan with filters (:mod:`daulat.filters`) looks only at the objects they select: it records
what it found added or changed among them (in ``changes``, and its totals in its ``scans`` row)
and marks nothing removed, not even a selected object that is gone: it did not look at the whole
store, and an object it did not see may simply be one it was told to ignore. It leaves
``objects`` as the latest whole scan left it: merging a part of the store into the whole would
give figures no scan ever saw (an addition counted, the removal beside it not). Its row has
status ``filtered`` and its rules in ``filter``, so it never stands for a whole scan: everything
that asks for the latest scan or the objects (``daulat stores``, policies, drills) goes by the
latest ``complete`` one, and the next whole scan reports every change since that one.

Tables
    ``scans``    one row per scan of a store: when, status, totals, counts of changes; for a
                 scan read from an inventory report, the report and its date (the census date)
    ``objects``  every object as the latest whole scan saw it: size, modified time, the
                 provider's ETag labelled with its scheme, and the content SHA-256 once daulat
                 has hashed it
    ``changes``  what each scan found added, changed or removed
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from daulat.errors import ManifestError, StateError
from daulat.state import DatabaseKind, claim, connect
from daulat.stores.base import ObjectInfo

MANIFEST_NAME = "manifest.sqlite"
MANIFEST_KIND = DatabaseKind(
    "manifest database",
    application_id=0x644C544D,  # "dLTM"
    tables={
        "scans": frozenset({"id", "store", "status"}),
        "objects": frozenset({"store", "key", "size"}),
        "changes": frozenset({"scan_id", "key", "change"}),
    },
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scans (
    id INTEGER PRIMARY KEY,
    store TEXT NOT NULL,
    started TEXT NOT NULL,
    finished TEXT,
    status TEXT NOT NULL,          -- running | complete | filtered | failed
    objects INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    added INTEGER NOT NULL DEFAULT 0,
    changed INTEGER NOT NULL DEFAULT 0,
    removed INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    filter TEXT,                   -- JSON list of the rules of a filtered scan, else NULL
    report TEXT,                   -- a scan read from an inventory report: its address
    report_made TEXT               -- and when the provider made it (the census date)
);
CREATE TABLE IF NOT EXISTS objects (
    store TEXT NOT NULL,
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    modified TEXT NOT NULL,
    etag TEXT,
    etag_scheme TEXT NOT NULL,
    checksums TEXT NOT NULL DEFAULT '{}',
    sha256 TEXT,
    first_scan INTEGER NOT NULL,
    last_scan INTEGER NOT NULL,
    PRIMARY KEY (store, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes (
    scan_id INTEGER NOT NULL,
    store TEXT NOT NULL,
    key TEXT NOT NULL,
    change TEXT NOT NULL,          -- added | changed | removed
    size INTEGER
);
CREATE INDEX IF NOT EXISTS changes_by_scan ON changes (scan_id);
"""

# Columns added after the first release of the schema: (table, name, type).
_ADDED_COLUMNS = [
    ("scans", "filter", "TEXT"),
    ("scans", "report", "TEXT"),
    ("scans", "report_made", "TEXT"),
]


@dataclass(frozen=True)
class ScanSummary:
    id: int
    store: str
    started: str
    finished: str | None
    status: str
    objects: int
    bytes: int
    added: int
    changed: int
    removed: int
    # Filtered scans: the rules, and what they left out of the listing (not stored).
    filter: list[str] | None = None
    excluded_objects: int = 0
    excluded_bytes: int = 0
    # A scan read from a provider's inventory report: the report's address and when the
    # provider made it. Its objects are as the report saw them then, not when it was read.
    report: str | None = None
    report_made: str | None = None

    @property
    def census_date(self) -> str | None:
        """When the objects recorded were as recorded: the report's date for a scan read
        from an inventory report, else when the listing finished."""
        return self.report_made or self.finished


class Manifest:
    """The SQLite manifest. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = connect(path, MANIFEST_KIND, timeout=30)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._migrate()
            claim(self._db, path, MANIFEST_KIND)
        except StateError:
            self._db.close()
            raise
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ManifestError(f"cannot open manifest {path}: {exc}") from None

    def _migrate(self) -> None:
        """Add columns that manifests written by earlier versions lack."""
        for table, column, kind in _ADDED_COLUMNS:
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> Manifest:
        return cls(state_dir / MANIFEST_NAME)

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    # --- scans -------------------------------------------------------------------------------

    def begin_scan(
        self, store: str, *, report: str | None = None, report_made: datetime | None = None
    ) -> int:
        """A new running scan of ``store``; ``report``, ``report_made``: the inventory report
        it is read from and when the provider made it (see :class:`ScanSummary`)."""
        made = report_made.astimezone(UTC).isoformat(timespec="seconds") if report_made else None
        cur = self._db.execute(
            "INSERT INTO scans (store, started, status, report, report_made) "
            "VALUES (?, ?, 'running', ?, ?)",
            (store, _now(), report, made),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def record_batch(
        self, scan_id: int, store: str, batch: Iterable[ObjectInfo], *, merge: bool = True
    ) -> None:
        """Note what one listing batch adds or changes, and merge it into ``objects``
        (``merge`` false, for a filtered scan: only note it, see the module docstring)."""
        rows = [
            (
                o.key,
                o.size,
                o.modified.isoformat(),
                o.etag,
                o.etag_scheme,
                json.dumps(dict(o.checksums), sort_keys=True) if o.checksums else "{}",
            )
            for o in batch
        ]
        db = self._db
        db.execute("BEGIN")
        try:
            db.execute(
                "CREATE TEMP TABLE IF NOT EXISTS incoming (key TEXT PRIMARY KEY, size INTEGER, "
                "modified TEXT, etag TEXT, etag_scheme TEXT, checksums TEXT)"
            )
            db.executemany("INSERT OR REPLACE INTO incoming VALUES (?, ?, ?, ?, ?, ?)", rows)
            db.execute(
                """INSERT INTO changes (scan_id, store, key, change, size)
                   SELECT ?, ?, i.key,
                          CASE WHEN o.key IS NULL THEN 'added' ELSE 'changed' END, i.size
                   FROM incoming i LEFT JOIN objects o ON o.store = ? AND o.key = i.key
                   WHERE o.key IS NULL OR o.size != i.size OR o.etag IS NOT i.etag
                      OR (i.etag IS NULL AND o.modified != i.modified)""",
                (scan_id, store, store),
            )
            if merge:
                db.execute(
                    """INSERT INTO objects (store, key, size, modified, etag, etag_scheme, checksums,
                                            sha256, first_scan, last_scan)
                       SELECT ?, key, size, modified, etag, etag_scheme, checksums, NULL, ?, ?
                       FROM incoming WHERE true
                       ON CONFLICT (store, key) DO UPDATE SET
                           sha256 = CASE WHEN objects.size = excluded.size
                                          AND objects.etag IS excluded.etag
                                          AND objects.modified = excluded.modified
                                         THEN objects.sha256 END,
                           size = excluded.size, modified = excluded.modified, etag = excluded.etag,
                           etag_scheme = excluded.etag_scheme, checksums = excluded.checksums,
                           last_scan = excluded.last_scan""",
                    (store, scan_id, scan_id),
                )
            db.execute("DELETE FROM incoming")
            db.execute(
                "UPDATE scans SET objects = objects + ?, bytes = bytes + ? WHERE id = ?",
                (len(rows), sum(r[1] for r in rows), scan_id),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def seen_in_scan(self, scan_id: int, store: str, keys: list[str]) -> list[str]:
        """Which of ``keys`` scan ``scan_id`` has already recorded (a source that lists a key
        twice, such as a malformed inventory report, is caught by this)."""
        found: list[str] = []
        for i in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            chunk = keys[i : i + 500]
            found += [
                row[0]
                for row in self._db.execute(
                    f"SELECT key FROM objects WHERE store = ? AND last_scan = ? AND key IN "
                    f"({','.join('?' * len(chunk))})",
                    (store, scan_id, *chunk),
                )
            ]
        return found

    def finish_scan(self, scan_id: int, store: str) -> ScanSummary:
        """Close a complete scan: objects not seen in it were removed from the store."""
        db = self._db
        db.execute("BEGIN")
        try:
            db.execute(
                """INSERT INTO changes (scan_id, store, key, change, size)
                   SELECT ?, store, key, 'removed', size FROM objects
                   WHERE store = ? AND last_scan < ?""",
                (scan_id, store, scan_id),
            )
            db.execute("DELETE FROM objects WHERE store = ? AND last_scan < ?", (store, scan_id))
            db.execute(
                """UPDATE scans SET status = 'complete', finished = ?,
                     added = (SELECT count(*) FROM changes WHERE scan_id = ? AND change = 'added'),
                     changed = (SELECT count(*) FROM changes WHERE scan_id = ? AND change = 'changed'),
                     removed = (SELECT count(*) FROM changes WHERE scan_id = ? AND change = 'removed')
                   WHERE id = ?""",
                (_now(), scan_id, scan_id, scan_id, scan_id),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        summary = self.scan(scan_id)
        assert summary is not None
        return summary

    def finish_filtered_scan(self, scan_id: int, rules: list[str]) -> ScanSummary:
        """Close a scan that listed only what filters (``rules``) select: it marks nothing
        removed (see the module docstring)."""
        db = self._db
        db.execute(
            """UPDATE scans SET status = 'filtered', finished = ?, filter = ?,
                 added = (SELECT count(*) FROM changes WHERE scan_id = ? AND change = 'added'),
                 changed = (SELECT count(*) FROM changes WHERE scan_id = ? AND change = 'changed')
               WHERE id = ?""",
            (_now(), json.dumps(rules, ensure_ascii=False), scan_id, scan_id, scan_id),
        )
        summary = self.scan(scan_id)
        assert summary is not None
        return summary

    def fail_scan(self, scan_id: int, error: str) -> None:
        self._db.execute(
            "UPDATE scans SET status = 'failed', finished = ?, error = ? WHERE id = ?",
            (_now(), error, scan_id),
        )

    def scan(self, scan_id: int) -> ScanSummary | None:
        row = self._db.execute(
            "SELECT id, store, started, finished, status, objects, bytes, added, changed, removed, "
            "filter, report, report_made FROM scans WHERE id = ?",
            (scan_id,),
        ).fetchone()
        if row is None:
            return None
        summary = replace(ScanSummary(*row[:10]), report=row[11], report_made=row[12])
        return replace(summary, filter=json.loads(row[10])) if row[10] else summary

    def last_scan(self, store: str) -> ScanSummary | None:
        """The latest complete (whole, not filtered) scan of ``store``."""
        row = self._db.execute(
            "SELECT id FROM scans WHERE store = ? AND status = 'complete' ORDER BY id DESC LIMIT 1",
            (store,),
        ).fetchone()
        return self.scan(row[0]) if row else None

    def changes(self, scan_id: int) -> Iterator[tuple[str, str, int | None]]:
        """(key, change, size) for every change a scan recorded."""
        yield from self._db.execute(
            "SELECT key, change, size FROM changes WHERE scan_id = ? ORDER BY key", (scan_id,)
        )

    # --- objects -----------------------------------------------------------------------------

    def objects(self, store: str, prefix: str = "") -> Iterator[ObjectRow]:
        """Objects of ``store`` in key order, streamed from the database."""
        cur = self._db.execute(
            "SELECT key, size, modified, etag, etag_scheme, checksums, sha256 FROM objects "
            "WHERE store = ? AND key >= ? ORDER BY key",
            (store, prefix),
        )
        for key, size, modified, etag, scheme, checksums, sha in cur:
            if not key.startswith(prefix):
                break
            yield ObjectRow(key, size, modified, etag, scheme, json.loads(checksums), sha)

    def totals(self, store: str) -> tuple[int, int]:
        """(objects, bytes) currently known for ``store``."""
        n, b = self._db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM objects WHERE store = ?", (store,)
        ).fetchone()
        return int(n), int(b)


@dataclass(frozen=True)
class ObjectRow:
    key: str
    size: int
    modified: str
    etag: str | None
    etag_scheme: str
    checksums: dict[str, str]
    sha256: str | None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
