"""The transfer journal: what has been copied where, in SQLite under ``.daulat/``.

Every object of a source → destination pair has one row with its state. A row is marked ``done``
only after the destination confirmed the upload and its SHA-256 was recorded. Rows of small
objects are committed in batches (WAL); an object over the writer's ``immediate_over`` size is
committed as soon as it completes. After a crash at any moment a re-run skips the objects whose
completion was committed, adopts those complete at the destination whose proof verifies
(:mod:`daulat.transfer.adoption`, which uses the ``completing`` rows kept here) and redoes the rest.

Listings of both sides are streamed into temporary tables so that planning and verification are
SQL joins: memory stays flat whatever the number of objects.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from daulat.errors import ManifestError, StateError
from daulat.state import DatabaseKind, claim, connect, hold_lock, is_locked
from daulat.stores.base import ObjectInfo

JOURNAL_NAME = "transfers.sqlite"
# Beside the journal: one lock file per run in progress (see Journal.begin_run).
RUN_LOCKS = "runs"
JOURNAL_KIND = DatabaseKind(
    "transfer journal",
    application_id=0x644C544A,  # "dLTJ"
    tables={
        "runs": frozenset({"id", "kind", "status"}),
        "journal": frozenset({"pair", "key", "state"}),
    },
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,            -- copy | sync | exit | verify
    pair TEXT NOT NULL,
    src TEXT NOT NULL,
    dst TEXT NOT NULL,
    started TEXT NOT NULL,
    finished TEXT,
    status TEXT NOT NULL,          -- running | complete | incomplete | refused | failed | interrupted
    summary TEXT
);
CREATE TABLE IF NOT EXISTS journal (
    pair TEXT NOT NULL,
    key TEXT NOT NULL,             -- relative to the source prefix
    size INTEGER NOT NULL,         -- source size
    src_etag TEXT,
    state TEXT NOT NULL,           -- done | failed | refused
    sha256 TEXT,                   -- of the plaintext, computed while streaming
    plain_size INTEGER,            -- plaintext size (differs from size/dst_size when encrypted)
    dst_size INTEGER,
    dst_etag TEXT,
    error TEXT,
    run_id INTEGER NOT NULL,
    updated TEXT NOT NULL,
    verified TEXT,                 -- time of the last successful verification
    stored_as TEXT,                -- key relative to the destination prefix, if not ``key``
    PRIMARY KEY (pair, key)
) WITHOUT ROWID;
-- A streamed object whose last byte has been handed to the store, committed before the store
-- can complete the upload; removed with the object's done row (see daulat.transfer.adoption).
CREATE TABLE IF NOT EXISTS completing (
    pair TEXT NOT NULL,
    key TEXT NOT NULL,             -- relative to the source prefix
    size INTEGER NOT NULL,         -- source size, as read
    src_etag TEXT,
    nonce TEXT NOT NULL,           -- hex; also MAC'd into the object's metadata
    sha256 TEXT NOT NULL,          -- of the plaintext
    plain_size INTEGER NOT NULL,
    dst_size INTEGER NOT NULL,     -- bytes handed to the store: the size it must list
    stored_as TEXT,
    run_id INTEGER NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY (pair, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
    location TEXT NOT NULL,        -- the destination: endpoint, bucket and store prefix
    key TEXT NOT NULL,             -- relative to the store (destination prefix included)
    upload_id TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    started TEXT NOT NULL,
    part_size INTEGER,             -- bytes per part (the first thousand), for a later resume
    resume TEXT,                   -- JSON: what a later run needs to continue it (see below)
    PRIMARY KEY (location, key, upload_id)
) WITHOUT ROWID;
-- SHA-256 of every 8 MiB chunk of an object's plaintext (daulat.stores.chunkhash), for objects
-- of more than one chunk; a done row without one here has a single chunk (its sha256).
CREATE TABLE IF NOT EXISTS chunks (
    pair TEXT NOT NULL,
    key TEXT NOT NULL,             -- relative to the source prefix, as in journal
    chunk_size INTEGER NOT NULL,
    sha256 BLOB NOT NULL,          -- the 32-byte digests, concatenated in order
    PRIMARY KEY (pair, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS verifications (
    pair TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    time TEXT NOT NULL,
    full INTEGER NOT NULL,
    objects INTEGER NOT NULL,
    verified INTEGER NOT NULL,
    problems INTEGER NOT NULL
);
"""


# Columns added after the first release of the schema: (name, type).
_ADDED_COLUMNS = [("plain_size", "INTEGER"), ("stored_as", "TEXT")]


class State(StrEnum):
    DONE = "done"
    FAILED = "failed"
    REFUSED = "refused"


# The error of a row whose object ``verify --full`` found different at the destination from
# what was written (see Journal.replaced): failed, so the next copy or exit sends it again, and
# never adopted by its proof, which a replacement that keeps size and metadata still carries.
REPLACED = (
    "replaced at the destination: verify --full found its content different from what was "
    "written; the next copy or exit sends it again"
)


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One object to copy: its key relative to the source prefix, and what the source said.

    ``dkey`` is its key relative to the destination prefix when that differs (protected names,
    or a restore of them), else None.
    """

    key: str
    size: int
    etag: str | None
    dkey: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one object, as written to the journal."""

    key: str
    size: int
    src_etag: str | None
    state: State
    sha256: str | None = None
    dst_size: int | None = None
    dst_etag: str | None = None
    error: str | None = None
    plain_size: int | None = None
    stored_as: str | None = None  # key relative to the destination prefix, if not ``key``
    # SHA-256 of each chunk of the plaintext (concatenated digests) and the chunk size, for
    # objects of more than one chunk (daulat.stores.chunkhash).
    chunks: bytes | None = None
    chunk_size: int | None = None


@dataclass(frozen=True, slots=True)
class Completing:
    """A streamed object about to complete at the destination (table ``completing``)."""

    key: str
    size: int
    src_etag: str | None
    nonce: str
    sha256: str
    plain_size: int
    dst_size: int
    stored_as: str | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A planned object that the destination already lists (see ``adoption_candidates``)."""

    work_id: int
    key: str
    dkey: str | None
    size: int  # source, as listed now
    etag: str | None
    dst_size: int | None  # destination, as listed now
    dst_etag: str | None
    completing: Completing | None
    # The run whose done row records this very source version (the object is listed with
    # another size or ETag since): only a proof of a later write is adopted.
    recorded_run: int | None = None


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Journal:
    """The journal database. One connection, used from the event loop's thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._run_locks: dict[int, int] = {}
        self.db = connect(path, JOURNAL_KIND, timeout=60)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            # FULL: a batch acknowledged as committed survives a power cut, not just a kill.
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA temp_store=FILE")
            self.db.executescript(_SCHEMA)
            self._migrate()
            # Partial: rows of plain copies (no stored_as) cost nothing here.
            self.db.execute(
                "CREATE INDEX IF NOT EXISTS journal_stored_as ON journal (pair, stored_as) "
                "WHERE stored_as IS NOT NULL"
            )
            claim(self.db, path, JOURNAL_KIND)
        except StateError:
            self.db.close()
            raise
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise ManifestError(f"cannot open transfer journal {path}: {exc}") from None

    def _migrate(self) -> None:
        """Add columns that journals written by earlier versions lack."""
        have = {row[1] for row in self.db.execute("PRAGMA table_info(journal)")}
        for column, kind in _ADDED_COLUMNS:
            if column not in have:
                self.db.execute(f"ALTER TABLE journal ADD COLUMN {column} {kind}")
        have = {row[1] for row in self.db.execute("PRAGMA table_info(uploads)")}
        if "resume" not in have:
            self.db.execute("ALTER TABLE uploads ADD COLUMN resume TEXT")

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> Journal:
        return cls(state_dir / JOURNAL_NAME)

    def close(self) -> None:
        self.db.close()
        for fd in self._run_locks.values():
            os.close(fd)  # a run left unfinished stays "running", and no longer live
        self._run_locks.clear()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- runs ---------------------------------------------------------------------------------

    def begin_run(self, kind: str, pair: str, src: str, dst: str) -> int:
        """Record a run as running, and hold its lock until :meth:`end_run` or the process ends
        (however it ends: the kernel drops the lock), so that :meth:`run_is_live` tells a run
        in progress, here or in another process, from one that was killed."""
        cur = self.db.execute(
            "INSERT INTO runs (kind, pair, src, dst, started, status) VALUES (?, ?, ?, ?, ?, 'running')",
            (kind, pair, src, dst, now()),
        )
        assert cur.lastrowid is not None
        self._run_locks[cur.lastrowid] = hold_lock(self._run_lock_path(cur.lastrowid))
        return cur.lastrowid

    def end_run(self, run_id: int, status: str, summary_json: str) -> None:
        self.db.execute(
            "UPDATE runs SET finished = ?, status = ?, summary = ? WHERE id = ?",
            (now(), status, summary_json, run_id),
        )
        fd = self._run_locks.pop(run_id, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                self._run_lock_path(run_id).unlink()
            os.close(fd)

    def run_is_live(self, run_id: int) -> bool:
        """Whether run ``run_id`` is still going on (its process holds its lock)."""
        return is_locked(self._run_lock_path(run_id))

    def _run_lock_path(self, run_id: int) -> Path:
        return self.path.parent / RUN_LOCKS / f"{run_id}.lock"

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

    def find_pair(self, base: str) -> str:
        """The pair id most recently used for ``base`` (with any codec tag), else ``base``."""
        row = self.db.execute(
            "SELECT pair FROM runs WHERE (pair = ? OR pair LIKE ? ESCAPE '\\') "
            "AND kind != 'verify' ORDER BY id DESC LIMIT 1",
            (base, _like_escape(base) + " [%"),
        ).fetchone()
        return str(row[0]) if row else base

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

    # --- multipart uploads --------------------------------------------------------------------

    def record_upload(
        self, location: str, key: str, upload_id: str, run_id: int, part_size: int | None
    ) -> None:
        """Note a multipart upload daulat began, committed before its first part is sent: only
        uploads recorded here are ever aborted as daulat's own."""
        self.db.execute(
            "INSERT OR REPLACE INTO uploads "
            "(location, key, upload_id, run_id, started, part_size) VALUES (?, ?, ?, ?, ?, ?)",
            (location, key, upload_id, run_id, now(), part_size),
        )

    def record_resumable_upload(
        self, location: str, key: str, upload_id: str, run_id: int, part_size: int, resume: str
    ) -> None:
        """Note an upload a later run may continue; ``resume`` (JSON) says from which source
        version and codec it was begun (see :mod:`daulat.transfer.resume`). Committed before
        the first part is sent, like :meth:`record_upload`."""
        self.db.execute(
            "INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?, ?, ?, ?)",
            (location, key, upload_id, run_id, now(), part_size, resume),
        )

    def claim_upload(self, location: str, key: str, upload_id: str, run_id: int) -> None:
        """A run continues the upload: it is that run's from now on."""
        self.db.execute(
            "UPDATE uploads SET run_id = ? WHERE location = ? AND key = ? AND upload_id = ?",
            (run_id, location, key, upload_id),
        )

    def resumable_uploads(
        self, location: str, key: str | None = None
    ) -> list[tuple[str, str, int, int, str]]:
        """(key, upload_id, run_id, part_size, resume JSON) of the resumable uploads recorded at
        ``location`` (for ``key`` only, when given), newest first."""
        rows = self.db.execute(
            "SELECT key, upload_id, run_id, part_size, resume FROM uploads "
            "WHERE location = ? AND resume IS NOT NULL AND (? IS NULL OR key = ?) "
            "ORDER BY started DESC",
            (location, key, key),
        ).fetchall()
        return [(str(k), str(u), int(r), int(p), str(j)) for k, u, r, p, j in rows]

    def forget_upload(self, location: str, key: str, upload_id: str) -> None:
        """The upload was completed or aborted."""
        self.db.execute(
            "DELETE FROM uploads WHERE location = ? AND key = ? AND upload_id = ?",
            (location, key, upload_id),
        )

    def recorded_uploads(
        self, location: str, *, except_run: int | None = None
    ) -> list[tuple[str, str, int, str, int | None]]:
        """(key, upload_id, run_id, started, part_size) of the uploads recorded at
        ``location``, except those of run ``except_run``."""
        rows = self.db.execute(
            "SELECT key, upload_id, run_id, started, part_size FROM uploads "
            "WHERE location = ? AND run_id IS NOT ? ORDER BY started, key",
            (location, except_run),
        ).fetchall()
        return [(str(k), str(u), int(r), str(t), p) for k, u, r, t, p in rows]

    def is_planned(self, dkey: str) -> bool:
        """Whether this run's plan writes ``dkey`` (relative to the destination prefix)."""
        row = self.db.execute(
            "SELECT 1 FROM work WHERE coalesce(dkey, key) = ? LIMIT 1", (dkey,)
        ).fetchone()
        return row is not None

    # --- outcomes -----------------------------------------------------------------------------

    def record(
        self,
        pair: str,
        run_id: int,
        outcomes: Sequence[Outcome],
        settled: Sequence[str] = (),
    ) -> None:
        """Commit a batch of outcomes in one transaction; ``settled`` keys lose their
        ``completing`` row in the same transaction."""
        t = now()
        self.db.execute("BEGIN")
        try:
            if settled:
                self.db.executemany(
                    "DELETE FROM completing WHERE pair = ? AND key = ?",
                    [(pair, k) for k in settled],
                )
            self.db.executemany(
                """INSERT INTO journal (pair, key, size, src_etag, state, sha256, dst_size,
                                        dst_etag, error, run_id, updated, plain_size, stored_as)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (pair, key) DO UPDATE SET
                     size = excluded.size, src_etag = excluded.src_etag, state = excluded.state,
                     sha256 = coalesce(excluded.sha256, journal.sha256),
                     dst_size = coalesce(excluded.dst_size, journal.dst_size),
                     dst_etag = coalesce(excluded.dst_etag, journal.dst_etag),
                     plain_size = coalesce(excluded.plain_size, journal.plain_size),
                     error = excluded.error, run_id = excluded.run_id, updated = excluded.updated,
                     stored_as = excluded.stored_as,
                     verified = CASE WHEN excluded.state = 'done' THEN NULL ELSE journal.verified END""",
                # One comprehension of plain tuples: this runs for every object of a run, and
                # the Ray driver commits for all its workers (State is a str: bound as text).
                [
                    (
                        pair,
                        o.key,
                        o.size,
                        o.src_etag,
                        o.state,
                        o.sha256,
                        o.dst_size,
                        o.dst_etag,
                        o.error,
                        run_id,
                        t,
                        o.plain_size,
                        o.stored_as,
                    )
                    for o in outcomes
                ],
            )
            self._record_chunks(pair, outcomes)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _record_chunks(self, pair: str, outcomes: Sequence[Outcome]) -> None:
        """Chunk hashes of the done outcomes that carry them; a done outcome without any (one
        chunk, or copied server-side) drops what an earlier version of the object left."""
        with_chunks = [
            (pair, o.key, o.chunk_size, o.chunks)
            for o in outcomes
            if o.chunks is not None and o.chunk_size and o.state == State.DONE
        ]
        # Nothing to drop when the pair has no chunk hashes (one indexed probe, inside this
        # transaction): most runs of small objects never have any, and a delete per object
        # cost about a fifth of a batch's commit.
        if self.db.execute("SELECT 1 FROM chunks WHERE pair = ? LIMIT 1", (pair,)).fetchone():
            without = [
                (pair, o.key) for o in outcomes if o.chunks is None and o.state == State.DONE
            ]
            if without:
                self.db.executemany("DELETE FROM chunks WHERE pair = ? AND key = ?", without)
        if with_chunks:
            self.db.executemany("INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?)", with_chunks)

    def chunk_hashes(self, pair: str, key: str) -> tuple[int, bytes] | None:
        """(chunk size, concatenated digests) recorded for a done object, or None."""
        row = self.db.execute(
            "SELECT chunk_size, sha256 FROM chunks WHERE pair = ? AND key = ?", (pair, key)
        ).fetchone()
        return (int(row[0]), bytes(row[1])) if row else None

    def record_completing(self, pair: str, run_id: int, row: Completing) -> None:
        """Commit, in its own transaction, that a streamed object is about to complete.

        Committed without an fsync: it survives a kill (what it is for), and the object's
        done row, committed with one, follows. A power cut that loses it costs one re-send.
        """
        self.db.execute("PRAGMA synchronous=NORMAL")
        try:
            self._insert_completing(pair, run_id, row)
        finally:
            self.db.execute("PRAGMA synchronous=FULL")

    def _insert_completing(self, pair: str, run_id: int, row: Completing) -> None:
        self.db.execute(
            """INSERT OR REPLACE INTO completing (pair, key, size, src_etag, nonce, sha256,
                   plain_size, dst_size, stored_as, run_id, updated)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                pair,
                row.key,
                row.size,
                row.src_etag,
                row.nonce,
                row.sha256,
                row.plain_size,
                row.dst_size,
                row.stored_as,
                run_id,
                now(),
            ),
        )

    def forget(self, pair: str, keys: Sequence[str]) -> None:
        """Drop the rows of objects deleted at the destination (``keys`` relative to its
        prefix)."""
        rows = [(pair, k) for k in keys]
        self.db.execute("BEGIN")
        self.db.executemany(
            "DELETE FROM journal WHERE pair = ? AND key = ? AND stored_as IS NULL", rows
        )
        self.db.executemany("DELETE FROM journal WHERE pair = ? AND stored_as = ?", rows)
        self.db.execute("COMMIT")

    def replaced(self, pair: str, keys: Sequence[str]) -> None:
        """Objects (``keys`` relative to the source prefix) whose content at the destination
        differs from what was written: no longer done nor verified, and never adopted (see
        :data:`REPLACED`), so the next copy or exit sends them again."""
        self.db.execute("BEGIN")
        self.db.executemany(
            "UPDATE journal SET state = 'failed', error = ?, verified = NULL, updated = ? "
            "WHERE pair = ? AND key = ? AND state = 'done'",
            [(REPLACED, now(), pair, k) for k in keys],
        )
        self.db.execute("COMMIT")

    def done_rows(self, pair: str) -> Iterator[tuple[str, int, str | None, int | None, str | None]]:
        """(key, size, sha256, dst_size, dst_etag) of every done object, in key order."""
        yield from self.db.execute(
            "SELECT key, size, sha256, dst_size, dst_etag FROM journal "
            "WHERE pair = ? AND state = 'done' ORDER BY key",
            (pair,),
        )

    def runs_done_in(self, pair: str, run_id: int) -> int:
        (n,) = self.db.execute(
            "SELECT count(*) FROM journal WHERE pair = ? AND run_id = ? AND state = 'done'",
            (pair, run_id),
        ).fetchone()
        return int(n)


class Recorder(Protocol):
    """Where a :class:`BatchWriter` commits: the journal, or a Ray worker's result stream."""

    def record(
        self, pair: str, run_id: int, outcomes: Sequence[Outcome], settled: Sequence[str] = ()
    ) -> None: ...


class BatchWriter:
    """Collects outcomes and commits them every ``every`` items or ``seconds``.

    A commit per object costs ~245 µs on this class of machine and caps a loop near 4,000
    objects/s; batching brings it to ~13 µs per object. Outcomes are acknowledged (counted as
    done) only once their batch has committed.

    An outcome of an object over ``immediate_over`` bytes is committed at once (with whatever
    is pending): such objects are few, each is worth a commit, and one that completed must not
    wait in memory for a kill to lose it. Its ``completing`` row goes in the same transaction.
    """

    def __init__(
        self,
        journal: Recorder,
        pair: str,
        run_id: int,
        every: int = 200,
        seconds: float = 1.0,
        *,
        immediate_over: int | None = None,
    ) -> None:
        self._journal = journal
        self.journal = journal
        self._pair = pair
        self._run_id = run_id
        self._every = every
        self._seconds = seconds
        self._immediate_over = immediate_over
        self._pending: list[Outcome] = []
        self._last = time.monotonic()

    def _large(self, outcome: Outcome) -> bool:
        return self._immediate_over is not None and outcome.size > self._immediate_over

    def add(self, outcome: Outcome) -> list[Outcome]:
        """Queue an outcome; returns the outcomes committed by this call (maybe none)."""
        self._pending.append(outcome)
        if (
            len(self._pending) >= self._every
            or self._large(outcome)
            or time.monotonic() - self._last >= self._seconds
        ):
            return self.flush()
        return []

    def add_many(self, outcomes: Sequence[Outcome]) -> list[Outcome]:
        """Queue a batch of outcomes (a Ray worker's report); returns those committed by this
        call. Same rule as :meth:`add`, judged once per batch: one large outcome in it commits
        everything pending with it."""
        self._pending.extend(outcomes)
        limit = self._immediate_over
        if (
            len(self._pending) >= self._every
            or (limit is not None and any(o.size > limit for o in outcomes))
            or time.monotonic() - self._last >= self._seconds
        ):
            return self.flush()
        return []

    def flush(self) -> list[Outcome]:
        if not self._pending:
            return []
        batch, self._pending = self._pending, []
        limit = self._immediate_over
        settled = (
            [o.key for o in batch if o.size > limit and o.state == State.DONE]
            if limit is not None
            else []
        )
        self._journal.record(self._pair, self._run_id, batch, settled=settled)
        self._last = time.monotonic()
        return batch


# 64 lowercase hex characters: the shape of a protected name.
_STORED_NAME_SQL = "length(key) = 64 AND key NOT GLOB '*[^0-9a-f]*'"


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
