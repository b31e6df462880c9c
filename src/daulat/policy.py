"""Policy as code: ``[[policies]]`` in ``daulat.toml`` → findings, like tests for where data lives.

A policy names the stores that hold one body of data and the rules that data must obey::

    [[policies]]
    name = "election data stays in Indonesia, two copies, encrypted where foreign law reaches"
    stores = ["kpu-alibaba", "vault"]   # or a selector: stores = { holding = "pemilu-2024/" }
    primary = "kpu-alibaba"             # optional: where the data originates (see below)
    residency = ["ID"]                  # countries where the data may be stored ("EU", "EEA" too)
    min_replicas = 2                    # verified copies across distinct stores, primary included
    distinct_providers = 2              # optional: verified copies with this many providers
    distinct_jurisdictions = 2          # optional: ... under this many provider home jurisdictions
    encrypt_when_foreign_law = true     # copies a foreign law can reach must be age-encrypted
    max_verify_age_days = 7             # every replica re-verified within this many days
    max_exit_hours = 24                 # predicted full exit of the primary (needs drill data)

Every key but ``stores`` is optional, but a policy must state at least one rule. Policies are
validated with pydantic (unknown keys, unknown stores, bad country codes, wrong types): every
problem becomes one line of a :class:`~daulat.errors.ConfigError` naming the file, the policy (by
index and name) and the field, so ``daulat check`` exits 2 without a traceback.

Stores and the primary
    ``stores = [...]`` lists configured store names. The selector ``stores = { holding = PREFIX }``
    picks (a) every store whose latest manifest scan lists a key starting with ``PREFIX`` (a plain
    string prefix, usually ending in ``/``) and (b) every store daulat copied such keys to (journal
    pairs from a store of (a) whose source prefix overlaps ``PREFIX``), in ``daulat.toml`` order;
    the data the policy governs is then the keys under ``PREFIX`` at the primary (with a list it is
    the whole primary store); a selector that matches no store yields a single "unknown" finding
    with rule ``stores``. The *primary* is where the data originates: ``primary = NAME`` if
    given; else the first policy store that daulat copied from (to another policy store) and never
    into (restores aside); else the first store of the list. Replicas are the other stores.

What each rule looks at (read-only; nothing under ``.daulat/`` is created or changed)
    - ``residency``: the country of each store, from its declared ``region`` via the provider
      catalogue, or its declared ``country`` -- never from where an IP address seems to resolve.
      A policy store outside the list fails even before it holds anything: the policy names it
      as a place for this data.
    - ``encrypt_when_foreign_law``: the jurisdictions reaching a store are the data-centre country
      and the provider's home country (``hq_country``; none for self-hosted/local). A foreign law
      reaches the store when one of them is outside ``residency`` (without ``residency``: differs
      from the data-centre country). At a replica, each key daulat wrote counts by its latest
      write: encrypted when that write came through an ``[age:...]`` pair of the journal (so a
      plaintext copy later re-made encrypted passes, and one made before ``encrypt_to`` was
      declared still fails); a store daulat wrote nothing to passes when it declares
      ``encrypt_to``, is "unknown" when a scan shows objects daulat did not write (or it was
      never scanned), and passes when a scan shows it empty. **The primary** cannot be
      encrypted by daulat (the data is born there in clear): when a foreign law reaches it the rule
      *fails*, naming the plaintext objects, and the fix says what ends the exposure -- move the
      data's home to a store only allowed law reaches (``daulat exit``) or encrypt in the
      application before upload. Provider-side encryption does not count: the provider holds those
      keys. We chose "fail" over "unknown" or "pass" because the exposure is real and known.
    - ``min_replicas``: per object of the primary (latest scan), the number of stores holding a
      *verified* copy: the primary itself plus each replica whose journal row for that object is
      done, verified by the latest verification of its pair, and recorded from the same source
      version (size and ETag as the scan saw them). Every object needs ``min_replicas`` copies. A
      replica holding only some objects is reported as partial, with counts; objects copied but
      not verified, changed at the primary since the copy, or never copied are counted apart.
    - ``distinct_providers`` / ``distinct_jurisdictions``: among the stores holding a complete
      verified copy (the primary and complete replicas). Self-hosted and local stores count as one
      provider (your own infrastructure); their home jurisdiction is their declared country.
    - ``max_verify_age_days``: per replica, the oldest of the newest successful verifications of
      its verified objects (with one pair per replica: simply the last ``daulat verify``/``exit``).
    - ``max_exit_hours``: the predicted hours to evacuate the primary, from the
      ``latest_exit_hours`` hook of :func:`evaluate_policies`; by default from a ``drills`` table
      in ``.daulat/`` (see :func:`drill_exit_hours`). Without drill data the rule is "unknown".

Statuses and exit codes
    Each rule yields :class:`Finding` objects with status ``pass``, ``fail`` or ``unknown``. A rule
    that cannot be evaluated yet (a store never scanned, no drill data) is ``unknown``, never
    ``pass``. :attr:`PolicyResult.exit_code` is the exit code ``daulat check`` must return:

    - **1** if any finding fails;
    - **0** if none fails -- also when some are unknown: unknown ≠ pass, so the findings and
      :func:`render_findings` show a visible warning, but nothing was shown to be violated;
    - **1** also when some finding is unknown and ``strict=True`` (``daulat check --strict``), for
      CI gates that must prove every rule; likewise with no policies at all;
    - **2** for configuration errors: :func:`evaluate_policies` raises
      :class:`~daulat.errors.ConfigError` (the CLI already maps it to 2).

Usage::

    result = evaluate_policies(config, strict=strict)
    if as_json: print(json.dumps(result.to_json()))
    else: render_findings(result, console)
    exit_code = result.exit_code
"""

from __future__ import annotations

import difflib
import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rich.console import Console
from rich.markup import escape

from daulat.config import Config, Placement, placement_of
from daulat.drill import latest_exit_hours
from daulat.errors import ConfigError, ManifestError
from daulat.manifest import MANIFEST_NAME
from daulat.providers import ISO_3166_ALPHA2, ProviderId, load_catalogue
from daulat.transfer.journal import JOURNAL_NAME

__all__ = [
    "COUNTRY_GROUPS",
    "RULES",
    "DrillLookup",
    "Finding",
    "HoldingSelector",
    "PolicyReport",
    "PolicyResult",
    "PolicySpec",
    "Status",
    "drill_exit_hours",
    "evaluate_policies",
    "load_policies",
    "render_findings",
]

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

# The hook for exit-time predictions: store name -> predicted hours of a full exit, or None.
DrillLookup = Callable[[str], float | None]

_SELF = "self"  # provider key shared by self-hosted and local stores: your own infrastructure
_PAIR = re.compile(
    r"^(?P<src>[A-Za-z0-9][A-Za-z0-9._-]*):(?P<sp>.*?) -> "
    r"(?P<dst>[A-Za-z0-9][A-Za-z0-9._-]*):(?P<dp>.*?)(?: \[(?P<tag>[^\]]*)\])?$"
)


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    UNKNOWN = "unknown"


def _worst(statuses: Iterable[Status]) -> Status:
    seen = set(statuses)
    if Status.FAIL in seen:
        return Status.FAIL
    if Status.UNKNOWN in seen or not seen:
        return Status.UNKNOWN
    return Status.PASS


# --- configuration --------------------------------------------------------------------------


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


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One rule judged for one store (or for the policy as a whole when ``store`` is None).

    ``objects``/``bytes`` are what the finding is about (the objects violating the rule when it
    fails), ``None`` when unknown. ``data`` holds the numbers behind ``why`` for machines.
    """

    policy: str
    rule: str
    store: str | None
    status: Status
    why: str
    fix: str | None = None
    objects: int | None = None
    bytes: int | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "rule": self.rule,
            "store": self.store,
            "status": self.status.value,
            "objects": self.objects,
            "bytes": self.bytes,
            "why": self.why,
            "fix": self.fix,
            "data": self.data,
        }


@dataclass(frozen=True)
class PolicyReport:
    """The findings of one policy."""

    name: str
    index: int
    stores: list[str]
    primary: str | None
    primary_reason: str
    prefix: str  # the data the policy governs: keys under this prefix at the primary
    findings: list[Finding]

    @property
    def status(self) -> Status:
        return _worst(f.status for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "index": self.index,
            "status": self.status.value,
            "stores": self.stores,
            "primary": self.primary,
            "primary_reason": self.primary_reason,
            "prefix": self.prefix,
            "findings": [f.to_json() for f in self.findings],
        }


@dataclass(frozen=True)
class PolicyResult:
    """Everything ``daulat check`` reports. See the module docstring for the exit-code rule."""

    policies: list[PolicyReport]
    strict: bool
    evaluated_at: datetime
    manifest: Path | None  # the state read (None: did not exist yet)
    journal: Path | None

    @property
    def findings(self) -> list[Finding]:
        return [f for p in self.policies for f in p.findings]

    @property
    def status(self) -> Status:
        return _worst(p.status for p in self.policies)

    def count(self, status: Status) -> int:
        return sum(1 for f in self.findings if f.status == status)

    @property
    def exit_code(self) -> int:
        """1 on any fail (or, when strict, any unknown / no policy); else 0."""
        if self.status == Status.FAIL:
            return 1
        if self.status == Status.UNKNOWN and self.strict:
            return 1
        return 0

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "exit_code": self.exit_code,
            "strict": self.strict,
            "evaluated_at": self.evaluated_at.isoformat(timespec="seconds"),
            "counts": {s.value: self.count(s) for s in Status},
            "state": {
                "manifest": str(self.manifest) if self.manifest else None,
                "journal": str(self.journal) if self.journal else None,
            },
            "policies": [p.to_json() for p in self.policies],
        }


# --- state (read-only) --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pair:
    pair: str
    src: str
    src_prefix: str
    dst: str
    dst_prefix: str
    tag: str

    @property
    def encrypted(self) -> bool:
        return self.tag.startswith("age:")

    @property
    def restore(self) -> bool:
        return self.tag == "decrypt"


@dataclass(frozen=True)
class _Scan:
    finished: str


@dataclass
class _Copies:
    """One replica's copies of the primary's objects in scope."""

    verified: int = 0
    verified_bytes: int = 0
    unverified: int = 0  # copied from this version, not verified by the latest verification
    unverified_bytes: int = 0
    stale: int = 0  # copied, but the primary's object changed since
    stale_bytes: int = 0
    oldest_verify: str | None = None
    newest_verify: str | None = None


@dataclass
class _Coverage:
    objects: int
    bytes: int
    under: int  # objects with fewer verified copies than required
    under_bytes: int
    copies: dict[str, _Copies]


class _State:
    """The manifest and the journal, attached read-only to one in-memory connection."""

    def __init__(self, state_dir: Path) -> None:
        self.db = sqlite3.connect("file::memory:", uri=True)
        self.db.execute("PRAGMA temp_store=FILE")
        self.manifest = self._attach(state_dir / MANIFEST_NAME, "m", ("scans", "objects"))
        self.journal = self._attach(state_dir / JOURNAL_NAME, "j", ("journal",))
        has_verifications = self.journal is not None and self._has_table("j", "verifications")
        self.db.execute(
            "CREATE TEMP TABLE pairs (pair TEXT PRIMARY KEY, src TEXT, sp TEXT, splen INTEGER, "
            "dst TEXT, dp TEXT, enc INTEGER, restore INTEGER, latest TEXT, done INTEGER)"
        )
        self.pairs: list[_Pair] = []
        self._writes: dict[tuple[str, tuple[str, ...], str], tuple[int, int, int, int]] = {}
        if self.journal is None:
            return
        latest: dict[str, str] = {}
        if has_verifications:
            latest = dict(
                self.db.execute("SELECT pair, max(time) FROM j.verifications GROUP BY pair")
            )
        for pair, done in self.db.execute(
            "SELECT pair, sum(state = 'done') FROM j.journal GROUP BY pair"
        ).fetchall():
            m = _PAIR.match(pair)
            if m is None or not done:
                continue
            p = _Pair(pair, m["src"], m["sp"], m["dst"], m["dp"], m["tag"] or "")
            self.pairs.append(p)
            self.db.execute(
                "INSERT INTO temp.pairs VALUES (?, ?, ?, length(?), ?, ?, ?, ?, ?, ?)",
                (
                    pair,
                    p.src,
                    p.src_prefix,
                    p.src_prefix,
                    p.dst,
                    p.dst_prefix,
                    int(p.encrypted),
                    int(p.restore),
                    latest.get(pair, ""),
                    int(done),
                ),
            )

    def _attach(self, path: Path, schema: str, tables: Sequence[str]) -> Path | None:
        if not path.is_file():
            return None
        try:
            self.db.execute(
                f"ATTACH DATABASE ? AS {schema}", (path.resolve().as_uri() + "?mode=ro",)
            )
        except sqlite3.DatabaseError as exc:
            raise ManifestError(f"cannot read {path}: {exc}") from None
        if not all(self._has_table(schema, t) for t in tables):
            self.db.execute(f"DETACH DATABASE {schema}")
            return None
        return path

    def _has_table(self, schema: str, table: str) -> bool:
        try:
            row = self.db.execute(
                f"SELECT 1 FROM {schema}.sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise ManifestError(f"cannot read the {schema} state database: {exc}") from None
        return row is not None

    def close(self) -> None:
        self.db.close()

    # queries

    def last_scan(self, store: str) -> _Scan | None:
        if self.manifest is None:
            return None
        row = self.db.execute(
            "SELECT coalesce(finished, started) FROM m.scans WHERE store = ? AND status = 'complete' "
            "ORDER BY id DESC LIMIT 1",
            (store,),
        ).fetchone()
        return _Scan(str(row[0])) if row else None

    def totals(self, store: str, prefix: str) -> tuple[int, int]:
        assert self.manifest is not None
        n, b = self.db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM m.objects "
            "WHERE store = ? AND key >= ? AND substr(key, 1, length(?)) = ?",
            (store, prefix, prefix, prefix),
        ).fetchone()
        return int(n), int(b)

    def holds(self, store: str, prefix: str) -> bool:
        if self.manifest is None or self.last_scan(store) is None:
            return False
        row = self.db.execute(
            "SELECT 1 FROM m.objects WHERE store = ? AND key >= ? AND substr(key, 1, length(?)) = ? "
            "LIMIT 1",
            (store, prefix, prefix, prefix),
        ).fetchone()
        return row is not None

    def coverage(self, primary: str, prefix: str, replicas: Sequence[str], need: int) -> _Coverage:
        """Classify every object of ``primary`` under ``prefix`` against each replica, in SQL.

        Per object and replica one correlated lookup (journal primary key) yields a code: '3' plus
        the verification time (verified by the latest verification of its pair, same source
        version), '2' (copied from this version, not currently verified), '1' (copied from another
        version), '0' (no copy).
        """
        assert self.manifest is not None
        params: dict[str, Any] = {"p": primary, "d": prefix, "need": need}
        match = (
            "jr.size = o.size AND (jr.src_etag IS o.etag OR jr.src_etag IS NULL OR o.etag IS NULL)"
        )
        cols, aggs = [], []
        for i, replica in enumerate(replicas):
            params[f"r{i}"] = replica
            cols.append(
                f"""coalesce((SELECT max(CASE
                        WHEN jr.verified IS NOT NULL AND jr.verified >= p.latest AND {match}
                            THEN '3' || jr.verified
                        WHEN {match} THEN '2' ELSE '1' END)
                    FROM temp.pairs p CROSS JOIN j.journal jr
                      ON jr.pair = p.pair AND jr.key = substr(o.key, p.splen + 1)
                    WHERE p.src = :p AND p.dst = :r{i} AND p.restore = 0
                      AND substr(o.key, 1, p.splen) = p.sp AND jr.state = 'done'), '0') AS c{i}"""
                if self.journal is not None
                else f"'0' AS c{i}"
            )
            for code in "321":
                aggs.append(f"coalesce(sum(substr(c{i}, 1, 1) = '{code}'), 0)")
                aggs.append(
                    f"coalesce(sum(CASE WHEN substr(c{i}, 1, 1) = '{code}' THEN size END), 0)"
                )
            aggs.append(f"min(CASE WHEN substr(c{i}, 1, 1) = '3' THEN substr(c{i}, 2) END)")
            aggs.append(f"max(CASE WHEN substr(c{i}, 1, 1) = '3' THEN substr(c{i}, 2) END)")
        copies = " + ".join(["1", *(f"(substr(c{i}, 1, 1) = '3')" for i in range(len(replicas)))])
        inner = ", ".join(["o.size AS size", *cols])
        # CROSS JOIN fixes the join order (pairs outer, then one journal primary-key lookup);
        # left to itself the planner may scan the whole journal once per object.
        # LIMIT -1 keeps SQLite from flattening the subquery into the aggregate, which would
        # re-run each correlated lookup once per reference instead of once per object.
        sql = f"""SELECT count(*), coalesce(sum(size), 0),
                         coalesce(sum({copies} < :need), 0),
                         coalesce(sum(CASE WHEN {copies} < :need THEN size END), 0)
                         {"".join(", " + a for a in aggs)}
                  FROM (SELECT {inner} FROM m.objects o
                        WHERE o.store = :p AND o.key >= :d AND substr(o.key, 1, length(:d)) = :d
                        LIMIT -1)"""
        row = self.db.execute(sql, params).fetchone()
        out = _Coverage(int(row[0]), int(row[1]), int(row[2]), int(row[3]), {})
        for i, replica in enumerate(replicas):
            v = row[4 + 8 * i : 12 + 8 * i]
            out.copies[replica] = _Copies(
                int(v[0]), int(v[1]), int(v[2]), int(v[3]), int(v[4]), int(v[5]), v[6], v[7]
            )
        return out

    def writes(self, dst: str, sources: Sequence[str], prefix: str) -> tuple[int, int, int, int]:
        """(plain objects, plain bytes, encrypted objects, encrypted bytes) that daulat wrote to
        ``dst`` from ``sources`` (keys under ``prefix`` at the source), each key judged by its
        latest completed write."""
        if self.journal is None or not sources:
            return 0, 0, 0, 0
        cache_key = (dst, tuple(sources), prefix)
        if cache_key in self._writes:
            return self._writes[cache_key]
        marks = ", ".join("?" for _ in sources)
        rows = self.db.execute(
            f"""SELECT enc, count(*), coalesce(sum(size), 0) FROM (
                    SELECT p.enc AS enc, jr.size AS size, row_number() OVER (
                        PARTITION BY p.dp || jr.key ORDER BY jr.run_id DESC, p.enc) AS rn
                    FROM temp.pairs p JOIN j.journal jr ON jr.pair = p.pair
                    WHERE p.dst = ? AND p.src IN ({marks}) AND jr.state = 'done'
                      AND substr(p.sp || jr.key, 1, length(?)) = ?)
                WHERE rn = 1 GROUP BY enc""",
            (dst, *sources, prefix, prefix),
        ).fetchall()
        got = {int(enc): (int(n), int(b)) for enc, n, b in rows}
        plain, enc = got.get(0, (0, 0)), got.get(1, (0, 0))
        self._writes[cache_key] = (plain[0], plain[1], enc[0], enc[1])
        return self._writes[cache_key]


def drill_exit_hours(state_dir: Path) -> DrillLookup:
    """The default ``latest_exit_hours`` hook: the predicted hours of the latest complete drill
    of the whole store (:func:`daulat.drill.latest_exit_hours`; drills of one prefix time only
    part of a store and do not count). Without a drill the rule is "unknown"."""
    return lambda store: latest_exit_hours(state_dir, store)


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


@dataclass
class _Holding:
    objects: int | None
    bytes: int | None
    source: str  # how we know, for the why


class _Evaluator:
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

    def holding(self, ctx: _Ctx, store: str) -> _Holding:
        """What ``store`` holds of the policy's data, as far as daulat knows."""
        if store == ctx.primary:
            if ctx.coverage is None:
                return _Holding(None, None, "never scanned")
            assert ctx.scan is not None
            return _Holding(
                ctx.coverage.objects, ctx.coverage.bytes, f"per its scan of {ctx.scan.finished}"
            )
        pn, pb, en, eb = self.state.writes(store, ctx.stores, ctx.prefix)
        if pn + en:
            return _Holding(pn + en, pb + eb, "written by daulat, per the journal")
        scan = self.state.last_scan(store)
        if scan is not None:
            n, b = self.state.totals(store, ctx.prefix)
            return _Holding(n, b, f"per its scan of {scan.finished}")
        return _Holding(None, None, "never scanned, and daulat has copied nothing there")

    def residency(self, ctx: _Ctx, store: str) -> Finding:
        pol = ctx.pol
        allowed = pol.allowed
        assert allowed is not None
        country = self.placement(store).country
        held = self.holding(ctx, store)
        amount = _amount(held.objects, held.bytes)
        data = {"country": country, "allowed": sorted(allowed), "holding_source": held.source}
        if country in allowed:
            why = f"{store} stores its data in {self.where(store)}, which the policy allows ({pol.residency_text})"
            return Finding(
                pol.label,
                "residency",
                store,
                Status.PASS,
                why,
                None,
                held.objects,
                held.bytes,
                data,
            )
        what = (
            f"it holds {amount} ({held.source})"
            if held.objects is not None
            else f"what it holds is unknown ({held.source})"
        )
        why = (
            f"{store} stores its data in {self.where(store)}, outside the allowed "
            f"{pol.residency_text}; {what}"
        )
        inside = [s for s in ctx.stores if s != store and self.placement(s).country in allowed]
        if store == ctx.primary:
            target = inside[0] if inside else "a store in " + pol.residency_text
            fix = (
                f"move the data's home into {pol.residency_text}: {self.exit_cmd(pol, store, ctx.prefix, target) if inside else f'`daulat exit {self.addr(store, ctx.prefix)} NEW_STORE` to {target}'}, "
                f"switch writers to it, then delete the data at {store}"
            )
        else:
            fix = (
                f"delete the copy at {store} and remove it from this policy; keep replicas in "
                f"{pol.residency_text}" + (f" (e.g. {', '.join(inside)})" if inside else "")
            )
        return Finding(
            pol.label, "residency", store, Status.FAIL, why, fix, held.objects, held.bytes, data
        )

    def encryption(self, ctx: _Ctx, store: str) -> Finding:
        pol = ctx.pol
        rule = "encrypt_when_foreign_law"
        pl = self.placement(store)
        foreign = self.foreign(store, pol)
        base = {"jurisdictions": pl.jurisdictions, "foreign": foreign}
        if not foreign:
            allowed = pol.residency_text or pl.country
            held = self.holding(ctx, store)
            why = (
                f"only {', '.join(pl.jurisdictions)} law reaches {store} "
                f"({pl.provider.name} in {pl.country}), all within {allowed}: no foreign law, "
                "plaintext allowed"
            )
            return Finding(
                pol.label, rule, store, Status.PASS, why, None, held.objects, held.bytes, base
            )
        reach = self.reach_text(store, foreign)
        safe = [s for s in ctx.stores if s != store and not self.foreign(s, pol)]
        if store == ctx.primary:
            held = self.holding(ctx, store)
            if held.objects == 0:
                why = f"{reach} reaches {store}, but it holds no objects ({held.source})"
                return Finding(pol.label, rule, store, Status.PASS, why, None, 0, 0, base)
            amount = (
                _amount(held.objects, held.bytes)
                if held.objects is not None
                else "its objects (never scanned: count unknown)"
            )
            why = (
                f"{reach} reaches {store}, the primary, where the data originates in clear: "
                f"{amount}. daulat can encrypt copies, not the original"
            )
            home = safe[0] if safe else None
            move = (
                self.exit_cmd(pol, store, ctx.prefix, home)
                if home
                else f"`daulat exit {self.addr(store, ctx.prefix)} NEW_STORE` to a store only {pol.residency_text or pl.country} law reaches"
            )
            fix = (
                f"end the exposure by moving the data's home: {move}, switch writers to it and "
                f"delete the data at {store}; or have the application encrypt before upload "
                "(server-side encryption does not count: the provider holds those keys). Until "
                "then keep an encrypted or domestic replica so the exit plan can be carried out"
            )
            return Finding(
                pol.label,
                rule,
                store,
                Status.FAIL,
                why,
                fix,
                held.objects,
                held.bytes,
                {**base, "primary": True},
            )
        cfg = self.config.stores[store]
        pn, pb, en, eb = self.state.writes(store, ctx.stores, ctx.prefix)
        data = {
            **base,
            "plaintext": pn,
            "plaintext_bytes": pb,
            "encrypted": en,
            "encrypted_bytes": eb,
            "declares_encrypt_to": bool(cfg.encrypt_to),
        }
        src = self.addr(ctx.primary, ctx.prefix)
        if pn:
            why = (
                f"{reach} reaches {store}, and {_amount(pn, pb)} there were last written in clear "
                f"by daulat"
                + (f" ({en:,} others are age-encrypted)" if en else "")
                + (
                    " — encrypt_to is declared, but only copies made since are encrypted"
                    if cfg.encrypt_to
                    else ""
                )
            )
            if cfg.encrypt_to:
                fix = f"run `daulat exit {src} {store}` again: the declared encrypt_to re-copies every object age-encrypted over the plaintext"
            else:
                fix = (
                    f"re-copy encrypted: `daulat exit {src} {store} --encrypt-to {self.recipient_hint([store])}` "
                    f"(key: `daulat keys new --out FILE`), and declare encrypt_to on store {store} so later copies are too"
                )
            return Finding(pol.label, rule, store, Status.FAIL, why, fix, pn, pb, data)
        if en:
            why = f"{reach} reaches {store}, but all {_amount(en, eb)} daulat wrote there are age-encrypted"
            return Finding(pol.label, rule, store, Status.PASS, why, None, en, eb, data)
        if cfg.encrypt_to:
            why = (
                f"{reach} reaches {store}; daulat has written nothing there yet, and the store "
                "declares encrypt_to, so copies will be age-encrypted"
            )
            return Finding(pol.label, rule, store, Status.PASS, why, None, 0, 0, data)
        scan = self.state.last_scan(store)
        advice = f"declare encrypt_to on store {store} (or pass --encrypt-to) so copies there are age-encrypted"
        if scan is not None:
            n, b = self.state.totals(store, ctx.prefix)
            if n == 0:
                why = f"{reach} reaches {store}, which holds nothing yet (scan of {scan.finished})"
                return Finding(pol.label, rule, store, Status.PASS, why, advice, 0, 0, data)
            why = (
                f"{reach} reaches {store}; it holds {_amount(n, b)} (scan of {scan.finished}) that "
                "daulat did not write, so it cannot tell whether they are encrypted"
            )
            fix = f"replace them with encrypted copies: `daulat exit {src} {store} --encrypt-to {self.recipient_hint([store])}`; {advice}"
            return Finding(pol.label, rule, store, Status.UNKNOWN, why, fix, n, b, data)
        why = f"{reach} reaches {store}; it was never scanned and daulat has copied nothing there, so what it holds is unknown"
        return Finding(
            pol.label,
            rule,
            store,
            Status.UNKNOWN,
            why,
            f"`daulat scan {store}`; {advice}",
            None,
            None,
            data,
        )

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
            why = f"{ctx.primary} holds no objects{scope} (scan of {ctx.scan.finished}): nothing to replicate"
            return Finding(pol.label, rule, None, Status.PASS, why, None, 0, 0, data)
        lines = [
            f"{ctx.primary} (primary) holds {_amount(cov.objects, cov.bytes)}{scope} (scan of {ctx.scan.finished})"
        ]
        lines += [self.copies_text(r, cov.copies[r], cov.objects) for r in ctx.replicas]
        if cov.under == 0:
            head = (
                f"{have} of {need} required verified copies"
                if not partial
                else f"every object has at least {need} verified copies"
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
                f"partial replica, {c.verified:,} of {total:,} objects verified ({pct:.0f}%)"
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
            why = f"{ctx.primary} holds no objects (scan of {ctx.scan.finished if ctx.scan else '?'}): nothing to spread"
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
            else f" (only {c.verified:,} of {cov.objects:,} objects are verified there; see min_replicas)"
        )
        if age <= max_days:
            why = f"{replica} was last verified {_days(age)} ago ({c.oldest_verify}), within {max_days:g} days{partial}"
            return Finding(
                pol.label, rule, replica, Status.PASS, why, None, c.verified, c.verified_bytes, data
            )
        why = (
            f"{replica} was last verified {_days(age)} ago ({c.oldest_verify}); the policy allows "
            f"{max_days:g} days{partial}"
        )
        fix = f"`daulat verify {src} {replica}` (reads listings only; add --full to re-hash), and schedule it more often than every {max_days:g} days"
        return Finding(
            pol.label, rule, replica, Status.FAIL, why, fix, c.verified, c.verified_bytes, data
        )

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


# --- rendering ----------------------------------------------------------------------------------


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{n:,} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _amount(objects: int | None, size: int | None) -> str:
    if objects is None:
        return "an unknown number of objects"
    noun = "object" if objects == 1 else "objects"
    return f"{objects:,} {noun} ({_bytes(size or 0)})"


def _days(days: float) -> str:
    if days < 1:
        return f"{days * 24:.1f} hours"
    return f"{days:.1f} days"


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
