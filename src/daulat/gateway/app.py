"""The gateway's ASGI application: S3 requests → checked reads from the replicas.

Served by uvicorn (:mod:`daulat.gateway.server`). Keys come from the raw request path
(``scope["raw_path"]``), percent-decoded once and never normalised, so ``..``, ``//`` and
``%2F`` name the keys they name. Path-style addressing only (``/BUCKET/KEY``): clients are
pointed at the gateway with an endpoint URL (boto3, the AWS CLI and rclone then use it).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote_to_bytes

from daulat.errors import InvalidKey, NotFound
from daulat.gateway import s3xml, uploadlist
from daulat.gateway.auth import AuthError, Request, Signed, query_pairs, verify
from daulat.gateway.bucket import Bucket, decode_token, encode_token
from daulat.gateway.config import GatewayConfig, is_loopback
from daulat.gateway.reading import Unavailable, VerifiedRead, described
from daulat.gateway.replicas import Version
from daulat.gateway.runtime import Runtime
from daulat.gateway.s3xml import S3Failure
from daulat.gateway.spool import SpoolError
from daulat.gateway.writeops import Reply, WriteOps, read_only
from daulat.stores.described import DEFAULT_CONTENT_TYPE, Described, header_value

log = logging.getLogger("daulat.gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

STARTED = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
#: The size of the copied end of each piece sent: the transports' write buffer limit (64 KiB
#: in asyncio and uvloop), so that the server's buffer, once drained below it, holds only
#: copies and no longer a piece of the replica's (see VerifiedRead on memory).
SEND_TAIL = 64 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
# Sub-resources of a bucket or object this read-only gateway does not implement.
_BUCKET_QUERIES = {
    "location",
    "list-type",
    "prefix",
    "delimiter",
    "max-keys",
    "marker",
    "continuation-token",
    "start-after",
    "encoding-type",
    "fetch-owner",
    "x-id",
    "allow-unordered",
}
# The query parameters a GetObject/HeadObject may carry: presigned URLs' own, botocore's
# operation hint and the response-* overrides (applied: see _description). Anything else names a
# sub-resource (?acl, ?tagging, ?attributes, ?torrent, ?retention, ?legal-hold, ...) this
# gateway does not serve: 501, never the object's bytes under another operation's name.
_OBJECT_QUERIES = {
    "x-id",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
}


#: The ``response-*`` query parameters of a GetObject/HeadObject and the headers they set.
_OVERRIDES = {
    "response-cache-control": "cache-control",
    "response-content-disposition": "content-disposition",
    "response-content-encoding": "content-encoding",
    "response-content-language": "content-language",
    "response-content-type": "content-type",
    "response-expires": "expires",
}
_HEADER_VALUE = re.compile(r"^[\x20-\x7e\x80-\xff]*$")


class Gateway:
    """The ASGI callable."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.cfg: GatewayConfig = runtime.gw
        self.writes = WriteOps(runtime)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                pass
            return
        if scope["type"] != "http":
            return
        request_id = uuid.uuid4().hex[:16].upper()
        method = scope["method"]
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"").decode("latin-1")
        headers: dict[str, list[str]] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        path = raw_path.decode("latin-1")
        try:
            signed = verify(
                Request(method, path, query, headers),
                self.cfg.access_key_id,
                self.cfg.secret_access_key,
            )
            if method in ("GET", "HEAD"):
                await self._route(method, path, query, headers, send, receive, request_id)
            else:
                reply = await self._write(method, path, query, headers, receive, signed, scope)
                hdrs = [("x-amz-request-id", request_id), *reply.headers]
                await _respond(send, reply.status, hdrs, reply.body, method)
        except AuthError as exc:
            await self._error(send, method, S3Failure(403, exc.code, str(exc)), path, request_id)
        except S3Failure as exc:
            await self._error(send, method, exc, path, request_id)

    async def _error(
        self, send: Send, method: str, exc: S3Failure, resource: str, rid: str
    ) -> None:
        body = b"" if method == "HEAD" else s3xml.error_body(exc.code, exc.message, resource, rid)
        hdrs = [("content-type", "application/xml"), ("x-amz-request-id", rid), *exc.headers]
        if method == "HEAD":
            hdrs.append(("content-length", "0"))
        if method not in ("GET", "HEAD"):
            # A write's body is never read (SDKs send it only after "100 Continue", which is
            # never given): the connection cannot carry another request, else the server would
            # take the next request's bytes for that body and answer 400 to it.
            hdrs.append(("connection", "close"))
        await _respond(send, exc.status, hdrs, body)

    async def _write(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, list[str]],
        receive: Receive,
        signed: Signed,
        scope: Scope,
    ) -> Reply:
        """A write: :mod:`.writeops` where the bucket is ``writable``, else 405 as a read-only
        gateway answers. ``secure``: the body came over TLS or from this machine."""
        gw = self.cfg.buckets
        any_writable = any(b.writable for b in gw.values())
        if not any_writable or path == "/":
            raise read_only(None, any_writable)
        params, name, key = _target(path, query)
        bucket = self.runtime.buckets.get(name)
        if bucket is None or not gw[name].writable:
            raise read_only(gw.get(name), any_writable)
        client = scope.get("client") or ("", 0)
        secure = scope.get("scheme") == "https" or is_loopback(str(client[0]))
        return await self.writes.handle(
            method, bucket, key, params, headers, receive, signed, secure
        )

    async def _route(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, list[str]],
        send: Send,
        receive: Receive,
        rid: str,
    ) -> None:
        if path == "/":
            names = sorted(self.runtime.buckets)
            await _respond(send, 200, _xml(rid), s3xml.list_buckets(names, STARTED), method)
            return
        params, name, key = _target(path, query)
        bucket = self.runtime.buckets.get(name)
        if bucket is None:
            raise S3Failure(404, "NoSuchBucket", "The specified bucket does not exist")
        if not key:
            await self._bucket_op(bucket, method, params, send, rid)
            return
        await self._object(bucket, key, method, params, headers, send, receive, rid)

    # ------------------------------------------------------------------ buckets

    async def _bucket_op(
        self, bucket: Bucket, method: str, params: dict[str, str], send: Send, rid: str
    ) -> None:
        region = [("x-amz-bucket-region", self.cfg.region)]
        if method == "HEAD":
            await _respond(send, 200, [*_xml(rid), *region], b"", method)
            return
        if "uploads" in params:
            await self._uploads(bucket, params, send, rid)
            return
        unknown = set(params) - _BUCKET_QUERIES
        if unknown:
            raise S3Failure(501, "NotImplemented", f"not implemented: {sorted(unknown)[0]}")
        if "location" in params:
            await _respond(send, 200, _xml(rid), s3xml.location(self.cfg.region), method)
            return
        v2 = params.get("list-type") == "2"
        prefix = params.get("prefix", "")
        delimiter = params.get("delimiter", "")
        url = params.get("encoding-type") == "url"
        if "encoding-type" in params and not url:
            raise S3Failure(400, "InvalidArgument", "Invalid Encoding Method specified in Request")
        try:
            max_keys = min(1000, int(params.get("max-keys", "1000")))
            if max_keys < 0:
                raise ValueError
        except ValueError:
            raise S3Failure(
                400, "InvalidArgument", "max-keys must be a non-negative integer"
            ) from None
        token = params.get("continuation-token", "") if v2 else ""
        start_after = params.get("start-after", "") if v2 else params.get("marker", "")
        after, after_prefix = start_after, False
        if token:
            try:
                after, after_prefix = decode_token(token)
            except ValueError:
                raise S3Failure(
                    400, "InvalidArgument", "The continuation token provided is incorrect"
                ) from None
        if after and after < prefix and not prefix.startswith(after):
            after = ""
        try:
            page = await bucket.page(prefix, delimiter, after, after_prefix, max_keys)
        except Unavailable as exc:
            raise S3Failure(503, "ServiceUnavailable", str(exc), [("retry-after", "1")]) from None
        next_token = encode_token(page.last, page.last_is_prefix) if page.truncated else ""
        try:
            body = s3xml.list_objects(
                v2=v2,
                bucket=bucket.name,
                prefix=prefix,
                delimiter=delimiter,
                max_keys=max_keys,
                url=url,
                contents=page.contents,
                prefixes=page.prefixes,
                truncated=page.truncated,
                start_after=start_after if v2 else "",
                token=token,
                next_token=next_token,
                marker=start_after,
                next_marker=page.last if page.truncated and delimiter else "",
            )
        except s3xml.NotXmlSafe:
            raise S3Failure(
                400, "InvalidArgument", "a key cannot be written in XML: use encoding-type=url"
            ) from None
        await _respond(send, 200, _xml(rid), body, method)

    async def _uploads(self, bucket: Bucket, params: dict[str, str], send: Send, rid: str) -> None:
        """ListMultipartUploads: this gateway's uploads in progress (a read-only bucket has
        none, and answers an empty list as S3 does for a bucket without any)."""
        unknown = sorted(
            p for p in params if p not in uploadlist.PARAMS and not p.lower().startswith("x-amz-")
        )
        if unknown:
            raise S3Failure(501, "NotImplemented", f"not implemented: {unknown[0]}")
        uploads = self.writes.in_progress(bucket) if self.cfg.buckets[bucket.name].writable else []
        body = uploadlist.answer(bucket.name, uploads, params)
        await _respond(send, 200, _xml(rid), body)

    # ------------------------------------------------------------------ objects

    async def _object(
        self,
        bucket: Bucket,
        key: str,
        method: str,
        params: dict[str, str],
        headers: dict[str, list[str]],
        send: Send,
        receive: Receive,
        rid: str,
    ) -> None:
        if method == "GET" and "uploadId" in params and "partNumber" not in params:
            # ListParts. A read-only bucket has no upload in progress: S3's answer for an
            # upload id it does not know.
            if not self.cfg.buckets[bucket.name].writable:
                raise SpoolError(404, "NoSuchUpload", "The specified upload does not exist.")
            reply = self.writes.list_parts(bucket, key, params["uploadId"], params)
            await _respond(
                send, reply.status, [("x-amz-request-id", rid), *reply.headers], reply.body
            )
            return
        if "versionId" in params or "uploadId" in params or "partNumber" in params:
            raise S3Failure(501, "NotImplemented", "versions and parts are not served")
        unknown = sorted(
            p for p in params if p not in _OBJECT_QUERIES and not p.lower().startswith("x-amz-")
        )
        if unknown:
            raise S3Failure(501, "NotImplemented", f"not implemented: {unknown[0]}")
        try:
            version = await bucket.resolve(key)
        except NotFound:
            raise S3Failure(404, "NoSuchKey", "The specified key does not exist.") from None
        except InvalidKey as exc:
            raise S3Failure(400, "InvalidArgument", str(exc)) from None
        except Unavailable as exc:
            raise S3Failure(503, "ServiceUnavailable", str(exc), [("retry-after", "1")]) from None
        status = _conditions(version, headers)
        base = [
            ("x-amz-request-id", rid),
            ("etag", version.etag),
            ("last-modified", s3xml.http_date(version.modified)),
            ("accept-ranges", "bytes"),
        ]
        if status is not None:
            if status == 304:
                await _respond(send, 304, base, b"", "HEAD")
                return
            raise S3Failure(
                412,
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
            )
        start, end, ranged = _range(_header(headers, "range"), version.size)
        if ranged is None:
            raise S3Failure(
                416,
                "InvalidRange",
                "The requested range is not satisfiable",
                [("content-range", f"bytes */{version.size}")],
            )
        hdrs = [*base, ("content-length", str(end - start))]
        code = 206 if ranged else 200
        if ranged:
            hdrs.append(("content-range", f"bytes {start}-{end - 1}/{version.size}"))
        if not version.verified:
            hdrs.append(("x-daulat-verified", "false"))
        if method == "HEAD":
            desc = await described(
                version, self.runtime.health, lambda s: bucket.is_quarantined(s, version)
            )
            hdrs += _description(desc, params)
            await send({"type": "http.response.start", "status": code, "headers": _enc(hdrs)})
            await send({"type": "http.response.body", "body": b""})
            return
        read = VerifiedRead(
            version,
            start,
            end,
            self.runtime.health,
            self.runtime.events,
            bucket.identities,
            self.runtime.budget,
            skip=lambda s: bucket.is_quarantined(s, version),
            missing=lambda s: bucket.missing(s, version),
        )
        try:
            await read.open()
        except Unavailable as exc:
            await read.aclose()
            raise S3Failure(503, "ServiceUnavailable", str(exc), [("retry-after", "1")]) from None
        # The headers of the replica the response begins from (a failover later goes on
        # with the same bytes, and the headers are sent by then).
        hdrs += _description(read.described, params)
        await send({"type": "http.response.start", "status": code, "headers": _enc(hdrs)})
        await self._stream(read, send, receive, version)

    async def _stream(
        self, read: VerifiedRead, send: Send, receive: Receive, version: Version
    ) -> None:
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        body = read.body()
        try:
            async for piece in body:
                if gone.is_set():
                    return
                if len(piece) > 2 * SEND_TAIL:
                    # The piece's last bytes go as a copy of their own: by the next send the
                    # server has drained its buffer to within them (uvicorn waits for that),
                    # so the piece itself is no longer held and its budget is truly free.
                    head, tail = piece[:-SEND_TAIL], bytes(piece[-SEND_TAIL:])
                    await send({"type": "http.response.body", "body": head, "more_body": True})
                    piece = tail
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The response cannot be completed with checked bytes: returning without ending
            # it makes the server close the connection, so the client sees a failed transfer.
            log.warning("cut the response for %r: %s", version.key, exc)
        finally:
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher
            await body.aclose()
            await read.aclose()


def _target(path: str, query: str) -> tuple[dict[str, str], str, str]:
    """(query parameters, bucket name, key) of a request, the key from the raw path."""
    try:
        params = dict(query_pairs(query))
    except UnicodeDecodeError:
        raise S3Failure(400, "InvalidArgument", "malformed query string") from None
    bucket_raw, _, key_raw = path[1:].partition("/")
    try:
        name = unquote_to_bytes(bucket_raw).decode("utf-8")
        key = unquote_to_bytes(key_raw).decode("utf-8")
    except UnicodeDecodeError:
        raise S3Failure(400, "InvalidURI", "the path is not valid UTF-8") from None
    return params, name, key


def _description(desc: Described, params: dict[str, str]) -> list[tuple[str, str]]:
    """The headers describing an object: its Content-Type and ``x-amz-meta-*`` as the replica
    holds them, and the ``response-*`` overrides of the request (S3 applies them to signed
    requests, and every request here is signed)."""
    out = [("content-type", desc.content_type or DEFAULT_CONTENT_TYPE)]
    # Values that are not ASCII as S3 answers them: RFC 2047 encoded words, never raw bytes.
    out += [(f"x-amz-meta-{name}", header_value(v)) for name, v in sorted(desc.user.items())]
    for param, header in _OVERRIDES.items():
        value = params.get(param)
        if value is None:
            continue
        if not _HEADER_VALUE.match(value):
            raise S3Failure(400, "InvalidArgument", f"{param} cannot be sent as a header")
        out = [(k, v) for k, v in out if k != header]
        out.append((header, value))
    return out


def _xml(rid: str) -> list[tuple[str, str]]:
    return [("content-type", "application/xml"), ("x-amz-request-id", rid)]


def _enc(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


async def _respond(
    send: Send, status: int, headers: list[tuple[str, str]], body: bytes, method: str = "GET"
) -> None:
    hdrs = [*headers]
    if status != 304:
        hdrs.append(("content-length", str(len(body))))
    await send({"type": "http.response.start", "status": status, "headers": _enc(hdrs)})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


def _header(headers: dict[str, list[str]], name: str) -> str | None:
    values = headers.get(name)
    return values[0] if values else None


def _etags(value: str) -> list[str]:
    return [v.strip().removeprefix("W/").strip('"') for v in value.split(",")]


def _date(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def _conditions(version: Version, headers: dict[str, list[str]]) -> int | None:
    """304 or 412 when a conditional header says so (RFC 9110 order), else None."""
    etag = version.etag.strip('"')
    modified = version.modified.replace(microsecond=0)
    if_match = _header(headers, "if-match")
    if if_match is not None:
        tags = _etags(if_match)
        if "*" not in tags and etag not in tags:
            return 412
    else:
        since = _date(_header(headers, "if-unmodified-since"))
        if since is not None and modified > since:
            return 412
    if_none = _header(headers, "if-none-match")
    if if_none is not None:
        tags = _etags(if_none)
        if "*" in tags or etag in tags:
            return 304
    else:
        since = _date(_header(headers, "if-modified-since"))
        if since is not None and modified <= since:
            return 304
    return None


def _range(value: str | None, size: int) -> tuple[int, int, bool | None]:
    """(start, end, ranged) for a Range header; ranged None: not satisfiable (416). A header
    S3 would ignore (several ranges, not bytes) serves the whole object."""
    if value is None:
        return 0, size, False
    m = _RANGE.match(value.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        return 0, size, False
    first, last = m.group(1), m.group(2)
    if not first:
        n = int(last)
        if n == 0 or size == 0:  # no last byte to give: S3 answers 416 as for bytes=0-0
            return 0, 0, None
        return max(0, size - n), size, True
    start = int(first)
    end = size if not last else min(size, int(last) + 1)
    if last and int(last) < start:
        return 0, size, False
    if start >= size:
        return 0, 0, None
    return start, end, True
