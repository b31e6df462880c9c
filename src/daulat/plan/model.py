"""The exit-time model: one for drills and plans (see :mod:`daulat.plan` for the whole story).

A *fit* gives, per size class, what one worker spends per object and per byte (the drill
measures it). A *workload* gives, per class, how many objects and bytes leave. The model::

    class c      max(objects_c x per_object_c + bytes_c x per_byte_c, bytes_c / link) / busy
    copying      max(sum of the classes, the largest object on one worker)
    listing      listed objects x listing cost per object                 (the driver, once)
    bookkeeping  objects x bookkeeping cost per object                    (the driver, once)
    start-up     max(0, WORKER_START_S - listing)       (more than one worker, once)
    total        fixed + listing + bookkeeping + start-up + max(copying, driver floor)

with ``busy = min(workers, objects)``: an object is never split, so a worker beyond the
number of objects has nothing to copy, and the copying lasts at least as long as one worker
takes for the largest object (``per_object_c + largest_c x per_byte_c``, or ``largest_c /
link`` when that is longer, for the largest object of each class).

with the driver floor ``objects / DRIVER_OBJECTS_PER_S`` when there is more than one worker
(one coordinator commits every object's result to the one journal while the workers copy).
Listing and bookkeeping are not divided among the workers: with ``--engine ray`` the driver
lists the source, plans, verifies (listing the destination) and writes the manifest itself,
before and after the copying (:mod:`daulat.scale`), at the cost the drill measured for one
process. The interval applies the same model to each bootstrap replicate of the fit and takes
percentiles.

The start-up: every ``--engine ray`` run is a new Ray job, whose worker processes start and
import Ray and daulat before their first shard. They start while the driver lists the source
(:mod:`daulat.scale.warmup`), so only what the start takes beyond that listing is added, once:
the workers start in parallel, one per machine. The figure is a documented constant, not a
measurement of the drill (which runs without Ray); see :data:`WORKER_START_S`.

This module depends on nothing else in daulat, so the drill can call it (no import cycle).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from daulat.drill.units import plain
from daulat.errors import DaulatError
from daulat.plurals import plural

# The driver's journal commits per second when more than one worker reports to it. Issue 12's
# benchmark sets this as a goal (bench/RESULTS.md measures it); it is an assumption here, named
# in every plan, not a measurement of this drill.
DRIVER_OBJECTS_PER_S = 100_000


# Seconds from the start of a run until a Ray worker process runs its first shard, on a
# machine of its own: the process starts, imports Ray and daulat's worker module and
# registers with its node. bench/ray_timeline.py (an Intel Xeon with 2 cores, ray 2.60,
# 2026-12-05, the machine shared at load 3-11): 0.8-1.3 CPU s in the process before its
# first task; 2.3-3.2 s from the run's start to a lone worker's first task; several workers
# on one machine take longer, sharing its cores. Rounded to a machine of its own and quiet;
# an assumption in every plan with more than one worker, named there.
WORKER_START_S = 2.0


class ModelError(DaulatError, ValueError):
    """Arguments the model cannot work with (a bug in the caller, or data not measured)."""


@dataclass(frozen=True)
class ClassCost:
    """What one worker spends on one object of a class: seconds per object and per byte."""

    per_object_s: float
    per_byte_s: float
    how: str = ""

    def to_json(self) -> list[float]:
        return [self.per_object_s, self.per_byte_s]


@dataclass(frozen=True)
class Fit:
    """Per-class costs (by size-class index), and the fit across the classes' means that
    stands in for a class the drill did not measure (None with one measured class)."""

    classes: Mapping[int, ClassCost]
    across: ClassCost | None = None

    def cost_of(self, index: int) -> tuple[ClassCost, str | None]:
        """The cost of class ``index`` and, when it was not measured, what stands in for it."""
        if index in self.classes:
            return self.classes[index], None
        if self.across is not None:
            return self.across, "the fit across the measured classes"
        if not self.classes:
            raise ModelError("a fit without any measured class")
        nearest = min(self.classes, key=lambda i: (abs(i - index), -i))
        return self.classes[nearest], f"measured class {nearest}"

    def to_json(self) -> dict[str, Any]:
        return {
            "classes": {str(i): c.to_json() for i, c in sorted(self.classes.items())},
            "across": self.across.to_json() if self.across is not None else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fit:
        classes = {int(i): ClassCost(float(a), float(b)) for i, (a, b) in data["classes"].items()}
        across = data.get("across")
        return cls(classes, ClassCost(float(across[0]), float(across[1])) if across else None)


@dataclass(frozen=True)
class Overheads:
    """Time outside copying, per object listed, per object moved, and once."""

    list_s_per_object: float
    bookkeeping_s_per_object: float
    fixed_s: float


@dataclass(frozen=True)
class Fitted:
    """What a drill measured, in the form the model takes: the fit, its bootstrap replicates
    and the overheads (kept in the drill record, so that a later plan uses the same numbers)."""

    fit: Fit
    replicates: tuple[Fit, ...]
    overheads: Overheads

    def to_json(self) -> dict[str, Any]:
        return {
            "fit": self.fit.to_json(),
            "replicates": [_compact(r) for r in self.replicates],
            "overheads": [
                self.overheads.list_s_per_object,
                self.overheads.bookkeeping_s_per_object,
                self.overheads.fixed_s,
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fitted:
        lst, book, fixed = data["overheads"]
        return cls(
            Fit.from_json(data["fit"]),
            tuple(Fit.from_json(r) for r in data["replicates"]),
            Overheads(float(lst), float(book), float(fixed)),
        )


def _compact(fit: Fit) -> dict[str, Any]:
    """A replicate in a few bytes: 7 significant digits are far below its own spread."""
    d = fit.to_json()
    d["classes"] = {k: [float(f"{x:.7g}") for x in v] for k, v in d["classes"].items()}
    if d["across"] is not None:
        d["across"] = [float(f"{x:.7g}") for x in d["across"]]
    return d


@dataclass(frozen=True)
class Workload:
    """What leaves, per size-class index: (objects, bytes). ``listed_objects``: what the
    listing walks (more than ``objects`` when filters leave some out; None: the same)."""

    classes: Mapping[int, tuple[int, int]]
    listed_objects: int | None = None
    # Per class, the bytes of its largest object. A class not in it is taken to hold objects
    # of its mean size: the least its largest can be, right for a what-if of equal objects.
    largest: Mapping[int, int] = field(default_factory=dict)

    def largest_of(self, index: int) -> int:
        """The bytes of the largest object of class ``index``."""
        if index in self.largest:
            return self.largest[index]
        objects, size = self.classes[index]
        return math.ceil(size / objects) if objects else 0

    @property
    def objects(self) -> int:
        return sum(n for n, _ in self.classes.values())

    @property
    def bytes(self) -> int:
        return sum(b for _, b in self.classes.values())

    @property
    def listed(self) -> int:
        return self.objects if self.listed_objects is None else self.listed_objects


@dataclass(frozen=True)
class Breakdown:
    """One prediction, in seconds: per class (already divided among the workers), the phases
    and the total. ``link_bound``: classes whose bytes go at the link's speed rather than at
    the measured throughput; ``stand_ins``: classes costed with another class's model."""

    classes: dict[int, float]
    link_bound: dict[int, bool]
    stand_ins: dict[int, str]
    copy_s: float
    listing_s: float
    bookkeeping_s: float
    fixed_s: float
    driver_s: float
    total_s: float
    # The workers' start-up the driver's listing does not hide (more than one worker).
    startup_s: float = 0.0
    # The longest one object takes one worker (the copying is never shorter), which object
    # (class, bytes), and how many workers have an object to copy.
    largest_s: float = 0.0
    largest_class: int | None = None
    largest_bytes: int = 0
    busy_workers: int = 1

    @property
    def object_bound(self) -> bool:
        """One object, not the spread of all of them over the workers, sets the copying."""
        return self.largest_s > 0 and self.largest_s >= sum(self.classes.values())

    @property
    def driver_bound(self) -> bool:
        """The driver's journal commits, not the workers, set the copying phase's length."""
        return self.driver_s > self.copy_s


def _check(workers: int, link_Bps: float | None) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ModelError(f"workers must be a whole number >= 1, not {workers!r}")
    if link_Bps is not None and not (link_Bps > 0 and math.isfinite(link_Bps)):
        raise ModelError(f"the link must be a positive bandwidth, not {link_Bps!r}")


def predict(
    work: Workload,
    fit: Fit,
    overheads: Overheads,
    workers: int = 1,
    link_Bps: float | None = None,
) -> Breakdown:
    """The model (module docstring) for ``workers`` machines, each with ``link_Bps`` bytes
    per second to itself (None: only the measured throughput limits a worker)."""
    _check(workers, link_Bps)
    # An object is never split: workers beyond the number of objects have nothing to copy.
    busy = max(1, min(workers, work.objects))
    classes: dict[int, float] = {}
    bound: dict[int, bool] = {}
    stand_ins: dict[int, str] = {}
    largest_s, largest_class, largest_bytes = 0.0, None, 0
    for index, (objects, size) in sorted(work.classes.items()):
        if not objects:
            continue
        cost, stand_in = fit.cost_of(index)
        if stand_in is not None:
            stand_ins[index] = stand_in
        # A worker's pool overlaps per-object work with other objects' bytes: it is busy for
        # its own measured time or for what its link takes, whichever is longer.
        own = objects * cost.per_object_s + size * cost.per_byte_s
        wire = size / link_Bps if link_Bps is not None else 0.0
        bound[index] = wire > own
        classes[index] = max(own, wire) / busy
        # One worker copies the class's largest object alone, at its own cost or its link's.
        big = work.largest_of(index)
        alone = max(
            cost.per_object_s + big * cost.per_byte_s,
            big / link_Bps if link_Bps is not None else 0.0,
        )
        if alone > largest_s:
            largest_s, largest_class, largest_bytes = alone, index, big
    copy_s = max(sum(classes.values()), largest_s)
    # The driver's own phases, before and after the copying: as many seconds as one process.
    listing_s = work.listed * overheads.list_s_per_object
    bookkeeping_s = work.objects * overheads.bookkeeping_s_per_object
    # One worker's measured costs already include its own journal; more report to a driver,
    # which commits while they copy.
    driver_s = work.objects / DRIVER_OBJECTS_PER_S if workers > 1 else 0.0
    startup_s = startup(workers, listing_s)
    total = overheads.fixed_s + listing_s + bookkeeping_s + startup_s + max(copy_s, driver_s)
    return Breakdown(
        classes,
        bound,
        stand_ins,
        copy_s,
        listing_s,
        bookkeeping_s,
        overheads.fixed_s,
        driver_s,
        total,
        startup_s,
        largest_s,
        largest_class,
        largest_bytes,
        busy,
    )


def startup(workers: int, listing_s: float) -> float:
    """The workers' start-up that adds to an exit of ``workers`` (see the module doc): none
    for one worker (one process, no Ray), else what :data:`WORKER_START_S` exceeds the
    driver's listing of the source by."""
    return max(0.0, WORKER_START_S - listing_s) if workers > 1 else 0.0


def percentiles(values: Sequence[float], confidence: float) -> tuple[float, float]:
    """The central ``confidence`` interval of ``values`` (nearest-rank percentiles)."""
    if not values:
        raise ModelError("no values to take percentiles of")
    v = sorted(values)
    lo = v[int(len(v) * (1 - confidence) / 2)]
    hi = v[min(len(v) - 1, int(len(v) * (1 + confidence) / 2))]
    return lo, hi


@dataclass(frozen=True)
class Estimate:
    """A prediction with its interval; ``replicates`` are the bootstrap's predictions."""

    point: Breakdown
    low_s: float
    high_s: float
    replicates: list[Breakdown] = field(default_factory=list, repr=False)

    def class_interval(self, index: int, confidence: float) -> tuple[float, float]:
        point = self.point.classes.get(index, 0.0)
        if not self.replicates:
            return point, point
        lo, hi = percentiles([r.classes.get(index, 0.0) for r in self.replicates], confidence)
        return min(lo, point), max(hi, point)


def estimate(
    work: Workload,
    fitted: Fitted,
    confidence: float,
    workers: int = 1,
    link_Bps: float | None = None,
) -> Estimate:
    """The point prediction and the interval over the fit's bootstrap replicates (the
    interval always contains the point; without replicates it is the point)."""
    point = predict(work, fitted.fit, fitted.overheads, workers, link_Bps)
    reps = [predict(work, r, fitted.overheads, workers, link_Bps) for r in fitted.replicates]
    if not reps:
        return Estimate(point, point.total_s, point.total_s)
    lo, hi = percentiles([r.total_s for r in reps], confidence)
    return Estimate(point, min(lo, point.total_s), max(hi, point.total_s), reps)


@dataclass(frozen=True)
class Needed:
    """Workers needed to finish within a deadline: ``workers`` None when no number of
    workers can (``reason`` says what bounds the time)."""

    workers: int | None
    predicted_s: float | None  # with that many workers
    reason: str | None = None


def workers_for(
    deadline_s: float,
    work: Workload,
    fit: Fit,
    overheads: Overheads,
    link_Bps: float | None = None,
) -> Needed:
    """The fewest workers whose predicted time is within ``deadline_s``.

    The total is ``fixed + listing + bookkeeping + start-up + max(C / W, driver)`` for W > 1
    (C: the copying of one worker; the rest does not shrink with W), so the answer is
    ``ceil(C / (deadline - fixed - listing - bookkeeping - start-up))``, checked against the
    forward model (and moved by one where floating point rounding disagrees)."""
    if not (deadline_s > 0 and math.isfinite(deadline_s)):
        raise ModelError(f"the deadline must be a positive number of seconds, not {deadline_s!r}")
    one = predict(work, fit, overheads, 1, link_Bps)
    if one.total_s <= deadline_s:
        return Needed(1, one.total_s)
    # From two workers on, the start-up not hidden by the listing adds too.
    serial = overheads.fixed_s + one.listing_s + one.bookkeeping_s + startup(2, one.listing_s)
    room = deadline_s - serial
    driver = work.objects / DRIVER_OBJECTS_PER_S
    if room <= 0 or driver > room or one.largest_s > room:
        if room <= 0:
            why = (
                f"the fixed cost with the driver's own listing and bookkeeping ({plain(serial)} s)"
                if not startup(2, one.listing_s)
                else f"the fixed cost with the driver's own listing and bookkeeping and the "
                f"workers' start-up ({plain(serial)} s)"
            )
        elif driver > room:
            why = (
                f"the driver's journal ({plural(work.objects, 'object')} at "
                f"{DRIVER_OBJECTS_PER_S:,}/s: {plain(driver)} s) after its listing and bookkeeping"
            )
        else:
            why = (
                f"the largest object ({one.largest_bytes:,} bytes, never split: one worker "
                f"copies it in {plain(one.largest_s)} s) after the driver's listing and "
                "bookkeeping"
            )
        return Needed(None, None, f"{why} alone exceeds the deadline, whatever the workers")
    # Workers beyond the number of objects have nothing to copy: never more than that.
    most = max(1, work.objects)
    if predict(work, fit, overheads, most, link_Bps).total_s > deadline_s:
        return Needed(None, None, f"even {plural(most, 'worker')}, one per object, do not meet it")
    n = min(most, max(2, math.ceil(one.copy_s / room)))
    while predict(work, fit, overheads, n, link_Bps).total_s > deadline_s:
        n += 1
    while n > 2 and predict(work, fit, overheads, n - 1, link_Bps).total_s <= deadline_s:
        n -= 1
    return Needed(n, predict(work, fit, overheads, n, link_Bps).total_s)


def workers_for_upper(
    deadline_s: float,
    work: Workload,
    fitted: Fitted,
    confidence: float,
    link_Bps: float | None = None,
) -> Needed:
    """The fewest workers whose interval's upper end is within ``deadline_s`` (the
    conservative reading: the deadline holds unless the exit is slower than 97.5 % of the
    bootstrap's replicates)."""
    point = workers_for(deadline_s, work, fitted.fit, fitted.overheads, link_Bps)
    if point.workers is None or not fitted.replicates:
        return point
    n = point.workers

    def high(w: int) -> float:
        return estimate(work, fitted, confidence, w, link_Bps).high_s

    # The upper end is non-increasing in the workers: search up from the point's answer,
    # doubling, then bisect.
    if high(n) <= deadline_s:
        return Needed(n, high(n))
    # Workers beyond the number of objects have nothing to copy: never search beyond that.
    most = max(1, work.objects)
    if high(most) > deadline_s:
        return Needed(None, None, "no number of workers brings the upper end within it")
    lo, hi = n, min(n * 2, most)
    while high(hi) > deadline_s:
        lo, hi = hi, min(hi * 2, most)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if high(mid) <= deadline_s:
            hi = mid
        else:
            lo = mid
    return Needed(hi, high(hi))
