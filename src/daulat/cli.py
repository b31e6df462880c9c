"""The ``daulat`` command: parse, call one library function, render.

Exit codes: 0 success, 1 a failure of the job itself (unreachable store, differences, violations),
2 usage or configuration errors. User errors print one clear message, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Coroutine
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, TypeVar

import click
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from daulat import __version__
from daulat.config import Config, find_config, load_config
from daulat.errors import ConfigError, DaulatError
from daulat.inventory import StoreStatus, scan_store, store_statuses
from daulat.manifest import Manifest, ScanSummary
from daulat.scaffold import DemoData, write_config
from daulat.stores import open_store

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


def _load(config: Path | None) -> Config:
    return load_config(find_config(config))


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


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", help="Show the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"daulat {__version__}")
        raise typer.Exit()


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
            "yes" if r.reachable else f"[red]no[/red]: {r.problem}",
            f"{r.objects:,}" if r.objects is not None else "not scanned",
            _human_bytes(r.bytes),
            r.last_scan or "-",
        )
    return table


@app.command()
def stores(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
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
    as_json: JsonOpt = False,
) -> None:
    """List stores into the manifest: key, size, modified time, provider ETag; records changes."""
    cfg = _load(config)
    selected = names or list(cfg.stores)
    for name in selected:
        cfg.store(name)
    with Manifest.in_state_dir(cfg.state_dir) as manifest:
        summaries = _run(_scan_all(cfg, selected, manifest))
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


def _fail(message: str, code: int) -> int:
    err.print(f"[bold red]error:[/bold red] {message}", highlight=False)
    return code


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (for tests and :func:`main`)."""
    try:
        app(args=argv, prog_name="daulat", standalone_mode=False)
    except ExitCode as exc:
        return exc.code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        return _fail("aborted", 130)
    except click.ClickException as exc:
        exc.show(file=sys.stderr)
        return 2
    except ConfigError as exc:
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
