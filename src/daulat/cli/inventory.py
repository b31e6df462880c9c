"""Knowing what is where: ``init``, ``stores``, ``scan``, ``ls`` and ``size``."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from daulat import interrupts
from daulat.address import parse_address, store_only
from daulat.cli._shared import (
    ConfigOpt,
    ExcludeOpt,
    ExitCode,
    FilterFromOpt,
    FilterRuleOpt,
    IncludeOpt,
    JsonOpt,
    QuietOpt,
    RequestTimeoutOpt,
    _excluded_line,
    _filter,
    _human_bytes,
    _load,
    _print_json,
    _run,
    err,
    out,
)
from daulat.defaults import DEFAULT_SHARDS, MAX_SHARDS
from daulat.errors import (
    ConfigError,
)
from daulat.plurals import plural
from daulat.terminal import printable, styled

# The library is imported by the commands that use it (see daulat.cli._shared).
if TYPE_CHECKING:
    from daulat.config import Config
    from daulat.filters import Filter
    from daulat.inventory import ScanResults, StoreStatus
    from daulat.listing import Entry


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
    nested: Annotated[
        bool,
        typer.Option(
            "--nested",
            help="Write daulat.toml even though a parent directory holds one (which commands "
            "run here and below would then no longer use).",
        ),
    ] = False,
) -> None:
    """Write a commented daulat.toml (with --demo: local stores filled with sample data).

    Refused where a daulat.toml in a parent directory is the one commands use today (unless
    --nested): a new one here would silently take its place for this directory and below.
    """
    from daulat.config import CONFIG_NAME
    from daulat.scaffold import DemoData, write_config

    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"--dir {directory} is not a directory")
    here = directory.absolute()
    shadowed = next((d / CONFIG_NAME for d in here.parents if (d / CONFIG_NAME).is_file()), None)
    if shadowed is not None and not nested and not (here / CONFIG_NAME).exists():
        raise ConfigError(
            f"{shadowed} is the configuration daulat uses in {here} today (found in a parent "
            f"directory); a daulat.toml here would shadow it for every command run in {here} "
            "and below. Use that one (`daulat stores` shows its stores), or run "
            "`daulat init --nested` to write a separate one here anyway"
        )
    interrupts.begin()
    result = write_config(directory, demo=demo, force=force)
    if isinstance(result, DemoData):
        out.print(f"wrote {result.config}")
        for name, path in result.stores.items():
            out.print(f"  store {name:<12} {path}")
        out.print(
            f"  sample data: {plural(result.objects, 'object')}, {_human_bytes(result.bytes)} in kpu-primary"
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
            "-"
            if r.last_scan is None
            else f"{r.last_scan} (inventory report)"
            if r.last_scan_report
            else r.last_scan,
        )
    return table


def stores(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    request_timeout: RequestTimeoutOpt = None,
) -> None:
    """List configured stores: provider, region, country, jurisdictions, reachable, objects."""
    from daulat.gateway.lag import lagging
    from daulat.gateway.standing import describe, store_standing
    from daulat.inventory import Manifest, store_statuses
    from daulat.report.data import daulat_writes

    cfg = _load(config)
    with Manifest.in_state_dir(cfg.state_dir) as manifest:
        rows = _run(store_statuses(cfg, manifest))
    lags = lagging(cfg.state_dir, cfg.stores)
    standing = store_standing(cfg.state_dir, lags)
    written = daulat_writes(cfg)
    if as_json:
        _print_json(
            [
                {
                    **asdict(r),
                    "gateway": s.to_json() if (s := standing.get(r.name)) else None,
                    "gateway_lagging": lag.objects - lag.conflicts
                    if (lag := lags.get(r.name))
                    else 0,
                    # Of what lags, what no sync can copy (see the text output), and why.
                    "gateway_conflicting": lag.conflicts if lag else 0,
                    "gateway_conflict": (lag.conflict or None) if lag else None,
                    "written_by_daulat": dict(
                        zip(("objects", "bytes", "latest"), written[r.name], strict=True)
                    ),
                }
                for r in rows
            ]
        )
    else:
        out.print(_stores_table(rows))
        for r in rows:
            if r.url.startswith("file:"):
                # Where a directory store resolved to (relative to daulat.toml, not the cwd).
                out.print(f"  {r.name}: at {printable(r.url)}", markup=False, highlight=False)
            n, size, latest = written[r.name]
            if n and (r.last_scan is None or (latest is not None and latest > r.last_scan)):
                # The objects and size shown are older than what daulat itself wrote there.
                when = "it was never scanned" if r.last_scan is None else "after its last scan"
                out.print(
                    f"  {r.name}: daulat wrote here {when} (latest {latest}; {plural(n, 'object')}, "
                    f"{_human_bytes(size)} in all): `daulat scan {r.name}` for current figures",
                    markup=False,
                    highlight=False,
                )
            if r.last_scan_report:
                out.print(
                    f"  {r.name}: objects and size as of {r.last_scan}, the date of inventory "
                    f"report {printable(r.last_scan_report)}",
                    markup=False,
                    highlight=False,
                )
            if r.laws:
                out.print(f"  {r.name}: laws reaching {r.provider_name}: {'; '.join(r.laws)}")
            for note in r.notes:
                out.print(f"  {r.name}: {note}")
        for r in rows:
            if (s := standing.get(r.name)) is not None:
                line = "  " + describe(r.name, s)
                out.print(styled((line, "red")) if s.refused else styled(line))
            if (lag := lags.get(r.name)) is not None and lag.objects > lag.conflicts:
                out.print(
                    f"  {r.name}: {lag.objects - lag.conflicts:,} object(s) written through the "
                    f"gateway are not held verified here yet: `{lag.sync}` copies them",
                    markup=False,
                    highlight=False,
                )
            if lag is not None and lag.conflicts:
                # No sync can copy these while what stands in their way is there (an object of
                # one name, or what a sync refused them for): saying so beats a recommended
                # command that fails every time.
                out.print(
                    f"  {r.name}: {lag.conflicts:,} object(s) written through the gateway cannot "
                    f"be held here ({printable(lag.conflict)}): no sync copies them until what "
                    "stands in their way is removed or renamed",
                    markup=False,
                    highlight=False,
                )
    if not all(r.reachable for r in rows):
        raise ExitCode(1)


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
            max=MAX_SHARDS,
            help="Listings in flight at once, each over its own part of the key space "
            f"(1: one listing; at most {MAX_SHARDS:,}). Same result either way.",
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
    from daulat.census.imported import scan_from_inventory
    from daulat.feedback import Feedback
    from daulat.inventory import Manifest, ScanResults, scan_stores

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
            [asdict(s) | {"census_date": s.census_date} for s in results.summaries]
            + [f.to_json() for f in results.failures]
        )
    else:
        for s in results.summaries:
            out.print(
                f"scanned {s.store}: {plural(s.objects, 'object')}, {_human_bytes(s.bytes)} "
                f"(+{s.added:,} added, ~{s.changed:,} changed, -{s.removed:,} removed) "
                f"scan #{s.id}"
            )
            if s.report is not None:
                out.print(
                    f"  census as of {s.report_made}, the date of inventory report "
                    f"{printable(s.report)} (read now; what changed since is not in it)",
                    markup=False,
                    highlight=False,
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


def _entry_line(e: Entry, long: bool, iso_utc: Callable[..., str]) -> str:
    """One line of ``ls``; ``iso_utc`` is :func:`daulat.listing.iso_utc`, imported by the
    caller once per listing rather than here once per line."""
    name = _shown(e.path)
    if not long:
        return name + "\n"
    if e.is_dir or e.modified is None or e.size is None:
        return f"{'-':>12} {'-':<20} {name}\n"
    return f"{e.size:>12} {iso_utc(e.modified, timespec='seconds')} {name}\n"


async def _ls_lines(
    cfg: Config,
    target: str,
    recursive: bool,
    long: bool,
    as_json: bool,
    flt: Filter,
    reserved: bool = False,
) -> AsyncGenerator[str, None]:
    from daulat.listing import iso_utc
    from daulat.listing import ls as list_store

    entries = list_store(cfg, target, recursive=recursive, filter=flt, reserved=reserved)
    listed = 0
    async with contextlib.aclosing(entries) as it:
        if not as_json:
            async for e in it:
                listed += 1
                yield _entry_line(e, long, iso_utc)
        else:
            # "[" goes out with the first entry: a listing that fails before it leaves stdout
            # empty rather than a lone "[".
            async for e in it:
                text = json.dumps(e.to_json(), ensure_ascii=False)
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:  # an undecodable name: keep it exact as \\u escapes
                    text = json.dumps(e.to_json())
                yield ("[\n" if listed == 0 else ",\n") + text
                listed += 1
            yield "\n]\n" if listed else "[]\n"
    address = parse_address(target)
    if not listed and address.prefix:
        # A typo'd prefix lists nothing, as an empty directory does: say so (on stderr, so
        # --json stays `[]`), as rclone's "directory not found" does; the exit stays 0.
        err.print(
            f"nothing under '{printable(address.prefix)}' in {printable(address.store)}",
            markup=False,
            highlight=False,
        )


AllOpt = Annotated[
    bool,
    typer.Option(
        "--all",
        "-a",
        help="Include daulat's own .daulat/ objects (manifests, signatures, state), hidden by "
        "default.",
    ),
]


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
    show_all: AllOpt = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List objects under STORE[:PREFIX], one level (directories end in '/') or --recursive.

    Keys are shown relative to PREFIX, in the store's order; filters match them the same way.
    daulat's own .daulat/ objects are hidden unless --all.
    """
    cfg = _load(config)
    flt = _filter(include, exclude, filter_rule, filter_from)
    try:
        _run(_write_lines(_ls_lines(cfg, target, recursive, long, as_json, flt, show_all)))
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_gone()


def size_(
    target: Annotated[str, typer.Argument(metavar="STORE[:PREFIX]")],
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    filter_rule: FilterRuleOpt = None,
    filter_from: FilterFromOpt = None,
    show_all: AllOpt = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Count the objects and bytes under STORE[:PREFIX] (filters apply; daulat's own .daulat/
    objects are counted apart unless --all)."""
    from daulat.listing import size as size_store

    cfg = _load(config)
    flt = _filter(include, exclude, filter_rule, filter_from)
    totals = _run(size_store(cfg, target, filter=flt, reserved=show_all))
    if as_json:
        out.print_json(json.dumps(totals.to_json()))
        return
    line = (
        f"{_shown(target)}: {plural(totals.objects, 'object')}, {_human_bytes(totals.bytes)} "
        f"({totals.bytes:,} bytes)"
    )
    if flt.active:
        line += (
            f"; excluded by filters: {plural(totals.excluded_objects, 'object')}, "
            f"{_human_bytes(totals.excluded_bytes)}"
        )
    if totals.reserved_objects:
        line += (
            f"; not counted: daulat's own .daulat/: {plural(totals.reserved_objects, 'object')}, "
            f"{_human_bytes(totals.reserved_bytes)} (--all counts them)"
        )
    out.print(line, markup=False, highlight=False, emoji=False)
