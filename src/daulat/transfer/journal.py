"""The transfer journal: what has been copied where, in SQLite under ``.daulat/``.

Every object of a source → destination pair has one row with its state. A row is marked ``done``
only after the destination confirmed the upload and its SHA-256 was recorded. Rows of small
objects are committed in batches (WAL); an object over the writer's ``immediate_over`` size is
committed as soon as it completes. After a crash at any moment a re-run skips the objects whose
completion was committed, adopts those complete at the destination whose proof verifies
(:mod:`daulat.transfer.adoption`, which uses the ``completing`` rows kept here) and redoes the rest.

Listings of both sides are streamed into temporary tables so that planning and verification are
SQL joins: memory stays flat whatever the number of objects.

The module is one class over one database, in parts by concern: the file's tables and how it is
opened (:mod:`.journalschema`), the row values (:mod:`.journalrows`), a run's temporary tables
and its plan (:mod:`.journalplan`), and batched commits (:mod:`.journalbatch`). Every name
other modules use is importable from here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from daulat.state import hold_lock, is_locked
from daulat.transfer.journalbatch import BatchWriter, Recorder
from daulat.transfer.journalplan import PlanningTables
from daulat.transfer.journalrows import (
    REPLACED,
    Candidate,
    Completing,
    Outcome,
    State,
    WorkItem,
    now,
)
from daulat.transfer.journalschema import JOURNAL_KIND, JOURNAL_NAME, RUN_LOCKS, open_database

__all__ = [
    "JOURNAL_KIND",
    "JOURNAL_NAME",
    "REPLACED",
    "RUN_LOCKS",
    "BatchWriter",
    "Candidate",
    "Completing",
    "Journal",
    "Outcome",
    "Recorder",
    "State",
    "WorkItem",
    "now",
]


class Journal(PlanningTables):
    """The journal database. One connection, used from the event loop's thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._run_locks: dict[int, int] = {}
        self.db = open_database(path)

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

    def find_pair(self, base: str) -> str:
        """The pair id most recently used for ``base`` (with any codec tag), else ``base``."""
        row = self.db.execute(
            "SELECT pair FROM runs WHERE (pair = ? OR pair LIKE ? ESCAPE '\\') "
            "AND kind != 'verify' ORDER BY id DESC LIMIT 1",
            (base, _like_escape(base) + " [%"),
        ).fetchone()
        return str(row[0]) if row else base

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

    def adopted_in(self, pair: str) -> bool:
        """Whether a run of ``pair`` adopted objects by proof (its summary says how many):
        daulat did not send those, so no provider checked an upload checksum of theirs."""
        row = self.db.execute(
            "SELECT 1 FROM runs WHERE pair = ? AND json_valid(summary) "
            "AND coalesce(json_extract(summary, '$.adopted_objects'), 0) > 0 LIMIT 1",
            (pair,),
        ).fetchone()
        return row is not None

    def runs_done_in(self, pair: str, run_id: int) -> int:
        (n,) = self.db.execute(
            "SELECT count(*) FROM journal WHERE pair = ? AND run_id = ? AND state = 'done'",
            (pair, run_id),
        ).fetchone()
        return int(n)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
