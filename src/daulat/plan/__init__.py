"""Exit plans: how long leaving takes with N machines, what binds first, what it costs.

``daulat plan SRC DST --workers N --link BW [--deadline HOURS] [--objects N --bytes B]``
extrapolates what the latest drill measured on *one* machine to N machines (*workers*), each
running one daulat engine with its own link of BW to itself. Everything it prints is a
**PROJECTION**, labelled so in the output and in the JSON (``"kind": "projection"``): a plan
is never a measurement. Bytes are decimal everywhere in plans (1 PB = 10^15 B).

The model (:mod:`daulat.plan.model`; the drill's ``--workers/--link`` projection is the same
function on the drill's own census)
    The drill fits, per size class, one worker's pool time per object ``a`` and per byte
    ``b`` (see :mod:`daulat.drill`): pool time, so that a worker's time for a class is the sum
    over its objects. Its link carries the bytes meanwhile (64 objects in flight overlap one
    object's requests with others' bytes), so the class takes the longer of the two. For a
    census of ``n_c`` objects and ``B_c`` bytes in class
    ``c``, W workers, each with ``L`` bytes/s to itself::

        class c      max(n_c x a_c + B_c x b_c, B_c / L) / min(W, objects)
        copying      the sum of the classes, never less than the largest object's time on
                     one worker, max(a_c + S_c x b_c, S_c / L) for the largest S_c of each
                     class, nor than objects / 100,000 when W > 1
        listing      objects listed x (listing seconds per object, probed)
        bookkeeping  objects x (bookkeeping seconds per object)
        start-up     Ray workers' start beyond the listing: max(0, WORKER_START_S - listing),
                     with more than one worker
        exit time    fixed + listing + bookkeeping + start-up + copying

    The floor under the copying is the driver: one coordinator writes every object's result
    to the one journal while the workers copy, at a rate that is issue 12's benchmark goal
    (named as an assumption, not measured). An object is never split: workers beyond the
    number of objects have nothing to copy, and one huge object takes one worker its whole
    time (a what-if's objects are all of the mean size; a scan's largest are its own). Listing and bookkeeping are not divided by W:
    with ``--engine ray`` the driver lists the source, plans, verifies (listing the
    destination) and writes the manifest itself, before and after the copying, as one process
    does (bench/RESULTS.md, "Ray scaling", compares the plan with measured runs). The
    workers' processes start (Ray's and daulat's imports, :data:`WORKER_START_S`, a documented
    figure: the drill runs without Ray) while the driver lists the source, in parallel: only
    what that takes beyond the listing adds, once. A class the drill did not measure is costed by the drill's fit across its
    classes' means (or, with one class measured, by that class), and the plan says so.

Interval
    The drill keeps its bootstrap replicates of the fit (1,000 stratified block bootstraps,
    :data:`daulat.drill.INTERVAL_METHOD`) in its record. A plan applies the model to each and
    takes the 2.5th and 97.5th percentiles: a 95 % interval that covers the variation the
    drill saw, not a busier day. The interval always contains the point estimate.

Deadline
    ``--deadline H`` inverts the model: the fewest workers whose predicted time is within H
    (closed form, checked against the forward model), and the fewest whose interval's upper
    end is. When fixed costs, the driver or the largest object alone exceed H, no number of
    workers meets it and the plan says why.

Census
    :func:`take_census`: the latest complete scan of SRC in the manifest (an inventory report
    imported into the manifest counts as one), or ``--objects N --bytes B`` for a what-if, in
    which every object is taken to be of the mean size. With neither, or without any drill of
    SRC, ``daulat plan`` refuses (exit 2): it has no default costs.

Requests, limits, costs
    Requests are counted from the census and the destination's write rule (one PUT up to 8
    MiB, else multipart parts; a filesystem makes none). The sourced tables
    (``data/limits.toml``, ``data/prices.toml``, :mod:`daulat.plan.tables`) give each
    provider's per-account / per-prefix / per-bucket limits and its prices, each with its
    source URL and the date it was read, or "not read" where it could not be. Each limit is
    checked against what the projected exit asks while copying (bytes and requests over the
    copying time): how many accounts, prefixes or buckets the data must be spread over, and
    how long one alone would take. Costs are taken only from prices read on the providers'
    pages; third parties' readings are shown apart. The providers' free-egress programmes
    for customers who leave and the EU Data Act's rules on switching charges are printed
    with their conditions and sources.
"""

from __future__ import annotations

from daulat.plan.build import LABEL, Plan, latest_drill, make_plan
from daulat.plan.census import (
    Census,
    PartRule,
    Requests,
    census_from_manifest,
    census_from_totals,
    part_rule_for,
    requests_of,
    take_census,
)
from daulat.plan.model import (
    DRIVER_OBJECTS_PER_S,
    WORKER_START_S,
    Breakdown,
    ClassCost,
    Estimate,
    Fit,
    Fitted,
    ModelError,
    Needed,
    Overheads,
    Workload,
    estimate,
    predict,
    workers_for,
    workers_for_upper,
)
from daulat.plan.render import render_plan
from daulat.plan.tables import TableError, Tables, load_tables
from daulat.plan.units import parse_bytes, parse_count, parse_hours

__all__ = [
    "DRIVER_OBJECTS_PER_S",
    "LABEL",
    "WORKER_START_S",
    "Breakdown",
    "Census",
    "ClassCost",
    "Estimate",
    "Fit",
    "Fitted",
    "ModelError",
    "Needed",
    "Overheads",
    "PartRule",
    "Plan",
    "Requests",
    "TableError",
    "Tables",
    "Workload",
    "census_from_manifest",
    "census_from_totals",
    "estimate",
    "latest_drill",
    "load_tables",
    "make_plan",
    "parse_bytes",
    "parse_count",
    "parse_hours",
    "part_rule_for",
    "predict",
    "render_plan",
    "requests_of",
    "take_census",
    "workers_for",
    "workers_for_upper",
]
