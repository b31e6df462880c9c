"""Optional listing abilities a store (or a wrapper of one) may offer, for sharded listings.

A store lists itself with :meth:`~daulat.stores.base.Store.list`. Listing a large store in
parallel shards (:mod:`daulat.census.sharded`) needs one of two further abilities, each an
optional protocol checked at run time (``isinstance``), never a subclass:

:class:`RangeListing`
    ``list_range(prefix, start_after=, end_before=)`` lists a key range in ascending order.
    Offered only where the provider *documents* that it lists in UTF-8 binary key order and
    can start a listing after any string (S3's ``start-after``, GCS's ``startOffset``).
    ``ordered`` says whether this particular store keeps that promise: an S3-compatible
    server of unknown make may not (SeaweedFS lists in directory-tree order, and its
    ``start-after`` skips a whole "directory" named by the start key).
:class:`LevelListing`
    ``list_level(prefix)`` lists one level of the key hierarchy: the objects directly under
    ``prefix`` (no ``/`` after it) and the common prefixes (``prefix + name + "/"``) below it,
    as S3's and Azure's delimiter listings do. Every key under ``prefix`` is either one of
    those objects or under exactly one of those prefixes, whatever order the server lists
    in, which is what makes a sharded listing by prefixes exact on any server.

A wrapper that changes keys (encryption of names, a key prefix of its own) must not forward
either ability unchanged; a wrapper that only adds retries or limits may.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol, runtime_checkable

from daulat.stores.base import ObjectInfo

__all__ = ["Batch", "Level", "LevelListing", "RangeListing", "ordered_ranges"]

# One page of a level listing: the objects directly under the prefix, and the prefixes
# (each ending in "/") of the keys further down.
Level = tuple[list[ObjectInfo], list[str]]
# One page of a listing (an alias usable where a class's own ``list`` method shadows ``list``).
Batch = list[ObjectInfo]


@runtime_checkable
class RangeListing(Protocol):
    """A store that lists key ranges in ascending UTF-8 binary order."""

    @property
    def ordered(self) -> bool:
        """True when the provider documents UTF-8 binary key order for its listings (and so
        ``list_range`` is exact); False for servers that make no such promise."""
        ...

    def list_range(
        self, prefix: str = "", *, start_after: str | None = None, end_before: str | None = None
    ) -> AsyncGenerator[Batch, None]:
        """Yield batches of the objects whose key starts with ``prefix`` and lies strictly
        between ``start_after`` and ``end_before`` (None: unbounded), in ascending order of
        their keys' code points (which is UTF-8 byte order). ``end_before`` is a hint: a
        store may yield keys past it, and the caller drops them."""
        ...


@runtime_checkable
class LevelListing(Protocol):
    """A store that lists one level of its key hierarchy (a delimiter listing)."""

    def list_level(self, prefix: str = "") -> AsyncGenerator[Level, None]:
        """Yield pages of (objects whose key starts with ``prefix`` and has no ``/`` after
        it, prefixes ``prefix + name + "/"`` of the deeper keys). ``prefix`` is empty or
        ends in ``/``. Each common prefix is yielded once; memory per page is bounded by the
        provider's page size unless the store's documentation says otherwise."""
        ...


def ordered_ranges(store: object) -> RangeListing | None:
    """``store`` as a :class:`RangeListing` whose listings are in binary key order, or None."""
    if isinstance(store, RangeListing) and store.ordered:
        return store
    return None
