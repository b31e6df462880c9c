"""The transfer engine: copy, sync and exit between any two stores.

Shape: list both sides into the journal's temporary tables, plan with one SQL join (pure, no
I/O), then run the plan with an asyncio pool of workers over the Store interface.

- **Streaming, bounded memory.** Objects up to ``SMALL_OBJECT`` are read whole and sent as one
  PUT; larger ones stream through a multipart upload. A byte budget caps the bytes held in flight,
  so peak memory depends neither on object sizes nor on their number.
- **Hashing.** The plaintext SHA-256 is computed while streaming and recorded in the journal;
  plain single-PUT objects also carry it as ``daulat_sha256`` metadata (a streamed object's hash
  is known only after its upload began, so it lives in the journal and the destination manifest).
- **Exact resume.** With a proof key, every object written carries a MAC under that key, and a
  re-run adopts objects complete at the destination whose proof verifies instead of sending
  them again; objects over ``SMALL_OBJECT`` are committed as soon as they complete
  (:mod:`daulat.transfer.adoption`).
- **Faults.** Transient errors are retried per object with backoff inside a time budget and halve
  the concurrency (AIMD). A permanent refusal (revoked credentials, disabled account, missing
  bucket) stops the run cleanly: nothing in flight is lost, and the summary says what remains.
- **Hostile keys.** A key the destination cannot hold safely is refused for that object only and
  listed in the summary.
- **Encryption** is a store wrapper (:class:`daulat.stores.crypt.CryptStore`, as rclone's
  crypt): an encrypting run writes through one over the destination, a decrypting run
  (restore) reads through one over the source. What the engine records beside the bytes (the
  ciphertext's size in proofs and the journal, a ciphertext hash an onward manifest expects)
  comes from the wrapper's small explicit API. Listings, planning, adoption and manifests are
  of what is stored and use the stores themselves.
- **Protected names.** With ``encrypt_names`` objects are stored under keyed hashes of their
  names (:mod:`daulat.transfer.names`), written by the encrypting wrapper; the listing's
  ``dkey`` column carries the same stored name for planning, and the real names go only into
  the encrypted manifest.
- **Filters.** ``Options.filter`` (:mod:`daulat.filters`) selects source objects by their key
  relative to the source prefix while the listing streams in: objects it excludes are not
  copied, not verified and not counted in ``source_objects`` (the summary counts them as
  excluded). ``sync --delete`` deletes only destination objects it selects (keys relative to
  the destination prefix). The destination listing itself stays whole: the plaintext checks
  and the destination manifest describe everything there, not the filtered part.
  A filter is not part of the journal's pair id: journal rows are facts about single objects,
  true whatever selected them, so an unfiltered run after a filtered one skips what that one
  finished and copies the rest. What a filter makes partial is the *run*: its summary carries
  the rules (``filter``), and its verification is not recorded as one of the whole pair.

Why one module past 600 lines: the run's phases (:func:`transfer`) and the per-object executor
share the run's state (options, journal, summary, progress); what needs none of it lives
beside it (model, listings, adoption, safety, proof, resume, and the encrypting store wrapper).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import sqlite3
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, replace
from typing import Protocol

from daulat import interrupts
from daulat.crypto import NO_MATCHING_IDENTITY, DecryptError
from daulat.errors import (
    AccessDenied,
    ConfigError,
    IntegrityError,
    Interrupted,
    InvalidKey,
    NotFound,
    SafetyRefusal,
    SourceChanged,
    StoreError,
    Transient,
)
from daulat.filters import EVERYTHING
from daulat.signing import PublicKey, existing_local_key
from daulat.stores.abilities import ServerSideCopy, server_side_copy, upload_cleanup
from daulat.stores.base import ObjectInfo, OnUpload, PutResult, Store
from daulat.stores.chunkhash import ChunkHasher
from daulat.stores.cleanup import cleanup_temp
from daulat.stores.crypt import AGE_BUFFER as CRYPT_BUFFER
from daulat.stores.crypt import CryptPutResult, CryptStore, StoredMismatch, stored_info
from daulat.stores.hashing import StreamHasher, hashed
from daulat.stores.resumable import unwrap_resumable
from daulat.transfer.adoption import Prover, adopt_proven, before_end
from daulat.transfer.existing import Kept, keep_existing
from daulat.transfer.journal import BatchWriter, Completing, Journal, Outcome, State, WorkItem
from daulat.transfer.keepout import KeepOut
from daulat.transfer.listed import capped, check_served_size

# The transfer's model and the listings moved out of this module (daulat.transfer.model,
# daulat.transfer.listings); imported "as" themselves so that they stay importable from here.
from daulat.transfer.listings import list_destination as list_destination
from daulat.transfer.listings import list_into as list_into
from daulat.transfer.manifests import ProvenanceError, WrongIdentity, latest_manifest
from daulat.transfer.markers import marker_note, set_aside_folder_markers
from daulat.transfer.model import VERIFIED_BY_CONTENT as VERIFIED_BY_CONTENT
from daulat.transfer.model import VERIFIED_BY_LISTING as VERIFIED_BY_LISTING
from daulat.transfer.model import VERIFIED_BY_RESTORE as VERIFIED_BY_RESTORE
from daulat.transfer.model import Endpoint as Endpoint
from daulat.transfer.model import Kind as Kind
from daulat.transfer.model import MiB as MiB
from daulat.transfer.model import Options as Options
from daulat.transfer.model import Summary as Summary
from daulat.transfer.model import pair_id as pair_id
from daulat.transfer.names import has_protected_names
from daulat.transfer.onward import (
    Carry,
    carry_origin,
    expected_stored_sha256,
    expects_stored,
    find_origin,
)
from daulat.transfer.proof import (
    check_chain_before_writing,
    drop_nested_bookkeeping,
    load_restore_manifest,
    name_problems_by_real_name,
    settle_unproven,
    write_run_manifest,
)
from daulat.transfer.provenance import location as provenance_location
from daulat.transfer.resume import Resumer
from daulat.transfer.retry import AdaptiveLimiter
from daulat.transfer.safety import (
    PlannedChanges,
    count_deletions,
    empty_source,
    filtered_delete_on_protected_names,
    plaintext_over_ciphertext,
    refusal_or_raise,
    too_many_deletions,
)
from daulat.transfer.uploads import UploadLedger
from daulat.transfer.verify import check_listed

SMALL_OBJECT = 8 * MiB
# What one streamed object can hold at once: read chunks plus the parts being uploaded
# (obstore buffers PART_SIZE per part in flight, plus the one being filled).
STREAM_RESERVATION = 28 * MiB
# Bytes queued between the event loop and an age worker thread, per streamed object
# (daulat.stores.crypt), kept here under its old name.
AGE_BUFFER = CRYPT_BUFFER


# Errors that end the whole run cleanly rather than failing one object.
STOP_ERRORS = (AccessDenied, WrongIdentity)


class Bookkeeping(Protocol):
    """What the executor needs of the journal: the planned work and where outcomes go. The
    journal itself, or on a Ray worker, which never opens it, the stream of results back to
    the driver (:mod:`daulat.scale.worker`)."""

    def work(self) -> Iterable[WorkItem]: ...

    def record(
        self, pair: str, run_id: int, outcomes: Sequence[Outcome], settled: Sequence[str] = ()
    ) -> None: ...

    def record_completing(self, pair: str, run_id: int, row: Completing) -> None: ...


class Ledger(Protocol):
    """Where multipart uploads are recorded (:class:`~daulat.transfer.uploads.UploadLedger`)."""

    def started(self, key: str, upload_id: str) -> None: ...

    def finished(self, key: str, upload_id: str) -> None: ...

    async def failed(self, key: str, upload_id: str) -> None: ...


class Runner(Protocol):
    """Runs a plan elsewhere (``Options.runner``): sends the executor's planned work out and
    hands back every outcome through :meth:`Executor.commit`."""

    async def __call__(self, executor: Executor) -> None: ...


@dataclass
class Progress:
    """Live counters, for a progress display.

    ``done_bytes`` counts objects committed to the journal; ``in_flight_bytes`` the bytes read
    so far from the source by objects still being copied (a retried object starts again from
    0), so ``done_bytes + in_flight_bytes`` moves while a large object streams.
    """

    planned_objects: int = 0
    planned_bytes: int = 0
    done_objects: int = 0
    done_bytes: int = 0
    failed: int = 0
    refused: int = 0
    retries: int = 0
    concurrency: int = 0
    in_flight_bytes: int = 0

    @property
    def moved_bytes(self) -> int:
        """Bytes of the plan handled so far, including those of objects in flight."""
        return self.done_bytes + self.in_flight_bytes


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


class ByteBudget:
    """Caps the bytes held by objects in flight."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = asyncio.Condition()

    async def acquire(self, n: int) -> int:
        n = min(n, self.limit)
        async with self._cond:
            await self._cond.wait_for(lambda: self.used + n <= self.limit)
            self.used += n
        return n

    async def release(self, n: int) -> None:
        async with self._cond:
            self.used -= n
            self._cond.notify_all()


class RateLimit:
    """A token bucket over bytes read from the source (``--bwlimit``)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._tokens = rate
        self._last = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, n: int) -> None:
        async with self._lock:
            while True:
                t = time.monotonic()
                self._tokens = min(self.rate, self._tokens + (t - self._last) * self.rate)
                self._last = t
                if self._tokens >= n or self._tokens >= self.rate:
                    self._tokens -= n
                    return
                await asyncio.sleep((min(n, self.rate) - self._tokens) / self.rate)


async def transfer(
    kind: Kind,
    src: Endpoint,
    dst: Endpoint,
    journal: Journal,
    options: Options | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> Summary:
    """Run one copy/sync/exit. Never raises for store failures: they end up in the summary."""
    opts = options or Options()
    if opts.encrypt_to and opts.decrypt_with:
        raise ValueError("a transfer either encrypts or decrypts, not both")
    if opts.encrypt_names and (not opts.encrypt_to or opts.name_key is None):
        raise ValueError("protected names need encrypt_to and the destination's name_key")
    if kind == Kind.RESTORE and opts.filter.active:
        # A restore checks the source against its whole manifest: a filtered listing would
        # report every object left out as withheld.
        raise ConfigError("filters do not apply to restore: it restores the whole manifest")
    pair = pair_id(src, dst, opts.codec_tag)
    run_id = journal.begin_run(
        kind.value, pair, src.label or src.store.name, dst.label or dst.store.name
    )
    summary = Summary(kind.value, src.label, dst.label, run_id, dry_run=opts.dry_run)
    if opts.filter.active:
        summary.filter = opts.filter.describe()
    summary.encrypted = bool(opts.encrypt_to)
    summary.names_protected = opts.encrypt_names
    started = time.monotonic()
    failed = False
    try:
        await _run(kind, src, dst, journal, opts, pair, summary, on_progress)
    except STOP_ERRORS as exc:
        summary.stopped = str(exc)
        _count_listed(journal, summary)
    except SafetyRefusal as exc:
        summary.stopped = str(exc)  # recorded as a refused run, then raised to the caller
        raise
    except asyncio.CancelledError:
        # The workers were stopped and what they finished is committed (see _Executor.run);
        # the run is recorded as interrupted below, and a rerun resumes from there.
        signum = interrupts.received()
        summary.interrupted = "cancelled" if signum is None else signal_name(signum)
        _count_listed(journal, summary)
        if signum is None:
            raise
        raise Interrupted(signum, summary) from None
    except Exception:
        # An error the summary cannot hold (the source cannot be listed, say): never "complete".
        failed = True
        raise
    finally:
        summary.duration_s = time.monotonic() - started
        if kind == Kind.RESTORE:
            with contextlib.suppress(sqlite3.Error):
                name_problems_by_real_name(journal, summary)
        if summary.interrupted:
            status = "interrupted"
        elif failed:
            status = "failed"
        else:
            status = "complete" if summary.ok else ("refused" if summary.stopped else "incomplete")
        journal.end_run(run_id, status, json.dumps(summary.to_json(), default=str))
    return summary


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def _count_listed(journal: Journal, summary: Summary) -> None:
    """A run stopped before it knew what remains: count what the source listing gave."""
    if summary.remaining_known:
        return
    with contextlib.suppress(sqlite3.Error):
        summary.listed_objects, summary.listed_bytes = journal.listing_totals("src")


def _needs_identity(src: Endpoint) -> ConfigError:
    return ConfigError(
        f"{src.label or provenance_location(src)} is an encrypted replica (or its manifest does "
        "not say it is plain): restore needs --identity FILE (the age secret key)"
    )


async def _run(
    kind: Kind,
    src: Endpoint,
    dst: Endpoint,
    journal: Journal,
    opts: Options,
    pair: str,
    summary: Summary,
    on_progress: Callable[[Progress], None] | None,
) -> None:
    summary.remaining_known = False
    journal.new_listing("src")  # counted as listed so far if the run stops in what follows
    if kind == Kind.RESTORE:
        if not opts.decrypt_with and (await latest_manifest(src) or "").endswith(".age"):
            raise _needs_identity(src)
        if await load_restore_manifest(src, journal, opts.signing, opts.decrypt_with, summary):
            opts = replace(opts, decrypt_with=())  # a plain replica: nothing to decrypt
            summary.restored_plain = True
        elif not opts.decrypt_with:
            # Only a replica whose signed manifest lists no encrypted object restores without
            # a key; anything else would fail object by object as "cannot decrypt".
            raise _needs_identity(src)
    # `.daulat/` holds daulat's own manifests wherever daulat wrote; they describe that store,
    # not data to carry on (an exit from an earlier exit's destination skips them). Anything
    # else there is reserved (counted, not copied); daulat's local state is never carried. A
    # restore's source is a replica: its whole `.daulat/` is daulat's.
    own = opts.own_state
    keep_out = KeepOut(own.src if own else None, destination=kind == Kind.RESTORE)
    try:
        summary.excluded_objects, summary.excluded_bytes = await list_into(
            journal,
            "src",
            src,
            retry=opts.retry,
            names=opts.name_key.stored_name if opts.encrypt_names and opts.name_key else None,
            filter=opts.filter,
            keep_out=keep_out,
        )
    except AccessDenied as exc:
        # Not a refusal to go on with work in hand: the source itself cannot be read (a
        # missing bucket, revoked credentials), so what there is to copy is unknown.
        raise type(exc)(
            f"cannot list the source {src.label or src.store.name}: {exc}",
            store=exc.store,
            key=exc.key,
        ) from None
    _kept_out(keep_out, src, summary)
    summary.source_objects, summary.source_bytes = journal.listing_totals("src")
    if summary.source_objects == 0:
        found = empty_source(kind, opts, src, dst, summary.excluded_objects, keep_out.kept)
        summary.refusal = refusal_or_raise(summary.refusal, found, opts.dry_run)
    unnamed = 0
    if kind == Kind.RESTORE:
        drop_nested_bookkeeping(journal, summary)
    if kind == Kind.RESTORE and (
        journal.expects_stored_names() or await has_protected_names(src, opts.retry)
    ):
        unknown = journal.name_from_expected(src.prefix)
        # Planted, as far as anyone can tell: unproven, as verify and a plain restore call them.
        summary.unproven += [
            (k, "not listed in the manifest: origin not proven and real name unknown, not restored")
            for k, _ in unknown
        ]
        unnamed = len(unknown)
    if kind == Kind.RESTORE:
        unnamed += settle_unproven(src, journal, opts.signing, summary)
    # Empty "folder/" objects a directory cannot hold: set aside with a note (transfer.markers).
    markers = await set_aside_folder_markers(
        journal, dst.store, dst.prefix, names_protected=opts.encrypt_names
    )
    if markers:
        summary.source_objects -= len(markers)
        summary.notes.append(marker_note(markers, dst.label or dst.store.name))
    carry = await _onward_origin(kind, src, journal, opts)
    try:
        # Filters judge the destination only for what sync --delete may delete.
        judged = opts.filter if kind == Kind.SYNC and opts.delete else EVERYTHING
        dst_excluded = await list_destination(
            journal, dst, retry=opts.retry, filter=judged, own_state=_own_at_dst(opts)
        )
    except NotFound:
        raise
    except StoreError as exc:
        # Nothing is known to be at the destination: everything listed at the source remains.
        summary.left_objects, summary.left_bytes = summary.source_objects, summary.source_bytes
        summary.remaining_known = True
        summary.stopped = f"cannot list the destination {dst.label or dst.store.name}: {exc}"
        return
    summary.planned_objects, summary.planned_bytes = journal.plan(pair, force=opts.force)
    # At most the plan remains (adoption below may take some out of it).
    summary.left_objects, summary.left_bytes = summary.planned_objects, summary.planned_bytes
    summary.remaining_known = True
    # A refused run changes nothing, not even the journal (adoption below records objects).
    await _refuse_unsafe(kind, src, dst, journal, opts, pair, summary, dst_excluded, carry)
    prover = _prover(opts)
    if prover is not None and not opts.dry_run and not opts.force:
        adopted = await adopt_proven(
            journal,
            pair,
            summary.run_id,
            dst.store,
            dst.prefix,
            prover,
            retry=opts.retry,
            concurrency=opts.concurrency,
            expected=(lambda key: journal.expected_sha256(src.prefix + key))
            if summary.checked_against_manifest
            else None,
        )
        summary.adopted_objects = adopted.objects
        summary.planned_objects, summary.planned_bytes = journal.work_totals()
    kept = Kept()
    if kind == Kind.RESTORE and not opts.overwrite:
        # Existing destination files that differ are the user's: left alone (transfer.existing).
        kept = await keep_existing(
            journal,
            dst,
            summary,
            lambda key: journal.expected_sha256(src.prefix + key),
            concurrency=opts.concurrency,
            record=None if opts.dry_run else (pair, summary.run_id),
        )
        summary.planned_objects, summary.planned_bytes = journal.work_totals()
    summary.skipped_objects = (
        summary.source_objects - summary.planned_objects - unnamed - summary.kept_existing_objects
    )
    summary.left_objects, summary.left_bytes = summary.planned_objects, summary.planned_bytes
    if opts.dry_run:
        if opts.on_plan is not None:
            deleting = kind == Kind.SYNC and opts.delete
            opts.on_plan(
                PlannedChanges(
                    journal,
                    pair,
                    copies=(summary.planned_objects, summary.planned_bytes),
                    deletions=summary.deleted_objects if deleting else None,
                    keep=_deletable(opts),
                )
            )
        return
    # Before anything is written: the run's manifest must be able to follow the destination's.
    await check_chain_before_writing(dst, journal, opts.signing, opts.retry)
    if carry is not None:
        summary.notes += await carry_origin(src, dst, carry, _trusted(opts, journal), opts.retry)
        summary.notes.append(
            f"{src.label or src.store.name} holds age-encrypted objects: they were copied and "
            "verified as stored (ciphertext); a restore checks what they decrypt to against "
            f"the replica's own signed manifest {carry.origin.name}, carried to "
            f"{dst.label or dst.store.name}:{dst.prefix}{carry.origin.carried_as}"
        )

    dst_s3 = upload_cleanup(dst.store)
    ledger = UploadLedger(journal, dst_s3, summary.run_id) if dst_s3 is not None else None
    if ledger is not None:
        # Parts of uploads that a killed (or stopped) run began are stored, billed and never
        # visible; abort those the journal records as daulat's before this run starts its own.
        summary.aborted_uploads = await ledger.clean_up(
            dst.prefix, opts.abort_uploads_older_than, journal.is_planned, opts.retry.call
        )
    resumer = _resumer(dst, journal, opts, summary.run_id)
    if resumer is not None and ledger is None:
        # Azure and GCS: the uploads daulat.transfer.uploads does not know of.
        summary.aborted_uploads += await resumer.clean_up(
            journal.is_planned, dst.prefix, opts.retry.call
        )
    executor = _Executor(src, dst, journal, opts, pair, summary, on_progress, ledger)
    executor.as_stored = carry is not None
    executor.resumer = resumer
    try:
        if opts.runner is not None and summary.planned_objects:
            await opts.runner(executor)
        else:
            await executor.run()
    finally:
        if resumer is not None:
            totals = resumer.totals
            summary.resumed_uploads = totals.resumed_uploads
            summary.resumed_bytes = totals.kept_bytes
            summary.replaced_parts = totals.replaced_parts
            summary.restarted_uploads = totals.restarted_uploads
            summary.aborted_uploads += totals.discarded_uploads
    if summary.stopped:
        return
    if kind == Kind.SYNC and opts.delete and not summary.failed:
        await _delete_extraneous(dst, journal, pair, summary, opts)
    if kind.verifies:
        await verify_listed(
            src,
            dst,
            journal,
            pair,
            summary,
            whole=not opts.filter.active,
            own_state=_own_at_dst(opts),
            kept=kept,
        )
        if kind == Kind.RESTORE and summary.unproven_restored:
            # Restored as asked, but nothing proves their origin: never counted as verified.
            summary.verified_objects = (summary.verified_objects or 0) - len(
                summary.unproven_restored
            )
    else:
        await list_destination(journal, dst, retry=opts.retry, own_state=_own_at_dst(opts))
    # Every run that wrote leaves a signed manifest of the whole destination prefix; a restore
    # that restored nothing leaves none (its destination may be the user's own data).
    if kind != Kind.RESTORE or summary.copied_objects or summary.skipped_objects:
        await _write_manifest(src, dst, journal, pair, opts, summary, carry)
    # Every write of this run has ended: temp files of earlier, killed runs can go.
    with contextlib.suppress(StoreError):
        await cleanup_temp(dst.store)


def _own_at_dst(opts: Options) -> str | None:
    return opts.own_state.dst if opts.own_state is not None else None


def _kept_out(keep_out: KeepOut, src: Endpoint, summary: Summary) -> None:
    """Say in the summary what the source listing kept out (daulat.transfer.keepout)."""
    kept = keep_out.kept
    summary.skipped_state_objects, summary.skipped_state_bytes = (
        kept.state_objects,
        kept.state_bytes,
    )
    summary.skipped_state = list(kept.state_dirs)
    summary.reserved_objects, summary.reserved_bytes = kept.reserved_objects, kept.reserved_bytes
    summary.reserved = list(kept.reserved)
    if kept.state_objects:
        where = ", ".join(repr(src.prefix + d) for d in kept.state_dirs[:5])
        more = f" and {len(kept.state_dirs) - 5:,} more" if len(kept.state_dirs) > 5 else ""
        summary.notes.append(
            f"left out {kept.state_objects:,} file(s) of daulat state director"
            f"{'y' if len(kept.state_dirs) == 1 else 'ies'} {where}{more} (private keys, "
            "journal, audit log): daulat never copies its local state to a store; keep your "
            "keys elsewhere (see the threat model)"
        )


async def _refuse_unsafe(
    kind: Kind,
    src: Endpoint,
    dst: Endpoint,
    journal: Journal,
    opts: Options,
    pair: str,
    summary: Summary,
    dst_excluded: int,
    carry: Carry | None = None,
) -> None:
    """The plan's safety checks (:mod:`daulat.transfer.safety`), before anything is written:
    raise in a real run; in a dry run note the first refusal in the summary.

    ``dst_excluded``: the destination objects the filters do not select. ``carry``: the run
    copies an encrypted replica's ciphertext as stored (and its protected names, if any)."""
    found: SafetyRefusal | None = await plaintext_over_ciphertext(
        kind,
        src,
        dst,
        journal,
        opts,
        as_stored=carry is not None,
        hashed_names=carry is not None and carry.protected_names,
    )
    summary.refusal = refusal_or_raise(summary.refusal, found, opts.dry_run)
    if kind == Kind.SYNC and opts.delete:
        found = await filtered_delete_on_protected_names(opts, dst)
        summary.refusal = refusal_or_raise(summary.refusal, found, opts.dry_run)
        if found is not None:
            return  # a dry run: the filters cannot judge these keys, so list no deletions
        deletions = count_deletions(journal, pair, _deletable(opts))
        dst_selected = journal.listing_totals("dst")[0] - dst_excluded
        if opts.dry_run:
            summary.deleted_objects = deletions  # what it would delete
        else:
            summary.left_deletions = deletions  # until each is done
        found = too_many_deletions(
            deletions, dst_selected, opts.max_delete, dst, filtered=opts.filter.active
        )
        summary.refusal = refusal_or_raise(summary.refusal, found, opts.dry_run)


def _deletable(opts: Options) -> Callable[[str], bool] | None:
    """Which destination keys (relative to its prefix) sync --delete may delete: those the
    filters select; None (every key) without filters."""
    return opts.filter.matches if opts.filter.active else None


def _trusted(opts: Options, journal: Journal) -> list[PublicKey]:
    """The keys whose manifests a writing run believes: the pinned ones and its own."""
    own = opts.signing.key.public if opts.signing.key is not None else None
    return opts.signing.trusted(own or existing_local_key(journal.path.parent))


async def _onward_origin(
    kind: Kind, src: Endpoint, journal: Journal, opts: Options
) -> Carry | None:
    """The encrypted replica's manifest a run copying ``src`` as stored must carry along
    (:mod:`daulat.transfer.onward`); None when there is none, or the run decrypts or encrypts."""
    if kind == Kind.RESTORE or opts.decrypt_with or opts.encrypt_to:
        return None
    return await find_origin(
        src, journal, _trusted(opts, journal), opts.signing.identities, opts.retry
    )


def _resumer(dst: Endpoint, journal: Journal, opts: Options, run_id: int) -> Resumer | None:
    """Resumable uploads for large objects, where the destination can continue them and the
    copy is not encrypted (age ciphertext cannot be continued: daulat.transfer.resume)."""
    store = unwrap_resumable(dst.store)
    if store is None or opts.encrypt_to:
        return None
    return Resumer(journal, store, run_id, opts.codec_tag)


def _prover(opts: Options, run_id: int | None = None) -> Prover | None:
    """``run_id``: the run that writes with it, named in its proofs (adoption.py)."""
    if opts.proof_key is None:
        return None
    return Prover(
        opts.proof_key, codec=opts.codec_tag, encrypting=bool(opts.encrypt_to), run_id=run_id
    )


async def _write_manifest(
    src: Endpoint,
    dst: Endpoint,
    journal: Journal,
    pair: str,
    opts: Options,
    summary: Summary,
    carry: Carry | None = None,
) -> None:
    origin = carry.origin if carry is not None else None
    try:
        summary.manifest_key = await opts.retry.call(
            lambda: write_run_manifest(
                src, dst, journal, pair, opts.signing, opts.encrypt_to, origin
            )
        )
    except (*STOP_ERRORS, ProvenanceError):
        raise
    except StoreError as exc:
        # The copy may be complete but its proof is not at the destination: not done.
        summary.manifest_error = str(exc)


class _Executor:
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
        self.prover = _prover(opts, summary.run_id)
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
        inside = _own_at_dst(self.opts)
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
            # (nothing is written with the wrong key). Damaged or truncated ciphertext is
            # this object's own failure.
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
            copied = await self._recorded(
                lambda on_upload: dst_s3.copy_from(
                    src_s3,
                    src_key,
                    dst_key,
                    size=item.size,
                    if_match=item.etag,
                    on_upload=on_upload,
                )
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
        decrypting = isinstance(self.reading, CryptStore)
        try:
            if isinstance(self.reading, CryptStore):
                # The ciphertext is checked against the onward manifest as it is read.
                reader = await self.reading.get(src_key, stored_sha256=expected_stored)
            else:
                reader = await self.reading.get(src_key)
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
        stream: AsyncIterable[bytes] = self._metered(
            capped(reader, item.size, store=where, key=src_key), item.key
        )
        if expected_stored is not None and not decrypting and stored.size > SMALL_OBJECT:
            stream = hashed(
                stream,
                StreamHasher(),
                expected=expected_stored,
                store=self.dst.store.name,
                key=src_key,
            )
        if stored.size <= SMALL_OBJECT:
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
            return await self._recorded(
                lambda on_upload: writing.put(
                    dst_key, body, metadata=metadata, on_upload=on_upload, on_stored=on_stored
                )
            )
        return await self._recorded(
            lambda on_upload: writing.put(dst_key, body, metadata=metadata, on_upload=on_upload)
        )

    def _not_onward(self, src_key: str, dst_key: str) -> IntegrityError:
        return IntegrityError(
            f"{src_key!r} is not the ciphertext the onward copy's manifest lists; not written",
            store=self.dst.store.name,
            key=dst_key,
        )

    async def _recorded(
        self, write: Callable[[OnUpload | None], Awaitable[PutResult]]
    ) -> PutResult:
        """Run ``write`` so that a multipart upload it begins is recorded in the journal before
        its first part, and forgotten once the object is committed or the upload aborted."""
        ledger = self.ledger
        if ledger is None:
            return await write(None)
        begun: list[tuple[str, str]] = []

        def on_upload(key: str, upload_id: str) -> None:
            ledger.started(key, upload_id)
            begun.append((key, upload_id))

        try:
            result = await write(on_upload)
        except Exception:
            for key, upload_id in begun:
                await ledger.failed(key, upload_id)
            raise
        for key, upload_id in begun:
            ledger.finished(key, upload_id)
        return result

    async def _metered(self, chunks: AsyncIterable[bytes], key: str) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            if self.rate is not None:
                await self.rate.take(len(chunk))
            self._streamed(key, len(chunk))
            yield chunk


Executor = _Executor


async def copy_items(
    src: Endpoint,
    dst: Endpoint,
    book: Bookkeeping,
    opts: Options,
    pair: str,
    run_id: int,
    *,
    ledger: Ledger | None = None,
    as_stored: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
) -> Summary:
    """Copy the objects ``book.work()`` gives, committing outcomes to ``book``: the engine's
    per-object part alone, without listing, planning, adoption or manifests (a Ray worker's
    shard, planned by the driver). Raises nothing for store failures; a permanent refusal
    ends it with ``stopped`` set in the returned summary."""
    summary = Summary(Kind.COPY.value, src.label, dst.label, run_id)
    executor = _Executor(src, dst, book, opts, pair, summary, on_progress, ledger)
    executor.as_stored = as_stored
    await executor.run()
    return summary


def _unfinished(item: WorkItem, state: State, error: str) -> Outcome:
    return Outcome(item.key, item.size, item.etag, state, error=error, stored_as=item.dkey)


async def _delete_extraneous(
    dst: Endpoint, journal: Journal, pair: str, summary: Summary, opts: Options
) -> None:
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
        for page in journal.extraneous(pair, keep=_deletable(opts)):
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


async def verify_listed(
    src: Endpoint,
    dst: Endpoint,
    journal: Journal,
    pair: str,
    summary: Summary,
    *,
    whole: bool = True,
    own_state: str | None = None,
    kept: Kept | None = None,
) -> None:
    """Verify the run's objects against a fresh destination listing (see
    :mod:`daulat.transfer.verify`).

    ``whole``: the source listing is the pair's whole source (no filters), so the check counts
    as a verification of the pair. ``own_state``: see :func:`list_destination`. ``kept``: a
    restore's existing destination objects it left as they were (transfer.existing): the
    identical ones count as verified (hashed against the manifest), the others are reported
    as kept, not again as unverified."""
    await list_destination(journal, dst, own_state=own_state)
    report = check_listed(journal, pair, run_id=summary.run_id, whole=whole)
    kept = kept or Kept()
    summary.verified_objects = report.verified + kept.identical - kept.journaled
    # Refused objects are reported once, as refused, not again as unverified.
    refused = {k for k, _ in summary.refused}
    summary.unverified = [
        (k, r) for k, r in report.problems if k not in refused and k not in kept.keys
    ]
