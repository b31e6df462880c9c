"""Exit drill: copy a stratified sample, measure, predict how long leaving would take.

Regulators want an exit plan that is *tested*, with a *realistic* timeline (DORA Art. 28(8),
RTS 2024/1773 Art. 10, EBA outsourcing guidelines §15). A guess from bandwidth arithmetic is not
that: per-object costs, provider behaviour and the client's own CPU decide how long millions of
small objects take. So a drill measures the real copy path on a sample and extrapolates.

How
    1. **Sample.** The manifest's latest scan of the source gives every object's size. Objects
       fall into size classes (:data:`SIZE_CLASSES`) and a random sample is drawn *per class*
       (stratified), so the few huge objects and the millions of tiny ones are both measured.
    2. **Measure.** Each class's sample is copied with the real transfer engine (``Kind.EXIT``:
       streaming, hashing, journal, verification, destination manifest; the destination's
       ``encrypt_to`` applies as in a real exit) to a scratch prefix ``.daulat/drill-<id>/`` at
       the destination, one class after another (largest first), at the exit's concurrency.
       With the default sample a class measured for less than ``MIN_CLASS_SECONDS`` in all is
       copied again with more of its random order, in later passes. The source is seen
       through :class:`SampledSource`, which lists only the sampled keys and refuses any write.
       Per object the wrappers record when its read began and its write was confirmed.
    3. **Model.** Per class: time ≈ objects x per-object cost + bytes / throughput, at the same
       concurrency. The pool's steady state is measured where it was full (see
       :func:`_class_costs`); ramp-up and drain of the short sample run are not extrapolated. The
       source listing (probed on the real source) and the per-object bookkeeping of the run
       (planning, verification, manifest) are added.
    4. **Interval.** A stratified block bootstrap (:data:`INTERVAL_METHOD`): per class the
       measured objects, in completion order, form 10 time blocks; blocks are resampled with
       replacement, the model refitted and the prediction recomputed, 1,000 times; the 2.5th
       and 97.5th percentiles bound a 95 % interval. Blocks rather than single objects, because
       objects copied at the same moment share that moment's load. It covers variation between
       objects and during the drill, not a link that is busier on the day of the exit
       (bench/RESULTS.md measures how far off that makes it).
    5. **Clean up.** The scratch prefix is deleted, always (also after failures and
       interruptions), and listed again to prove it is gone. A drill killed outright leaves its
       scratch behind; the next drill to the same store removes it.

Record
    Every drill is a row in table ``drills`` of ``.daulat/drills.sqlite`` (its own database, so a
    drill never contends with a running exit for the journal's lock): time, SRC, DST, sample,
    predicted seconds with the interval, the model's parameters (JSON) and the whole result.
    Columns ``src`` and ``predicted_hours`` are what :mod:`daulat.policy` reads by default.
    :func:`latest_exit_hours` and :func:`drill_history` read it; the history pairs drills with
    later real ``exit`` runs from the transfer journal and reports the prediction error. The
    drill's own copy uses a temporary journal (deleted afterwards), so it never shows up as an
    exit.

What-if projections (``workers`` machines, each with a link of ``link_bps`` to itself) apply
the plan model (:mod:`daulat.plan`, the same function as ``daulat plan``) to the measured fit
and its bootstrap replicates, kept in the record for later plans. They are labelled projections
everywhere: they are never measurements.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daulat.drill.history import HistoryRow, drill_history
    from daulat.drill.measure import EXTRA_PASSES, LIST_PROBE_OBJECTS, MIN_CLASS_SECONDS
    from daulat.drill.model import BLOCKS, BOOTSTRAP_REPLICATES, INTERVAL_METHOD, MIN_STEADY
    from daulat.drill.record import DRILLS_NAME, DrillLog, latest_exit_hours
    from daulat.drill.render import render_drill, render_history
    from daulat.drill.result import (
        CONFIDENCE,
        ClassResult,
        DrillFailed,
        DrillResult,
        Overhead,
        Projection,
    )
    from daulat.drill.run import SCRATCH_PREFIX, remove_scratch, run_drill
    from daulat.drill.sample import (
        CLASS_BYTE_CAP,
        DEFAULT_FRACTION,
        MAX_PER_CLASS,
        MIN_LARGE,
        MIN_PER_CLASS,
        SIZE_CLASSES,
        SampledObject,
        SizeClass,
        Stratum,
        allocate,
        draw_sample,
        parse_sample,
        reserve,
        size_class_of,
    )
    from daulat.drill.stores import SampledSource, TimedDestination
    from daulat.drill.units import GiB, KiB, MiB, human_duration, parse_bandwidth

# Where each name lives, imported the first time it is read (daulat.lazy): `import daulat`
# imports this package at once (see daulat/__init__.py), and a drill's machinery (the engine,
# the plan model) is for drills only. The TYPE_CHECKING block says the same for type checkers.
_WHERE: dict[str, tuple[str, ...]] = {
    "daulat.drill.history": ("HistoryRow", "drill_history"),
    "daulat.drill.measure": ("EXTRA_PASSES", "LIST_PROBE_OBJECTS", "MIN_CLASS_SECONDS"),
    "daulat.drill.model": ("BLOCKS", "BOOTSTRAP_REPLICATES", "INTERVAL_METHOD", "MIN_STEADY"),
    "daulat.drill.record": ("DRILLS_NAME", "DrillLog", "latest_exit_hours"),
    "daulat.drill.render": ("render_drill", "render_history"),
    "daulat.drill.result": (
        "CONFIDENCE",
        "ClassResult",
        "DrillFailed",
        "DrillResult",
        "Overhead",
        "Projection",
    ),
    "daulat.drill.run": ("SCRATCH_PREFIX", "remove_scratch", "run_drill"),
    "daulat.drill.sample": (
        "CLASS_BYTE_CAP",
        "DEFAULT_FRACTION",
        "MAX_PER_CLASS",
        "MIN_LARGE",
        "MIN_PER_CLASS",
        "SIZE_CLASSES",
        "SampledObject",
        "SizeClass",
        "Stratum",
        "allocate",
        "draw_sample",
        "parse_sample",
        "reserve",
        "size_class_of",
    ),
    "daulat.drill.stores": ("SampledSource", "TimedDestination"),
    "daulat.drill.units": ("GiB", "KiB", "MiB", "human_duration", "parse_bandwidth"),
}

__all__ = [
    "BLOCKS",
    "BOOTSTRAP_REPLICATES",
    "CLASS_BYTE_CAP",
    "CONFIDENCE",
    "DEFAULT_FRACTION",
    "DRILLS_NAME",
    "EXTRA_PASSES",
    "INTERVAL_METHOD",
    "LIST_PROBE_OBJECTS",
    "MAX_PER_CLASS",
    "MIN_CLASS_SECONDS",
    "MIN_LARGE",
    "MIN_PER_CLASS",
    "MIN_STEADY",
    "SCRATCH_PREFIX",
    "SIZE_CLASSES",
    "ClassResult",
    "DrillFailed",
    "DrillLog",
    "DrillResult",
    "GiB",
    "HistoryRow",
    "KiB",
    "MiB",
    "Overhead",
    "Projection",
    "SampledObject",
    "SampledSource",
    "SizeClass",
    "Stratum",
    "TimedDestination",
    "allocate",
    "draw_sample",
    "drill_history",
    "human_duration",
    "latest_exit_hours",
    "parse_bandwidth",
    "parse_sample",
    "remove_scratch",
    "render_drill",
    "render_history",
    "reserve",
    "run_drill",
    "size_class_of",
]

if not TYPE_CHECKING:
    from daulat import lazy

    __getattr__, __dir__ = lazy.exports(
        __name__, {n: m for m, names in _WHERE.items() for n in names}, __all__
    )
