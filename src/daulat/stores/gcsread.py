"""Reading Google Cloud Storage: listings, heads and downloads (see :mod:`.gcs`).

``get`` reads the object's resource first, then downloads that generation only, on a thread of
its own; the bytes cross to the event loop through a bounded pipe (:mod:`.threadio`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from daulat.errors import NotFound, SourceChanged, StoreError, Transient
from daulat.stores.base import ObjectInfo
from daulat.stores.gcsclient import (
    READ_CHUNK,
    GcsBase,
    GcsHandle,
    gcs_name_problem,
    retrieve_quietly,
)
from daulat.stores.keys import check_prefix
from daulat.stores.listguard import ListingGuard
from daulat.stores.objectstore import METADATA_PREFIX
from daulat.stores.threadio import Abandoned, PipeWriter, ToLoop, TooLong, in_thread

#: Download chunks waiting for the reader.
READ_DEPTH = 4
LIST_PAGE = 1000
#: The listing fields daulat reads; Google sends only these.
_LIST_FIELDS = "items(name,size,updated,etag,crc32c,md5Hash,generation),nextPageToken"


class GcsReads(GcsBase):
    """``list``, ``head`` and ``get`` of :class:`~daulat.stores.gcs.GcsStore`."""

    async def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        check_prefix(lambda key: gcs_name_problem(self._full(key)), prefix, store=self.name)
        full = f"{self._prefix}/{prefix}" if self._prefix else prefix
        pages: list[Any] = []  # the client's page iterator, once the first request made it

        def next_page(h: GcsHandle) -> list[Any] | None:
            if not pages:
                listing = h.client.list_blobs(
                    h.bucket,
                    prefix=full or None,
                    page_size=LIST_PAGE,
                    fields=_LIST_FIELDS,
                    timeout=self._timeout,
                    retry=self._retry(),
                )
                pages.append(iter(listing.pages))
            page = next(pages[0], None)
            return None if page is None else list(page)

        # Ask for the next page while the caller works on this one: a listing is a chain of
        # round trips, and overlapping them with the caller's work hides their latency.
        ahead = asyncio.ensure_future(self._call(next_page, key=None, op="list"))
        # The client follows the page tokens: a listing stuck on one page shows as keys
        # listed again (daulat.stores.listguard).
        guard = ListingGuard(self.name, ordered=False)
        try:
            while True:
                page = await ahead
                if page is None:
                    return
                ahead = asyncio.ensure_future(self._call(next_page, key=None, op="list"))
                # Only names under the asked prefix (a listing is the provider's word).
                batch = [self._info(b) for b in page if str(b.name).startswith(full)]
                guard.page([o.key for o in batch])
                if batch:
                    yield batch
        finally:
            # The caller stopped early: the page asked for ahead is not wanted, nor its error.
            ahead.cancel()
            ahead.add_done_callback(retrieve_quietly)

    def _reload(self, h: GcsHandle, name: str) -> Any:
        from google.cloud.storage.blob import Blob

        blob = Blob(name, h.bucket)
        blob.reload(timeout=self._timeout, retry=self._retry())
        return blob

    async def head(self, key: str) -> ObjectInfo:
        name = self._check(key)
        blob = await self._call(lambda h: self._reload(h, name), key=key, op="head")
        return self._info(blob)

    async def get(self, key: str, *, start: int = 0, end: int | None = None) -> GcsReader:
        name = self._check(key)
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"invalid range [{start}, {end})")
        blob = await self._call(lambda h: self._reload(h, name), key=key, op="get")
        info = self._info(blob)
        metadata = {
            k[len(METADATA_PREFIX) :]: v
            for k, v in (blob.metadata or {}).items()
            if k.startswith(METADATA_PREFIX)
        }
        stop = info.size if end is None else min(end, info.size)
        if start >= stop:
            return GcsReader(info, metadata, None)
        generation = blob.generation
        whole = start == 0 and stop == info.size

        def download(h: GcsHandle, pipe: ToLoop) -> None:
            self._download(h, name, generation, start, stop, whole, pipe)

        return GcsReader(info, metadata, functools.partial(self._stream, key, download))

    def _download(
        self,
        h: GcsHandle,
        name: str,
        generation: int | None,
        start: int,
        stop: int,
        whole: bool,
        pipe: ToLoop,
    ) -> None:
        """(Thread) Download ``[start, stop)`` of one generation into ``pipe``."""
        from google.cloud.storage.blob import Blob

        # A fresh Blob: its URL is built from the endpoint and the generation, never from a
        # mediaLink the server sent.
        blob = Blob(name, h.bucket, generation=generation)
        writer = PipeWriter(pipe, READ_CHUNK, limit=stop - start)
        blob.download_to_file(
            writer,
            client=h.client,
            start=None if whole else start,
            end=None if whole else stop - 1,
            raw_download=True,  # the stored bytes, never a decompressed rendition
            checksum="crc32c" if whole else None,
            timeout=self._timeout,
            retry=self._retry(),
        )
        if writer.written != stop - start:
            # Fewer bytes than the object's resource promised for this range: not its content.
            raise TooLong(f"{writer.written} bytes where {stop - start} were asked for")
        writer.flush()

    async def _stream(
        self, key: str, download: Callable[[GcsHandle, ToLoop], None]
    ) -> AsyncIterator[bytes]:
        """Run ``download`` on a thread and yield what it writes, until it ends or fails."""
        pipe = ToLoop(asyncio.get_running_loop(), READ_DEPTH)

        def run() -> None:
            try:
                download(self._client(), pipe)
            except Abandoned:
                return
            except BaseException as exc:
                pipe.finish(exc)
                return
            pipe.finish()

        thread = in_thread(run, name="gcs-download")
        try:
            while True:
                try:
                    chunk = await pipe.receive()
                except StoreError:
                    raise
                except TooLong:
                    raise Transient(
                        f"store {self._name!r}: read {key!r} failed: the server sent another "
                        "number of bytes than the object has",
                        store=self._name,
                        key=key,
                    ) from None
                except Exception as exc:
                    err = self._fail(exc, key=key, op="read")
                    if isinstance(err, NotFound):
                        # The generation read a moment ago is gone: replaced or deleted.
                        err = SourceChanged(
                            f"store {self._name!r}: {key!r} changed while it was read",
                            store=self._name,
                            key=key,
                        )
                    raise err from None
                if chunk is None:
                    return
                self._live.answer()
                yield chunk
        finally:
            pipe.close()
            thread.cancel()


class GcsReader:
    """A streaming read of one object (or a range of it) from Google Cloud Storage."""

    def __init__(
        self,
        info: ObjectInfo,
        metadata: Mapping[str, str],
        open_stream: Callable[[], AsyncIterator[bytes]] | None,
    ) -> None:
        self.info = info
        self.metadata = metadata
        self._open = open_stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._open is None:
            return
        stream = self._open()
        try:
            async for chunk in stream:
                yield chunk
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    async def read_all(self) -> bytes:
        return b"".join([chunk async for chunk in self])
