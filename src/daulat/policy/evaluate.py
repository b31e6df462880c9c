"""Evaluating policies: resolve each policy's stores and primary, then judge its rules."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from daulat.audit import audited
from daulat.config import Config
from daulat.errors import ManifestError
from daulat.policy.context import DrillLookup, _Ctx
from daulat.policy.copies import _CopyRules
from daulat.policy.exit_time import _ExitTimeRule, drill_exit_hours
from daulat.policy.findings import Finding, PolicyReport, PolicyResult, Status
from daulat.policy.law import _LawRules
from daulat.policy.spec import HoldingSelector, _load, _Policy
from daulat.policy.state import _State


def evaluate_policies(
    config: Config,
    *,
    strict: bool = False,
    now: datetime | None = None,
    latest_exit_hours: DrillLookup | None = None,
) -> PolicyResult:
    """Evaluate every ``[[policies]]`` table of ``config`` against the provider catalogue, the
    manifest and the transfer journal under ``config.state_dir`` (opened read-only; missing
    state makes the rules that need it "unknown").

    Raises :class:`ConfigError` for invalid policies (exit 2) and
    :class:`~daulat.errors.ManifestError` for unreadable state databases.
    """
    policies = _load(config)
    when = now or datetime.now(UTC)
    state = _State(config.state_dir)
    try:
        hook = latest_exit_hours or drill_exit_hours(config.state_dir)
        ev = _Evaluator(config, state, when, hook)
        try:
            reports = [ev.evaluate(p) for p in policies]
        except sqlite3.DatabaseError as exc:
            raise ManifestError(f"cannot read the state in {config.state_dir}: {exc}") from None
        return PolicyResult(reports, strict, when, state.manifest, state.journal)
    finally:
        state.close()


def check_policies(config: Config, *, strict: bool = False) -> PolicyResult:
    """:func:`evaluate_policies`, recorded in the audit log however it ends: what ``daulat
    check`` runs, and ``daulat.check`` from Python."""
    with audited(config.state_dir, "check", {"strict": strict}) as audit:
        result = evaluate_policies(config, strict=strict)
        audit.update(
            {
                "status": str(result.status),
                "exit_code": result.exit_code,
                "findings": len(result.findings),
                "failed": result.count(Status.FAIL),
            }
        )
    return result


class _Evaluator(_LawRules, _CopyRules, _ExitTimeRule):
    # stores and primary

    def resolve_stores(self, pol: _Policy) -> list[str]:
        spec = pol.spec
        if isinstance(spec.stores, list):
            return list(spec.stores)
        prefix = spec.stores.holding
        direct = {s for s in self.config.stores if self.state.holds(s, prefix)}
        if spec.primary is not None:
            direct.add(spec.primary)
        reached = {
            p.dst
            for p in self.state.pairs
            if p.src in direct
            and not p.restore
            and p.dst in self.config.stores
            and (p.src_prefix.startswith(prefix) or prefix.startswith(p.src_prefix))
        }
        return [s for s in self.config.stores if s in direct | reached]

    def find_primary(self, pol: _Policy, stores: list[str]) -> tuple[str, str]:
        if pol.spec.primary is not None:
            return pol.spec.primary, "declared with primary = …"
        members = set(stores)
        edges = [
            (p.src, p.dst)
            for p in self.state.pairs
            if p.src in members and p.dst in members and p.src != p.dst and not p.restore
        ]
        sources = {s for s, _ in edges}
        dests = {d for _, d in edges}
        candidates = [s for s in stores if s in sources and s not in dests]
        if candidates:
            to = sorted({d for s, d in edges if s == candidates[0]})
            reason = f"inferred: daulat copied from it to {', '.join(to)} and never into it"
            if len(candidates) > 1:
                reason += (
                    f" (also only a source: {', '.join(candidates[1:])}; set primary = … to choose)"
                )
            return candidates[0], reason
        first = (
            "first listed store" if isinstance(pol.spec.stores, list) else "first selected store"
        )
        return stores[0], f"{first} (no copy between the policy's stores in the journal)"

    # the rules

    def evaluate(self, pol: _Policy) -> PolicyReport:
        spec = pol.spec
        prefix = spec.stores.holding if isinstance(spec.stores, HoldingSelector) else ""
        stores = self.resolve_stores(pol)
        if not stores:
            assert isinstance(spec.stores, HoldingSelector)
            finding = Finding(
                pol.label,
                "stores",
                None,
                Status.UNKNOWN,
                f"no scanned store holds keys under {prefix!r}, so the policy applies to no store "
                "yet" + ("" if self.state.manifest else " (no manifest: nothing was ever scanned)"),
                "scan the stores that hold this data: `daulat scan`",
            )
            return PolicyReport(
                pol.label, pol.index, [], None, "no store selected", prefix, [finding]
            )
        primary, reason = self.find_primary(pol, stores)
        replicas = [s for s in stores if s != primary]
        scan = self.state.last_scan(primary)
        coverage = None
        if scan is not None:
            coverage = self.state.coverage(primary, prefix, replicas, spec.min_replicas or 1)
        ctx = _Ctx(pol, primary, replicas, prefix, scan, coverage)
        findings: list[Finding] = []
        if spec.residency is not None:
            findings += [self.residency(ctx, s) for s in stores]
        if spec.encrypt_when_foreign_law:
            findings += [self.encryption(ctx, s) for s in stores]
        if spec.min_replicas is not None:
            findings.append(self.min_replicas(ctx, spec.min_replicas))
        if spec.distinct_providers is not None:
            findings.append(self.distinct(ctx, "distinct_providers", spec.distinct_providers))
        if spec.distinct_jurisdictions is not None:
            findings.append(
                self.distinct(ctx, "distinct_jurisdictions", spec.distinct_jurisdictions)
            )
        if spec.max_verify_age_days is not None:
            findings += [self.verify_age(ctx, r, spec.max_verify_age_days) for r in replicas]
        if spec.max_exit_hours is not None:
            findings.append(self.exit_hours(ctx, spec.max_exit_hours))
        return PolicyReport(pol.label, pol.index, stores, primary, reason, prefix, findings)
