"""An object is copied as it was listed, or not at all.

The source listing is the run's inventory: the plan, the remainder and the verification count
its sizes. A source that serves another size than it listed (the object changed since it was
listed, or a provider that misreports sizes) would make those numbers lie — "left 0 (-493 B)" —
and a hostile source could list a tiny object and stream without end into the destination. So
the engine reads at most the listed size: an object whose read says otherwise, or whose body
goes on past it, fails with a reason, nothing is written under its key, and the next run lists
it again.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from daulat.errors import StoreError


class NotAsListed(StoreError):
    """The source serves another size than it listed for this object (the object fails)."""


def check_served_size(listed: int, served: int, *, store: str, key: str) -> None:
    """Raise :class:`NotAsListed` when a read reports another size than the listing."""
    if served != listed:
        raise NotAsListed(
            f"{key!r} was listed with {listed:,} bytes but the source serves {served:,}: not "
            "copied (changed since it was listed, or a source that misreports sizes); the "
            "next run lists it again",
            store=store,
            key=key,
        )


async def capped(
    stream: AsyncIterable[bytes], limit: int, *, store: str, key: str
) -> AsyncIterator[bytes]:
    """Pass ``stream`` through; raise :class:`NotAsListed` before passing on any byte past
    ``limit``."""
    n = 0
    async for chunk in stream:
        n += len(chunk)
        if n > limit:
            raise NotAsListed(
                f"{key!r} streamed more than the {limit:,} bytes it was listed with: not "
                "copied, nothing past them was written",
                store=store,
                key=key,
            )
        yield chunk
