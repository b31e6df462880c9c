"""Resumable uploads a later process continues (see :mod:`daulat.stores.resumable`).

:meth:`GcsResumable.put_resumable` keeps a session open when its upload fails; a later run
asks Google how many bytes it holds (its status query), reads that many again from the source
without sending them, and sends the rest. Google keeps no per-chunk checksums, so the whole
body's CRC32C (``X-Goog-Hash`` with the last chunk) is what checks the kept bytes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

import google_crc32c

from daulat.errors import AccessDenied, StoreError, Transient
from daulat.stores.base import PutResult
from daulat.stores.gcsclient import READ_CHUNK, GcsHandle
from daulat.stores.gcsupload import CHUNK_SIZE, FEED_AHEAD, OCTET_STREAM, SESSION_GONE, GcsUploads
from daulat.stores.hashing import StreamHasher, hashed
from daulat.stores.objectstore import METADATA_PREFIX, normalise_etag
from daulat.stores.resumable import OnSession, ResumeStats, Session, UploadGone
from daulat.stores.threadio import FromLoop, in_thread

#: A status query's answer: the bytes Google holds, ``bytes=0-LAST``.
_RANGE = re.compile(r"bytes=0-(\d+)")


class GcsResumable(GcsUploads):
    """``put_resumable`` and ``abort_session`` of :class:`~daulat.stores.gcs.GcsStore`."""

    @property
    def location(self) -> str:
        """Endpoint, bucket and prefix: where the journal's sessions of this store belong."""
        return f"{self._endpoint}/{self._bucket_name}/{self._prefix}"

    @property
    def part_size(self) -> int:
        return CHUNK_SIZE

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
        """A resumable upload that a later process can continue (see
        :mod:`daulat.stores.resumable`); ``session.upload_id`` is the session URI.

        Continuing: Google is asked how many bytes of the session it holds (a status query,
        ``Content-Range: bytes */*``). That many bytes of ``data`` are read again from the
        source and not sent: they go into the SHA-256 and into the CRC32C of the whole body,
        whose ``X-Goog-Hash`` Google checks with the last chunk, and which the finished
        object's CRC32C must equal. Google keeps no per-chunk checksums, so this is where
        kept bytes that differ from the source are found: the object is refused (or removed)
        and :class:`UploadGone` makes the next attempt begin a new session. A session Google
        no longer has (cancelled, expired after a week) is :class:`UploadGone` before
        anything of ``data`` is read. ``metadata`` is fixed when a session begins.
        """
        name = self._check(key)
        hasher = StreamHasher()
        stream = hashed(aiter(data), hasher, expected=None, store=self._name, key=key)
        loop = asyncio.get_running_loop()
        feed = FromLoop(loop, FEED_AHEAD)
        kept = 0
        if session is None:
            user = {METADATA_PREFIX + k: v for k, v in (metadata or {}).items()}
            upload = await self._call(
                lambda h: self._initiate(h, name, user, feed), key=key, op="put"
            )
            try:
                # The caller records the session before any byte is sent.
                on_session(Session(upload.resumable_url, CHUNK_SIZE))
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._call(lambda h: self._cancel(h, upload), key=key, op="put")
                raise
        else:
            url = self._own_session(key, session)
            state = await self._call(lambda h: self._status(h, key, url), key=key, op="resume")
            stats.resumed = True
            if isinstance(state, dict):
                return await self._finished(key, name, state, stream, hasher, stats)
            kept = state
            upload = self._continued(url, feed)
            stats.kept_bytes = kept
            stats.kept_parts = -(-kept // CHUNK_SIZE)
        pump = asyncio.ensure_future(feed.pump(stream))

        def transmit() -> dict[str, Any]:
            if kept:
                self._skip(key, upload, feed, kept)
            return self._transmit(self._client(), key, name, upload, feed, stats)

        try:
            resource = await in_thread(transmit, name="gcs-upload")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if feed.error is not None:
                raise feed.error from None  # the body's own error, unchanged
            if isinstance(exc, StoreError):
                raise
            raise self._fail(exc, key=key, op="put") from None
        finally:
            feed.close()
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            with contextlib.suppress(RuntimeError):
                await stream.aclose()
        return PutResult(
            key=key,
            size=hasher.size,
            sha256=hasher.hexdigest(),
            etag=normalise_etag(resource.get("etag")),
        )

    async def abort_session(self, key: str, session: Session) -> None:
        """Cancel the session at Google (succeeds when it is gone already)."""
        try:
            url = self._own_session(key, session)
        except UploadGone:
            return  # not a session of this endpoint: nothing daulat may send it to

        def cancel(h: GcsHandle) -> None:
            reply = h.session.delete(url, timeout=self._timeout)
            if reply.status_code not in (200, 204, *SESSION_GONE):
                raise self._status_error(key, reply.status_code, "cancel upload")

        await self._call(cancel, key=key, op="cancel upload")

    def _own_session(self, key: str, session: Session) -> str:
        """The session URI, if it is one of this store's endpoint: requests to it carry the
        store's access token, which must go nowhere else (the URI comes from the journal, and
        first from a ``Location`` header)."""
        url = session.upload_id
        if not url.startswith(f"{self._endpoint}/upload/"):
            raise UploadGone(
                f"store {self._name!r}: the recorded upload of {key!r} is not one of this "
                "store's endpoint; it starts again",
                store=self._name,
                key=key,
            )
        return url

    def _status_error(self, key: str, status: int, op: str) -> StoreError:
        """A daulat error for an HTTP status (never the URL: it is a capability)."""
        where = f"store {self._name!r}: {op} {key!r}"
        if status in (401, 403):
            return AccessDenied(f"{where} refused (HTTP {status})", store=self._name, key=key)
        if status in (408, 429) or status >= 500:
            return Transient(f"{where} failed (HTTP {status})", store=self._name, key=key)
        return StoreError(f"{where} failed (HTTP {status})", store=self._name, key=key)

    def _status(self, h: GcsHandle, key: str, url: str) -> int | dict[str, Any]:
        """(Thread) How many bytes Google holds for the session (its status query), or the
        object resource when the session was finished already; :class:`UploadGone` when
        Google no longer has it."""
        reply = h.session.put(
            url, data=b"", headers={"Content-Range": "bytes */*"}, timeout=self._timeout
        )
        status = reply.status_code
        if status in SESSION_GONE:
            raise self._gone(key)
        if status in (200, 201):
            resource: dict[str, Any] = reply.json()
            return resource
        if status != 308:
            raise self._status_error(key, status, "resume upload")
        held = reply.headers.get("Range")
        if held is None:
            return 0  # nothing persisted yet
        match = _RANGE.fullmatch(held.strip())
        if match is None:
            raise Transient(
                f"store {self._name!r}: resume upload {key!r}: Google answered an unreadable Range",
                store=self._name,
                key=key,
            )
        return int(match.group(1)) + 1

    def _continued(self, url: str, feed: FromLoop) -> Any:
        """A ResumableUpload for an existing session, as ``initiate`` would leave it (the
        client's own documentation sets these attributes to the same end)."""
        from google.cloud.storage._media.requests import ResumableUpload

        upload = ResumableUpload(  # type: ignore[no-untyped-call]
            url, CHUNK_SIZE, checksum="crc32c", retry=self._retry()
        )
        upload._resumable_url = url
        upload._stream = feed
        upload._content_type = OCTET_STREAM
        upload._total_bytes = None  # streamed: the size is told with the last chunk
        return upload

    def _skip(self, key: str, upload: Any, feed: FromLoop, kept: int) -> None:
        """(Thread) Read the ``kept`` bytes Google holds from the body without sending them,
        taking them into the whole body's CRC32C (``X-Goog-Hash`` with the last chunk)."""
        crc = google_crc32c.Checksum()  # type: ignore[no-untyped-call]
        left = kept
        while left:
            piece = feed.read(min(left, READ_CHUNK))
            if not piece:
                # Google holds more than the source has: not an upload of this source.
                raise UploadGone(
                    f"store {self._name!r}: the interrupted upload of {key!r} holds more bytes "
                    "than the source has; it starts again",
                    store=self._name,
                    key=key,
                )
            crc.update(piece)  # type: ignore[no-untyped-call]
            left -= len(piece)
        upload._checksum_object = crc
        upload._bytes_checksummed = kept
        upload._bytes_uploaded = kept

    async def _finished(
        self,
        key: str,
        name: str,
        resource: dict[str, Any],
        stream: AsyncIterator[bytes],
        hasher: StreamHasher,
        stats: ResumeStats,
    ) -> PutResult:
        """The session had finished (the run stopped before it noted so): the object stands if
        it is the source's bytes (size and CRC32C), else that generation is removed and the
        upload starts again."""
        crc = 0
        try:
            async for chunk in stream:
                crc = google_crc32c.extend(crc, chunk)
        finally:
            with contextlib.suppress(RuntimeError):
                await stream.aclose()  # type: ignore[attr-defined]
        sent = base64.b64encode(crc.to_bytes(4, "big")).decode("ascii")
        if resource.get("crc32c") == sent and int(resource.get("size", -1)) == hasher.size:
            stats.kept_bytes = hasher.size
            stats.kept_parts = -(-hasher.size // CHUNK_SIZE)
            return PutResult(
                key=key,
                size=hasher.size,
                sha256=hasher.hexdigest(),
                etag=normalise_etag(resource.get("etag")),
            )
        generation = resource.get("generation")
        await self._call(
            lambda h: self._discard(h, name, int(generation) if generation else None),
            key=key,
            op="put",
        )
        raise UploadGone(
            f"store {self._name!r}: put {key!r}: the object an interrupted upload left differs "
            "from the source (CRC32C); it was removed and the upload starts again",
            store=self._name,
            key=key,
        )
