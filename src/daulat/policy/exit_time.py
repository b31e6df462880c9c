"""The max_exit_hours rule and its default source of predictions, the drill record."""

from __future__ import annotations

from pathlib import Path

from daulat.drill import latest_exit_hours
from daulat.policy.context import DrillLookup, _Ctx, _EvaluatorBase
from daulat.policy.findings import Finding, Status


def drill_exit_hours(state_dir: Path) -> DrillLookup:
    """The default ``latest_exit_hours`` hook: the predicted hours of the latest complete drill
    of the whole store (:func:`daulat.drill.latest_exit_hours`; drills of one prefix time only
    part of a store and do not count). Without a drill the rule is "unknown"."""
    return lambda store: latest_exit_hours(state_dir, store)


class _ExitTimeRule(_EvaluatorBase):
    def exit_hours(self, ctx: _Ctx, max_hours: float) -> Finding:
        pol, rule = ctx.pol, "max_exit_hours"
        held = self.holding(ctx, ctx.primary)
        hours = self.hook(ctx.primary)
        target = ctx.replicas[0] if ctx.replicas else "DST"
        drill = f"`daulat drill {self.addr(ctx.primary, ctx.prefix)} {target}`"
        if hours is None:
            why = (
                f"no exit drill of {ctx.primary} is recorded in {self.config.state_dir}, so the time "
                f"to leave it is unknown (unknown ≠ pass)"
            )
            return Finding(
                pol.label,
                rule,
                ctx.primary,
                Status.UNKNOWN,
                why,
                f"run an exit drill: {drill}",
                held.objects,
                held.bytes,
                {"max_hours": max_hours},
            )
        data = {"max_hours": max_hours, "predicted_hours": hours}
        if hours <= max_hours:
            why = f"the latest drill predicts a full exit of {ctx.primary} in {hours:.1f} h, within {max_hours:g} h"
            return Finding(
                pol.label, rule, ctx.primary, Status.PASS, why, None, held.objects, held.bytes, data
            )
        why = f"the latest drill predicts a full exit of {ctx.primary} in {hours:.1f} h; the policy allows {max_hours:g} h"
        fix = (
            "raise the bandwidth or concurrency of the exit (more workers, a closer destination), "
            f"keep a replica continuously in sync so the exit only moves the recent changes, then re-run {drill}"
        )
        return Finding(
            pol.label, rule, ctx.primary, Status.FAIL, why, fix, held.objects, held.bytes, data
        )
