"""Multipart uploads daulat began, recorded so that it only ever aborts its own.

Other applications write to the same buckets, and an unfinished multipart upload of theirs is
work in progress, not litter: aborting it destroys their data. So every multipart upload of a
transfer is recorded in the journal (destination, key, upload id, run, part size) *before its
first part is sent*, and the record is removed when the object is committed or the upload
aborted. A run that was killed leaves its records; the next run to the same destination aborts
exactly those uploads, except the resumable ones on keys it writes again, which it continues
(:mod:`daulat.transfer.resume`).

Without a record (the journal was lost) an upload cannot be told from another client's. Then
the only ones aborted are uploads older than ``Options.abort_uploads_older_than`` (7 days by
default) on keys this run is about to write, which daulat would overwrite anyway.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections.abc import Awaitable, Callable

from daulat.defaults import DEFAULT_MAX_AGE as DEFAULT_MAX_AGE
from daulat.errors import AccessDenied, StoreError
from daulat.stores.abilities import UploadCleanup
from daulat.transfer.journal import Journal


class UploadLedger:
    """The journal's records of one run's multipart uploads at one destination store."""

    def __init__(self, journal: Journal, store: UploadCleanup, run_id: int) -> None:
        self.journal = journal
        self.store = store
        self.run_id = run_id
        self.location = store.location

    def started(self, key: str, upload_id: str) -> None:
        """``on_upload`` of a put: committed to the journal before the first part is sent."""
        self.journal.record_upload(self.location, key, upload_id, self.run_id, self.store.part_size)

    def finished(self, key: str, upload_id: str) -> None:
        """The object is committed: the upload no longer exists."""
        self.journal.forget_upload(self.location, key, upload_id)

    async def failed(self, key: str, upload_id: str) -> None:
        """The put failed. The store aborts its upload itself; make sure, and forget it only
        once it is gone (a failed abort stays recorded for the next run)."""
        with contextlib.suppress(StoreError):
            await self.store.abort_multipart_upload(key, upload_id)
            self.journal.forget_upload(self.location, key, upload_id)

    async def clean_up(
        self,
        prefix: str,
        max_age: dt.timedelta | None,
        is_planned: Callable[[str], bool],
        call: Callable[[Callable[[], Awaitable[None]]], Awaitable[None]],
    ) -> int:
        """Abort what earlier runs left at this destination; return how many uploads.

        1. every upload the journal records here from another run (killed or stopped);
        2. of the uploads the journal does not know, those under ``prefix`` older than
           ``max_age`` whose key (relative to ``prefix``) this run is about to write.
        ``call`` wraps each request (retries).
        """
        # Resumable uploads on keys this run writes are continued when it reaches them
        # (daulat.transfer.resume), not aborted here.
        aborted = await abort_recorded(
            self.journal,
            self.store,
            call,
            except_run=self.run_id,
            keep={
                (key, upload_id)
                for key, upload_id, *_ in self.journal.resumable_uploads(self.location)
                if key.startswith(prefix) and is_planned(key[len(prefix) :])
            },
        )
        if max_age is None:
            return aborted
        known = {(k, u) for k, u, *_ in self.journal.recorded_uploads(self.location)}
        now = dt.datetime.now(dt.UTC)
        stale: list[tuple[str, str]] = []
        try:
            async for batch in self.store.list_multipart_uploads(prefix):
                for upload in batch:
                    if (upload.key, upload.upload_id) in known:
                        continue
                    if now - upload.initiated < max_age:
                        continue
                    if is_planned(upload.key[len(prefix) :]):
                        stale.append((upload.key, upload.upload_id))
        except AccessDenied:
            raise
        except StoreError:
            return aborted  # a server without ListMultipartUploads: nothing to find
        for key, upload_id in stale:
            await call(functools.partial(self.store.abort_multipart_upload, key, upload_id))
            aborted += 1
        return aborted


async def abort_recorded(
    journal: Journal,
    store: UploadCleanup,
    call: Callable[[Callable[[], Awaitable[None]]], Awaitable[None]],
    *,
    except_run: int | None = None,
    dry_run: bool = False,
    keep: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset(),
) -> int:
    """Abort the uploads the journal records at ``store`` as daulat's, except those of run
    ``except_run`` and of runs still going on (here or in another process: a second daulat
    writing to the same place must not lose its uploads). Return how many."""
    aborted = 0
    for key, upload_id, run, _started, _part in journal.recorded_uploads(
        store.location, except_run=except_run
    ):
        if journal.run_is_live(run) or (key, upload_id) in keep:
            continue
        if not dry_run:
            await call(functools.partial(store.abort_multipart_upload, key, upload_id))
            journal.forget_upload(store.location, key, upload_id)
        aborted += 1
    return aborted
