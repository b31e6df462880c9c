"""The journal's planning tables: listings, a manifest's expected content, and the plan.

Listings of both sides are streamed into temporary tables (``src``, ``dst``) so that planning,
adoption and ``sync --delete`` are SQL joins with the journal: memory stays flat whatever the
number of objects. These queries are part of :class:`~daulat.transfer.journal.Journal`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence

from daulat.stores.base import ObjectInfo
from daulat.transfer.journalrows import REPLACED, Candidate, Completing, WorkItem

# 64 lowercase hex characters: the shape of a protected name.
_STORED_NAME_SQL = "length(key) = 64 AND key NOT GLOB '*[^0-9a-f]*'"


class PlanningTables:
    """The temporary tables of one run, in the journal's connection ``db``."""

    db: sqlite3.Connection

    # --- listings -----------------------------------------------------------------------------

    def new_listing(self, name: str) -> None:
        """(Re)create temporary table ``name`` for a listing.

        ``dkey`` is the key relative to the destination prefix when it differs from ``key``
        (protected names); NULL otherwise, so plain listings store nothing more.
        """
        self.db.execute(f"DROP TABLE IF EXISTS temp.{name}")
        self.db.execute(
            f"CREATE TEMP TABLE {name} (key TEXT PRIMARY KEY, size INTEGER, etag TEXT, dkey TEXT) "
            "WITHOUT ROWID"
        )

    def add_to_listing(
        self,
        name: str,
        strip: str,
        batch: Sequence[ObjectInfo],
        names: Callable[[str], str] | None = None,
    ) -> None:
        """Insert a listing batch, keys made relative by removing the prefix ``strip``;
        ``names`` maps a relative key to its destination key."""
        n = len(strip)
        self.db.execute("BEGIN")
        if names is None:
            self.db.executemany(
                f"INSERT OR REPLACE INTO {name} (key, size, etag) VALUES (?, ?, ?)",
                [(o.key[n:], o.size, o.etag) for o in batch],
            )
        else:
            self.db.executemany(
                f"INSERT OR REPLACE INTO {name} VALUES (?, ?, ?, ?)",
                [(o.key[n:], o.size, o.etag, names(o.key[n:])) for o in batch],
            )
        self.db.execute("COMMIT")

    def listing_totals(self, name: str) -> tuple[int, int]:
        n, b = self.db.execute(f"SELECT count(*), coalesce(sum(size), 0) FROM {name}").fetchone()
        return int(n), int(b)

    # --- expected content (restore) ------------------------------------------------------------

    def new_expected(self) -> None:
        """(Re)create temp table ``expected``: a manifest's entries by the key each object is
        stored under (``stored_as`` when names are protected), with its real ``key``."""
        self.db.execute("DROP TABLE IF EXISTS temp.expected")
        self.db.execute(
            "CREATE TEMP TABLE expected (stored TEXT PRIMARY KEY, key TEXT, size INTEGER, "
            "sha256 TEXT) WITHOUT ROWID"
        )

    def add_expected(self, entries: Sequence[dict[str, object]]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany(
            "INSERT OR REPLACE INTO expected VALUES (?, ?, ?, ?)",
            [
                (e.get("stored_as") or e["key"], e["key"], e.get("size"), e.get("sha256"))
                for e in entries
            ],
        )
        self.db.execute("COMMIT")

    def expected_sha256(self, stored: str) -> str | None:
        row = self.db.execute("SELECT sha256 FROM expected WHERE stored = ?", (stored,)).fetchone()
        return str(row[0]) if row and row[0] else None

    def expects_stored_names(self) -> bool:
        """Whether the loaded manifest lists objects under protected names."""
        row = self.db.execute("SELECT 1 FROM expected WHERE stored != key LIMIT 1").fetchone()
        return row is not None

    def name_from_expected(self, strip: str) -> list[tuple[str, int]]:
        """Restore of protected names: give every object of listing ``src`` (keys relative to
        ``strip``) its real name from the manifest, as ``dkey``.

        Objects under a stored name (64 hex characters) that the manifest does not list are
        taken out of the listing and returned as (key, size): their real name is unknown, and
        writing them under the hash would restore nothing anyone can find.
        """
        n = len(strip)
        self.db.execute("BEGIN")
        self.db.execute(
            "UPDATE src SET dkey = (SELECT substr(e.key, ? + 1) FROM expected e "
            "WHERE e.stored = ? || src.key AND substr(e.key, 1, ?) = ?)",
            (n, strip, n, strip),
        )
        unknown = self.db.execute(
            f"SELECT key, size FROM src WHERE dkey IS NULL AND {_STORED_NAME_SQL} ORDER BY key"
        ).fetchall()
        self.db.execute(f"DELETE FROM src WHERE dkey IS NULL AND {_STORED_NAME_SQL}")
        self.db.execute("COMMIT")
        return [(str(k), int(s)) for k, s in unknown]

    # --- planning -----------------------------------------------------------------------------

    def plan(self, pair: str, *, force: bool = False) -> tuple[int, int]:
        """Fill temp table ``work`` with source objects not already safely at the destination.

        An object is skipped only when the journal says it was done from the same source version
        (size and ETag) and the destination still lists it with the size and ETag recorded when
        it was written. Returns (objects, bytes) of the work.
        """
        self.db.execute("DROP TABLE IF EXISTS temp.work")
        self.db.execute(
            "CREATE TEMP TABLE work (id INTEGER PRIMARY KEY, key TEXT, size INTEGER, etag TEXT, "
            "dkey TEXT)"
        )
        skip = (
            "0"
            if force
            else """j.state = 'done' AND j.size = s.size AND j.src_etag IS s.etag
                    AND d.key IS NOT NULL AND d.size = j.dst_size AND d.etag IS j.dst_etag"""
        )
        self.db.execute(
            f"""INSERT INTO work (key, size, etag, dkey)
                SELECT s.key, s.size, s.etag, s.dkey FROM src s
                LEFT JOIN journal j ON j.pair = ? AND j.key = s.key
                LEFT JOIN dst d ON d.key = coalesce(s.dkey, s.key)
                WHERE NOT ({skip})
                ORDER BY s.size DESC, s.key""",
            (pair,),
        )
        n, b = self.db.execute("SELECT count(*), coalesce(sum(size), 0) FROM work").fetchone()
        return int(n), int(b)

    def work_totals(self) -> tuple[int, int]:
        """(objects, bytes) still in the plan."""
        n, b = self.db.execute("SELECT count(*), coalesce(sum(size), 0) FROM work").fetchone()
        return int(n), int(b)

    def adoption_candidates(self, pair: str, page: int = 1000) -> Iterator[list[Candidate]]:
        """Planned objects that the destination listing shows but that the journal does not
        record as done from the current source version, in pages (each read whole before it
        is yielded, so the caller may :meth:`unplan` a page before asking for the next).

        An object recorded done from this very source version but listed with another size
        or ETag carries that row's run (``recorded_run``): only a later write is adopted (see
        :mod:`daulat.transfer.adoption`); a ``completing`` row no newer than that row is
        ignored. One that ``verify --full`` found replaced is never a candidate.
        """
        last = 0
        while True:
            rows = self.db.execute(
                """SELECT w.id, w.key, w.dkey, w.size, w.etag, d.size, d.etag,
                          c.size, c.src_etag, c.nonce, c.sha256, c.plain_size, c.dst_size,
                          CASE WHEN j.state IS 'done' AND j.size = w.size
                                    AND j.src_etag IS w.etag THEN j.run_id END
                   FROM work w
                   JOIN dst d ON d.key = coalesce(w.dkey, w.key)
                   LEFT JOIN journal j ON j.pair = ? AND j.key = w.key
                   LEFT JOIN completing c ON c.pair = ? AND c.key = w.key
                        AND NOT (j.state IS 'done' AND c.run_id <= j.run_id)
                   WHERE w.id > ?
                     AND NOT (j.state IS 'failed' AND j.error IS ?)
                   ORDER BY w.id LIMIT ?""",
                (pair, pair, last, REPLACED, page),
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [
                Candidate(
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    r[5],
                    r[6],
                    None
                    if r[9] is None
                    else Completing(r[1], r[7], r[8], r[9], r[10], r[11], r[12], r[2]),
                    r[13],
                )
                for r in rows
            ]

    def unplan(self, work_ids: Sequence[int]) -> None:
        """Take items out of the plan (adopted: nothing left to send)."""
        self.db.execute("BEGIN")
        self.db.executemany("DELETE FROM work WHERE id = ?", [(i,) for i in work_ids])
        self.db.execute("COMMIT")

    def work(self, page: int = 1000) -> Iterator[WorkItem]:
        """Planned items, largest first (big objects start early and do not trail at the end)."""
        last = 0
        while True:
            rows = self.db.execute(
                "SELECT id, key, size, etag, dkey FROM work WHERE id > ? ORDER BY id LIMIT ?",
                (last, page),
            ).fetchall()
            if not rows:
                return
            for row_id, key, size, etag, dkey in rows:
                last = row_id
                yield WorkItem(key, size, etag, dkey)

    def extraneous(
        self, pair: str, page: int = 1000, *, keep: Callable[[str], bool] | None = None
    ) -> Iterator[list[tuple[str, int]]]:
        """Destination objects that the source does not have (for ``sync --delete``), by their
        key relative to the destination prefix, in pages of at most ``page`` in key order.

        ``keep`` (filters) leaves out the keys it answers False for: they are not the run's
        to delete. Each page is read whole before it is yielded, so the caller may delete and
        :meth:`forget` a page before asking for the next; memory holds one page, not the
        whole difference.
        """
        # Built here rather than while listing: plain listings pay nothing for it.
        self.db.execute(
            "CREATE INDEX IF NOT EXISTS temp.src_dkey ON src (dkey) WHERE dkey IS NOT NULL"
        )
        # A plain range on the key (not "? IS NULL OR ..."), so that each page is a seek in the
        # primary key rather than a scan from the start; ">= ''" takes even an empty key.
        after, op = "", ">="
        while True:
            rows = self.db.execute(
                f"SELECT d.key, d.size FROM dst d WHERE d.key {op} ? "
                "AND NOT EXISTS (SELECT 1 FROM src s WHERE s.key = d.key AND s.dkey IS NULL) "
                "AND NOT EXISTS (SELECT 1 FROM src s WHERE s.dkey = d.key) "
                "ORDER BY d.key LIMIT ?",
                (after, page),
            ).fetchall()
            if not rows:
                return
            after, op = rows[-1][0], ">"
            found = [(str(k), int(n)) for k, n in rows if keep is None or keep(str(k))]
            if found:
                yield found

    def real_named_copies(self) -> int:
        """How many destination objects are stored under the real name of a source object
        that this run stores under another (protected) name: copies an earlier run wrote
        without name protection, which only ``sync --delete`` would remove."""
        row = self.db.execute(
            "SELECT count(*) FROM dst d WHERE EXISTS "
            "(SELECT 1 FROM src s WHERE s.key = d.key AND s.dkey IS NOT NULL AND s.dkey != d.key)"
        ).fetchone()
        return int(row[0])

    def is_planned(self, dkey: str) -> bool:
        """Whether this run's plan writes ``dkey`` (relative to the destination prefix)."""
        row = self.db.execute(
            "SELECT 1 FROM work WHERE coalesce(dkey, key) = ? LIMIT 1", (dkey,)
        ).fetchone()
        return row is not None
