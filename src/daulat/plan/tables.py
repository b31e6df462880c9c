"""The sourced tables: provider limits (``data/limits.toml``) and prices, exit programmes and
the law on switching charges (``data/prices.toml``).

Every entry carries its source URL and either its value with the date it was read or no value
and a note that says "not read": the loader refuses anything else, so a plan never shows a
number nobody read. Values a third party reports about a provider's page are kept apart
(:class:`Reported`) and never mixed into the provider's own figures.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from importlib import resources
from typing import Any, TypeVar

from daulat.errors import DaulatError

LIMITS_FILE = "data/limits.toml"
PRICES_FILE = "data/prices.toml"

PROVIDERS = frozenset({"aws", "azure", "gcp", "alibaba"})
SIDES = frozenset({"source", "destination", "any"})
METRICS = {
    "egress_bps": "bit/s",
    "ingress_bps": "bit/s",
    "read_rps": "requests/s",
    "write_rps": "requests/s",
    "requests_rps": "requests/s",
}
ITEMS = frozenset({"egress", "get", "put", "list"})
# Price unit → (quantity unit, how many of the thing one priced quantity is).
PRICE_UNITS: dict[str, tuple[str, float]] = {
    "USD/GB": ("bytes", 1e9),
    "USD/GiB": ("bytes", float(2**30)),
    "USD/1000 requests": ("requests", 1000.0),
    "USD/10000 requests": ("requests", 10000.0),
}
NOT_READ = "not read"


class TableError(DaulatError, ValueError):
    """A table shipped with daulat is malformed: a bug in the data file, never user input."""


@dataclass(frozen=True)
class Tier:
    up_to: float | None  # in the price unit's quantity per month; None: and beyond
    price: float


@dataclass(frozen=True)
class Reported:
    """What a third party says a provider's page says: its tiers (or conditions), its URL."""

    source: str
    read: date
    note: str
    tiers: tuple[Tier, ...] | None = None
    conditions: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Entry:
    id: str
    provider: str
    region_class: str
    regions: tuple[str, ...]
    other_regions: bool
    source: str
    read: date | None
    note: str

    @property
    def was_read(self) -> bool:
        return self.read is not None

    def covers(self, region: str | None) -> bool:
        return region is not None and region in self.regions


E = TypeVar("E", bound=_Entry)


@dataclass(frozen=True)
class Limit(_Entry):
    side: str
    metric: str
    scope: str
    value: float | None
    unit: str
    adjustable: str | None


@dataclass(frozen=True)
class Price(_Entry):
    item: str
    unit: str
    tiers: tuple[Tier, ...] | None  # None: not read
    reported: Reported | None


@dataclass(frozen=True)
class Programme:
    provider: str
    name: str
    announced: date
    covers: str
    conditions: tuple[str, ...]  # as read on the provider's page (empty when not read)
    source: str
    read: date | None
    note: str
    reported: Reported | None


@dataclass(frozen=True)
class LawRules:
    id: str
    name: str
    citation: str
    applies_from: date
    rules: tuple[str, ...]
    source: str
    read: date
    note: str


@dataclass(frozen=True)
class Tables:
    limits: tuple[Limit, ...]
    prices: tuple[Price, ...]
    programmes: tuple[Programme, ...]
    laws: tuple[LawRules, ...]

    def limits_for(self, provider: str, region: str | None, side: str) -> list[Limit]:
        """The limits of ``provider`` that apply on ``side`` for a store in ``region``: per
        metric, the entry listing the region, else the one for other regions; with the region
        unknown, every entry (the plan shows each region class)."""
        pool = [x for x in self.limits if x.provider == provider and x.side in (side, "any")]
        return _by_region(pool, region, lambda x: x.metric)

    def price_for(self, provider: str, region: str | None, item: str) -> list[Price]:
        pool = [x for x in self.prices if x.provider == provider and x.item == item]
        return _by_region(pool, region, lambda x: x.item)

    def programme_for(self, provider: str) -> Programme | None:
        return next((p for p in self.programmes if p.provider == provider), None)


def _by_region(pool: list[E], region: str | None, key: Any) -> list[E]:
    out: list[E] = []
    for k in dict.fromkeys(key(x) for x in pool):
        same = [x for x in pool if key(x) == k]
        if region is None:
            out += same
            continue
        listed = [x for x in same if x.covers(region)]
        out += listed or [x for x in same if x.other_regions]
    return out


# --- loading ------------------------------------------------------------------------------


@functools.cache
def load_tables() -> Tables:
    """The tables shipped with daulat, validated (cached: package data cannot change)."""
    limits = _read(LIMITS_FILE)
    prices = _read(PRICES_FILE)
    return parse_tables(limits, prices)


def _read(name: str) -> dict[str, Any]:
    text = resources.files("daulat").joinpath(name).read_text(encoding="utf-8")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TableError(f"{name}: {exc}") from None


def parse_tables(limits: Mapping[str, Any], prices: Mapping[str, Any]) -> Tables:
    """Validate the two files' contents (see the module docstring for the rules)."""
    out_limits = tuple(_limit(d) for d in limits.get("limits", []))
    out_prices = tuple(_price(d) for d in prices.get("prices", []))
    programmes = tuple(_programme(d) for d in prices.get("programmes", []))
    laws = tuple(_law(d) for d in prices.get("laws", []))
    ids = [x.id for x in out_limits] + [x.id for x in out_prices]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise TableError(f"duplicate table ids: {', '.join(dupes)}")
    return Tables(out_limits, out_prices, programmes, laws)


def _where(d: Mapping[str, Any]) -> str:
    return str(d.get("id") or d.get("name") or d)


def _str(d: Mapping[str, Any], key: str, *, optional: bool = False) -> str:
    v = d.get(key)
    if v is None and optional:
        return ""
    if not isinstance(v, str) or not v.strip():
        raise TableError(f"{_where(d)}: field {key!r} must be a non-empty string")
    return v


def _url(d: Mapping[str, Any], key: str = "source") -> str:
    v = _str(d, key)
    if not re.fullmatch(r"https://[^\s]+", v):
        raise TableError(f"{_where(d)}: {key} {v!r} is not an https URL")
    return v


def _date(d: Mapping[str, Any], key: str) -> date | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, date):
        return v
    if not isinstance(v, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
        raise TableError(f"{_where(d)}: {key} {v!r} is not a date YYYY-MM-DD")
    try:
        return date.fromisoformat(v)
    except ValueError:
        raise TableError(f"{_where(d)}: {key} {v!r} is not a date") from None


def _read_or_not(d: Mapping[str, Any], has_value: bool) -> tuple[date | None, str]:
    """The read date and note: a value needs a date; no value needs a note 'not read…'."""
    read = _date(d, "read")
    note = _str(d, "note", optional=True)
    if has_value and read is None:
        raise TableError(f"{_where(d)}: a value without the date it was read ('read')")
    if not has_value:
        if read is not None:
            raise TableError(f"{_where(d)}: 'read' given but no value: was it read or not?")
        if not note.lower().startswith(NOT_READ):
            raise TableError(f"{_where(d)}: no value, so its note must begin 'not read'")
    return read, note


def _common(d: Mapping[str, Any]) -> dict[str, Any]:
    provider = _str(d, "provider")
    if provider not in PROVIDERS:
        raise TableError(f"{_where(d)}: unknown provider {provider!r}")
    regions = d.get("regions", [])
    if not isinstance(regions, list) or not all(isinstance(r, str) for r in regions):
        raise TableError(f"{_where(d)}: regions must be a list of region ids")
    other = d.get("other_regions", False)
    if not isinstance(other, bool) or (other and regions) or (not other and not regions):
        raise TableError(f"{_where(d)}: give either regions or other_regions = true")
    return {
        "id": _str(d, "id"),
        "provider": provider,
        "region_class": _str(d, "region_class"),
        "regions": tuple(regions),
        "other_regions": other,
        "source": _url(d),
    }


def _number(d: Mapping[str, Any], key: str) -> float | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise TableError(f"{_where(d)}: {key} must be a number >= 0")
    return float(v)


def _limit(d: Mapping[str, Any]) -> Limit:
    common = _common(d)
    metric = _str(d, "metric")
    if metric not in METRICS:
        raise TableError(f"{_where(d)}: unknown metric {metric!r}")
    unit = _str(d, "unit")
    if unit != METRICS[metric]:
        raise TableError(f"{_where(d)}: {metric} is in {METRICS[metric]}, not {unit!r}")
    side = _str(d, "side")
    if side not in SIDES:
        raise TableError(f"{_where(d)}: side must be one of {sorted(SIDES)}")
    value = _number(d, "value")
    if value == 0:
        raise TableError(f"{_where(d)}: a limit of 0")
    read, note = _read_or_not(d, value is not None)
    return Limit(
        **common,
        read=read,
        note=note,
        side=side,
        metric=metric,
        scope=_str(d, "scope"),
        value=value,
        unit=unit,
        adjustable=d.get("adjustable"),
    )


def _tiers(d: Mapping[str, Any]) -> tuple[Tier, ...] | None:
    raw = d.get("tiers")
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise TableError(f"{_where(d)}: tiers must be a non-empty list")
    tiers = []
    last = 0.0
    for i, t in enumerate(raw):
        price = _number(t, "price")
        up_to = _number(t, "up_to")
        if price is None:
            raise TableError(f"{_where(d)}: tier {i + 1} has no price")
        if (up_to is None) != (i == len(raw) - 1):
            raise TableError(f"{_where(d)}: only the last tier is open-ended (no up_to)")
        if up_to is not None:
            if up_to <= last:
                raise TableError(f"{_where(d)}: tiers must grow")
            last = up_to
        tiers.append(Tier(up_to, price))
    return tuple(tiers)


def _reported(d: Mapping[str, Any]) -> Reported | None:
    raw = d.get("reported")
    if raw is None:
        return None
    read = _date(raw, "read")
    if read is None:
        raise TableError(f"{_where(d)}: a reported value needs the date it was read")
    conditions = raw.get("conditions", [])
    if not isinstance(conditions, list) or not all(isinstance(c, str) for c in conditions):
        raise TableError(f"{_where(d)}: reported conditions must be a list of strings")
    return Reported(_url(raw), read, _str(raw, "note"), _tiers(raw), tuple(conditions))


def _price(d: Mapping[str, Any]) -> Price:
    common = _common(d)
    item = _str(d, "item")
    if item not in ITEMS:
        raise TableError(f"{_where(d)}: unknown item {item!r}")
    unit = _str(d, "unit")
    if unit not in PRICE_UNITS:
        raise TableError(f"{_where(d)}: unknown unit {unit!r}")
    if (PRICE_UNITS[unit][0] == "bytes") != (item == "egress"):
        raise TableError(f"{_where(d)}: {item} is not priced in {unit}")
    tiers = _tiers(d)
    read, note = _read_or_not(d, tiers is not None)
    return Price(
        **common, read=read, note=note, item=item, unit=unit, tiers=tiers, reported=_reported(d)
    )


def _strings(d: Mapping[str, Any], key: str) -> tuple[str, ...]:
    v = d.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
        raise TableError(f"{_where(d)}: {key} must be a list of strings")
    return tuple(v)


def _programme(d: Mapping[str, Any]) -> Programme:
    provider = _str(d, "provider")
    if provider not in PROVIDERS:
        raise TableError(f"{_where(d)}: unknown provider {provider!r}")
    conditions = _strings(d, "conditions")
    read, note = _read_or_not(d, bool(conditions))
    announced = _date(d, "announced")
    if announced is None:
        raise TableError(f"{_where(d)}: when was it announced?")
    reported = _reported(d)
    if not conditions and (reported is None or not reported.conditions):
        raise TableError(f"{_where(d)}: no conditions, neither read nor reported")
    return Programme(
        provider,
        _str(d, "name"),
        announced,
        _str(d, "covers"),
        conditions,
        _url(d),
        read,
        note,
        reported,
    )


def _law(d: Mapping[str, Any]) -> LawRules:
    rules = _strings(d, "rules")
    read, note = _read_or_not(d, bool(rules))
    applies = _date(d, "applies_from")
    if read is None or applies is None:
        raise TableError(f"{_where(d)}: a law needs the date it was read and applies_from")
    return LawRules(
        _str(d, "id"),
        _str(d, "name"),
        _str(d, "citation"),
        applies,
        rules,
        _url(d),
        read,
        note,
    )


def tiered_cost(tiers: Sequence[Tier], quantity: float) -> float:
    """The cost of ``quantity`` (in the tiers' unit) through ``tiers``, filled in order."""
    cost, below = 0.0, 0.0
    for t in tiers:
        top = quantity if t.up_to is None else min(quantity, t.up_to)
        if top > below:
            cost += (top - below) * t.price
            below = top
        if t.up_to is not None and quantity <= t.up_to:
            break
    return cost
