"""Resuming inside large objects: the journal half.

A streamed object (over 8 MiB) goes to a store that can continue uploads
(:class:`~daulat.stores.resumable.ResumableStore`: S3 and S3-compatible stores including
Alibaba OSS, Azure block blobs, GCS) through a *resumable* upload, recorded in the journal's
``uploads`` table before its first part is sent, with what a later run needs to continue it:

* the session (S3 UploadId; Azure: daulat's session id, carried by every block id; GCS: the
  resumable session URI) and the part size, which a resume must keep;
* the source version it was begun from (size and ETag) and the transfer's codec: only a run
  reading the same source version for the same codec continues it; any other upload recorded
  for the key is aborted and a fresh one begun;
* the proof nonce (:mod:`daulat.transfer.adoption`): S3 and GCS fix an object's metadata when
  the upload begins, so a resumed upload keeps its nonce and the ``completing`` row names it.

A run that is killed, stopped or fails leaves the upload recorded and at the provider; the
next attempt (a retry in the same run, or the next run) re-reads the object from its first
byte, keeps every part the provider holds that matches those bytes, and sends the rest. The
object's SHA-256 is computed over the whole stream as on any copy, so it is never taken from the
provider. Recorded uploads on keys a run no longer writes are aborted as before
(:mod:`daulat.transfer.uploads`; for Azure and GCS by :meth:`Resumer.clean_up`).

Encrypted copies restart. age encrypts under a fresh random file key and payload nonce per
object; continuing a ciphertext would need that file key kept on disk between runs (in
plaintext, or under a key kept beside it), which turns the local state into a key to every
half-written object. So an encrypted object always begins a fresh upload, and an upload left by
an interrupted encrypted copy is aborted (see README, "Resuming large objects").
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from dataclasses import dataclass

from daulat.errors import IntegrityError, StoreError
from daulat.stores.base import PutResult
from daulat.stores.resumable import ResumableStore, ResumeStats, Session, UploadGone
from daulat.transfer.journal import Journal


@dataclass(frozen=True, slots=True)
class Recorded:
    """A resumable upload the journal holds for a key, matching the source version read now."""

    key: str
    session: Session
    nonce: str | None


@dataclass(slots=True)
class ResumeTotals:
    """Over one run: uploads continued and what they did not send again."""

    resumed_uploads: int = 0
    kept_bytes: int = 0
    replaced_parts: int = 0
    restarted_uploads: int = 0  # recorded, but gone at the provider: begun afresh
    discarded_uploads: int = 0  # recorded from another source version or codec: aborted


class Resumer:
    """Resumable uploads of one run to one destination store."""

    def __init__(self, journal: Journal, store: ResumableStore, run_id: int, codec: str) -> None:
        self.journal = journal
        self.store = store
        self.run_id = run_id
        self.codec = codec
        self.location = store.location
        self.totals = ResumeTotals()

    def _resume_info(self, src_size: int, src_etag: str | None, nonce: str | None) -> str:
        return json.dumps(
            {"v": 1, "size": src_size, "etag": src_etag, "codec": self.codec, "nonce": nonce},
            sort_keys=True,
        )

    async def find(self, key: str, src_size: int, src_etag: str | None) -> Recorded | None:
        """The upload to continue for ``key`` (relative to the store), if the journal has one
        begun from this source version for this codec; every other upload recorded for the
        key (another version, another codec) is aborted and forgotten. Uploads of runs still
        going on (another process) are left alone."""
        found: Recorded | None = None
        for _key, upload_id, run_id, part_size, info in self.journal.resumable_uploads(
            self.location, key
        ):
            if run_id != self.run_id and self.journal.run_is_live(run_id):
                continue
            session = Session(upload_id, part_size)
            try:
                data = json.loads(info)
            except ValueError:
                data = {}
            if (
                found is None
                and src_etag is not None
                and data.get("v") == 1
                and data.get("size") == src_size
                and data.get("etag") == src_etag
                and data.get("codec") == self.codec
            ):
                nonce = data.get("nonce")
                found = Recorded(key, session, nonce if isinstance(nonce, str) else None)
                continue
            await self.discard(key, session)
        if found is not None:
            self.journal.claim_upload(self.location, key, found.session.upload_id, self.run_id)
        return found

    async def discard(self, key: str, session: Session) -> None:
        """Abort an upload at the provider and forget it (a failed abort stays recorded, to
        be tried again by a later run)."""
        with contextlib.suppress(StoreError):
            await self.store.abort_session(key, session)
            self.journal.forget_upload(self.location, key, session.upload_id)
            self.totals.discarded_uploads += 1

    async def put(
        self,
        key: str,
        data: AsyncIterable[bytes],
        *,
        metadata: Mapping[str, str] | None,
        recorded: Recorded | None,
        src_size: int,
        src_etag: str | None,
        nonce: str | None,
    ) -> PutResult:
        """Write ``key`` through a resumable upload: ``recorded``'s, or a new one recorded in
        the journal before its first part. Committed: the record is forgotten. Failed: it is
        kept for the next attempt, except when the content itself was wrong (then aborted)."""
        stats = ResumeStats()
        current: list[Session] = [] if recorded is None else [recorded.session]

        def on_session(session: Session) -> None:
            self.journal.record_resumable_upload(
                self.location,
                key,
                session.upload_id,
                self.run_id,
                session.part_size,
                self._resume_info(src_size, src_etag, nonce),
            )
            current.append(session)

        async def attempt(session: Session | None) -> PutResult:
            return await self.store.put_resumable(
                key,
                data,
                metadata=metadata,
                session=session,
                on_session=on_session,
                stats=stats,
            )

        try:
            try:
                result = await attempt(recorded.session if recorded else None)
            except UploadGone:
                if recorded is None or stats.sent_parts or stats.kept_parts:
                    raise
                # Found out before the stream was read: begin afresh with the same stream.
                self.journal.forget_upload(self.location, key, recorded.session.upload_id)
                current.clear()
                self.totals.restarted_uploads += 1
                stats = ResumeStats()
                result = await attempt(None)
        except UploadGone:
            for session in current:
                self.journal.forget_upload(self.location, key, session.upload_id)
            self.totals.restarted_uploads += 1
            raise
        except IntegrityError:
            for session in current:
                await self.discard(key, session)
            raise
        for session in current:
            self.journal.forget_upload(self.location, key, session.upload_id)
        if stats.resumed:
            self.totals.resumed_uploads += 1
            self.totals.kept_bytes += stats.kept_bytes
            self.totals.replaced_parts += stats.replaced_parts
        return result

    async def clean_up(
        self,
        is_planned: Callable[[str], bool],
        prefix: str,
        call: Callable[[Callable[[], Awaitable[None]]], Awaitable[None]],
    ) -> int:
        """Abort the resumable uploads that runs no longer going on left here on keys this run
        does not write (those it writes are continued or replaced as it reaches them).
        Return how many. For stores whose uploads :mod:`daulat.transfer.uploads` does not
        handle (Azure, GCS)."""
        aborted = 0
        for key, upload_id, run_id, part_size, _info in self.journal.resumable_uploads(
            self.location
        ):
            if run_id == self.run_id or self.journal.run_is_live(run_id):
                continue
            if key.startswith(prefix) and is_planned(key[len(prefix) :]):
                continue
            session = Session(upload_id, part_size)

            async def abort(key: str = key, session: Session = session) -> None:
                await self.store.abort_session(key, session)

            with contextlib.suppress(StoreError):
                await call(abort)
                self.journal.forget_upload(self.location, key, upload_id)
                aborted += 1
        return aborted
