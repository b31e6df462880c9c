"""Optional abilities a store may have beyond the :class:`~daulat.stores.base.Store` protocol.

Every store lists, reads, writes and deletes. Some can do more, and the engine uses that when
it is there. Each ability is a small :class:`typing.Protocol` checked at run time
(``isinstance``), never a base class or an import of a concrete store, so that the engine
does not know which kinds of store exist:

:class:`ServerSideCopy`
    ``can_copy_from(source)`` / ``copy_from(source, src_key, dst_key)``: the provider copies
    between two places it serves with the same credentials, and no byte passes through this
    machine (S3: ``CopyObject``, ``UploadPartCopy`` above 5 GiB).
:class:`UploadCleanup`
    ``list_multipart_uploads(prefix)`` / ``abort_multipart_upload(key, upload_id)`` at a
    ``location``: the unfinished multipart uploads a killed run leaves behind (stored, billed,
    invisible) can be found and aborted (:mod:`daulat.transfer.uploads` aborts only
    daulat's own).
:class:`~daulat.stores.resumable.ResumableStore`
    ``put_resumable`` / ``abort_session``: a large upload can be continued by a later process
    (S3 multipart uploads, Azure uncommitted blocks, GCS resumable sessions); found with
    :func:`~daulat.stores.resumable.unwrap_resumable`.
:class:`~daulat.stores.ranges.RangeListing`, :class:`~daulat.stores.ranges.LevelListing`
    key-range and one-level (delimiter) listings, for sharded listings
    (:mod:`daulat.census.sharded`).
:class:`~daulat.stores.cleanup.CleansTemp`
    ``cleanup_temp()``: the store removes its own abandoned temporary files (the filesystem's
    ``.daulat-tmp/``); found with :func:`~daulat.stores.cleanup.temp_cleaner`.

The last three are defined beside the code that uses them and re-exported here, so that this
module is the one list of what a store may offer.

Wrappers (retries, limits, test faults, encryption) subclass
:class:`~daulat.stores.forwarding.ForwardingStore` and hold the store they wrap as ``inner``;
the finders here look through them, as :func:`~daulat.stores.resumable.unwrap_resumable` and
:func:`~daulat.stores.cleanup.temp_cleaner` do. A wrapper that changes keys or bytes (the
encrypting :class:`~daulat.stores.crypt.CryptStore`, a key prefix of its own) must not let an
ability through unchanged: a server-side copy or an upload listing would bypass it. It either
offers the ability itself, translated, or names it in ``hides``, where the finders stop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

from daulat.stores.base import OnUpload, PutResult, Store
from daulat.stores.cleanup import CleansTemp, temp_cleaner
from daulat.stores.forwarding import layers
from daulat.stores.ranges import LevelListing, RangeListing, ordered_ranges
from daulat.stores.resumable import ResumableStore, unwrap_resumable

if TYPE_CHECKING:
    from daulat.stores.s3raw import FallbackS3Store, MultipartUpload

__all__ = [
    "EVERY_ABILITY",
    "CleansTemp",
    "LevelListing",
    "RangeListing",
    "ResumableStore",
    "ServerSideCopy",
    "UploadCleanup",
    "ordered_ranges",
    "server_side_copy",
    "temp_cleaner",
    "unwrap_resumable",
    "upload_cleanup",
]


@runtime_checkable
class ServerSideCopy(Store, Protocol):
    """A store the provider can copy into from another of its stores, bytes staying there."""

    def can_copy_from(self, source: Store) -> bool:
        """Whether :meth:`copy_from` works from ``source`` (same endpoint and credentials)."""
        ...

    async def copy_from(
        self,
        source: Self,
        src_key: str,
        dst_key: str,
        *,
        size: int | None = None,
        if_match: str | None = None,
        on_upload: OnUpload | None = None,
    ) -> PutResult:
        """Copy ``source``'s ``src_key`` to ``dst_key`` here; the result carries the content's
        SHA-256 as every put does. ``on_upload`` as for :meth:`Store.put`."""
        ...


@runtime_checkable
class UploadCleanup(Protocol):
    """A store whose unfinished multipart uploads can be listed and aborted."""

    @property
    def location(self) -> str:
        """Where the store's objects are (endpoint, bucket, prefix): records of uploads are
        kept per location, not per configured name."""
        ...

    @property
    def part_size(self) -> int:
        """Bytes per part of the multipart uploads the store begins."""
        ...

    def list_multipart_uploads(self, prefix: str = "") -> AsyncIterator[list[MultipartUpload]]:
        """Yield batches of uploads begun under ``prefix`` and not yet finished."""
        ...

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        """Abort one upload (its parts are freed); succeeds when it is already gone."""
        ...


#: Every ability protocol above: what a wrapper hides when nothing may go around it (a view
#: that times or samples every call, say).
EVERY_ABILITY: tuple[type, ...] = (
    ServerSideCopy,
    UploadCleanup,
    ResumableStore,
    CleansTemp,
    RangeListing,
    LevelListing,
)


def _wrapped(store: Store, ability: type) -> Iterator[Store]:
    """``store`` and the stores it wraps (``inner``), outermost first, down to the first
    wrapper that hides ``ability`` (:func:`daulat.stores.forwarding.layers`)."""
    for current in layers(store, ability):
        if not isinstance(current, Store):
            return
        yield current


def server_side_copy(store: Store) -> ServerSideCopy | None:
    """The store under ``store``'s wrappers that can copy server-side, if any."""
    for s in _wrapped(store, ServerSideCopy):
        if isinstance(s, ServerSideCopy):
            return s
    return None


def upload_cleanup(store: Store) -> UploadCleanup | None:
    """The store under ``store``'s wrappers whose multipart uploads can be cleaned up, if any."""
    for s in _wrapped(store, UploadCleanup):
        if isinstance(s, UploadCleanup):
            return s
    return None


if TYPE_CHECKING:
    # Checked by mypy, never run: the S3 store has the abilities it claims, signatures included.
    def _s3_abilities(store: FallbackS3Store) -> tuple[ServerSideCopy, UploadCleanup]:
        return store, store
