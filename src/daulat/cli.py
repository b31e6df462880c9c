"""The ``daulat`` command: parse, call one library function, render.

Exit codes: 0 success, 1 a failure of the job itself (unreachable store, differences, violations),
2 usage or configuration errors. User errors print one clear message, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Coroutine
from dataclasses import asdict, replace
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from daulat import __version__
from daulat.auditing import audit_log, record
from daulat.config import STATE_DIR, Config, find_config, load_config
from daulat.crypto import (
    KeyFileError,
    Recipient,
    RecipientError,
    load_identities,
    new_identity,
    parse_recipients,
    recipient_of,
)
from daulat.drill import (
    drill_history,
    parse_bandwidth,
    parse_sample,
    render_drill,
    render_history,
    run_drill,
)
from daulat.errors import ConfigError, DaulatError
from daulat.inventory import StoreStatus, scan_store, store_statuses
from daulat.manifest import Manifest, ScanSummary
from daulat.policy import evaluate_policies, render_findings
from daulat.report import collect as collect_report
from daulat.report import render as render_report
from daulat.risk.register import TargetType
from daulat.risk.score import FORMULA
from daulat.risk.stores import store_risks
from daulat.scaffold import DemoData, write_config
from daulat.stores import open_store
from daulat.transfer import Kind, Options, Summary, run_transfer, run_verify
from daulat.transfer import Progress as TransferProgress
from daulat.transfer.uploads import DEFAULT_MAX_AGE

T = TypeVar("T")

app = typer.Typer(
    name="daulat",
    help="Know where your data lives and under whose law; keep a copy only you can read; "
    "leave any cloud provider with proof.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Path to daulat.toml (default: ./daulat.toml)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


class ExitCode(Exception):
    """Raised by commands to end with a given exit code after printing their output."""

    def __init__(self, code: int) -> None:
        self.code = code


# --request-timeout of the command being run (set by the option's callback, None: the config's).
_request_timeout: float | None = None


def _set_request_timeout(value: float | None) -> float | None:
    global _request_timeout
    _request_timeout = value
    return value


RequestTimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--request-timeout",
        metavar="SECONDS",
        min=0.001,
        help="Fail a request that makes no progress for this long (default: each store's "
        "request_timeout, 30 s).",
        callback=_set_request_timeout,
        expose_value=False,
    ),
]


# --abort-uploads-older-than of the command being run (set by the option's callback).
_abort_uploads_older_than: timedelta | None = DEFAULT_MAX_AGE
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _set_abort_age(value: str | None) -> str | None:
    global _abort_uploads_older_than
    if value is None:
        _abort_uploads_older_than = DEFAULT_MAX_AGE
        return value
    m = _AGE.match(value)
    if m is None:
        raise typer.BadParameter(f"{value!r} is not an age like 7d, 12h, 30m or 90s")
    _abort_uploads_older_than = timedelta(
        seconds=float(m.group(1)) * _AGE_UNITS[m.group(2).lower()]
    )
    return value


AbortAgeOpt = Annotated[
    str | None,
    typer.Option(
        "--abort-uploads-older-than",
        metavar="AGE",
        help="Unfinished multipart uploads the journal does not know are aborted only when "
        "older than this (7d, 12h, 30m, 90s) and on keys this run writes; default 7d.",
        callback=_set_abort_age,
        expose_value=False,
    ),
]


def _load(config: Path | None) -> Config:
    cfg = load_config(find_config(config))
    if _request_timeout is None:
        return cfg
    stores = {
        name: store.model_copy(update={"request_timeout": _request_timeout})
        for name, store in cfg.stores.items()
    }
    return replace(cfg, stores=stores)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _print_version(value: bool) -> None:
    if value:
        out.print(f"daulat {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Know where your data lives and under whose law; leave any provider with proof."""


@app.command()
def init(
    demo: Annotated[
        bool, typer.Option("--demo", help="Also create local demo stores with sample data.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing daulat.toml.")
    ] = False,
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to write daulat.toml.", show_default=False)
    ] = Path("."),
) -> None:
    """Write a commented daulat.toml (with --demo: local stores filled with sample data)."""
    result = write_config(directory, demo=demo, force=force)
    if isinstance(result, DemoData):
        out.print(f"wrote {result.config}")
        for name, path in result.stores.items():
            out.print(f"  store {name:<12} {path}")
        out.print(
            f"  sample data: {result.objects:,} objects, {_human_bytes(result.bytes)} in kpu-primary"
        )
    else:
        out.print(f"wrote {result}; edit it to describe your stores, then run `daulat stores`")


def _stores_table(rows: list[StoreStatus]) -> Table:
    table = Table(title="Stores")
    columns = ("store", "provider", "region", "country", "jurisdictions", "reachable")
    for col in (*columns, "objects", "size", "last scan"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r.name,
            r.provider,
            r.region or "-",
            r.country,
            ", ".join(r.jurisdictions),
            "yes" if r.reachable else f"[red]unreachable[/red]: {escape(r.problem or '')}",
            f"{r.objects:,}" if r.objects is not None else "not scanned",
            _human_bytes(r.bytes),
            r.last_scan or "-",
        )
    return table


@app.command()
def stores(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    request_timeout: RequestTimeoutOpt = None,
) -> None:
    """List configured stores: provider, region, country, jurisdictions, reachable, objects."""
    cfg = _load(config)
    with Manifest.in_state_dir(cfg.state_dir) as manifest:
        rows = _run(store_statuses(cfg, manifest))
    if as_json:
        out.print_json(json.dumps([asdict(r) for r in rows]))
    else:
        out.print(_stores_table(rows))
        for r in rows:
            if r.laws:
                out.print(f"  {r.name}: laws reaching {r.provider_name}: {'; '.join(r.laws)}")
    if not all(r.reachable for r in rows):
        raise ExitCode(1)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("objects"),
        TransferSpeedColumn(),
        TextColumn("{task.fields[rate]:,.0f} obj/s"),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
        transient=False,
    )


async def _scan_all(cfg: Config, names: list[str], manifest: Manifest) -> list[ScanSummary]:
    summaries = []
    with _progress() as progress:
        for name in names:
            store = open_store(cfg.store(name))
            task = progress.add_task(f"scan {name}", total=None, rate=0.0)
            start = time.monotonic()

            def update(n: int, size: int, task: Any = task, start: float = start) -> None:
                progress.update(task, completed=n, rate=n / max(time.monotonic() - start, 1e-6))

            try:
                summaries.append(await scan_store(store, manifest, update))
            finally:
                await store.close()
    return summaries


@app.command()
def scan(
    names: Annotated[
        list[str] | None,
        typer.Argument(metavar="[STORE]...", help="Stores to scan (default: all)."),
    ] = None,
    config: ConfigOpt = None,
    request_timeout: RequestTimeoutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List stores into the manifest: key, size, modified time, provider ETag; records changes."""
    cfg = _load(config)
    selected = names or list(cfg.stores)
    for name in selected:
        cfg.store(name)
    with Manifest.in_state_dir(cfg.state_dir) as manifest:
        summaries = _run(_scan_all(cfg, selected, manifest))
    for s in summaries:
        record(cfg.state_dir, "scan", {k: v for k, v in asdict(s).items() if k != "started"})
    if as_json:
        out.print_json(json.dumps([asdict(s) for s in summaries]))
        return
    for s in summaries:
        out.print(
            f"scanned {s.store}: {s.objects:,} objects, {_human_bytes(s.bytes)} "
            f"(+{s.added:,} added, ~{s.changed:,} changed, -{s.removed:,} removed) scan #{s.id}"
        )


@app.command()
def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Working directory for the tour.")
    ] = Path("daulat-demo-tour"),
) -> None:
    """Run the whole tour on local stores: init --demo, stores, scan."""
    from daulat.tour import run_tour

    run_tour(directory, out)


ConcurrencyOpt = Annotated[
    int, typer.Option("--concurrency", min=1, max=1024, help="Objects in flight at once.")
]
BwlimitOpt = Annotated[
    str | None,
    typer.Option("--bwlimit", help="Bandwidth cap in bytes/s; suffixes K, M, G (powers of 1024)."),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Plan only; change nothing.")]
EncryptOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--encrypt-to",
        metavar="AGE_RECIPIENT",
        help="Encrypt with age to this public key (repeatable); overrides the store's encrypt_to.",
    ),
]
IdentityOpt = Annotated[
    Path | None,
    typer.Option("--identity", "-i", metavar="FILE", help="age identity file (secret key)."),
]
EncryptNamesOpt = Annotated[
    bool,
    typer.Option(
        "--encrypt-names",
        help="Store objects under keyed hashes of their names; the real names are only in the "
        "encrypted manifest (needs --encrypt-to or the store's encrypt_to).",
    ),
]
NameKeyIdentityOpt = Annotated[
    Path | None,
    typer.Option(
        "--identity",
        "-i",
        metavar="FILE",
        help="age identity file, to recover the destination's name key (protected names) "
        "when this machine does not have it.",
    ),
]


def _parse_rate(text: str | None) -> float | None:
    if text is None:
        return None
    units = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
    t = text.strip().upper().removesuffix("B").removesuffix("/S")
    suffix = t[-1] if t and t[-1] in units else ""
    try:
        value = float(t[: len(t) - len(suffix)]) * units[suffix]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a rate like 50M or 1048576") from None
    if value <= 0:
        raise typer.BadParameter("the bandwidth limit must be positive")
    return value


def _recipients(values: list[str] | None) -> list[Recipient]:
    return parse_recipients(values) if values else []


def _options(
    concurrency: int,
    bwlimit: str | None,
    dry_run: bool,
    encrypt_to: list[str] | None,
    encrypt_names: bool = False,
    **more: Any,
) -> Options:
    return Options(
        concurrency=concurrency,
        bwlimit=_parse_rate(bwlimit),
        dry_run=dry_run,
        encrypt_to=_recipients(encrypt_to),
        encrypt_names=encrypt_names,
        abort_uploads_older_than=_abort_uploads_older_than,
        **more,
    )


def _transfer_command(
    kind: Kind,
    src: str,
    dst: str,
    config: Path | None,
    as_json: bool,
    options: Options,
    identity: Path | None = None,
) -> None:
    cfg = _load(config)
    identities = load_identities(identity) if identity is not None else []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[objects]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, disable=not err.is_terminal) as bar:
        task = bar.add_task(f"{kind.value} {src} → {dst}", total=None, objects="")

        def update(p: TransferProgress) -> None:
            bar.update(
                task,
                total=p.planned_bytes or None,
                completed=p.done_bytes,
                objects=f"{p.done_objects:,}/{p.planned_objects:,} objects"
                + (f", {p.failed} failed" if p.failed else "")
                + (f", {p.retries} retries" if p.retries else ""),
            )

        summary = _run(run_transfer(cfg, kind, src, dst, options, update, identities=identities))
    record(
        cfg.state_dir,
        kind.value,
        {
            "src": src,
            "dst": dst,
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
        },
    )
    if as_json:
        out.print_json(json.dumps(summary.to_json(), default=str))
    else:
        _print_summary(summary, kind, src, dst, options)
    if not summary.ok:
        raise ExitCode(1)


def _print_summary(s: Summary, kind: Kind, src: str, dst: str, options: Options) -> None:
    head = f"{kind.value} {src} → {dst}"
    if s.dry_run:
        out.print(
            f"{head} (dry run): {s.source_objects:,} objects ({_human_bytes(s.source_bytes)}) at "
            f"the source; would copy {s.planned_objects:,} ({_human_bytes(s.planned_bytes)}), "
            f"skip {s.skipped_objects:,} already copied"
            + (f", delete {s.deleted_objects:,}" if s.deleted_objects else "")
        )
        return
    rate = _human_bytes(int(s.throughput_bps)) + "/s"
    out.print(
        f"{head}: {s.source_objects:,} objects, {_human_bytes(s.source_bytes)} at the source; "
        f"{s.duration_s:.1f} s, {rate}"
    )
    parts = [
        f"copied {s.copied_objects:,} ({_human_bytes(s.copied_bytes)})",
        f"skipped {s.skipped_objects:,}",
    ]
    if s.verified_objects is not None:
        parts.append(f"verified {s.verified_objects:,}")
    if kind == Kind.SYNC and options.delete:
        parts.append(f"deleted {s.deleted_objects:,}")
    parts += [
        f"failed {len(s.failed):,}",
        f"refused {len(s.refused):,}",
        f"left {s.left_objects:,} ({_human_bytes(s.left_bytes)})",
    ]
    if s.retries:
        parts.append(f"retries {s.retries:,}")
    out.print("  " + ", ".join(parts))
    for label, rows in (("failed", s.failed), ("refused", s.refused), ("unverified", s.unverified)):
        for key, reason in rows[:20]:
            out.print(f"  {label}: {key!r}: {reason}", highlight=False)
        if len(rows) > 20:
            out.print(f"  ... and {len(rows) - 20:,} more {label} (see --json)")
    if s.names_protected:
        out.print("  names protected: objects are stored under keyed hashes of their names")
    if s.manifest_key:
        out.print(f"  manifest of the copy: {dst.split(':')[0]}:{s.manifest_key}")
    if s.manifest_error:
        err.print(
            f"  the manifest could not be written at the destination: {escape(s.manifest_error)}"
        )
    if s.stopped and "cannot decrypt" in s.stopped:
        err.print(
            f"[bold red]stopped:[/bold red] {escape(s.stopped)}\n"
            "  Nothing was written with the wrong key. Run again with the identity file whose "
            f"recipient the data was encrypted to: daulat {kind.value} {src} {dst} --identity FILE",
            highlight=False,
        )
    elif s.stopped:
        err.print(
            f"[bold red]stopped:[/bold red] {escape(s.stopped)}\n"
            f"  {s.left_objects:,} objects ({_human_bytes(s.left_bytes)}) remain to copy; "
            "nothing already copied is lost.\n"
            f"  Once access is back, resume with: daulat {kind.value} {src} {dst}",
            highlight=False,
        )
    elif s.ok:
        detail = {
            Kind.EXIT: ": every object verified",
            Kind.RESTORE: ": every object decrypted and verified"
            + (" against the source manifest" if s.checked_against_manifest else " by age"),
        }.get(kind, "")
        out.print("  [green]complete[/green]" + detail)
    else:
        err.print(
            f"[yellow]incomplete[/yellow]: run the same command again to retry what is left: "
            f"daulat {kind.value} {src} {dst}",
            highlight=False,
        )


@app.command()
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
) -> None:
    """Copy objects that are missing or different at DST."""
    opts = _options(concurrency, bwlimit, dry_run, encrypt_to, encrypt_names)
    _transfer_command(Kind.COPY, src, dst, config, as_json, opts, identity)


@app.command()
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
) -> None:
    """Mirror SRC to DST (with --delete, also remove what SRC no longer has)."""
    opts = _options(concurrency, bwlimit, dry_run, encrypt_to, encrypt_names, delete=delete)
    _transfer_command(Kind.SYNC, src, dst, config, as_json, opts, identity)


@app.command(name="exit")
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
) -> None:
    """Evacuate everything from SRC to DST and verify every object (exit 0 only if all are)."""
    opts = _options(concurrency, bwlimit, dry_run, encrypt_to, encrypt_names)
    _transfer_command(Kind.EXIT, src, dst, config, as_json, opts, identity)


@app.command()
def restore(
    src: Annotated[str, typer.Argument(metavar="SRC[:PREFIX]")],
    dst: Annotated[str, typer.Argument(metavar="DST[:PREFIX]")],
    identity: IdentityOpt = None,
    config: ConfigOpt = None,
    request_timeout: RequestTimeoutOpt = None,
    abort_uploads_older_than: AbortAgeOpt = None,
    as_json: JsonOpt = False,
    concurrency: ConcurrencyOpt = 64,
    dry_run: DryRunOpt = False,
) -> None:
    """Decrypt an encrypted replica back into plain objects, checked against its manifest."""
    if identity is None:
        raise typer.BadParameter("restore needs --identity FILE (the age secret key)")
    opts = Options(
        concurrency=concurrency,
        dry_run=dry_run,
        decrypt_with=load_identities(identity),
        abort_uploads_older_than=_abort_uploads_older_than,
    )
    _transfer_command(Kind.RESTORE, src, dst, config, as_json, opts)


keys_app = typer.Typer(help="age identities (secret keys) and recipients (public keys).")
app.add_typer(keys_app, name="keys")


@keys_app.command("new")
def keys_new(
    out_file: Annotated[
        Path, typer.Option("--out", "-o", help="Where to write the identity (created 0600).")
    ] = Path("daulat-identity.txt"),
) -> None:
    """Create an age identity file (mode 0600) and print its recipient (public key)."""
    recipient = new_identity(out_file)
    try:
        state_dir = _load(None).state_dir
    except ConfigError:
        state_dir = Path.cwd() / STATE_DIR
    record(state_dir, "keys.new", {"recipient": recipient, "file": str(out_file.resolve())})
    err.print(
        f"wrote {out_file} (mode 0600). Keep it safe and offline: without it the encrypted copies "
        "cannot be read by anyone, including you.",
        highlight=False,
    )
    out.print(recipient, highlight=False)


@keys_app.command("show")
def keys_show(file: Annotated[Path, typer.Argument(help="An age identity file.")]) -> None:
    """Print the recipient (public key) of an identity file."""
    out.print(recipient_of(file), highlight=False)


@app.command()
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
) -> None:
    """Compare DST with SRC by content: recorded SHA-256 and size, or --full re-hashing."""
    cfg = _load(config)
    ids = load_identities(identity) if identity is not None else []
    report = _run(run_verify(cfg, src, dst, full=full, concurrency=concurrency, identities=ids))
    record(
        cfg.state_dir,
        "verify",
        {
            "src": src,
            "dst": dst,
            "full": full,
            "ok": report.ok,
            "objects": report.objects,
            "verified": report.verified,
            "problems": len(report.problems),
        },
    )
    if as_json:
        out.print_json(json.dumps(report.to_json()))
    else:
        mode = "full (re-read and hashed)" if full else "recorded hashes and destination listing"
        out.print(
            f"verify {src} → {dst} ({mode}): {report.objects:,} objects, "
            f"{_human_bytes(report.bytes)}; verified {report.verified:,}, "
            f"problems {len(report.problems):,}"
        )
        for key, reason in report.problems[:20]:
            out.print(f"  {key!r}: {reason}", highlight=False)
        if len(report.problems) > 20:
            out.print(f"  ... and {len(report.problems) - 20:,} more (see --json)")
        if report.stopped:
            err.print(f"[bold red]stopped:[/bold red] {escape(report.stopped)}", highlight=False)
    if not report.ok:
        raise ExitCode(1)


@app.command()
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
    cfg = _load(config)
    rows = store_risks(cfg, country=country.upper() if country else None, sector=sector)
    if as_json:
        out.print_json(json.dumps([r.to_json() for r in rows], default=str))
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
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    head: Annotated[
        str | None,
        typer.Option("--head", help="A published head hash the log must contain."),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Check the hash chain: any edited, removed or reordered entry is reported (exit 1)."""
    cfg = _load(config)
    result = audit_log(cfg.state_dir).verify(head)
    (out if result.ok else err).print(result.summary(), highlight=False, markup=False)
    if not result.ok:
        raise ExitCode(1)


@audit_app.command("show")
def audit_show(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Print the audit log's entries."""
    cfg = _load(config)
    entries = [e.to_dict() for e in audit_log(cfg.state_dir).entries()]
    if as_json:
        out.print_json(json.dumps(entries))
        return
    for e in entries:
        out.print(
            f"{e['seq']:>5} {e['time']} {e['actor']} {e['operation']} "
            f"{json.dumps(e['details'], ensure_ascii=False)}",
            highlight=False,
            markup=False,
        )


@app.command()
def drill(
    src: Annotated[str | None, typer.Argument(metavar="SRC[:PREFIX]")] = None,
    dst: Annotated[str | None, typer.Argument(metavar="DST")] = None,
    sample: Annotated[
        str | None,
        typer.Option("--sample", help="Objects to sample: a count (500) or a share (5%)."),
    ] = None,
    link: Annotated[
        str | None,
        typer.Option("--link", help="What-if projection: link bandwidth, e.g. 10Gbit/s."),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="What-if projection: machines in parallel.")
    ] = 1,
    concurrency: ConcurrencyOpt = 64,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for the random sample.")] = None,
    history: Annotated[
        bool, typer.Option("--history", help="Show past drills against the real exits after them.")
    ] = False,
    encrypt_to: EncryptOpt = None,
    config: ConfigOpt = None,
    request_timeout: RequestTimeoutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure a sample copy and predict how long a full exit of SRC to DST would take."""
    cfg = _load(config)
    if history:
        rows = drill_history(cfg)
        if as_json:
            out.print_json(json.dumps([r.to_json() for r in rows], default=str))
        else:
            render_history(rows, out)
        return
    if src is None or dst is None:
        raise typer.BadParameter("give SRC and DST, or --history")
    result = _run(
        run_drill(
            cfg,
            src,
            dst,
            sample=parse_sample(sample) if sample else None,
            link_bps=parse_bandwidth(link) if link else None,
            workers=workers,
            concurrency=concurrency,
            seed=seed,
            encrypt_to=_recipients(encrypt_to),
            on_event=None if as_json else (lambda m: err.print(m, highlight=False, markup=False)),
        )
    )
    record(
        cfg.state_dir,
        "drill",
        {
            "src": src,
            "dst": dst,
            "drill": result.id,
            "sampled_objects": result.sampled_objects,
            "predicted_hours": round(result.predicted_hours, 4),
        },
    )
    if as_json:
        out.print_json(json.dumps(result.to_json(), default=str))
    else:
        render_drill(result, out)
    if not result.ok:
        raise ExitCode(1)


@app.command()
def check(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Rules that cannot be evaluated yet fail too.")
    ] = False,
) -> None:
    """Evaluate the policies in daulat.toml; exit 1 on any violation (unknown is not pass)."""
    cfg = _load(config)
    result = evaluate_policies(cfg, strict=strict)
    record(
        cfg.state_dir,
        "check",
        {
            "status": str(result.status),
            "exit_code": result.exit_code,
            "findings": len(result.findings),
            "failed": sum(1 for f in result.findings if str(f.status) == "fail"),
        },
    )
    if as_json:
        out.print_json(json.dumps(result.to_json(), default=str))
    else:
        render_findings(result, out)
    if result.exit_code:
        raise ExitCode(result.exit_code)


def _policies_json(cfg: Config) -> dict[str, Any] | None:
    return evaluate_policies(cfg).to_json() if cfg.raw_policies else None


def _drills_json(cfg: Config) -> list[dict[str, Any]]:
    return [r.to_json() for r in drill_history(cfg)]


class ReportFormat(StrEnum):
    HTML = "html"
    JSON = "json"


@app.command()
def report(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the report.")
    ] = Path("daulat-report.html"),
    fmt: Annotated[
        ReportFormat, typer.Option("--format", help="html or json.")
    ] = ReportFormat.HTML,
    config: ConfigOpt = None,
) -> None:
    """Write the transparency report: one self-contained HTML file (or JSON) that opens offline."""
    cfg = _load(config)
    data = collect_report(cfg, policies=_policies_json, drills=_drills_json)
    if fmt == ReportFormat.JSON:
        text = json.dumps(data.to_json(), indent=2, default=str)
    else:
        text = render_report(data)
    output.write_text(text, encoding="utf-8")
    record(
        cfg.state_dir,
        "report",
        {"file": str(output.resolve()), "format": fmt.value, "audit_head": data.audit.head_hash},
    )
    out.print(f"wrote {output} ({len(text.encode()) / 2**20:.1f} MiB)", highlight=False)


def _fail(message: str, code: int) -> int:
    err.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False)
    return code


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (for tests and :func:`main`)."""
    try:
        app(args=argv, prog_name="daulat", standalone_mode=False)
    except ExitCode as exc:
        return exc.code
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        return _fail("aborted", 130)
    except typer.TyperException as exc:
        # Usage errors (bad option, missing argument): typer prints them like click does.
        show = getattr(exc, "show", None)
        if show is not None:
            show(file=sys.stderr)
        else:
            _fail(str(exc), 2)
        return 2
    except (ConfigError, RecipientError, KeyFileError) as exc:
        return _fail(str(exc), 2)
    except DaulatError as exc:
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    return 0


def main() -> None:
    code = run()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter shutdown: obstore's runtime threads can abort the process (exit 134) while
    # Python finalises, which would make the exit code lie. Everything is flushed and closed here.
    os._exit(code)
