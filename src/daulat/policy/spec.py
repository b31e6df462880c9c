"""The ``[[policies]]`` tables: the rules a policy can state, their model and validation."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from daulat.config import Config
from daulat.errors import ConfigError
from daulat.providers import ISO_3166_ALPHA2

RULES = (
    "residency",
    "encrypt_when_foreign_law",
    "min_replicas",
    "distinct_providers",
    "distinct_jurisdictions",
    "max_verify_age_days",
    "max_exit_hours",
)

_EU = "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK"
COUNTRY_GROUPS: dict[str, frozenset[str]] = {
    "EU": frozenset(_EU.split()),  # the 27 member states
    "EEA": frozenset(_EU.split()) | {"IS", "LI", "NO"},
}


class HoldingSelector(BaseModel):
    """``stores = { holding = "PREFIX" }``: the stores that hold keys under ``PREFIX``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    holding: str


class PolicySpec(BaseModel):
    """One ``[[policies]]`` table, as written."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str | None = None
    stores: list[str] | HoldingSelector
    primary: str | None = None
    residency: list[str] | None = None
    min_replicas: int | None = Field(default=None, ge=1)
    distinct_providers: int | None = Field(default=None, ge=1)
    distinct_jurisdictions: int | None = Field(default=None, ge=1)
    encrypt_when_foreign_law: bool = False
    max_verify_age_days: float | None = Field(default=None, gt=0)
    max_exit_hours: float | None = Field(default=None, gt=0)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty")
        return v

    @field_validator("stores", mode="before")
    @classmethod
    def _stores(cls, v: Any) -> Any:
        example = 'stores = ["a", "b"] or stores = { holding = "pemilu-2024/" }'
        if isinstance(v, dict):
            if set(v) != {"holding"}:
                extra = sorted(set(v) - {"holding"})
                what = f"unknown selector key {extra[0]!r}" if extra else "no 'holding' key"
                raise ValueError(f"{what}: a selector has one key, holding ({example})")
            holding = v["holding"]
            if not isinstance(holding, str) or not holding:
                raise ValueError(
                    "selector 'holding' must be a non-empty key prefix such as \"pemilu-2024/\""
                )
            return HoldingSelector(holding=holding)
        if isinstance(v, list):
            if not v:
                raise ValueError("lists no store")
            if not all(isinstance(s, str) for s in v):
                raise ValueError(f"must list store names as strings ({example})")
            dups = sorted({s for s in v if v.count(s) > 1})
            if dups:
                raise ValueError(f"lists {dups[0]!r} twice")
            return v
        raise ValueError(f"must be a list of store names or a selector ({example})")

    @field_validator("residency", mode="before")
    @classmethod
    def _residency(cls, v: Any) -> Any:
        if not isinstance(v, list):
            raise ValueError('must be a list of country codes such as ["ID"] or ["EU"]')
        if not v:
            raise ValueError("lists no country: omit it, or name the countries allowed")
        for code in v:
            if not isinstance(code, str):
                raise ValueError(f"{code!r} is not a country code")
            if code in COUNTRY_GROUPS or code in ISO_3166_ALPHA2:
                continue
            hint = ""
            if code.upper() in ISO_3166_ALPHA2 or code.upper() in COUNTRY_GROUPS:
                hint = f" (write it in capitals: {code.upper()!r})"
            elif code.upper() == "UK":
                hint = " (the United Kingdom is 'GB')"
            raise ValueError(
                f"{code!r} is not an ISO 3166-1 alpha-2 country code such as 'ID' or 'DE', "
                f"nor a group ({', '.join(COUNTRY_GROUPS)}){hint}"
            )
        return v


@dataclass(frozen=True)
class _Policy:
    index: int  # 1-based, in file order
    spec: PolicySpec

    @property
    def label(self) -> str:
        return self.spec.name or f"policy #{self.index}"

    @property
    def allowed(self) -> frozenset[str] | None:
        if self.spec.residency is None:
            return None
        out: set[str] = set()
        for code in self.spec.residency:
            out |= COUNTRY_GROUPS.get(code, {code})
        return frozenset(out)

    @property
    def residency_text(self) -> str:
        return ", ".join(self.spec.residency or [])


def load_policies(config: Config) -> list[PolicySpec]:
    """Validate ``config.raw_policies``; raises :class:`ConfigError` with one line per problem."""
    return [p.spec for p in _load(config)]


def _load(config: Config) -> list[_Policy]:
    problems: list[str] = []
    policies: list[_Policy] = []
    names: dict[str, int] = {}
    for i, raw in enumerate(config.raw_policies, start=1):
        name = raw.get("name") if isinstance(raw.get("name"), str) else None
        where = f"{config.path}: policy #{i}" + (f" {name!r}" if name else "")
        if name is not None:
            if name in names:
                problems.append(
                    f"{where}: field 'name': policy #{names[name]} has the same name; names "
                    "must be unique so findings can be told apart"
                )
            names.setdefault(name, i)
        try:
            spec = PolicySpec.model_validate(raw)
        except ValidationError as exc:
            problems.extend(f"{where}: {_describe(err)}" for err in exc.errors())
            listed = raw.get("stores")
            if isinstance(listed, list) and all(isinstance(s, str) for s in listed):
                problems.extend(
                    f"{where}: {_unknown_store(config, s, 'stores')}"
                    for s in listed
                    if s not in config.stores
                )
            continue
        problems.extend(f"{where}: {p}" for p in _check(spec, config))
        policies.append(_Policy(i, spec))
    if problems:
        raise ConfigError("\n".join(problems))
    return policies


def _describe(err: Any) -> str:
    loc = ".".join(str(part) for part in err["loc"]) or "?"
    kind = err["type"]
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(loc, list(PolicySpec.model_fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        valid = ", ".join(PolicySpec.model_fields)
        return f"unknown field {loc!r}{hint}; a policy takes: {valid}"
    if kind == "missing":
        return f"missing required field {loc!r}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind.endswith("_type") or kind in ("greater_than", "greater_than_equal"):
        msg = f"{msg} (got {err['input']!r})"
    return f"field {loc!r}: {msg}"


def _unknown_store(config: Config, name: str, fld: str) -> str:
    known = list(config.stores)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listing = ", ".join(known) or "none configured"
    return f"field {fld!r}: unknown store {name!r} (known: {listing}){hint}"


def _check(spec: PolicySpec, config: Config) -> list[str]:
    problems: list[str] = []
    if isinstance(spec.stores, list):
        problems.extend(
            _unknown_store(config, s, "stores") for s in spec.stores if s not in config.stores
        )
        if spec.primary is not None and spec.primary not in spec.stores:
            problems.append(f"field 'primary': {spec.primary!r} is not among the policy's stores")
        n = len(spec.stores)
        for fld in ("min_replicas", "distinct_providers", "distinct_jurisdictions"):
            value = getattr(spec, fld)
            if value is not None and value > n:
                problems.append(
                    f"field {fld!r}: {value} cannot be met by the {n} store(s) the policy lists"
                )
    if spec.primary is not None and spec.primary not in config.stores:
        problems.append(_unknown_store(config, spec.primary, "primary"))
    rules = [r for r in RULES if r != "encrypt_when_foreign_law" and getattr(spec, r) is not None]
    if not rules and not spec.encrypt_when_foreign_law:
        problems.append(f"states no rule: give at least one of {', '.join(RULES)}")
    return problems
