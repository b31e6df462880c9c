"""Copy, sync, exit and verify between configured stores.

:func:`run_transfer` is what the commands call: it resolves ``STORE[:PREFIX]`` addresses against
the configuration, opens the stores and the journal, runs the engine and closes everything.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from daulat.address import parse_address
from daulat.audit import audited
from daulat.config import Config, placement_of
from daulat.crypto import Identity, parse_recipients
from daulat.errors import AccessDenied, ConfigError, DaulatError, PlaintextOverCiphertext
from daulat.filters import EVERYTHING, Filter
from daulat.signing import (
    PublicKey,
    SigningKey,
    existing_local_key,
    load_signing_key,
    local_signing_key,
    signers_line,
)
from daulat.stores import open_store
from daulat.transfer.above import evidence_above
from daulat.transfer.adoption import proof_key
from daulat.transfer.dstlock import lock_destination, release
from daulat.transfer.engine import Progress, transfer
from daulat.transfer.journal import Journal
from daulat.transfer.keepout import OwnState, refuse_inside_state
from daulat.transfer.locations import Location, location_of
from daulat.transfer.model import Endpoint, Kind, Options, Summary
from daulat.transfer.names import (
    existing_name_key,
    has_protected_names,
    name_key_for_run,
)
from daulat.transfer.recipients import recipients_changed
from daulat.transfer.safety import (
    ciphertext_refusal,
    destination_space,
    local_name_keys,
    names_in_clear,
    refuse_overlap,
)

if TYPE_CHECKING:
    from daulat.transfer.verify import ContentChecker, VerifyReport

__all__ = [
    "Endpoint",
    "Kind",
    "Options",
    "Progress",
    "Summary",
    "open_endpoint",
    "run_transfer",
    "run_verify",
    "signing_key_of",
]


def signing_key_of(config: Config) -> tuple[SigningKey, str | None]:
    """The key this configuration signs manifests with, and a notice when restores elsewhere
    would not believe it (it is not pinned in ``signers``).

    ``signing_key`` from the config, else the state directory's own key (created, 0600, on
    first need).
    """
    missing = ""
    if config.signing_key is not None and config.signing_key.exists():
        key, where = load_signing_key(config.signing_key), str(config.signing_key)
        created = False
    else:
        if config.signing_key is not None:
            # A config copied to another machine without its key: that machine can still
            # restore and sign what it writes, with a key of its own.
            missing = f"signing_key {config.signing_key} is not on this machine: "
        key, created = local_signing_key(config.state_dir)
        where = f"the local key {config.state_dir / 'keys' / 'signing'}"
    if key.public in config.signers:
        return key, (f"{missing}signed with {where}" if missing else None)
    pin = signers_line([*config.signers, key.public])
    verb = "created and signed with" if created else "signed with"
    return key, (
        f"{missing}manifests {verb} {where} ({key.public.line}), which {config.path.name} does not pin: "
        f"restores believe only pinned signers; to pin it, put this line at the top of "
        f"{config.path}: {pin}"
    )


def missing_signing_key(config: Config) -> None:
    """Raise :class:`ConfigError` when ``signing_key`` names a file that does not exist.

    A run that writes a replica signs its manifest; with the configured key missing (a typo,
    a key not copied) it would sign with a key no configuration pins, and a restore elsewhere
    would refuse the replica. ``restore`` keeps signing with this machine's own key instead
    (:func:`signing_key_of`): a new machine restores with only daulat.toml and the identity."""
    key = config.signing_key
    if key is not None and not key.exists():
        raise ConfigError(
            f"{config.path}: field 'signing_key': {key} does not exist; put the key file there, "
            "correct the path, or remove the line to sign with this machine's own key"
        )


def _own_public_key(config: Config) -> PublicKey | None:
    if config.signing_key is not None and config.signing_key.exists():
        try:
            return load_signing_key(config.signing_key).public
        except DaulatError:
            return None
    return existing_local_key(config.state_dir)


def open_endpoint(config: Config, spec: str) -> Endpoint:
    """``STORE`` or ``STORE:PREFIX`` → an Endpoint (store opened, no I/O yet).

    The address is parsed by :func:`daulat.address.parse_address` (a prefix such as ``../x``
    is a :class:`ConfigError`)."""
    address = parse_address(spec)
    cfg = config.store(address.store)
    placement = placement_of(cfg)
    return Endpoint(
        store=open_store(cfg),
        prefix=address.prefix,
        label=address.label,
        describe={
            "provider": cfg.provider.value,
            "region": cfg.region,
            "country": placement.country,
        },
    )


async def run_transfer(
    config: Config,
    kind: Kind,
    src_spec: str,
    dst_spec: str,
    options: Options | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    *,
    identities: Sequence[Identity] = (),
) -> Summary:
    """Run one transfer between configured stores, recorded in the audit log however it ends
    (see :mod:`daulat.audit.recording`).

    The destination store's ``encrypt_to`` and ``encrypt_names`` apply unless ``options`` says
    otherwise. ``identities`` recover the destination's name key when this machine lacks it.

    Before anything is written the run may be refused (:class:`~daulat.errors.SafetyRefusal`):
    overlapping source and destination (by real location), and the checks of
    :mod:`daulat.transfer.safety` on the plan. A signal stops it with
    :class:`~daulat.errors.Interrupted` carrying the partial summary.
    """
    dry_run = options.dry_run if options is not None else False
    details: dict[str, object] = {"src": src_spec, "dst": dst_spec, "dry_run": dry_run}
    if options is not None and options.filter.active:
        details["filter"] = options.filter.describe()
    with audited(config.state_dir, kind.value, details, transfer_details) as audit:
        summary = await _run_transfer(
            config, kind, src_spec, dst_spec, options, on_progress, identities=identities
        )
        audit.done(summary, "ok" if summary.ok else "incomplete")
    return summary


def transfer_details(summary: Summary) -> Mapping[str, object]:
    """What the audit log keeps of a transfer."""
    details: dict[str, object] = {
        "run_id": summary.run_id,
        "ok": summary.ok,
        "dry_run": summary.dry_run,
        "encrypted": summary.encrypted,
        "names_protected": summary.names_protected,
        "objects": summary.source_objects,
        "bytes": summary.source_bytes,
        "copied": summary.copied_objects,
        "verified": summary.verified_objects,
        "failed": len(summary.failed),
        "refused": len(summary.refused),
        "left": summary.left_objects if summary.remaining_known else None,
        "stopped": summary.stopped,
        "manifest": summary.manifest_key,
        "unproven": len(summary.unproven),
        "unproven_restored": len(summary.unproven_restored),
        "provenance": summary.provenance,
    }
    if summary.deleted is not None:
        details["deleted"] = summary.deleted
    if summary.left_deletions:
        details["left_deletions"] = summary.left_deletions
    elif summary.deleted_objects:  # a dry run counts what it would delete
        details["would_delete"] = summary.deleted_objects
    if summary.interrupted:
        details["interrupted"] = summary.interrupted
    details.update(_filter_details(summary))
    return details


async def _run_transfer(
    config: Config,
    kind: Kind,
    src_spec: str,
    dst_spec: str,
    options: Options | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    *,
    identities: Sequence[Identity] = (),
) -> Summary:
    opts = options or Options()
    src_address, dst_address = parse_address(src_spec), parse_address(dst_spec)
    if kind != Kind.RESTORE:
        missing_signing_key(config)
    src_location, dst_location = await refuse_overlap(
        config,
        (src_address.store, src_address.prefix),
        (dst_address.store, dst_address.prefix),
    )
    # daulat's own keys, journal and audit log are never data (daulat.transfer.keepout).
    refuse_inside_state(config.state_dir, src_location, dst_location)
    if opts.own_state is None:
        opts = replace(opts, own_state=OwnState.of(config.state_dir, src_location, dst_location))
    # One writing run at a time into one place (daulat.transfer.dstlock); a dry run writes
    # nothing and takes no lock.
    lock = (
        None
        if opts.dry_run
        else lock_destination(config.state_dir, dst_location, dst_address.label or dst_spec)
    )
    try:
        return await _run_locked(
            config,
            kind,
            src_spec,
            dst_spec,
            opts,
            on_progress,
            identities=identities,
            dst_location=dst_location,
        )
    finally:
        if lock is not None:
            release(lock)


async def _run_locked(
    config: Config,
    kind: Kind,
    src_spec: str,
    dst_spec: str,
    opts: Options,
    on_progress: Callable[[Progress], None] | None,
    *,
    identities: Sequence[Identity],
    dst_location: Location,
) -> Summary:
    dst_address = parse_address(dst_spec)
    dst_cfg = config.store(dst_address.store)
    if (
        (opts.decrypt_with or kind == Kind.RESTORE)
        and not opts.allow_plaintext
        and (dst_cfg.encrypt_to or dst_cfg.encrypt_names)
    ):
        raise PlaintextOverCiphertext(
            f"store {dst_cfg.name!r} declares encrypt_to: restore would write decrypted objects "
            "there; pass --allow-plaintext to write them there anyway"
        )
    if not opts.store_paths:
        opts = replace(opts, store_paths=await destination_space(config, dst_location))
    notice: str | None = None
    signing = replace(
        opts.signing,
        signers=opts.signing.signers or config.signers,
        identities=opts.signing.identities or tuple(identities),
    )
    if not opts.dry_run and signing.key is None:
        own_key, notice = signing_key_of(config)
        signing = replace(signing, key=own_key)
    opts = replace(opts, signing=signing)
    if (
        not opts.encrypt_to
        and kind != Kind.RESTORE
        and not opts.decrypt_with
        and dst_cfg.encrypt_to
    ):
        opts = replace(opts, encrypt_to=parse_recipients(dst_cfg.encrypt_to))
    if opts.encrypt_to and dst_cfg.encrypt_names:
        opts = replace(opts, encrypt_names=True)
    if opts.encrypt_names and not opts.encrypt_to:
        raise ConfigError(
            "--encrypt-names needs --encrypt-to AGE_RECIPIENT (or encrypt_to on store "
            f"{dst_cfg.name!r}): names are protected only inside encrypted copies"
        )
    if opts.proof_key is None and not opts.dry_run:
        # Objects written carry a MAC under this key, so that a re-run after a crash adopts
        # what is complete at the destination instead of sending it again.
        opts = replace(opts, proof_key=proof_key(config.state_dir))
    src = open_endpoint(config, src_spec)
    dst = open_endpoint(config, dst_spec)
    try:
        if (
            not opts.encrypt_names
            and not opts.allow_plaintext
            and local_name_keys(config.state_dir, dst)
            and not await _copies_protected_names(kind, opts, src)
        ):
            raise names_in_clear(kind, dst, "this machine holds its name key")
        if opts.encrypt_names and opts.name_key is None:
            found = await name_key_for_run(
                config.state_dir,
                dst,
                opts.encrypt_to,
                identities,
                retry=opts.retry,
                signing_key=signing.key,
                trusted=signing.trusted(signing.key.public if signing.key else None),
            )
            # Kept by the engine once the run goes ahead: a refused run writes no key.
            keep = None if opts.dry_run else found.keep
            opts = replace(opts, name_key=found.key, keep_name_key=keep)
        with Journal.in_state_dir(config.state_dir) as journal:
            await _refuse_inside_encrypted(config, kind, opts, src, dst, dst_location, journal)
            changed = recipients_changed(kind, journal, dst, opts)
            if changed is not None:
                raise changed
            summary = await transfer(kind, src, dst, journal, opts, on_progress)
        if notice is not None and summary.manifest_key:  # only a run that signed one
            summary.notes.insert(0, notice)
        return summary
    finally:
        await src.store.close()
        await dst.store.close()


async def _refuse_inside_encrypted(
    config: Config,
    kind: Kind,
    opts: Options,
    src: Endpoint,
    dst: Endpoint,
    dst_location: Location,
    journal: Journal,
) -> None:
    """Plaintext (or real names) into a place that lies inside an encrypted (or name-protected)
    directory or bucket, above the destination store's own root (:mod:`daulat.transfer.above`;
    the engine's checks cover the store itself)."""
    if opts.allow_plaintext:
        return
    want_names = not opts.encrypt_names and not await _copies_protected_names(kind, opts, src)
    if opts.encrypt_to and not want_names:
        return
    found = await evidence_above(
        config,
        dst.store.name,
        dst_location,
        journal,
        want_ciphertext=not opts.encrypt_to,
        want_names=want_names,
    )
    if found.ciphertext:
        raise ciphertext_refusal(kind.value, dst, found.ciphertext, restore=kind == Kind.RESTORE)
    if found.names:
        raise names_in_clear(kind, dst, found.names)


async def _copies_protected_names(kind: Kind, opts: Options, src: Endpoint) -> bool:
    """The run copies a name-protected replica as stored (an onward copy): the names it writes
    are that replica's keyed hashes, not real names."""
    if kind == Kind.RESTORE or opts.decrypt_with or opts.encrypt_to:
        return False
    return await has_protected_names(src, opts.retry)


async def run_verify(
    config: Config,
    src_spec: str,
    dst_spec: str,
    *,
    full: bool = False,
    concurrency: int = 16,
    identities: Sequence[Identity] = (),
    filter: Filter = EVERYTHING,
    runner: object | None = None,
    identity_files: Sequence[str | os.PathLike[str]] = (),
) -> VerifyReport:
    """Verify ``dst_spec`` against ``src_spec`` (see :mod:`daulat.transfer.verify`), audited.

    ``filter`` selects the objects checked, by key relative to each side's prefix.

    ``runner``: the transfer runner of ``--engine`` (``Options.runner``); when it can check
    content elsewhere (a :class:`~daulat.transfer.verify.ContentChecker`, as the Ray engine
    can), ``full`` re-reads and hashes there, opening the identities from
    ``identity_files`` (the files ``identities`` were read from) itself."""
    details: dict[str, object] = {"src": src_spec, "dst": dst_spec, "full": full}
    if filter.active:
        details["filter"] = filter.describe()
    with audited(config.state_dir, "verify", details, verify_details) as audit:
        report = await _run_verify(
            config,
            src_spec,
            dst_spec,
            full=full,
            concurrency=concurrency,
            identities=identities,
            filter=filter,
            checker=_checker(runner),
            identity_files=tuple(os.fspath(f) for f in identity_files),
        )
        outcome = "ok" if report.ok else ("stopped" if report.stopped else "differences")
        audit.done(report, outcome)
    return report


def _checker(runner: object | None) -> ContentChecker | None:
    from daulat.transfer.verify import ContentChecker

    return runner if isinstance(runner, ContentChecker) else None


def verify_details(report: VerifyReport) -> Mapping[str, object]:
    details: dict[str, object] = {
        "ok": report.ok,
        "objects": report.objects,
        "verified": report.verified,
        "problems": len(report.problems),
        "stopped": report.stopped,
    }
    if report.stopped:
        details["unchecked"] = report.unchecked_objects
    details.update(_filter_details(report))
    return details


def _filter_details(result: Summary | VerifyReport) -> dict[str, object]:
    """What an audit entry says of a run's filter: nothing when the run had none."""
    if result.filter is None:
        return {}
    return {
        "filter": result.filter,
        "excluded_objects": result.excluded_objects,
        "excluded_bytes": result.excluded_bytes,
    }


async def _run_verify(
    config: Config,
    src_spec: str,
    dst_spec: str,
    *,
    full: bool = False,
    concurrency: int = 16,
    identities: Sequence[Identity] = (),
    filter: Filter = EVERYTHING,
    checker: ContentChecker | None = None,
    identity_files: Sequence[str] = (),
) -> VerifyReport:
    from daulat.transfer.verify import verify

    src = open_endpoint(config, src_spec)
    dst = open_endpoint(config, dst_spec)
    src_at, dst_at = parse_address(src_spec), parse_address(dst_spec)
    own_state = OwnState.of(
        config.state_dir,
        location_of(config.store(src_at.store), src_at.prefix),
        location_of(config.store(dst_at.store), dst_at.prefix),
    )
    own = _own_public_key(config)
    trusted = [*config.signers, *([own] if own is not None and own not in config.signers else [])]
    try:
        try:
            name_key = (
                None
                # An onward copy of a name-protected replica holds the replica's stored names.
                if await has_protected_names(src)
                else await existing_name_key(config.state_dir, dst, identities, trusted=trusted)
            )
        except AccessDenied:
            # verify meets the same refusal when it lists the destination, and reports it.
            name_key = None
        with Journal.in_state_dir(config.state_dir) as journal:
            return await verify(
                src,
                dst,
                journal,
                full=full,
                concurrency=concurrency,
                identities=identities,
                name_key=name_key,
                trusted=trusted,
                filter=filter,
                own_state=own_state,
                checker=checker,
                identity_files=identity_files,
            )
    finally:
        await src.store.close()
        await dst.store.close()
