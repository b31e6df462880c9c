"""The executor: a run's per-object copy and verification, with a pool of asyncio workers.

Each planned object is read from the source and written to the destination, its plaintext
SHA-256 computed while streaming (and, restoring, checked against the source manifest's):
objects up to :data:`SMALL_OBJECT` are read whole and sent as one PUT; larger ones stream
through a multipart upload (resumed where the destination can: :mod:`daulat.transfer.resume`),
within a byte budget (:mod:`daulat.transfer.pacing`). Transient errors are retried per object
and halve the concurrency; a permanent refusal (:data:`~daulat.transfer.steps.STOP_ERRORS`)
stops the run cleanly. Encryption and protected names are the stores' own
(:class:`daulat.stores.crypt.CryptStore`); a server-side copy is used where both sides allow
it. Outcomes go to the journal in batches (:mod:`daulat.transfer.bookkeeping`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from daulat.crypto import NO_MATCHING_IDENTITY, DecryptError
from daulat.errors import (
    AccessDenied,
    IntegrityError,
    InvalidKey,
    NotFound,
    SourceChanged,
    StoreError,
    Transient,
)
from daulat.stores.abilities import ServerSideCopy, server_side_copy
from daulat.stores.base import ObjectInfo, PutResult, Store
from daulat.stores.chunkhash import ChunkHasher
from daulat.stores.crypt import AGE_BUFFER as CRYPT_BUFFER
from daulat.stores.crypt import CryptPutResult, CryptStore, StoredMismatch, stored_info
from daulat.stores.described import carried
from daulat.stores.hashing import StreamHasher, hashed
from daulat.transfer.adoption import before_end
from daulat.transfer.bookkeeping import Bookkeeping, Ledger, record_uploads
from daulat.transfer.journal import BatchWriter, Completing, Journal, Outcome, State, WorkItem
from daulat.transfer.listed import capped, check_served_size
from daulat.transfer.manifests import WrongIdentity
from daulat.transfer.model import Endpoint, MiB, Options, Summary
from daulat.transfer.onward import expected_stored_sha256, expects_stored
from daulat.transfer.pacing import ByteBudget, Progress, RateLimit
from daulat.transfer.resume import Resumer
from daulat.transfer.retry import AdaptiveLimiter
from daulat.transfer.steps import STOP_ERRORS, own_at_dst, prover_for
from daulat.transfer.unproven import Unproven

SMALL_OBJECT = 8 * MiB
# What one streamed object can hold at once: read chunks plus the parts being uploaded
# (obstore buffers PART_SIZE per part in flight, plus the one being filled).
STREAM_RESERVATION = 28 * MiB
# Bytes queued between the event loop and an age worker thread, per streamed object
# (daulat.stores.crypt), kept here under its old name.
AGE_BUFFER = CRYPT_BUFFER


class Runner(Protocol):
    """Runs a plan elsewhere (``Options.runner``): sends the executor's planned work out and
    hands back every outcome through :meth:`Executor.commit`."""

    async def __call__(self, executor: Executor) -> None: ...


@runtime_checkable
class Warming(Protocol):
    """A :class:`Runner` that gets ready while the run lists and plans (``--engine ray``:
    connecting to the cluster and starting its worker processes takes seconds). The engine
    enters :meth:`warm` at the beginning of a run that may write, before listing, and leaves
    it when the run ends however it ends; the runner may then still be called, or not at all
    (nothing to copy, a failure, an interrupt). Whatever getting ready fails with is raised
    when the runner is called, as if it had started then."""

    def warm(self, src: Endpoint, dst: Endpoint) -> AbstractAsyncContextManager[None]: ...


class Executor:
    """Copies a run's planned objects (``journal.work()``) with a pool of asyncio workers,
    commits each outcome to the journal (batched) and counts it in the summary. A permanent
    refusal (:data:`~daulat.transfer.steps.STOP_ERRORS`) stops it taking new work; what is in
    flight finishes or fails on its own. A :class:`Runner` may copy elsewhere instead and report
    back through :meth:`commit` / :meth:`commit_many`."""

    def __init__(
        self,
        src: Endpoint,
        dst: Endpoint,
        journal: Bookkeeping,
        opts: Options,
        pair: str,
        summary: Summary,
        on_progress: Callable[[Progress], None] | None,
        ledger: Ledger | None = None,
    ) -> None:
        self.src, self.dst, self.journal, self.opts = src, dst, journal, opts
        self.pair = pair
        self.ledger = ledger
        self.resumer: Resumer | None = None
        self.summary = summary
        self.on_progress = on_progress
        self.writer = BatchWriter(journal, pair, summary.run_id, immediate_over=SMALL_OBJECT)
        self.prover = prover_for(opts, summary.run_id)
        self.limiter = AdaptiveLimiter(opts.concurrency)
        self.budget = ByteBudget(opts.max_bytes_in_flight)
        self.rate = RateLimit(opts.bwlimit) if opts.bwlimit else None
        self.progress = Progress(summary.planned_objects, summary.planned_bytes)
        self.stop: Exception | None = None
        # Restore: each object's plaintext must match the source manifest's SHA-256 (and, from
        # an onward copy, its ciphertext the onward manifest's).
        self._manifest = (
            journal if isinstance(journal, Journal) and summary.checked_against_manifest else None
        )
        self.expect = self._manifest is not None
        self.expect_stored = self._manifest is not None and expects_stored(self._manifest)
        # Copying an encrypted replica's ciphertext as stored (daulat.transfer.onward).
        self.as_stored = False
        # Restore: objects no believed manifest lists, never written as age ciphertext.
        self.unproven = Unproven()
        # Encryption and protected names are the stores' (daulat.stores.crypt): an encrypting
        # run writes through a CryptStore over the destination (which hashes the names when
        # they are protected), a decrypting one reads through one over the source. Listings,
        # planning, adoption and manifests are of what is stored, so they see the stores as
        # they are (the journal's dkey is the same stored name, computed while listing).
        self.writing: Store = dst.store
        self.reading: Store = src.store
        self.names_by_writer = False
        if opts.encrypt_to:
            names = opts.name_key if opts.encrypt_names else None
            self.writing = CryptStore(
                dst.store,
                recipients=opts.encrypt_to,
                names=names,
                prefix=dst.prefix,
                max_buffer=AGE_BUFFER,
                remember=False,
            )
            self.names_by_writer = names is not None
        if opts.decrypt_with:
            self.reading = CryptStore(
                src.store, identities=opts.decrypt_with, max_buffer=AGE_BUFFER, remember=False
            )
        # Same endpoint and credentials on both sides: the provider copies, no bytes travel.
        src_s3, dst_s3 = server_side_copy(src.store), server_side_copy(dst.store)
        self.server_copy: tuple[ServerSideCopy, ServerSideCopy] | None = None
        if (
            src_s3 is not None
            and dst_s3 is not None
            and dst_s3.can_copy_from(src_s3)
            and not opts.encrypt_to
            and not opts.decrypt_with
            and not self.expect
        ):
            self.server_copy = (src_s3, dst_s3)
            summary.server_side_copy = True
        self._last_report = 0.0
        # Bytes read so far by each object in flight, by key, for byte-level progress.
        self._in_flight: dict[str, int] = {}

    def _streamed(self, key: str, n: int) -> None:
        self._in_flight[key] = self._in_flight.get(key, 0) + n
        self.progress.in_flight_bytes += n
        self.progress.sent_bytes += n
        self.summary.sent_bytes += n
        self._report()

    def _landed(self, key: str) -> None:
        """Forget the bytes an object read in flight (it completed, failed or starts again)."""
        self.progress.in_flight_bytes -= self._in_flight.pop(key, 0)

    async def run(self) -> None:
        queue: asyncio.Queue[WorkItem | None] = asyncio.Queue(maxsize=self.opts.concurrency * 2)
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.opts.concurrency)]

        async def produce() -> None:
            for item in self.journal.work():
                if self.stop is not None:
                    break
                await queue.put(item)
            for _ in workers:
                await queue.put(None)

        producer = asyncio.create_task(produce())
        tasks = [producer, *workers]
        try:
            # An unexpected error in any worker propagates at once instead of leaving the
            # producer blocked on a full queue.
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.finish()
        if self.stop is not None:
            self.summary.stopped = str(self.stop)

    # --- for a Runner, which copies elsewhere and reports back here -----------------------

    def commit(self, outcome: Outcome) -> None:
        """An outcome reached elsewhere: journal it (batched) and count it, as :meth:`run`
        does for its own."""
        self._acknowledge(self.writer.add(outcome))
        self._report()

    def commit_many(self, outcomes: Sequence[Outcome]) -> None:
        """A batch of outcomes reached elsewhere (a Ray worker's report): as :meth:`commit`
        for each, with the batch's bookkeeping done once (one progress call per batch)."""
        if outcomes:
            self._acknowledge(self.writer.add_many(outcomes))
        self._report()

    def report(self) -> None:
        """Show progress (at most every 0.2 s)."""
        self._report()

    def completing(self, row: Completing) -> None:
        """A streamed object elsewhere is about to complete (see daulat.transfer.adoption)."""
        self.journal.record_completing(self.pair, self.summary.run_id, row)

    def finish(self) -> None:
        """Commit what is pending and settle the counters (the end of every run)."""
        self._acknowledge(self.writer.flush())
        self.summary.retries = self.progress.retries
        self.summary.throttled = self.limiter.throttled
        self._report(force=True)

    async def _worker(self, queue: asyncio.Queue[WorkItem | None]) -> None:
        while True:
            item = await queue.get()
            if item is None:
                return
            if self.stop is not None:
                continue  # drain, so the producer never blocks
            await self.limiter.acquire()
            ok = False
            try:
                outcome = await self._copy(item)
                ok = outcome.state == State.DONE
            except STOP_ERRORS as exc:
                # Stop taking new work; what is in flight finishes or fails on its own. The
                # worker keeps draining the queue so the producer can never block on it.
                self.stop = self.stop or exc
                continue
            finally:
                await self.limiter.release(success=ok)
            self._acknowledge(self.writer.add(outcome))
            self._report()

    def _acknowledge(self, committed: list[Outcome]) -> None:
        """Count outcomes the journal has committed. Batch-wise: the Ray driver acknowledges
        thousands at a time, so the common case (all done) is two sums, not a loop of
        counters."""
        if not committed:
            return  # most calls: the object waits in the batch (nothing to count yet)
        s = self.summary
        if self._in_flight:  # empty on the Ray driver: its workers stream, not it
            for o in committed:
                self._landed(o.key)
        done = [o.size for o in committed if o.state == State.DONE]
        if len(done) != len(committed):
            for o in committed:
                if o.state == State.REFUSED:
                    s.refused.append((o.key, o.error or ""))
                    s.left_objects -= 1
                    s.left_bytes -= o.size
                elif o.state != State.DONE:
                    s.failed.append((o.key, o.error or ""))
        done_bytes = sum(done)
        s.copied_objects += len(done)
        s.copied_bytes += done_bytes
        s.left_objects -= len(done)
        s.left_bytes -= done_bytes
        p = self.progress
        p.done_objects, p.done_bytes = s.copied_objects, s.copied_bytes
        p.failed, p.refused = len(s.failed), len(s.refused)

    def _report(self, force: bool = False) -> None:
        t = time.monotonic()
        if self.on_progress is not None and (force or t - self._last_report > 0.2):
            self._last_report = t
            self.progress.concurrency = self.limiter.limit
            self.on_progress(self.progress)

    def _on_retry(self, exc: Transient) -> None:
        self.progress.retries += 1
        if not isinstance(exc, SourceChanged):  # a file being rewritten is no sign of overload
            self.limiter.backoff()

    async def _copy(self, item: WorkItem) -> Outcome:
        inside = own_at_dst(self.opts)
        if inside is not None and (item.key if item.dkey is None else item.dkey).startswith(inside):
            return _unfinished(
                item,
                State.REFUSED,
                f"it would be written into daulat's own state directory ({inside}), which daulat "
                "never writes as data",
            )
        reserve = await self.budget.acquire(min(item.size, STREAM_RESERVATION) or 1)
        copied = False
        try:
            outcome = await self.opts.retry.call(
                lambda: self._copy_once(item), on_retry=self._on_retry
            )
            # Its bytes stay "in flight" until the journal commits it (see _acknowledge), so
            # the byte count never steps back.
            copied = outcome.state == State.DONE
            return outcome
        except AccessDenied:
            raise
        except DecryptError as exc:
            # No identity opens it: none will open the rest either, so the run stops
            # (nothing is written with the wrong key). Damaged or truncated ciphertext, and
            # an object no manifest lists, fail on their own.
            if item.key in self.unproven:
                return _unfinished(item, State.FAILED, self.unproven.failure(exc))
            if isinstance(exc, WrongIdentity) or str(exc) == NO_MATCHING_IDENTITY:
                raise WrongIdentity(str(exc)) from None
            return _unfinished(item, State.FAILED, str(exc))
        except InvalidKey as exc:
            return _unfinished(item, State.REFUSED, str(exc))
        except NotFound:
            return _unfinished(item, State.FAILED, "deleted from the source during the run")
        except StoreError as exc:
            return _unfinished(item, State.FAILED, str(exc))
        finally:
            if not copied:
                self._landed(item.key)
            await self.budget.release(reserve)

    async def _copy_once(self, item: WorkItem) -> Outcome:
        src_key = self.src.prefix + item.key
        # Where the object is stored, and the key it is written under: its real one when the
        # writing wrapper protects names (it stores it under dst_key all the same).
        dst_key = self.dst.prefix + (item.key if item.dkey is None else item.dkey)
        put_key = dst_key
        if self.names_by_writer and isinstance(self.writing, CryptStore):
            put_key = self.dst.prefix + item.key
            if self.writing.stored_key(put_key) != dst_key:
                # The journal's stored name and the wrapper's come from one name key.
                raise IntegrityError(
                    f"{item.key!r} would not be stored as planned ({dst_key!r})",
                    store=self.dst.store.name,
                    key=dst_key,
                )
        opts = self.opts
        self._landed(item.key)  # an attempt after a retry starts from the first byte again
        manifest = self._manifest
        expected = manifest.expected_sha256(src_key) if manifest is not None else None
        expected_stored = (
            expected_stored_sha256(manifest, src_key)
            if manifest is not None and self.expect_stored
            else None
        )
        if self.server_copy is not None:
            src_s3, dst_s3 = self.server_copy
            copied = await record_uploads(
                self.ledger,
                lambda on_upload: dst_s3.copy_from(
                    src_s3,
                    src_key,
                    dst_key,
                    size=item.size,
                    if_match=item.etag,
                    on_upload=on_upload,
                ),
            )
            return Outcome(
                item.key,
                item.size,
                item.etag,
                State.DONE,
                sha256=copied.sha256,
                dst_size=copied.size,
                dst_etag=copied.etag,
                plain_size=copied.size,
                stored_as=item.dkey,
            )
        reading = self.reading
        if item.key in self.unproven:
            reading = await self.unproven.reading(reading, src_key, item.size)
        decrypting = isinstance(reading, CryptStore)
        try:
            if isinstance(reading, CryptStore):
                # The ciphertext is checked against the onward manifest as it is read.
                reader = await reading.get(src_key, stored_sha256=expected_stored)
            else:
                reader = await reading.get(src_key)
        except StoredMismatch:
            raise self._not_onward(src_key, dst_key) from None
        # Copied as listed or not at all (daulat.transfer.listed): the listing is of what is
        # stored, so a decrypting read is checked by its ciphertext's size (and the wrapper
        # reads no byte past it).
        where = self.src.store.name
        stored = stored_info(reader)
        check_served_size(item.size, stored.size, store=where, key=src_key)
        etag = stored.etag
        plain: bytes | None = None
        chunks: tuple[bytes, int] | None = None
        stream: AsyncIterable[bytes] = reader  # wrapped below when it is streamed
        if stored.size > SMALL_OBJECT:
            stream = self._metered(capped(reader, item.size, store=where, key=src_key), item.key)
            if expected_stored is not None and not decrypting:
                stream = hashed(
                    stream,
                    StreamHasher(),
                    expected=expected_stored,
                    store=self.dst.store.name,
                    key=src_key,
                )
        else:
            try:
                data = await reader.read_all()
            except StoredMismatch:
                raise self._not_onward(src_key, dst_key) from None
            if not decrypting:
                check_served_size(item.size, len(data), store=where, key=src_key)
            if self.rate is not None:
                await self.rate.take(len(data))
            self._streamed(item.key, len(data))
            if (
                expected_stored is not None
                and not decrypting
                and hashlib.sha256(data).hexdigest() != expected_stored
            ):
                raise self._not_onward(src_key, dst_key)
            plain = data
        if plain is not None:
            digest = hashlib.sha256(plain).hexdigest()
            if expected is not None and digest != expected:
                raise IntegrityError(
                    f"{src_key!r} does not match the source manifest's SHA-256; not written",
                    store=self.dst.store.name,
                    key=dst_key,
                )
            if isinstance(self.writing, CryptStore):
                # No plaintext hash in the clear next to ciphertext: it would let the provider
                # confirm guesses of the content. The hash lives in the journal and the
                # encrypted manifest (and, sealed, in the proof, which binds the ciphertext's
                # size: added once the wrapper has encrypted).
                meta: dict[str, str] = {}

                def seal(stored_size: int) -> None:
                    meta.update(self._proof(dst_key, stored, digest, stored_size))

                result: PutResult = await self.writing.put(
                    put_key, plain, sha256=digest, prehashed=True, metadata=meta, on_stored=seal
                )
            else:
                meta = {"sha256": digest, **self._proof(dst_key, stored, digest, len(plain))}
                if self.as_stored:
                    # Ciphertext copied as stored: marked as such, as where it came from.
                    meta["encryption"] = "age"
                else:
                    # The source's Content-Type, for whoever serves the copy over HTTP.
                    meta.update(carried(reader))
                result = await self.dst.store.put(
                    dst_key, plain, sha256=digest, metadata=meta, prehashed=True
                )
            plain_size = len(plain)
        else:
            # Per-chunk hashes too: readers of part of the object check what they serve.
            hasher = ChunkHasher()
            body_stream: AsyncIterable[bytes] = hashed(
                stream, hasher, expected=expected, store=self.dst.store.name, key=dst_key
            )
            stream_meta: dict[str, str] | None = None
            at_stored_end: Callable[[int], None] | None = None
            started = None
            resumer = self.resumer
            recorded = (
                await resumer.find(dst_key, stored.size, etag) if resumer is not None else None
            )
            if self.prover is not None:
                # A resumed upload keeps the metadata (the nonce) it was begun with.
                started = self.prover.started(
                    dst_key,
                    stored.size,
                    etag,
                    nonce=recorded.nonce if recorded is not None else None,
                )
            if started is not None:
                # The hash is known only at the end: commit it before the upload can
                # complete, bound to a nonce in the metadata (see daulat.transfer.adoption).
                nonce, stream_meta = started
                # A directory sets metadata at its commit, after the last byte: there the
                # full proof replaces the nonce, so a lost journal still adopts the object.
                seal_late = resumer is None and self.dst.store.capabilities.metadata_at_commit

                def completing(stored_size: int) -> None:
                    row = Completing(
                        item.key,
                        stored.size,
                        etag,
                        nonce,
                        hasher.hexdigest(),
                        hasher.size,
                        stored_size,
                        item.dkey,
                    )
                    self.journal.record_completing(self.pair, self.summary.run_id, row)
                    if seal_late and stream_meta is not None:
                        stream_meta.update(self._proof(dst_key, stored, row.sha256, stored_size))
                        if not opts.encrypt_to:
                            stream_meta["sha256"] = row.sha256

                if isinstance(self.writing, CryptStore):
                    at_stored_end = completing  # called with the ciphertext's size
                else:
                    body_stream = before_end(body_stream, completing)
            if not self.as_stored and not isinstance(self.writing, CryptStore):
                # The source's Content-Type (never beside ciphertext: it tells what it is).
                described = carried(reader)
                if described:
                    stream_meta = stream_meta if stream_meta is not None else {}
                    stream_meta.update(described)
            if resumer is not None:
                result = await resumer.put(
                    dst_key,
                    body_stream,
                    metadata=stream_meta,
                    recorded=recorded,
                    src_size=stored.size,
                    src_etag=etag,
                    nonce=started[0] if started is not None else None,
                )
            else:
                result = await self._put_stream(put_key, body_stream, stream_meta, at_stored_end)
            digest, plain_size = hasher.hexdigest(), hasher.size
            if plain_size > hasher.chunk_size:
                chunks = (hasher.chunks, hasher.chunk_size)
        dst_etag = result.etag
        if dst_etag is None:
            dst_etag = (await self.dst.store.head(dst_key)).etag
        return Outcome(
            item.key,
            stored.size,
            etag,
            State.DONE,
            sha256=digest,
            dst_size=result.stored_size if isinstance(result, CryptPutResult) else result.size,
            dst_etag=dst_etag,
            plain_size=plain_size,
            stored_as=item.dkey,
            chunks=chunks[0] if chunks else None,
            chunk_size=chunks[1] if chunks else None,
        )

    def _proof(
        self, dst_key: str, src: ObjectInfo, digest: str, stored_size: int
    ) -> dict[str, str]:
        """The proof of an object read as ``src`` (the source object as stored)."""
        if self.prover is None:
            return {}
        return self.prover.sealed(dst_key, src.size, src.etag, digest, stored_size)

    async def _put_stream(
        self,
        dst_key: str,
        body: AsyncIterable[bytes],
        metadata: Mapping[str, str] | None = None,
        on_stored: Callable[[int], None] | None = None,
    ) -> PutResult:
        """A streamed put whose multipart upload, if any, is recorded in the journal.
        ``on_stored``: for an encrypting run, called with the ciphertext's size at its end."""
        writing = self.writing
        if isinstance(writing, CryptStore):
            return await record_uploads(
                self.ledger,
                lambda on_upload: writing.put(
                    dst_key, body, metadata=metadata, on_upload=on_upload, on_stored=on_stored
                ),
            )
        return await record_uploads(
            self.ledger,
            lambda on_upload: writing.put(dst_key, body, metadata=metadata, on_upload=on_upload),
        )

    def _not_onward(self, src_key: str, dst_key: str) -> IntegrityError:
        return IntegrityError(
            f"{src_key!r} is not the ciphertext the onward copy's manifest lists; not written",
            store=self.dst.store.name,
            key=dst_key,
        )

    async def _metered(self, chunks: AsyncIterable[bytes], key: str) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            if self.rate is not None:
                await self.rate.take(len(chunk))
            self._streamed(key, len(chunk))
            yield chunk


def _unfinished(item: WorkItem, state: State, error: str) -> Outcome:
    return Outcome(item.key, item.size, item.etag, state, error=error, stored_as=item.dkey)
