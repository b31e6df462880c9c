"""Printing a plan for people: labelled PROJECTION, with every assumption and source."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from daulat.drill.units import _human_rate_bits, human_duration
from daulat.plan.build import LABEL, Plan
from daulat.plan.units import count, decimal_bytes, hours, usd
from daulat.plurals import plural
from daulat.terminal import printable, styled


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return (
        f"{human_duration(seconds)} ({hours(seconds)})"
        if seconds >= 3600
        else human_duration(seconds)
    )


def _rate(value: float, unit: str) -> str:
    if unit == "bit/s":
        return _human_rate_bits(value)
    return f"{value:,.0f} req/s" if unit == "requests/s" else f"{value:,.0f} {unit}"


def render_plan(plan: Plan, console: Console) -> None:
    p = console.print
    link = f", each with a {_human_rate_bits(plan.link_bps)} link" if plan.link_bps else ""
    p(
        styled(
            (f"{LABEL} (not measured)", "bold yellow"),
            f" exit plan {printable(plan.src)} → {printable(plan.dst)}: {plan.workers} "
            f"worker(s){link}",
        )
    )
    c = plan.census
    p(
        styled(
            f"  census: {count(c.objects)} {'object' if c.objects == 1 else 'objects'}, "
            f"{decimal_bytes(c.bytes)} "
            f"({c.bytes:,} bytes) — {c.source}"
        )
    )
    d = plan.drill
    p(
        styled(
            f"  per-worker costs: drill {d.id} ({d.src} → {d.dst}, concurrency "
            f"{d.concurrency}, finished {d.finished})"
        )
    )
    for note in plan.notes:
        p(styled(("  note: ", "yellow"), note))
    p(
        styled(
            (f"exit time: {_dur(plan.predicted_s)}", "bold"),
            f"  (95 % interval {human_duration(plan.low_s)} - {human_duration(plan.high_s)})",
        )
    )
    p(
        styled(
            f"  copying {_dur(plan.copy_s)}; listing {_dur(plan.listing_s)} and bookkeeping "
            f"{_dur(plan.bookkeeping_s)} (the driver alone); fixed {_dur(plan.fixed_s)}"
            + (f"; driver's journal at least {_dur(plan.driver_s)}" if plan.driver_s else "")
            + (
                f"; the Ray workers' start-up beyond the listing {_dur(plan.worker_start_s)}"
                if plan.worker_start_s
                else ""
            )
        )
    )
    if 0 < plan.largest_object_s >= sum(k.predicted_s for k in plan.classes):
        p(
            styled(
                f"  the largest object alone ({decimal_bytes(plan.largest_object_bytes)}, never "
                f"split) takes one worker {_dur(plan.largest_object_s)}: the copying is never "
                "shorter, whatever the workers"
            )
        )
    if plan.link_floor_s is not None:
        p(
            styled(
                f"  the links alone: {_dur(plan.link_floor_s)} ({decimal_bytes(c.bytes)} over "
                f"{plan.busy_workers} x {_human_rate_bits(plan.link_bps or 0)})"
            )
        )
    table = Table(title=f"{LABEL}: per size class")
    for col in (
        "size class",
        "objects",
        "bytes",
        "per object",
        "worker throughput",
        "bound",
        "time",
    ):
        table.add_column(col, justify="left" if col in ("size class", "bound") else "right")
    for k in plan.classes:
        table.add_row(
            k.label,
            count(k.objects),
            decimal_bytes(k.bytes),
            f"{k.per_object_s * 1000:.3g} ms",
            f"{decimal_bytes(k.throughput_Bps)}/s" if k.throughput_Bps else "-",
            ("its link" if k.bound == "link" else "the worker")
            + (f" (costed as {k.costed_as})" if k.costed_as else ""),
            human_duration(k.predicted_s),
        )
    p(table)
    if plan.deadline is not None:
        dl = plan.deadline
        if dl["workers"] is None:
            p(
                styled(
                    (f"deadline {dl['hours']:g} h: not reachable", "bold red"), f" — {dl['reason']}"
                )
            )
        else:
            upper = (
                f"; {dl['workers_upper']:,} for the interval's upper end to meet it"
                if dl["workers_upper"] is not None
                else f"; the interval's upper end cannot meet it ({dl['reason']})"
            )
            p(
                styled(
                    (f"deadline {dl['hours']:g} h: {dl['workers']:,} worker(s)", "bold"),
                    f" (predicted {_dur(dl['predicted_s'])}){upper}"
                    + (
                        f", each with the {_human_rate_bits(plan.link_bps)} link"
                        if plan.link_bps
                        else ""
                    ),
                )
            )
    r = plan.requests
    table = Table(title="Requests (by size class: objects, multipart uploads, parts)")
    for col in ("size class", "GET", "single PUT", "multipart uploads", "parts"):
        table.add_column(col, justify="left" if col == "size class" else "right")
    for k in plan.classes:
        single = k.objects - k.multipart_objects if r.billed_destination else 0
        table.add_row(
            k.label, f"{k.objects:,}", f"{single:,}", f"{k.multipart_objects:,}", f"{k.parts:,}"
        )
    p(table)
    p(
        styled(
            f"  source: {r.source_get:,} GET, {r.source_list:,} LIST; destination: "
            f"{plural(r.destination_writes, 'write request')} ({r.destination_put:,} PUT, "
            f"{plural(r.multipart_uploads, 'upload')} x create+complete, "
            f"{plural(r.parts, 'part')}), "
            f"{r.destination_list:,} LIST — {r.part_rule}"
        )
    )
    if plan.limits:
        at_deadline = next((x.deadline_workers for x in plan.limits if x.deadline_workers), None)
        table = Table(title="Provider limits against what this exit asks while copying")
        cols = ["provider", "limit", "per", "regions", "asked", "spread over", "one alone takes"]
        if at_deadline:
            cols.insert(6, f"with {plural(at_deadline, 'worker')}")
        for col in cols:
            table.add_column(
                col,
                justify="right" if col not in ("provider", "limit", "per", "regions") else "left",
            )
        for lim in plan.limits:
            value = (
                f"{lim.metric} {_rate(lim.value, lim.unit)}"
                if lim.value
                else f"{lim.metric}: not read"
            )
            row = [
                f"{lim.provider} ({lim.side})",
                value,
                lim.scope,
                lim.region_class,
                _rate(lim.demand, lim.unit),
                "-" if lim.needed is None else f"{lim.needed:,}" + (" BINDS" if lim.binds else ""),
                _dur(lim.single_unit_s),
            ]
            if at_deadline:
                row.insert(
                    6, "-" if lim.needed_at_deadline is None else f"{lim.needed_at_deadline:,}"
                )
            table.add_row(*row)
        p(table)
        for lim in plan.limits:
            read = f"read {lim.read}" if lim.read else "not read"
            p(styled(f"  {lim.id}: {lim.source} ({read})"))
        for lim in plan.limits:
            if lim.binds:
                p(
                    styled(
                        ("  binds: ", "bold red"),
                        f"{lim.provider} {lim.metric} per {lim.scope}: spread the data over at "
                        f"least {lim.needed:,}, or {lim.adjustable or 'have the limit raised'}",
                    )
                )
    if plan.costs:
        table = Table(title="Cost (USD, list prices)")
        for col in ("provider", "item", "quantity", "provider's page", "reported by a third party"):
            table.add_column(col, justify="left" if col in ("provider", "item") else "right")
        for line in plan.costs:
            qty = (
                decimal_bytes(line.quantity)
                if line.quantity_unit == "bytes"
                else f"{line.quantity:,.0f} {'request' if line.quantity == 1 else 'requests'}"
            )
            table.add_row(
                f"{line.provider} ({line.side})",
                line.item,
                qty,
                usd(line.usd) if line.usd is not None else "not read",
                usd(line.reported_usd) if line.reported_usd is not None else "-",
            )
        p(table)
        for line in plan.costs:
            read = f"read {line.read}" if line.read else "not read"
            extra = f"; reported: {line.reported_source}" if line.reported_source else ""
            p(styled(f"  {line.price_id}: {line.source} ({read}){extra}"))
        total = usd(plan.cost_usd) if plan.cost_usd is not None else "unknown"
        p(
            styled(
                ("  total from the providers' pages: ", "bold"),
                total
                + (f" (not read: {', '.join(plan.cost_unknown)})" if plan.cost_unknown else "")
                + (
                    f"; with third parties' readings filled in: {usd(plan.cost_with_reported_usd)}"
                    if plan.cost_with_reported_usd is not None and plan.cost_unknown
                    else ""
                ),
            )
        )
    if plan.programme is not None:
        g = plan.programme
        p(styled((f"exit programme: {g.name}", "bold"), f" (announced {g.announced}): {g.covers}"))
        if g.conditions:
            for cond in g.conditions:
                p(styled(f"    - {cond}"))
            p(styled(f"    source: {g.source} (read {g.read})"))
        elif g.reported is not None:
            p(styled(f"    {g.note}"))
            for cond in g.reported.conditions:
                p(styled(f"    - {cond}"))
            p(
                styled(
                    f"    reported by: {g.reported.source} (read {g.reported.read}); provider: {g.source}"
                )
            )
        p(
            styled(
                "    with it, the egress above costs nothing if its conditions are met; requests are not covered"
            )
        )
    for law in plan.laws:
        p(styled((f"{law.name}", "bold"), f" ({law.citation}; applies from {law.applies_from})"))
        for rule in law.rules:
            p(styled(f"    - {rule}"))
        p(styled(f"    source: {law.source} (read {law.read}); {law.note}"))
    p("assumptions:")
    for a in plan.assumptions:
        p(styled(f"  - {a}"))
    p(styled(f"model: {plan.model}"))
