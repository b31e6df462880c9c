"""``sync --delete``: deleting what the source no longer holds, and the record of it.

:func:`delete_extraneous` deletes, page by page in key order, the destination objects the
journal's plan finds extraneous (only those the filters select: :func:`deletable`), counting
each deletion as it happens so that an interrupted run still says what it deleted; a deletion
already sent when the run is interrupted is waited for (briefly) and counted if it happened.
:class:`DeletedKeys` is the bounded record the summary and the audit log keep of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Sequence

from daulat.signing import PublicKey
from daulat.transfer.journal import Journal
from daulat.transfer.manifests import DST_MANIFEST_PREFIX
from daulat.transfer.model import Endpoint, Options, Summary
from daulat.transfer.nested import named_as_own, own_records

# Seconds an interrupted ``sync --delete`` waits for the deletions it has sent to be answered.
DELETE_SETTLE_S = 10.0

# ``sync --delete`` records the keys it deleted; past this many, the audit log and the summary
# keep the first ones (in key order), their count and a SHA-256 over all of them.
DELETED_KEYS_KEPT = 100


class DeletedKeys:
    """A bounded record of deleted keys: the first :data:`DELETED_KEYS_KEPT` in key order, the
    count, and the SHA-256 of the whole sorted list, each key written as a JSON string
    (``json.dumps(key, ensure_ascii=False)``) followed by a newline, so that anyone holding
    the full list can check it against the record."""

    def __init__(self) -> None:
        self.count = 0
        self.first: list[str] = []
        self._sha = hashlib.sha256()

    def add(self, keys: Sequence[str]) -> None:
        """Add keys that sort after every key added before (pages in key order)."""
        for key in sorted(keys):
            self.count += 1
            if len(self.first) < DELETED_KEYS_KEPT:
                self.first.append(key)
            line = json.dumps(key, ensure_ascii=False) + "\n"
            self._sha.update(line.encode("utf-8", "surrogatepass"))

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def to_json(self) -> dict[str, object]:
        return {
            "count": self.count,
            "keys": list(self.first),
            "complete": self.count <= len(self.first),
            "sha256": self.sha256,
        }


def deletable(opts: Options) -> Callable[[str], bool] | None:
    """Which destination keys (relative to its prefix) sync --delete may delete: those the
    filters select; None (every key) without filters."""
    return opts.filter.matches if opts.filter.active else None


async def delete_extraneous(
    dst: Endpoint, journal: Journal, pair: str, summary: Summary, opts: Options
) -> None:
    """Delete the destination objects of ``pair`` that the source no longer holds (and the
    filters select), recording them in ``summary.deleted`` and forgetting them in the journal."""
    sem = asyncio.Semaphore(opts.concurrency)
    record = DeletedKeys()

    async def one(key: str, done: list[str]) -> None:
        async with sem:
            request = asyncio.ensure_future(
                opts.retry.call(lambda: dst.store.delete(dst.prefix + key))
            )
            try:
                await asyncio.shield(request)
            except asyncio.CancelledError:
                # Interrupted with the request out: the provider may be deleting it right now.
                # Its answer is waited for (briefly), so a deletion that happened is counted.
                await asyncio.wait({request}, timeout=DELETE_SETTLE_S)
                if request.done() and not request.cancelled() and request.exception() is None:
                    _deleted(key, done)
                else:
                    request.cancel()
                raise
            _deleted(key, done)

    def _deleted(key: str, done: list[str]) -> None:
        done.append(key)
        # Counted as it happens: an interrupted page still says what it deleted.
        summary.deleted_objects += 1
        summary.left_deletions -= 1

    try:
        for page in journal.extraneous(pair, keep=deletable(opts)):
            keys = [k for k, _ in page]
            done: list[str] = []
            try:
                # Every deletion of the page ends (or is settled) before this does, even when
                # cancelled: a plain gather would give up at the first cancelled one.
                results = await asyncio.gather(
                    *(one(k, done) for k in keys), return_exceptions=True
                )
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
            finally:
                # What was deleted is recorded even when the page did not finish.
                record.add(done)
                summary.deleted = record.to_json()
                journal.forget(pair, done)
    finally:
        summary.deleted = record.to_json()


async def spare_own_records(
    dst: Endpoint,
    journal: Journal,
    pair: str,
    summary: Summary,
    opts: Options,
    trusted: Sequence[PublicKey],
) -> None:
    """Take daulat's own records of sub-prefixes (``sub/.daulat/manifest-…`` of a copy made
    into ``sub/``) out of the destination listing (temp table ``dst``) before the deletions are
    planned: the source never holds them, and deleting them would make the sub-prefix's
    restore accuse its provider of withholding them. The rule is
    :func:`daulat.transfer.nested.own_records`'s: what the pair's journal records as copied is
    data, as is anything no trusted key signed (a planted file, deleted like any other)."""
    db = journal.db

    def copied(key: str) -> bool:
        # The pair's journal: the manifest this run follows is not read before deletions
        # are planned, and the journal is the record of what the pair copied there.
        row = db.execute(
            "SELECT 1 FROM journal WHERE pair = ? AND stored_as = ? UNION ALL "
            "SELECT 1 FROM journal WHERE pair = ? AND key = ? AND stored_as IS NULL LIMIT 1",
            (pair, key, pair, key),
        ).fetchone()
        return row is not None

    candidates = [
        k
        for page in journal.extraneous(pair, keep=deletable(opts))
        for k, _ in page
        if named_as_own(k)
    ]
    if not candidates:
        return
    own = sorted(await own_records(dst.store, dst.prefix, candidates, trusted, listed=copied))
    if not own:
        return
    db.execute("BEGIN")
    db.executemany("DELETE FROM temp.dst WHERE key = ?", [(k,) for k in own])
    db.execute("COMMIT")
    summary.notes.append(
        f"kept {len(own):,} file(s) daulat keeps under {DST_MANIFEST_PREFIX} of sub-prefixes of "
        f"{dst.label or dst.store.name} (the signed manifests of copies made into them): "
        "sync --delete never deletes them"
    )
