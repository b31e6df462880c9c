"""Printing findings for people."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from daulat.policy.findings import PolicyResult, Status
from daulat.policy.units import _amount

_STYLE = {
    Status.PASS: ("green", "✔ pass   "),
    Status.FAIL: ("bold red", "✘ FAIL   "),
    Status.UNKNOWN: ("yellow", "? unknown"),
}


def render_findings(result: PolicyResult, console: Console) -> None:
    """Print ``result`` for people: one block per policy, then a summary line and, when some
    rules are unknown, a warning that unknown is not pass."""
    if not result.policies:
        console.print(
            "[yellow]no [[policies]] in daulat.toml: nothing to check[/yellow]"
            + (" (--strict: exit 1)" if result.strict else ""),
            highlight=False,
        )
        return
    for report in result.policies:
        style, _ = _STYLE[report.status]
        title = "" if report.name == f"policy #{report.index}" else f": {report.name}"
        console.print(
            f"[bold]policy #{report.index}{escape(title)}[/bold]  "
            f"[{style}]{report.status.value.upper()}[/{style}]",
            highlight=False,
        )
        if report.primary is not None:
            scope = f", data under {report.prefix!r}" if report.prefix else ""
            console.print(
                f"  stores: {escape(', '.join(report.stores))}; primary {escape(report.primary)} "
                f"({escape(report.primary_reason)}){escape(scope)}",
                highlight=False,
            )
        for f in report.findings:
            fstyle, mark = _STYLE[f.status]
            amount = "" if f.objects is None else f"  {_amount(f.objects, f.bytes)}"
            console.print(
                f"  [{fstyle}]{mark}[/{fstyle}]  {f.rule:<25} {escape(f.store or '(policy)')}{amount}",
                highlight=False,
            )
            console.print(f"      why: {escape(f.why)}", highlight=False)
            if f.fix:
                label = "fix" if f.status != Status.PASS else "tip"
                console.print(f"      {label}: {escape(f.fix)}", highlight=False)
        console.print()
    n_fail, n_unknown, n_pass = (
        result.count(s) for s in (Status.FAIL, Status.UNKNOWN, Status.PASS)
    )
    style, _ = _STYLE[result.status]
    console.print(
        f"[{style}]{result.status.value.upper()}[/{style}]: {len(result.policies)} "
        f"polic{'y' if len(result.policies) == 1 else 'ies'}; findings: {n_fail} fail, "
        f"{n_unknown} unknown, {n_pass} pass",
        highlight=False,
    )
    if n_unknown:
        consequence = (
            "--strict: exit 1"
            if result.strict
            else "not counted as violations (exit 0 unless something fails; --strict makes them fail)"
        )
        console.print(
            f"[yellow]warning:[/yellow] {n_unknown} finding(s) could not be evaluated — unknown ≠ "
            f"pass; {consequence}",
            highlight=False,
        )
