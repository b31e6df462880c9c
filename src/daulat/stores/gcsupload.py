"""Uploads to Google Cloud Storage: one request, or a resumable session (see :mod:`.gcs`).

A body of up to :data:`SINGLE_PUT_MAX` is one multipart request carrying its CRC32C; a longer one
is sent in :data:`CHUNK_SIZE` chunks of a resumable session, fed from the event loop through a
bounded pipe (:mod:`.threadio`) and sent from a thread of its own. Continuing a session a
failed run left open is in :mod:`.gcsresume`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

from daulat.errors import StoreError, Transient
from daulat.stores.base import OnUpload, PutResult
from daulat.stores.gcsclient import GcsBase, GcsHandle, MiB, crc32c_b64, generation_of
from daulat.stores.hashing import StreamHasher, body_digest, hashed
from daulat.stores.objectstore import METADATA_PREFIX, normalise_etag
from daulat.stores.objectstore import _small_or_stream as small_or_stream
from daulat.stores.resumable import ResumeStats, UploadGone
from daulat.stores.threadio import FromLoop, in_thread

#: Bodies up to this size are sent as one request (the same bound as the other stores').
SINGLE_PUT_MAX = 8 * MiB
#: A resumable upload's chunk: a multiple of 256 KiB (Google's rule). Chunks are sent one after
#: the other, so larger ones are faster on long links; this size keeps a put's memory at two
#: chunks, as the S3 store's two parts in flight.
CHUNK_SIZE = 8 * MiB
#: Bytes of the body read ahead of the upload, so that reading the source overlaps sending.
FEED_AHEAD = 8 * MiB
OCTET_STREAM = "application/octet-stream"
#: What Google answers for a resumable session it no longer has: 404 or 410 (expired, unknown),
#: 499 (cancelled).
SESSION_GONE = (404, 410, 499)


class GcsUploads(GcsBase):
    """``put`` of :class:`~daulat.stores.gcs.GcsStore`, and the session requests it shares
    with continued uploads (:mod:`.gcsresume`)."""

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
        name = self._check(key)
        user = {METADATA_PREFIX + k: v for k, v in (metadata or {}).items()}
        body: bytes | AsyncIterator[bytes]
        if isinstance(data, (bytes, bytearray, memoryview)):
            body = bytes(data)
        else:
            body = await small_or_stream(data)
            prehashed = False
        if isinstance(body, bytes):
            digest = await body_digest(body, sha256, prehashed=prehashed, store=self._name, key=key)
            blob = await self._call(
                lambda h: self._put_whole(h, key, name, body, user), key=key, op="put"
            )
            return PutResult(key=key, size=len(body), sha256=digest, etag=normalise_etag(blob.etag))
        hasher = StreamHasher()
        stream = hashed(body, hasher, expected=sha256, store=self._name, key=key)
        resource = await self._put_resumable(key, name, stream, user, on_upload)
        return PutResult(
            key=key,
            size=hasher.size,
            sha256=hasher.hexdigest(),
            etag=normalise_etag(resource.get("etag")),
        )

    def _put_whole(
        self, h: GcsHandle, key: str, name: str, body: bytes, user: Mapping[str, str]
    ) -> Any:
        """(Thread) One multipart request; its JSON part carries the body's CRC32C."""
        from google.cloud.storage.blob import Blob

        blob = Blob(name, h.bucket)
        if user:
            blob.metadata = dict(user)
        blob.upload_from_string(
            body,
            content_type=OCTET_STREAM,
            checksum="crc32c",
            timeout=self._timeout,
            retry=self._retry(),
        )
        self._check_stored(h, key, name, blob.crc32c, blob.generation, crc32c_b64(body))
        return blob

    def _check_stored(
        self,
        h: GcsHandle,
        key: str,
        name: str,
        reported: str | None,
        generation: int | None,
        sent: str,
    ) -> None:
        """(Thread) The stored object's CRC32C is the one of the bytes sent, or that generation
        is deleted and the put fails (Transient: sending again may succeed)."""
        if reported == sent:
            return
        self._discard(h, name, generation)
        raise Transient(
            f"store {self._name!r}: put {key!r}: the object stored differs from what was sent "
            "(CRC32C); it was removed",
            store=self._name,
            key=key,
        )

    def _discard(self, h: GcsHandle, name: str, generation: int | None) -> None:
        """(Thread) Delete exactly ``generation`` of ``name`` (not a newer one), if it is still
        there; best effort."""
        if generation is None:
            return
        with contextlib.suppress(Exception):
            h.bucket.delete_blob(
                name, if_generation_match=generation, timeout=self._timeout, retry=None
            )

    async def _put_resumable(
        self,
        key: str,
        name: str,
        stream: AsyncIterator[bytes],
        user: Mapping[str, str],
        on_upload: OnUpload | None,
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        feed = FromLoop(loop, FEED_AHEAD)
        try:
            upload = await self._call(
                lambda h: self._initiate(h, name, user, feed), key=key, op="put"
            )
        except BaseException:
            with contextlib.suppress(RuntimeError):
                await stream.aclose()  # type: ignore[attr-defined]
            raise
        try:
            if on_upload is not None:
                # The caller records the session before any byte is sent.
                on_upload(key, upload.resumable_url)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._call(lambda h: self._cancel(h, upload), key=key, op="put")
            with contextlib.suppress(RuntimeError):
                await stream.aclose()  # type: ignore[attr-defined]
            raise
        pump = asyncio.ensure_future(feed.pump(stream))
        try:
            return await in_thread(
                lambda: self._transmit(self._client(), key, name, upload, feed), name="gcs-upload"
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if feed.error is not None:
                raise feed.error from None  # the body's own error, unchanged
            if isinstance(exc, StoreError):
                raise
            raise self._fail(exc, key=key, op="put") from None
        finally:
            feed.close()  # a thread still reading stops at its next read, and cancels
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            with contextlib.suppress(RuntimeError):
                await stream.aclose()  # type: ignore[attr-defined]

    def _initiate(self, h: GcsHandle, name: str, user: Mapping[str, str], feed: FromLoop) -> Any:
        """(Thread) Open a resumable session for ``name``; nothing of the body is sent."""
        from google.cloud.storage._media.requests import ResumableUpload

        url = (
            f"{self._endpoint}/upload/storage/v1/b/{quote(self._bucket_name, safe='')}"
            "/o?uploadType=resumable"
        )
        upload = ResumableUpload(  # type: ignore[no-untyped-call]
            url, CHUNK_SIZE, checksum="crc32c", retry=self._retry()
        )
        resource: dict[str, Any] = {"name": name}
        if user:
            resource["metadata"] = dict(user)
        upload.initiate(  # type: ignore[no-untyped-call]
            h.session, feed, resource, OCTET_STREAM, stream_final=False, timeout=self._timeout
        )
        return upload

    def _transmit(
        self,
        h: GcsHandle,
        key: str,
        name: str,
        upload: Any,
        feed: FromLoop,
        stats: ResumeStats | None = None,
    ) -> dict[str, Any]:
        """(Thread) Send the body chunk by chunk; the object resource Google made of it.

        ``stats`` (given by :meth:`put_resumable` only) counts the chunks sent, and keeps the
        session open at Google when the upload fails, for a later attempt to continue; an
        upload whose result is wrong then fails with :class:`UploadGone`, so that the next
        attempt begins a new session rather than continuing this spent one."""
        from google.cloud.storage.exceptions import DataCorruption, InvalidResponse

        failed: type[Transient] = Transient if stats is None else UploadGone
        again = "" if stats is None else " and the upload starts again"
        response: Any = None
        try:
            while not upload.finished:
                if feed.tell() != upload.bytes_uploaded:
                    # Google kept less of the last chunk than was sent: send the rest again.
                    feed.seek(upload.bytes_uploaded)
                before = upload.bytes_uploaded
                # A chunk refused with a retryable status (429, 5xx) or lost to a reset is sent
                # again by the client's retry; anything else ends the upload here.
                response = upload.transmit_next_chunk(h.session, timeout=self._timeout)
                if stats is not None:
                    stats.sent_parts += 1
                    stats.sent_bytes += upload.bytes_uploaded - before
        except DataCorruption as exc:
            # Finished, but the stored object's CRC32C is not the one of what was sent (for a
            # continued session: the bytes Google kept from earlier runs are not the source's).
            generation = generation_of(getattr(exc, "response", None))
            self._discard(h, name, generation)
            raise failed(
                f"store {self._name!r}: put {key!r}: the object stored differs from what was "
                f"sent (CRC32C); it was removed{again}",
                store=self._name,
                key=key,
            ) from None
        except InvalidResponse as exc:
            status = getattr(exc.response, "status_code", None)
            if stats is None:
                self._cancel(h, upload)
            elif status in SESSION_GONE:
                raise self._gone(key) from None
            elif status == 400 and stats.kept_bytes:
                # Google refuses the whole body's X-Goog-Hash: the bytes it kept from an earlier
                # run are not the source's. The session cannot be mended: begin a new one.
                self._cancel(h, upload)
                raise UploadGone(
                    f"store {self._name!r}: put {key!r}: Google refused the object's CRC32C; "
                    "the bytes it kept from the interrupted upload differ from the source's, "
                    "so the upload starts again",
                    store=self._name,
                    key=key,
                ) from None
            raise
        except BaseException:  # the body failed or was abandoned, or a request failed
            if stats is None:
                self._cancel(h, upload)
            raise
        resource: dict[str, Any] = response.json() if response is not None else {}
        if not feed.eof or int(resource.get("size", -1)) != feed.tell():
            # Google ended the upload before the body did (or kept another size).
            self._discard(h, name, generation_of(response))
            raise failed(
                f"store {self._name!r}: put {key!r}: the server ended the upload early; the "
                f"object was removed{again}",
                store=self._name,
                key=key,
            )
        return resource

    def _cancel(self, h: GcsHandle, upload: Any) -> None:
        """(Thread) Cancel a resumable session (best effort); nothing of it becomes visible."""
        url = upload.resumable_url
        if url is None or upload.finished:
            return
        with contextlib.suppress(Exception):
            h.session.delete(url, timeout=self._timeout)

    def _gone(self, key: str) -> UploadGone:
        return UploadGone(
            f"store {self._name!r}: Google no longer has the upload session of {key!r} "
            "(cancelled or expired); it starts again",
            store=self._name,
            key=key,
        )
