"""Exposure score: how exposed one store is to its provider cutting it off.

The score is a plain sum of six components, each capped, computed from the store's
facts and the provider's recorded events in the risk register. Nothing is learned or
weighted behind the scenes; every component carries its weight (its maximum), the points
it gave and a sentence saying why, so anyone can redo the sum by hand.

Inputs: P = provider id, H = provider HQ country, D = country the store's data sits in,
U = the users' country (optional), S = the customer's sector (optional, a TargetType),
and E = the register events counted against P (see ``events_for``).

Formula (the text of ``FORMULA``):

    CUT         = events in E with action terminate, restrict-access or delete-data
    RESTRICTIVE = CUT plus events in E with action suspend-new-sales
    LOST        = events in CUT with data_access_lost yes or partial

    jurisdiction = 30 if H differs from D, else 0                        (weight 30)
    track_record = min(20, 4 x |CUT|)                                    (weight 20)
    data_lost    = min(15, 5 x |LOST|)                                   (weight 15)
    country      = min(15, 5 x |RESTRICTIVE events targeting D or U|)    (weight 15)
    sector       = min(10, 5 x |RESTRICTIVE events with target_type S|)  (weight 10)
    notice       = 10 if the shortest known notice in CUT is <= 1 day,
                   5 if it is 2 to 30 days, else 0 (none known: 0)       (weight 10)

    score = max(0, min(100, jurisdiction + track_record + data_lost
                            + country + sector + notice))

Notes on reading it:

* The weights add up to 100 and no component is negative, so the clamp never changes
  the sum: the score is always exactly the sum of the component values.
* ``jurisdiction`` is the law question: a provider answers to the law of its home
  country wherever the data is stored (for a US provider, the CLOUD Act). H and D are
  the same jurisdiction when equal, or when H is "EU" and D is a member state.
* An event "targets" a country when that code is in its ``target_country`` list; an
  event targeting "EU" targets every member state.
* Restorations, protests and residency decisions are reported in the counts but add no
  points: they show pressure or recovery, not a cut-off.
* The register only holds what has been documented. Few events for a provider means
  little recorded history, not proof of safety; the ``other`` provider id pools many
  unrelated providers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict

from daulat.risk.register import (
    EU_MEMBER_STATES,
    Action,
    Event,
    TargetType,
    Trigger,
    events_for,
)

__all__ = [
    "COMPONENT_NAMES",
    "CUT_ACTIONS",
    "FORMULA",
    "RESTRICTIVE_ACTIONS",
    "Component",
    "ComponentName",
    "Exposure",
    "score_exposure",
]

FORMULA = """\
    CUT         = events in E with action terminate, restrict-access or delete-data
    RESTRICTIVE = CUT plus events in E with action suspend-new-sales
    LOST        = events in CUT with data_access_lost yes or partial

    jurisdiction = 30 if H differs from D, else 0                        (weight 30)
    track_record = min(20, 4 x |CUT|)                                    (weight 20)
    data_lost    = min(15, 5 x |LOST|)                                   (weight 15)
    country      = min(15, 5 x |RESTRICTIVE events targeting D or U|)    (weight 15)
    sector       = min(10, 5 x |RESTRICTIVE events with target_type S|)  (weight 10)
    notice       = 10 if the shortest known notice in CUT is <= 1 day,
                   5 if it is 2 to 30 days, else 0 (none known: 0)       (weight 10)

    score = max(0, min(100, jurisdiction + track_record + data_lost
                            + country + sector + notice))
"""

CUT_ACTIONS: frozenset[Action] = frozenset(
    {Action.TERMINATE, Action.RESTRICT_ACCESS, Action.DELETE_DATA}
)
RESTRICTIVE_ACTIONS: frozenset[Action] = CUT_ACTIONS | {Action.SUSPEND_NEW_SALES}

ComponentName = Literal["jurisdiction", "track_record", "data_lost", "country", "sector", "notice"]
COMPONENT_NAMES: tuple[ComponentName, ...] = (
    "jurisdiction",
    "track_record",
    "data_lost",
    "country",
    "sector",
    "notice",
)

# Weights (maximum points) and per-event points; they must match FORMULA above.
JURISDICTION_WEIGHT = 30
TRACK_RECORD_WEIGHT, TRACK_RECORD_PER_EVENT = 20, 4
DATA_LOST_WEIGHT, DATA_LOST_PER_EVENT = 15, 5
COUNTRY_WEIGHT, COUNTRY_PER_EVENT = 15, 5
SECTOR_WEIGHT, SECTOR_PER_EVENT = 10, 5
NOTICE_WEIGHT = 10
NOTICE_SHORT_DAYS, NOTICE_SHORT_POINTS = 1, 10
NOTICE_MEDIUM_DAYS, NOTICE_MEDIUM_POINTS = 30, 5
SCORE_MIN, SCORE_MAX = 0, 100


class Component(BaseModel):
    """One term of the sum: ``value`` points out of at most ``weight``, and why."""

    model_config = ConfigDict(frozen=True)

    name: ComponentName
    weight: int
    value: int
    reason: str


class Exposure(BaseModel):
    """The exposure of one store to its provider, with everything needed to check it."""

    model_config = ConfigDict(frozen=True)

    provider_id: str
    provider_hq_country: str
    data_country: str
    user_country: str | None
    sector: TargetType | None
    score: int
    components: tuple[Component, ...]
    events_considered: int
    counts_by_action: dict[Action, int]
    counts_by_trigger: dict[Trigger, int]
    most_recent_event: Event | None
    notice_days_observed: tuple[int, ...]
    formula: str = FORMULA

    def component(self, name: ComponentName) -> Component:
        """The component called ``name``."""
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)

    def explain(self) -> str:
        """A plain-text account of the score, one line per component."""
        lines = [f"exposure {self.score}/100 for provider {self.provider_id}"]
        lines += [f"  {c.name:<12} {c.value:>3}/{c.weight:<3} {c.reason}" for c in self.components]
        if self.most_recent_event is not None:
            e = self.most_recent_event
            lines.append(f"  most recent event: {e.date} {e.id}: {e.summary}")
        return "\n".join(lines)


def _country(value: str, what: str) -> str:
    code = value.strip().upper()
    if len(code) != 2 or not code.isascii() or not code.isalpha():
        raise ValueError(f"{what} {value!r} is not an ISO 3166-1 alpha-2 code")
    return code


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def _events(n: int) -> str:
    return f"{n} recorded event" if n == 1 else f"{n} recorded events"


def _same_jurisdiction(hq: str, data: str) -> bool:
    return hq == data or (hq == "EU" and data in EU_MEMBER_STATES)


def _jurisdiction(hq: str, data: str) -> Component:
    if _same_jurisdiction(hq, data):
        value = 0
        reason = f"provider HQ {hq} and data country {data} are one jurisdiction (+0)"
    else:
        value = JURISDICTION_WEIGHT
        reason = f"foreign law reaches data: provider HQ {hq} ≠ data country {data} (+{value})"
    return Component(name="jurisdiction", weight=JURISDICTION_WEIGHT, value=value, reason=reason)


def _track_record(provider: str, cut: list[Event]) -> Component:
    n = len(cut)
    value = min(TRACK_RECORD_WEIGHT, TRACK_RECORD_PER_EVENT * n)
    reason = (
        f"{_events(n)} of {provider} cutting customers off (terminate, restrict-access or "
        f"delete-data): {TRACK_RECORD_PER_EVENT} x {n}, capped at {TRACK_RECORD_WEIGHT} "
        f"(+{value})"
    )
    return Component(name="track_record", weight=TRACK_RECORD_WEIGHT, value=value, reason=reason)


def _data_lost(cut: list[Event]) -> Component:
    k = sum(1 for e in cut if e.cut_data_access)
    value = min(DATA_LOST_WEIGHT, DATA_LOST_PER_EVENT * k)
    reason = (
        f"{k} of those {len(cut)} cut data access fully or partly: "
        f"{DATA_LOST_PER_EVENT} x {k}, capped at {DATA_LOST_WEIGHT} (+{value})"
    )
    return Component(name="data_lost", weight=DATA_LOST_WEIGHT, value=value, reason=reason)


def _country_component(
    provider: str, restrictive: list[Event], data: str, user: str | None
) -> Component:
    places = [data] if user is None or user == data else [data, user]
    hits = [e for e in restrictive if any(e.targets_country(c) for c in places)]
    n = len(hits)
    value = min(COUNTRY_WEIGHT, COUNTRY_PER_EVENT * n)
    where = " or ".join(places)
    k = sum(1 for e in hits if e.cut_data_access)
    reason = (
        f"{_events(n)} of {provider} restricting customers in {where}, of which {k} cut "
        f"data access: {COUNTRY_PER_EVENT} x {n}, capped at {COUNTRY_WEIGHT} (+{value})"
    )
    return Component(name="country", weight=COUNTRY_WEIGHT, value=value, reason=reason)


def _sector_component(
    provider: str, restrictive: list[Event], sector: TargetType | None
) -> Component:
    if sector is None:
        return Component(
            name="sector", weight=SECTOR_WEIGHT, value=0, reason="sector not given (+0)"
        )
    hits = [e for e in restrictive if e.target_type is sector]
    n = len(hits)
    k = sum(1 for e in hits if e.cut_data_access)
    value = min(SECTOR_WEIGHT, SECTOR_PER_EVENT * n)
    reason = (
        f"{_events(n)} of {provider} restricting customers in sector {sector.value}, of which "
        f"{k} cut data access: {SECTOR_PER_EVENT} x {n}, capped at {SECTOR_WEIGHT} (+{value})"
    )
    return Component(name="sector", weight=SECTOR_WEIGHT, value=value, reason=reason)


def _notice(provider: str, cut: list[Event]) -> Component:
    known = [e for e in cut if e.notice_days is not None]
    if not known:
        return Component(
            name="notice",
            weight=NOTICE_WEIGHT,
            value=0,
            reason=f"no notice period recorded for cut-offs by {provider} (+0)",
        )
    shortest = min(known, key=lambda e: (e.notice_days or 0, e.start, e.id))
    days = shortest.notice_days or 0
    if days <= NOTICE_SHORT_DAYS:
        value, band = NOTICE_SHORT_POINTS, f"at most {_days(NOTICE_SHORT_DAYS)}"
    elif days <= NOTICE_MEDIUM_DAYS:
        value, band = NOTICE_MEDIUM_POINTS, f"{NOTICE_SHORT_DAYS + 1} to {NOTICE_MEDIUM_DAYS} days"
    else:
        value, band = 0, f"more than {NOTICE_MEDIUM_DAYS} days"
    reason = f"shortest recorded notice: {_days(days)} ({shortest.id}), {band} (+{value})"
    return Component(name="notice", weight=NOTICE_WEIGHT, value=value, reason=reason)


def score_exposure(
    provider_id: str,
    provider_hq_country: str,
    data_country: str,
    *,
    user_country: str | None = None,
    sector: TargetType | str | None = None,
    events: Iterable[Event] | None = None,
) -> Exposure:
    """Score one store's exposure to its provider (0 to 100) using the documented formula.

    ``events`` defaults to the packaged register; pass a list to score against other
    events (only those counted against ``provider_id`` are used).
    """
    provider = provider_id.strip().lower()
    hq = _country(provider_hq_country, "provider HQ country")
    data = _country(data_country, "data country")
    user = None if user_country is None else _country(user_country, "user country")
    kind = None if sector is None else TargetType(sector)

    considered = events_for(provider, events=events)
    cut = [e for e in considered if e.action in CUT_ACTIONS]
    restrictive = [e for e in considered if e.action in RESTRICTIVE_ACTIONS]

    components = (
        _jurisdiction(hq, data),
        _track_record(provider, cut),
        _data_lost(cut),
        _country_component(provider, restrictive, data, user),
        _sector_component(provider, restrictive, kind),
        _notice(provider, cut),
    )
    total = sum(c.value for c in components)
    score = max(SCORE_MIN, min(SCORE_MAX, total))

    by_action = {a: 0 for a in Action}
    by_trigger = {t: 0 for t in Trigger}
    for e in considered:
        by_action[e.action] += 1
        by_trigger[e.trigger] += 1
    most_recent = max(considered, key=lambda e: (e.start, e.id), default=None)
    notices = tuple(sorted(e.notice_days for e in considered if e.notice_days is not None))

    return Exposure(
        provider_id=provider,
        provider_hq_country=hq,
        data_country=data,
        user_country=user,
        sector=kind,
        score=score,
        components=components,
        events_considered=len(considered),
        counts_by_action=by_action,
        counts_by_trigger=by_trigger,
        most_recent_event=most_recent,
        notice_days_observed=notices,
    )
