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
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import datetime as dt
import functools
import hashlib
import re
import secrets
import threading
import urllib.parse
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Mapping,
    Sequence,
)
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from xml.etree import ElementTree

import google_crc32c

from daulat.errors import (
    AccessDenied,
    ConfigError,
    DaulatError,
    InvalidKey,
    NotFound,
    StoreError,
    Transient,
    Unresponsive,
    Unsupported,
)
from daulat.stores.base import (
    MAX_KEY_BYTES,
    Capabilities,
    ObjectInfo,
    ObjectReader,
    OnUpload,
    PutResult,
    Store,
    portable_key_problem,
)
from daulat.stores.hashing import StreamHasher, body_digest, check_digest, hashed_by
from daulat.stores.listguard import ListingGuard
from daulat.stores.objectstore import (
    METADATA_PREFIX,
    PART_SIZE,
    PARTS_IN_FLIGHT,
    READ_CHUNK,
    SINGLE_PUT_MAX,
    normalise_etag,
)
from daulat.stores.ranges import Batch, Level
from daulat.stores.resumable import OnSession, ResumeStats, Session, UploadGone
from daulat.stores.s3creds import CredentialChain, S3Credentials
from daulat.stores.timeouts import Refusals

if TYPE_CHECKING:
    from daulat.config import StoreConfig
    from daulat.stores.objectstore import ObstoreStore

__all__ = [
    "CopyResult",
    "FallbackS3Store",
    "MultipartUpload",
    "S3Credentials",
    "S3Raw",
    "open_fallback_s3",
    "unwrap_fallback",
]

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
#: A timeout of None means: no limit of daulat's own (botocore needs a number).
NO_TIMEOUT = 24 * 3600.0
_META_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_KEY_ELEMENT = re.compile(rb"<Key>.*?</Key>", re.DOTALL)
_CONTENTS_ELEMENT = re.compile(rb"<Contents>.*?</Contents>", re.DOTALL)
PROBE_DIR = ".daulat/keyprobe-"
# Operations whose answers carry keys URL-encoded (listings); every other answer that echoes a
# key does so raw, which XML 1.0 cannot carry when the key holds a control character.
_LISTINGS = frozenset({"ListObjectsV2", "ListObjects", "ListMultipartUploads"})
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


# ------------------------------------------------------------------------------ errors

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


# ------------------------------------------------------------------------------ S3Raw




# ------------------------------------------------------------------------------ S3Raw


class S3Raw:
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
            endpoint = f"{parts.scheme}://{hostname}" + (
                f":{port}" if port != default_port else ""
            ) + parts.path.rstrip("/")
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
        self._lock = threading.Lock()
        self._closed = False
        self._answered = False  # whether the endpoint has ever answered a request
        self._refusals = Refusals(timeout)
        self._kinds: dict[str, bool] | None = None  # key kind -> kept exactly (after a probe)
        self._probe_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

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

    def same_account(self, other: S3Raw) -> bool:
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
            else:
                client.close()
            return self._client_obj

    def _invoke(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        fn = getattr(self.client(), method)
        try:
            reply: dict[str, Any] = fn(Bucket=self.bucket, **params)
        except ClientError:
            self._answered = True
            raise
        self._answered = True
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
        if isinstance(exc, (be.ConnectTimeoutError, be.ReadTimeoutError, TimeoutError)):
            limit = f"{self.timeout:g} s" if self.timeout else "the time limit"
            if not self._answered:
                # Not one answer since this store was opened: an endpoint that accepts
                # connections and never answers. Retrying would only wait again.
                return Unresponsive(
                    f"store {self.name!r}: {where} failed: no answer within {limit} from "
                    f"{self.endpoint} (request_timeout); is the endpoint right and up?",
                    store=self.name,
                    key=key,
                )
            reason = f"no progress within {limit}"
        elif isinstance(exc, be.ProxyConnectionError):
            reason = "cannot connect to the proxy"
        elif isinstance(exc, (be.EndpointConnectionError, ConnectionRefusedError)):
            if not self._answered and self._refusals.expired():
                return Unresponsive(
                    f"store {self.name!r}: {where} failed: cannot connect to {self.endpoint} "
                    f"(refused or unreachable for {self._refusals.describe()}, "
                    "request_timeout); is the endpoint right and up?",
                    store=self.name,
                    key=key,
                )
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

    # -------------------------------------------------------------- listing

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

    # -------------------------------------------------------------- reads

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
            info, meta, _ = await self.stat(key)
            return S3RawReader(info, meta, None, self)
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
        status = (reply.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if status == 200 and "Range" in params:  # the server ignored Range: cut it out here
            reader._skip, reader._limit = start, (end - start if end is not None else None)
        return reader

    # -------------------------------------------------------------- writes

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

    # -------------------------------------------------------------- resumable uploads

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
            await self._call(
                "abort", key, "abort_multipart_upload", Key=full, UploadId=upload_id
            )

    async def delete(self, key: str) -> None:
        """Delete an object; succeeds when it is already gone (or cannot exist here)."""
        full = self.full_key(key)
        if self.verify_keys and _suspicious(full):
            # A server that rewrites such keys would delete *another* object.
            await self._probe()
            if self._unkept_kind(full) is not None:
                return
        await self._delete_full(full, key)

    async def _delete_full(self, full: str, key: str) -> None:
        # Only NoSuchKey is suppressed: a missing bucket is AccessDenied, not NotFound.
        with contextlib.suppress(NotFound):
            await self._call("delete", key, "delete_object", Key=full)

    # -------------------------------------------------------------- key fidelity

    def _unkept_kind(self, full: str) -> _KeyKind | None:
        if self._kinds is None:
            return None
        for kind in _KINDS:
            if kind.matches(full) and not self._kinds.get(kind.name, True):
                return kind
        return None

    def _check_known_kinds(self, full: str, key: str) -> None:
        """Reads: a key of a kind the server is known to rewrite would read another object."""
        if self.verify_keys and self._unkept_kind(full) is not None:
            raise NotFound(
                f"store {self.name!r}: {key!r} does not exist (the server cannot hold such keys)",
                store=self.name,
                key=key,
            )

    async def _check_kinds(self, full: str, key: str) -> None:
        if not self.verify_keys or not any(kind.matches(full) for kind in _KINDS):
            return
        await self._probe()
        kind = self._unkept_kind(full)
        if kind is not None:
            raise InvalidKey(
                f"store {self.name!r} cannot hold key {key!r}: the server refuses or rewrites "
                f"keys with {kind.what} (found by a probe), so nothing was written",
                store=self.name,
                key=key,
            )

    async def key_kinds(self) -> dict[str, bool]:
        """Which kinds of unusual key this server keeps exactly (probing it once)."""
        await self._probe()
        assert self._kinds is not None
        return dict(self._kinds)

    async def _probe(self) -> None:
        """Write one tiny object per kind of unusual key, see which are listed exactly as
        written, and delete whatever the probes left (all under a random directory)."""
        if self._kinds is not None:
            return
        loop = asyncio.get_running_loop()
        if self._probe_lock is None or self._probe_lock[0] is not loop:
            self._probe_lock = (loop, asyncio.Lock())
        async with self._probe_lock[1]:
            if self._kinds is not None:
                return
            directory = self._list_prefix(PROBE_DIR + secrets.token_hex(8) + "/")
            keys: dict[str, str] = {}
            for kind in _KINDS:
                if kind.name == "leading":
                    if self.prefix:
                        continue  # a store key cannot start the bucket key with '/'
                    keys[kind.name] = "/" + directory + "leading"
                else:
                    keys[kind.name] = directory + kind.probe
            refused: dict[str, StoreError | None] = {}
            try:
                # One after the other: SeaweedFS takes ~1 s when parallel PUTs create the
                # same new directory, and 7 small PUTs in a row take ~30 ms.
                for name, full in keys.items():
                    try:
                        await self._probe_put(full)
                        refused[name] = None
                    except Transient:
                        raise
                    except StoreError as exc:
                        refused[name] = exc
                denied = [e for e in refused.values() if isinstance(e, AccessDenied)]
                if len(denied) == len(refused):
                    raise denied[0]  # no write access at all, not a property of keys
                # A single refusal (a proxy that answers 403 to '..') only means that kind
                # of key cannot be written here.
                found = await self._probe_listing(directory)
                if "leading" in keys:
                    found |= await self._probe_listing("/" + directory)
            finally:
                await self._probe_cleanup(directory)
            self._kinds = {
                name: refused[name] is None and found.get(full) == len(_PROBE_BODY)
                for name, full in keys.items()
            }

    async def _probe_put(self, full: str) -> None:
        body = _PROBE_BODY
        await self._call(
            "probe",
            full,
            "put_object",
            Key=full,
            Body=body,
            **self._checksum_params(body, _sha256_hex(body)),
        )

    async def _probe_listing(self, full_prefix: str) -> dict[str, int]:
        found: dict[str, int] = {}
        token: tuple[str, str] | None = None
        while True:
            batch, token = await self._list_page(full_prefix, token, bucket_keys=True)
            found.update((o.key, o.size) for o in batch)
            if token is None:
                return found

    async def _probe_cleanup(self, directory: str) -> None:
        with contextlib.suppress(StoreError):
            found = await self._probe_listing(directory)
            if not self.prefix:
                found |= await self._probe_listing("/" + directory)
            for full in found:
                await self._delete_full(full, full)

    async def _verify_written(self, key: str, full: str, size: int) -> None:
        """After writing an unusual key: is it listed under exactly that key, at that size?"""
        batch, _ = await self._list_page(full, None, max_keys=1, bucket_keys=True)
        listed = {o.key: o.size for o in batch}
        if listed.get(full) == size:
            return
        if full in listed:  # kept the name, not the content (SeaweedFS: 'dir/' markers)
            await self._delete_full(full, key)
        raise InvalidKey(
            f"store {self.name!r} cannot hold key {key!r}: the server accepted it but does not "
            "list it as written (it may have stored it under another name)",
            store=self.name,
            key=key,
        )

    # -------------------------------------------------------------- multipart housekeeping


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

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        """Abort one upload (its parts are freed); succeeds when it is already gone."""
        await self._abort(self.full_key(key), upload_id, key=key)

    # -------------------------------------------------------------- server-side copy

    # -------------------------------------------------------------- server-side copy

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

    # -------------------------------------------------------------- lifecycle

    async def close(self) -> None:
        """Release connections and threads. Unusable afterwards."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
            client, self._client_obj = self._client_obj, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        if client is not None:
            client.close()


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
        digest = (
            await asyncio.to_thread(_md5_hex, view) if len(view) >= 4 * MiB else _md5_hex(view)
        )
        if digest != listed.md5:
            return None
        compared = True
    if not compared:
        return None
    part.body()  # release the buffer: nothing is sent
    return dict(ours or {})


def _md5_hex(data: memoryview) -> str:
    return hashlib.md5(data).hexdigest()


class S3RawReader:
    """Streaming read of one object through :class:`S3Raw` (an ObjectReader)."""

    def __init__(
        self, info: ObjectInfo, metadata: Mapping[str, str], stream: Any, raw: S3Raw
    ) -> None:
        self.info = info
        self.metadata: Mapping[str, str] = metadata
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


# ------------------------------------------------------------------------------ the Store


class FallbackS3Store:
    """The S3 Store: obstore for ordinary keys, :class:`S3Raw` for the rest and for listing.

    Routing: a key that :func:`~daulat.stores.base.portable_key_problem` rejects (obstore
    refuses or silently rewrites it) or that holds a backslash (some servers turn it into
    ``/``, so its write is checked) goes to :class:`S3Raw`; so does every streamed put (its
    multipart upload id is known, and its parts time out on no progress rather than on
    total time). Every other request goes to obstore, which costs less CPU per request. Listing always goes through :class:`S3Raw`: obstore fails on
    some keys and silently renames others (``/x`` → ``x``, ``dir/`` → ``dir``), and a
    rename cannot be detected from its output. Both paths write user metadata under the same
    names (``x-amz-meta-daulat_NAME``), so either reads what the other wrote.

    Non-portable keys are *accepted* where the server keeps them (AWS does); where it would
    refuse or rewrite them the put raises :class:`InvalidKey` and writes nothing.
    """

    def __init__(self, fast: ObstoreStore, raw: S3Raw) -> None:
        self.fast = fast
        self.raw = raw

    @property
    def name(self) -> str:
        return self.fast.name

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(user_metadata=True, server_side_copy=True)

    @property
    def location(self) -> str:
        """Where the store's objects are: endpoint, bucket and key prefix (journal records
        of uploads are kept per location, not per configured name)."""
        raw = self.raw
        return f"{raw.endpoint}/{raw.bucket}/{raw.prefix}"

    @staticmethod
    def needs_raw(key: str) -> bool:
        """Whether ``key`` takes the slow path (obstore cannot address it faithfully)."""
        return portable_key_problem(key) is not None or "\\" in key

    async def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        # Closed with this generator: a caller that stops early (a probe reads one page) must
        # not leave the inner listing fetching its next page against a store about to close.
        async with contextlib.aclosing(self.raw.list_all(prefix)) as pages:
            async for batch in pages:
                yield batch

    @property
    def ordered(self) -> bool:
        """Whether :meth:`list_range` is exact here (see :mod:`daulat.stores.ranges`)."""
        return self.raw.ordered_listing

    async def list_range(
        self, prefix: str = "", *, start_after: str | None = None, end_before: str | None = None
    ) -> AsyncGenerator[Batch, None]:
        async with contextlib.aclosing(
            self.raw.list_all(prefix, start_after=start_after, end_before=end_before)
        ) as pages:
            async for batch in pages:
                yield batch

    async def list_after(
        self, prefix: str, after: str, *, first_page: int | None = None
    ) -> AsyncGenerator[builtins.list[ObjectInfo], None]:
        """See :meth:`S3Raw.list_after` (the gateway's ListObjects pages)."""
        async with contextlib.aclosing(
            self.raw.list_after(prefix, after, first_page=first_page)
        ) as pages:
            async for batch in pages:
                yield batch

    async def list_level(self, prefix: str = "") -> AsyncGenerator[Level, None]:
        async with contextlib.aclosing(self.raw.list_level(prefix)) as pages:
            async for page in pages:
                yield page

    async def head(self, key: str) -> ObjectInfo:
        if self.needs_raw(key):
            return await self.raw.head(key)
        return await self.fast.head(key)

    async def get(self, key: str, *, start: int = 0, end: int | None = None) -> ObjectReader:
        if not self.needs_raw(key):
            return await self.fast.get(key, start=start, end=end)
        reader = await self.raw.get(key, start=start, end=end)
        reader.metadata = _strip_prefix(reader.metadata)
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
        """Bytes of a portable key go to obstore (one PUT); streams and other keys to
        :class:`S3Raw`, whose multipart uploads report their upload id to ``on_upload``."""
        if not self.needs_raw(key) and isinstance(data, (bytes, bytearray, memoryview)):
            return await self.fast.put(
                key, data, sha256=sha256, metadata=metadata, prehashed=prehashed
            )
        named = {METADATA_PREFIX + k: v for k, v in (metadata or {}).items()}
        return await self.raw.put(
            key, data, sha256=sha256, metadata=named, prehashed=prehashed, on_upload=on_upload
        )

    async def delete(self, key: str) -> None:
        if self.needs_raw(key):
            await self.raw.delete(key)
        else:
            await self.fast.delete(key)

    # -------------------------------------------------------------- resumable uploads

    @property
    def part_size(self) -> int:
        return self.raw.part_size

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
        """See :meth:`S3Raw.put_resumable` (metadata named as :meth:`put` names it)."""
        named = {METADATA_PREFIX + k: v for k, v in (metadata or {}).items()}
        return await self.raw.put_resumable(
            key, data, metadata=named, session=session, on_session=on_session, stats=stats
        )

    async def abort_session(self, key: str, session: Session) -> None:
        await self.raw.abort_session(key, session)

    async def close(self) -> None:
        await self.fast.close()
        await self.raw.close()

    # -------------------------------------------------------------- beyond the protocol
    # (the abilities of daulat.stores.abilities: UploadCleanup, ServerSideCopy)

    def list_multipart_uploads(
        self, prefix: str = ""
    ) -> AsyncIterator[builtins.list[MultipartUpload]]:
        """See :meth:`S3Raw.list_multipart_uploads` (``list`` here is this class's method)."""
        return self.raw.list_multipart_uploads(prefix)

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        """See :meth:`S3Raw.abort_multipart_upload`."""
        await self.raw.abort_multipart_upload(key, upload_id)

    def can_copy_from(self, source: Store) -> bool:
        """Whether :meth:`copy_from` works from ``source`` (same endpoint and credentials)."""
        return isinstance(source, FallbackS3Store) and self.raw.same_account(source.raw)

    async def copy_from(
        self,
        source: FallbackS3Store,
        src_key: str,
        dst_key: str,
        *,
        size: int | None = None,
        if_match: str | None = None,
        on_upload: OnUpload | None = None,
    ) -> PutResult:
        """Server-side copy from ``source`` (see :meth:`S3Raw.copy_object`; ``on_upload`` as
        for :meth:`put`, for copies above 5 GiB, which go part by part).

        The bytes never pass through this machine, but the result still carries the
        content's SHA-256 as every put does: the server's own when it reports one, else
        computed by reading the copy back (what arrived is what is hashed).
        """
        result = await self.raw.copy_object(
            src_key, dst_key, source=source.raw, size=size, if_match=if_match, on_upload=on_upload
        )
        if result.sha256 is not None:
            return PutResult(dst_key, result.size, result.sha256, result.etag)
        hasher = StreamHasher()
        async for chunk in await self.get(dst_key):
            await hasher.update(chunk)
        return PutResult(dst_key, hasher.size, hasher.hexdigest(), result.etag)


def open_fallback_s3(
    cfg: StoreConfig, fast: ObstoreStore, env: Mapping[str, str] | None = None
) -> FallbackS3Store:
    """Wrap the obstore store ``open_s3`` built with an :class:`S3Raw` for the same place."""
    return FallbackS3Store(fast, S3Raw.from_config(cfg, env))


def unwrap_fallback(store: Store) -> FallbackS3Store | None:
    """The :class:`FallbackS3Store` under retry/fault wrappers (their ``inner``), if any."""
    seen = 0
    current: object = store
    while seen < 16:
        if isinstance(current, FallbackS3Store):
            return current
        current = getattr(current, "inner", None)
        if current is None or not isinstance(current, Store):
            return None
        seen += 1
    return None


# ------------------------------------------------------------------------------ helpers



# ------------------------------------------------------------------------------ helpers


def _make_client(raw: S3Raw) -> Any:
    """A botocore S3 client for ``raw``: its addressing, region, timeouts and credentials.

    - Path-style addressing (or virtual-hosted where the provider needs it): botocore keeps
      every key as it is, ``a//b``, ``../x`` and ``/abs`` included.
    - No retries of botocore's own: daulat retries per object within a time budget and
      lowers its concurrency on throttling, which botocore's retries would hide.
    - ``read_timeout`` is a timeout *without progress*: it bounds every socket operation
      (each send of a part's bytes, each wait for an answer, each read of a body), never a
      whole transfer, so a slow 8 MiB part goes through while a silent server fails in
      ``timeout`` seconds.
    - Checksums only when daulat sends them (``x-amz-checksum-sha256`` or ``Content-MD5``,
      which every upload carries); the payload itself is not hashed a second time for the
      signature (UNSIGNED-PAYLOAD): the checksum already binds the body, and the server
      verifies it.
    - Parameter validation off: botocore refuses a memoryview body, and each part would
      otherwise be copied once more (8 MiB per part) only to be accepted.
    """
    from botocore.config import Config

    timeout = raw.timeout or NO_TIMEOUT
    config = Config(
        region_name=raw.region,
        signature_version="s3v4",
        s3={
            "addressing_style": "virtual" if raw.virtual_hosted else "path",
            "payload_signing_enabled": False,
        },
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=min(timeout, 10.0),
        read_timeout=timeout,
        max_pool_connections=raw._max_connections,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        parameter_validation=False,
        user_agent_appid="daulat",
        tcp_keepalive=True,
    )
    session = raw.credentials.botocore_session()
    # botocore parses every timestamp with dateutil, ~0.1-0.9 ms each: a listing of 1,000
    # objects spent more CPU on LastModified than on anything else. ISO 8601 (listings) goes
    # through datetime.fromisoformat; anything else (HTTP dates of HEAD) to botocore's own.
    session.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=_parse_timestamp
    )
    client = session.create_client("s3", endpoint_url=raw.endpoint_url, config=config)
    events = client.meta.events
    events.register("before-call.s3", _no_region_redirect)
    # Before botocore's own check, which takes a 200 answer it cannot parse for a failure.
    from botocore import handlers

    # No "Expect: 100-continue" before each part: a round trip per part, and a wait
    # without progress, for a refusal the checksum and the signature give anyway.
    expect = getattr(handlers, "add_expect_header", None)
    if expect is not None:
        events.unregister("before-call.s3", expect)
    check_200 = getattr(handlers, "_handle_200_error", None)
    if check_200 is not None:
        events.unregister("before-parse.s3.*", check_200)
    events.register_first("before-parse.s3.*", _drop_raw_keys)
    events.register("before-parse.s3.ListObjectsV2", _parse_contents)
    if check_200 is not None:
        events.register_first("before-parse.s3.*", check_200)
    return client


def _no_region_redirect(context: dict[str, Any], **_: Any) -> None:
    """Tell botocore's region redirector this request was redirected already, so it never
    follows one: a store's region is part of what daulat reports (see the module doc)."""
    context.setdefault("s3_redirect", {})["redirected"] = True


def _drop_raw_keys(operation_model: Any, response_dict: dict[str, Any], **_: Any) -> None:
    """Answers other than listings echo the key raw (CreateMultipartUpload, errors); a key
    with a control character is not well-formed XML 1.0 there, so ``Key`` is dropped unread
    (daulat never needs it back)."""
    body = response_dict.get("body")
    if isinstance(body, bytes) and operation_model.name not in _LISTINGS and b"<Key>" in body:
        response_dict["body"] = _KEY_ELEMENT.sub(b"", body)


def _parse_contents(
    response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any
) -> None:
    """The objects of a ListObjectsV2 page, read here rather than by botocore's model-driven
    parser, which took ~0.1 ms of CPU per listed object (five times this; a copy lists each
    object twice). Same XML parser (expat, UTF-8), same values: ``Key``, ``ETag`` and
    ``StorageClass`` as text (empty when the element is), ``Size`` an int, ``LastModified``
    as :func:`_parse_timestamp`. The ``Contents`` elements are then cut out of the body, and
    botocore parses the rest (truncation, tokens, common prefixes) and URL-decodes the keys as
    ever. Anything unexpected (not a 200, not well-formed, a field that does not parse, a count
    that differs) leaves the answer to botocore untouched."""
    body = response_dict.get("body")
    if response_dict.get("status_code") != 200 or not isinstance(body, bytes):
        return
    if b"<Contents>" not in body:
        return
    try:
        parser = ElementTree.XMLParser(target=ElementTree.TreeBuilder(), encoding="utf-8")
        parser.feed(body)
        root = parser.close()
        contents: list[dict[str, Any]] = []
        for node in root:
            if node.tag.rpartition("}")[2] != "Contents":
                continue
            item: dict[str, Any] = {}
            for field in node:
                name = field.tag.rpartition("}")[2]
                text = field.text or ""
                if name in ("Key", "ETag", "StorageClass"):
                    item[name] = text
                elif name == "Size":
                    item[name] = int(text)
                elif name == "LastModified":
                    item[name] = _parse_timestamp(text)
            contents.append(item)
    except Exception:
        return  # botocore's parser then reports it as it always did
    rest, cut = _CONTENTS_ELEMENT.subn(b"", body)
    if cut != len(contents):
        return
    response_dict["body"] = rest
    customized_response_dict["Contents"] = contents


def _aws_endpoint(region: str) -> str:
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://s3.{region}.{suffix}"


def _discard_stream(cf: Future[Any]) -> None:
    if not cf.cancelled() and cf.exception() is None:
        result = cf.result()
        body = result.get("Body") if isinstance(result, dict) else None
        if body is not None:
            body.close()


def _decoder(reply: Mapping[str, Any]) -> Callable[[str], str]:
    """How to read keys from this answer: URL-decoded (``+`` is a space) if the server says
    it encoded them, else as they are."""
    if str(reply.get("EncodingType") or "").lower() == "url":
        return functools.partial(urllib.parse.unquote_plus, encoding="utf-8", errors="strict")
    return str


def _parse_timestamp(value: Any) -> dt.datetime:
    """A timestamp of an S3 answer, as botocore's parser would give it (timezone-aware)."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return dt.datetime.fromisoformat(value)
    from botocore.utils import parse_timestamp

    parsed: dt.datetime = parse_timestamp(value)
    return parsed


def _utc(when: Any) -> dt.datetime:
    if isinstance(when, dt.datetime):
        return when.astimezone(dt.UTC) if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return dt.datetime.now(dt.UTC)


def _strip_prefix(metadata: Mapping[str, str]) -> dict[str, str]:
    return {
        k[len(METADATA_PREFIX) :]: v for k, v in metadata.items() if k.startswith(METADATA_PREFIX)
    }


def _sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _b64_to_hex(text: str) -> str | None:
    if not text:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        return None
    return raw.hex() if len(raw) == 32 else None


def _etag(value: str | None) -> str | None:
    """ETags in daulat's one spelling (unquoted, see ``normalise_etag``): S3 quotes them in
    headers and XML, SeaweedFS's CopyObjectResult does not, and the engine compares a listed
    tag with the one recorded at put time."""
    return normalise_etag(value) if value else None
