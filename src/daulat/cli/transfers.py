"""Moving data: ``copy``, ``sync``, ``exit``, ``restore`` and ``verify``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from daulat.cli import _shared
from daulat.cli._shared import (
    AbortAgeOpt,
    AllowEmptySourceOpt,
    AllowPlaintextOpt,
    BwlimitOpt,
    ConcurrencyOpt,
    ConfigOpt,
    DryRunOpt,
    EncryptNamesOpt,
    EncryptOpt,
    Engine,
    EngineOpt,
    ExcludeOpt,
    ExitCode,
    FilterFromOpt,
    FilterRuleOpt,
    IdentityOpt,
    IncludeOpt,
    JsonOpt,
    MaxDeleteOpt,
    NameKeyIdentityOpt,
    QuietOpt,
    RayAddressOpt,
    ReencryptOpt,
    RequestTimeoutOpt,
    VerifyEngineOpt,
    WorkersOpt,
    _engine,
    _excluded_line,
    _filter,
    _human_bytes,
    _load,
    _options,
    _parse_rate,
    _print_json,
    _run,
    _verified_by,
    err,
    out,
)
from daulat.cli.summary import (
    _DryRunListing,
    _interrupted_note,
    _print_summary,
)
from daulat.errors import (
    Interrupted,
)
from daulat.plurals import plural
from daulat.terminal import printable, styled

# The engine is imported by the commands that run it (see daulat.cli._shared).
if TYPE_CHECKING:
    from daulat.config import Config
    from daulat.transfer import Kind, Options
    from daulat.transfer.engine import Runner


def _transfer_command(
    kind: Kind,
    src: str,
    dst: str,
    config: Path | None,
    as_json: bool,
    options: Options,
    identity: Path | None = None,
    quiet: bool = False,
    runner: Callable[[Config], Runner | None] | None = None,
) -> None:
    from daulat.audit import failures_audited
    from daulat.crypto import load_identities
    from daulat.feedback import Feedback
    from daulat.transfer import Kind, Summary, run_transfer

    cfg = _load(config)
    listing = _DryRunListing(as_json) if options.dry_run else None
    feedback = Feedback(err, quiet=quiet)
    try:
        # What fails before the run's own audit record (the identity file, the Ray cluster)
        # is recorded too, as the library's calls record it.
        details = {"src": src, "dst": dst, "dry_run": options.dry_run}
        with failures_audited(cfg.state_dir, kind.value, details):
            if runner is not None:
                options = replace(options, runner=runner(cfg))
            if listing is not None:
                options = replace(options, on_plan=listing)
            identities = load_identities(identity) if identity is not None else []
            if kind is Kind.RESTORE:
                options, identities = replace(options, decrypt_with=identities), []
            with feedback.transfer(f"{kind.value} {src} → {dst}") as update:
                summary = _run(
                    run_transfer(cfg, kind, src, dst, options, update, identities=identities)
                )
    except Interrupted as exc:
        if isinstance(exc.result, Summary):
            if as_json:
                _print_json(exc.result.to_json())
                err.print(_interrupted_note(exc.result))
            else:
                _print_summary(exc.result, kind, src, dst, options)
        raise
    if as_json and listing is not None and listing.streamed:
        listing.finish_json(summary)
    elif as_json:
        _print_json(summary.to_json())
    else:
        _print_summary(summary, kind, src, dst, options)
        if listing is not None:
            listing.print_human()
    if summary.refusal:
        err.print(f"a real run would be refused: {summary.refusal}", highlight=False, markup=False)
        raise ExitCode(2)
    if not summary.ok:
        raise ExitCode(1)


def copy(
    src: Annotated[str, typer.Argument(metavar="SRC[:PREFIX]")],
    dst: Annotated[str, typer.Argument(metavar="DST[:PREFIX]")],
    config: ConfigOpt = None,
    request_timeout: RequestTimeoutOpt = None,
    abort_uploads_older_than: AbortAgeOpt = None,
    as_json: JsonOpt = False,
    concurrency: ConcurrencyOpt = 64,
    bwlimit: BwlimitOpt = None,
    dry_run: DryRunOpt = False,
    encrypt_to: EncryptOpt = None,
    encrypt_names: EncryptNamesOpt = False,
    identity: NameKeyIdentityOpt = None,
    allow_plaintext: AllowPlaintextOpt = False,
    reencrypt: ReencryptOpt = False,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    filter_rule: FilterRuleOpt = None,
    filter_from: FilterFromOpt = None,
    quiet: QuietOpt = False,
    engine: EngineOpt = Engine.local,
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Copy objects that are missing or different at DST (filters: keys relative to SRC's
    prefix)."""
    from daulat.transfer import Kind

    opts = _options(
        concurrency,
        bwlimit,
        dry_run,
        encrypt_to,
        encrypt_names,
        allow_plaintext=allow_plaintext,
        reencrypt=reencrypt,
        filter=_filter(include, exclude, filter_rule, filter_from),
    )
    run_on = _engine(engine, ray_address, workers)
    _transfer_command(Kind.COPY, src, dst, config, as_json, opts, identity, quiet, run_on)


def sync(
    src: Annotated[str, typer.Argument(metavar="SRC[:PREFIX]")],
    dst: Annotated[str, typer.Argument(metavar="DST[:PREFIX]")],
    delete: Annotated[
        bool, typer.Option("--delete", help="Delete objects at DST that SRC does not have.")
    ] = False,
    config: ConfigOpt = None,
    request_timeout: RequestTimeoutOpt = None,
    abort_uploads_older_than: AbortAgeOpt = None,
    as_json: JsonOpt = False,
    concurrency: ConcurrencyOpt = 64,
    bwlimit: BwlimitOpt = None,
    dry_run: DryRunOpt = False,
    encrypt_to: EncryptOpt = None,
    encrypt_names: EncryptNamesOpt = False,
    identity: NameKeyIdentityOpt = None,
    max_delete: MaxDeleteOpt = None,
    allow_empty_source: AllowEmptySourceOpt = False,
    allow_plaintext: AllowPlaintextOpt = False,
    reencrypt: ReencryptOpt = False,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    filter_rule: FilterRuleOpt = None,
    filter_from: FilterFromOpt = None,
    quiet: QuietOpt = False,
    engine: EngineOpt = Engine.local,
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Mirror SRC to DST (with --delete, also remove what SRC no longer has).

    Filters apply to both sides (keys relative to each prefix): excluded objects are neither
    copied nor deleted.
    """
    from daulat.transfer import Kind
    from daulat.transfer.safety import DEFAULT_MAX_DELETE, DeleteLimit

    opts = _options(
        concurrency,
        bwlimit,
        dry_run,
        encrypt_to,
        encrypt_names,
        delete=delete,
        # '' is a mistake to report (exit 2), not a request for the default.
        max_delete=DeleteLimit.parse(max_delete) if max_delete is not None else DEFAULT_MAX_DELETE,
        allow_empty_source=allow_empty_source,
        allow_plaintext=allow_plaintext,
        reencrypt=reencrypt,
        filter=_filter(include, exclude, filter_rule, filter_from),
    )
    run_on = _engine(engine, ray_address, workers)
    _transfer_command(Kind.SYNC, src, dst, config, as_json, opts, identity, quiet, run_on)


def exit_(
    src: Annotated[str, typer.Argument(metavar="SRC[:PREFIX]")],
    dst: Annotated[str, typer.Argument(metavar="DST[:PREFIX]")],
    config: ConfigOpt = None,
    request_timeout: RequestTimeoutOpt = None,
    abort_uploads_older_than: AbortAgeOpt = None,
    as_json: JsonOpt = False,
    concurrency: ConcurrencyOpt = 64,
    bwlimit: BwlimitOpt = None,
    dry_run: DryRunOpt = False,
    encrypt_to: EncryptOpt = None,
    encrypt_names: EncryptNamesOpt = False,
    identity: NameKeyIdentityOpt = None,
    allow_empty_source: AllowEmptySourceOpt = False,
    allow_plaintext: AllowPlaintextOpt = False,
    reencrypt: ReencryptOpt = False,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    filter_rule: FilterRuleOpt = None,
    filter_from: FilterFromOpt = None,
    quiet: QuietOpt = False,
    engine: EngineOpt = Engine.local,
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Evacuate everything from SRC to DST and verify every object (exit 0 only if all are).

    With filters, "everything" is what they select (keys relative to SRC's prefix); the
    summary counts the rest as excluded.
    """
    from daulat.transfer import Kind

    opts = _options(
        concurrency,
        bwlimit,
        dry_run,
        encrypt_to,
        encrypt_names,
        allow_empty_source=allow_empty_source,
        allow_plaintext=allow_plaintext,
        reencrypt=reencrypt,
        filter=_filter(include, exclude, filter_rule, filter_from),
    )
    run_on = _engine(engine, ray_address, workers)
    _transfer_command(Kind.EXIT, src, dst, config, as_json, opts, identity, quiet, run_on)


def restore(
    src: Annotated[str, typer.Argument(metavar="SRC[:PREFIX]")],
    dst: Annotated[str, typer.Argument(metavar="DST[:PREFIX]")],
    identity: IdentityOpt = None,
    config: ConfigOpt = None,
    request_timeout: RequestTimeoutOpt = None,
    abort_uploads_older_than: AbortAgeOpt = None,
    as_json: JsonOpt = False,
    concurrency: ConcurrencyOpt = 64,
    bwlimit: BwlimitOpt = None,
    dry_run: DryRunOpt = False,
    allow_plaintext: AllowPlaintextOpt = False,
    allow_unsigned: Annotated[
        bool,
        typer.Option(
            "--allow-unsigned",
            help="Restore even when no manifest signed by a pinned signer proves where the "
            "objects come from (objects encrypted by other tools); the summary says so.",
        ),
    ] = False,
    allow_unproven: Annotated[
        bool,
        typer.Option(
            "--allow-unproven",
            help="Also restore objects the manifest does not list (their origin is not "
            "proven); the summary lists them.",
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace files that already exist at DST with other content (left alone and "
            "listed by default: they may hold changes made since).",
        ),
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Decrypt an encrypted replica back into plain objects (--identity), or copy a plain one
    back, checked against its signed manifest.

    Existing files at DST that differ from the replica's are left alone and listed unless
    --overwrite.
    """
    from daulat.transfer import Kind, Options
    from daulat.transfer.proof import ManifestSigning

    # A plain replica restores without a key; an encrypted one is refused once its manifest
    # is read (the library says so, naming --identity).
    opts = Options(
        concurrency=concurrency,
        bwlimit=_parse_rate(bwlimit),
        dry_run=dry_run,
        allow_plaintext=allow_plaintext,
        overwrite=overwrite,
        abort_uploads_older_than=_shared._abort_uploads_older_than,
        signing=ManifestSigning(allow_unsigned=allow_unsigned, allow_unproven=allow_unproven),
    )
    _transfer_command(Kind.RESTORE, src, dst, config, as_json, opts, identity=identity, quiet=quiet)


def verify(
    src: Annotated[str, typer.Argument(metavar="SRC[:PREFIX]")],
    dst: Annotated[str, typer.Argument(metavar="DST[:PREFIX]")],
    full: Annotated[
        bool,
        typer.Option("--full", help="Re-read and hash both sides instead of trusting records."),
    ] = False,
    config: ConfigOpt = None,
    request_timeout: RequestTimeoutOpt = None,
    as_json: JsonOpt = False,
    concurrency: ConcurrencyOpt = 16,
    identity: IdentityOpt = None,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    filter_rule: FilterRuleOpt = None,
    filter_from: FilterFromOpt = None,
    quiet: QuietOpt = False,
    engine: VerifyEngineOpt = Engine.local,
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Compare DST with SRC by content: recorded SHA-256 and size, or --full re-hashing.

    With filters only the objects they select are checked (keys relative to each prefix).
    """
    from daulat.audit import failures_audited
    from daulat.crypto import load_identities
    from daulat.feedback import Feedback
    from daulat.transfer import run_verify

    flt = _filter(include, exclude, filter_rule, filter_from)
    # Only --full reads object content, so only it moves to Ray workers (which open the
    # identity file at the same path themselves); listings and records stay here.
    run_on = _engine(engine, ray_address, workers)
    if engine == Engine.ray and not full:
        err.print(
            "note: --engine ray spreads only verify --full (which re-reads content); this "
            "verify compares listings and records in this process",
            markup=False,
            highlight=False,
        )
    cfg = _load(config)
    with (
        failures_audited(cfg.state_dir, "verify", {"src": src, "dst": dst, "full": full}),
        Feedback(err, quiet=quiet).waiting(f"verify {src} → {dst}"),
    ):
        ids = load_identities(identity) if identity is not None else []
        report = _run(
            run_verify(
                cfg,
                src,
                dst,
                full=full,
                concurrency=concurrency,
                identities=ids,
                filter=flt,
                runner=run_on(cfg) if full else None,
                identity_files=[identity] if identity is not None else [],
            )
        )
    if as_json:
        _print_json(report.to_json())
    else:
        mode = _verified_by(report.verified_by)
        head = f"verify {printable(src)} → {printable(dst)} ({mode}): "
        if report.stopped is None:
            out.print(
                f"{head}{plural(report.objects, 'object')}, {_human_bytes(report.bytes)}; verified "
                f"{report.verified:,}, problems {len(report.problems):,}"
            )
        else:
            # Stopped part-way: say what was never checked, not "0 objects ... problems 0".
            unchecked = (
                f"{report.unchecked_objects:,} not checked"
                if report.unchecked_objects is not None
                else "how many were not checked is unknown (the source listing did not finish: "
                f"{report.objects:,} listed)"
            )
            out.print(
                f"{head}STOPPED before it finished: {plural(report.objects, 'object')}, "
                f"{_human_bytes(report.bytes)} at the source; verified {report.verified:,}, "
                f"problems {len(report.problems):,}, {unchecked}"
            )
        if report.filter is not None:
            out.print(
                "  "
                + _excluded_line(report.excluded_objects, report.excluded_bytes, report.filter),
                markup=False,
                highlight=False,
            )
        for key in report.reserved[:20]:
            out.print(
                f"  reserved: {printable(repr(key))}: under the source's .daulat/, which daulat "
                "keeps for its manifests and keys at every destination; never copied, not compared",
                highlight=False,
                markup=False,
            )
        if report.reserved_objects > min(len(report.reserved), 20):
            more = report.reserved_objects - min(len(report.reserved), 20)
            out.print(f"  ... and {more:,} more reserved (see --json)", highlight=False)
        for key, reason in report.problems[:20]:
            out.print(f"  {printable(repr(key))}: {printable(reason)}")
        if len(report.problems) > 20:
            out.print(f"  ... and {len(report.problems) - 20:,} more (see --json)")
        if report.stopped:
            err.print(styled(("stopped:", "bold red"), " " + printable(report.stopped)))
    if not report.ok:
        raise ExitCode(1)
