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

Where the rest lives: this module runs a run's phases (:func:`transfer`, :func:`copy_items`);
the per-object copy is the executor's (:mod:`daulat.transfer.executor`, with its pacing in
:mod:`daulat.transfer.pacing` and its bookkeeping in :mod:`daulat.transfer.bookkeeping`); the
steps around the copy (refusals, trusted keys, proofs, resumable uploads, the check against the
destination listing, the manifest) are in :mod:`daulat.transfer.steps`, and ``sync --delete``'s
deletions in :mod:`daulat.transfer.deletion`. Beside them: the model, listings, adoption,
safety, proof, resume, and the encrypting store wrapper. Every name those modules took from
here is still importable from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace

from daulat import interrupts
from daulat.errors import (
    AccessDenied,
    ConfigError,
    Interrupted,
    NotFound,
    SafetyRefusal,
    StoreError,
)
from daulat.filters import EVERYTHING
from daulat.stores.abilities import upload_cleanup
from daulat.stores.cleanup import cleanup_temp
from daulat.transfer.adoption import adopt_proven
from daulat.transfer.bookkeeping import Bookkeeping as Bookkeeping
from daulat.transfer.bookkeeping import Ledger as Ledger

# What moved out of this module (the deletions, the executor, its pacing, the steps around the
# copy, the model and the listings) is imported "as" itself so that it stays importable from
# here.
from daulat.transfer.deletion import DELETE_SETTLE_S as DELETE_SETTLE_S
from daulat.transfer.deletion import DELETED_KEYS_KEPT as DELETED_KEYS_KEPT
from daulat.transfer.deletion import DeletedKeys as DeletedKeys
from daulat.transfer.deletion import deletable, delete_extraneous, spare_own_records
from daulat.transfer.executor import AGE_BUFFER as AGE_BUFFER
from daulat.transfer.executor import SMALL_OBJECT as SMALL_OBJECT
from daulat.transfer.executor import STREAM_RESERVATION as STREAM_RESERVATION
from daulat.transfer.executor import Executor as Executor
from daulat.transfer.executor import Runner as Runner
from daulat.transfer.executor import Warming
from daulat.transfer.existing import Kept, keep_existing
from daulat.transfer.journal import Journal
from daulat.transfer.keepout import KeepOut
from daulat.transfer.listings import list_destination as list_destination
from daulat.transfer.listings import list_into as list_into
from daulat.transfer.manifests import latest_manifest
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
from daulat.transfer.onward import carry_origin
from daulat.transfer.pacing import ByteBudget as ByteBudget
from daulat.transfer.pacing import Progress as Progress
from daulat.transfer.pacing import RateLimit as RateLimit
from daulat.transfer.proof import (
    check_chain_before_writing,
    drop_nested_bookkeeping,
    load_restore_manifest,
    name_problems_by_real_name,
    settle_unproven,
)
from daulat.transfer.provenance import location as provenance_location
from daulat.transfer.replaced import explain_replaced
from daulat.transfer.safety import PlannedChanges, empty_source, refusal_or_raise
from daulat.transfer.steps import STOP_ERRORS as STOP_ERRORS
from daulat.transfer.steps import (
    kept_out,
    onward_origin,
    own_at_dst,
    prover_for,
    refuse_unsafe,
    resumer_for,
    trusted,
    write_manifest,
)
from daulat.transfer.steps import verify_listed as verify_listed
from daulat.transfer.unproven import Unproven
from daulat.transfer.uploads import UploadLedger

# The executor's old name, which bench/ray_scaling.py imports.
_Executor = Executor


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
    # A runner that copies elsewhere gets ready while this run lists and plans (see Warming).
    warming = (
        opts.runner.warm(src, dst)
        if isinstance(opts.runner, Warming) and not opts.dry_run
        else contextlib.nullcontext()
    )
    try:
        async with warming:
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


def _waiting(on_progress: Callable[[Progress], None] | None, what: str) -> None:
    """Tell the progress display what the run waits for before it has counts to show."""
    if on_progress is not None:
        on_progress(Progress(waiting_for=what))


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
    _waiting(on_progress, f"listing {src.label or src.store.name}")
    identities = opts.decrypt_with  # kept for unproven age files when the replica is plain
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
    kept_out(keep_out, src, summary)
    summary.source_objects, summary.source_bytes = journal.listing_totals("src")
    # The whole listing, whatever stops the run later: a destination that cannot be listed
    # leaves it at what the source gave, not at 0 as if the source were empty.
    summary.listed_objects, summary.listed_bytes = summary.source_objects, summary.source_bytes
    if summary.source_objects == 0:
        found = empty_source(kind, opts, src, dst, summary.excluded_objects, keep_out.kept)
        summary.refusal = refusal_or_raise(summary.refusal, found, opts.dry_run)
    unnamed = 0
    records: set[str] = set()  # restore: sub-prefixes holding daulat's own signed records
    if kind == Kind.RESTORE:
        records = await drop_nested_bookkeeping(src, journal, opts.signing, summary)
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
    carry = await onward_origin(kind, src, journal, opts)
    _waiting(on_progress, f"listing {dst.label or dst.store.name}")
    try:
        # Filters judge the destination only for what sync --delete may delete.
        judged = opts.filter if kind == Kind.SYNC and opts.delete else EVERYTHING
        dst_excluded = await list_destination(
            journal, dst, retry=opts.retry, filter=judged, own_state=own_at_dst(opts)
        )
    except NotFound:
        raise
    except StoreError as exc:
        # Nothing is known to be at the destination: everything listed at the source remains.
        summary.left_objects, summary.left_bytes = summary.source_objects, summary.source_bytes
        summary.remaining_known = True
        summary.stopped = f"cannot list the destination {dst.label or dst.store.name}: {exc}"
        return
    if kind == Kind.SYNC and opts.delete:
        # Before the deletions are counted, listed (dry run) or done: never daulat's own.
        await spare_own_records(dst, journal, pair, summary, opts, trusted(opts, journal))
    # Planning, the safety checks and adoption (which reads what the destination holds).
    _waiting(on_progress, "planning")
    summary.planned_objects, summary.planned_bytes = journal.plan(pair, force=opts.force)
    # At most the plan remains (adoption below may take some out of it).
    summary.left_objects, summary.left_bytes = summary.planned_objects, summary.planned_bytes
    summary.remaining_known = True
    # A refused run changes nothing, not even the journal (adoption below records objects).
    await refuse_unsafe(kind, src, dst, journal, opts, pair, summary, dst_excluded, carry)
    prover = prover_for(opts)
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
                    keep=deletable(opts),
                )
            )
        return
    # Before anything is written: the run's manifest must be able to follow the destination's.
    await check_chain_before_writing(dst, journal, opts.signing, opts.retry)
    if opts.keep_name_key is not None:
        # Every refusal is behind: the name key the plan used is kept (locally and at the
        # destination) before anything is stored under it.
        await opts.keep_name_key()
    if carry is not None:
        summary.notes += await carry_origin(src, dst, carry, trusted(opts, journal), opts.retry)
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
    resumer = resumer_for(dst, journal, opts, summary.run_id)
    if resumer is not None and ledger is None:
        # Azure and GCS: the uploads daulat.transfer.uploads does not know of.
        summary.aborted_uploads += await resumer.clean_up(
            journal.is_planned, dst.prefix, opts.retry.call
        )
    executor = Executor(src, dst, journal, opts, pair, summary, on_progress, ledger)
    executor.as_stored = carry is not None
    executor.unproven = Unproven(frozenset(summary.unproven_restored), identities)
    executor.resumer = resumer
    if on_progress is not None:
        on_progress(executor.progress)  # the plan's counts, at 0 done, from now on
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
    if kind == Kind.RESTORE and records and summary.failed:
        # A plaintext copy a later signed run put there on purpose is not called forged.
        await explain_replaced(
            src, dst, journal, opts.signing.signers, opts.decrypt_with, summary, records
        )
    if kind == Kind.SYNC and opts.delete and not summary.failed:
        await delete_extraneous(dst, journal, pair, summary, opts)
    if kind.verifies:
        await verify_listed(
            src,
            dst,
            journal,
            pair,
            summary,
            whole=not opts.filter.active,
            own_state=own_at_dst(opts),
            kept=kept,
        )
        if kind == Kind.RESTORE and summary.unproven_restored:
            # Restored as asked, but nothing proves their origin: never counted as verified.
            # Those that failed (age files no identity opened) were not restored at all.
            failed = {k for k, _ in summary.failed}
            summary.unproven_restored = [k for k in summary.unproven_restored if k not in failed]
            summary.verified_objects = (summary.verified_objects or 0) - len(
                summary.unproven_restored
            )
    else:
        await list_destination(journal, dst, retry=opts.retry, own_state=own_at_dst(opts))
    # Every run that wrote leaves a signed manifest of the whole destination prefix; a restore
    # that restored nothing leaves none (its destination may be the user's own data).
    if kind != Kind.RESTORE or summary.copied_objects or summary.skipped_objects:
        await write_manifest(src, dst, journal, pair, opts, summary, carry)
    # Every write of this run has ended: temp files of earlier, killed runs can go.
    with contextlib.suppress(StoreError):
        await cleanup_temp(dst.store)


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
    executor = Executor(src, dst, book, opts, pair, summary, on_progress, ledger)
    executor.as_stored = as_stored
    await executor.run()
    return summary
