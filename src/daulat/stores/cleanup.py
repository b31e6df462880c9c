"""Removing a store's own leftovers: an optional ability, found under any wrappers.

A store that stages uploads under temporary names of its own (the filesystem's
``.daulat-tmp/``) offers ``cleanup_temp``; wrappers (retries, fault injection, fallbacks) keep
the store they wrap in ``inner``, so the ability is looked up through them rather than forwarded
by each.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from daulat.stores.base import Store
from daulat.stores.forwarding import layers


@runtime_checkable
class CleansTemp(Protocol):
    async def cleanup_temp(
        self, *, older_than: float | None = None, dry_run: bool = False
    ) -> tuple[int, int]:
        """Remove this store's own temp files that no live writer holds; (files, bytes)
        (``dry_run``: count them, remove nothing)."""
        ...


def temp_cleaner(store: Store) -> CleansTemp | None:
    """The store itself, or the one it wraps, that can clean up its temp files; None if none."""
    for current in layers(store, CleansTemp):
        if isinstance(current, CleansTemp):
            return current
    return None


async def cleanup_temp(
    store: Store, *, older_than: float | None = None, dry_run: bool = False
) -> tuple[int, int]:
    """Remove ``store``'s abandoned temp files, if it keeps any; (files, bytes) removed
    (``dry_run``: that would be removed)."""
    cleaner = temp_cleaner(store)
    if cleaner is None:
        return 0, 0
    return await cleaner.cleanup_temp(older_than=older_than, dry_run=dry_run)
