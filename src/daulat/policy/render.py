"""Printing findings for people."""

from __future__ import annotations

from rich.console import Console

from daulat.policy.findings import PolicyResult, Status
from daulat.policy.units import _amount
from daulat.terminal import printable, styled

_STYLE = {
    Status.PASS: ("green", "✔ pass   "),
    Status.FAIL: ("bold red", "✘ FAIL   "),
    Status.UNKNOWN: ("yellow", "? unknown"),
}


def render_findings(result: PolicyResult, console: Console) -> None:
    """Print ``result`` for people: one block per policy, then a summary line and, when some
    rules are unknown, a warning that unknown is not pass. Names and messages are data: printed
    escaped, never as markup."""
    if not result.policies:
        console.print(
            styled(
                ("no [[policies]] in daulat.toml: nothing to check", "yellow"),
                " (--strict: exit 1)" if result.strict else "",
            )
        )
        return
    for report in result.policies:
        style, _ = _STYLE[report.status]
        title = "" if report.name == f"policy #{report.index}" else f": {report.name}"
        console.print(
            styled(
                (f"policy #{report.index}{printable(title)}", "bold"),
                "  ",
                (report.status.value.upper(), style),
            )
        )
        if report.primary is not None:
            scope = f", data under {report.prefix!r}" if report.prefix else ""
            console.print(
                styled(
                    f"  stores: {printable(', '.join(report.stores))}; primary "
                    f"{printable(report.primary)} ({printable(report.primary_reason)})"
                    f"{printable(scope)}"
                )
            )
        for f in report.findings:
            fstyle, mark = _STYLE[f.status]
            amount = "" if f.objects is None else f"  {_amount(f.objects, f.bytes)}"
            console.print(
                styled(
                    "  ",
                    (mark, fstyle),
                    f"  {f.rule:<25} {printable(f.store or '(policy)')}{amount}",
                )
            )
            console.print(styled(f"      why: {f.why}"))
            if f.fix:
                label = "fix" if f.status != Status.PASS else "tip"
                console.print(styled(f"      {label}: {f.fix}"))
        console.print()
    n_fail, n_unknown, n_pass = (
        result.count(s) for s in (Status.FAIL, Status.UNKNOWN, Status.PASS)
    )
    style, _ = _STYLE[result.status]
    console.print(
        styled(
            (result.status.value.upper(), style),
            f": {len(result.policies)} polic{'y' if len(result.policies) == 1 else 'ies'}; "
            f"findings: {n_fail} fail, {n_unknown} unknown, {n_pass} pass",
        )
    )
    if n_unknown:
        consequence = (
            "--strict: exit 1"
            if result.strict
            else "not counted as violations (exit 0 unless something fails; --strict makes them fail)"
        )
        console.print(
            styled(
                ("warning:", "yellow"),
                f" {n_unknown} finding(s) could not be evaluated — unknown ≠ pass; {consequence}",
            )
        )
