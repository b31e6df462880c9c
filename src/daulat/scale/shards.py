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


def shards(items: Iterable[Item], bounds: Bounds) -> Iterator[list[Item]]:
    """Consecutive items in shards within ``bounds``; an item larger than ``bounds.bytes`` is
    a shard of its own. Streams: holds one shard at a time."""
    shard: list[Item] = []
    size = 0
    for item in items:
        if shard and (len(shard) >= bounds.objects or size + item.size > bounds.bytes):
            yield shard
            shard, size = [], 0
        shard.append(item)
        size += item.size
    if shard:
        yield shard
