"""The S3 write operations of a ``writable`` bucket: PutObject and multipart uploads.

PutObject, CreateMultipartUpload, UploadPart, CompleteMultipartUpload (parts validated: in
ascending order, each with the ETag its upload answered, all but the last at least 5 MiB),
AbortMultipartUpload and ListParts. The rest stays refused: a bucket without ``writable =
true`` answers every write 405 as a read-only gateway does; DeleteObject, DeleteObjects and
CopyObject answer 501 (a delete the replicas would have to follow is not a gateway's to
decide: ``daulat sync --delete`` does it, with its limits); so do conditional writes
(``If-Match``/``If-None-Match``, which this gateway could not keep atomically across
replicas), object ACLs, tagging and the other sub-resources.

``Content-Type`` (at most 1,024 bytes: more is 400 ``InvalidArgument``) and user metadata
(``x-amz-meta-*``, at most 2 KiB as S3 allows: more is refused with S3's
``MetadataTooLarge``, and so is a description past what one of the bucket's stores keeps
beside an object, as that store writes it: :meth:`.writes.Writer.too_large`; each one
signed, or 403 as AWS answers: :mod:`.auth`) are kept in daulat's ``s3`` field of every
replica that holds the object in the clear
(:mod:`daulat.stores.described`), and reads answer them; an age-encrypted replica is given
the bytes only (a description in the clear beside the ciphertext would tell its provider
what the object is). The other headers describing an
object (``Content-Disposition``, ``Cache-Control``, ...) are not kept.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from daulat.errors import AccessDenied, DaulatError, InvalidKey, MetadataTooLarge
from daulat.gateway import payload, s3xml
from daulat.gateway.auth import AuthError, Signed
from daulat.gateway.bucket import Bucket
from daulat.gateway.config import BucketConfig
from daulat.gateway.runtime import Runtime
from daulat.gateway.s3xml import S3Failure
from daulat.gateway.spool import Upload
from daulat.gateway.writes import KeyTooLong, WriteFailed, WriteRefused, Written
from daulat.stores.chunkhash import ChunkHasher
from daulat.stores.described import (
    DEFAULT_CONTENT_TYPE,
    MAX_USER_METADATA,
    MAX_WRITTEN_CONTENT_TYPE,
    Described,
    from_header,
    reserved,
    safe_text,
)
from daulat.stores.hashing import StreamHasher

log = logging.getLogger("daulat.gateway")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]

MIN_PART = 5 * 1024 * 1024
#: A CompleteMultipartUpload body: 10,000 parts of about 100 bytes each, with room.
MAX_COMPLETE_BODY = 2 * 1024 * 1024
# Query parameters a write may carry: presigned URLs' own and botocore's operation hint.
_KNOWN = {"x-id", "uploads", "uploadId", "partNumber"}


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def read_only(bucket: BucketConfig | None, any_writable: bool) -> S3Failure:
    if not any_writable:
        return S3Failure(405, "MethodNotAllowed", "this gateway is read-only")
    if bucket is None:
        return no_such_bucket()
    return S3Failure(405, "MethodNotAllowed", f"bucket {bucket.name!r} is read-only")


def no_such_bucket() -> S3Failure:
    """A bucket the gateway does not have, written to as read (a 405 would say it exists)."""
    return S3Failure(404, "NoSuchBucket", "The specified bucket does not exist")


def already_yours(name: str) -> S3Failure:
    """CreateBucket of a configured bucket: S3's answer for a bucket one already owns, which
    clients that create before they upload (rclone) take as success."""
    return S3Failure(
        409,
        "BucketAlreadyOwnedByYou",
        f"bucket {name!r} exists: the gateway's buckets are configured in daulat.toml",
    )


class WriteOps:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def handle(
        self,
        method: str,
        bucket: Bucket,
        key: str,
        params: dict[str, str],
        headers: dict[str, list[str]],
        receive: Receive,
        signed: Signed,
        secure: bool,
    ) -> Reply:
        cfg = self.runtime.gw.buckets[bucket.name]
        if not key:
            if method == "POST" and "delete" in params:
                raise S3Failure(501, "NotImplemented", "DeleteObjects is not implemented")
            raise S3Failure(
                405, "MethodNotAllowed", "buckets are configured in daulat.toml, not created here"
            )
        unknown = sorted(
            p for p in params if p not in _KNOWN and not p.lower().startswith("x-amz-")
        )
        if unknown:
            raise S3Failure(501, "NotImplemented", f"not implemented: {unknown[0]}")
        if method == "DELETE":
            if "uploadId" in params:
                return self._abort(bucket, key, params["uploadId"])
            raise S3Failure(501, "NotImplemented", "DeleteObject is not implemented")
        if method == "POST" and "uploads" in params:
            return await self._create(bucket, key, described_by(headers))
        if method == "POST" and "uploadId" in params:
            body = await _small_body(receive, signed, headers, secure)
            return await self._complete(bucket, cfg, key, params["uploadId"], body)
        if method != "PUT":
            raise S3Failure(405, "MethodNotAllowed", f"{method} is not a write this serves")
        if payload.header(headers, "x-amz-copy-source") is not None:
            raise S3Failure(
                501, "NotImplemented", "CopyObject and UploadPartCopy are not implemented"
            )
        if (
            payload.header(headers, "if-match") is not None
            or payload.header(headers, "if-none-match") is not None
        ):
            raise S3Failure(501, "NotImplemented", "conditional writes are not implemented")
        promises = payload.promises(signed, headers, secure)
        if "uploadId" in params:
            return await self._part(bucket, key, params, receive, promises)
        if "partNumber" in params:
            raise S3Failure(400, "InvalidRequest", "partNumber needs uploadId")
        desc = described_by(headers)
        return await self._put(bucket, cfg, key, receive, promises, desc)

    async def _put(
        self,
        bucket: Bucket,
        cfg: BucketConfig,
        key: str,
        receive: Receive,
        p: payload.Promises,
        desc: Described,
    ) -> Reply:
        hasher = ChunkHasher()
        body = payload.body(receive, p, hasher)
        written = await self._write(bucket, cfg, key, body, hasher, desc)
        return Reply(200, [("etag", written.etag)])

    async def _write(
        self,
        bucket: Bucket,
        cfg: BucketConfig,
        key: str,
        body: Any,
        hasher: ChunkHasher,
        desc: Described,
    ) -> Written:
        try:
            written = await self.runtime.writer.put(bucket, key, body, hasher, cfg.quorum, desc)
        except InvalidKey as exc:
            raise _refused(exc) from None
        except WriteFailed as exc:
            log.warning("%s", exc)
            if exc.unacknowledged is not None:
                await self.runtime.events.written(bucket.name, exc.unacknowledged)
            if isinstance(exc, WriteRefused):
                raise _refused(exc.cause, str(exc)) from None
            raise S3Failure(503, "ServiceUnavailable", str(exc), [("retry-after", "1")]) from None
        except (S3Failure, AuthError):
            raise
        except (DaulatError, sqlite3.Error, OSError) as exc:
            # A spooled part changed on disk, the journal cannot be written: not acknowledged.
            log.error("write of %r failed: %s", key, exc)
            raise S3Failure(
                500, "InternalError", f"the write was not acknowledged: {exc}"
            ) from None
        await self.runtime.events.written(bucket.name, written)
        return written

    # ------------------------------------------------------------------ multipart

    async def _create(self, bucket: Bucket, key: str, desc: Described) -> Reply:
        writer = self.runtime.writer
        refused = (
            writer.refusal(bucket, key)
            or writer.too_large(bucket, key, desc)
            or await writer.conflict(bucket, key)
        )
        if refused is not None:
            raise _refused(refused)
        upload = self.runtime.spool.create(bucket.name, key, desc)
        return Reply(
            200, [("content-type", "application/xml")], s3xml.initiated(bucket.name, key, upload.id)
        )

    async def _part(
        self,
        bucket: Bucket,
        key: str,
        params: dict[str, str],
        receive: Receive,
        p: payload.Promises,
    ) -> Reply:
        upload = self.runtime.spool.get(params["uploadId"], bucket.name, key)
        number = params.get("partNumber", "")
        if not number.isdigit():
            raise S3Failure(400, "InvalidArgument", "partNumber must be 1-10000")
        hasher = StreamHasher()
        try:
            part = await self.runtime.spool.write_part(
                upload, int(number), payload.body(receive, p, hasher), hasher
            )
        except OSError as exc:  # the spool's disk: full, say
            log.error("cannot spool part %s of %r: %s", number, key, exc)
            raise S3Failure(500, "InternalError", f"cannot keep the part: {exc.strerror}") from None
        return Reply(200, [("etag", part.etag)])

    def _abort(self, bucket: Bucket, key: str, upload_id: str) -> Reply:
        upload = self.runtime.spool.get(upload_id, bucket.name, key)
        self.runtime.spool.abort(upload)
        return Reply(204)

    def in_progress(self, bucket: Bucket) -> list[s3xml.InProgress]:
        """The multipart uploads in progress of ``bucket`` (ListMultipartUploads)."""
        return [
            s3xml.InProgress(u.key, u.id, u.started)
            for u in list(self.runtime.spool.uploads.values())
            if u.bucket == bucket.name
        ]

    def list_parts(
        self, bucket: Bucket, key: str, upload_id: str, params: dict[str, str] | None = None
    ) -> Reply:
        """ListParts: the parts after ``part-number-marker``, at most ``max-parts`` (1,000,
        as S3) of them."""
        params = params or {}
        upload = self.runtime.spool.get(upload_id, bucket.name, key)
        marker, max_parts = params.get("part-number-marker", "0"), params.get("max-parts", "1000")
        if not (
            marker.isdigit() and marker.isascii() and max_parts.isdigit() and max_parts.isascii()
        ):
            raise S3Failure(
                400, "InvalidArgument", "part-number-marker and max-parts must be integers"
            )
        limit = min(1000, int(max_parts))
        after = [
            (n, part.etag, part.size, upload.started)
            for n, part in sorted(upload.parts.items())
            if n > int(marker)
        ]
        body = s3xml.list_parts(
            bucket.name,
            key,
            upload.id,
            after[:limit],
            marker=int(marker),
            max_parts=limit,
            truncated=len(after) > limit and limit > 0,
        )
        return Reply(200, [("content-type", "application/xml")], body)

    async def _complete(
        self, bucket: Bucket, cfg: BucketConfig, key: str, upload_id: str, body: bytes
    ) -> Reply:
        spool = self.runtime.spool
        upload = spool.get(upload_id, bucket.name, key)
        listed = s3xml.completion_parts(body)
        parts = _chosen(upload, listed)
        if upload.busy:
            raise S3Failure(409, "OperationAborted", "a part of this upload is still being sent")
        hasher = ChunkHasher()
        upload.busy += 1
        try:
            parts_read = spool.read(parts, hasher)
            written = await self._write(bucket, cfg, key, parts_read, hasher, upload.described)
        finally:
            upload.busy -= 1
        spool.abort(upload)  # done with: its parts are in the stores now
        location = f"/{quote(bucket.name)}/{quote(key)}"
        xml = s3xml.completed(bucket.name, key, written.etag, location)
        return Reply(200, [("content-type", "application/xml"), ("etag", written.etag)], xml)


def described_by(headers: dict[str, list[str]]) -> Described:
    """The Content-Type and ``x-amz-meta-*`` of a PutObject or CreateMultipartUpload;
    400 ``MetadataTooLarge`` past S3's limit."""
    # RFC 2047 encoded words are the text they encode, as S3 stores them (boto3 refuses
    # non-ASCII metadata: its users send =?UTF-8?B?...?=); a read answers them encoded again.
    user = {
        name[len("x-amz-meta-") :]: from_header(values[0])
        for name, values in headers.items()
        if name.startswith("x-amz-meta-") and len(name) > len("x-amz-meta-")
    }
    bad = sorted(n for n, v in user.items() if not safe_text(v))
    if bad:
        raise S3Failure(
            400,
            "InvalidArgument",
            f"x-amz-meta-{bad[0]} holds control characters, which metadata cannot",
        )
    taken = sorted(n for n in user if reserved(n))
    if taken:
        raise S3Failure(
            400,
            "InvalidArgument",
            f"x-amz-meta-{taken[0]} is a name daulat keeps for its own metadata: choose another",
        )
    content_type = payload.header(headers, "content-type") or DEFAULT_CONTENT_TYPE
    length = len(content_type.encode())
    if length > MAX_WRITTEN_CONTENT_TYPE:
        # Refused before any store is asked: a filesystem keeps the description in an
        # extended attribute of a few KB, and a write one replica took and the primary
        # refused would be a 503 the client retries for ever.
        raise S3Failure(
            400,
            "InvalidArgument",
            f"the Content-Type is {length:,} bytes long; at most "
            f"{MAX_WRITTEN_CONTENT_TYPE:,} are kept",
        )
    desc = Described(content_type, user)
    if desc.user_size() > MAX_USER_METADATA:
        raise S3Failure(
            400,
            "MetadataTooLarge",
            "Your metadata headers exceed the maximum allowed metadata size "
            f"({desc.user_size()} bytes, at most {MAX_USER_METADATA}).",
        )
    return desc


def _refused(exc: DaulatError, message: str | None = None) -> S3Failure:
    """A write no retry can mend (a key or description a replica's store cannot hold, access
    to the object refused): a 4xx, never a 503 a client would retry."""
    text = message or str(exc)
    if isinstance(exc, AccessDenied):
        return S3Failure(403, "AccessDenied", text)
    if isinstance(exc, MetadataTooLarge):
        return S3Failure(400, "MetadataTooLarge", text)
    code = "KeyTooLongError" if isinstance(exc, KeyTooLong) else "InvalidArgument"
    return S3Failure(400, code, text)


def _chosen(upload: Upload, listed: list[tuple[int, str]]) -> list[Any]:
    """The spooled parts a completion names, checked as S3 checks them."""
    parts = []
    previous = 0
    for number, etag in listed:
        if number <= previous:
            raise S3Failure(
                400, "InvalidPartOrder", "The list of parts was not in ascending order."
            )
        previous = number
        part = upload.parts.get(number)
        if part is None or part.etag.strip('"') != etag:
            raise S3Failure(
                400,
                "InvalidPart",
                "One or more of the specified parts could not be found or its ETag does not "
                "match the part's.",
            )
        parts.append(part)
    for part in parts[:-1]:
        if part.size < MIN_PART:
            raise S3Failure(
                400,
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed size",
            )
    return parts


async def _small_body(
    receive: Receive, signed: Signed, headers: dict[str, list[str]], secure: bool
) -> bytes:
    """A small request body (CompleteMultipartUpload's XML), checked as any other, except
    that its ``x-amz-checksum-*`` headers are not the body's (for a completion S3 reads them
    as the whole object's checksum, which this gateway does not keep)."""
    promises = dataclasses.replace(payload.promises(signed, headers, secure), checksum=None)
    out = bytearray()
    async for piece in payload.body(receive, promises, StreamHasher()):
        out += piece
        if len(out) > MAX_COMPLETE_BODY:
            raise S3Failure(400, "MaxMessageLengthExceeded", "the request body is too long")
    return bytes(out)
