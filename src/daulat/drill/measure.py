"""Measuring: copy a sample with the real transfer engine, class by class, and time it."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from daulat.drill.result import DrillFailed
from daulat.drill.sample import SampledObject, Stratum
from daulat.drill.stores import SampledSource, TimedDestination, _Clock
from daulat.errors import Interrupted
from daulat.plurals import plural
from daulat.transfer.engine import transfer
from daulat.transfer.journal import Journal
from daulat.transfer.model import Endpoint, Kind, Options

# With the default sample, a class whose runs took less than this in all is measured again with
# more objects from its random order (a momentary stall must not decide the prediction).
MIN_CLASS_SECONDS = 3.0
EXTRA_PASSES = 3

LIST_PROBE_OBJECTS = 10_000


@dataclass
class _Part:
    """One engine run over (part of) a class's sample."""

    timings: list[tuple[int, float, float]]  # (size, start, end) of each copied object
    pre_s: float  # transfer start → first read
    post_s: float  # last write → transfer end (verification, manifest)
    problems: list[str]
    # Sampled objects the engine did not copy (failed, or refused: a key the scratch
    # destination cannot hold), as (source key, why): they are not in the measurement.
    skipped: list[tuple[str, str]] = field(default_factory=list)


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
                f"copying {s.initial:,} of {plural(s.objects, 'object')} ({s.size_class.label}) to "
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
    try:
        summary = await transfer(Kind.EXIT, source, target, journal, opts)
    except Interrupted as exc:
        # The engine's Interrupted carries the summary of this one copy into the scratch
        # prefix, an internal step: what reaches the drill's caller (and the audit log, whose
        # drill entry describes a DrillResult) is the drill's own interruption, which has no
        # result to report: nothing was measured to the end.
        raise Interrupted(exc.signum) from None
    t1 = time.monotonic()
    if summary.stopped:
        raise DrillFailed(f"the drill's copy stopped: {summary.stopped}")
    skipped = [(f"{src.prefix}{k}", why) for k, why in summary.failed + summary.refused]
    problems = [f"{k}: {why}" for k, why in skipped]
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
        return _Part([], 0.0, 0.0, problems, skipped)
    first = min(t[1] for t in timings)
    last = max(t[2] for t in timings)
    return _Part(timings, first - t0, t1 - last, problems, skipped)


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
