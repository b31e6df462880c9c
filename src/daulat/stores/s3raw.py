"""An S3 client (botocore) for what obstore cannot do, and a Store that falls back to it.

Why this exists: S3 keys are arbitrary UTF-8 (up to 1,024 bytes), and an exit tool must copy
every legal key faithfully. obstore 0.12.1 (Rust ``object_store`` paths) cannot:

* listing a bucket fails *as a whole* (``InvalidPathError``) when one key has a ``.``/``..``
  segment, an empty segment (``a//b``) or a control character;
* worse, a listing *succeeds* with silently renamed keys: ``/abs.txt`` is reported as
  ``abs.txt`` and a folder marker ``photos/`` as ``photos`` (a GET of either then gives 404);
* such keys cannot be addressed for GET/PUT/DELETE at all, or are rewritten the same way;
* there is no API to list or abort multipart uploads, nor to learn the upload id of its own
  multipart uploads, and ``copy`` works only within one bucket.

:class:`S3Raw` does those parts with a plain botocore S3 client, its blocking calls running on a
small thread pool of its own so the event loop never waits on a socket. botocore addresses every
legal key exactly: it percent-encodes keys byte by byte (``/`` and ``~`` kept) and does not
normalise ``.``/``..`` segments, empty segments or a leading ``/`` (checked against
``tests/s3fake.py``, which verifies every signature against the exact key, and moto). Listings
use ``encoding-type=url``, which also carries keys that XML 1.0 cannot (control characters).
Credentials come from the store's one chain (:mod:`daulat.stores.s3creds`), which obstore uses
too; proxies (``HTTPS_PROXY``/``NO_PROXY``) are botocore's (urllib3's) own handling.

Region redirects are *not* followed: the region of a store is what daulat reports as the
country of its data, so a bucket that answers from another region is a configuration error,
reported with the region the provider names (``x-amz-bucket-region``).

:class:`FallbackS3Store` is the Store daulat uses for S3: the fast obstore path for ordinary
keys, :class:`S3Raw` for keys obstore would refuse or rewrite, for *every* listing (an obstore
listing cannot be trusted, see above) and for streamed uploads, whose multipart upload id the
caller may record (``on_upload``) so that only daulat's own uploads are ever aborted.

Servers differ in what they keep. SeaweedFS, for one, stores ``a//b`` as ``a/b``, ``/x`` as
``x`` and ``a\\b`` as ``a/b``, and turns a non-empty ``dir/`` into an empty folder marker, all
with ``200 OK``. A silent rename could overwrite another object, so before the first write of a
key of such a kind :class:`S3Raw` *probes* the server once (tiny objects under
``.daulat/keyprobe-*``, removed again) and refuses kinds it does not keep exactly with
:class:`~daulat.errors.InvalidKey` before anything is written; after writing such a key it
checks the listing for the exact key and size.

The client is split by concern: :mod:`.s3base` (state, transport, errors), :mod:`.s3client`
(the botocore client), :mod:`.s3listing`, :mod:`.s3keys` (key fidelity), :mod:`.s3multipart`,
this module (reads, puts, deletes, copies) and :mod:`.s3fallback` (the Store). Names other
modules import from here are re-exported.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Mapping,
)
from typing import TYPE_CHECKING, Any, Literal

from daulat.errors import (
    ConfigError,
    DaulatError,
    StoreError,
    Unsupported,
)
from daulat.stores.base import (
    ObjectInfo,
    OnUpload,
    PutResult,
)
from daulat.stores.hashing import StreamHasher, body_digest, check_digest, hashed_by
from daulat.stores.objectstore import (
    PART_SIZE,
    READ_CHUNK,
    normalise_etag,
)
from daulat.stores.s3base import (
    BINARY_ORDER_PROVIDERS,
    COPY_PART_SIZE,
    COPY_SINGLE_MAX,
    MAX_PART,
    CopyResult,
    ListedPart,
    MultipartUpload,
    _etag,
    _suspicious,
    _utc,
)
from daulat.stores.s3client import _parse_contents as _parse_contents
from daulat.stores.s3client import _parse_timestamp as _parse_timestamp
from daulat.stores.s3creds import CredentialChain, S3Credentials
from daulat.stores.s3fallback import FallbackS3Store, unwrap_fallback
from daulat.stores.s3multipart import S3Multipart

if TYPE_CHECKING:
    from daulat.config import StoreConfig
    from daulat.stores.objectstore import ObstoreStore

__all__ = [
    "COPY_PART_SIZE",
    "COPY_SINGLE_MAX",
    "MAX_PART",
    "CopyResult",
    "FallbackS3Store",
    "ListedPart",
    "MultipartUpload",
    "S3Credentials",
    "S3Raw",
    "S3RawReader",
    "open_fallback_s3",
    "unwrap_fallback",
]


class S3Raw(S3Multipart):
    """An S3 client for one bucket (and key prefix) that addresses any legal key.

    Keys given to and returned by every method are relative to ``prefix`` (joined with ``/``,
    as obstore does), so an :class:`S3Raw` and an obstore store over the same bucket and prefix
    name objects alike. Errors are :mod:`daulat.errors` with secret-free messages: they name the
    store, the key and the provider's error code or HTTP status, never a header or the body.

    ``credentials``: fixed keys, a store's :class:`CredentialChain` (shared with its obstore
    client), or None for botocore's standard chain. ``endpoint`` None means AWS itself
    (botocore resolves the regional endpoint). ``checksum`` is how an upload proves its body
    to the server: ``"sha256"`` sends ``x-amz-checksum-sha256`` (AWS, SeaweedFS, MinIO),
    ``"md5"`` sends ``Content-MD5`` (servers without the newer checksum headers). Either way
    a body cut short or altered on the way is refused and nothing is stored. ``timeout`` is
    the request timeout in seconds *without progress* (no connection, no byte sent or
    received); None means none of daulat's own.

    Blocking calls run on a private pool of ``max_connections`` threads: not the loop's
    default executor, which hashing also uses and which has only ``cpu_count + 4`` threads.
    """

    @classmethod
    def from_config(
        cls,
        cfg: StoreConfig,
        env: Mapping[str, str] | None = None,
        *,
        chain: CredentialChain | None = None,
    ) -> S3Raw:
        """Resolve endpoint, region, addressing and credentials exactly as ``open_s3`` does
        (``chain``: the store's credential chain, when the caller built it already)."""
        from daulat.providers import load_catalogue

        profile = load_catalogue().provider(cfg.provider).s3
        region = cfg.region or "us-east-1"
        endpoint = cfg.endpoint
        virtual = cfg.addressing == "virtual"
        if endpoint is None and profile is not None:
            endpoint = profile.endpoint_for(region, cfg.endpoint_kind)
            if profile.virtual_hosted_style and cfg.addressing is None:
                virtual = True
        if endpoint is None and cfg.addressing is None:
            virtual = True  # AWS: virtual-hosted addressing, as its SDKs use
        # Providers without AWS's newer request features (no aws-chunked bodies) have no
        # x-amz-checksum-* either; Content-MD5 is understood everywhere.
        checksum: Literal["sha256", "md5"] = (
            "md5" if profile is not None and not profile.aws_chunked_encoding else "sha256"
        )
        try:
            return cls(
                name=cfg.name,
                endpoint=endpoint,
                bucket=cfg.bucket,
                # Signed for the region the provider's guide says (see open_s3_obstore).
                region=profile.signing_region_for(region) if profile is not None else region,
                prefix=cfg.prefix,
                virtual_hosted=virtual,
                credentials=chain or CredentialChain.for_store(cfg, env),
                checksum=checksum,
                timeout=cfg.request_timeout,
                ordered_listing=cfg.provider.value in BINARY_ORDER_PROVIDERS,
                part_size=cfg.part_size or PART_SIZE,
            )
        except ValueError:
            raise ConfigError(
                f"store {cfg.name!r}: cannot configure the S3 client (endpoint or bucket)"
            ) from None

    async def stat(self, key: str) -> tuple[ObjectInfo, dict[str, str], str | None]:
        """HEAD: the object's info, its user metadata (raw names) and content type."""
        full = self.full_key(key)
        self._check_known_kinds(full, key)
        reply = await self._call("head", key, "head_object", Key=full)
        return (
            self._info(key, int(reply.get("ContentLength") or 0), reply),
            dict(reply.get("Metadata") or {}),
            reply.get("ContentType"),
        )

    async def head(self, key: str) -> ObjectInfo:
        return (await self.stat(key))[0]

    def _info(self, key: str, size: int, reply: Mapping[str, Any]) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=size,
            modified=_utc(reply.get("LastModified")),
            etag=_etag(reply.get("ETag")),
            etag_scheme="s3",
        )

    async def get(self, key: str, *, start: int = 0, end: int | None = None) -> S3RawReader:
        """Stream ``[start, end)`` of an object (the Store contract for ranges and misses)."""
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"invalid range [{start}, {end})")
        full = self.full_key(key)
        self._check_known_kinds(full, key)
        if end is not None and end == start:
            info, meta, content_type = await self.stat(key)
            head = S3RawReader(info, meta, None, self)
            head.attributes = _attributes({"Metadata": meta, "ContentType": content_type})
            return head
        params: dict[str, Any] = {"Key": full}
        if start or end is not None:
            params["Range"] = f"bytes={start}-" + (str(end - 1) if end is not None else "")
        try:
            reply = await self._call("get", key, "get_object", **params)
        except StoreError as exc:
            if "InvalidRange" in str(exc) or "HTTP 416" in str(exc):
                info, meta, _ = await self.stat(key)
                if start >= info.size:
                    return S3RawReader(info, meta, None, self)
            raise
        size = int(reply.get("ContentLength") or 0)
        total = str(reply.get("ContentRange") or "").rpartition("/")[2]
        if total.isdigit():
            size = int(total)
        info = self._info(key, size, reply)
        reader = S3RawReader(info, dict(reply.get("Metadata") or {}), reply["Body"], self)
        reader.attributes = _attributes(reply)
        status = (reply.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if status == 200 and "Range" in params:  # the server ignored Range: cut it out here
            reader._skip, reader._limit = start, (end - start if end is not None else None)
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
        """Write an object atomically (the Store contract), hashing it while streaming.

        A body that ends within ``single_put_max`` goes as one PUT carrying its checksum; a
        longer one as a multipart upload of ``part_size`` parts (doubling every 1,000 parts,
        so 10,000 parts reach ~8 TiB), each part with its own checksum, aborted on any
        failure. ``on_upload(key, upload_id)`` is called once the upload exists and before
        its first part is sent, so the caller can record whose upload it is. ``metadata``
        names are sent as given (``x-amz-meta-NAME``).
        """
        full = self.full_key(key)
        await self._check_kinds(full, key)
        meta = self._metadata(metadata, key)
        # A body its caller hashes on the way (the copy engine does) is not hashed twice.
        shared = hashed_by(data)
        hasher = shared or StreamHasher()
        if isinstance(data, (bytes, bytearray, memoryview)):
            body = bytes(data)
            digest = await body_digest(body, sha256, prehashed=prehashed, store=self.name, key=key)
            result = await self._single_put(key, full, body, digest, meta)
        else:
            it = aiter(data)
            head: list[bytes] = []
            size = 0
            async for chunk in it:
                head.append(bytes(chunk))
                size += len(chunk)
                if size > self.single_put_max:
                    result = await self._multipart_put(
                        key, full, head, it, hasher, sha256, meta, on_upload, fed=shared is not None
                    )
                    break
            else:
                body = b"".join(head)
                if shared is None:
                    await hasher.update(body)
                check_digest(hasher, sha256, store=self.name, key=key)
                result = await self._single_put(key, full, body, hasher.hexdigest(), meta)
        if self.verify_keys and _suspicious(full):
            await self._verify_written(key, full, result.size)
        return result

    async def _single_put(
        self, key: str, full: str, body: bytes, sha256_hex: str, meta: Mapping[str, str]
    ) -> PutResult:
        reply = await self._call(
            "put",
            key,
            "put_object",
            Key=full,
            Body=body,
            Metadata=dict(meta),
            **self._checksum_params(body, sha256_hex),
        )
        return PutResult(key=key, size=len(body), sha256=sha256_hex, etag=_etag(reply.get("ETag")))

    async def delete(self, key: str) -> None:
        """Delete an object; succeeds when it is already gone. A key of a kind the server
        cannot hold raises :class:`InvalidKey`, as its put does."""
        full = self.full_key(key)
        if self.verify_keys and _suspicious(full):
            # A server that rewrites such keys would delete *another* object.
            await self._probe()
            self._check_known_kinds(full, key)
        await self._delete_full(full, key)

    async def copy_object(
        self,
        src_key: str,
        dst_key: str,
        *,
        source: S3Raw | None = None,
        size: int | None = None,
        metadata: Mapping[str, str] | None = None,
        if_match: str | None = None,
        on_upload: OnUpload | None = None,
    ) -> CopyResult:
        """Copy ``source``'s ``src_key`` (default: this bucket) to ``dst_key`` on the server.

        Only when both sides share endpoint and credentials (:meth:`same_account`), also
        across buckets. User metadata and content type are kept unless ``metadata`` replaces
        them. Objects above ``copy_single_max`` (5 GiB, S3's CopyObject limit) are copied
        part by part with UploadPartCopy, each part pinned to the source's ETag so a source
        changed mid-copy fails instead of mixing versions. ``size`` (from a listing) saves a
        HEAD; ``if_match`` pins the source ETag for the single-request copy too. The result's
        ``sha256`` is set when the server computed one (AWS does on request).
        """
        src = source or self
        if not self.same_account(src):
            raise Unsupported(
                f"store {self.name!r} cannot copy server-side from {src.name!r}: different "
                "endpoint or credentials",
                store=self.name,
                key=dst_key,
            )
        src_full = src.full_key(src_key)
        dst_full = self.full_key(dst_key)
        await self._check_kinds(dst_full, dst_key)
        src_meta: dict[str, str] = {}
        content_type: str | None = None
        if size is None or size > self.copy_single_max:
            info, src_meta, content_type = await src.stat(src_key)
            size, if_match = info.size, if_match or info.etag
        if if_match:
            if_match = f'"{normalise_etag(if_match)}"'  # daulat keeps tags unquoted
        copy_source = {"Bucket": src.bucket, "Key": src_full}
        if size > self.copy_single_max:
            result = await self._copy_parts(
                dst_key,
                dst_full,
                copy_source,
                size,
                metadata if metadata is not None else src_meta,
                content_type if metadata is None else None,
                if_match,
                on_upload,
            )
        else:
            params: dict[str, Any] = {"Key": dst_full, "CopySource": copy_source}
            if metadata is not None:
                params["MetadataDirective"] = "REPLACE"
                params["Metadata"] = self._metadata(metadata, dst_key)
            if if_match:
                params["CopySourceIfMatch"] = if_match
            if self.checksum == "sha256":
                params["ChecksumAlgorithm"] = "SHA256"
            reply = await self._call("copy", dst_key, "copy_object", **params)
            found = reply.get("CopyObjectResult") or {}
            result = CopyResult(
                key=dst_key,
                size=size,
                etag=_etag(found.get("ETag")),
                sha256=_b64_to_hex(found.get("ChecksumSHA256") or ""),
            )
        if self.verify_keys and _suspicious(dst_full):
            await self._verify_written(dst_key, dst_full, size)
        return result


class S3RawReader:
    """Streaming read of one object through :class:`S3Raw` (an ObjectReader)."""

    def __init__(
        self, info: ObjectInfo, metadata: Mapping[str, str], stream: Any, raw: S3Raw
    ) -> None:
        self.info = info
        self.metadata: Mapping[str, str] = metadata
        # The store's own description, as obstore's reader reports it (daulat.stores.described).
        self.attributes: Mapping[str, str] = {}
        self._stream = stream  # botocore's StreamingBody
        self._raw = raw
        self._skip = 0
        self._limit: int | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        skip, limit = self._skip, self._limit
        try:
            while limit is None or limit > 0:
                try:
                    chunk = await self._raw._run(functools.partial(stream.read, READ_CHUNK))
                except DaulatError:
                    raise
                except Exception as exc:
                    raise self._raw._network_error(exc, op="read", key=self.info.key) from None
                if not chunk:
                    return
                if skip:
                    chunk, skip = chunk[skip:], max(0, skip - len(chunk))
                if limit is not None:
                    chunk, limit = chunk[:limit], limit - min(limit, len(chunk))
                if chunk:
                    yield chunk
        finally:
            stream.close()  # after EOF the connection is back in the pool already

    async def read_all(self) -> bytes:
        return b"".join([chunk async for chunk in self])


def _b64_to_hex(text: str) -> str | None:
    if not text:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        return None
    return raw.hex() if len(raw) == 32 else None


def open_fallback_s3(
    cfg: StoreConfig, fast: ObstoreStore, env: Mapping[str, str] | None = None
) -> FallbackS3Store:
    """Wrap the obstore store ``open_s3`` built with an :class:`S3Raw` for the same place."""
    return FallbackS3Store(fast, S3Raw.from_config(cfg, env))


def _attributes(reply: Mapping[str, Any]) -> dict[str, str]:
    """A reply's Content-Type and user metadata, named as obstore names its attributes."""
    out = {str(k): str(v) for k, v in (reply.get("Metadata") or {}).items()}
    if reply.get("ContentType"):
        out["Content-Type"] = str(reply["ContentType"])
    return out
