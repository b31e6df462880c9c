"""Risk per configured store: whose law reaches it, what its provider has done to customers
before, and the exposure score (see :mod:`daulat.risk.score` for the formula)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from daulat.config import Config, placement_of
from daulat.providers import ProviderId
from daulat.risk.register import Event, TargetType, events_for
from daulat.risk.score import Exposure, score_exposure

# The register files events under these ids; self-hosted and local stores have no provider
# that could cut them off.
_REGISTER_ID = {
    ProviderId.AWS: "aws",
    ProviderId.AZURE: "azure",
    ProviderId.GCP: "gcp",
    ProviderId.ALIBABA: "alibaba",
}


@dataclass(frozen=True)
class StoreRisk:
    store: str
    provider: str
    provider_name: str
    data_country: str
    home_jurisdiction: str
    jurisdictions: list[str]
    laws: list[dict[str, str]]
    events: list[Event]
    exposure: Exposure | None  # None for self-hosted and local stores

    @property
    def notice_days(self) -> list[int]:
        return sorted(e.notice_days for e in self.events if e.notice_days is not None)

    def counts(self, attr: str) -> dict[str, int]:
        return dict(Counter(str(getattr(e, attr)) for e in self.events))

    def to_json(self) -> dict[str, object]:
        return {
            "store": self.store,
            "provider": self.provider,
            "provider_name": self.provider_name,
            "data_country": self.data_country,
            "home_jurisdiction": self.home_jurisdiction,
            "jurisdictions": self.jurisdictions,
            "laws": self.laws,
            "events": len(self.events),
            "events_by_action": self.counts("action"),
            "events_by_trigger": self.counts("trigger"),
            "most_recent_event": self.events[-1].model_dump(mode="json") if self.events else None,
            "notice_days_observed": self.notice_days,
            "exposure": self.exposure.model_dump(mode="json") if self.exposure else None,
        }


def store_risks(
    config: Config, *, country: str | None = None, sector: TargetType | str | None = None
) -> list[StoreRisk]:
    """Risk of every configured store, for users in ``country`` working in ``sector``."""
    out = []
    for cfg in config.stores.values():
        placement = placement_of(cfg)
        provider = placement.provider
        home = provider.hq_country or placement.country
        register_id = _REGISTER_ID.get(cfg.provider)
        events = events_for(register_id) if register_id else []
        exposure = (
            score_exposure(
                register_id, home, placement.country, user_country=country, sector=sector
            )
            if register_id
            else None
        )
        out.append(
            StoreRisk(
                store=cfg.name,
                provider=cfg.provider.value,
                provider_name=provider.name,
                data_country=placement.country,
                home_jurisdiction=home,
                jurisdictions=placement.jurisdictions,
                laws=[
                    {"name": law.name, "citation": law.citation, "source": law.source}
                    for law in provider.laws
                ],
                events=sorted(events, key=lambda e: e.start),
                exposure=exposure,
            )
        )
    return out
