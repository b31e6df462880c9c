"""Listings of :class:`~daulat.stores.s3raw.S3Raw`: every object under a prefix (pages
fetched ahead), one level (``Delimiter=/``), pages after a key, and the unfinished multipart
uploads. Keys come back exactly (``encoding-type=url``), whatever they contain.
"""

from __future__ import annotations

import asyncio
import functools
import urllib.parse
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Mapping,
)
from typing import Any

from daulat.errors import (
    StoreError,
)
from daulat.stores.base import (
    ObjectInfo,
)
from daulat.stores.listguard import ListingGuard
from daulat.stores.ranges import Level
from daulat.stores.s3base import MultipartUpload, S3Base, _etag, _utc


class S3Listing(S3Base):
    """The listing requests of :class:`~daulat.stores.s3raw.S3Raw`."""

    async def list_all(
        self, prefix: str = "", *, start_after: str | None = None, end_before: str | None = None
    ) -> AsyncGenerator[list[ObjectInfo], None]:
        """Yield batches of every object whose key starts with ``prefix`` (a plain string).

        ListObjectsV2 with ``encoding-type=url``: keys come back exactly, whatever they
        contain. The next page is requested while the caller works on this one.
        ``start_after``/``end_before`` (keys relative to the store) bound a range: the first
        request starts after ``start_after``, and no page is requested past ``end_before``
        (meaningful only where the server lists in binary key order, see ``ordered_listing``).
        """
        full_prefix = self._list_prefix(prefix)
        first = ("StartAfter", self._list_prefix(start_after)) if start_after else None
        guard = ListingGuard(self.name, ordered=self.ordered_listing)
        ahead = asyncio.ensure_future(self._list_page(full_prefix, first))
        try:
            while True:
                batch, token = await ahead
                guard.page([o.key for o in batch])
                if end_before is not None and batch and batch[-1].key >= end_before:
                    token = None
                    batch = [o for o in batch if o.key < end_before]
                if token is not None:
                    guard.follow(token)
                    ahead = asyncio.ensure_future(self._list_page(full_prefix, token))
                if batch:
                    yield batch
                if token is None:
                    return
        finally:
            if not ahead.done():
                ahead.cancel()
            elif not ahead.cancelled():
                ahead.exception()  # the caller stopped reading: a failed prefetch is moot

    async def list_level(self, prefix: str = "") -> AsyncGenerator[Level, None]:
        """Pages of one level under ``prefix`` (empty or ending in ``/``): the objects with no
        ``/`` after it and the common prefixes below it (a ``Delimiter=/`` listing), keys
        relative to the store. Order-independent: see :mod:`daulat.stores.ranges`."""
        full_prefix = self._list_prefix(prefix)
        token: str | None = None
        guard = ListingGuard(self.name, ordered=False)
        while True:
            params: dict[str, Any] = {
                "MaxKeys": self.list_page,
                "Prefix": full_prefix,
                "Delimiter": "/",
            }
            if token is not None:
                params["ContinuationToken"] = token
            reply = await self._call("list", None, "list_objects_v2", **params)
            objects: list[ObjectInfo] = []
            for item in reply.get("Contents") or ():
                key = self._relative(item["Key"])
                if key is None or not item["Key"].startswith(full_prefix):
                    continue
                objects.append(
                    ObjectInfo(
                        key=key,
                        size=int(item.get("Size") or 0),
                        modified=_utc(item.get("LastModified")),
                        etag=_etag(item.get("ETag")),
                        etag_scheme="s3",
                    )
                )
            prefixes: list[str] = []
            for entry in reply.get("CommonPrefixes") or ():
                full = entry.get("Prefix") or ""
                rel = self._relative(full)
                # A server that answers prefixes not below the one asked for, or not one
                # level down, would make the walk revisit or skip keys: refuse it.
                if rel is None or not full.startswith(full_prefix) or not full.endswith("/"):
                    raise StoreError(
                        f"store {self.name!r}: the server answered a common prefix "
                        f"{full!r} outside {full_prefix!r}",
                        store=self.name,
                    )
                prefixes.append(rel)
            if objects or prefixes:
                yield objects, prefixes
            token = reply.get("NextContinuationToken") if reply.get("IsTruncated") else None
            if not token:
                return
            guard.follow(token)

    async def list_after(
        self, prefix: str, after: str, *, first_page: int | None = None
    ) -> AsyncGenerator[list[ObjectInfo], None]:
        """Batches of the objects whose key starts with ``prefix`` and sorts after ``after``
        (S3's ``start-after``: the listing starts there), in key order, one page at a time
        (no prefetch: a caller after one page stops early). ``first_page``: how many keys the
        first request asks for (a small page costs a small request)."""
        full_prefix = self._list_prefix(prefix)
        token = ("StartAfter", self._list_prefix(after)) if after else None
        size = first_page
        while True:
            batch, token = await self._list_page(full_prefix, token, max_keys=size)
            size = None
            if batch:
                yield batch
            if token is None:
                return

    async def _list_page(
        self,
        full_prefix: str,
        token: tuple[str, str] | None,
        *,
        max_keys: int | None = None,
        bucket_keys: bool = False,
    ) -> tuple[list[ObjectInfo], tuple[str, str] | None]:
        """One page; keys relative to the store, or as bucket keys with ``bucket_keys``.

        botocore asks for ``encoding-type=url`` itself and decodes what comes back."""
        params: dict[str, Any] = {"MaxKeys": max_keys or self.list_page, "Prefix": full_prefix}
        if token is not None:
            params[token[0]] = token[1]
        reply = await self._call("list", None, "list_objects_v2", **params)
        batch: list[ObjectInfo] = []
        last = None
        for item in reply.get("Contents") or ():
            full = item["Key"]
            last = full
            key = full if bucket_keys else self._relative(full)
            if key is None or not full.startswith(full_prefix):
                continue
            batch.append(
                ObjectInfo(
                    key=key,
                    size=int(item.get("Size") or 0),
                    modified=_utc(item.get("LastModified")),
                    etag=_etag(item.get("ETag")),
                    etag_scheme="s3",
                )
            )
        nxt: tuple[str, str] | None = None
        if reply.get("IsTruncated"):
            if reply.get("NextContinuationToken"):
                nxt = ("ContinuationToken", reply["NextContinuationToken"])
            elif last is not None:
                nxt = ("StartAfter", last)
        return batch, nxt

    async def list_multipart_uploads(
        self, prefix: str = ""
    ) -> AsyncIterator[list[MultipartUpload]]:
        """Yield batches of multipart uploads begun under ``prefix`` and not yet finished."""
        markers: dict[str, str] = {}
        while True:
            reply = await self._call(
                "list uploads",
                None,
                "list_multipart_uploads",
                Prefix=self._list_prefix(prefix),
                EncodingType="url",
                **markers,
            )
            decode = _decoder(reply)
            batch = []
            for item in reply.get("Uploads") or ():
                key = self._relative(decode(item.get("Key") or ""))
                if key is None or not key.startswith(prefix):
                    continue  # SeaweedFS lists every upload of the bucket, whatever the prefix
                initiated = item.get("Initiated")
                batch.append(
                    MultipartUpload(
                        key=key,
                        upload_id=str(item.get("UploadId") or ""),
                        initiated=_utc(initiated),
                    )
                )
            if batch:
                yield batch
            if not reply.get("IsTruncated"):
                return
            key_marker = decode(reply.get("NextKeyMarker") or "")
            if not key_marker:
                return
            markers = {
                "KeyMarker": key_marker,
                "UploadIdMarker": str(reply.get("NextUploadIdMarker") or ""),
            }


def _decoder(reply: Mapping[str, Any]) -> Callable[[str], str]:
    """How to read keys from this answer: URL-decoded (``+`` is a space) if the server says
    it encoded them, else as they are."""
    if str(reply.get("EncodingType") or "").lower() == "url":
        return functools.partial(urllib.parse.unquote_plus, encoding="utf-8", errors="strict")
    return str
