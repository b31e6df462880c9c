"""The steps of a run around its copy, which need none of the executor's per-object state.

:mod:`daulat.transfer.engine` runs them in order (:func:`~daulat.transfer.engine.transfer`):
what the source listing kept out (:func:`kept_out`), the plan's safety refusals
(:func:`refuse_unsafe`), the keys whose manifests a run believes (:func:`trusted`), the
encrypted replica an onward copy carries along (:func:`onward_origin`), resumable uploads
(:func:`resumer_for`), the proofs objects carry (:func:`prover_for`), the check against a
fresh destination listing (:func:`verify_listed`) and the run's signed manifest
(:func:`write_manifest`).
"""

from __future__ import annotations

from daulat.errors import AccessDenied, SafetyRefusal, StoreError
from daulat.signing import PublicKey, existing_local_key
from daulat.stores.resumable import unwrap_resumable
from daulat.transfer.adoption import Prover
from daulat.transfer.deletion import deletable
from daulat.transfer.existing import Kept
from daulat.transfer.journal import Journal
from daulat.transfer.keepout import KeepOut
from daulat.transfer.listings import list_destination
from daulat.transfer.manifests import ProvenanceError, WrongIdentity
from daulat.transfer.model import Endpoint, Kind, Options, Summary
from daulat.transfer.onward import Carry, find_origin
from daulat.transfer.proof import write_run_manifest
from daulat.transfer.resume import Resumer
from daulat.transfer.safety import (
    count_deletions,
    filtered_delete_on_protected_names,
    plaintext_over_ciphertext,
    real_names_left,
    refusal_or_raise,
    too_many_deletions,
)
from daulat.transfer.verify import check_listed

# Errors that end the whole run cleanly rather than failing one object.
STOP_ERRORS = (AccessDenied, WrongIdentity)


def own_at_dst(opts: Options) -> str | None:
    """Where daulat's own state directory lies inside the destination (its key prefix relative
    to the destination's prefix), or None: nothing is ever written there as data."""
    return opts.own_state.dst if opts.own_state is not None else None


def kept_out(keep_out: KeepOut, src: Endpoint, summary: Summary) -> None:
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


async def refuse_unsafe(
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
    found = real_names_left(kind, opts, dst, journal)
    summary.refusal = refusal_or_raise(summary.refusal, found, opts.dry_run)
    if kind == Kind.SYNC and opts.delete:
        found = await filtered_delete_on_protected_names(opts, dst)
        summary.refusal = refusal_or_raise(summary.refusal, found, opts.dry_run)
        if found is not None:
            return  # a dry run: the filters cannot judge these keys, so list no deletions
        deletions = count_deletions(journal, pair, deletable(opts))
        dst_selected = journal.listing_totals("dst")[0] - dst_excluded
        if opts.dry_run:
            summary.deleted_objects = deletions  # what it would delete
        else:
            summary.left_deletions = deletions  # until each is done
        found = too_many_deletions(
            deletions, dst_selected, opts.max_delete, dst, filtered=opts.filter.active
        )
        summary.refusal = refusal_or_raise(summary.refusal, found, opts.dry_run)


def trusted(opts: Options, journal: Journal) -> list[PublicKey]:
    """The keys whose manifests a writing run believes: the pinned ones and its own."""
    own = opts.signing.key.public if opts.signing.key is not None else None
    return opts.signing.trusted(own or existing_local_key(journal.path.parent))


async def onward_origin(kind: Kind, src: Endpoint, journal: Journal, opts: Options) -> Carry | None:
    """The encrypted replica's manifest a run copying ``src`` as stored must carry along
    (:mod:`daulat.transfer.onward`); None when there is none, or the run decrypts or encrypts."""
    if kind == Kind.RESTORE or opts.decrypt_with or opts.encrypt_to:
        return None
    return await find_origin(
        src, journal, trusted(opts, journal), opts.signing.identities, opts.retry
    )


def resumer_for(dst: Endpoint, journal: Journal, opts: Options, run_id: int) -> Resumer | None:
    """Resumable uploads for large objects, where the destination can continue them and the
    copy is not encrypted (age ciphertext cannot be continued: daulat.transfer.resume)."""
    store = unwrap_resumable(dst.store)
    if store is None or opts.encrypt_to:
        return None
    return Resumer(journal, store, run_id, opts.codec_tag)


def prover_for(opts: Options, run_id: int | None = None) -> Prover | None:
    """``run_id``: the run that writes with it, named in its proofs (adoption.py)."""
    if opts.proof_key is None:
        return None
    return Prover(
        opts.proof_key, codec=opts.codec_tag, encrypting=bool(opts.encrypt_to), run_id=run_id
    )


async def write_manifest(
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
