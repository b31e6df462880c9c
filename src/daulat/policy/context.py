"""What every rule looks at: the policy's stores, where they are, what they hold."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from daulat.config import Config, Placement, placement_of
from daulat.policy.spec import _Policy
from daulat.policy.state import _Coverage, _Scan, _State
from daulat.providers import ProviderId, load_catalogue

# The hook for exit-time predictions: store name -> predicted hours of a full exit, or None.
DrillLookup = Callable[[str], float | None]

_SELF = "self"  # provider key shared by self-hosted and local stores: your own infrastructure


@dataclass
class _Holding:
    objects: int | None
    bytes: int | None
    source: str  # how we know, for the why


@dataclass(frozen=True)
class _Ctx:
    pol: _Policy
    primary: str
    replicas: list[str]
    prefix: str
    scan: _Scan | None
    coverage: _Coverage | None

    @property
    def stores(self) -> list[str]:
        return [self.primary, *self.replicas]


class _EvaluatorBase:
    """The evaluator's state and the helpers its rules share."""

    def __init__(self, config: Config, state: _State, now: datetime, hook: DrillLookup) -> None:
        self.config = config
        self.state = state
        self.now = now
        self.hook = hook
        self.catalogue = load_catalogue()

    # helpers

    def placement(self, store: str) -> Placement:
        return placement_of(self.config.stores[store])

    def where(self, store: str) -> str:
        cfg = self.config.stores[store]
        pl = self.placement(store)
        if cfg.region is not None and pl.provider.regions:
            region = self.catalogue.region(cfg.provider, cfg.region)
            return f"{pl.country} ({pl.provider.name} region {region.id}, {region.location}, per the provider catalogue)"
        return f"{pl.country} (declared country; {pl.provider.name})"

    def home(self, store: str) -> str:
        pl = self.placement(store)
        return pl.provider.hq_country or pl.country

    def provider_key(self, store: str) -> str:
        pid = self.config.stores[store].provider
        return _SELF if pid in (ProviderId.SELF_HOSTED, ProviderId.LOCAL) else pid.value

    def provider_label(self, store: str) -> str:
        key = self.provider_key(store)
        return "your own infrastructure" if key == _SELF else self.placement(store).provider.name

    def foreign(self, store: str, pol: _Policy) -> list[str]:
        pl = self.placement(store)
        allowed = pol.allowed
        if allowed is None:
            return [j for j in pl.jurisdictions if j != pl.country]
        return [j for j in pl.jurisdictions if j not in allowed]

    def reach_text(self, store: str, codes: Sequence[str]) -> str:
        pl = self.placement(store)
        parts = []
        for code in codes:
            if code == pl.country:
                parts.append(f"{code} law (the data sits in {code})")
            else:
                laws = [law.name for law in pl.provider.laws if law.jurisdiction == code]
                cited = f": {'; '.join(laws)}" if laws else ""
                parts.append(f"{code} law ({pl.provider.name} is headquartered in {code}{cited})")
        return " and ".join(parts)

    def recipient_hint(self, stores: Sequence[str]) -> str:
        for name in [*stores, *self.config.stores]:
            declared = self.config.stores[name].encrypt_to
            if declared:
                return declared[0]
        return "age1…"

    @staticmethod
    def addr(store: str, prefix: str) -> str:
        return f"{store}:{prefix}" if prefix else store

    def exit_cmd(self, pol: _Policy, primary: str, prefix: str, dst: str) -> str:
        cmd = f"daulat exit {self.addr(primary, prefix)} {dst}"
        cfg = self.config.stores[dst]
        if pol.spec.encrypt_when_foreign_law and self.foreign(dst, pol) and not cfg.encrypt_to:
            cmd += f" --encrypt-to {self.recipient_hint([dst])}"
        return f"`{cmd}`"

    def age(self, iso: str) -> float:
        then = datetime.fromisoformat(iso)
        if then.tzinfo is None:
            then = then.replace(tzinfo=UTC)
        return (self.now - then).total_seconds() / 86400

    def holding(self, ctx: _Ctx, store: str) -> _Holding:
        """What ``store`` holds of the policy's data, as far as daulat knows."""
        if store == ctx.primary:
            if ctx.coverage is None:
                return _Holding(None, None, "never scanned")
            assert ctx.scan is not None
            return _Holding(
                ctx.coverage.objects, ctx.coverage.bytes, f"per its {ctx.scan.described}"
            )
        pn, pb, en, eb = self.state.writes(store, ctx.stores, ctx.prefix)
        if pn + en:
            return _Holding(pn + en, pb + eb, "written by daulat, per the journal")
        scan = self.state.last_scan(store)
        if scan is not None:
            n, b = self.state.totals(store, ctx.prefix)
            return _Holding(n, b, f"per its {scan.described}")
        return _Holding(None, None, "never scanned, and daulat has copied nothing there")
