"""The ``daulat`` command: parse, call one library function, render.

Exit codes: 0 success, 1 a failure of the job itself (unreachable store, differences, violations),
2 usage or configuration errors (and unusable local state), 130 when SIGINT and 143 when
SIGTERM stopped the run. User errors print one clear message, never a traceback.

Everything printed for people goes through :mod:`daulat.terminal`: names, keys and providers'
messages are data, never markup or terminal control; ``--json`` output is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import logging
import os
import re
import shlex
import signal
import sqlite3
import sys
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table
from rich.text import Text

from daulat import __version__, interrupts
from daulat.address import store_only
from daulat.audit import AuditLogError, audit_log
from daulat.census.imported import scan_from_inventory
from daulat.census.sharded import DEFAULT_SHARDS
from daulat.config import Config, find_config, load_config
from daulat.crypto import (
    KeyFileError,
    Recipient,
    RecipientError,
    load_identities,
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
from daulat.errors import (
    ConfigError,
    DaulatError,
    Interrupted,
    ManifestError,
    SafetyRefusal,
)
from daulat.feedback import Feedback, human_bytes
from daulat.filters import Filter, build_filter
from daulat.inventory import Manifest, ScanResults, StoreStatus, scan_stores, store_statuses
from daulat.listing import Entry, iso_utc
from daulat.listing import ls as list_store
from daulat.listing import size as size_store
from daulat.newkeys import new_keys
from daulat.plan import make_plan, parse_bytes, parse_count, parse_hours, render_plan
from daulat.policy import check_policies, render_findings
from daulat.providers import ISO_3166_ALPHA2
from daulat.report import write_report
from daulat.report.write import check_output
from daulat.risk.register import TargetType
from daulat.risk.score import FORMULA
from daulat.risk.stores import store_risks
from daulat.scaffold import DemoData, write_config
from daulat.signing import public_key_of
from daulat.terminal import SafeConsole, json_text, printable, styled
from daulat.transfer import Kind, Options, Summary, run_transfer, run_verify
from daulat.transfer.engine import Runner
from daulat.transfer.model import VERIFIED_BY_LISTING
from daulat.transfer.proof import ManifestSigning, retry_would_help
from daulat.transfer.safety import DEFAULT_MAX_DELETE, DeleteLimit, PlannedChanges
from daulat.transfer.uploads import DEFAULT_MAX_AGE

T = TypeVar("T")

app = typer.Typer(
    name="daulat",
    help="Know where your data lives and under whose law; keep a copy only you can read; "
    "leave any cloud provider with proof.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
out = SafeConsole(soft_wrap=True)
err = SafeConsole(stderr=True, soft_wrap=True)
# The command line as typed, for "resume with: daulat ..." after an interrupt.
_argv: list[str] = []

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Path to daulat.toml (default: ./daulat.toml)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Show no progress (results and errors only).")
]


# rclone-style filters (daulat.filters), for ls, size and every command that reads objects.
IncludeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--include",
        metavar="PATTERN",
        help="Only keys matching this glob (repeatable; everything else is excluded).",
    ),
]
ExcludeOpt = Annotated[
    list[str] | None,
    typer.Option("--exclude", metavar="PATTERN", help="Leave out keys matching this glob."),
]
FilterRuleOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--filter",
        metavar="RULE",
        help="A rule '+ PATTERN' or '- PATTERN' (repeatable, checked in order).",
    ),
]
FilterFromOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--filter-from",
        metavar="FILE",
        help="Read '+ PATTERN' / '- PATTERN' / '!' rules from FILE ('-': standard input).",
    ),
]


def _filter(
    include: list[str] | None,
    exclude: list[str] | None,
    rules: list[str] | None,
    files: list[Path] | None,
) -> Filter:
    """The filter the options describe; its warnings go to stderr."""
    result = build_filter(
        include=include or (),
        exclude=exclude or (),
        filter_rules=rules or (),
        filter_from=files or (),
    )
    for warning in result.warnings:
        err.print(f"warning: {warning}", markup=False, highlight=False, emoji=False)
    return result


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
    return load_config(find_config(config)).with_request_timeout(_request_timeout)


def _run(
    coro: Coroutine[Any, Any, T],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> T:
    # SIGINT/SIGTERM cancel the run cleanly and raise Interrupted (see daulat.interrupts).
    return interrupts.run(coro, loop_factory=loop_factory)


_human_bytes = human_bytes


def _print_json(value: Any) -> None:
    """Exact JSON on stdout (control and bidi characters as \\u escapes, see terminal.py)."""
    sys.stdout.write(json_text(value) + "\n")
    sys.stdout.flush()


def _resume_command() -> str:
    return printable(shlex.join(["daulat", *_argv]))


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
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"--dir {directory} is not a directory")
    interrupts.begin()
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
            "yes"
            if r.reachable
            else styled(("unreachable", "red"), ": " + printable(r.problem or "")),
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
    from daulat.gateway.standing import describe, store_standing

    cfg = _load(config)
    with Manifest.in_state_dir(cfg.state_dir) as manifest:
        rows = _run(store_statuses(cfg, manifest))
    standing = store_standing(cfg.state_dir)
    if as_json:
        _print_json(
            [
                {**asdict(r), "gateway": s.to_json() if (s := standing.get(r.name)) else None}
                for r in rows
            ]
        )
    else:
        out.print(_stores_table(rows))
        for r in rows:
            if r.laws:
                out.print(f"  {r.name}: laws reaching {r.provider_name}: {'; '.join(r.laws)}")
            for note in r.notes:
                out.print(f"  {r.name}: {note}")
        for r in rows:
            if (s := standing.get(r.name)) is not None:
                line = "  " + describe(r.name, s)
                out.print(styled((line, "red")) if s.refused else styled(line))
    if not all(r.reachable for r in rows):
        raise ExitCode(1)


@app.command()
def scan(
    names: Annotated[
        list[str] | None,
        typer.Argument(metavar="[STORE]...", help="Stores to scan (default: all)."),
    ] = None,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    filter_rule: FilterRuleOpt = None,
    filter_from: FilterFromOpt = None,
    config: ConfigOpt = None,
    request_timeout: RequestTimeoutOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    shards: Annotated[
        int,
        typer.Option(
            "--shards",
            min=1,
            help="Listings in flight at once, each over its own part of the key space "
            "(1: one listing). Same result either way.",
        ),
    ] = DEFAULT_SHARDS,
    from_inventory: Annotated[
        str | None,
        typer.Option(
            "--from-inventory",
            metavar="URL",
            help="Read STORE from the provider's inventory report instead of listing it: "
            "an S3 Inventory manifest.json or an Azure Blob Inventory <rule>-manifest.json "
            "(s3://BUCKET/KEY, az://CONTAINER/PATH, STORE:PATH or a local path).",
        ),
    ] = None,
) -> None:
    """List stores into the manifest: key, size, modified time, provider ETag; records changes.

    Every store is scanned even when some cannot be; those are reported at the end (exit 1).
    With filters (keys relative to the store's root) only the selected objects are recorded
    and nothing is marked removed. With --from-inventory one store is recorded from its
    provider's inventory report, as a complete scan.
    """
    flt = _filter(include, exclude, filter_rule, filter_from)
    cfg = _load(config)
    selected = names or list(cfg.stores)
    for name in selected:
        cfg.store(store_only(name, "scan"))
    feedback = Feedback(err, quiet=quiet)
    if from_inventory is not None:
        if not names or len(names) != 1:
            raise ConfigError("--from-inventory reads one store's report: give exactly one STORE")
        if flt.active:
            raise ConfigError("--from-inventory records the whole report: leave out filters")

    async def scan_all() -> ScanResults:
        with feedback.scanning() as show, Manifest.in_state_dir(cfg.state_dir) as manifest:
            if from_inventory is not None:
                name = selected[0]
                summary = await scan_from_inventory(
                    cfg, name, manifest, from_inventory, lambda n, size: show(name, n, size)
                )
                return ScanResults(summaries=[summary])
            return await scan_stores(
                cfg,
                selected,
                manifest,
                lambda name: lambda n, size: show(name, n, size),
                filter=flt,
                shards=shards,
            )

    results = _run(scan_all())
    if as_json:
        _print_json(
            [asdict(s) for s in results.summaries] + [f.to_json() for f in results.failures]
        )
    else:
        for s in results.summaries:
            out.print(
                f"scanned {s.store}: {s.objects:,} objects, {_human_bytes(s.bytes)} "
                f"(+{s.added:,} added, ~{s.changed:,} changed, -{s.removed:,} removed) "
                f"scan #{s.id}"
            )
            if s.filter is not None:
                out.print(
                    f"  {_excluded_line(s.excluded_objects, s.excluded_bytes, s.filter)}; "
                    "a filtered scan marks nothing removed",
                    markup=False,
                    highlight=False,
                )
        for f in results.failures:
            err.print(styled(("could not scan", "bold red"), f" {f.store}: ", printable(f.error)))
    if not results.ok:
        raise ExitCode(1)


@app.command()
def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Working directory for the tour.")
    ] = Path("daulat-demo-tour"),
) -> None:
    """Run the whole tour on local stores: init --demo, stores, scan, drill, exit, verify,
    keys, check and report."""
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


class Engine(StrEnum):
    local = "local"
    ray = "ray"


EngineOpt = Annotated[
    Engine,
    typer.Option(
        "--engine",
        help="Where objects are copied: this process (local), or shards on a Ray cluster "
        "(ray; needs pip install 'daulat[ray]').",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        metavar="ADDR",
        help="With --engine ray: the cluster's address (default: RAY_ADDRESS, else a local Ray "
        "started for the run and stopped after it).",
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        max=100_000,
        help="With --engine ray: shards in flight at once, each with --concurrency objects "
        "and its own --bwlimit (default: the cluster's CPUs).",
    ),
]


def _engine(
    engine: Engine, address: str | None, workers: int | None
) -> Callable[[Config], Runner | None]:
    """The runner for ``--engine`` (checked now: without Ray, one line and exit 2)."""
    if engine != Engine.ray:
        if address is not None or workers is not None:
            raise typer.BadParameter("--ray-address and --workers need --engine ray")
        return lambda _cfg: None
    from daulat.scale.cluster import require_ray

    require_ray()

    def runner(cfg: Config) -> Runner:
        from daulat.scale.driver import RayRunner

        return RayRunner(cfg, address=address, workers=workers)

    return runner
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
AllowPlaintextOpt = Annotated[
    bool,
    typer.Option(
        "--allow-plaintext",
        help="Write unencrypted objects (or real names) even where the destination holds "
        "daulat-encrypted objects (or protected names), replacing them.",
    ),
]
ReencryptOpt = Annotated[
    bool,
    typer.Option(
        "--reencrypt",
        help="Write age ciphertext to the given recipients even where this machine's journal "
        "says the destination was encrypted to other recipients (refused by default: the old "
        "identity could no longer restore what is rewritten).",
    ),
]
AllowEmptySourceOpt = Annotated[
    bool,
    typer.Option(
        "--allow-empty-source",
        help="Go on when the source lists no objects (refused by default: with --delete or "
        "exit that is most often a typo).",
    ),
]
MaxDeleteOpt = Annotated[
    str | None,
    typer.Option(
        "--max-delete",
        metavar="N|N%",
        help="With --delete: refuse, before copying or deleting anything, when more than N "
        f"objects (or N% of the destination's) would be deleted. Default {DEFAULT_MAX_DELETE}.",
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


# What a human dry run shows of each list; --json has them whole.
DRY_RUN_SHOWN = 20


class _DryRunListing:
    """Receives a dry run's plan: with --json streams every key to stdout as the start of the
    JSON object (the summary's fields follow), otherwise keeps the first few to print."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        # The real stdout: while the progress bar is live, rich sends sys.stdout to its console
        # (stderr), which would split the JSON document.
        self.stdout = sys.stdout
        self.streamed = False
        self.copies: list[tuple[str, int]] = []
        self.deletions: list[tuple[str, int]] = []
        self.copy_objects = 0
        self.delete_objects = 0

    def __call__(self, plan: PlannedChanges) -> None:
        self.copy_objects, self.delete_objects = plan.copy_objects, plan.delete_objects
        if not self.as_json:
            self.copies = list(itertools.islice(plan.copies(), DRY_RUN_SHOWN))
            self.deletions = list(itertools.islice(plan.deletions(), DRY_RUN_SHOWN))
            return
        write = self.stdout.write
        for name, rows in (("would_copy", plan.copies()), ("would_delete", plan.deletions())):
            write(("{" if name == "would_copy" else ", ") + json.dumps(name) + ": [")
            for i, (key, size) in enumerate(rows):
                write((",\n  " if i else "\n  ") + json.dumps({"key": key, "size": size}))
            write("]")
        self.streamed = True

    def finish_json(self, summary: Summary) -> None:
        """The summary's fields after the streamed lists, closing the JSON object."""
        rest = json.dumps(summary.to_json(), default=str, indent=2)
        self.stdout.write(",\n" + rest[1:].lstrip("\n") + "\n")
        self.stdout.flush()

    def print_human(self) -> None:
        for label, rows, total in (
            ("would copy", self.copies, self.copy_objects),
            ("would delete", self.deletions, self.delete_objects),
        ):
            if not total:
                continue
            out.print(f"  {label} {total:,} objects:", highlight=False)
            for key, size in rows:
                out.print(f"    {key!r} ({_human_bytes(size)})", highlight=False, markup=False)
            if total > len(rows):
                out.print(f"    ... and {total - len(rows):,} more (see --json)", highlight=False)


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
    cfg = _load(config)
    if runner is not None:
        options = replace(options, runner=runner(cfg))
    listing = _DryRunListing(as_json) if options.dry_run else None
    if listing is not None:
        options = replace(options, on_plan=listing)
    identities = load_identities(identity) if identity is not None else []
    feedback = Feedback(err, quiet=quiet)
    try:
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


def _remaining(s: Summary, what: str = "remain", noun: str = "object(s)") -> str:
    """How much is left, or that nobody knows yet (stopped before the listing finished)."""
    if s.remaining_known:
        deletions = (
            f", and {s.left_deletions:,} planned deletion(s) not done" if s.left_deletions else ""
        )
        return f"{s.left_objects:,} {noun} ({_human_bytes(s.left_bytes)}) {what}{deletions}"
    return (
        f"the listing did not finish ({s.listed_objects:,} source object(s), "
        f"{_human_bytes(s.listed_bytes)} listed so far): how many {what} is unknown"
    )


def _interrupted_note(s: Summary) -> Text:
    return styled(
        ("interrupted", "bold red"),
        f" by {s.interrupted}: the journal holds every object finished so far, and nothing "
        f"partial is visible as done.\n  {_remaining(s)}; resume with: {_resume_command()}",
    )


def _excluded_line(objects: int, size: int, rules: list[str]) -> str:
    """One line on what filters left out (names in rules are escaped)."""
    return printable(
        f"excluded by filters: {objects:,} objects ({_human_bytes(size)}); rules: "
        + "; ".join(rules)
    )


def _verified_by(what: str) -> str:
    """What "verified" meant, for people: the listing form says what it cannot see."""
    if what == VERIFIED_BY_LISTING:
        return f"{what} (content not re-read: verify --full re-reads and hashes it)"
    return what


def _print_summary(s: Summary, kind: Kind, src: str, dst: str, options: Options) -> None:
    head = f"{kind.value} {printable(src)} → {printable(dst)}"
    if s.dry_run and not s.interrupted:
        out.print(
            f"{head} (dry run): {s.source_objects:,} objects ({_human_bytes(s.source_bytes)}) at "
            f"the source; would copy {s.planned_objects:,} ({_human_bytes(s.planned_bytes)}), "
            f"skip {s.skipped_objects:,} already copied"
            + (f", delete {s.deleted_objects:,}" if s.deleted_objects else "")
        )
        if s.filter is not None:
            out.print(
                "  " + _excluded_line(s.excluded_objects, s.excluded_bytes, s.filter),
                markup=False,
                highlight=False,
            )
        return
    rate = _human_bytes(int(s.throughput_bps)) + "/s"
    at_source = (
        f"{s.source_objects:,} objects, {_human_bytes(s.source_bytes)} at the source"
        if s.remaining_known
        else f"the listing did not finish ({s.listed_objects:,} source objects listed)"
    )
    out.print(f"{head}: {at_source}; {s.duration_s:.1f} s, {rate}")
    parts = [
        f"copied {s.copied_objects:,} ({_human_bytes(s.copied_bytes)})",
        f"skipped {s.skipped_objects:,}",
    ]
    if s.verified_objects is not None:
        parts.append(f"verified {s.verified_objects:,}")
    if kind == Kind.SYNC and options.delete:
        parts.append(f"deleted {s.deleted_objects:,}")
        if s.left_deletions:
            parts.append(f"not deleted {s.left_deletions:,}")
    parts += [
        f"failed {len(s.failed):,}",
        f"refused {len(s.refused):,}",
        f"left {s.left_objects:,} ({_human_bytes(s.left_bytes)})"
        if s.remaining_known
        else "left unknown (the listing did not finish)",
    ]
    if s.retries:
        parts.append(f"retries {s.retries:,}")
    out.print("  " + ", ".join(parts))
    if s.remaining_known:
        out.print(f"  verified by: {_verified_by(s.verified_by)}", highlight=False, markup=False)
    if s.filter is not None:
        out.print(
            "  " + _excluded_line(s.excluded_objects, s.excluded_bytes, s.filter),
            markup=False,
            highlight=False,
        )
    for label, rows in (("failed", s.failed), ("refused", s.refused), ("unverified", s.unverified)):
        for key, reason in rows[:20]:
            out.print(f"  {label}: {printable(repr(key))}: {printable(reason)}")
        if len(rows) > 20:
            out.print(f"  ... and {len(rows) - 20:,} more {label} (see --json)")
    for key in s.reserved[:20]:
        out.print(
            f"  reserved: {printable(repr(key))}: under .daulat/, which daulat keeps for its "
            "manifests and keys at every destination; not copied",
            highlight=False,
            markup=False,
        )
    if s.reserved_objects > min(len(s.reserved), 20):
        out.print(f"  ... and {s.reserved_objects - min(len(s.reserved), 20):,} more reserved")
    for key, reason in s.unproven[:20]:
        out.print(f"  unproven: {key!r}: {reason}", highlight=False, markup=False)
    if len(s.unproven) > 20:
        out.print(f"  ... and {len(s.unproven) - 20:,} more unproven (see --json)")
    for key in s.unproven_restored[:20]:
        out.print(
            f"  unproven, restored anyway: {key!r}: not listed in the manifest",
            highlight=False,
            markup=False,
        )
    if s.provenance:
        out.print(f"  origin: {s.provenance}", highlight=False, markup=False)
    if s.names_protected:
        out.print("  names protected: objects are stored under keyed hashes of their names")
    if s.manifest_key:
        out.print(
            f"  manifest of the copy: {printable(dst.split(':')[0])}:{printable(s.manifest_key)}"
        )
    if s.manifest_error:
        err.print(
            "  the manifest could not be written at the destination: " + printable(s.manifest_error)
        )
    for note in s.notes:
        err.print(f"  note: {note}")
    if s.interrupted:
        err.print(_interrupted_note(s))
    elif s.stopped and "cannot decrypt" in s.stopped:
        err.print(
            styled(
                ("stopped:", "bold red"),
                f" {printable(s.stopped)}\n"
                "  Nothing was written with the wrong key. Run again with the identity file whose "
                f"recipient the data was encrypted to: daulat {kind.value} {printable(src)} "
                f"{printable(dst)} --identity FILE",
            )
        )
    elif s.stopped:
        err.print(
            styled(
                ("stopped:", "bold red"),
                f" {printable(s.stopped)}\n"
                f"  {_remaining(s, 'remain to copy', 'objects')}; nothing already copied is "
                "lost.\n"
                f"  Once access is back, resume with: {_resume_command()}",
            )
        )
    elif s.ok:
        detail = {
            Kind.EXIT: ": every object the filters select verified"
            if s.filter is not None
            else ": every object verified",
            Kind.RESTORE: ": every object decrypted and verified"
            + (" against the source manifest" if s.checked_against_manifest else " by age")
            + ("; origin NOT proven" if (s.provenance or "").startswith("origin not") else "")
            + (
                f"; {len(s.unproven_restored):,} unproven object(s) restored anyway"
                if s.unproven_restored
                else ""
            ),
        }.get(kind, "")
        out.print(styled("  ", ("complete", "green"), detail))
    elif s.reserved_objects and not (
        s.failed or s.refused or s.left_objects or s.unverified or s.unproven
    ):
        err.print(
            styled(
                ("incomplete", "yellow"),
                f": {s.reserved_objects:,} object(s) ({_human_bytes(s.reserved_bytes)}) under "
                f"the source's .daulat/ were not copied (listed above): daulat reserves .daulat/ "
                "at every destination for its own manifests and keys. Move or rename them at "
                f"the source (outside .daulat/) and run again: {_resume_command()}",
            )
        )
    elif s.unproven and not (s.failed or s.refused or s.left_objects or s.unverified):
        err.print(
            styled(
                ("incomplete", "yellow"),
                f": {len(s.unproven):,} object(s) at {src} are not listed in its signed manifest "
                "and were not restored (they may have been planted); --allow-unproven restores "
                "them anyway",
            )
        )
    elif not retry_would_help(s):
        # Refused, forged or damaged objects stay so: a rerun would only repeat this. Say
        # which of these it is: a plain copy has no signed manifest to blame.
        why = []
        if s.refused:
            why.append(
                f"{printable(dst.split(':')[0])} cannot hold the names refused above (rename "
                "them at the source, or store them under keyed hashes with --encrypt-to "
                "AGE_RECIPIENT --encrypt-names)"
            )
        if s.failed and s.checked_against_manifest:
            why.append(
                "the objects failed above are not what the signed manifest says (forged, "
                "damaged or withheld at the source)"
            )
        elif s.failed:
            why.append("the objects failed above are damaged at the source")
        err.print(
            styled(
                ("incomplete", "yellow"),
                ": "
                + "; ".join(why or ["the objects listed above cannot be copied as they are"])
                + "; running the same command again will not change that"
                + (
                    f". {len(s.unproven):,} object(s) not listed in the manifest were not "
                    "restored; --allow-unproven restores them anyway"
                    if s.unproven
                    else ""
                ),
            )
        )
    else:
        err.print(
            styled(
                ("incomplete", "yellow"),
                f": run the same command again to retry what is left: {_resume_command()}",
            )
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
    quiet: QuietOpt = False,
) -> None:
    """Decrypt an encrypted replica back into plain objects, checked against its signed
    manifest."""
    if identity is None:
        raise typer.BadParameter("restore needs --identity FILE (the age secret key)")
    opts = Options(
        concurrency=concurrency,
        bwlimit=_parse_rate(bwlimit),
        dry_run=dry_run,
        decrypt_with=load_identities(identity),
        allow_plaintext=allow_plaintext,
        abort_uploads_older_than=_abort_uploads_older_than,
        signing=ManifestSigning(allow_unsigned=allow_unsigned, allow_unproven=allow_unproven),
    )
    _transfer_command(Kind.RESTORE, src, dst, config, as_json, opts, quiet=quiet)


keys_app = typer.Typer(help="age identities (secret keys) and recipients (public keys).")
app.add_typer(keys_app, name="keys")


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
    config_path: Path | None = None
    if not no_config:
        try:
            config_path = find_config(config)
        except ConfigError:
            if config is not None:
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
    head = b""
    with contextlib.suppress(OSError), file.open("rb") as fh:
        head = fh.read(64)
    if head.lstrip().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
        out.print(public_key_of(file).line, highlight=False)
        return
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
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    filter_rule: FilterRuleOpt = None,
    filter_from: FilterFromOpt = None,
    quiet: QuietOpt = False,
    engine: EngineOpt = Engine.local,
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Compare DST with SRC by content: recorded SHA-256 and size, or --full re-hashing.

    With filters only the objects they select are checked (keys relative to each prefix).
    """
    flt = _filter(include, exclude, filter_rule, filter_from)
    # Verification reads object content only with --full; it runs in this process whatever
    # the engine (checked all the same, so that a missing Ray is said before anything runs).
    _engine(engine, ray_address, workers)
    cfg = _load(config)
    ids = load_identities(identity) if identity is not None else []
    with Feedback(err, quiet=quiet).waiting(f"verify {src} → {dst}"):
        report = _run(
            run_verify(
                cfg, src, dst, full=full, concurrency=concurrency, identities=ids, filter=flt
            )
        )
    if as_json:
        _print_json(report.to_json())
    else:
        mode = _verified_by(report.verified_by)
        head = f"verify {printable(src)} → {printable(dst)} ({mode}): "
        if report.stopped is None:
            out.print(
                f"{head}{report.objects:,} objects, {_human_bytes(report.bytes)}; verified "
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
                f"{head}STOPPED before it finished: {report.objects:,} objects, "
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
        for key, reason in report.problems[:20]:
            out.print(f"  {printable(repr(key))}: {printable(reason)}")
        if len(report.problems) > 20:
            out.print(f"  ... and {len(report.problems) - 20:,} more (see --json)")
        if report.stopped:
            err.print(styled(("stopped:", "bold red"), " " + printable(report.stopped)))
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
    if head is not None and not _is_sha256(head):
        raise typer.BadParameter(
            f"{head!r} is not a head hash: give the 64 hexadecimal digits a report shows",
            param_hint="'--head'",
        )
    cfg = _load(config)
    result = audit_log(cfg.state_dir).verify(head)
    (out if result.ok else err).print(result.summary())
    if not result.ok:
        raise ExitCode(1)


@audit_app.command("show")
def audit_show(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Print the audit log's entries."""
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
        typer.Option(
            "--link", help="What-if projection: each worker's link bandwidth, e.g. 10Gbit/s."
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers", min=1, help="What-if projection: machines in parallel (as `daulat plan`)."
        ),
    ] = 1,
    concurrency: ConcurrencyOpt = 64,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for the random sample.")] = None,
    history: Annotated[
        bool, typer.Option("--history", help="Show past drills against the real exits after them.")
    ] = False,
    encrypt_to: EncryptOpt = None,
    encrypt_names: EncryptNamesOpt = False,
    allow_plaintext: AllowPlaintextOpt = False,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    filter_rule: FilterRuleOpt = None,
    filter_from: FilterFromOpt = None,
    config: ConfigOpt = None,
    request_timeout: RequestTimeoutOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Measure a sample copy and predict how long a full exit of SRC to DST would take.

    The sample is copied to a scratch prefix in DST's store and removed afterwards; where DST
    holds daulat's ciphertext (or protected names) the drill needs --encrypt-to (and
    --encrypt-names), as an exit there would.

    With filters the sample and the prediction are of the objects they select (keys relative
    to SRC's prefix), as an exit with the same filters would copy.
    """
    flt = _filter(include, exclude, filter_rule, filter_from)
    cfg = _load(config)
    if history:
        rows = drill_history(cfg)
        if as_json:
            _print_json([r.to_json() for r in rows])
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
            on_event=None if as_json else Feedback(err, quiet=quiet).say,
            filter=flt,
            encrypt_names=encrypt_names,
            allow_plaintext=allow_plaintext,
        )
    )
    if as_json:
        _print_json(result.to_json())
    else:
        render_drill(result, out)
    if not result.ok:
        raise ExitCode(1)


@app.command()
def plan(
    src: Annotated[str, typer.Argument(metavar="SRC[:PREFIX]")],
    dst: Annotated[str, typer.Argument(metavar="DST")],
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Machines, each running one worker.")
    ] = 1,
    link: Annotated[
        str | None,
        typer.Option("--link", metavar="BW", help="Each worker's own link, e.g. 5Gbit/s or 5G."),
    ] = None,
    deadline: Annotated[
        str | None,
        typer.Option("--deadline", metavar="HOURS", help="Workers needed to finish within it."),
    ] = None,
    objects: Annotated[
        str | None,
        typer.Option("--objects", metavar="N", help="What-if: objects (with --bytes), e.g. 5e9."),
    ] = None,
    size: Annotated[
        str | None,
        typer.Option("--bytes", metavar="B", help="What-if: bytes, decimal (8PB = 8e15 bytes)."),
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """PROJECTION: how long an exit of SRC to DST takes on many machines, what binds, what
    it costs.

    Extrapolates the latest drill of SRC and the census (the latest scan, or --objects and
    --bytes for a what-if) to --workers machines, each with --link to itself. The model, its
    assumptions and every price's and limit's source are printed with the plan.
    """
    cfg = _load(config)
    result = make_plan(
        cfg,
        src,
        dst,
        workers=workers,
        link_bps=parse_bandwidth(link) if link is not None else None,
        deadline_hours=parse_hours(deadline) if deadline is not None else None,
        objects=parse_count(objects) if objects is not None else None,
        size=parse_bytes(size) if size is not None else None,
    )
    if as_json:
        _print_json(result.to_json())
    else:
        render_plan(result, out)


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


@app.command()
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
    # Before loading anything, a wrong -o fails at once; whether an existing file may be
    # replaced is decided once the config (whose file and keys are protected) is known.
    check_output(output, force=True)
    cfg = _load(config)
    written = write_report(cfg, output, "json" if fmt == ReportFormat.JSON else "html", force=force)
    out.print(f"wrote {printable(str(output))} ({written.size / 2**20:.1f} MiB)")


def _is_sha256(text: str) -> bool:
    value = text.strip().lower()
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


# --- listing: ls and size ---------------------------------------------------------------


# Names come from stores and may hold anything. Printed to a terminal, a control character,
# an ANSI sequence or a bidi override could move the cursor, recolour or visually reorder the
# line; they are shown as Python-style escapes instead (and backslashes doubled, so the shown
# form is unambiguous). A local helper until the CLI has a shared one.
def _shown(name: str) -> str:
    if name.isprintable() and "\\" not in name:
        return name
    return "".join(
        "\\\\" if c == "\\" else c if c.isprintable() else c.encode("unicode_escape").decode()
        for c in name
    )


def _write_lines(lines: AsyncGenerator[str, None]) -> Coroutine[Any, Any, None]:
    async def go() -> None:
        async with contextlib.aclosing(lines) as it:
            async for line in it:
                sys.stdout.write(line)

    return go()


def _stdout_gone() -> None:
    """The reader went away (``daulat ls | head``): stop quietly, as other tools do."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    raise ExitCode(141)


def _entry_line(e: Entry, long: bool) -> str:
    name = _shown(e.path)
    if not long:
        return name + "\n"
    if e.is_dir or e.modified is None or e.size is None:
        return f"{'-':>12} {'-':<20} {name}\n"
    return f"{e.size:>12} {iso_utc(e.modified, timespec='seconds')} {name}\n"


async def _ls_lines(
    cfg: Config, target: str, recursive: bool, long: bool, as_json: bool, flt: Filter
) -> AsyncGenerator[str, None]:
    entries = list_store(cfg, target, recursive=recursive, filter=flt)
    async with contextlib.aclosing(entries) as it:
        if not as_json:
            async for e in it:
                yield _entry_line(e, long)
            return
        first = True
        yield "["
        async for e in it:
            text = json.dumps(e.to_json(), ensure_ascii=False)
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # an undecodable name: keep it exact as \\u escapes
                text = json.dumps(e.to_json())
            yield ("\n" if first else ",\n") + text
            first = False
        yield "\n]\n"


@app.command(name="ls")
def ls_(
    target: Annotated[str, typer.Argument(metavar="STORE[:PREFIX]")],
    recursive: Annotated[
        bool,
        typer.Option("--recursive", "-R", "-r", help="Every object, not one level."),
    ] = False,
    long: Annotated[
        bool,
        typer.Option("--long", "-l", help="Size in bytes, modified time (UTC), key."),
    ] = False,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    filter_rule: FilterRuleOpt = None,
    filter_from: FilterFromOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List objects under STORE[:PREFIX], one level (directories end in '/') or --recursive.

    Keys are shown relative to PREFIX, in the store's order; filters match them the same way.
    """
    cfg = _load(config)
    flt = _filter(include, exclude, filter_rule, filter_from)
    try:
        _run(_write_lines(_ls_lines(cfg, target, recursive, long, as_json, flt)))
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_gone()


@app.command(name="size")
def size_(
    target: Annotated[str, typer.Argument(metavar="STORE[:PREFIX]")],
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    filter_rule: FilterRuleOpt = None,
    filter_from: FilterFromOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Count the objects and bytes under STORE[:PREFIX] (filters apply)."""
    cfg = _load(config)
    flt = _filter(include, exclude, filter_rule, filter_from)
    totals = _run(size_store(cfg, target, filter=flt))
    if as_json:
        out.print_json(json.dumps(totals.to_json()))
        return
    line = (
        f"{_shown(target)}: {totals.objects:,} objects, {_human_bytes(totals.bytes)} "
        f"({totals.bytes:,} bytes)"
    )
    if flt.active:
        line += (
            f"; excluded by filters: {totals.excluded_objects:,} objects, "
            f"{_human_bytes(totals.excluded_bytes)}"
        )
    out.print(line, markup=False, highlight=False, emoji=False)



@app.command()
def clean(
    store: Annotated[str, typer.Argument(metavar="STORE")],
    include_resumable: Annotated[
        bool,
        typer.Option(
            "--include-resumable",
            help="Also abort unfinished uploads a later run could resume (none is resumable yet).",
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
    report = _run(
        clean_store(cfg, store, include_resumable=include_resumable, dry_run=dry_run)
    )
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
        for problem in report.drill_scratch_problems:
            err.print(f"  {problem}")
    if not report.ok:
        raise ExitCode(1)


@app.command()
def serve(
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            metavar="HOST:PORT",
            help="Address to listen on (default: [gateway] listen, else 127.0.0.1:9000).",
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Serve the [gateway] buckets over S3 (read-only), from whichever replica holds a verified
    copy and answers; every byte served is checked against the copy's chunk hashes."""
    from daulat.gateway import gateway_config, loop_factory
    from daulat.gateway import serve as run_gateway

    cfg = _load(config)
    gw = gateway_config(cfg, listen)
    scheme = "https" if gw.tls_cert else "http"
    host = f"[{gw.host}]" if ":" in gw.host else gw.host
    err.print(
        f"daulat gateway on {scheme}://{host}:{gw.port} (read-only): "
        + ", ".join(
            f"{b.name} <- {' > '.join(a.label for a in b.replicas)}" for b in gw.buckets.values()
        )
    )
    try:
        _run(run_gateway(cfg, gw), loop_factory())
    except Interrupted as exc:
        # A server has nothing to resume: say what stopping did instead.
        name = signal.Signals(exc.signum).name
        err.print(
            styled(
                ("stopped", "bold"),
                f" by {name}: daulat serve took no new requests and let those in flight "
                "finish (at most 5 s); it keeps nothing to resume",
            )
        )
        raise ExitCode(128 + exc.signum) from None


def _fail(message: str, code: int) -> int:
    err.print(styled(("error:", "bold red"), " ", message))
    return code


def _interrupted(signum: int) -> int:
    name = signal.Signals(signum).name
    if not interrupts.begun():
        # Stopped while parsing the command line or reading the config: nothing was started.
        err.print(
            styled(
                ("interrupted", "bold red"),
                f" by {name} before anything was started. Run the same command again: "
                f"{_resume_command()}",
            )
        )
        return 128 + signum
    err.print(
        styled(
            ("interrupted", "bold red"),
            f" by {name}: stopped cleanly; what was finished is recorded. "
            f"Run the same command again to resume: {_resume_command()}",
        )
    )
    return 128 + signum


@contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """Outside the event loop (parsing, loading the config, the synchronous commands,
    printing), SIGINT and SIGTERM stop the command with ``KeyboardInterrupt``, so that both
    end with a message and their own exit code, and the signal is known to the audit record.

    The first signal is raised once; copies of it (``timeout`` signals the process and its
    group) are ignored while it unwinds; a signal after it was handled and
    :data:`~daulat.interrupts.REPEAT_WINDOW` has passed ends the process at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if interrupts.received() is not None:
            if not interrupts.repeated():
                return
            os.write(2, f"\n{signal.Signals(signum).name} again: stopping now\n".encode())
            os._exit(128 + signum)
        interrupts.note(signum)
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, on_signal) for s in interrupts.SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _usage_error(exc: Exception) -> int:
    """Print a usage error as click does, with the user's input escaped."""
    show = getattr(exc, "show", None)
    if show is None:
        return _fail(str(exc), 2)
    buffer = io.StringIO()
    show(file=buffer)
    sys.stderr.write(printable(buffer.getvalue(), keep_newlines=True))
    return 2


class _Notices(logging.Handler):
    """The library's notices (``daulat.*`` loggers: state made private, an audit entry that
    could not be written) on stderr, one line each, whatever else configured logging."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(printable(record.getMessage()))


_notices = _Notices(logging.WARNING)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (for tests and :func:`main`)."""
    global _argv
    _argv = list(sys.argv[1:] if argv is None else argv)
    interrupts.reset()
    library = logging.getLogger("daulat")
    if _notices not in library.handlers:
        library.addHandler(_notices)
        library.propagate = False  # printed once, here, not again by a root handler
    with _signals_as_interrupt():
        try:
            try:
                code = app(args=argv, prog_name="daulat", standalone_mode=False)
            except KeyboardInterrupt:
                code = 130
            if code == 130:
                # typer turns Ctrl-C outside the event loop into exit code 130.
                return _interrupted(interrupts.received() or signal.SIGINT)
            return code if isinstance(code, int) else 0
        except ExitCode as exc:
            return exc.code
        except Interrupted as exc:
            if not isinstance(exc.result, Summary):  # a transfer printed its own summary
                return _interrupted(exc.signum)
            return exc.exit_code
        except typer.Exit as exc:
            return int(exc.exit_code)
        except SystemExit as exc:  # typer's shell completion ends with sys.exit, not typer.Exit
            if exc.code is None or isinstance(exc.code, int):
                return exc.code or 0
            return _fail(str(exc.code), 1)
        except typer.Abort:
            return _fail("aborted", 130)
        except typer.TyperException as exc:
            # Usage errors (bad option, missing argument): printed like click does.
            return _usage_error(exc)
        except SafetyRefusal as exc:
            return _fail(f"refused: {exc}", 2)
        except (ConfigError, RecipientError, KeyFileError, ManifestError, AuditLogError) as exc:
            # ManifestError, AuditLogError: the local state is damaged or not daulat's (the
            # message names the file); like a config error, the user must fix it first.
            return _fail(str(exc), 2)
        except DaulatError as exc:
            return _fail(str(exc), 1)
        except sqlite3.Error as exc:
            return _fail(f"the local state database failed: {exc}", 2)
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            return _fail(f"cannot use{where}: {exc.strerror or exc}", 1)


def main() -> None:
    code = run()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter shutdown: obstore's runtime threads can abort the process (exit 134) while
    # Python finalises, which would make the exit code lie. Everything is flushed and closed here.
    os._exit(code)
