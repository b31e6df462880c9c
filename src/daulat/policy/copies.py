"""Rules on verified copies: min_replicas, distinct_providers/jurisdictions, max_verify_age_days."""

from __future__ import annotations

from typing import Any

from daulat.plurals import plural
from daulat.policy.context import _Ctx, _EvaluatorBase
from daulat.policy.findings import Finding, Status
from daulat.policy.state import _Copies
from daulat.policy.units import _amount, _days


class _CopyRules(_EvaluatorBase):
    def _unscanned(self, ctx: _Ctx, rule: str, store: str | None = None) -> Finding:
        never = (
            "there is no manifest yet (nothing was ever scanned)"
            if self.state.manifest is None
            else f"{ctx.primary}, the primary, has never been scanned completely"
        )
        what = "to check" if rule == "max_verify_age_days" else "need copies"
        why = f"{never}, so daulat does not know which objects {what} (unknown ≠ pass)"
        return Finding(
            ctx.pol.label, rule, store, Status.UNKNOWN, why, f"`daulat scan {ctx.primary}`"
        )

    def min_replicas(self, ctx: _Ctx, need: int) -> Finding:
        pol, rule = ctx.pol, "min_replicas"
        cov = ctx.coverage
        if cov is None:
            return self._unscanned(ctx, rule)
        assert ctx.scan is not None
        complete = [
            r for r in ctx.replicas if cov.objects and cov.copies[r].verified == cov.objects
        ]
        partial = [r for r in ctx.replicas if r not in complete and cov.copies[r].verified]
        have = 1 + len(complete)
        data: dict[str, Any] = {
            "required": need,
            "verified_copies": have,
            "objects": cov.objects,
            "bytes": cov.bytes,
            "under_replicated": cov.under,
            "under_replicated_bytes": cov.under_bytes,
            "complete_replicas": complete,
            "partial_replicas": partial,
            "copies": {ctx.primary: {"role": "primary", "objects": cov.objects}}
            | {
                r: {"role": "replica", **_copies_json(cov.copies[r], cov.objects)}
                for r in ctx.replicas
            },
            "scan": ctx.scan.finished,
        }
        scope = f" under {ctx.prefix!r}" if ctx.prefix else ""
        if cov.objects == 0:
            why = f"{ctx.primary} holds no objects{scope} ({ctx.scan.described}): nothing to replicate"
            return Finding(pol.label, rule, None, Status.PASS, why, None, 0, 0, data)
        lines = [
            f"{ctx.primary} (primary) holds {_amount(cov.objects, cov.bytes)}{scope} ({ctx.scan.described})"
        ]
        lines += [self.copies_text(r, cov.copies[r], cov.objects) for r in ctx.replicas]
        if cov.under == 0:
            head = (
                f"{have} of {plural(need, 'required verified copy', 'required verified copies')}"
                if not partial
                else f"every object has at least {plural(need, 'verified copy', 'verified copies')}"
            )
            why = f"{head}: " + "; ".join(lines)
            return Finding(
                pol.label, rule, None, Status.PASS, why, None, cov.objects, cov.bytes, data
            )
        why = (
            f"{have} of {need} required verified copies: {_amount(cov.under, cov.under_bytes)} have fewer "
            f"than {need}. " + "; ".join(lines)
        )
        fixes = []
        for r in ctx.replicas:
            c = cov.copies[r]
            if c.verified == cov.objects:
                continue
            if c.unverified and c.verified + c.unverified == cov.objects:
                fixes.append(f"`daulat verify {self.addr(ctx.primary, ctx.prefix)} {r}`")
            else:
                fixes.append(self.exit_cmd(pol, ctx.primary, ctx.prefix, r))
        if len(ctx.stores) < need:
            fixes.append(
                f"add {need - len(ctx.stores)} more store(s) to this policy and copy there"
            )
        elif not fixes:
            fixes.append("add another store to this policy and copy there with `daulat exit`")
        return Finding(
            pol.label,
            rule,
            None,
            Status.FAIL,
            why,
            "; ".join(fixes),
            cov.under,
            cov.under_bytes,
            data,
        )

    @staticmethod
    def copies_text(replica: str, c: _Copies, total: int) -> str:
        if c.verified == total:
            return f"{replica}: complete verified copy ({total:,}/{total:,})"
        parts = []
        if c.verified:
            pct = 100 * c.verified / total
            parts.append(
                f"partial replica, {c.verified:,} of {plural(total, 'object')} verified ({pct:.0f}%)"
            )
        else:
            parts.append(f"no verified copy (0 of {total:,})")
        if c.unverified:
            parts.append(f"{c.unverified:,} copied but not verified (or failing the latest verify)")
        if c.stale:
            parts.append(f"{c.stale:,} changed at the primary since copied")
        missing = total - c.verified - c.unverified - c.stale
        if missing and c.verified + c.unverified + c.stale:
            parts.append(f"{missing:,} never copied")
        return f"{replica}: " + ", ".join(parts)

    def distinct(self, ctx: _Ctx, rule: str, need: int) -> Finding:
        pol, cov = ctx.pol, ctx.coverage
        if cov is None:
            return self._unscanned(ctx, rule)
        complete = [
            r for r in ctx.replicas if cov.objects and cov.copies[r].verified == cov.objects
        ]
        holders = [ctx.primary, *complete]
        if rule == "distinct_providers":
            keyed = {s: self.provider_key(s) for s in holders}
            label = {s: self.provider_label(s) for s in holders}
            noun = "provider"
        else:
            keyed = {s: self.home(s) for s in holders}
            label = {s: self.home(s) for s in holders}
            noun = "home jurisdiction"
        groups: dict[str, list[str]] = {}
        for s in holders:
            groups.setdefault(keyed[s], []).append(s)
        have = len(groups)
        desc = "; ".join(f"{label[ss[0]]}: {', '.join(ss)}" for ss in groups.values())
        data = {"required": need, "distinct": have, "groups": groups, "holders": holders}
        if cov.objects == 0:
            why = f"{ctx.primary} holds no objects ({ctx.scan.described if ctx.scan else 'scan of ?'}): nothing to spread"
            return Finding(pol.label, rule, None, Status.PASS, why, None, 0, 0, data)
        partial = [r for r in ctx.replicas if r not in complete and cov.copies[r].verified]
        note = (
            f" (partial replicas do not count: {', '.join(f'{r} {cov.copies[r].verified:,}/{cov.objects:,}' for r in partial)})"
            if partial
            else ""
        )
        why = f"complete verified copies are with {have} distinct {noun}(s) of {need} required — {desc}{note}"
        if have >= need:
            return Finding(
                pol.label, rule, None, Status.PASS, why, None, cov.objects, cov.bytes, data
            )
        present = set(groups)
        candidates = [
            r
            for r in ctx.replicas
            if r not in complete
            and (self.provider_key(r) if rule == "distinct_providers" else self.home(r))
            not in present
        ]
        if candidates:
            fix = "complete a verified copy at " + " or ".join(
                f"{c} ({self.provider_label(c) if rule == 'distinct_providers' else self.home(c)}): {self.exit_cmd(pol, ctx.primary, ctx.prefix, c)}"
                for c in candidates
            )
        else:
            fix = (
                f"add a store with another {noun} to this policy and copy there with `daulat exit`"
            )
        return Finding(pol.label, rule, None, Status.FAIL, why, fix, cov.objects, cov.bytes, data)

    def verify_age(self, ctx: _Ctx, replica: str, max_days: float) -> Finding:
        pol, cov, rule = ctx.pol, ctx.coverage, "max_verify_age_days"
        if cov is None:
            return self._unscanned(ctx, rule, replica)
        c = cov.copies[replica]
        src = self.addr(ctx.primary, ctx.prefix)
        data: dict[str, Any] = {"max_days": max_days, **_copies_json(c, cov.objects)}
        if cov.objects == 0:
            why = f"{ctx.primary} holds no objects: nothing to verify at {replica}"
            return Finding(pol.label, rule, replica, Status.PASS, why, None, 0, 0, data)
        if not c.verified or c.oldest_verify is None:
            if c.unverified or c.stale:
                why = f"{replica} holds copies of {ctx.primary}'s objects, but none passed the latest verification"
                fix = (
                    f"`daulat verify {src} {replica}`"
                    if not c.stale
                    else self.exit_cmd(pol, ctx.primary, ctx.prefix, replica)
                )
            else:
                why = f"{replica} holds no verified copy of {ctx.primary}'s objects: nothing was ever verified there"
                fix = self.exit_cmd(pol, ctx.primary, ctx.prefix, replica)
            return Finding(
                pol.label, rule, replica, Status.FAIL, why, fix, cov.objects, cov.bytes, data
            )
        age = self.age(c.oldest_verify)
        data |= {"age_days": round(age, 3)}
        partial = (
            ""
            if c.verified == cov.objects
            else f" (only {c.verified:,} of {plural(cov.objects, 'object')} are verified there; see min_replicas)"
        )
        if age <= max_days:
            why = f"{replica} was last verified {_days(age)} ago ({c.oldest_verify}), within {_days_allowed(max_days)}{partial}"
            return Finding(
                pol.label, rule, replica, Status.PASS, why, None, c.verified, c.verified_bytes, data
            )
        why = (
            f"{replica} was last verified {_days(age)} ago ({c.oldest_verify}); the policy allows "
            f"{_days_allowed(max_days)}{partial}"
        )
        fix = f"`daulat verify {src} {replica}` (reads listings only; add --full to re-hash), and schedule it more often than every {_days_allowed(max_days)}"
        return Finding(
            pol.label, rule, replica, Status.FAIL, why, fix, c.verified, c.verified_bytes, data
        )


def _copies_json(c: _Copies, total: int) -> dict[str, Any]:
    return {
        "verified": c.verified,
        "verified_bytes": c.verified_bytes,
        "unverified": c.unverified,
        "stale": c.stale,
        "missing": total - c.verified - c.unverified - c.stale,
        "oldest_verify": c.oldest_verify,
        "newest_verify": c.newest_verify,
    }


def _days_allowed(days: float) -> str:
    """A policy's number of days as people read it: "1 day", "7 days", "0.5 days"."""
    return f"{days:g} day" if days == 1 else f"{days:g} days"
