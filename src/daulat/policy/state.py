"""The state the rules read: the manifest and the transfer journal, opened read-only."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daulat.errors import ManifestError
from daulat.inventory.database import MANIFEST_KIND, MANIFEST_NAME
from daulat.state import DatabaseKind, check_database, private_dir
from daulat.transfer.journal import JOURNAL_KIND, JOURNAL_NAME

_PAIR = re.compile(
    r"^(?P<src>[A-Za-z0-9][A-Za-z0-9._-]*):(?P<sp>.*?) -> "
    r"(?P<dst>[A-Za-z0-9][A-Za-z0-9._-]*):(?P<dp>.*?)(?: \[(?P<tag>[^\]]*)\])?$"
)


@dataclass(frozen=True)
class _Pair:
    pair: str
    src: str
    src_prefix: str
    dst: str
    dst_prefix: str
    tag: str

    @property
    def encrypted(self) -> bool:
        return self.tag.startswith("age:")

    @property
    def restore(self) -> bool:
        return self.tag == "decrypt"


@dataclass(frozen=True)
class _Scan:
    finished: str  # the census date: an inventory report's date where it was read from one
    from_report: bool = False

    @property
    def described(self) -> str:
        """``scan of DATE``, or ``inventory report of DATE`` where the census came from one."""
        return (
            f"inventory report of {self.finished}"
            if self.from_report
            else f"scan of {self.finished}"
        )


@dataclass
class _Copies:
    """One replica's copies of the primary's objects in scope."""

    verified: int = 0
    verified_bytes: int = 0
    unverified: int = 0  # copied from this version, not verified by the latest verification
    unverified_bytes: int = 0
    stale: int = 0  # copied, but the primary's object changed since
    stale_bytes: int = 0
    oldest_verify: str | None = None
    newest_verify: str | None = None


@dataclass
class _Coverage:
    objects: int
    bytes: int
    under: int  # objects with fewer verified copies than required
    under_bytes: int
    copies: dict[str, _Copies]


class _State:
    """The manifest and the journal, attached read-only to one in-memory connection."""

    def __init__(self, state_dir: Path) -> None:
        self.db = sqlite3.connect("file::memory:", uri=True)
        self.db.execute("PRAGMA temp_store=FILE")
        self._report_dates: bool | None = None
        self.manifest = self._attach(
            state_dir / MANIFEST_NAME, "m", ("scans", "objects"), MANIFEST_KIND
        )
        self.journal = self._attach(state_dir / JOURNAL_NAME, "j", ("journal",), JOURNAL_KIND)
        has_verifications = self.journal is not None and self._has_table("j", "verifications")
        self.db.execute(
            "CREATE TEMP TABLE pairs (pair TEXT PRIMARY KEY, src TEXT, sp TEXT, splen INTEGER, "
            "dst TEXT, dp TEXT, enc INTEGER, restore INTEGER, latest TEXT, done INTEGER)"
        )
        self.pairs: list[_Pair] = []
        self._writes: dict[tuple[str, tuple[str, ...], str], tuple[int, int, int, int]] = {}
        if self.journal is None:
            return
        latest: dict[str, str] = {}
        if has_verifications:
            latest = dict(
                self.db.execute("SELECT pair, max(time) FROM j.verifications GROUP BY pair")
            )
        for pair, done in self.db.execute(
            "SELECT pair, sum(state = 'done') FROM j.journal GROUP BY pair"
        ).fetchall():
            m = _PAIR.match(pair)
            if m is None or not done:
                continue
            p = _Pair(pair, m["src"], m["sp"], m["dst"], m["dp"], m["tag"] or "")
            self.pairs.append(p)
            self.db.execute(
                "INSERT INTO temp.pairs VALUES (?, ?, ?, length(?), ?, ?, ?, ?, ?, ?)",
                (
                    pair,
                    p.src,
                    p.src_prefix,
                    p.src_prefix,
                    p.dst,
                    p.dst_prefix,
                    int(p.encrypted),
                    int(p.restore),
                    latest.get(pair, ""),
                    int(done),
                ),
            )

    def _attach(
        self, path: Path, schema: str, tables: Sequence[str], kind: DatabaseKind
    ) -> Path | None:
        if not path.is_file():
            return None
        private_dir(path.parent)
        try:
            self.db.execute(
                f"ATTACH DATABASE ? AS {schema}", (path.resolve().as_uri() + "?mode=ro",)
            )
        except sqlite3.DatabaseError as exc:
            raise ManifestError(f"cannot read {path}: {exc}") from None
        check_database(self.db, path, kind, schema=schema)
        if not all(self._has_table(schema, t) for t in tables):
            self.db.execute(f"DETACH DATABASE {schema}")
            return None
        return path

    def _has_table(self, schema: str, table: str) -> bool:
        try:
            row = self.db.execute(
                f"SELECT 1 FROM {schema}.sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise ManifestError(f"cannot read the {schema} state database: {exc}") from None
        return row is not None

    def close(self) -> None:
        self.db.close()

    # queries

    def last_scan(self, store: str) -> _Scan | None:
        if self.manifest is None:
            return None
        # A manifest written before scans from inventory reports has no report_made, and
        # is attached read-only here, unmigrated.
        made = "report_made" if self._has_report_dates() else "NULL"
        row = self.db.execute(
            f"SELECT coalesce({made}, finished, started), {made} IS NOT NULL "
            "FROM m.scans WHERE store = ? AND status = 'complete' ORDER BY id DESC LIMIT 1",
            (store,),
        ).fetchone()
        return _Scan(str(row[0]), bool(row[1])) if row else None

    def _has_report_dates(self) -> bool:
        if self._report_dates is None:
            columns = {row[1] for row in self.db.execute("PRAGMA m.table_info(scans)")}
            self._report_dates = "report_made" in columns
        return self._report_dates

    def totals(self, store: str, prefix: str) -> tuple[int, int]:
        assert self.manifest is not None
        n, b = self.db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM m.objects "
            "WHERE store = ? AND key >= ? AND substr(key, 1, length(?)) = ?",
            (store, prefix, prefix, prefix),
        ).fetchone()
        return int(n), int(b)

    def holds(self, store: str, prefix: str) -> bool:
        if self.manifest is None or self.last_scan(store) is None:
            return False
        row = self.db.execute(
            "SELECT 1 FROM m.objects WHERE store = ? AND key >= ? AND substr(key, 1, length(?)) = ? "
            "LIMIT 1",
            (store, prefix, prefix, prefix),
        ).fetchone()
        return row is not None

    def coverage(self, primary: str, prefix: str, replicas: Sequence[str], need: int) -> _Coverage:
        """Classify every object of ``primary`` under ``prefix`` against each replica, in SQL.

        Per object and replica one correlated lookup (journal primary key) yields a code: '3' plus
        the verification time (verified by the latest verification of its pair, same source
        version), '2' (copied from this version, not currently verified), '1' (copied from another
        version), '0' (no copy).
        """
        assert self.manifest is not None
        params: dict[str, Any] = {"p": primary, "d": prefix, "need": need}
        match = (
            "jr.size = o.size AND (jr.src_etag IS o.etag OR jr.src_etag IS NULL OR o.etag IS NULL)"
        )
        cols, aggs = [], []
        for i, replica in enumerate(replicas):
            params[f"r{i}"] = replica
            cols.append(
                f"""coalesce((SELECT max(CASE
                        WHEN jr.verified IS NOT NULL AND jr.verified >= p.latest AND {match}
                            THEN '3' || jr.verified
                        WHEN {match} THEN '2' ELSE '1' END)
                    FROM temp.pairs p CROSS JOIN j.journal jr
                      ON jr.pair = p.pair AND jr.key = substr(o.key, p.splen + 1)
                    WHERE p.src = :p AND p.dst = :r{i} AND p.restore = 0
                      AND substr(o.key, 1, p.splen) = p.sp AND jr.state = 'done'), '0') AS c{i}"""
                if self.journal is not None
                else f"'0' AS c{i}"
            )
            for code in "321":
                aggs.append(f"coalesce(sum(substr(c{i}, 1, 1) = '{code}'), 0)")
                aggs.append(
                    f"coalesce(sum(CASE WHEN substr(c{i}, 1, 1) = '{code}' THEN size END), 0)"
                )
            aggs.append(f"min(CASE WHEN substr(c{i}, 1, 1) = '3' THEN substr(c{i}, 2) END)")
            aggs.append(f"max(CASE WHEN substr(c{i}, 1, 1) = '3' THEN substr(c{i}, 2) END)")
        copies = " + ".join(["1", *(f"(substr(c{i}, 1, 1) = '3')" for i in range(len(replicas)))])
        inner = ", ".join(["o.size AS size", *cols])
        # CROSS JOIN fixes the join order (pairs outer, then one journal primary-key lookup);
        # left to itself the planner may scan the whole journal once per object.
        # LIMIT -1 keeps SQLite from flattening the subquery into the aggregate, which would
        # re-run each correlated lookup once per reference instead of once per object.
        sql = f"""SELECT count(*), coalesce(sum(size), 0),
                         coalesce(sum({copies} < :need), 0),
                         coalesce(sum(CASE WHEN {copies} < :need THEN size END), 0)
                         {"".join(", " + a for a in aggs)}
                  FROM (SELECT {inner} FROM m.objects o
                        WHERE o.store = :p AND o.key >= :d AND substr(o.key, 1, length(:d)) = :d
                        LIMIT -1)"""
        row = self.db.execute(sql, params).fetchone()
        out = _Coverage(int(row[0]), int(row[1]), int(row[2]), int(row[3]), {})
        for i, replica in enumerate(replicas):
            v = row[4 + 8 * i : 12 + 8 * i]
            out.copies[replica] = _Copies(
                int(v[0]), int(v[1]), int(v[2]), int(v[3]), int(v[4]), int(v[5]), v[6], v[7]
            )
        return out

    def last_write(self, dst: str) -> str | None:
        """When daulat last completed a write to ``dst`` (ISO 8601, as the journal keeps it)."""
        if self.journal is None:
            return None
        row = self.db.execute(
            """SELECT max(jr.updated) FROM temp.pairs p JOIN j.journal jr ON jr.pair = p.pair
               WHERE p.dst = ? AND jr.state = 'done'""",
            (dst,),
        ).fetchone()
        return str(row[0]) if row and row[0] is not None else None

    def writes(self, dst: str, sources: Sequence[str], prefix: str) -> tuple[int, int, int, int]:
        """(plain objects, plain bytes, encrypted objects, encrypted bytes) that daulat wrote to
        ``dst`` from ``sources`` (keys under ``prefix`` at the source), each key judged by its
        latest completed write."""
        if self.journal is None or not sources:
            return 0, 0, 0, 0
        cache_key = (dst, tuple(sources), prefix)
        if cache_key in self._writes:
            return self._writes[cache_key]
        marks = ", ".join("?" for _ in sources)
        rows = self.db.execute(
            f"""SELECT enc, count(*), coalesce(sum(size), 0) FROM (
                    SELECT p.enc AS enc, jr.size AS size, row_number() OVER (
                        PARTITION BY p.dp || jr.key ORDER BY jr.run_id DESC, p.enc) AS rn
                    FROM temp.pairs p JOIN j.journal jr ON jr.pair = p.pair
                    WHERE p.dst = ? AND p.src IN ({marks}) AND jr.state = 'done'
                      AND substr(p.sp || jr.key, 1, length(?)) = ?)
                WHERE rn = 1 GROUP BY enc""",
            (dst, *sources, prefix, prefix),
        ).fetchall()
        got = {int(enc): (int(n), int(b)) for enc, n, b in rows}
        plain, enc = got.get(0, (0, 0)), got.get(1, (0, 0))
        self._writes[cache_key] = (plain[0], plain[1], enc[0], enc[1])
        return self._writes[cache_key]
