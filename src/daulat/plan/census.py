"""The census a plan extrapolates to: objects and bytes per size class, and the requests an
exit of them makes.

One function, :func:`take_census`, gives it, from the latest complete scan of the source in
the manifest database (so an inventory report imported into the manifest counts as a scan) or
from numbers given for a what-if (``--objects N --bytes B``). The scan's census is one SQL
aggregate: memory stays flat however many objects the manifest holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from daulat.drill.sample import _BOUNDS, SIZE_CLASSES, size_class_of
from daulat.errors import ConfigError
from daulat.inventory.database import MANIFEST_KIND, MANIFEST_NAME, Manifest
from daulat.plan.model import Workload
from daulat.plurals import plural
from daulat.state import connect_readonly
from daulat.stores.objectstore import LIST_PAGE, PART_SIZE, SINGLE_PUT_MAX
from daulat.stores.s3raw import MAX_PART
from daulat.transfer.manifests import DST_MANIFEST_PREFIX

# The S3 store doubles its part size every this many parts, so a 5 TB object fits in
# MAX_PARTS parts (daulat.stores.s3raw).
PART_GROWTH_EVERY = 1000


@dataclass(frozen=True)
class PartRule:
    """How the destination store writes an object: one PUT up to ``single_put_max`` bytes,
    else a multipart upload (create, parts, complete) of ``part_size`` parts, the part size
    doubling every ``grow_every`` parts (None: fixed)."""

    name: str
    single_put_max: int
    part_size: int
    grow_every: int | None = None
    max_part: int | None = None

    def parts(self, size: int) -> int:
        """Parts of one object of ``size`` bytes (0: a single PUT)."""
        if size <= self.single_put_max:
            return 0
        if self.grow_every is None:
            return max(1, math.ceil(size / self.part_size))
        n, left, part = 0, size, self.part_size
        while left > 0:
            take = min(left, part * self.grow_every)
            n += math.ceil(take / part)
            left -= take
            part = min(part * 2, self.max_part or part * 2)
        return n

    def sql(self, column: str = "size") -> str:
        """:meth:`parts` as an SQL expression over ``column`` (integer arithmetic)."""
        p = self.part_size
        if self.grow_every is None:
            return f"CASE WHEN {column} <= {self.single_put_max} THEN 0 ELSE ({column} + {p - 1}) / {p} END"
        cases, done_bytes, done_parts, part = [], 0, 0, p
        for _ in range(64):
            top = done_bytes + part * self.grow_every
            cases.append(
                f"WHEN {column} <= {top} THEN {done_parts} + "
                f"({column} - {done_bytes} + {part - 1}) / {part}"
            )
            done_bytes, done_parts = top, done_parts + self.grow_every
            nxt = min(part * 2, self.max_part or part * 2)
            if nxt == part:
                break
            part = nxt
        last = f"{done_parts} + ({column} - {done_bytes} + {part - 1}) / {part}"
        return (
            f"CASE WHEN {column} <= {self.single_put_max} THEN 0 "
            + " ".join(cases)
            + f" ELSE {last} END"
        )


S3_PARTS = PartRule(
    f"one PUT up to {SINGLE_PUT_MAX // 2**20} MiB, else parts of {PART_SIZE // 2**20} MiB "
    f"doubling every {PART_GROWTH_EVERY} parts",
    SINGLE_PUT_MAX,
    PART_SIZE,
    PART_GROWTH_EVERY,
    MAX_PART,
)
BLOCK_PARTS = PartRule(
    f"one PUT up to {SINGLE_PUT_MAX // 2**20} MiB, else blocks of {PART_SIZE // 2**20} MiB",
    SINGLE_PUT_MAX,
    PART_SIZE,
)


def part_rule_for(scheme: str) -> PartRule | None:
    """How a destination of URL ``scheme`` writes objects (None: a filesystem, no requests)."""
    return {"s3": S3_PARTS, "az": BLOCK_PARTS}.get(scheme)


@dataclass(frozen=True)
class ClassCensus:
    index: int
    objects: int
    bytes: int
    multipart_objects: int = 0
    parts: int = 0
    largest: int = 0  # bytes of its largest object: one worker copies it alone

    @property
    def label(self) -> str:
        return SIZE_CLASSES[self.index].label


@dataclass(frozen=True)
class Census:
    """What leaves, per size class (non-empty classes only), and where the numbers come from."""

    source: str
    whatif: bool
    classes: tuple[ClassCensus, ...]
    listed_objects: int
    part_rule: PartRule | None
    # When the objects were as counted (the scan's census date: an inventory report's own
    # date where the scan was read from one, ``report``), None for a what-if.
    date: str | None = None
    report: str | None = None

    @property
    def objects(self) -> int:
        return sum(c.objects for c in self.classes)

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self.classes)

    def workload(self) -> Workload:
        return Workload(
            {c.index: (c.objects, c.bytes) for c in self.classes},
            self.listed_objects,
            {c.index: c.largest for c in self.classes},
        )

    @property
    def largest(self) -> int:
        """The bytes of the largest object."""
        return max((c.largest for c in self.classes), default=0)


def census_from_totals(objects: int, size: int, rule: PartRule | None) -> Census:
    """A what-if: ``objects`` objects of ``size`` bytes in all, each taken to be of the mean
    size (so all in the mean's size class, with that many parts each)."""
    if objects < 1 or size < 0:
        raise ConfigError("a what-if needs at least one object and a size >= 0 bytes")
    # Integer arithmetic: a float's mean of 10^20 bytes would print digits nobody counted.
    largest = -(-size // objects)  # the mean, rounded up: an object is whole bytes
    index = size_class_of(size // objects)
    parts = rule.parts(largest) if rule is not None else 0
    c = ClassCensus(index, objects, size, objects if parts else 0, objects * parts, largest)
    return Census(
        f"given (what-if): {plural(objects, 'object')}, {size:,} bytes; every object taken to be of "
        f"the mean size, {(2 * size + objects) // (2 * objects):,} bytes ({c.label})",
        True,
        (c,),
        objects,
        rule,
    )


def census_from_manifest(state_dir: Path, store: str, prefix: str, rule: PartRule | None) -> Census:
    """The latest complete scan of ``store`` under ``prefix`` (daulat's own files under
    ``PREFIX.daulat/`` left out, as a drill leaves them out)."""
    with Manifest.in_state_dir(state_dir) as manifest:
        scan = manifest.last_scan(store)
    if scan is None:
        raise ConfigError(
            f"the manifest has no complete scan of store {store!r} to plan from: run "
            f"`daulat scan {store}`, or give --objects and --bytes for a what-if"
        )
    db = connect_readonly(state_dir / MANIFEST_NAME, MANIFEST_KIND)
    try:
        cases = " ".join(f"WHEN size < {b} THEN {i}" for i, b in enumerate(_BOUNDS))
        parts = rule.sql() if rule is not None else "0"
        meta = DST_MANIFEST_PREFIX
        rows = db.execute(
            f"SELECT CASE {cases} ELSE {len(_BOUNDS)} END AS c, count(*), "
            f"coalesce(sum(size), 0), coalesce(sum(({parts}) > 0), 0), "
            f"coalesce(sum({parts}), 0), coalesce(max(size), 0) FROM objects WHERE store = ? AND substr(key, 1, ?) = ? "
            "AND substr(key, ?, ?) != ? GROUP BY c ORDER BY c",
            (store, len(prefix), prefix, len(prefix) + 1, len(meta), meta),
        ).fetchall()
    finally:
        db.close()
    classes = tuple(
        ClassCensus(int(c), int(n), int(b), int(m), int(p), int(big))
        for c, n, b, m, p, big in rows
        if n
    )
    where = f"{store}:{prefix}" if prefix else store
    if scan.report is not None:
        # Read from an inventory report: the objects are as the provider saw them then.
        source = (
            f"inventory report {scan.report} of {store}, made {scan.report_made} (read as "
            f"scan #{scan.id} on {scan.finished}), objects under {where}"
        )
    else:
        source = f"scan #{scan.id} of {store} (finished {scan.finished}), objects under {where}"
    return Census(
        source,
        False,
        classes,
        sum(c.objects for c in classes),
        rule,
        scan.census_date,
        scan.report,
    )


def take_census(
    state_dir: Path,
    store: str,
    prefix: str,
    rule: PartRule | None,
    *,
    objects: int | None = None,
    size: int | None = None,
) -> Census:
    """The census a plan uses: the numbers given (a what-if, both or neither), else the
    latest complete scan of the source (an inventory report imported into the manifest is a
    scan). Raises :class:`ConfigError` when there is neither."""
    if (objects is None) != (size is None):
        raise ConfigError("a what-if needs both --objects and --bytes")
    if objects is not None and size is not None:
        return census_from_totals(objects, size, rule)
    return census_from_manifest(state_dir, store, prefix, rule)


@dataclass(frozen=True)
class Requests:
    """The requests an exit makes (one streamed GET per object; listings in pages of
    ``LIST_PAGE``; at the destination one PUT, or create + parts + complete)."""

    source_get: int
    source_list: int
    destination_put: int  # single PUTs
    multipart_uploads: int
    parts: int
    destination_list: int  # the verification listing of the destination
    billed_destination: bool  # False: a filesystem, whose writes are not requests
    part_rule: str

    @property
    def destination_writes(self) -> int:
        """Every write request: single PUTs, parts, and each upload's create and complete."""
        return self.destination_put + self.parts + 2 * self.multipart_uploads


def requests_of(census: Census) -> Requests:
    pages = math.ceil(census.listed_objects / LIST_PAGE)
    billed = census.part_rule is not None
    multipart = sum(c.multipart_objects for c in census.classes) if billed else 0
    return Requests(
        source_get=census.objects,
        source_list=pages,
        destination_put=(census.objects - multipart) if billed else 0,
        multipart_uploads=multipart,
        parts=sum(c.parts for c in census.classes) if billed else 0,
        destination_list=math.ceil(census.objects / LIST_PAGE) if billed else 0,
        billed_destination=billed,
        part_rule=census.part_rule.name if census.part_rule else "filesystem: no requests",
    )


__all__ = [
    "BLOCK_PARTS",
    "S3_PARTS",
    "Census",
    "ClassCensus",
    "PartRule",
    "Requests",
    "census_from_manifest",
    "census_from_totals",
    "part_rule_for",
    "requests_of",
    "take_census",
]
