"""The journal rows of the gateway's writes: the rows the copy engine would have written.

For a write of ``key`` to a bucket whose primary is ``P`` and another replica ``R``, the pair
is the engine's own id for a copy ``P → R`` (``daulat sync P R``: the same codec tag when
``R``'s store declares ``encrypt_to``), so the read path, ``daulat verify`` and the next
``daulat sync`` treat the object as a copy the engine made:

- once the primary holds the write, and before any other replica can complete it, each
  other replica gets a ``failed`` row ("a gateway write is under way"): whatever it held of
  the key is no longer vouched for, since the write may replace it (a copy of the old version
  would otherwise be served with the new one's bytes in it, or the old version served while
  the primary is down). A write the primary does not take touches no row: every replica
  still holds what its row says (:mod:`.fanout` hands them the end of the body only after
  the primary's put returned);
- once the write is acknowledged, each replica holding it verified gets a ``done`` row:
  source size and ETag as the primary now describes the key, plaintext SHA-256 and size,
  the replica's stored size and ETag, and the per-chunk hashes (objects over one chunk);
- a replica that failed or was down keeps a ``failed`` row with the reason: it lags, and
  ``daulat sync P R`` copies the object (the planner copies every key without a matching
  ``done`` row). :mod:`.lag` says for ``daulat stores`` what each replica lacks.

Each pair's rows go in a run of kind ``gateway`` (the journal's pairs are found through its
runs), ended ``complete`` when the replica holds the write, else ``incomplete``.

The multipart uploads the gateway's puts begin at S3 stores are recorded in the journal's
uploads table as the copy engine records its own (:mod:`daulat.transfer.uploads`): before
the first part is sent, under one run of kind ``gateway-uploads`` that the gateway holds
(locked) for as long as it serves, forgotten when the put ends. A gateway killed mid-write
(``kill -9``, a power cut) leaves the records and releases the run: the next ``daulat serve``
aborts exactly those uploads, and so does ``daulat clean STORE``; never another writer's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from daulat.transfer.journal import Journal, Outcome, State

T = TypeVar("T")

UNDER_WAY = "a gateway write of this key is under way (or was cut short): not verified here"
#: How the rows of a replica that lags behind the gateway's writes begin (see
#: :func:`daulat.gateway.lag.lagging`).
LAGS = "lags: "
NOT_ACKNOWLEDGED = "gateway write not acknowledged: "
#: Marks, inside a lag's reason, a key the replica cannot hold beside another of its objects
#: (a file and a directory of one name): no sync copies it while that object is there.
CONFLICT = "name conflict: "
#: The run under which a gateway's multipart uploads are recorded (see the module docstring).
UPLOADS_KIND = "gateway-uploads"
UPLOADS_PAIR = "gateway: its multipart uploads"


@dataclass(frozen=True)
class Row:
    """One replica's outcome of one write (see the module docstring)."""

    pair: str
    src: str  # labels, for the run
    dst: str
    outcome: Outcome


class Ledger:
    """The gateway's writer of journal rows: one journal connection, in one worker thread of
    its own (opened once, not per write: opening walks the state directory), so that commits
    (fsynced) never hold up the event loop and the gateway's own commits never contend."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="daulat-ledger")
        self._journal: Journal | None = None
        self._uploads_run: int | None = None

    # ------------------------------------------------------------------ multipart uploads

    @property
    def records_uploads(self) -> bool:
        return self._uploads_run is not None

    async def hold_uploads(self) -> None:
        """Begin the run the gateway's uploads are recorded under (held until :meth:`close`)."""
        await self._run(self._hold_uploads)

    def _hold_uploads(self) -> None:
        journal = self._open()
        self._uploads_run = journal.begin_run(UPLOADS_KIND, UPLOADS_PAIR, "gateway", "gateway")

    def upload_started(self, location: str, key: str, upload_id: str, part_size: int) -> None:
        """``on_upload`` of a put (called in the event loop, before the first part is sent):
        the record is committed before it returns, so the loop waits for this one commit."""
        self._pool.submit(self._record_upload, location, key, upload_id, part_size).result()

    def _record_upload(self, location: str, key: str, upload_id: str, part_size: int) -> None:
        assert self._uploads_run is not None
        self._open().record_upload(location, key, upload_id, self._uploads_run, part_size)

    async def upload_ended(self, location: str, key: str, upload_id: str) -> None:
        """The upload was completed or aborted: it no longer exists."""
        await self._run(lambda: self._open().forget_upload(location, key, upload_id))

    async def left_uploads(self, location: str) -> list[tuple[str, str]]:
        """(key, upload id) of the uploads gateways recorded at ``location`` under a run no
        longer going on (killed: a stopped gateway forgets its own)."""
        return await self._run(lambda: self._left_uploads(location))

    def _left_uploads(self, location: str) -> list[tuple[str, str]]:
        journal = self._open()
        out = []
        for key, upload_id, run, _started, _part in journal.recorded_uploads(location):
            row = journal.db.execute("SELECT kind FROM runs WHERE id = ?", (run,)).fetchone()
            if row is None or row[0] != UPLOADS_KIND or journal.run_is_live(run):
                continue
            out.append((key, upload_id))
        return out

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def record(self, rows: list[Row]) -> None:
        """Commit ``rows``, each pair in a run of its own (kind ``gateway``), ended at once."""
        if rows:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._record, rows)

    def _open(self) -> Journal:
        if self._journal is None:
            self._journal = Journal.in_state_dir(self.state_dir)
        return self._journal

    def _record(self, rows: list[Row]) -> None:
        journal = self._open()
        for row in rows:
            run_id = journal.begin_run("gateway", row.pair, row.src, row.dst)
            journal.record(row.pair, run_id, [row.outcome])
            done = row.outcome.state == State.DONE
            # The key is how daulat.gateway.lag knows the row for a gateway write once a sync
            # has rewritten it (refused it, say).
            summary = {
                "kind": "gateway",
                "key": row.outcome.key,
                "copied": 1 if done else 0,
                "failed": [] if done else [{"key": row.outcome.key, "reason": row.outcome.error}],
            }
            journal.end_run(run_id, "complete" if done else "incomplete", json.dumps(summary))

    def _close(self) -> None:
        if self._journal is not None:
            if self._uploads_run is not None:
                # Uploads still recorded (an abort that failed) stay for the next serve.
                self._journal.end_run(self._uploads_run, "complete", "{}")
                self._uploads_run = None
            self._journal.close()
            self._journal = None

    def close(self) -> None:
        self._pool.submit(self._close).result()
        self._pool.shutdown()
