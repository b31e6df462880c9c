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

What-if projections (``link_bps``, ``workers``) transform the measured model and are labelled
projections everywhere: they are never measurements.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import math
import os
import random
import re
import secrets
import socket
import sqlite3
import statistics
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from daulat.config import Config
from daulat.crypto import Recipient, parse_recipients
from daulat.errors import ConfigError, DaulatError, StoreError, Unsupported
from daulat.manifest import MANIFEST_NAME, Manifest
from daulat.stores.base import Capabilities, ObjectInfo, ObjectReader, PutResult, Store
from daulat.transfer import open_endpoint
from daulat.transfer.engine import DST_MANIFEST_PREFIX, Endpoint, Kind, Options, transfer
from daulat.transfer.journal import JOURNAL_NAME, Journal
from daulat.transfer.names import NameKey

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

DRILLS_NAME = "drills.sqlite"
SCRATCH_PREFIX = f"{DST_MANIFEST_PREFIX}drill-"  # + id + "/": real exits never list .daulat/

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

# With the default sample, a class whose runs took less than this in all is measured again with
# more objects from its random order (a momentary stall must not decide the prediction).
MIN_CLASS_SECONDS = 3.0
EXTRA_PASSES = 3

LIST_PROBE_OBJECTS = 10_000
BOOTSTRAP_REPLICATES = 1000
CONFIDENCE = 0.95
MIN_STEADY = 8  # completions inside the full-pool window needed to trust its rate

BLOCKS = 10  # time blocks per class for the bootstrap

INTERVAL_METHOD = (
    f"stratified block bootstrap: within each size class the measured objects, in the order "
    f"they completed, are cut into {BLOCKS} consecutive time blocks; blocks are resampled with "
    f"replacement, the model refitted and the exit time recomputed, {BOOTSTRAP_REPLICATES:,} "
    "times; 2.5th-97.5th percentile (95 %). It covers variation between objects and over the "
    "drill's own minutes, not a link or server that is busier on the day of the exit"
)


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


class DrillFailed(DaulatError):
    """The drill could not measure anything usable (the CLI exits 1)."""


# --- sampling -------------------------------------------------------------------------------


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


def parse_bandwidth(text: str) -> float:
    """``--link`` text → bits per second: ``10G``, ``10Gbit/s``, ``500M``, ``1e9`` (SI units)."""
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([kKmMgGtT]?)(?:bit/s|bps|b/s|bit)?\s*", text)
    units = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
    try:
        if m is None:
            raise ValueError
        value = float(m.group(1)) * units[m.group(2).lower()]
    except ValueError:
        raise ConfigError(
            f"--link {text!r}: give a bandwidth in bits per second, e.g. 10G or 500Mbit/s"
        ) from None
    if value <= 0:
        raise ConfigError("--link: the bandwidth must be positive")
    return value


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
) -> list[Stratum]:
    """Census of the source's size classes and a uniform random sample within each (objects
    under ``PREFIX.daulat/``, daulat's own manifests and scratch, are left out).

    Reads the manifest read-only in one transaction (a consistent snapshot), streaming: the
    census is one SQL aggregate; the draw picks random ranks per class and takes the rows at
    those ranks in one ordered pass, so memory holds the sample, not the store.
    """
    db = sqlite3.connect(manifest_path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        db.execute("BEGIN")
        # daulat's own files at the source (manifests of earlier copies, a killed drill's scratch)
        # are bookkeeping, not the data whose exit is timed.
        where = "store = ? AND substr(key, 1, ?) = ? AND substr(key, ?, ?) != ?"
        meta = DST_MANIFEST_PREFIX
        args = (store, len(prefix), prefix, len(prefix) + 1, len(meta), meta)
        cases = " ".join(f"WHEN size < {b} THEN {i}" for i, b in enumerate(_BOUNDS))
        census = db.execute(
            f"SELECT CASE {cases} ELSE {len(_BOUNDS)} END AS c, count(*), coalesce(sum(size), 0) "
            f"FROM objects WHERE {where} GROUP BY c",
            args,
        ).fetchall()
        strata = [Stratum(i, 0, 0) for i in range(len(SIZE_CLASSES))]
        for c, n, b in census:
            strata[int(c)].objects, strata[int(c)].bytes = int(n), int(b)
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


# --- stores seen by the engine during a drill ------------------------------------------------


class SampledSource:
    """The source as the drill's engine sees it: only the sampled keys are listed; reads go to
    the real store and note when each object's read began; every write is refused, so a drill
    can never change the source."""

    def __init__(
        self, inner: Store, objects: Sequence[SampledObject], prefix: str, clock: _Clock
    ) -> None:
        self._inner = inner
        self._objects = objects
        self._prefix = prefix
        self._clock = clock

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def capabilities(self) -> Capabilities:
        return self._inner.capabilities

    async def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        batch = [
            ObjectInfo(o.key, o.size, _parse_time(o.modified), o.etag)
            for o in self._objects
            if o.key.startswith(prefix)
        ]
        for i in range(0, len(batch), 1000):
            yield batch[i : i + 1000]

    async def head(self, key: str) -> ObjectInfo:
        return await self._inner.head(key)

    async def get(self, key: str, *, start: int = 0, end: int | None = None) -> ObjectReader:
        rel = key[len(self._prefix) :]
        self._clock.starts.setdefault(rel, time.monotonic())
        reader = await self._inner.get(key, start=start, end=end)
        self._clock.sizes[rel] = reader.info.size
        return reader

    async def put(
        self,
        key: str,
        data: bytes | AsyncIterable[bytes],
        *,
        sha256: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> PutResult:
        raise Unsupported("a drill never writes to the source", store=self.name, key=key)

    async def delete(self, key: str) -> None:
        raise Unsupported("a drill never deletes at the source", store=self.name, key=key)

    async def close(self) -> None:
        """The real store is closed by the drill, once."""


class TimedDestination:
    """The destination, noting when each object's write was confirmed. ``names`` maps stored
    names back to source keys when names are protected."""

    def __init__(
        self, inner: Store, prefix: str, clock: _Clock, names: Mapping[str, str] | None = None
    ) -> None:
        self._inner = inner
        self._prefix = prefix
        self._clock = clock
        self._names = names or {}

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def capabilities(self) -> Capabilities:
        return self._inner.capabilities

    def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        return self._inner.list(prefix)

    async def head(self, key: str) -> ObjectInfo:
        return await self._inner.head(key)

    async def get(self, key: str, *, start: int = 0, end: int | None = None) -> ObjectReader:
        return await self._inner.get(key, start=start, end=end)

    async def put(
        self,
        key: str,
        data: bytes | AsyncIterable[bytes],
        *,
        sha256: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> PutResult:
        result = await self._inner.put(key, data, sha256=sha256, metadata=metadata)
        rel = key[len(self._prefix) :]
        rel = self._names.get(rel, rel)
        if rel in self._clock.starts:
            self._clock.ends[rel] = time.monotonic()
        return result

    async def delete(self, key: str) -> None:
        await self._inner.delete(key)

    async def close(self) -> None:
        """The real store is closed by the drill, once."""


@dataclass
class _Clock:
    starts: dict[str, float] = field(default_factory=dict)
    ends: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)


# --- results --------------------------------------------------------------------------------


@dataclass
class ClassResult:
    """One size class: what the source holds, what was measured, the fitted model."""

    label: str
    objects: int  # in the source (manifest)
    bytes: int
    sampled_objects: int
    sampled_bytes: int
    copied_objects: int = 0
    wall_s: float = 0.0  # first read began → last write confirmed
    in_flight: int = 0  # most objects in flight at once
    steady: bool = False  # a full-pool window was measured (else the whole run, conservative)
    parallelism: float = 0.0  # mean objects in flight where measured
    per_object_s: float = 0.0  # pool seconds per object at this concurrency
    throughput_bps: float | None = None  # bytes per second at this concurrency (None: no byte cost)
    fit: str = ""
    predicted_s: float = 0.0
    low_s: float = 0.0
    high_s: float = 0.0


@dataclass
class Overhead:
    """Time outside the copying: listing the source, planning, verifying, the manifest."""

    list_s_per_object: float  # source listing, probed on the real source
    listed_in_probe: int
    bookkeeping_s_per_object: float  # planning, verification listing, manifest (fitted)
    fixed_s: float
    predicted_s: float


@dataclass
class Projection:
    """A what-if, derived from the measured model; NOT a measurement."""

    workers: int
    link_bps: float | None  # bits per second
    predicted_s: float
    low_s: float
    high_s: float
    method: str
    kind: str = "projection"


@dataclass
class DrillResult:
    id: str
    started: str
    finished: str
    src: str
    dst: str
    scratch: str  # STORE:KEY-PREFIX of the scratch copy
    scan_id: int
    scanned: str | None
    concurrency: int
    sample: str  # how the sample was chosen
    seed: int
    encrypted: bool
    objects: int  # in the source, per the scan
    bytes: int
    sampled_objects: int
    sampled_bytes: int
    classes: list[ClassResult]
    overhead: Overhead
    predicted_s: float
    low_s: float
    high_s: float
    interval_method: str
    assumptions: list[str]
    projection: Projection | None = None
    scratch_removed: bool = False
    drill_s: float = 0.0  # how long the drill itself took
    problems: list[str] = field(default_factory=list)
    kind: str = "measurement"

    @property
    def ok(self) -> bool:
        """The scratch copy is gone and nothing went wrong."""
        return self.scratch_removed and not self.problems

    @property
    def predicted_hours(self) -> float:
        return self.predicted_s / 3600

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        d["predicted_hours"] = self.predicted_hours
        d["interval_hours"] = [self.low_s / 3600, self.high_s / 3600]
        d["confidence"] = CONFIDENCE
        return d


# --- the drill --------------------------------------------------------------------------------


async def run_drill(
    config: Config,
    src_spec: str,
    dst_spec: str,
    *,
    sample: int | float | None = None,
    link_bps: float | None = None,
    workers: int = 1,
    concurrency: int = 64,
    seed: int | None = None,
    encrypt_to: Sequence[Recipient] = (),
    on_event: Callable[[str], None] | None = None,
) -> DrillResult:
    """Drill an exit from ``src_spec`` to ``dst_spec`` (``STORE[:PREFIX]``); see the module doc.

    ``sample``: None (default rule, see :func:`allocate`), an ``int`` total or a ``float``
    fraction per class. ``link_bps`` (bits/s) and ``workers`` add a labelled projection.
    ``encrypt_to`` overrides the destination's ``encrypt_to``, as ``exit --encrypt-to`` does.

    Raises :class:`ConfigError` (no scan of the source, bad arguments, overlapping stores) and
    :class:`DrillFailed` (nothing could be measured). Store failures of single objects do not
    raise: they are listed in ``problems``. The drill is recorded either way.
    """
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    if concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    if link_bps is not None and link_bps <= 0:
        raise ConfigError("--link must be a positive bandwidth")
    src = open_endpoint(config, src_spec)
    dst = open_endpoint(config, dst_spec)
    try:
        return await _drill(
            config, src, dst, sample, link_bps, workers, concurrency, seed, encrypt_to, on_event
        )
    finally:
        await src.store.close()
        await dst.store.close()


async def _drill(
    config: Config,
    src: Endpoint,
    dst: Endpoint,
    sample: int | float | None,
    link_bps: float | None,
    workers: int,
    concurrency: int,
    seed: int | None,
    encrypt_to: Sequence[Recipient],
    on_event: Callable[[str], None] | None,
) -> DrillResult:
    say = on_event or (lambda _msg: None)
    name = src.store.name
    if src.store.name == dst.store.name and (
        src.prefix.startswith(dst.prefix) or dst.prefix.startswith(src.prefix)
    ):
        raise ConfigError(
            f"{src.label!r} and {dst.label!r} overlap: a store cannot be drilled into itself"
        )
    with Manifest.in_state_dir(config.state_dir) as manifest:
        scan = manifest.last_scan(name)
    if scan is None:
        raise ConfigError(
            f"the manifest has no complete scan of store {name!r}: the drill samples from it. "
            f"Run `daulat scan {name}` first"
        )
    seed = secrets.randbits(32) if seed is None else seed
    strata = draw_sample(
        config.state_dir / MANIFEST_NAME, name, src.prefix, sample, concurrency, random.Random(seed)
    )
    objects = sum(s.objects for s in strata)
    if objects == 0:
        raise DrillFailed(
            f"the latest scan of {name!r} (#{scan.id}) found no objects under {src.label!r}: "
            "nothing to drill (scan again if the store has changed)"
        )
    if not encrypt_to:
        declared = config.store(dst.store.name).encrypt_to
        encrypt_to = parse_recipients(declared) if declared else ()
    # A destination that protects names must not see even the sample's real names. The scratch
    # copy is removed afterwards, so a throwaway name key does (and costs what the real one
    # does per object).
    name_key = (
        NameKey.generate() if encrypt_to and config.store(dst.store.name).encrypt_names else None
    )
    log = DrillLog(config.state_dir)
    try:
        return await _measure(
            log,
            config,
            src,
            dst,
            strata,
            scan.id,
            scan.finished,
            sample,
            link_bps,
            workers,
            concurrency,
            seed,
            encrypt_to,
            name_key,
            say,
        )
    finally:
        log.close()


async def _measure(
    log: DrillLog,
    config: Config,
    src: Endpoint,
    dst: Endpoint,
    strata: list[Stratum],
    scan_id: int,
    scanned: str | None,
    sample: int | float | None,
    link_bps: float | None,
    workers: int,
    concurrency: int,
    seed: int,
    encrypt_to: Sequence[Recipient],
    name_key: NameKey | None,
    say: Callable[[str], None],
) -> DrillResult:
    """Copy the sample class by class, fit, and always remove the scratch copy."""
    opts = Options(
        concurrency=concurrency,
        encrypt_to=encrypt_to,
        encrypt_names=name_key is not None,
        name_key=name_key,
    )
    drill_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)
    scratch = f"{dst.prefix}{SCRATCH_PREFIX}{drill_id}/"
    started = _now()
    t_start = time.monotonic()
    log.begin(drill_id, started, src, dst, scratch)
    problems: list[str] = []
    journal_path = config.state_dir / f"drill-{drill_id}.journal.sqlite"
    try:
        problems += await _sweep_leftovers(log, dst.store, say)
        with Journal(journal_path) as journal:
            say("probing the source listing")
            probe = await _probe_listing(src, journal)
            runs = await _measure_classes(
                strata, src, dst, scratch, journal, opts, sample is None, say
            )
        for r in runs:
            problems += [p for part in r.parts for p in part.problems]
        say("fitting the model")
        result = _build_result(
            drill_id=drill_id,
            started=started,
            src=src,
            dst=dst,
            scratch=scratch,
            scan_id=scan_id,
            scanned=scanned,
            concurrency=concurrency,
            sample=_describe_sample(sample),
            seed=seed,
            encrypted=bool(encrypt_to),
            strata=strata,
            runs=runs,
            probe=probe,
            link_bps=link_bps,
            workers=workers,
            rng=random.Random(seed + 1),
        )
    except BaseException as exc:
        log.fail(drill_id, _describe_error(exc))
        raise
    finally:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                Path(f"{journal_path}{suffix}").unlink(missing_ok=True)
        say(f"removing the scratch copy {dst.store.name}:{scratch}")
        removed, left = await remove_scratch(dst.store, scratch)
        log.scratch_removed(drill_id, removed)
        if not removed:
            msg = (
                f"the scratch copy at {dst.store.name}:{scratch} could not be removed "
                f"({left} object(s) remain): delete that prefix by hand, or run another drill "
                "to this store, which retries"
            )
            say(msg)
            problems.append(msg)
    result.scratch_removed = removed
    result.problems = problems
    result.finished = _now()
    result.drill_s = time.monotonic() - t_start
    log.complete(result)
    return result


@dataclass
class _Part:
    """One engine run over (part of) a class's sample."""

    timings: list[tuple[int, float, float]]  # (size, start, end) of each copied object
    pre_s: float  # transfer start → first read
    post_s: float  # last write → transfer end (verification, manifest)
    problems: list[str]


@dataclass
class _ClassRun:
    stratum: Stratum
    parts: list[_Part]

    @property
    def copied(self) -> int:
        return sum(len(p.timings) for p in self.parts)


async def _measure_classes(
    strata: Sequence[Stratum],
    src: Endpoint,
    dst: Endpoint,
    scratch: str,
    journal: Journal,
    opts: Options,
    adaptive: bool,
    say: Callable[[str], None],
) -> list[_ClassRun]:
    """Copy every class's initial sample (largest class first, as the engine orders work).

    With ``adaptive`` (the default sample), classes whose runs add up to less than
    MIN_CLASS_SECONDS are then measured again with more objects from their random order, in
    further passes over the classes (at most EXTRA_PASSES), each run sized from the rate so far
    to reach MIN_CLASS_SECONDS. A short measurement is at the mercy of a momentary stall;
    passes spread a class's measurement over the drill instead of one burst.
    """
    runs = []
    for s in sorted(strata, key=lambda s: -s.index):
        if s.initial:
            say(
                f"copying {s.initial:,} of {s.objects:,} objects ({s.size_class.label}) to "
                f"{dst.store.name}:{scratch}"
            )
            part = await _copy_part(
                s.sample[: s.initial], src, dst, f"{scratch}c{s.index}p0/", journal, opts
            )
            s.used = s.initial
            runs.append(_ClassRun(s, [part]))
    for n in range(1, EXTRA_PASSES + 1 if adaptive else 1):
        for r in runs:
            s = r.stratum
            measured = sum(_wall(p.timings) for p in r.parts)
            more = len(s.sample) - s.used
            if more <= 0 or not r.copied or measured >= MIN_CLASS_SECONDS:
                continue
            rate = r.copied / max(measured, 1e-3)
            extra = min(
                more, max(s.initial, math.ceil(rate * (MIN_CLASS_SECONDS - measured) * 1.2))
            )
            say(f"copying {extra:,} more ({s.size_class.label}): measured {measured:.2f} s so far")
            chunk = s.sample[s.used : s.used + extra]
            prefix = f"{scratch}c{s.index}p{n}/"
            r.parts.append(await _copy_part(chunk, src, dst, prefix, journal, opts))
            s.used += extra
    return runs


def _wall(timings: Sequence[tuple[int, float, float]]) -> float:
    if not timings:
        return 0.0
    return max(t[2] for t in timings) - min(t[1] for t in timings)


async def _copy_part(
    objects: Sequence[SampledObject],
    src: Endpoint,
    dst: Endpoint,
    prefix: str,
    journal: Journal,
    opts: Options,
) -> _Part:
    """Copy ``objects`` with the real engine (an exit into ``prefix``), timed."""
    clock = _Clock()
    source = Endpoint(SampledSource(src.store, objects, src.prefix, clock), src.prefix)
    names = None
    if opts.name_key is not None:
        rels = [o.key[len(src.prefix) :] for o in objects]
        names = {opts.name_key.stored_name(rel): rel for rel in rels}
    target = Endpoint(TimedDestination(dst.store, prefix, clock, names), prefix)
    t0 = time.monotonic()
    summary = await transfer(Kind.EXIT, source, target, journal, opts)
    t1 = time.monotonic()
    if summary.stopped:
        raise DrillFailed(f"the drill's copy stopped: {summary.stopped}")
    problems = [f"{src.prefix}{k}: {why}" for k, why in summary.failed + summary.refused]
    problems += [f"{src.prefix}{k}: not verified: {why}" for k, why in summary.unverified]
    if summary.manifest_error:
        problems.append(
            f"the scratch copy's manifest could not be written: {summary.manifest_error}"
        )
    timings = [
        (clock.sizes[k], clock.starts[k], end)
        for k, end in clock.ends.items()
        if k in clock.starts and k in clock.sizes
    ]
    if not timings:
        return _Part([], 0.0, 0.0, problems)
    first = min(t[1] for t in timings)
    last = max(t[2] for t in timings)
    return _Part(timings, first - t0, t1 - last, problems)


async def _probe_listing(src: Endpoint, journal: Journal) -> tuple[int, float]:
    """List up to LIST_PROBE_OBJECTS of the real source into a scratch table of the drill's
    journal, as an exit's listing does; returns (objects listed, seconds)."""
    journal.new_listing("probe")
    listed = 0
    t0 = time.monotonic()
    pages = src.store.list(src.prefix)
    try:
        async for batch in pages:
            journal.add_to_listing("probe", src.prefix, batch)
            listed += len(batch)
            if listed >= LIST_PROBE_OBJECTS:
                break
    finally:
        close = getattr(pages, "aclose", None)
        if close is not None:
            await close()
    return listed, time.monotonic() - t0


async def remove_scratch(store: Store, prefix: str, attempts: int = 3) -> tuple[bool, int]:
    """Delete every object under ``prefix`` and list again to prove it is gone.

    Returns (gone, objects still there). Never raises for store errors: a failure to clean up is
    reported, and must not hide the error that ended the drill.
    """
    left = 0
    sem = asyncio.Semaphore(32)

    async def one(key: str) -> None:
        async with sem:
            with contextlib.suppress(StoreError):
                await store.delete(key)

    for _ in range(attempts):
        try:
            keys = [o.key async for batch in store.list(prefix) for o in batch]
        except StoreError:
            await asyncio.sleep(0.5)
            continue
        left = len(keys)
        if not keys:
            return True, 0
        await asyncio.gather(*(one(k) for k in keys))
    try:
        left = sum([len(batch) async for batch in store.list(prefix)])
    except StoreError:
        return False, left
    return left == 0, left


async def _sweep_leftovers(log: DrillLog, store: Store, say: Callable[[str], None]) -> list[str]:
    """Remove scratch copies that earlier drills to this store left behind (killed, or their
    clean-up failed). A drill still running elsewhere is left alone."""
    problems = []
    for drill_id, scratch in log.leftovers(store.name):
        say(f"removing the scratch copy left by drill {drill_id}: {store.name}:{scratch}")
        gone, left = await remove_scratch(store, scratch)
        log.scratch_removed(drill_id, gone)
        if not gone:
            problems.append(
                f"an earlier drill's scratch copy {store.name}:{scratch} still holds {left} "
                "object(s)"
            )
    return problems


# --- the model ----------------------------------------------------------------------------------


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


def _class_model(costs: _Costs, split: tuple[float, float] | None) -> tuple[float, float, str]:
    """(per-object seconds, seconds per byte, how) for one class.

    Within the class when its sizes vary enough; otherwise the class's mean cost is split
    between the two terms in the proportion the all-class fit ``split`` gives at the class's
    mean size (with one class only: small objects count as per-object cost, large as bytes).
    """
    if _varied(costs.sizes):
        a, b = _fit_line(costs.sizes, costs.costs)
        return a, b, "fitted within the class"
    mean_cost = statistics.fmean(costs.costs)
    mean_size = statistics.fmean(costs.sizes)
    if split is not None and (split[0] + split[1] * mean_size) > 0:
        frac = split[0] / (split[0] + split[1] * mean_size)
        how = "class mean, split by the fit across classes"
    else:
        frac = 1.0 if mean_size < MiB else 0.0
        how = "class mean (one size only: not separable)"
    per_byte = (1 - frac) * mean_cost / mean_size if mean_size > 0 else 0.0
    return frac * mean_cost, per_byte, how


def _predict(
    strata: Mapping[int, Stratum],
    costs: Mapping[int, _Costs],
    workers: int = 1,
    link_Bps: float | None = None,
) -> tuple[dict[int, float], dict[int, tuple[float, float, str]]]:
    """Predicted seconds per class (and each class's model) for the whole source."""
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
    models = {i: _class_model(c, split) for i, c in costs.items()}
    out = {}
    for i, (a, b, _how) in models.items():
        s = strata[i]
        bytes_s = s.bytes * b / workers
        if link_Bps is not None:
            bytes_s = max(bytes_s, s.bytes / link_Bps)
        out[i] = s.objects * a / workers + bytes_s
    return out, models


def _overhead(runs: Sequence[_ClassRun], probe: tuple[int, float], objects: int) -> Overhead:
    """Listing and bookkeeping of a whole exit of ``objects`` objects.

    The source listing costs what the probe measured per object. The rest (planning,
    verification listing, destination manifest) is fitted across the class runs as
    ``fixed + objects x per-object``; with one run all of it counts per object.
    """
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
        predicted_s=objects * (per_list + per_obj) + fixed,
    )


def _bootstrap(
    strata: Mapping[int, Stratum],
    costs: Mapping[int, _Costs],
    rng: random.Random,
    workers: int = 1,
    link_Bps: float | None = None,
) -> list[dict[int, float]]:
    """Per-class predictions of each bootstrap replicate (see INTERVAL_METHOD)."""
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
        reps.append(_predict(strata, resampled, workers, link_Bps)[0])
    return reps


def _percentiles(values: Sequence[float]) -> tuple[float, float]:
    v = sorted(values)
    lo = v[int(len(v) * (1 - CONFIDENCE) / 2)]
    hi = v[min(len(v) - 1, int(len(v) * (1 + CONFIDENCE) / 2))]
    return lo, hi


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
    overhead = _overhead(runs, probe, objects)
    per_class, models = _predict(by_index, costs)
    reps = _bootstrap(by_index, costs, rng)
    total = overhead.predicted_s + sum(per_class.values())
    low, high = _percentiles([overhead.predicted_s + sum(r.values()) for r in reps])
    classes = []
    for s in strata:
        if not s.objects:
            continue
        c = costs[s.index]
        a, b, how = models[s.index]
        lo_c, hi_c = _percentiles([r[s.index] for r in reps])
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
                per_object_s=a,
                throughput_bps=(1 / b) if b > 0 else None,
                fit=how + ("" if c.steady else "; pool never full: whole run, conservative"),
                predicted_s=per_class[s.index],
                low_s=lo_c,
                high_s=hi_c,
            )
        )
    projection = None
    if workers != 1 or link_bps is not None:
        link_Bps = link_bps / 8 if link_bps is not None else None
        proj, _ = _predict(by_index, costs, workers, link_Bps)
        proj_reps = _bootstrap(by_index, costs, random.Random(seed + 2), workers, link_Bps)
        p_lo, p_hi = _percentiles([overhead.predicted_s + sum(r.values()) for r in proj_reps])
        projection = Projection(
            workers=workers,
            link_bps=link_bps,
            predicted_s=overhead.predicted_s + sum(proj.values()),
            low_s=p_lo,
            high_s=p_hi,
            method=(
                f"per-object cost ÷ {workers} worker(s); bytes at min(measured throughput x "
                f"{workers}"
                + (f", link {_human_rate_bits(link_bps)}" if link_bps is not None else "")
                + "); listing and bookkeeping unchanged (one coordinator). Assumes the source "
                "and destination scale with the workers and nothing else limits them."
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
        low_s=min(low, total),
        high_s=max(high, total),
        interval_method=INTERVAL_METHOD,
        assumptions=_assumptions(concurrency, scanned, encrypted),
        projection=projection,
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


def _describe_sample(sample: int | float | None) -> str:
    if sample is None:
        return (
            f"default: per class max({MIN_PER_CLASS}, {DEFAULT_FRACTION:.0%}, 2 x pool "
            f"parallelism), at most {MAX_PER_CLASS:,} objects and {CLASS_BYTE_CAP // MiB} MiB"
        )
    if isinstance(sample, float):
        return f"{sample:.4g} of each size class ({sample * 100:.4g}%)"
    return f"{sample:,} objects in total, split by the classes' shares of objects and bytes"


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
        return "interrupted"
    return f"{type(exc).__name__}: {exc}"


# --- the record ---------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS drills (
    id TEXT PRIMARY KEY,
    started TEXT NOT NULL,
    finished TEXT,
    status TEXT NOT NULL,             -- running | complete | failed
    src TEXT NOT NULL,                -- STORE or STORE:PREFIX/ (as exit labels it)
    dst TEXT NOT NULL,
    src_store TEXT NOT NULL,
    src_prefix TEXT NOT NULL,
    dst_store TEXT NOT NULL,
    scratch TEXT NOT NULL,            -- key prefix of the scratch copy at dst_store
    scratch_removed INTEGER NOT NULL DEFAULT 0,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    objects INTEGER,                  -- in the source, per the scan
    bytes INTEGER,
    sample_objects INTEGER,
    sample_bytes INTEGER,
    concurrency INTEGER,
    predicted_s REAL,
    low_s REAL,
    high_s REAL,
    predicted_hours REAL,             -- read by daulat.policy (max_exit_hours)
    model TEXT,                       -- JSON: per-class parameters, overhead, interval method
    projection TEXT,                  -- JSON, or NULL: a what-if, not a measurement
    result TEXT,                      -- JSON: the whole DrillResult
    after_run INTEGER,                -- last transfer-journal run id when the drill ended
    error TEXT
);
"""


class DrillLog:
    """Table ``drills`` in ``.daulat/drills.sqlite``: one row per drill, written at its start
    (status ``running``) and end (``complete`` or ``failed``)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / DRILLS_NAME
        state_dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> DrillLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def begin(
        self, drill_id: str, started: str, src: Endpoint, dst: Endpoint, scratch: str
    ) -> None:
        self.db.execute(
            "INSERT INTO drills (id, started, status, src, dst, src_store, src_prefix, dst_store, "
            "scratch, host, pid) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                drill_id,
                started,
                src.label or src.store.name,
                dst.label or dst.store.name,
                src.store.name,
                src.prefix,
                dst.store.name,
                scratch,
                socket.gethostname(),
                os.getpid(),
            ),
        )

    def fail(self, drill_id: str, error: str) -> None:
        self.db.execute(
            "UPDATE drills SET status = 'failed', finished = ?, error = ? WHERE id = ?",
            (_now(), error, drill_id),
        )

    def scratch_removed(self, drill_id: str, removed: bool) -> None:
        self.db.execute(
            "UPDATE drills SET scratch_removed = ? WHERE id = ?", (int(removed), drill_id)
        )

    def complete(self, r: DrillResult) -> None:
        model = {
            "classes": [
                {
                    k: getattr(c, k)
                    for k in (
                        "label",
                        "objects",
                        "bytes",
                        "sampled_objects",
                        "per_object_s",
                        "throughput_bps",
                        "parallelism",
                        "steady",
                        "fit",
                        "predicted_s",
                    )
                }
                for c in r.classes
            ],
            "overhead": asdict(r.overhead),
            "interval_method": r.interval_method,
            "confidence": CONFIDENCE,
            "seed": r.seed,
        }
        self.db.execute(
            """UPDATE drills SET status = 'complete', finished = ?, objects = ?, bytes = ?,
                 sample_objects = ?, sample_bytes = ?, concurrency = ?, predicted_s = ?,
                 low_s = ?, high_s = ?, predicted_hours = ?, model = ?, projection = ?,
                 result = ?, error = ?, after_run = ? WHERE id = ?""",
            (
                r.finished,
                r.objects,
                r.bytes,
                r.sampled_objects,
                r.sampled_bytes,
                r.concurrency,
                r.predicted_s,
                r.low_s,
                r.high_s,
                r.predicted_hours,
                json.dumps(model),
                json.dumps(asdict(r.projection)) if r.projection else None,
                json.dumps(r.to_json()),
                "; ".join(r.problems) or None,
                _last_run_id(self.path.parent / JOURNAL_NAME),
                r.id,
            ),
        )

    def leftovers(self, dst_store: str) -> list[tuple[str, str]]:
        """(id, scratch) of drills to ``dst_store`` whose scratch copy may still exist: those
        that ended without removing it, and those 'running' in a process of this host that is
        gone (killed)."""
        out = []
        host = socket.gethostname()
        for drill_id, scratch, status, h, pid in self.db.execute(
            "SELECT id, scratch, status, host, pid FROM drills "
            "WHERE dst_store = ? AND scratch_removed = 0",
            (dst_store,),
        ).fetchall():
            if status != "running" or (h == host and not _alive(int(pid))):
                out.append((str(drill_id), str(scratch)))
        return out

    def rows(self, where: str = "", args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        self.db.row_factory = sqlite3.Row
        try:
            return list(self.db.execute(f"SELECT * FROM drills {where} ORDER BY rowid", args))
        finally:
            self.db.row_factory = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def latest_exit_hours(
    config: Config | Path,
    store_name: str,
    *,
    bound: Literal["predicted", "high"] = "predicted",
) -> float | None:
    """Hours the latest complete drill of the whole of ``store_name`` predicts for its exit.

    ``config`` is a Config or a state directory. ``bound="high"`` gives the upper end of the
    95 % interval instead (a conservative reading for ``max_exit_hours``). Drills of a prefix
    only (``STORE:PREFIX``) do not count: they time part of the store. None when no such drill
    was recorded.
    """
    state_dir = config.state_dir if isinstance(config, Config) else config
    path = state_dir / DRILLS_NAME
    if not path.is_file():
        return None
    column = "predicted_s" if bound == "predicted" else "high_s"
    db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        row = db.execute(
            f"SELECT {column} FROM drills WHERE src_store = ? AND src_prefix = '' "
            "AND status = 'complete' AND predicted_s IS NOT NULL ORDER BY rowid DESC LIMIT 1",
            (store_name,),
        ).fetchone()
    except sqlite3.DatabaseError:
        return None
    finally:
        db.close()
    return float(row[0]) / 3600 if row else None


# --- history --------------------------------------------------------------------------------------


@dataclass
class HistoryRow:
    """A drill, and the first complete real exit of the same SRC → DST after it."""

    drill_id: str
    time: str
    src: str
    dst: str
    sample_objects: int
    objects: int
    predicted_s: float
    low_s: float
    high_s: float
    projection: dict[str, Any] | None
    exit_run: int | None = None
    exit_started: str | None = None
    actual_s: float | None = None
    actual_objects: int | None = None
    comparable: bool = False
    note: str | None = None
    error_pct: float | None = None  # (predicted - actual) / actual x 100, when comparable

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["predicted_hours"] = self.predicted_s / 3600
        d["interval_hours"] = [self.low_s / 3600, self.high_s / 3600]
        d["actual_hours"] = self.actual_s / 3600 if self.actual_s is not None else None
        return d


def drill_history(config: Config | Path) -> list[HistoryRow]:
    """Every complete drill, oldest first, with the real exit that followed it, if any.

    An exit is matched when it ran for the same SRC → DST labels, finished complete and began
    after the drill ended (its run id in the transfer journal is higher than the last one when
    the drill ended: timestamps in seconds could not order a drill and an exit a second apart). It is *comparable* only if it copied everything itself (not a
    resumption that skipped objects already copied) and encrypted as the drill did; then the
    error is (predicted - actual) / actual. A source that changed by more than 5 % in objects
    since the drill is noted.
    """
    state_dir = config.state_dir if isinstance(config, Config) else config
    if not (state_dir / DRILLS_NAME).is_file():
        return []
    with DrillLog(state_dir) as log:
        drills = log.rows("WHERE status = 'complete'")
    exits = _exit_runs(state_dir / JOURNAL_NAME)
    out = []
    for d in drills:
        result = json.loads(d["result"]) if d["result"] else {}
        after = int(d["after_run"] or 0)
        row = HistoryRow(
            drill_id=d["id"],
            time=d["finished"] or d["started"],
            src=d["src"],
            dst=d["dst"],
            sample_objects=int(d["sample_objects"] or 0),
            objects=int(d["objects"] or 0),
            predicted_s=float(d["predicted_s"]),
            low_s=float(d["low_s"]),
            high_s=float(d["high_s"]),
            projection=json.loads(d["projection"]) if d["projection"] else None,
        )
        match = next(
            (e for e in exits if e["src"] == row.src and e["dst"] == row.dst and e["id"] > after),
            None,
        )
        if match is not None:
            _pair(row, match, bool(result.get("encrypted")))
        out.append(row)
    return out


def _pair(row: HistoryRow, run: dict[str, Any], drill_encrypted: bool) -> None:
    s = run["summary"]
    row.exit_run = run["id"]
    row.exit_started = run["started"]
    row.actual_s = float(s.get("duration_s") or 0.0)
    row.actual_objects = int(s.get("source_objects") or 0)
    notes = []
    copied, total = int(s.get("copied_objects") or 0), row.actual_objects
    if copied < total:
        notes.append(
            f"a resumed exit: {total - copied:,} of {total:,} objects were copied before it"
        )
    if bool(s.get("encrypted")) != drill_encrypted:
        notes.append("encryption differs between the drill and the exit")
    row.comparable = not notes and row.actual_s > 0
    if row.objects and abs(total - row.objects) > 0.05 * row.objects:
        notes.append(f"the source changed: {row.objects:,} objects at the drill, {total:,} at exit")
    row.note = "; ".join(notes) or None
    if row.comparable and row.actual_s:
        row.error_pct = (row.predicted_s - row.actual_s) / row.actual_s * 100


def _last_run_id(path: Path) -> int:
    """The highest run id in the transfer journal at ``path`` (0 if there is none)."""
    if not path.is_file():
        return 0
    db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        (n,) = db.execute("SELECT coalesce(max(id), 0) FROM runs").fetchone()
        return int(n)
    except sqlite3.DatabaseError:
        return 0
    finally:
        db.close()


def _exit_runs(path: Path) -> list[dict[str, Any]]:
    """Complete ``exit`` runs of the transfer journal, oldest first (read-only)."""
    if not path.is_file():
        return []
    db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT id, src, dst, started, summary FROM runs "
            "WHERE kind = 'exit' AND status = 'complete' ORDER BY id"
        ).fetchall()
    except sqlite3.DatabaseError:
        return []
    finally:
        db.close()
    out = []
    for run_id, src, dst, started, summary in rows:
        try:
            s = json.loads(summary or "{}")
        except ValueError:
            continue
        if not s.get("dry_run"):
            out.append({"id": run_id, "src": src, "dst": dst, "started": started, "summary": s})
    return out


# --- rendering ----------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """``42.3 s``, ``12 min 5 s``, ``3 h 20 min``, ``2 d 4 h``."""
    s = max(0.0, seconds)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    if s < 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def _human_rate_bits(bps: float) -> str:
    for unit, f in (("Tbit/s", 1e12), ("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= f:
            return f"{bps / f:.3g} {unit}"
    return f"{bps:.0f} bit/s"


def render_drill(result: DrillResult, console: Console) -> None:
    """Print a drill for people: per class, the prediction with its interval, the assumptions,
    and any projection, marked as such."""
    p = console.print
    p(
        f"[bold]drill {escape(result.src)} → {escape(result.dst)}[/bold] ({result.id}): "
        f"{result.objects:,} objects, {_human_bytes(result.bytes)} in the source (scan "
        f"#{result.scan_id}); sampled {result.sampled_objects:,} objects, "
        f"{_human_bytes(result.sampled_bytes)}; concurrency {result.concurrency}",
        highlight=False,
    )
    table = Table(title="Measured per size class (the real copy path, to a scratch prefix)")
    for col in (
        "size class",
        "objects",
        "bytes",
        "sampled",
        "wall s",
        "per object ms",
        "throughput",
        "predicted",
    ):
        table.add_column(col, justify="left" if col == "size class" else "right")
    for c in result.classes:
        table.add_row(
            c.label,
            f"{c.objects:,}",
            _human_bytes(c.bytes),
            f"{c.sampled_objects:,}",
            f"{c.wall_s:.2f}" + ("" if c.steady else "*"),
            f"{c.per_object_s * 1000:.2f}",
            f"{_human_bytes(c.throughput_bps)}/s" if c.throughput_bps else "-",
            f"{human_duration(c.predicted_s)}",
        )
    p(table)
    if any(not c.steady for c in result.classes):
        p("  * the sample never filled the pool: the whole run was used (conservative)")
    o = result.overhead
    p(
        f"  listing {o.list_s_per_object * 1e6:.0f} µs/object (probe of {o.listed_in_probe:,}), "
        f"bookkeeping {o.bookkeeping_s_per_object * 1e6:.0f} µs/object + {o.fixed_s:.2f} s: "
        f"{human_duration(o.predicted_s)}",
        highlight=False,
    )
    p(
        f"[bold]predicted exit time: {human_duration(result.predicted_s)}[/bold] "
        f"(95 % interval {human_duration(result.low_s)} - {human_duration(result.high_s)}; "
        f"{result.predicted_hours:.3g} h)",
        highlight=False,
    )
    p(f"  interval: {escape(result.interval_method)}", highlight=False)
    p("  assumptions:")
    for a in result.assumptions:
        p(f"    - {escape(a)}", highlight=False)
    if result.projection is not None:
        pr = result.projection
        what = [f"{pr.workers} worker(s)"]
        if pr.link_bps is not None:
            what.append(f"a {_human_rate_bits(pr.link_bps)} link")
        p(
            f"[bold yellow]PROJECTION (not measured)[/bold yellow] with {', '.join(what)}: "
            f"{human_duration(pr.predicted_s)} ({human_duration(pr.low_s)} - "
            f"{human_duration(pr.high_s)})",
            highlight=False,
        )
        p(f"  how: {escape(pr.method)}", highlight=False)
    if result.scratch_removed:
        p(f"  scratch copy {escape(result.scratch)} removed (listed again: empty)", highlight=False)
    for problem in result.problems:
        p(f"  [red]problem:[/red] {escape(problem)}", highlight=False)
    p(f"  the drill took {human_duration(result.drill_s)}", highlight=False)


def render_history(rows: Iterable[HistoryRow], console: Console) -> None:
    """Print drills with the exits that followed them: predicted vs actual."""
    table = Table(title="Drills: predicted vs actual exit time")
    for col in ("drill", "src → dst", "sample", "predicted (95 %)", "actual exit", "error"):
        table.add_column(col)
    n = 0
    for r in rows:
        n += 1
        actual = "no exit since"
        if r.actual_s is not None:
            actual = f"{human_duration(r.actual_s)} (run #{r.exit_run}, {r.exit_started})"
        error = f"{r.error_pct:+.1f} %" if r.error_pct is not None else "-"
        if r.note:
            error += f" ({r.note})"
        table.add_row(
            f"{r.drill_id}",
            f"{r.src} → {r.dst}",
            f"{r.sample_objects:,} of {r.objects:,}",
            f"{human_duration(r.predicted_s)} ({human_duration(r.low_s)} - "
            f"{human_duration(r.high_s)})",
            actual,
            error,
        )
    if n == 0:
        console.print("no drill recorded yet: run `daulat drill SRC DST`")
        return
    console.print(table)


# --- small helpers ------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _parse_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return datetime.fromtimestamp(0, UTC)
