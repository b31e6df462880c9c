"""Keys, the audit log, risk, policies, the report and cleaning up: ``keys``, ``audit``, ``risk``,
``check``, ``report`` and ``clean``.
"""

from __future__ import annotations

import contextlib
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from daulat import interrupts
from daulat.cli import _shared
from daulat.cli._shared import (
    ConfigOpt,
    DryRunOpt,
    ExitCode,
    JsonOpt,
    _human_bytes,
    _load,
    _print_json,
    _run,
    err,
    out,
)
from daulat.errors import (
    ConfigError,
)
from daulat.risk.targets import TargetType
from daulat.terminal import json_text, printable

# What each command needs of the library is imported where it runs (see daulat.cli._shared).

keys_app = typer.Typer(help="age identities (secret keys) and recipients (public keys).")


@keys_app.command("new")
def keys_new(
    out_file: Annotated[
        Path, typer.Option("--out", "-o", help="Where to write the identity (created 0600).")
    ] = Path("daulat-identity.txt"),
    config: ConfigOpt = None,
    no_config: Annotated[
        bool,
        typer.Option("--no-config", help="Do not add the signing key to daulat.toml."),
    ] = False,
) -> None:
    """Create an age identity (FILE) and a signing key (FILE.sign), both mode 0600.

    Prints the recipient (public key) on stdout and the signing public key on stderr. When a
    daulat.toml is in use, pins the signing key there (signers, signing_key) unless --no-config.
    """
    from daulat.config import find_config
    from daulat.newkeys import new_keys

    config_path: Path | None = None
    if not no_config:
        try:
            config_path = find_config(_shared._config_path(config))
        except ConfigError:
            if _shared._config_path(config) is not None:
                raise
    interrupts.begin()
    made = new_keys(out_file, config_path)
    sign_file, public, pinned = made.signing_file, made.signing_public, made.pinned
    err.print(
        f"wrote {out_file} (mode 0600). Keep it safe and offline: without it the encrypted copies "
        "cannot be read by anyone, including you.",
        highlight=False,
        markup=False,
    )
    err.print(
        f"wrote {sign_file} (mode 0600), the key that signs manifests; its public key: "
        f"{public.line}",
        highlight=False,
        markup=False,
    )
    if config_path is not None and pinned is not None:
        err.print(
            f"pinned it in {config_path}: signers"
            + (" (added)" if pinned.added_signer else " (already there)")
            + f", signing_key = {pinned.signing_key!r}"
            + (f" (was {pinned.replaced_signing_key!r})" if pinned.replaced_signing_key else ""),
            highlight=False,
            markup=False,
        )
        for key in pinned.added_also:
            err.print(
                f"also pinned this state directory's own signing key {key.fingerprint} "
                f"({made.local_key}), which signed the manifests written "
                "before: they stay believed",
                highlight=False,
                markup=False,
            )
    else:
        err.print(
            "no daulat.toml updated: to sign with it and believe its signatures, add at its top "
            f'level: signers = ["{public.line}"] and signing_key = "{sign_file}"',
            highlight=False,
            markup=False,
        )
    out.print(made.recipient, highlight=False)


@keys_app.command("show")
def keys_show(
    file: Annotated[Path, typer.Argument(help="An age identity file or a FILE.sign key.")],
) -> None:
    """Print the public key of an identity file (its recipient) or of a signing key."""
    from daulat.crypto import recipient_of
    from daulat.signing import public_key_of

    head = b""
    with contextlib.suppress(OSError), file.open("rb") as fh:
        head = fh.read(64)
    if head.lstrip().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
        out.print(public_key_of(file).line, highlight=False)
        return
    out.print(recipient_of(file), highlight=False)


def risk(
    country: Annotated[
        str | None, typer.Option("--country", help="Your users' country (ISO code).")
    ] = None,
    sector: Annotated[
        TargetType | None, typer.Option("--sector", help="Your kind of organisation.")
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Exposure of each store: whose law reaches it and what its provider did to others."""
    from daulat.providers import ISO_3166_ALPHA2
    from daulat.risk.score import FORMULA
    from daulat.risk.stores import store_risks

    if country is not None and country.strip().upper() not in ISO_3166_ALPHA2:
        raise typer.BadParameter(
            f"{country!r} is not an ISO 3166-1 alpha-2 country code such as ID or DE",
            param_hint="'--country'",
        )
    cfg = _load(config)
    rows = store_risks(cfg, country=country.strip().upper() if country else None, sector=sector)
    if as_json:
        _print_json([r.to_json() for r in rows])
        return
    for r in rows:
        out.rule(f"{r.store}: {r.provider_name}, data in {r.data_country}")
        out.print(
            f"  home jurisdiction {r.home_jurisdiction}; laws that can reach the data: "
            f"{', '.join(r.jurisdictions)}",
            highlight=False,
        )
        for law in r.laws:
            out.print(f"    {law['name']} ({law['citation']}) {law['source']}", highlight=False)
        if r.exposure is None:
            out.print("  no provider stands between you and this data: no cut-off events apply")
            continue
        by_action = ", ".join(f"{k} {v}" for k, v in sorted(r.counts("action").items()))
        by_trigger = ", ".join(f"{k} {v}" for k, v in sorted(r.counts("trigger").items()))
        out.print(f"  {len(r.events)} recorded restriction events: {by_action}", highlight=False)
        out.print(f"  by trigger: {by_trigger}", highlight=False)
        if r.notice_days:
            out.print(f"  notice customers got (days): {r.notice_days}", highlight=False)
        if r.events:
            e = r.events[-1]
            out.print(f"  most recent: {e.date} {e.summary}", highlight=False)
        for line in r.exposure.explain().splitlines():
            out.print("  " + line, highlight=False, markup=False)
    out.print("\nThe score's formula (the points add up; nothing is hidden):", highlight=False)
    out.print(FORMULA, highlight=False, markup=False)


audit_app = typer.Typer(help="The tamper-evident audit log of state-changing operations.")


@audit_app.command("verify")
def audit_verify(
    head: Annotated[
        str | None,
        typer.Option("--head", help="A published head hash the log must contain."),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Check the hash chain: any edited, removed or reordered entry is reported (exit 1)."""
    from daulat.audit import audit_log
    from daulat.audit.continuity import verify_log

    if head is not None and not _is_sha256(head):
        raise typer.BadParameter(
            f"{head!r} is not a head hash: give the 64 hexadecimal digits a report shows",
            param_hint="'--head'",
        )
    cfg = _load(config)
    # Also against the state it last verified at: a log cut short is still a valid chain.
    result = verify_log(audit_log(cfg.state_dir), head)
    (out if result.ok else err).print(result.summary())
    if not result.ok:
        raise ExitCode(1)


@audit_app.command("restart")
def audit_restart(
    reason: Annotated[
        str | None,
        typer.Option("--reason", help="Why the old log is gone (recorded in the new log)."),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """After a real loss: start a new audit log whose first entry names the old one's head.

    Only for a log that is missing or does not verify (exit 2 otherwise). The old file is
    renamed aside (audit.jsonl.lost-TIME), never deleted; `audit verify` then checks the new
    log, and `audit verify --head` the old head against any copy kept elsewhere.
    """
    from daulat.audit import audit_log
    from daulat.audit.continuity import restart

    cfg = _load(config)
    entry, aside = restart(audit_log(cfg.state_dir), reason)
    head = entry.details.get("previous_head_hash")
    out.print(
        f"started a new audit log: entry 0 records the restart, naming the old head "
        f"{head if head else '(unknown: no verified state was kept)'}"
    )
    if aside is not None:
        out.print(f"the old log is kept as {aside}")


@audit_app.command("show")
def audit_show(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Print the audit log's entries."""
    from daulat.audit import audit_log

    cfg = _load(config)
    entries = [e.to_dict() for e in audit_log(cfg.state_dir).entries()]
    if as_json:
        _print_json(entries)
        return
    for e in entries:
        # The details as JSON on one line: exact, with any control character escaped.
        out.print(
            f"{e['seq']:>5} {e['time']} {printable(str(e['actor']))} "
            f"{printable(str(e['operation']))} {json_text(e['details'], indent=None)}"
        )


def check(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Rules that cannot be evaluated yet fail too.")
    ] = False,
) -> None:
    """Evaluate the policies in daulat.toml; exit 1 on any violation (unknown is not pass)."""
    from daulat.policy import check_policies, render_findings

    cfg = _load(config)
    result = check_policies(cfg, strict=strict)
    if as_json:
        _print_json(result.to_json())
    else:
        render_findings(result, out)
    if result.exit_code:
        raise ExitCode(result.exit_code)


class ReportFormat(StrEnum):
    HTML = "html"
    JSON = "json"


def report(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the report.")
    ] = Path("daulat-report.html"),
    fmt: Annotated[
        ReportFormat, typer.Option("--format", help="html or json.")
    ] = ReportFormat.HTML,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace the output file even if it is not a daulat report (never the config, "
            "a key file, a symbolic link or anything in .daulat/).",
        ),
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Write the transparency report: one self-contained HTML file (or JSON) that opens offline.

    An existing file is replaced only if it is a daulat report (or with --force)."""
    from daulat.report import write_report
    from daulat.report.write import check_output

    # Before loading anything, a wrong -o fails at once; whether an existing file may be
    # replaced is decided once the config (whose file and keys are protected) is known.
    check_output(output, force=True)
    cfg = _load(config)
    written = write_report(cfg, output, "json" if fmt == ReportFormat.JSON else "html", force=force)
    out.print(f"wrote {printable(str(output))} ({written.size / 2**20:.1f} MiB)")


def _is_sha256(text: str) -> bool:
    value = text.strip().lower()
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def clean(
    store: Annotated[str, typer.Argument(metavar="STORE")],
    include_resumable: Annotated[
        bool,
        typer.Option(
            "--include-resumable",
            help="Also abort the unfinished uploads of large objects that a later run would "
            "resume (S3 multipart uploads, GCS sessions, Azure blocks); what was uploaded is "
            "lost. Kept by default.",
        ),
    ] = False,
    dry_run: DryRunOpt = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove daulat's own leftovers at STORE: temp files, unfinished uploads it recorded,
    drill scratch copies. Nothing another application wrote is touched."""
    from daulat.cleaning import clean_store

    cfg = _load(config)
    report = _run(clean_store(cfg, store, include_resumable=include_resumable, dry_run=dry_run))
    if as_json:
        _print_json(report.to_json())
    else:
        remove, abort = ("would remove", "would abort") if dry_run else ("removed", "aborted")
        out.print(
            f"clean {store}{' (dry run)' if dry_run else ''}: {remove} {report.temp_files:,} "
            f"temp file(s) ({_human_bytes(report.temp_bytes)}); {abort} "
            f"{report.uploads_aborted:,} unfinished upload(s) daulat had started; {remove} "
            f"{len(report.drill_scratch_removed):,} drill scratch cop(ies)"
        )
        if report.resumable_kept:
            out.print(
                f"  kept {report.resumable_kept:,} upload(s) a later run resumes "
                "(--include-resumable aborts them too)"
            )
        if report.uploads_left:
            out.print(
                f"  left {report.uploads_left:,} upload(s) that could not be discarded without "
                "touching another writer's data"
            )
        if dry_run:
            for line in report.uploads:
                out.print(f"  {line}", markup=False)
        for problem in report.drill_scratch_problems:
            err.print(f"  {problem}")
    if not report.ok:
        raise ExitCode(1)
