"""Making a plan: the latest drill, the census, the model, the limits, the cost.

Why this module is long: :func:`make_plan` reads in order (drill, census, per-class hours,
deadline, provider limits, costs, assumptions) and each step is a small private function
beside it; the data it fills is in :mod:`daulat.plan.model` and the rendering in
:mod:`daulat.plan.render`, so what remains here is the one computation.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from daulat.config import Config
from daulat.drill.record import DRILLS_KIND, DRILLS_NAME
from daulat.drill.result import CONFIDENCE
from daulat.drill.sample import SIZE_CLASSES
from daulat.errors import ConfigError
from daulat.plan.census import Census, Requests, part_rule_for, requests_of, take_census
from daulat.plan.model import (
    DRIVER_OBJECTS_PER_S,
    WORKER_START_S,
    ClassCost,
    Estimate,
    Fit,
    Fitted,
    Needed,
    Overheads,
    estimate,
    predict,
    workers_for,
    workers_for_upper,
)
from daulat.plan.tables import (
    PRICE_UNITS,
    PROVIDERS,
    LawRules,
    Limit,
    Programme,
    Tables,
    load_tables,
    tiered_cost,
)
from daulat.plan.units import MAX_DEADLINE_HOURS
from daulat.plurals import plural
from daulat.state import connect_readonly
from daulat.transfer.model import Endpoint

LABEL = "PROJECTION"

MODEL = (
    "per size class, one worker's time = the longer of (objects x per-object cost + bytes x "
    "seconds per byte, as the drill measured them) and (bytes / its link); divided among the "
    "workers that have an object to copy (never more than the objects: an object is never "
    "split), never less than one worker's time for the largest object, and never less than the driver's journal at "
    f"{DRIVER_OBJECTS_PER_S:,} objects/s when more than one worker reports to it; plus the "
    f"Ray workers' start-up ({WORKER_START_S:g} s, when more than one worker) where it exceeds "
    "the driver's source listing, which it overlaps; plus the "
    "source listing (objects listed x listing cost per object) and bookkeeping (objects x "
    "cost per object), which the driver does alone, not divided among the workers; plus the "
    "drill's fixed cost. "
    "The interval applies the same model to each of the drill's bootstrap replicates."
)


@dataclass(frozen=True)
class DrillBasis:
    """The drill a plan extrapolates: what it measured and where."""

    id: str
    finished: str
    src: str
    dst: str
    concurrency: int
    encrypted: bool
    fitted: Fitted
    notes: tuple[str, ...] = ()
    # The objects the drill sampled, and those of them it could not copy and so did not
    # measure (up to SKIPPED_SHOWN named in ``skipped``, as {"key", "why"}).
    sampled_objects: int = 0
    skipped_objects: int = 0
    skipped: tuple[dict[str, str], ...] = ()


@dataclass
class ClassPlan:
    label: str
    objects: int
    bytes: int
    predicted_s: float
    low_s: float
    high_s: float
    per_object_s: float
    throughput_Bps: float | None  # measured per worker (None: no byte cost measured)
    bound: str  # "link" (its link is slower than the worker) or "worker" (its own time)
    costed_as: str | None  # another class's model stands in (not measured)
    multipart_objects: int
    parts: int


@dataclass
class LimitCheck:
    id: str
    provider: str
    side: str
    metric: str
    scope: str
    region_class: str
    value: float | None
    unit: str
    demand: float
    needed: int | None  # units (accounts, prefixes, buckets) to spread over; None: unknown
    binds: bool | None
    # With --deadline: the same for the workers the deadline needs (they ask more per second).
    deadline_workers: int | None
    needed_at_deadline: int | None
    single_unit_s: float | None  # the least time the exit takes within one unit
    adjustable: str | None
    source: str
    read: str | None
    note: str


@dataclass
class CostLine:
    provider: str
    side: str
    item: str
    quantity: float
    quantity_unit: str
    usd: float | None  # from the provider's page (None: not read)
    reported_usd: float | None  # from a third party's report of that page
    price_id: str
    source: str
    read: str | None
    note: str
    reported_source: str | None


@dataclass
class Plan:
    """A projection of an exit: never a measurement (``kind`` says so)."""

    src: str
    dst: str
    workers: int
    link_bps: float | None
    deadline_hours: float | None
    drill: DrillBasis
    census: Census
    predicted_s: float
    low_s: float
    high_s: float
    copy_s: float
    listing_s: float
    bookkeeping_s: float
    fixed_s: float
    driver_s: float
    link_floor_s: float | None
    classes: list[ClassPlan]
    deadline: dict[str, Any] | None
    requests: Requests
    limits: list[LimitCheck]
    costs: list[CostLine]
    cost_usd: float | None
    cost_unknown: list[str]
    cost_with_reported_usd: float | None
    programme: Programme | None
    laws: tuple[LawRules, ...]
    assumptions: list[str]
    model: str = MODEL
    confidence: float = CONFIDENCE
    kind: str = "projection"
    label: str = LABEL
    notes: list[str] = field(default_factory=list)
    # The largest object, which one worker copies alone (the copying is never shorter than
    # its time), and how many of the workers have an object to copy at all.
    largest_object_bytes: int = 0
    largest_object_s: float = 0.0
    busy_workers: int = 1
    # The Ray workers' start-up beyond the driver's source listing (daulat.plan.model,
    # WORKER_START_S), part of predicted_s; 0 with one worker.
    worker_start_s: float = 0.0

    @property
    def predicted_hours(self) -> float:
        return self.predicted_s / 3600

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["drill"] = {k: v for k, v in asdict(self.drill).items() if k != "fitted"} | {
            "interval": bool(self.drill.fitted.replicates)
        }
        d["census"] = {
            "source": self.census.source,
            "whatif": self.census.whatif,
            "date": self.census.date,
            "from_inventory": self.census.report,
            "objects": self.census.objects,
            "bytes": self.census.bytes,
            "listed_objects": self.census.listed_objects,
            "part_rule": self.census.part_rule.name if self.census.part_rule else None,
            "classes": [
                {
                    "label": c.label,
                    "objects": c.objects,
                    "bytes": c.bytes,
                    "multipart_objects": c.multipart_objects,
                    "parts": c.parts,
                    "largest_bytes": c.largest,
                }
                for c in self.census.classes
            ],
        }
        d["requests"] = asdict(self.requests) | {
            "destination_writes": self.requests.destination_writes
        }
        d["predicted_hours"] = self.predicted_hours
        d["interval_hours"] = [self.low_s / 3600, self.high_s / 3600]
        d["bytes_unit"] = "decimal: 1 PB = 10^15 bytes"
        out: dict[str, Any] = _dates_as_text(d)
        return out


def _dates_as_text(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _dates_as_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_dates_as_text(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


# --- the drill ------------------------------------------------------------------------------


def latest_drill(state_dir: Path, src_store: str, dst_store: str) -> DrillBasis | None:
    """The latest complete drill of ``src_store`` (to ``dst_store`` if there is one, else to
    any destination, noted), or None."""
    path = state_dir / DRILLS_NAME
    if not path.is_file():
        return None
    db = connect_readonly(path, DRILLS_KIND)
    try:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT id, finished, src, dst, dst_store, concurrency, model, result FROM drills "
            "WHERE src_store = ? AND status = 'complete' AND model IS NOT NULL "
            "ORDER BY rowid DESC",
            (src_store,),
        ).fetchall()
    finally:
        db.close()
    if not rows:
        return None
    row = next((r for r in rows if r["dst_store"] == dst_store), rows[0])
    notes = []
    if row["dst_store"] != dst_store:
        notes.append(
            f"no drill to {dst_store!r} is recorded: the latest drill of the source measured "
            f"{row['src']} → {row['dst']}, and its costs stand in for the path to {dst_store}"
        )
    model = json.loads(row["model"])
    result = json.loads(row["result"] or "{}")
    sampled = int(result.get("sampled_objects") or 0)
    n_skipped = int(result.get("skipped_objects") or 0)
    skipped = tuple(result.get("skipped") or ())
    if n_skipped:
        # The costs rest on the objects the drill copied; those it could not copy (a key the
        # scratch destination cannot hold) an exit would meet too.
        shown = "; ".join(f"{s['key']!r}: {s['why']}" for s in skipped[:3])
        more = f" (and {n_skipped - 3:,} more)" if n_skipped > 3 else ""
        notes.append(
            f"drill {row['id']} skipped {plural(n_skipped, 'sampled object')} of "
            f"{sampled:,}: it could not copy them, so the per-object costs rest on the other "
            f"{sampled - n_skipped:,} (an exit to {row['dst']} would meet them too): {shown}{more}"
        )
    fitted = _fitted(model)
    if not fitted.replicates:
        notes.append(
            "the drill was recorded before daulat kept its bootstrap replicates: the interval "
            "is the point estimate; drill again for an interval"
        )
    return DrillBasis(
        id=str(row["id"]),
        finished=str(row["finished"] or ""),
        src=str(row["src"]),
        dst=str(row["dst"]),
        concurrency=int(row["concurrency"] or 0),
        encrypted=bool(result.get("encrypted")),
        fitted=fitted,
        notes=tuple(notes),
        sampled_objects=sampled,
        skipped_objects=n_skipped,
        skipped=skipped,
    )


def _fitted(model: dict[str, Any]) -> Fitted:
    if "fitted" in model:
        return Fitted.from_json(model["fitted"])
    # Older records: the per-class point estimates only.
    labels = {c.label: i for i, c in enumerate(SIZE_CLASSES)}
    classes = {}
    for c in model.get("classes", []):
        tp = c.get("throughput_bps")
        classes[labels[c["label"]]] = ClassCost(
            float(c["per_object_s"]), 1 / float(tp) if tp else 0.0
        )
    o = model.get("overhead", {})
    return Fitted(
        Fit(classes),
        (),
        Overheads(
            float(o.get("list_s_per_object", 0.0)),
            float(o.get("bookkeeping_s_per_object", 0.0)),
            float(o.get("fixed_s", 0.0)),
        ),
    )


# --- the plan -------------------------------------------------------------------------------


def make_plan(
    config: Config,
    src_spec: str,
    dst_spec: str,
    *,
    workers: int = 1,
    link_bps: float | None = None,
    deadline_hours: float | None = None,
    objects: int | None = None,
    size: int | None = None,
    tables: Tables | None = None,
) -> Plan:
    """Project an exit of ``src_spec`` to ``dst_spec`` (``STORE[:PREFIX]``) with ``workers``
    machines, each with ``link_bps`` bits per second to itself; see :mod:`daulat.plan`.

    ``objects`` and ``size`` (bytes), both or neither, replace the scan's census (a what-if).
    Raises :class:`ConfigError` for bad arguments, unknown stores, and when there is no
    drill or no census to base the projection on (a plan has no default costs).
    """
    if isinstance(workers, bool) or workers < 1:
        raise ConfigError("--workers must be at least 1")
    if link_bps is not None and not (link_bps > 0 and math.isfinite(link_bps)):
        raise ConfigError("--link must be a positive bandwidth")
    if deadline_hours is not None and not (0 < deadline_hours <= MAX_DEADLINE_HOURS):
        raise ConfigError(
            f"--deadline must be a positive number of hours, at most {MAX_DEADLINE_HOURS:,}"
        )
    tables = tables or load_tables()
    src_name, src_prefix = _spec(src_spec)
    dst_name, _ = _spec(dst_spec)
    src_cfg, dst_cfg = config.store(src_name), config.store(dst_name)
    drill = latest_drill(config.state_dir, src_name, dst_name)
    if drill is None:
        raise ConfigError(
            f"no complete drill of store {src_name!r} is recorded: a plan extrapolates the "
            f"costs a drill measured and has no defaults of its own. Run `daulat drill "
            f"{src_spec} {dst_spec}` first (after `daulat scan {src_name}`)"
        )
    census = take_census(
        config.state_dir,
        src_name,
        src_prefix,
        part_rule_for(dst_cfg.scheme),
        objects=objects,
        size=size,
    )
    if census.objects == 0:
        raise ConfigError(
            f"the census of {src_spec!r} holds no object ({census.source}): nothing to plan"
        )
    work = census.workload()
    link_Bps = link_bps / 8 if link_bps is not None else None
    est = estimate(work, drill.fitted, CONFIDENCE, workers, link_Bps)
    reqs = requests_of(census)
    classes = _classes(census, drill.fitted, est)
    src_provider, dst_provider = src_cfg.provider.value, dst_cfg.provider.value
    deadline = _deadline(deadline_hours, work, drill.fitted, link_Bps)
    deadline_window = None
    if deadline is not None and deadline["workers"] is not None:
        f = drill.fitted
        deadline_window = (
            deadline["workers"],
            predict(work, f.fit, f.overheads, deadline["workers"], link_Bps).copy_s,
        )
    limits = _limits(
        tables,
        census,
        reqs,
        est.point.copy_s,
        deadline_window,
        (src_provider, src_cfg.region),
        (dst_provider, dst_cfg.region),
    )
    costs = _costs(tables, census, reqs, src_provider, src_cfg.region, dst_provider, dst_cfg.region)
    known = [c.usd for c in costs if c.usd is not None]
    unknown = [f"{c.provider} {c.item}" for c in costs if c.usd is None]
    fill = [c.usd if c.usd is not None else c.reported_usd for c in costs]
    plan = Plan(
        src=src_spec,
        dst=dst_spec,
        workers=workers,
        link_bps=link_bps,
        deadline_hours=deadline_hours,
        drill=drill,
        census=census,
        predicted_s=est.point.total_s,
        low_s=est.low_s,
        high_s=est.high_s,
        copy_s=est.point.copy_s,
        listing_s=est.point.listing_s,
        bookkeeping_s=est.point.bookkeeping_s,
        fixed_s=est.point.fixed_s,
        driver_s=est.point.driver_s,
        link_floor_s=(
            max(census.bytes / (est.point.busy_workers * link_Bps), census.largest / link_Bps)
            if link_Bps
            else None
        ),
        classes=classes,
        deadline=deadline,
        requests=reqs,
        limits=limits,
        costs=costs,
        cost_usd=sum(known) if costs and not unknown else None,
        cost_unknown=unknown,
        cost_with_reported_usd=(
            sum(x for x in fill if x is not None) if costs and None not in fill else None
        ),
        programme=tables.programme_for(src_provider),
        laws=tables.laws,
        assumptions=[],
        notes=list(drill.notes),
        largest_object_bytes=est.point.largest_bytes,
        largest_object_s=est.point.largest_s,
        busy_workers=est.point.busy_workers,
        worker_start_s=est.point.startup_s,
    )
    if workers > census.objects:
        plan.notes.append(
            f"--workers {workers:,} exceeds the {census.objects:,} object(s): an object is "
            f"never split, so {workers - census.objects:,} worker(s) have nothing to copy"
        )
    plan.assumptions = _assumptions(plan, src_cfg.region if src_provider in PROVIDERS else "")
    return plan


def _spec(spec: str) -> tuple[str, str]:
    name, _, prefix = spec.partition(":")
    if not name:
        raise ConfigError(f"{spec!r}: expected STORE or STORE:PREFIX")
    return name, Endpoint.normalise(prefix)


def _classes(census: Census, fitted: Fitted, est: Estimate) -> list[ClassPlan]:
    out = []
    for c in census.classes:
        cost, stand_in = fitted.fit.cost_of(c.index)
        lo, hi = est.class_interval(c.index, CONFIDENCE)
        out.append(
            ClassPlan(
                label=c.label,
                objects=c.objects,
                bytes=c.bytes,
                predicted_s=est.point.classes.get(c.index, 0.0),
                low_s=lo,
                high_s=hi,
                per_object_s=cost.per_object_s,
                throughput_Bps=1 / cost.per_byte_s if cost.per_byte_s > 0 else None,
                bound="link" if est.point.link_bound.get(c.index) else "worker",
                costed_as=stand_in,
                multipart_objects=c.multipart_objects,
                parts=c.parts,
            )
        )
    return out


def _deadline(
    hours: float | None, work: Any, fitted: Fitted, link_Bps: float | None
) -> dict[str, Any] | None:
    if hours is None:
        return None
    seconds = hours * 3600
    point: Needed = workers_for(seconds, work, fitted.fit, fitted.overheads, link_Bps)
    upper: Needed = workers_for_upper(seconds, work, fitted, CONFIDENCE, link_Bps)
    return {
        "hours": hours,
        "workers": point.workers,
        "predicted_s": point.predicted_s,
        "workers_upper": upper.workers,
        "upper_s": upper.predicted_s,
        "reason": point.reason or upper.reason,
    }


_METRIC_WORDS = {
    "egress_bps": "egress",
    "ingress_bps": "ingress",
    "read_rps": "read requests",
    "write_rps": "write requests",
    "requests_rps": "requests",
}


def _limits(
    tables: Tables,
    census: Census,
    reqs: Requests,
    window: float,
    at_deadline: tuple[int, float] | None,
    src: tuple[str, str | None],
    dst: tuple[str, str | None],
) -> list[LimitCheck]:
    """Each limit of the source's and the destination's provider against what the projected
    exit asks of it while copying (bytes and requests over the copying time ``window``; with
    a deadline, also over the copying time of the workers it needs)."""
    out: list[LimitCheck] = []
    sides = [("source", *src)]
    if reqs.billed_destination:
        sides.append(("destination", *dst))
    for side, provider, region in sides:
        if provider not in PROVIDERS:
            continue
        for lim in tables.limits_for(provider, region, side):
            amount = _amount(lim, side, census, reqs)
            out.append(_check(lim, side, amount, window, at_deadline))
    return out


def _amount(lim: Limit, side: str, census: Census, reqs: Requests) -> float:
    """What the whole exit asks of ``lim``'s metric: bits for bandwidths, else requests."""
    if lim.metric in ("egress_bps", "ingress_bps"):
        return census.bytes * 8.0
    if side == "source":
        return float(reqs.source_get)
    return float(reqs.destination_writes)


def _units(amount: float, window: float, value: float | None) -> int | None:
    if not value:
        return None
    demand = amount / window if window > 0 else 0.0
    return max(1, math.ceil(demand / value))


def _check(
    lim: Limit, side: str, amount: float, window: float, at_deadline: tuple[int, float] | None
) -> LimitCheck:
    needed = _units(amount, window, lim.value)
    return LimitCheck(
        id=lim.id,
        provider=lim.provider,
        side=side,
        metric=_METRIC_WORDS[lim.metric],
        scope=lim.scope,
        region_class=lim.region_class,
        value=lim.value,
        unit=lim.unit,
        demand=amount / window if window > 0 else 0.0,
        needed=needed,
        binds=(needed > 1) if needed is not None else None,
        deadline_workers=at_deadline[0] if at_deadline else None,
        needed_at_deadline=_units(amount, at_deadline[1], lim.value) if at_deadline else None,
        single_unit_s=amount / lim.value if lim.value else None,
        adjustable=lim.adjustable,
        source=lim.source,
        read=lim.read.isoformat() if lim.read else None,
        note=lim.note,
    )


def _costs(
    tables: Tables,
    census: Census,
    reqs: Requests,
    src_provider: str,
    src_region: str | None,
    dst_provider: str,
    dst_region: str | None,
) -> list[CostLine]:
    lines: list[CostLine] = []
    wanted = []
    if src_provider in PROVIDERS:
        wanted += [
            ("source", src_provider, src_region, "egress", float(census.bytes)),
            ("source", src_provider, src_region, "get", float(reqs.source_get)),
            ("source", src_provider, src_region, "list", float(reqs.source_list)),
        ]
    if reqs.billed_destination and dst_provider in PROVIDERS:
        wanted += [
            ("destination", dst_provider, dst_region, "put", float(reqs.destination_writes)),
            ("destination", dst_provider, dst_region, "list", float(reqs.destination_list)),
        ]
    for side, provider, region, item, quantity in wanted:
        prices = tables.price_for(provider, region, item)
        if not prices:
            continue
        price = prices[0]
        kind, per = PRICE_UNITS[price.unit]
        units = quantity / per
        rep = price.reported
        lines.append(
            CostLine(
                provider=provider,
                side=side,
                item=item,
                quantity=quantity,
                quantity_unit=kind,
                usd=tiered_cost(price.tiers, units) if price.tiers else None,
                reported_usd=tiered_cost(rep.tiers, units) if rep and rep.tiers else None,
                price_id=price.id,
                source=price.source,
                read=price.read.isoformat() if price.read else None,
                note=price.note + (f" Reported: {rep.note}" if rep else ""),
                reported_source=rep.source if rep else None,
            )
        )
    return lines


def _assumptions(plan: Plan, src_region: str | None) -> list[str]:
    """Every assumption the projection rests on, in words (``src_region`` None: a cloud
    source whose region is not configured)."""
    d = plan.drill
    out = [
        f"{LABEL}: extrapolated from drill {d.id} ({d.src} → {d.dst}, finished {d.finished}); "
        f"every worker is a machine like the drill's, running one daulat engine at "
        f"concurrency {d.concurrency}, {'with' if d.encrypted else 'without'} age encryption",
        f"{plan.workers} worker(s)"
        + (
            f", each with its own link of {plan.link_bps / 1e9:.4g} Gbit/s; a worker takes the "
            "longer of its own measured time and the time its link needs for its bytes"
            if plan.link_bps
            else ", each as fast as the drill measured (no link given)"
        ),
        "the objects are spread evenly over the workers (sharded by key range); an object is "
        "never split, so one huge object takes one worker its whole time (the copying is "
        "never shorter than the largest object's time on one worker"
        + (
            ", every object taken to be of the mean size)"
            if plan.census.whatif
            else ", the largest object the census recorded)"
        ),
        "the source and the destination serve all the workers as they served the drill: "
        "the provider limits listed with the plan say where that fails",
        "the driver lists the source at the drill's probed cost per object and does the "
        "bookkeeping (planning, verification listing, manifest) at the drill's cost, alone: "
        "neither shrinks with the workers (--engine ray runs only the copying on them)",
    ]
    if plan.workers > 1:
        out.append(
            f"each Ray worker process takes {WORKER_START_S:g} s to start (Ray's and daulat's "
            "imports, a documented figure: daulat.plan.model.WORKER_START_S), in parallel "
            "and while the driver lists the source: only what exceeds that listing adds "
            f"({plan.worker_start_s:.2g} s here)"
        )
        out.append(
            f"the driver commits {DRIVER_OBJECTS_PER_S:,} objects/s to the one journal (issue "
            "12's benchmark goal, not measured by this drill); it bounds the exit from below"
        )
    out.append(f"census: {plan.census.source}")
    for c in plan.classes:
        if c.costed_as:
            out.append(
                f"the drill measured no object of size class {c.label}: {c.costed_as} stands "
                "in for it"
            )
    out.append("bytes are decimal: 1 PB = 10^15 bytes, 1 GB = 10^9 bytes")
    out.append(
        "requests: one streamed GET per object (no retries); listings in pages of 1,000 "
        f"keys; at the destination {plan.requests.part_rule}"
    )
    out.append(
        "costs: list prices from the providers' pages where they were read (third parties' "
        "readings shown apart), egress tiers applied as one billing month; no compute, "
        "storage or support charges; no negotiated discounts"
    )
    if src_region is None:
        out.append(
            "the source store's region is not configured: the limits of every region class "
            "are shown"
        )
    return out
