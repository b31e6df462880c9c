"""Copy, sync, exit and verify between configured stores.

:func:`run_transfer` is what the commands call: it resolves ``STORE[:PREFIX]`` addresses against
the configuration, opens the stores and the journal, runs the engine and closes everything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from daulat.auditing import audited
from daulat.config import Config, placement_of
from daulat.crypto import Identity, parse_recipients
from daulat.errors import AccessDenied, ConfigError
from daulat.stores import open_store
from daulat.transfer.engine import Endpoint, Kind, Options, Progress, Summary, transfer
from daulat.transfer.journal import Journal
from daulat.transfer.names import existing_name_key, name_key_for_run

if TYPE_CHECKING:
    from daulat.verify import VerifyReport

__all__ = [
    "Endpoint",
    "Kind",
    "Options",
    "Progress",
    "Summary",
    "open_endpoint",
    "run_transfer",
    "run_verify",
]


def open_endpoint(config: Config, spec: str) -> Endpoint:
    """``STORE`` or ``STORE:PREFIX`` → an Endpoint (store opened, no I/O yet)."""
    name, _, prefix = spec.partition(":")
    if not name:
        raise ConfigError(f"{spec!r}: expected STORE or STORE:PREFIX")
    cfg = config.store(name)
    placement = placement_of(cfg)
    norm = Endpoint.normalise(prefix)
    return Endpoint(
        store=open_store(cfg),
        prefix=norm,
        label=f"{name}:{norm}" if norm else name,
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
    (see :mod:`daulat.auditing`).

    The destination store's ``encrypt_to`` and ``encrypt_names`` apply unless ``options`` says
    otherwise. ``identities`` recover the destination's name key when this machine lacks it.
    A signal stops it with :class:`~daulat.errors.Interrupted` carrying the partial summary.
    """
    dry_run = options.dry_run if options is not None else False
    with audited(
        config.state_dir,
        kind.value,
        {"src": src_spec, "dst": dst_spec, "dry_run": dry_run},
        transfer_details,
    ) as audit:
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
        "left": summary.left_objects,
        "stopped": summary.stopped,
        "manifest": summary.manifest_key,
    }
    if summary.deleted is not None:
        details["deleted"] = summary.deleted
    elif summary.deleted_objects:  # a dry run counts what it would delete
        details["would_delete"] = summary.deleted_objects
    if summary.interrupted:
        details["interrupted"] = summary.interrupted
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
    dst_cfg = config.store(dst_spec.partition(":")[0])
    if not opts.encrypt_to and not opts.decrypt_with and dst_cfg.encrypt_to:
        opts = replace(opts, encrypt_to=parse_recipients(dst_cfg.encrypt_to))
    if opts.encrypt_to and dst_cfg.encrypt_names:
        opts = replace(opts, encrypt_names=True)
    if opts.encrypt_names and not opts.encrypt_to:
        raise ConfigError(
            "--encrypt-names needs --encrypt-to AGE_RECIPIENT (or encrypt_to on store "
            f"{dst_cfg.name!r}): names are protected only inside encrypted copies"
        )
    src = open_endpoint(config, src_spec)
    dst = open_endpoint(config, dst_spec)
    if src.store.name == dst.store.name and (
        src.prefix.startswith(dst.prefix) or dst.prefix.startswith(src.prefix)
    ):
        raise ConfigError(
            f"{src_spec!r} and {dst_spec!r} overlap: a store cannot be copied into itself"
        )
    try:
        if opts.encrypt_names and opts.name_key is None:
            key = await name_key_for_run(
                config.state_dir,
                dst,
                opts.encrypt_to,
                identities,
                dry_run=opts.dry_run,
                retry=opts.retry,
            )
            opts = replace(opts, name_key=key)
        with Journal.in_state_dir(config.state_dir) as journal:
            return await transfer(kind, src, dst, journal, opts, on_progress)
    finally:
        await src.store.close()
        await dst.store.close()


async def run_verify(
    config: Config,
    src_spec: str,
    dst_spec: str,
    *,
    full: bool = False,
    concurrency: int = 16,
    identities: Sequence[Identity] = (),
) -> VerifyReport:
    """Verify ``dst_spec`` against ``src_spec`` (see :mod:`daulat.verify`), audited."""
    with audited(
        config.state_dir, "verify", {"src": src_spec, "dst": dst_spec, "full": full}, verify_details
    ) as audit:
        report = await _run_verify(
            config, src_spec, dst_spec, full=full, concurrency=concurrency, identities=identities
        )
        audit.done(report, "ok" if report.ok else "differences")
    return report


def verify_details(report: VerifyReport) -> Mapping[str, object]:
    return {
        "ok": report.ok,
        "objects": report.objects,
        "verified": report.verified,
        "problems": len(report.problems),
        "stopped": report.stopped,
    }


async def _run_verify(
    config: Config,
    src_spec: str,
    dst_spec: str,
    *,
    full: bool = False,
    concurrency: int = 16,
    identities: Sequence[Identity] = (),
) -> VerifyReport:
    from daulat.verify import verify

    src = open_endpoint(config, src_spec)
    dst = open_endpoint(config, dst_spec)
    try:
        try:
            name_key = await existing_name_key(config.state_dir, dst, identities)
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
            )
    finally:
        await src.store.close()
        await dst.store.close()
