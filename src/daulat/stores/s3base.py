"""The core of :class:`~daulat.stores.s3raw.S3Raw`: its place (bucket, prefix, endpoint),
addressing of bucket keys, the worker threads and botocore calls, and how a provider's refusal
or a failed connection becomes a :mod:`daulat.errors` exception.

The other parts of the client build on :class:`S3Base` one after the other:
:mod:`.s3listing` (listings), :mod:`.s3keys` (which unusual keys the server keeps),
:mod:`.s3multipart` (multipart uploads and part-wise copies) and :mod:`.s3raw` (reads,
single puts, deletes, copies). The botocore client itself is built in :mod:`.s3client`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import functools
import hashlib
import re
import threading
import urllib.parse
from collections.abc import (
    Callable,
    Mapping,
)
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import google_crc32c

from daulat.errors import (
    AccessDenied,
    DaulatError,
    InvalidKey,
    NotFound,
    StoreError,
    Transient,
    Unsupported,
)
from daulat.stores.base import (
    MAX_KEY_BYTES,
)
from daulat.stores.objectstore import (
    PART_SIZE,
    SINGLE_PUT_MAX,
    normalise_etag,
)
from daulat.stores.s3client import _make_client
from daulat.stores.s3creds import (
    CredentialChain,
    S3Credentials,
    freeze_long_lived,
    thaw_long_lived,
)
from daulat.stores.timeouts import Liveness

T = TypeVar("T")
MiB = 1024 * 1024
GiB = 1024 * MiB
LIST_PAGE = 1000
MAX_PARTS = 10_000
MAX_PART = 5 * GiB
#: CopyObject handles sources up to 5 GiB; larger ones are copied part by part.
COPY_SINGLE_MAX = 5 * GiB
COPY_PART_SIZE = 512 * MiB
COPY_PARTS_IN_FLIGHT = 4
DEFAULT_TIMEOUT = 30.0
_META_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
PROBE_DIR = ".daulat/keyprobe-"
# Providers whose documentation says ListObjectsV2 returns keys in UTF-8 binary
# (lexicographic) order and starts after any string given as ``start-after``: AWS ("Objects are
# returned sorted in an ascending order of the respective key names", API_ListObjectsV2) and
# Alibaba OSS ("objects whose names are alphabetically after the value of start-after are
# returned", GetBucketV2). Other S3-compatible servers may list otherwise: SeaweedFS lists in
# directory-tree order, where "a/b" comes before "a-c".
BINARY_ORDER_PROVIDERS = frozenset({"aws", "alibaba"})


# ------------------------------------------------------------------------------ data


@dataclass(frozen=True, slots=True)
class MultipartUpload:
    """An upload begun and neither completed nor aborted (keys relative to the store)."""

    key: str
    upload_id: str
    initiated: dt.datetime


@dataclass(frozen=True, slots=True)
class ListedPart:
    """One part of an unfinished multipart upload, as ListParts reports it."""

    number: int
    size: int
    etag: str
    crc32c: str | None  # base64, as S3 gives it, when the upload was begun with CRC32C
    md5: str | None  # hex, when the ETag is a plain MD5 (32 hex digits)


@dataclass(frozen=True, slots=True)
class CopyResult:
    """A finished server-side copy. ``sha256`` (hex) only when the server computed it."""

    key: str
    size: int
    etag: str | None
    sha256: str | None = None


_ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "NoSuchBucket",
        "AccountProblem",
        "AllAccessDisabled",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "RequestTimeTooSkewed",
        "AuthorizationHeaderMalformed",
        "InvalidBucketName",
        "UserSuspended",
    }
)
# The bucket is in another region (or behind another endpoint) than the one configured.
_REGION_CODES = frozenset(
    {"PermanentRedirect", "IllegalLocationConstraintException", "AuthorizationHeaderMalformed"}
)
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "RequestLimitExceeded",
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "OperationAborted",
        "IncompleteBody",
        # The body arrived other than it was sent (a corrupted or cut connection): nothing was
        # stored, and sending it again may succeed.
        "BadDigest",
        "InvalidDigest",
        "XAmzContentSHA256Mismatch",
        "XAmzContentChecksumMismatch",
    }
)
_KEY_CODES = frozenset(
    {"KeyTooLongError", "InvalidObjectName", "XMinioInvalidObjectName", "InvalidKey"}
)
# What a server answers for a key it will not hold when it has no specific code (SeaweedFS:
# InvalidRequest for ".." segments and NUL).
_VAGUE_KEY_CODES = frozenset({"InvalidRequest", "InvalidArgument", "InvalidURI"})


def _segments(key: str) -> list[str]:
    return key.split("/")


@dataclass(frozen=True)
class _KeyKind:
    """A kind of legal S3 key that some servers do not keep exactly (refuse or rewrite)."""

    name: str
    what: str
    matches: Callable[[str], bool]
    probe: str  # a probe key of this kind, relative to the probe directory ("" = leading /)


_KINDS = (
    _KeyKind("leading", "a leading '/'", lambda k: k.startswith("/"), ""),
    _KeyKind("double", "an empty path segment ('//')", lambda k: "//" in k, "d//d"),
    _KeyKind("dotdot", "a '..' segment", lambda k: ".." in _segments(k), "x/../dotdot"),
    _KeyKind("dot", "a '.' segment", lambda k: "." in _segments(k), "x/./dot"),
    _KeyKind("backslash", "a backslash", lambda k: "\\" in k, "b\\b"),
    _KeyKind("nul", "a NUL character", lambda k: "\x00" in k, "n\x00n"),
    _KeyKind(
        "control",
        "a control character",
        lambda k: any((c < " " and c != "\x00") or c == "\x7f" for c in k),
        "c\x01c",
    ),
)
_PROBE_BODY = b"daulat key probe"


def _suspicious(full_key: str) -> bool:
    """Whether a server might refuse or rewrite this key (checked after writing it)."""
    return full_key.endswith("/") or any(kind.matches(full_key) for kind in _KINDS)


# ------------------------------------------------------------------------------ S3Base


class S3Base:
    """The state and transport every part of :class:`~daulat.stores.s3raw.S3Raw` shares
    (see that class for what the arguments mean)."""

    def __init__(
        self,
        *,
        name: str,
        endpoint: str | None,
        bucket: str,
        region: str = "us-east-1",
        prefix: str = "",
        virtual_hosted: bool = False,
        credentials: S3Credentials | CredentialChain | None = None,
        checksum: Literal["sha256", "md5"] = "sha256",
        timeout: float | None = DEFAULT_TIMEOUT,
        max_connections: int = 16,
        part_size: int = PART_SIZE,
        single_put_max: int = SINGLE_PUT_MAX,
        copy_single_max: int = COPY_SINGLE_MAX,
        copy_part_size: int = COPY_PART_SIZE,
        verify_keys: bool = True,
        list_page: int = LIST_PAGE,
        ordered_listing: bool = False,
    ) -> None:
        if not bucket:
            raise ValueError("bucket must not be empty")
        if endpoint is not None:
            parts = urllib.parse.urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"endpoint {endpoint!r} must be an http:// or https:// URL")
            hostname = parts.hostname
            if virtual_hosted and hostname.startswith(bucket + "."):
                hostname = hostname[len(bucket) + 1 :]  # the endpoint already names the bucket
            default_port = 443 if parts.scheme == "https" else 80
            port = parts.port or default_port
            if ":" in hostname:
                # An IPv6 literal: urlsplit drops its brackets, which a URL needs back.
                hostname = f"[{hostname}]"
            endpoint = (
                f"{parts.scheme}://{hostname}"
                + (f":{port}" if port != default_port else "")
                + parts.path.rstrip("/")
            )
        self.name = name
        self.bucket = bucket
        self.region = region
        self.prefix = prefix.strip("/")
        self.virtual_hosted = virtual_hosted
        if isinstance(credentials, CredentialChain):
            self.credentials = credentials
        else:
            self.credentials = CredentialChain(name, static=credentials)
        self.checksum = checksum
        self.timeout = timeout
        self.part_size = part_size
        self.single_put_max = single_put_max
        self.copy_single_max = copy_single_max
        self.copy_part_size = copy_part_size
        self.verify_keys = verify_keys
        self.list_page = list_page
        #: Whether the provider documents UTF-8 binary key order for listings and
        #: ``start-after`` (see :mod:`daulat.stores.ranges`).
        self.ordered_listing = ordered_listing
        #: The endpoint botocore is given (None: AWS's own, resolved by botocore).
        self.endpoint_url = endpoint
        #: The endpoint as daulat names it (AWS's regional one when not configured).
        self.endpoint = endpoint or _aws_endpoint(region)
        self._max_connections = max_connections
        self._executor: ThreadPoolExecutor | None = None
        self._client_obj: Any = None
        self._frozen = False  # this client's freeze_long_lived() is to be undone at close
        self._lock = threading.Lock()
        self._closed = False
        self._live = Liveness(timeout)
        self._kinds: dict[str, bool] | None = None  # key kind -> kept exactly (after a probe)
        self._probe_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    # -------------------------------------------------------------- addressing

    def full_key(self, key: str) -> str:
        """The bucket key of a store key; :class:`InvalidKey` if S3 cannot hold it at all."""
        full = f"{self.prefix}/{key}" if self.prefix else key
        if not key:
            raise InvalidKey(
                f"store {self.name!r} cannot hold an empty key", store=self.name, key=key
            )
        try:
            size = len(full.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidKey(
                f"store {self.name!r} cannot hold key {key!r}: not valid UTF-8",
                store=self.name,
                key=key,
            ) from None
        if size > MAX_KEY_BYTES:
            raise InvalidKey(
                f"store {self.name!r} cannot hold key {key!r}: longer than {MAX_KEY_BYTES} "
                "bytes with the store's prefix",
                store=self.name,
                key=key,
            )
        return full

    def _relative(self, full: str) -> str | None:
        if not self.prefix:
            return full
        head = self.prefix + "/"
        return full[len(head) :] if full.startswith(head) else None

    def _list_prefix(self, prefix: str) -> str:
        return f"{self.prefix}/{prefix}" if self.prefix else prefix

    def same_account(self, other: S3Base) -> bool:
        """Same endpoint, region and credentials: a server-side copy between the two works."""
        return (
            self.endpoint == other.endpoint
            and self.region == other.region
            and self.credentials.identity == other.credentials.identity
        )

    # -------------------------------------------------------------- transport

    def _pool_executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._closed:
                raise StoreError(f"store {self.name!r} is closed", store=self.name)
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self._max_connections, thread_name_prefix=f"s3raw-{self.name}"
                )
            return self._executor

    async def _run(self, fn: Callable[[], T]) -> T:
        cf: Future[T] = self._pool_executor().submit(fn)
        try:
            return await asyncio.wrap_future(cf)
        except asyncio.CancelledError:
            # The thread cannot be interrupted: when it finishes, drop a stream it opened.
            cf.add_done_callback(_discard_stream)
            raise

    def client(self) -> Any:
        """The botocore client (built on first use, in a worker thread: building it resolves
        the credentials, which may take a request to a metadata endpoint)."""
        with self._lock:
            if self._client_obj is not None:
                return self._client_obj
        self.credentials.botocore_credentials()  # AccessDenied when there are none
        client = _make_client(self)
        with self._lock:
            if self._client_obj is None:
                self._client_obj = client
                # Its objects live as long as the store: out of the collector's way until
                # close (daulat.stores.s3creds.freeze_long_lived).
                self._frozen = not self._closed and freeze_long_lived()
            else:
                client.close()
            return self._client_obj

    def _invoke(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        fn = getattr(self.client(), method)
        try:
            reply: dict[str, Any] = fn(Bucket=self.bucket, **params)
        except ClientError:
            self._live.answer()
            raise
        self._live.answer()
        return reply

    async def _call(self, op: str, key: str | None, method: str, **params: Any) -> dict[str, Any]:
        """One botocore call in a worker thread, its errors as :mod:`daulat.errors`."""
        from botocore.exceptions import ClientError

        try:
            return await self._run(functools.partial(self._invoke, method, params))
        except DaulatError:
            raise
        except ClientError as exc:
            raise self._client_error(exc, op=op, key=key) from None
        except Exception as exc:
            raise self._network_error(exc, op=op, key=key) from None

    def _where(self, op: str, key: str | None) -> str:
        return f"{op} {key!r}" if key is not None else op

    def _client_error(self, exc: Any, *, op: str, key: str | None) -> StoreError:
        """Map a refusal to daulat's hierarchy, naming only the S3 code or HTTP status."""
        response = exc.response or {}
        error = response.get("Error") or {}
        meta = response.get("ResponseMetadata") or {}
        status = int(meta.get("HTTPStatusCode") or 0)
        code: str | None = str(error.get("Code") or "") or None
        if code is not None and code.isdigit():
            code = None  # botocore's stand-in for an answer without a body (HEAD)
        reason = code or f"HTTP {status}"
        store, where = self.name, self._where(op, key)
        headers = meta.get("HTTPHeaders") or {}
        if code in _REGION_CODES or status == 301:
            region = headers.get("x-amz-bucket-region") or error.get("Region")
            if region and region != self.region:
                return AccessDenied(
                    f"store {store!r}: bucket {self.bucket!r} is in region {region!r}, not "
                    f"{self.region!r}: set region = {region!r} for this store (daulat reports "
                    "the country of the data from it)",
                    store=store,
                    key=key,
                )
            if code != "AuthorizationHeaderMalformed":
                return AccessDenied(
                    f"store {store!r} refused {where} ({reason}): the bucket is served from "
                    "another region or endpoint than the one configured",
                    store=store,
                    key=key,
                )
        if code == "NoSuchBucket":
            return AccessDenied(
                f"store {store!r} refused {where} ({reason}): the bucket/container does not exist",
                store=store,
                key=key,
            )
        if code in _ACCESS_CODES or status in (401, 403):
            return AccessDenied(
                f"store {store!r} refused {where} ({reason}): credentials may be wrong or "
                "revoked, or the bucket/account may be missing or disabled",
                store=store,
                key=key,
            )
        if status == 404 or code in ("NoSuchKey", "NoSuchUpload"):
            return NotFound(f"store {store!r}: {key!r} does not exist", store=store, key=key)
        if code in _KEY_CODES or (
            key is not None
            and status == 400
            and code in _VAGUE_KEY_CODES
            and op in ("put", "copy", "upload")
            and _suspicious(self._list_prefix(key))
        ):
            return InvalidKey(
                f"store {store!r} cannot hold key {key!r}: the server refused it ({reason})",
                store=store,
                key=key,
            )
        if code in _TRANSIENT_CODES or status in (408, 429) or status >= 500:
            return Transient(f"store {store!r}: {where} failed ({reason})", store=store, key=key)
        if status == 501 or code == "NotImplemented":
            return Unsupported(f"store {store!r} does not support {op}", store=store, key=key)
        return StoreError(f"store {store!r}: {where} failed ({reason})", store=store, key=key)

    def _network_error(self, exc: BaseException, *, op: str, key: str | None) -> StoreError:
        from botocore import exceptions as be
        from botocore.parsers import ResponseParserError

        where = self._where(op, key)
        if isinstance(exc, be.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
            return StoreError(
                f"store {self.name!r}: {where} failed (TLS certificate not trusted)",
                store=self.name,
                key=key,
            )
        if isinstance(exc, be.NoCredentialsError):
            return AccessDenied(
                f"store {self.name!r}: no credentials found for {where}", store=self.name, key=key
            )
        timed_out = isinstance(exc, (be.ConnectTimeoutError, be.ReadTimeoutError, TimeoutError))
        refused = not timed_out and isinstance(
            exc, (be.EndpointConnectionError, ConnectionRefusedError)
        )
        if timed_out or refused:
            gone = self._live.unresponsive(
                refused=refused, store=self.name, key=key, where=f"{where} at {self.endpoint}"
            )
            if gone is not None:
                return gone
        if timed_out:
            limit = f"{self.timeout:g} s" if self.timeout else "the time limit"
            reason = f"no progress within {limit}"
        elif isinstance(exc, be.ProxyConnectionError):
            reason = "cannot connect to the proxy"
        elif refused:
            reason = "cannot connect"
        elif isinstance(exc, (OSError, be.HTTPClientError, be.IncompleteReadError)):
            reason = f"connection failed: {type(exc).__name__}"
        elif isinstance(exc, ResponseParserError):
            reason = "the server's answer is not S3 XML"
        else:
            reason = type(exc).__name__
        return Transient(
            f"store {self.name!r}: {where} failed ({reason})", store=self.name, key=key
        )

    # -------------------------------------------------------------- request parts

    def _metadata(self, metadata: Mapping[str, str] | None, key: str) -> dict[str, str]:
        checked: dict[str, str] = {}
        for name, value in (metadata or {}).items():
            if not _META_NAME.match(name) or not value.isascii() or not value.isprintable():
                raise StoreError(
                    f"store {self.name!r}: metadata {name!r} of {key!r} must be an ASCII "
                    "token with a printable ASCII value",
                    store=self.name,
                    key=key,
                )
            checked[name.lower()] = value
        return checked

    def _checksum_params(self, body: bytes | memoryview, sha256_hex: str) -> dict[str, str]:
        """The body's checksum, which the server checks before it stores anything."""
        if self.checksum == "md5":
            return {"ContentMD5": base64.b64encode(hashlib.md5(body).digest()).decode()}
        return {"ChecksumSHA256": base64.b64encode(bytes.fromhex(sha256_hex)).decode()}

    def _part_checksum(self, piece: bytes | bytearray | memoryview) -> dict[str, str]:
        """A part's checksum, which the server checks before it keeps the part."""
        if self.checksum == "md5":
            return {"ContentMD5": base64.b64encode(hashlib.md5(piece).digest()).decode()}
        crc = google_crc32c.value(piece if isinstance(piece, bytes) else bytes(piece))
        return {"ChecksumCRC32C": base64.b64encode(crc.to_bytes(4, "big")).decode()}

    async def _delete_full(self, full: str, key: str) -> None:
        # Only NoSuchKey is suppressed: a missing bucket is AccessDenied, not NotFound.
        with contextlib.suppress(NotFound):
            await self._call("delete", key, "delete_object", Key=full)

    # -------------------------------------------------------------- lifecycle

    async def close(self) -> None:
        """Release connections and threads. Unusable afterwards."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
            client, self._client_obj = self._client_obj, None
            frozen, self._frozen = self._frozen, False
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        if client is not None:
            client.close()
        if frozen:
            thaw_long_lived()


# ------------------------------------------------------------------------------ helpers


def _aws_endpoint(region: str) -> str:
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://s3.{region}.{suffix}"


def _discard_stream(cf: Future[Any]) -> None:
    if not cf.cancelled() and cf.exception() is None:
        result = cf.result()
        body = result.get("Body") if isinstance(result, dict) else None
        if body is not None:
            body.close()


def _utc(when: Any) -> dt.datetime:
    if isinstance(when, dt.datetime):
        if when.tzinfo is dt.UTC:
            return when  # listings: parsed as UTC already (once per listed object)
        return when.astimezone(dt.UTC) if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return dt.datetime.now(dt.UTC)


def _sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _etag(value: str | None) -> str | None:
    """ETags in daulat's one spelling (unquoted, see ``normalise_etag``): S3 quotes them in
    headers and XML, SeaweedFS's CopyObjectResult does not, and the engine compares a listed
    tag with the one recorded at put time."""
    return normalise_etag(value) if value else None
