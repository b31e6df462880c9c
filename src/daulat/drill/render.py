"""Printing drills and their history for people."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.table import Table

from daulat.drill.history import HistoryRow
from daulat.drill.result import DrillResult
from daulat.drill.units import _human_bytes, _human_rate_bits, human_duration, plain
from daulat.plurals import plural
from daulat.terminal import printable, styled


def render_drill(result: DrillResult, console: Console) -> None:
    """Print a drill for people: per class, the prediction with its interval, the assumptions,
    and any projection, marked as such. Names are data: printed escaped, never as markup."""
    p = console.print
    p(
        styled((f"drill {printable(result.src)} → {printable(result.dst)}", "bold")),
        f" ({result.id}): {plural(result.objects, 'object')}, {_human_bytes(result.bytes)} in the source (scan "
        f"#{result.scan_id}); sampled {plural(result.sampled_objects, 'object')}, "
        f"{_human_bytes(result.sampled_bytes)}; concurrency {result.concurrency}",
        highlight=False,
        markup=False,
        sep="",
    )
    if result.filter is not None:
        p(
            f"  only what the filters select ({printable('; '.join(result.filter))}): "
            f"{plural(result.excluded_objects, 'object')}, {_human_bytes(result.excluded_bytes)} "
            "excluded, neither sampled nor predicted (the exit still lists them)",
            highlight=False,
            markup=False,
        )
    table = Table(title="Measured per size class (the real copy path, to a scratch prefix)")
    for col in (
        "size class",
        "objects",
        "bytes",
        "sampled",
        "wall s",
        "per object ms",
        "throughput",
        "predicted",
    ):
        table.add_column(col, justify="left" if col == "size class" else "right")
    for c in result.classes:
        table.add_row(
            c.label,
            f"{c.objects:,}",
            _human_bytes(c.bytes),
            f"{c.sampled_objects:,}",
            f"{c.wall_s:.2f}" + ("" if c.steady else "*"),
            f"{c.per_object_s * 1000:.2f}",
            f"{_human_bytes(c.throughput_bps)}/s" if c.throughput_bps else "-",
            f"{human_duration(c.predicted_s)}",
        )
    p(table)
    if any(not c.steady for c in result.classes):
        p("  * the sample never filled the pool: the whole run was used (conservative)")
    o = result.overhead
    p(
        f"  listing {o.list_s_per_object * 1e6:.0f} µs/object (probe of {o.listed_in_probe:,}), "
        f"bookkeeping {o.bookkeeping_s_per_object * 1e6:.0f} µs/object + {o.fixed_s:.2f} s: "
        f"{human_duration(o.predicted_s)}",
        highlight=False,
    )
    p(
        styled(
            (f"predicted exit time: {human_duration(result.predicted_s)}", "bold"),
            f" (95 % interval {human_duration(result.low_s)} - {human_duration(result.high_s)}; "
            f"{plain(result.predicted_hours)} h)",
        )
    )
    p(styled(f"  interval: {result.interval_method}"))
    p("  assumptions:")
    for a in result.assumptions:
        p(styled(f"    - {a}"))
    if result.projection is not None:
        pr = result.projection
        what = [f"{pr.workers} worker(s)"]
        if pr.link_bps is not None:
            what.append(f"a {_human_rate_bits(pr.link_bps)} link")
        p(
            styled(
                ("PROJECTION (not measured)", "bold yellow"),
                f" with {', '.join(what)}: {human_duration(pr.predicted_s)} "
                f"({human_duration(pr.low_s)} - {human_duration(pr.high_s)})",
            )
        )
        p(styled(f"  how: {pr.method}"))
    if result.scratch_removed:
        p(styled(f"  scratch copy {printable(result.scratch)} removed (listed again: empty)"))
    for problem in result.problems:
        p(styled("  ", ("problem:", "red"), " " + printable(problem)))
    p(f"  the drill took {human_duration(result.drill_s)}", highlight=False)


def render_history(rows: Iterable[HistoryRow], console: Console) -> None:
    """Print drills with the exits that followed them: predicted vs actual."""
    table = Table(title="Drills: predicted vs actual exit time")
    for col in ("drill", "src → dst", "sample", "predicted (95 %)", "actual exit", "error"):
        table.add_column(col)
    n = 0
    for r in rows:
        n += 1
        actual = "no exit since"
        if r.actual_s is not None:
            actual = f"{human_duration(r.actual_s)} (run #{r.exit_run}, {r.exit_started})"
        error = f"{r.error_pct:+.1f} %" if r.error_pct is not None else "-"
        if r.note:
            error += f" ({r.note})"
        table.add_row(
            f"{r.drill_id}",
            f"{printable(r.src)} → {printable(r.dst)}",
            f"{r.sample_objects:,} of {r.objects:,}",
            f"{human_duration(r.predicted_s)} ({human_duration(r.low_s)} - "
            f"{human_duration(r.high_s)})",
            actual,
            error,
        )
    if n == 0:
        console.print("no drill recorded yet: run `daulat drill SRC DST`")
        return
    console.print(table)
