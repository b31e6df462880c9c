"""Sampling: the size classes, the source's census per class and a random draw within each."""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from daulat.drill.units import KiB, MiB
from daulat.errors import ConfigError
from daulat.filters import EVERYTHING, Filter
from daulat.inventory.database import MANIFEST_KIND
from daulat.plurals import plural
from daulat.state import connect_readonly
from daulat.transfer.manifests import DST_MANIFEST_PREFIX
from daulat.transfer.model import Options

# Default sample: per class at least MIN_PER_CLASS objects or DEFAULT_FRACTION of the class,
# and twice the pool's parallelism, so that the pool runs full for a while (a steady state to
# measure); at most MAX_PER_CLASS objects and CLASS_BYTE_CAP bytes (but MIN_LARGE objects).
DEFAULT_FRACTION = 0.01
MIN_PER_CLASS = 30
MAX_PER_CLASS = 2000
CLASS_BYTE_CAP = 256 * MiB
MIN_LARGE = 2
# The engine holds at most this many bytes in flight and reserves this much per streamed object.
_ENGINE_BUDGET = Options().max_bytes_in_flight
_STREAM_RESERVATION = 28 * MiB


@dataclass(frozen=True)
class SizeClass:
    """Objects of ``low <= size < high`` bytes (``high`` None: no upper bound)."""

    label: str
    low: int
    high: int | None


SIZE_CLASSES: tuple[SizeClass, ...] = (
    SizeClass("< 64 KiB", 0, 64 * KiB),
    SizeClass("64 KiB - 1 MiB", 64 * KiB, MiB),
    SizeClass("1 - 16 MiB", MiB, 16 * MiB),
    SizeClass("16 - 256 MiB", 16 * MiB, 256 * MiB),
    SizeClass("≥ 256 MiB", 256 * MiB, None),
)
_BOUNDS = [c.low for c in SIZE_CLASSES[1:]]


def size_class_of(size: int) -> int:
    """Index into :data:`SIZE_CLASSES` of an object of ``size`` bytes."""
    return bisect.bisect_right(_BOUNDS, size)


@dataclass(frozen=True, slots=True)
class SampledObject:
    key: str  # the store's key (with the source prefix)
    size: int
    etag: str | None
    modified: str


@dataclass
class Stratum:
    """One size class of the source: its totals and the objects drawn from it.

    ``sample`` is in random order; the drill copies its first ``initial`` objects and, with the
    default sample, may go on further into it (any prefix of it is a uniform random sample).
    ``used`` is how many it copied in the end.
    """

    index: int
    objects: int
    bytes: int
    sample: list[SampledObject] = field(default_factory=list)
    initial: int = 0
    used: int = 0
    largest: int = 0  # bytes of its largest object (the plan model's one-worker floor)

    @property
    def size_class(self) -> SizeClass:
        return SIZE_CLASSES[self.index]


def parse_sample(text: str) -> int | float:
    """``--sample`` text: ``200`` (objects in total) or ``5%`` (of each size class)."""
    t = text.strip()
    try:
        if t.endswith("%"):
            value = float(t[:-1]) / 100
            if not 0 < value <= 1:
                raise ValueError
            return value
        n = int(t)
        if n < 1:
            raise ValueError
        return n
    except ValueError:
        raise ConfigError(
            f"--sample {text!r}: give a number of objects (e.g. 200) or a percentage (e.g. 5%)"
        ) from None


def reserve(strata: Sequence[Stratum]) -> dict[int, int]:
    """How many objects per class the default sample may grow to: ``MAX_PER_CLASS`` objects
    and ``CLASS_BYTE_CAP`` bytes (at least ``MIN_LARGE``), never more than the class holds."""
    out = {}
    for s in strata:
        if s.objects:
            by_bytes = max(MIN_LARGE, int(CLASS_BYTE_CAP // max(s.bytes / s.objects, 1)))
            out[s.index] = min(s.objects, MAX_PER_CLASS, by_bytes)
    return out


def allocate(
    strata: Sequence[Stratum], sample: int | float | None, concurrency: int
) -> dict[int, int]:
    """How many objects to draw from each class (index → count).

    - ``None`` (default): per class ``max(MIN_PER_CLASS, 1 %, 2 x the pool's parallelism in
      that class)``, then at most ``MAX_PER_CLASS`` objects and ``CLASS_BYTE_CAP`` bytes (but at
      least ``MIN_LARGE`` objects), never more than the class holds. The parallelism term makes
      the pool run full, so a steady state can be measured.
    - ``float`` in (0, 1]: that fraction of every class, rounded up (at least one object).
    - ``int``: that many objects in total, split in proportion to each class's mean share of
      the objects and of the bytes (a proxy for its share of the exit time), at least one per
      class; a total below the number of non-empty classes is refused.
    """
    live = [s for s in strata if s.objects]
    if sample is None:
        cap = reserve(live)
        out = {}
        for s in live:
            want = max(
                MIN_PER_CLASS,
                math.ceil(DEFAULT_FRACTION * s.objects),
                2 * _parallelism(s.bytes / s.objects, s.objects, concurrency),
            )
            out[s.index] = min(want, cap[s.index])
        return out
    if isinstance(sample, float):
        if not 0 < sample <= 1:
            raise ConfigError(f"sample fraction {sample} must be in (0, 1] (e.g. 0.05 for 5%)")
        return {s.index: min(s.objects, max(1, math.ceil(sample * s.objects))) for s in live}
    if isinstance(sample, bool) or sample < 1:
        raise ConfigError(f"sample {sample!r}: give a positive number of objects")
    if sample < len(live):
        raise ConfigError(
            f"a sample of {sample} object(s) cannot cover the {len(live)} size classes the "
            f"source has; use --sample {len(live)} or more"
        )
    total_objects = sum(s.objects for s in live)
    total_bytes = sum(s.bytes for s in live) or 1
    weight = {s.index: s.objects / total_objects / 2 + s.bytes / total_bytes / 2 for s in live}
    out = {s.index: 1 for s in live}
    left = min(sample, total_objects) - len(live)
    while left > 0:
        open_ = [s for s in live if out[s.index] < s.objects]
        wsum = sum(weight[s.index] for s in open_)
        shares = {s.index: left * weight[s.index] / wsum for s in open_}
        given = 0
        for s in open_:
            n = min(int(shares[s.index]), s.objects - out[s.index])
            out[s.index] += n
            given += n
        if given == 0:  # hand out what rounding left, largest remainder first
            for s in sorted(open_, key=lambda s: shares[s.index] % 1, reverse=True):
                if given < left and out[s.index] < s.objects:
                    out[s.index] += 1
                    given += 1
        left -= given
    return out


def _parallelism(mean_size: float, objects: int, concurrency: int) -> int:
    """Objects of this size a real exit keeps in flight: the concurrency, capped by the
    engine's byte budget for streamed objects and by the number of objects."""
    reserve = max(1.0, min(mean_size, _STREAM_RESERVATION))
    return max(1, min(concurrency, objects, int(_ENGINE_BUDGET // reserve)))


def draw_sample(
    manifest_path: Path,
    store: str,
    prefix: str,
    sample: int | float | None,
    concurrency: int,
    rng: random.Random,
    filter: Filter = EVERYTHING,
) -> list[Stratum]:
    """Census of the source's size classes and a uniform random sample within each (objects
    under ``PREFIX.daulat/``, daulat's own manifests and scratch, are left out; so are those
    ``filter`` does not select, by key relative to ``prefix``).

    Reads the manifest read-only in one transaction (a consistent snapshot), streaming: the
    census is one SQL aggregate; the draw picks random ranks per class and takes the rows at
    those ranks in one ordered pass, so memory holds the sample, not the store.
    """
    db = connect_readonly(manifest_path, MANIFEST_KIND)
    try:
        db.execute("BEGIN")
        # daulat's own files at the source (manifests of earlier copies, a killed drill's scratch)
        # are bookkeeping, not the data whose exit is timed.
        where = "store = ? AND substr(key, 1, ?) = ? AND substr(key, ?, ?) != ?"
        meta = DST_MANIFEST_PREFIX
        args: tuple[object, ...] = (store, len(prefix), prefix, len(prefix) + 1, len(meta), meta)
        if filter.active:
            # The filter judges each key in SQL's own pass, so the census stays one aggregate.
            cut = len(prefix)
            db.create_function(
                "daulat_selected", 1, lambda key: filter.matches(key[cut:]), deterministic=True
            )
            where += " AND daulat_selected(key)"
        cases = " ".join(f"WHEN size < {b} THEN {i}" for i, b in enumerate(_BOUNDS))
        census = db.execute(
            f"SELECT CASE {cases} ELSE {len(_BOUNDS)} END AS c, count(*), coalesce(sum(size), 0), "
            f"coalesce(max(size), 0) FROM objects WHERE {where} GROUP BY c",
            args,
        ).fetchall()
        strata = [Stratum(i, 0, 0) for i in range(len(SIZE_CLASSES))]
        for c, n, b, big in census:
            s = strata[int(c)]
            s.objects, s.bytes, s.largest = int(n), int(b), int(big)
        counts = allocate(strata, sample, concurrency)
        draw = reserve(strata) if sample is None else counts
        for i, n in counts.items():
            strata[i].initial = n
        wanted = {i: sorted(rng.sample(range(strata[i].objects), n)) for i, n in draw.items()}
        seen = [0] * len(SIZE_CLASSES)
        nxt = [0] * len(SIZE_CLASSES)
        for key, size, etag, modified in db.execute(
            f"SELECT key, size, etag, modified FROM objects WHERE {where} ORDER BY key", args
        ):
            c = size_class_of(size)
            ranks = wanted.get(c)
            if ranks and nxt[c] < len(ranks) and ranks[nxt[c]] == seen[c]:
                strata[c].sample.append(SampledObject(key, size, etag, modified))
                nxt[c] += 1
            seen[c] += 1
        db.execute("COMMIT")
    finally:
        db.close()
    for s in strata:
        rng.shuffle(s.sample)
        s.initial = min(s.initial, len(s.sample))
    return strata


def excluded_by(manifest_path: Path, store: str, prefix: str, filter: Filter) -> tuple[int, int]:
    """(objects, bytes) under ``prefix`` in the manifest that ``filter`` does not select
    (daulat's own files under ``.daulat/`` aside, as :func:`draw_sample` leaves them out)."""
    if not filter.active:
        return 0, 0
    db = connect_readonly(manifest_path, MANIFEST_KIND)
    try:
        cut = len(prefix)
        db.create_function(
            "daulat_selected", 1, lambda key: filter.matches(key[cut:]), deterministic=True
        )
        meta = DST_MANIFEST_PREFIX
        n, b = db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM objects WHERE store = ? "
            "AND substr(key, 1, ?) = ? AND substr(key, ?, ?) != ? AND NOT daulat_selected(key)",
            (store, cut, prefix, cut + 1, len(meta), meta),
        ).fetchone()
    finally:
        db.close()
    return int(n), int(b)


def _describe_sample(sample: int | float | None) -> str:
    if sample is None:
        return (
            f"default: per class max({MIN_PER_CLASS}, {DEFAULT_FRACTION:.0%}, 2 x pool "
            f"parallelism), at most {MAX_PER_CLASS:,} objects and {CLASS_BYTE_CAP // MiB} MiB"
        )
    if isinstance(sample, float):
        return f"{sample:.4g} of each size class ({sample * 100:.4g}%)"
    return f"{plural(sample, 'object')} in total, split by the classes' shares of objects and bytes"
