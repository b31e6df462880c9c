"""Multipart uploads of :class:`~daulat.stores.s3raw.S3Raw`: streamed puts part by part
(each part with a checksum the server checks), uploads a later process can resume, their
parts listed and matched, aborts of daulat's own uploads, and server-side copies part by part.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Mapping,
    Sequence,
)
from typing import Any

import google_crc32c

from daulat.errors import (
    NotFound,
    StoreError,
)
from daulat.stores.base import (
    OnUpload,
    PutResult,
)
from daulat.stores.hashing import StreamHasher, check_digest, hashed_by
from daulat.stores.objectstore import (
    PARTS_IN_FLIGHT,
)
from daulat.stores.resumable import OnSession, ResumeStats, Session, UploadGone
from daulat.stores.s3base import (
    COPY_PARTS_IN_FLIGHT,
    MAX_PART,
    MAX_PARTS,
    CopyResult,
    ListedPart,
    MiB,
    _etag,
    _suspicious,
)
from daulat.stores.s3keys import S3KeyFidelity


class S3Multipart(S3KeyFidelity):
    """The multipart requests of :class:`~daulat.stores.s3raw.S3Raw`."""

    def _part_size(self, number: int) -> int:
        return min(MAX_PART, self.part_size << ((number - 1) // 1000))

    async def _multipart_put(
        self,
        key: str,
        full: str,
        head: list[bytes],
        rest: AsyncIterator[bytes],
        hasher: StreamHasher,
        expected: str | None,
        meta: Mapping[str, str],
        on_upload: OnUpload | None,
        *,
        resume: tuple[Session, Mapping[int, ListedPart]] | None = None,
        stats: ResumeStats | None = None,
        fed: bool = False,
    ) -> PutResult:
        """Upload parts as the stream fills them, at most PARTS_IN_FLIGHT at once.

        Memory: the parts in flight plus the one being filled. A part keeps the chunks as
        they arrive and joins them when it is sent (one copy), its CRC32C computed on the
        way, and the next part waits for a free slot, so the stream waits (back pressure)
        instead of piling up parts.

        ``resume``: continue that upload (its part size, and the parts the server listed),
        keeping each listed part that matches the stream (see :meth:`put_resumable`).
        ``stats`` (given by :meth:`put_resumable` only) counts kept and sent parts, and
        makes the upload stay at the server on failure, for a later attempt. ``fed``: the
        stream feeds ``hasher`` itself (see :func:`~daulat.stores.hashing.hashed_by`).
        """
        part_size = self.part_size
        listed: Mapping[int, ListedPart] = {}
        if resume is not None:
            session, listed = resume
            upload_id, part_size = session.upload_id, session.part_size
        else:
            upload_id = await self._create_upload(key, full, meta, checksums=True)
        in_flight: set[asyncio.Task[dict[str, Any]]] = set()
        done: list[dict[str, Any]] = []

        async def wait_for_slot(limit: int) -> None:
            while len(in_flight) > limit:
                finished, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    in_flight.discard(task)
                    done.append(task.result())

        def size_of(number: int) -> int:
            return min(MAX_PART, part_size << ((number - 1) // 1000))

        async def send(number: int, part: _Part) -> dict[str, Any]:
            checksum = part.checksum()
            known = listed.get(number)
            if known is not None:
                kept = await _matches(part, known)
                if kept is not None:
                    if stats is not None:
                        stats.kept_parts += 1
                        stats.kept_bytes += known.size
                    return {"PartNumber": number, "ETag": known.etag, **kept}
                if stats is not None:
                    stats.replaced_parts += 1
            body = part.body()
            sent = await self._upload_part(key, full, upload_id, number, body, checksum)
            if stats is not None:
                stats.sent_parts += 1
                stats.sent_bytes += len(body)
            return sent

        def launch(number: int, part: _Part) -> None:
            in_flight.add(asyncio.ensure_future(send(number, part)))

        async def chunks() -> AsyncIterator[bytes]:
            while head:
                yield head.pop(0)  # do not keep the read-ahead alive for the whole upload
            async for chunk in rest:
                yield bytes(chunk)

        try:
            if on_upload is not None and resume is None:
                on_upload(key, upload_id)
            number = 1
            crc = self.checksum != "md5"
            part = _Part(size_of(number), crc=crc)
            async for chunk in chunks():
                if not fed:
                    await hasher.update(chunk)
                rest_of_chunk = part.fill(chunk)
                while part.full:
                    # A part is sent as soon as it is full; a stream that ends on a part
                    # boundary sends no empty last part (see below).
                    await wait_for_slot(PARTS_IN_FLIGHT - 1)
                    launch(number, part)
                    number += 1
                    part = _Part(size_of(number), crc=crc)
                    rest_of_chunk = part.fill(rest_of_chunk)
            check_digest(hasher, expected, store=self.name, key=key)
            if part.filled or number == 1:
                launch(number, part)
            del part
            await wait_for_slot(0)
            parts = sorted(done, key=lambda p: int(p["PartNumber"]))
            etag = await self._complete_upload(key, full, upload_id, parts)
        except BaseException as exc:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            if stats is None:
                await asyncio.shield(self._abort_quietly(full, upload_id))
            elif isinstance(exc, NotFound):
                # NoSuchUpload: aborted or expired behind daulat's back while it ran.
                raise UploadGone(
                    f"store {self.name!r}: the upload of {key!r} was aborted at the server; "
                    "it starts again",
                    store=self.name,
                    key=key,
                ) from None
            raise
        return PutResult(key=key, size=hasher.size, sha256=hasher.hexdigest(), etag=etag)

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
        """A multipart upload that a later process can continue (see
        :mod:`daulat.stores.resumable`). Always multipart, whatever the size.

        Resuming: ListParts (all pages) first, then the whole stream again; a listed part is
        kept only when its size and every checksum the server reports for it (CRC32C when
        the upload was begun with it, the ETag when it is a plain MD5) equal the stream's
        bytes for that part, else it is sent again. CompleteMultipartUpload then carries
        daulat's CRC32C of every part, which the server checks once more. ``metadata`` is
        set when an upload begins; a resumed one keeps what it was begun with.
        """
        full = self.full_key(key)
        await self._check_kinds(full, key)
        shared = hashed_by(data)
        hasher = shared or StreamHasher()
        fed = shared is not None
        if session is None:
            meta = self._metadata(metadata, key)

            def started(key: str, upload_id: str) -> None:
                on_session(Session(upload_id, self.part_size))

            result = await self._multipart_put(
                key, full, [], aiter(data), hasher, None, meta, started, stats=stats, fed=fed
            )
        else:
            listed = await self.list_parts(key, session.upload_id)
            stats.resumed = True
            result = await self._multipart_put(
                key,
                full,
                [],
                aiter(data),
                hasher,
                None,
                {},
                None,
                resume=(session, listed),
                stats=stats,
                fed=fed,
            )
        if self.verify_keys and _suspicious(full):
            await self._verify_written(key, full, result.size)
        return result

    async def list_parts(self, key: str, upload_id: str) -> dict[int, ListedPart]:
        """The parts the server holds for ``upload_id``, by number (every page of
        ``list_page`` parts); :class:`UploadGone` when it no longer has the upload."""
        full = self.full_key(key)
        parts: dict[int, ListedPart] = {}
        marker = 0
        while True:
            try:
                reply = await self._call(
                    "upload",
                    key,
                    "list_parts",
                    Key=full,
                    UploadId=upload_id,
                    MaxParts=self.list_page,
                    PartNumberMarker=marker,
                )
            except NotFound:
                raise UploadGone(
                    f"store {self.name!r}: the upload of {key!r} no longer exists (aborted "
                    "or expired); it starts again",
                    store=self.name,
                    key=key,
                ) from None
            for item in reply.get("Parts") or []:
                etag = str(item.get("ETag") or "")
                plain = etag.strip('"').lower()
                number = int(item["PartNumber"])
                if number in parts:
                    # Listed twice (SeaweedFS lists every upload of a part number): which one
                    # a completion would take is the server's choice, so the part is sent
                    # again (size -1 matches nothing).
                    parts[number] = ListedPart(number, -1, etag, None, None)
                    continue
                parts[number] = ListedPart(
                    number=number,
                    size=int(item.get("Size") or 0),
                    etag=etag,
                    crc32c=item.get("ChecksumCRC32C"),
                    md5=plain if re.fullmatch(r"[0-9a-f]{32}", plain) else None,
                )
            following = int(reply.get("NextPartNumberMarker") or 0)
            if not reply.get("IsTruncated") or following <= marker:
                return parts
            marker = following

    async def abort_session(self, key: str, session: Session) -> None:
        """Abort the multipart upload of ``session`` (succeeds when it is gone)."""
        await self.abort_multipart_upload(key, session.upload_id)

    async def _create_upload(
        self,
        key: str,
        full: str,
        meta: Mapping[str, str],
        *,
        content_type: str | None = None,
        checksums: bool = False,
    ) -> str:
        params: dict[str, Any] = {"Key": full, "Metadata": dict(meta)}
        if content_type:
            params["ContentType"] = content_type
        if checksums and self.checksum == "sha256":
            params["ChecksumAlgorithm"] = "CRC32C"  # each part then carries its own
        reply = await self._call("upload", key, "create_multipart_upload", **params)
        upload_id = reply.get("UploadId")
        if not upload_id:
            raise StoreError(
                f"store {self.name!r}: upload {key!r} failed (no upload id)",
                store=self.name,
                key=key,
            )
        return str(upload_id)

    async def _upload_part(
        self,
        key: str,
        full: str,
        upload_id: str,
        number: int,
        piece: bytes | bytearray | memoryview,
        checksum: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        # A part's checksum only has to catch a body altered or cut short on its way (the
        # object's SHA-256 is daulat's own, computed while streaming): CRC32C (the CPU's own
        # instruction) does that for 0.05 CPU-s/GiB, where a second SHA-256 pass costs 0.6
        # and zlib's CRC32 0.27 (+35 % and +15 % of a streamed put). MD5 runs off the loop.
        if checksum is None:
            checksum = (
                await asyncio.to_thread(self._part_checksum, piece)
                if len(piece) >= 4 * MiB
                else self._part_checksum(piece)
            )
        reply = await self._call(
            "upload",
            key,
            "upload_part",
            Key=full,
            PartNumber=number,
            UploadId=upload_id,
            Body=piece,
            **checksum,
        )
        etag = reply.get("ETag")
        if not etag:
            raise StoreError(
                f"store {self.name!r}: upload {key!r} failed (part without ETag)",
                store=self.name,
                key=key,
            )
        part: dict[str, Any] = {"PartNumber": number, "ETag": etag}
        if "ChecksumCRC32C" in checksum:
            part["ChecksumCRC32C"] = checksum["ChecksumCRC32C"]
        return part

    async def _complete_upload(
        self, key: str, full: str, upload_id: str, parts: Sequence[Mapping[str, Any]]
    ) -> str | None:
        reply = await self._call(
            "upload",
            key,
            "complete_multipart_upload",
            Key=full,
            UploadId=upload_id,
            MultipartUpload={"Parts": [dict(p) for p in parts]},
        )
        return _etag(reply.get("ETag"))

    async def _abort_quietly(self, full: str, upload_id: str) -> None:
        # A failed abort leaves the upload recorded for the next run; the original error
        # matters more.
        with contextlib.suppress(StoreError):
            await self._abort(full, upload_id, key=self._relative(full) or full)

    async def _abort(self, full: str, upload_id: str, *, key: str) -> None:
        with contextlib.suppress(NotFound):  # already completed or aborted
            await self._call("abort", key, "abort_multipart_upload", Key=full, UploadId=upload_id)

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        """Abort one upload (its parts are freed); succeeds when it is already gone."""
        await self._abort(self.full_key(key), upload_id, key=key)

    async def _copy_parts(
        self,
        key: str,
        full: str,
        copy_source: Mapping[str, str],
        size: int,
        metadata: Mapping[str, str],
        content_type: str | None,
        if_match: str | None,
        on_upload: OnUpload | None,
    ) -> CopyResult:
        part = max(self.copy_part_size, -(-size // MAX_PARTS))
        ranges = [
            (n + 1, off, min(off + part, size) - 1) for n, off in enumerate(range(0, size, part))
        ]
        upload_id = await self._create_upload(
            key, full, self._metadata(metadata, key), content_type=content_type
        )
        if on_upload is not None:
            try:
                on_upload(key, upload_id)
            except BaseException:
                await asyncio.shield(self._abort_quietly(full, upload_id))
                raise
        sem = asyncio.Semaphore(COPY_PARTS_IN_FLIGHT)

        async def one(number: int, first: int, last: int) -> dict[str, Any]:
            async with sem:
                params: dict[str, Any] = {
                    "Key": full,
                    "UploadId": upload_id,
                    "PartNumber": number,
                    "CopySource": dict(copy_source),
                    "CopySourceRange": f"bytes={first}-{last}",
                }
                if if_match:
                    params["CopySourceIfMatch"] = if_match
                reply = await self._call("copy", key, "upload_part_copy", **params)
                etag = (reply.get("CopyPartResult") or {}).get("ETag") or ""
                return {"PartNumber": number, "ETag": etag}

        tasks = [asyncio.ensure_future(one(*r)) for r in ranges]
        try:
            parts = await asyncio.gather(*tasks)
            etag = await self._complete_upload(key, full, upload_id, parts)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.shield(self._abort_quietly(full, upload_id))
            raise
        return CopyResult(key=key, size=size, etag=etag)


class _Part:
    """One part of a multipart upload, filled chunk by chunk, with its CRC32C computed on the
    way (``crc``; else the checksum is computed when it is sent). The chunks are kept as they
    came and joined once, when the part is sent: one copy, and no zero-filled buffer first."""

    def __init__(self, size: int, *, crc: bool) -> None:
        self.size = size
        self.filled = 0
        self._pieces: list[bytes] = []
        self._crc: Any = google_crc32c.Checksum() if crc else None  # type: ignore[no-untyped-call]

    @property
    def full(self) -> bool:
        return self.filled == self.size

    def fill(self, chunk: bytes) -> bytes:
        """Take as much of ``chunk`` as fits; return the rest."""
        if not chunk:
            return b""
        take = min(len(chunk), self.size - self.filled)
        piece = chunk if take == len(chunk) else chunk[:take]
        self._pieces.append(piece)
        if self._crc is not None:
            self._crc.update(piece)
        self.filled += take
        return b"" if take == len(chunk) else chunk[take:]

    def body(self) -> memoryview:
        """The part's bytes; the part keeps nothing (the upload owns them now)."""
        view = self.peek()
        self._pieces = []
        return view

    def peek(self) -> memoryview:
        """The bytes filled so far (joined into one buffer, which the part then keeps)."""
        if len(self._pieces) != 1:
            self._pieces = [b"".join(self._pieces)]
        return memoryview(self._pieces[0])

    def checksum(self) -> dict[str, str] | None:
        if self._crc is None:
            return None
        return {"ChecksumCRC32C": base64.b64encode(self._crc.digest()).decode()}


async def _matches(part: _Part, listed: ListedPart) -> dict[str, str] | None:
    """Whether the server's ``listed`` part holds the bytes of ``part``: the checksum fields
    its completion needs when it does, None when the part must be sent again. Every checksum
    the server reports must match, and at least one must be there to compare."""
    if listed.size != part.filled:
        return None
    ours = part.checksum()
    compared = False
    if listed.crc32c is not None:
        if ours is None or ours.get("ChecksumCRC32C") != listed.crc32c:
            return None
        compared = True
    if listed.md5 is not None:
        view = part.peek()
        digest = await asyncio.to_thread(_md5_hex, view) if len(view) >= 4 * MiB else _md5_hex(view)
        if digest != listed.md5:
            return None
        compared = True
    if not compared:
        return None
    part.body()  # release the buffer: nothing is sent
    return dict(ours or {})


def _md5_hex(data: memoryview) -> str:
    return hashlib.md5(data).hexdigest()
