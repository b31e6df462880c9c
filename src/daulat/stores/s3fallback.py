"""The S3 Store: obstore for ordinary keys, :class:`~daulat.stores.s3raw.S3Raw` for the rest
and for every listing (see :mod:`daulat.stores.s3raw` for why).
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Mapping,
)
from typing import TYPE_CHECKING

from daulat.stores.base import (
    Capabilities,
    ObjectInfo,
    ObjectReader,
    OnUpload,
    PutResult,
    Store,
    portable_key_problem,
)
from daulat.stores.hashing import StreamHasher
from daulat.stores.keys import check_prefix
from daulat.stores.objectstore import METADATA_PREFIX, S3_MAX_METADATA
from daulat.stores.ranges import Batch, Level
from daulat.stores.resumable import OnSession, ResumeStats, Session

if TYPE_CHECKING:
    from daulat.stores.objectstore import ObstoreStore
    from daulat.stores.s3base import MultipartUpload
    from daulat.stores.s3raw import S3Raw


class FallbackS3Store:
    """The S3 Store: obstore for ordinary keys, :class:`S3Raw` for the rest and for listing.

    Routing: a key that :func:`~daulat.stores.base.portable_key_problem` rejects (obstore
    refuses or silently rewrites it) or that holds a backslash (some servers turn it into
    ``/``, so its write is checked) goes to :class:`S3Raw`; so does every streamed put (its
    multipart upload id is known, and its parts time out on no progress rather than on
    total time). Every other request goes to obstore, which costs less CPU per request. Listing always goes through :class:`S3Raw`: obstore fails on
    some keys and silently renames others (``/x`` → ``x``, ``dir/`` → ``dir``), and a
    rename cannot be detected from its output. Both paths write user metadata under the same
    names (``x-amz-meta-daulat_NAME``), so either reads what the other wrote.

    Non-portable keys are *accepted* where the server keeps them (AWS does); where it would
    refuse or rewrite them the put raises :class:`InvalidKey` and writes nothing.
    """

    def __init__(self, fast: ObstoreStore, raw: S3Raw) -> None:
        self.fast = fast
        self.raw = raw

    @property
    def name(self) -> str:
        return self.fast.name

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(user_metadata=True, server_side_copy=True, max_metadata=S3_MAX_METADATA)

    @property
    def location(self) -> str:
        """Where the store's objects are: endpoint, bucket and key prefix (journal records
        of uploads are kept per location, not per configured name)."""
        raw = self.raw
        return f"{raw.endpoint}/{raw.bucket}/{raw.prefix}"

    def key_problem(self, key: str) -> str | None:
        """Why S3 could never hold ``key`` (:class:`~daulat.stores.keys.KeyRules`): empty,
        not UTF-8, over 1,024 bytes with the store's prefix, or of a kind a probe found the
        server rewrites. Non-portable keys S3 keeps are not refused."""
        return self.raw.read_key_problem(key)

    @staticmethod
    def needs_raw(key: str) -> bool:
        """Whether ``key`` takes the slow path (obstore cannot address it faithfully)."""
        return portable_key_problem(key) is not None or "\\" in key

    async def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        check_prefix(self.raw.read_key_problem, prefix, store=self.name)
        # Closed with this generator: a caller that stops early (a probe reads one page) must
        # not leave the inner listing fetching its next page against a store about to close.
        async with contextlib.aclosing(self.raw.list_all(prefix)) as pages:
            async for batch in pages:
                yield batch

    @property
    def ordered(self) -> bool:
        """Whether :meth:`list_range` is exact here (see :mod:`daulat.stores.ranges`)."""
        return self.raw.ordered_listing

    async def list_range(
        self, prefix: str = "", *, start_after: str | None = None, end_before: str | None = None
    ) -> AsyncGenerator[Batch, None]:
        check_prefix(self.raw.read_key_problem, prefix, store=self.name)
        async with contextlib.aclosing(
            self.raw.list_all(prefix, start_after=start_after, end_before=end_before)
        ) as pages:
            async for batch in pages:
                yield batch

    async def list_after(
        self, prefix: str, after: str, *, first_page: int | None = None
    ) -> AsyncGenerator[builtins.list[ObjectInfo], None]:
        """See :meth:`S3Raw.list_after` (the gateway's ListObjects pages)."""
        async with contextlib.aclosing(
            self.raw.list_after(prefix, after, first_page=first_page)
        ) as pages:
            async for batch in pages:
                yield batch

    async def list_level(self, prefix: str = "") -> AsyncGenerator[Level, None]:
        async with contextlib.aclosing(self.raw.list_level(prefix)) as pages:
            async for page in pages:
                yield page

    async def head(self, key: str) -> ObjectInfo:
        if self.needs_raw(key):
            return await self.raw.head(key)
        return await self.fast.head(key)

    async def get(self, key: str, *, start: int = 0, end: int | None = None) -> ObjectReader:
        if not self.needs_raw(key):
            return await self.fast.get(key, start=start, end=end)
        reader = await self.raw.get(key, start=start, end=end)
        reader.metadata = _strip_prefix(reader.metadata)
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
        """Bytes of a portable key go to obstore (one PUT); streams and other keys to
        :class:`S3Raw`, whose multipart uploads report their upload id to ``on_upload``."""
        if not self.needs_raw(key) and isinstance(data, (bytes, bytearray, memoryview)):
            return await self.fast.put(
                key, data, sha256=sha256, metadata=metadata, prehashed=prehashed
            )
        named = {METADATA_PREFIX + k: v for k, v in (metadata or {}).items()}
        return await self.raw.put(
            key, data, sha256=sha256, metadata=named, prehashed=prehashed, on_upload=on_upload
        )

    async def delete(self, key: str) -> None:
        if self.needs_raw(key):
            await self.raw.delete(key)
        else:
            await self.fast.delete(key)

    # -------------------------------------------------------------- resumable uploads

    @property
    def part_size(self) -> int:
        return self.raw.part_size

    async def put_resumable(
        self,
        key: str,
        data: AsyncIterable[bytes],
        *,
        metadata: Mapping[str, str] | None,
        session: Session | None,
        on_session: OnSession,
        stats: ResumeStats,
    ) -> PutResult:
        """See :meth:`S3Raw.put_resumable` (metadata named as :meth:`put` names it)."""
        named = {METADATA_PREFIX + k: v for k, v in (metadata or {}).items()}
        return await self.raw.put_resumable(
            key, data, metadata=named, session=session, on_session=on_session, stats=stats
        )

    async def abort_session(self, key: str, session: Session) -> None:
        await self.raw.abort_session(key, session)

    async def close(self) -> None:
        await self.fast.close()
        await self.raw.close()

    # -------------------------------------------------------------- beyond the protocol
    # (the abilities of daulat.stores.abilities: UploadCleanup, ServerSideCopy)

    def list_multipart_uploads(
        self, prefix: str = ""
    ) -> AsyncIterator[builtins.list[MultipartUpload]]:
        """See :meth:`S3Raw.list_multipart_uploads` (``list`` here is this class's method)."""
        return self.raw.list_multipart_uploads(prefix)

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        """See :meth:`S3Raw.abort_multipart_upload`."""
        await self.raw.abort_multipart_upload(key, upload_id)

    def can_copy_from(self, source: Store) -> bool:
        """Whether :meth:`copy_from` works from ``source`` (same endpoint and credentials)."""
        return isinstance(source, FallbackS3Store) and self.raw.same_account(source.raw)

    async def copy_from(
        self,
        source: FallbackS3Store,
        src_key: str,
        dst_key: str,
        *,
        size: int | None = None,
        if_match: str | None = None,
        on_upload: OnUpload | None = None,
    ) -> PutResult:
        """Server-side copy from ``source`` (see :meth:`S3Raw.copy_object`; ``on_upload`` as
        for :meth:`put`, for copies above 5 GiB, which go part by part).

        The bytes never pass through this machine, but the result still carries the
        content's SHA-256 as every put does: the server's own when it reports one, else
        computed by reading the copy back (what arrived is what is hashed).
        """
        result = await self.raw.copy_object(
            src_key, dst_key, source=source.raw, size=size, if_match=if_match, on_upload=on_upload
        )
        if result.sha256 is not None:
            return PutResult(dst_key, result.size, result.sha256, result.etag)
        hasher = StreamHasher()
        async for chunk in await self.get(dst_key):
            await hasher.update(chunk)
        return PutResult(dst_key, hasher.size, hasher.hexdigest(), result.etag)


def unwrap_fallback(store: Store) -> FallbackS3Store | None:
    """The :class:`FallbackS3Store` under retry/fault wrappers (their ``inner``), if any."""
    seen = 0
    current: object = store
    while seen < 16:
        if isinstance(current, FallbackS3Store):
            return current
        current = getattr(current, "inner", None)
        if current is None or not isinstance(current, Store):
            return None
        seen += 1
    return None


def _strip_prefix(metadata: Mapping[str, str]) -> dict[str, str]:
    return {
        k[len(METADATA_PREFIX) :]: v for k, v in metadata.items() if k.startswith(METADATA_PREFIX)
    }
