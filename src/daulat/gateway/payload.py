"""A write's body as it arrives, decoded and checked against everything the client said of it.

What a body may promise, and how each promise is kept (every check that needs the whole
body is made after its last byte and *before* the end of the stream is handed on, so a store
being written never learns of an end it could complete: :mod:`daulat.gateway.fanout`):

- ``x-amz-content-sha256`` (signed with the request): the SHA-256 of the body, or
  ``UNSIGNED-PAYLOAD``, or an ``aws-chunked`` form. A hash that does not match is 400
  ``XAmzContentSHA256Mismatch``.
- ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``: ``aws-chunked``, each chunk signed, chained from the
  request's own signature; a chunk whose signature does not match is 403
  ``SignatureDoesNotMatch``.
- ``STREAMING-UNSIGNED-PAYLOAD-TRAILER``: ``aws-chunked`` without signatures, with a checksum
  trailer (``x-amz-checksum-crc32``, ``-crc32c``, ``-sha1``, ``-sha256``) checked at the end.
- ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER``: both: chunks signed as above, and the
  checksum trailer signed too (``x-amz-trailer-signature``, chained from the last chunk's
  signature over the trailer lines ``name:value\n``); a trailer whose signature does not
  match, or that carries none, is 403 ``SignatureDoesNotMatch``. It must declare its trailer
  (``x-amz-trailer``), as SDKs do.
- ``x-amz-checksum-*`` as a header, and ``Content-MD5``: checked (400 ``BadDigest``).
- ``x-amz-decoded-content-length``: the decoded size (400 ``IncompleteBody`` otherwise).

An unsigned body (``UNSIGNED-PAYLOAD``, presigned URLs, the unsigned trailer form) proves
nothing about who wrote its bytes: it is accepted only over TLS or from this machine
(loopback), where nobody on a network can alter it on its way, as botocore itself sends
unsigned bodies only over TLS. CRC64NVME checksums (sent by SDKs built with the AWS CRT) are
not checked here and refused (400), since no maintained Python library outside the CRT
computes them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import google_crc32c

from daulat.gateway.auth import AuthError, Signed
from daulat.gateway.s3xml import S3Failure
from daulat.stores.hashing import StreamHasher

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]

MiB = 1024 * 1024
#: The largest body one PutObject or UploadPart may carry (S3's own limit).
MAX_BODY = 5 * 1024 * MiB
#: Pieces handed on: the transport's small reads joined up to this size (fewer hand-offs to
#: the stores being written, each piece shared by all of them, never copied per store).
PIECE = 1 * MiB
UNSIGNED = "UNSIGNED-PAYLOAD"
SIGNED_CHUNKS = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
#: The payloads framed as aws-chunked, and those whose chunks are signed.
CHUNKED = (SIGNED_CHUNKS, UNSIGNED_TRAILER, SIGNED_TRAILER)
_SIGNED_CHUNKS = (SIGNED_CHUNKS, SIGNED_TRAILER)
_TRAILER_SIGNATURE = "x-amz-trailer-signature"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_LINE_MAX = 4096  # a chunk header or trailer line
_CHECKSUMS = ("crc32", "crc32c", "sha1", "sha256")


class BodyError(S3Failure):
    """The body is not what the request said it is."""


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...


class _Crc32:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


class _Crc32c:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = google_crc32c.extend(self.value, data)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


def _new_digest(name: str) -> _Digest:
    if name == "crc32":
        return _Crc32()
    if name == "crc32c":
        return _Crc32c()
    return hashlib.new(name)


@dataclass(frozen=True)
class Promises:
    """What a request says of its body (see the module docstring)."""

    payload: str  # x-amz-content-sha256 as signed
    signed: Signed
    md5: bytes | None = None  # Content-MD5, decoded
    checksum: tuple[str, bytes] | None = None  # x-amz-checksum-ALG header, decoded
    trailer: str | None = None  # the checksum the trailer will carry (ALG)
    decoded_length: int | None = None
    length: int | None = None  # Content-Length, when not aws-chunked

    @property
    def chunked(self) -> bool:
        return self.payload in CHUNKED


def header(headers: Mapping[str, Sequence[str]], name: str) -> str | None:
    """The first value of a header (names lower-case), or None."""
    values = headers.get(name)
    return values[0] if values else None


def _b64(value: str, name: str, size: int | None = None) -> bytes:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if not raw or (size is not None and len(raw) != size):
        code = "InvalidDigest" if name == "Content-MD5" else "InvalidRequest"
        raise BodyError(400, code, f"{name} is not a valid base64 digest")
    return raw


def _size(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    if not value.strip().isdigit():
        raise BodyError(400, "InvalidArgument", f"{name} is not a number")
    size = int(value)
    if size > MAX_BODY:
        raise BodyError(400, "EntityTooLarge", "the body is larger than 5 GiB")
    return size


def promises(signed: Signed, headers: Mapping[str, Sequence[str]], secure: bool) -> Promises:
    """Read what the request promises of its body. :class:`AuthError` (403) for an unsigned
    body over plain HTTP from another machine; :class:`BodyError` for promises that cannot
    be kept or checked."""
    payload = signed.payload
    if payload in (UNSIGNED, UNSIGNED_TRAILER) and not secure:
        raise AuthError(
            "AccessDenied",
            "an unsigned body is accepted only over TLS or from this machine: sign the "
            "payload (x-amz-content-sha256) or use https",
        )
    if payload.startswith("STREAMING-") and payload not in CHUNKED:
        raise BodyError(501, "NotImplemented", f"x-amz-content-sha256 {payload} is not accepted")
    if payload not in (UNSIGNED, *CHUNKED) and (
        len(payload) != 64 or any(c not in "0123456789abcdef" for c in payload)
    ):
        raise BodyError(400, "InvalidArgument", "x-amz-content-sha256 is not a SHA-256")
    md5 = header(headers, "content-md5")
    checksum = None
    for name in _CHECKSUMS:
        value = header(headers, f"x-amz-checksum-{name}")
        if value is not None:
            size = {"crc32": 4, "crc32c": 4, "sha1": 20, "sha256": 32}[name]
            checksum = (name, _b64(value, f"x-amz-checksum-{name}", size))
    if header(headers, "x-amz-checksum-crc64nvme") is not None:
        raise BodyError(400, "InvalidRequest", "CRC64NVME checksums are not checked here")
    trailer = None
    declared = header(headers, "x-amz-trailer")
    if declared is not None:
        name = declared.strip().lower().removeprefix("x-amz-checksum-")
        if name not in _CHECKSUMS or payload not in (UNSIGNED_TRAILER, SIGNED_TRAILER):
            raise BodyError(400, "InvalidRequest", f"trailer {declared!r} is not accepted")
        trailer = name
    elif payload == SIGNED_TRAILER:
        raise BodyError(400, "InvalidRequest", f"{SIGNED_TRAILER} needs x-amz-trailer")
    # The payload says how the body is framed (Content-Encoding: aws-chunked goes with it).
    chunked = payload in CHUNKED
    return Promises(
        payload=payload,
        signed=signed,
        md5=_b64(md5, "Content-MD5", 16) if md5 is not None else None,
        checksum=checksum,
        trailer=trailer,
        decoded_length=_size(header(headers, "x-amz-decoded-content-length"), "decoded length"),
        length=None if chunked else _size(header(headers, "content-length"), "Content-Length"),
    )


async def _raw(receive: Receive) -> AsyncIterator[bytes]:
    """The request body as the server hands it over (HTTP framing already undone)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BodyError(400, "IncompleteBody", "the client went away before its body ended")
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


class _Chunks:
    """``aws-chunked`` framing undone: each chunk's data handed on as it arrives, chunk
    signatures (:data:`SIGNED_CHUNKS`) checked, the trailer lines kept."""

    def __init__(self, p: Promises) -> None:
        self.p = p
        self.previous = p.signed.signature
        self.trailers: dict[str, str] = {}

    async def decode(self, raw: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        buf = bytearray()
        it = aiter(raw)

        async def more() -> None:
            piece = await anext(it, None)
            if piece is None:
                raise BodyError(400, "IncompleteBody", "the aws-chunked body ended early")
            buf.extend(piece)

        async def line() -> bytes:
            while (end := buf.find(b"\r\n")) < 0:
                if len(buf) > _LINE_MAX:
                    raise BodyError(400, "InvalidRequest", "malformed aws-chunked body")
                await more()
            out = bytes(buf[:end])
            del buf[: end + 2]
            return out

        while True:
            size_text, _, ext = (await line()).partition(b";")
            try:
                size = int(size_text, 16)
            except ValueError:
                raise BodyError(400, "InvalidRequest", "malformed aws-chunked body") from None
            given = ext.partition(b"chunk-signature=")[2].decode("latin-1").strip()
            if self.p.payload in _SIGNED_CHUNKS and not given:
                raise AuthError("SignatureDoesNotMatch", "a chunk of the body is not signed")
            h = hashlib.sha256()
            left = size
            while left:
                if not buf:
                    await more()
                take = bytes(buf[:left])
                del buf[: len(take)]
                left -= len(take)
                h.update(take)
                yield take
            if self.p.payload in _SIGNED_CHUNKS:
                self._check(given, h.hexdigest())
            if size == 0:
                break
            if await line() != b"":
                raise BodyError(400, "InvalidRequest", "malformed aws-chunked body")
        canonical = ""  # the trailer lines as their signature covers them
        signature: str | None = None
        while text := await line():  # trailers, up to the empty line
            name, sep, value = text.decode("latin-1").partition(":")
            if not sep:
                raise BodyError(400, "InvalidRequest", "malformed aws-chunked trailer")
            name, value = name.strip().lower(), value.strip()
            if name == _TRAILER_SIGNATURE:
                signature = value
                continue
            if signature is not None:
                raise BodyError(400, "InvalidRequest", "a trailer after the trailer's signature")
            self.trailers[name] = value
            canonical += f"{name}:{value}\n"
            if len(canonical) > _LINE_MAX:
                raise BodyError(400, "InvalidRequest", "malformed aws-chunked trailer")
        if self.p.payload == SIGNED_TRAILER:
            self._check_trailer(signature, canonical)
        if buf or await anext(it, None) is not None:
            raise BodyError(400, "InvalidRequest", "bytes after the end of the aws-chunked body")

    def _check_trailer(self, given: str | None, canonical: str) -> None:
        """The trailer's signature: chained from the last (empty) chunk's, over its lines."""
        if given is None:
            raise AuthError("SignatureDoesNotMatch", "the body's trailer is not signed")
        s = self.p.signed
        to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256-TRAILER",
                s.timestamp,
                s.scope,
                self.previous,
                hashlib.sha256(canonical.encode("latin-1")).hexdigest(),
            ]
        )
        expected = hmac.new(s.key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), given.encode("latin-1")):
            raise AuthError(
                "SignatureDoesNotMatch", "the trailer's signature does not match: body refused"
            )

    def _check(self, given: str, data_sha256: str) -> None:
        s = self.p.signed
        to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                s.timestamp,
                s.scope,
                self.previous,
                _EMPTY_SHA256,
                data_sha256,
            ]
        )
        expected = hmac.new(s.key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), given.encode()):
            raise AuthError(
                "SignatureDoesNotMatch", "a chunk's signature does not match: body refused"
            )
        self.previous = expected


async def body(receive: Receive, p: Promises, hasher: StreamHasher) -> AsyncIterator[bytes]:
    """The decoded body in pieces of up to :data:`PIECE`, each fed to ``hasher`` (whose
    SHA-256 is the body's); raises :class:`BodyError` or :class:`AuthError` as soon as a
    promise is broken, and at the latest before it ends."""
    chunks = _Chunks(p) if p.chunked else None
    source: AsyncIterator[bytes] = _raw(receive)
    if chunks is not None:
        source = chunks.decode(source)
    md5 = hashlib.md5(usedforsecurity=False) if p.md5 is not None else None
    sums: dict[str, _Digest] = {}
    for name in {p.checksum[0] if p.checksum else None, p.trailer} - {None, "sha256"}:
        assert name is not None
        sums[name] = _new_digest(name)
    limit = p.decoded_length if p.decoded_length is not None else p.length
    pending = bytearray()
    total = 0

    async def hand_on(piece: bytes) -> None:
        await hasher.update(piece)
        if md5 is not None:
            md5.update(piece)
        for d in sums.values():
            d.update(piece)

    async for raw in source:
        total += len(raw)
        if total > MAX_BODY or (limit is not None and total > limit):
            raise BodyError(400, "IncompleteBody", "the body is longer than it was said to be")
        pending += raw
        if len(pending) >= PIECE:
            piece = bytes(pending)
            pending.clear()
            await hand_on(piece)
            yield piece
    if limit is not None and total != limit:
        raise BodyError(400, "IncompleteBody", "the body is shorter than it was said to be")
    if pending:
        piece = bytes(pending)
        await hand_on(piece)
    else:
        piece = b""
    _check_end(p, hasher, md5, sums, chunks.trailers if chunks is not None else {})
    if piece:
        yield piece


def _check_end(
    p: Promises,
    hasher: StreamHasher,
    md5: Any,
    sums: Mapping[str, _Digest],
    trailers: Mapping[str, str],
) -> None:
    """Every promise about the whole body, checked once it is all in (before its end is
    handed on: see :func:`body`)."""
    sha256 = hasher.hexdigest()
    if p.payload not in (UNSIGNED, *CHUNKED) and p.payload != sha256:
        raise BodyError(
            400,
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
    if md5 is not None and md5.digest() != p.md5:
        raise BodyError(400, "BadDigest", "The Content-MD5 you specified did not match.")

    def value(name: str) -> bytes:
        return bytes.fromhex(sha256) if name == "sha256" else sums[name].digest()

    if p.checksum is not None and value(p.checksum[0]) != p.checksum[1]:
        raise BodyError(
            400, "BadDigest", f"The {p.checksum[0].upper()} you specified did not match."
        )
    if p.trailer is not None:
        given = trailers.get(f"x-amz-checksum-{p.trailer}")
        if given is None:
            raise BodyError(400, "InvalidRequest", "the declared checksum trailer is missing")
        if _b64(given, f"x-amz-checksum-{p.trailer}") != value(p.trailer):
            raise BodyError(
                400, "BadDigest", f"The {p.trailer.upper()} you specified did not match."
            )
