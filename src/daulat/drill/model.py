"""The model: per-object costs per size class, the fit, the prediction and its interval."""

from __future__ import annotations

import itertools
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from daulat.drill.measure import _ClassRun, _Part
from daulat.drill.result import (
    CONFIDENCE,
    ClassResult,
    DrillFailed,
    DrillResult,
    Overhead,
    Projection,
)
from daulat.drill.sample import Stratum
from daulat.drill.units import MiB, _human_rate_bits
from daulat.plan.model import (
    DRIVER_OBJECTS_PER_S,
    ClassCost,
    Fit,
    Fitted,
    Overheads,
    Workload,
    estimate,
)
from daulat.transfer.model import Endpoint

BOOTSTRAP_REPLICATES = 1000
MIN_STEADY = 8  # completions inside the full-pool window needed to trust its rate

BLOCKS = 10  # time blocks per class for the bootstrap

INTERVAL_METHOD = (
    f"stratified block bootstrap: within each size class the measured objects, in the order "
    f"they completed, are cut into {BLOCKS} consecutive time blocks; blocks are resampled with "
    f"replacement, the model refitted and the exit time recomputed, {BOOTSTRAP_REPLICATES:,} "
    "times; 2.5th-97.5th percentile (95 %). It covers variation between objects and over the "
    "drill's own minutes, not a link or server that is busier on the day of the exit"
)


@dataclass
class _Costs:
    """Per-object pool costs of one class (seconds of pool time each) and their sizes."""

    sizes: list[int]
    costs: list[float]
    steady: bool
    parallelism: float
    in_flight: int
    wall: float


def _class_costs(parts: Sequence[_Part]) -> _Costs:
    """A class's per-object pool costs over its runs: those of the runs with a steady window
    if any has one, else of all (see :func:`_run_costs`)."""
    each = [_run_costs(p.timings) for p in parts if p.timings]
    use = [c for c in each if c.steady] or each
    weight = sum(len(c.costs) for c in use)
    return _Costs(
        [x for c in use for x in c.sizes],
        [x for c in use for x in c.costs],
        use[0].steady,
        sum(c.parallelism * len(c.costs) for c in use) / weight,
        max(c.in_flight for c in each),
        sum(c.wall for c in each),
    )


def _run_costs(timings: Sequence[tuple[int, float, float]]) -> _Costs:
    """Turn one engine run's per-object intervals into per-object pool costs.

    A pool of K slots that stays full completes objects at rate K / (mean latency) (Little's
    law), so an object's share of the pool's time is its latency / K. The pool is full between
    the moment K objects are first in flight and the moment the last object starts; the objects
    completed inside that window are the steady-state sample. A real exit runs that steady state
    for nearly its whole length, so the ramp-up and drain of the short sample run (one latency
    each) are not extrapolated.

    When the sample never fills the pool (fewer objects than slots) there is no steady window:
    then each object's cost is its latency divided by the mean number in flight over the whole
    run, so the costs add up to the run's wall time — conservative when the real exit would run
    more objects of this class side by side.
    """
    starts = sorted(t[1] for t in timings)
    ends = sorted(t[2] for t in timings)
    first, last_end = starts[0], ends[-1]
    wall = last_end - first
    # Sweep the in-flight count.
    events = sorted([(s, 1) for s in starts] + [(e, -1) for e in ends])
    k = peak = 0
    full_at: float | None = None
    for t, d in events:
        k += d
        if k > peak:
            peak, full_at = k, t
    last_start = starts[-1]
    latency = [(size, e - s) for size, s, e in sorted(timings, key=lambda t: t[2])]
    if full_at is not None and last_start > full_at:
        window = last_start - full_at
        inside = sorted(
            ((size, s, e) for size, s, e in timings if full_at < e <= last_start),
            key=lambda t: t[2],
        )
        if len(inside) >= MIN_STEADY and window > 0:
            busy = sum(max(0.0, min(e, last_start) - max(s, full_at)) for _, s, e in timings)
            par = busy / window
            return _Costs(
                [size for size, _, _ in inside],
                [(e - s) / par for _, s, e in inside],
                True,
                par,
                peak,
                wall,
            )
    total = sum(lat for _, lat in latency)
    par = total / wall if wall > 0 else 1.0
    return _Costs(
        [size for size, _ in latency], [lat / par for _, lat in latency], False, par, peak, wall
    )


def _fit_line(
    sizes: Sequence[float], costs: Sequence[float], weights: Sequence[float] | None = None
) -> tuple[float, float]:
    """Weighted least squares ``cost = a + b x size`` with a, b >= 0 (two parameters)."""
    w = list(weights) if weights is not None else [1.0] * len(sizes)
    sw = sum(w)
    mx = sum(wi * x for wi, x in zip(w, sizes, strict=True)) / sw
    my = sum(wi * y for wi, y in zip(w, costs, strict=True)) / sw
    sxx = sum(wi * (x - mx) ** 2 for wi, x in zip(w, sizes, strict=True))
    sxy = sum(wi * (x - mx) * (y - my) for wi, x, y in zip(w, sizes, costs, strict=True))
    b = sxy / sxx if sxx > 0 else 0.0
    a = my - b * mx
    if b < 0:
        return my, 0.0
    if a < 0:
        sx2 = sum(wi * x * x for wi, x in zip(w, sizes, strict=True))
        sxy0 = sum(wi * x * y for wi, x, y in zip(w, sizes, costs, strict=True))
        return 0.0, (sxy0 / sx2 if sx2 else 0.0)
    return a, b


def _varied(sizes: Sequence[int]) -> bool:
    """Sizes spread enough (coefficient of variation >= 0.2) to separate the two costs."""
    if len(sizes) < 5:
        return False
    m = statistics.fmean(sizes)
    return m > 0 and statistics.pstdev(sizes) / m >= 0.2


def _class_model(costs: _Costs, split: tuple[float, float] | None) -> ClassCost:
    """(per-object seconds, seconds per byte, how) for one class.

    Within the class when its sizes vary enough; otherwise the class's mean cost is split
    between the two terms in the proportion the all-class fit ``split`` gives at the class's
    mean size (with one class only: small objects count as per-object cost, large as bytes).
    """
    if _varied(costs.sizes):
        a, b = _fit_line(costs.sizes, costs.costs)
        return ClassCost(a, b, "fitted within the class")
    mean_cost = statistics.fmean(costs.costs)
    mean_size = statistics.fmean(costs.sizes)
    if split is not None and (split[0] + split[1] * mean_size) > 0:
        frac = split[0] / (split[0] + split[1] * mean_size)
        how = "class mean, split by the fit across classes"
    else:
        frac = 1.0 if mean_size < MiB else 0.0
        how = "class mean (one size only: not separable)"
    per_byte = (1 - frac) * mean_cost / mean_size if mean_size > 0 else 0.0
    return ClassCost(frac * mean_cost, per_byte, how)


def _fit(costs: Mapping[int, _Costs]) -> Fit:
    """The model's parameters from the measured per-object pool costs of each class."""
    split: tuple[float, float] | None = None
    if len(costs) >= 2:
        # One point per class, each weighted by 1/cost^2 (relative error), so that a class of
        # huge objects does not decide alone what a small object costs.
        means = [statistics.fmean(c.costs) for c in costs.values()]
        split = _fit_line(
            [statistics.fmean(c.sizes) for c in costs.values()],
            means,
            [1 / m**2 if m > 0 else 0.0 for m in means],
        )
    classes = {i: _class_model(c, split) for i, c in costs.items()}
    across = ClassCost(split[0], split[1], "fit across the classes") if split else None
    return Fit(classes, across)


def _workload(strata: Mapping[int, Stratum], listed_objects: int | None = None) -> Workload:
    return Workload(
        {i: (s.objects, s.bytes) for i, s in strata.items() if s.objects},
        listed_objects,
        {i: s.largest for i, s in strata.items() if s.objects and s.largest},
    )


def _overhead(
    runs: Sequence[_ClassRun],
    probe: tuple[int, float],
    objects: int,
    listed_objects: int | None = None,
) -> Overhead:
    """Listing and bookkeeping of a whole exit of ``objects`` objects.

    The source listing costs what the probe measured per object listed (``listed_objects``:
    with filters the exit lists the objects they exclude too). The rest (planning,
    verification listing, destination manifest) is fitted across the class runs as
    ``fixed + objects x per-object``; with one run all of it counts per object.
    """
    listed_objects = objects if listed_objects is None else listed_objects
    listed, list_s = probe
    per_list = list_s / listed if listed else 0.0
    pts = [(len(p.timings), p.pre_s + p.post_s) for r in runs for p in r.parts if p.timings]
    fixed, per_obj = 0.0, 0.0
    if len({n for n, _ in pts}) >= 2:
        fixed, per_obj = _fit_line([n for n, _ in pts], [t for _, t in pts])
        fixed = min(fixed, max(t for _, t in pts))
    elif pts:
        per_obj = sum(t for _, t in pts) / sum(n for n, _ in pts)
    return Overhead(
        list_s_per_object=per_list,
        listed_in_probe=listed,
        bookkeeping_s_per_object=per_obj,
        fixed_s=fixed,
        predicted_s=listed_objects * per_list + objects * per_obj + fixed,
    )


def _bootstrap(costs: Mapping[int, _Costs], rng: random.Random) -> tuple[Fit, ...]:
    """The fit of each bootstrap replicate (see INTERVAL_METHOD)."""
    blocks = {}
    for i, c in costs.items():
        n = len(c.costs)
        cuts = [round(j * n / min(BLOCKS, n)) for j in range(min(BLOCKS, n) + 1)]
        blocks[i] = [range(a, b) for a, b in itertools.pairwise(cuts)]
    reps = []
    for _ in range(BOOTSTRAP_REPLICATES):
        resampled = {}
        for i, c in costs.items():
            idx = [j for block in rng.choices(blocks[i], k=len(blocks[i])) for j in block]
            resampled[i] = _Costs(
                [c.sizes[j] for j in idx],
                [c.costs[j] for j in idx],
                c.steady,
                c.parallelism,
                c.in_flight,
                c.wall,
            )
        reps.append(_fit(resampled))
    return tuple(reps)


def _build_result(
    *,
    drill_id: str,
    started: str,
    src: Endpoint,
    dst: Endpoint,
    scratch: str,
    scan_id: int,
    scanned: str | None,
    concurrency: int,
    sample: str,
    seed: int,
    encrypted: bool,
    strata: Sequence[Stratum],
    runs: Sequence[_ClassRun],
    probe: tuple[int, float],
    link_bps: float | None,
    workers: int,
    rng: random.Random,
    listed_objects: int | None = None,
) -> DrillResult:
    by_index = {s.index: s for s in strata}
    costs = {r.stratum.index: _class_costs(r.parts) for r in runs if r.copied}
    live = [s for s in strata if s.objects]
    missing = [s.size_class.label for s in live if s.index not in costs]
    if missing:
        raise DrillFailed(
            "no object of size class(es) " + ", ".join(missing) + " could be copied: the "
            "drill cannot predict their part of the exit (see the problems above)"
        )
    objects = sum(s.objects for s in strata)
    overhead = _overhead(runs, probe, objects, listed_objects)
    fitted = Fitted(
        _fit(costs),
        _bootstrap(costs, rng),
        Overheads(overhead.list_s_per_object, overhead.bookkeeping_s_per_object, overhead.fixed_s),
    )
    work = _workload(by_index, listed_objects)
    measured = estimate(work, fitted, CONFIDENCE)
    total = measured.point.total_s
    classes = []
    for s in strata:
        if not s.objects:
            continue
        c = costs[s.index]
        model = fitted.fit.classes[s.index]
        lo_c, hi_c = measured.class_interval(s.index, CONFIDENCE)
        classes.append(
            ClassResult(
                label=s.size_class.label,
                objects=s.objects,
                bytes=s.bytes,
                sampled_objects=s.used,
                sampled_bytes=sum(o.size for o in s.sample[: s.used]),
                copied_objects=next(r.copied for r in runs if r.stratum is s),
                wall_s=c.wall,
                in_flight=c.in_flight,
                steady=c.steady,
                parallelism=c.parallelism,
                per_object_s=model.per_object_s,
                throughput_bps=(1 / model.per_byte_s) if model.per_byte_s > 0 else None,
                fit=model.how + ("" if c.steady else "; pool never full: whole run, conservative"),
                predicted_s=measured.point.classes[s.index],
                low_s=lo_c,
                high_s=hi_c,
            )
        )
    projection = None
    if workers != 1 or link_bps is not None:
        # The plan's model, on the drill's own census: `daulat plan` gives the same numbers.
        link_Bps = link_bps / 8 if link_bps is not None else None
        proj = estimate(work, fitted, CONFIDENCE, workers, link_Bps)
        projection = Projection(
            workers=workers,
            link_bps=link_bps,
            predicted_s=proj.point.total_s,
            low_s=proj.low_s,
            high_s=proj.high_s,
            method=(
                f"the plan model (daulat.plan) for {workers} worker(s)"
                + (
                    f", each with a {_human_rate_bits(link_bps)} link to itself"
                    if link_bps is not None
                    else ""
                )
                + ": each class takes the longer of its measured time and the time the link "
                "needs for its bytes, divided among the workers; listing and bookkeeping "
                "by the driver alone, as one process measured them"
                + (
                    f"; the driver's journal at {DRIVER_OBJECTS_PER_S:,} objects/s (a goal, "
                    "not measured) bounds it from below"
                    if workers > 1
                    else ""
                )
                + ". Assumes the source and destination scale with the workers and nothing "
                "else limits them (`daulat plan` checks the providers' limits)."
            ),
        )
    return DrillResult(
        id=drill_id,
        started=started,
        finished="",
        src=src.label or src.store.name,
        dst=dst.label or dst.store.name,
        scratch=f"{dst.store.name}:{scratch}",
        scan_id=scan_id,
        scanned=scanned,
        concurrency=concurrency,
        sample=sample,
        seed=seed,
        encrypted=encrypted,
        objects=objects,
        bytes=sum(s.bytes for s in strata),
        sampled_objects=sum(s.used for s in strata),
        sampled_bytes=sum(o.size for s in strata for o in s.sample[: s.used]),
        classes=classes,
        overhead=overhead,
        predicted_s=total,
        low_s=measured.low_s,
        high_s=measured.high_s,
        interval_method=INTERVAL_METHOD,
        assumptions=_assumptions(concurrency, scanned, encrypted),
        projection=projection,
        fitted=fitted,
    )


def _assumptions(concurrency: int, scanned: str | None, encrypted: bool) -> list[str]:
    return [
        f"the exit runs like the drill: same machine, same network path, concurrency "
        f"{concurrency}, {'age encryption' if encrypted else 'no encryption'}",
        f"the source is as the scan of {scanned or '?'} saw it (objects and sizes); "
        "objects added since are not counted",
        "the destination starts empty for this exit (nothing is skipped as already copied)",
        "size classes run one after another; a real exit overlaps them (small objects fill "
        "slots beside streaming large ones), which can make it faster than predicted",
        "the source, destination and link are as busy as during the drill; provider "
        "throttling or quotas that only a long run triggers are not modelled",
        "listing the destination for verification costs per object what listing the source did",
        "daulat's own files under .daulat/ at the source (manifests of earlier copies) are not "
        "counted",
    ]
