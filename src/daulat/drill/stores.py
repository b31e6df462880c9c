"""The source and destination as the drill's engine sees them: sampled, timed, read-only."""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from daulat.drill.sample import SampledObject
from daulat.drill.units import _parse_time
from daulat.errors import Unsupported
from daulat.stores.abilities import EVERY_ABILITY
from daulat.stores.base import ObjectInfo, ObjectReader, OnUpload, PutResult, Store
from daulat.stores.forwarding import ForwardingStore


class SampledSource(ForwardingStore):
    """The source as the drill's engine sees it: only the sampled keys are listed; reads go to
    the real store and note when each object's read began; every write is refused, so a drill
    can never change the source."""

    # A server-side copy would read around the timing of reads.
    hides: ClassVar[tuple[type, ...]] = EVERY_ABILITY

    def __init__(
        self, inner: Store, objects: Sequence[SampledObject], prefix: str, clock: _Clock
    ) -> None:
        super().__init__(inner)
        self._objects = objects
        self._prefix = prefix
        self._clock = clock

    async def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        batch = [
            ObjectInfo(o.key, o.size, _parse_time(o.modified), o.etag)
            for o in self._objects
            if o.key.startswith(prefix)
        ]
        for i in range(0, len(batch), 1000):
            yield batch[i : i + 1000]

    async def get(self, key: str, *, start: int = 0, end: int | None = None) -> ObjectReader:
        rel = key[len(self._prefix) :]
        self._clock.starts.setdefault(rel, time.monotonic())
        reader = await self.inner.get(key, start=start, end=end)
        self._clock.sizes[rel] = reader.info.size
        return reader

    async def put(
        self,
        key: str,
        data: bytes | AsyncIterable[bytes],
        *,
        sha256: str | None = None,
        metadata: Mapping[str, str] | None = None,
        prehashed: bool = False,
        on_upload: OnUpload | None = None,
    ) -> PutResult:
        raise Unsupported("a drill never writes to the source", store=self.name, key=key)

    async def delete(self, key: str) -> None:
        raise Unsupported("a drill never deletes at the source", store=self.name, key=key)

    async def close(self) -> None:
        """The real store is closed by the drill, once."""


class TimedDestination(ForwardingStore):
    """The destination, noting when each object's write was confirmed. ``names`` maps stored
    names back to source keys when names are protected."""

    # A resumable or server-side upload would write around the timing of writes.
    hides: ClassVar[tuple[type, ...]] = EVERY_ABILITY

    def __init__(
        self, inner: Store, prefix: str, clock: _Clock, names: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(inner)
        self._prefix = prefix
        self._clock = clock
        self._names = names or {}

    async def put(
        self,
        key: str,
        data: bytes | AsyncIterable[bytes],
        *,
        sha256: str | None = None,
        metadata: Mapping[str, str] | None = None,
        prehashed: bool = False,
        on_upload: OnUpload | None = None,
    ) -> PutResult:
        result = await self.inner.put(
            key, data, sha256=sha256, metadata=metadata, prehashed=prehashed, on_upload=on_upload
        )
        rel = key[len(self._prefix) :]
        rel = self._names.get(rel, rel)
        if rel in self._clock.starts:
            self._clock.ends[rel] = time.monotonic()
        return result

    async def close(self) -> None:
        """The real store is closed by the drill, once."""


@dataclass
class _Clock:
    starts: dict[str, float] = field(default_factory=dict)
    ends: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
