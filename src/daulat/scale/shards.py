"""Cutting a plan into shards for Ray workers (pure: no I/O)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

MiB = 1024 * 1024
# Shards per worker the plan is cut into at least: enough that a slow shard does not leave
# the other workers idle at the end, few enough that each shard's start-up (about 50 ms:
# config, stores, proof key) stays small against its work.
SHARDS_PER_WORKER = 4
MIN_OBJECTS, MAX_OBJECTS = 16, 5000
MIN_BYTES, MAX_BYTES = 64 * MiB, 8 * 1024 * MiB


class _Sized(Protocol):
    @property
    def size(self) -> int: ...


Item = TypeVar("Item", bound=_Sized)  # a WorkItem to copy, or a ToCheck to verify


@dataclass(frozen=True)
class Bounds:
    """At most ``objects`` objects and ``bytes`` bytes per shard (one larger object alone)."""

    objects: int
    bytes: int


def bounds_for(planned_objects: int, planned_bytes: int, workers: int) -> Bounds:
    """Bounds that cut the plan into about ``SHARDS_PER_WORKER`` shards per worker."""
    workers = max(1, workers)
    parts = workers * SHARDS_PER_WORKER
    # The floors keep shards worth their start-up, but never below one shard per worker.
    least_objects = min(MIN_OBJECTS, math.ceil(planned_objects / workers))
    least_bytes = min(MIN_BYTES, math.ceil(planned_bytes / workers))
    objects = min(MAX_OBJECTS, max(least_objects, math.ceil(planned_objects / parts), 1))
    size = min(MAX_BYTES, max(least_bytes, math.ceil(planned_bytes / parts), 1))
    return Bounds(objects, size)


@dataclass(frozen=True)
class Taper:
    """What the plan holds and how many workers share it: for :func:`shards` to cut the end
    of the plan finer."""

    objects: int
    bytes: int
    workers: int


def shards(
    items: Iterable[Item], bounds: Bounds, taper: Taper | None = None
) -> Iterator[list[Item]]:
    """Consecutive items in shards within ``bounds``; an item larger than ``bounds.bytes`` is
    a shard of its own. Streams: holds one shard at a time.

    With ``taper``, no shard holds more than what remains of the plan divided by the
    workers (guided self-scheduling), down to an eighth of ``bounds``: the last shards are
    small, so that a worker that started late or ran slow does not keep the others idle
    while it finishes a full-size last shard (bench/ray_timeline.py saw them idle 0.3-1.8 s
    of a 4-worker run's last 10 s with equal shards)."""
    limit = bounds
    left_objects = taper.objects if taper else 0
    left_bytes = taper.bytes if taper else 0
    shard: list[Item] = []
    size = 0
    for item in items:
        if shard and (len(shard) >= limit.objects or size + item.size > limit.bytes):
            yield shard
            left_objects -= len(shard)
            left_bytes -= size
            shard, size = [], 0
        if not shard and taper is not None:
            limit = _tapered(bounds, taper.workers, left_objects, left_bytes)
        shard.append(item)
        size += item.size
    if shard:
        yield shard


def _tapered(bounds: Bounds, workers: int, left_objects: int, left_bytes: int) -> Bounds:
    return Bounds(
        _share(bounds.objects, workers, left_objects), _share(bounds.bytes, workers, left_bytes)
    )


def _share(most: int, workers: int, left: int) -> int:
    """A shard's bound: what is left over the workers, at least an eighth of ``most`` (and
    all that is left when less would remain: no crumb of a last shard), at most ``most``."""
    least = max(1, math.ceil(most / 8))
    share = max(least, math.ceil(left / max(1, workers)))
    if left - share < least:
        share = left
    return max(1, min(most, share))
