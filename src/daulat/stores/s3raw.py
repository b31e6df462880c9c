"""A small S3 client for what obstore cannot do, and a Store that falls back to it.

Why this exists: S3 keys are arbitrary UTF-8 (up to 1,024 bytes), and an exit tool must copy
every legal key faithfully. obstore 0.12.1 (Rust ``object_store`` paths) cannot:

* listing a bucket fails *as a whole* (``InvalidPathError``) when one key has a ``.``/``..``
  segment, an empty segment (``a//b``) or a control character;
* worse, a listing *succeeds* with silently renamed keys: ``/abs.txt`` is reported as
  ``abs.txt`` and a folder marker ``photos/`` as ``photos`` (a GET of either then gives 404);
* such keys cannot be addressed for GET/PUT/DELETE at all, or are rewritten the same way;
* there is no API to list or abort multipart uploads (a killed run leaves them behind), and
  ``copy`` works only within one bucket.

:class:`S3Raw` speaks exactly those parts of the S3 REST API itself, with the standard library
(``http.client``, ``hashlib``/``hmac`` for Signature Version 4), blocking calls running on a
small thread pool of its own so the event loop never waits on a socket. Keys are percent-encoded
byte by byte (``/`` and unreserved characters kept), so any key round-trips; listings ask for
``encoding-type=url``, which also carries keys that XML 1.0 cannot (control characters).

:class:`FallbackS3Store` is the Store daulat uses for S3: the fast obstore path for ordinary
keys, :class:`S3Raw` for keys obstore would refuse or rewrite, and :class:`S3Raw` for *every*
listing (an obstore listing cannot be trusted, see above). That costs little: 10,000 keys on
SeaweedFS list in 1.1 s with 0.13 CPU-s, against 1.0 s and 0.09 CPU-s through obstore.

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
import contextlib
import datetime as dt
import email.utils
import functools
import hashlib
import hmac
import http.client
import os
import re
import secrets
import ssl
import threading
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from daulat.errors import (
    AccessDenied,
    ConfigError,
    DaulatError,
    InvalidKey,
    NotFound,
    StoreError,
    Transient,
    Unsupported,
)
from daulat.stores.base import (
    MAX_KEY_BYTES,
    Capabilities,
    ObjectInfo,
    ObjectReader,
    PutResult,
    Store,
    portable_key_problem,
)
from daulat.stores.hashing import StreamHasher, body_digest, check_digest
from daulat.stores.objectstore import (
    METADATA_PREFIX,
    PART_SIZE,
    PARTS_IN_FLIGHT,
    READ_CHUNK,
    SINGLE_PUT_MAX,
    normalise_etag,
)

if TYPE_CHECKING:
    from daulat.config import StoreConfig
    from daulat.stores.objectstore import ObstoreStore

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
_UNSIGNED_HEADERS = frozenset({"content-length", "user-agent", "expect", "connection"})
USER_AGENT = "daulat-s3raw"
_META_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_CODE = re.compile(rb"<Code>([A-Za-z0-9.]{1,64})</Code>")
_KEY_ELEMENT = re.compile(rb"<Key>.*?</Key>", re.DOTALL)
PROBE_DIR = ".daulat/keyprobe-"


# ------------------------------------------------------------------------------ data


@dataclass(frozen=True, slots=True)
class S3Credentials:
    """Access key, secret and optional session token. ``repr`` never shows the secrets."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class MultipartUpload:
    """An upload begun and neither completed nor aborted (keys relative to the store)."""

    key: str
    upload_id: str
    initiated: dt.datetime


@dataclass(frozen=True, slots=True)
class CopyResult:
    """A finished server-side copy. ``sha256`` (hex) only when the server computed it."""

    key: str
    size: int
    etag: str | None
    sha256: str | None = None


# ------------------------------------------------------------------------------ SigV4


def uri_encode(value: str, *, safe: str = "") -> str:
    """SigV4 URI encoding: every UTF-8 byte but ``A-Za-z0-9-_.~`` (and ``safe``) as %XX."""
    return urllib.parse.quote(value.encode("utf-8"), safe=safe)


def sign_v4(
    *,
    method: str,
    host: str,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    payload_hash: str,
    credentials: S3Credentials,
    region: str,
    now: dt.datetime,
) -> dict[str, str]:
    """The request's headers plus ``Authorization`` (AWS Signature Version 4, header form).

    ``path`` is the already-encoded canonical URI, exactly as it is sent (S3 does not encode
    twice). Every header given is signed (host and ``x-amz-*`` must be; signing the rest too
    means a proxy cannot alter them unnoticed).
    """
    amz_date = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    out = {k.lower(): v for k, v in headers.items()}
    out["host"] = host
    out["x-amz-date"] = amz_date
    out["x-amz-content-sha256"] = payload_hash
    if credentials.session_token:
        out["x-amz-security-token"] = credentials.session_token
    signed = sorted(k for k in out if k not in _UNSIGNED_HEADERS)
    canonical_headers = "".join(f"{k}:{' '.join(out[k].split())}\n" for k in signed)
    # Sorted by encoded name, then value; not as joined strings ("a" sorts before "a-b").
    canonical_query = "&".join(
        f"{k}={v}" for k, v in sorted((uri_encode(k), uri_encode(v)) for k, v in query)
    )
    signed_names = ";".join(signed)
    canonical = "\n".join(
        [method, path, canonical_query, canonical_headers, signed_names, payload_hash]
    )
    scope = f"{date}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + credentials.secret_access_key).encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={signed_names}, Signature={signature}"
    )
    return out


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
        "PermanentRedirect",  # wrong region or endpoint: every request would fail alike
    }
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
    }
)
_KEY_CODES = frozenset(
    {"KeyTooLongError", "InvalidObjectName", "XMinioInvalidObjectName", "InvalidKey"}
)
# What a server answers for a key it will not hold when it has no specific code (SeaweedFS:
# InvalidRequest for ".." segments and NUL).
_VAGUE_KEY_CODES = frozenset({"InvalidRequest", "InvalidArgument", "InvalidURI"})


def _error_code(body: bytes) -> str | None:
    m = _CODE.search(body)
    return m.group(1).decode("ascii", "replace") if m else None


# ------------------------------------------------------------------------------ HTTP


@dataclass
class _Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class _Stream:
    """A response whose body is read in pieces; its connection returns to the pool at EOF."""

    def __init__(
        self,
        status: int,
        headers: dict[str, str],
        response: http.client.HTTPResponse,
        conn: http.client.HTTPConnection,
        pool: _Pool,
    ) -> None:
        self.status = status
        self.headers = headers
        self._response = response
        self._conn: http.client.HTTPConnection | None = conn
        self._pool = pool

    def read(self, size: int) -> bytes:
        if self._conn is None:
            return b""
        try:
            data = self._response.read(size)
        except BaseException:
            self.close()
            raise
        if not data:
            self._finish()
        return data

    def _finish(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            if self._response.will_close:
                conn.close()
            else:
                self._pool.release(conn)

    def close(self) -> None:
        """Give up on the rest of the body: the connection cannot be reused."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class _Pool:
    """Keep-alive connections to one host, each used by one thread at a time."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        *,
        timeout: float,
        connect_address: tuple[str, int] | None,
    ) -> None:
        self._scheme = scheme
        self._host = host
        self._port = port
        self._timeout = timeout
        self._connect_address = connect_address
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._ssl = ssl.create_default_context() if scheme == "https" else None

    def acquire(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        host, port = self._connect_address or (self._host, self._port)
        if self._ssl is not None:
            return (
                http.client.HTTPSConnection(host, port, timeout=self._timeout, context=self._ssl),
                False,
            )
        return http.client.HTTPConnection(host, port, timeout=self._timeout), False

    def release(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


# ------------------------------------------------------------------------------ key kinds


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


class S3Raw:
    """A small S3 client for one bucket (and key prefix) that addresses any legal key.

    Keys given to and returned by every method are relative to ``prefix`` (joined with ``/``,
    as obstore does), so an :class:`S3Raw` and an obstore store over the same bucket and prefix
    name objects alike. Errors are :mod:`daulat.errors` with secret-free messages: they name the
    store, the key and the provider's error code or HTTP status, never a header or the body.

    ``checksum`` is how a single PUT proves its body: ``"sha256"`` sends
    ``x-amz-checksum-sha256`` (AWS, SeaweedFS, MinIO), ``"md5"`` sends ``Content-MD5`` (for
    servers without the newer checksum headers). Either way a PUT cut short cannot complete:
    SeaweedFS otherwise keeps an empty object when a client dies right after the headers.

    ``connect_address`` connects there instead of resolving the host name (tests of
    virtual-hosted addressing; pinning). Blocking HTTP runs on a private pool of
    ``max_connections`` threads: not the loop's default executor, which hashing also uses and
    which has only ``cpu_count + 4`` threads.
    """

    def __init__(
        self,
        *,
        name: str,
        endpoint: str,
        bucket: str,
        region: str = "us-east-1",
        prefix: str = "",
        virtual_hosted: bool = False,
        credentials: S3Credentials | None = None,
        checksum: Literal["sha256", "md5"] = "sha256",
        timeout: float = 120.0,
        max_connections: int = 16,
        part_size: int = PART_SIZE,
        single_put_max: int = SINGLE_PUT_MAX,
        copy_single_max: int = COPY_SINGLE_MAX,
        copy_part_size: int = COPY_PART_SIZE,
        verify_keys: bool = True,
        list_page: int = LIST_PAGE,
        connect_address: tuple[str, int] | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint {endpoint!r} must be an http:// or https:// URL")
        if not bucket:
            raise ValueError("bucket must not be empty")
        self.name = name
        self.bucket = bucket
        self.region = region
        self.prefix = prefix.strip("/")
        self.virtual_hosted = virtual_hosted
        self.credentials = credentials
        self.checksum = checksum
        self.part_size = part_size
        self.single_put_max = single_put_max
        self.copy_single_max = copy_single_max
        self.copy_part_size = copy_part_size
        self.verify_keys = verify_keys
        self.list_page = list_page
        self._scheme = parts.scheme
        default_port = 443 if parts.scheme == "https" else 80
        port = parts.port or default_port
        hostname = parts.hostname
        if virtual_hosted and hostname.startswith(bucket + "."):
            hostname = hostname[len(bucket) + 1 :]  # the endpoint already names the bucket
        self.endpoint = f"{parts.scheme}://{hostname}" + (
            f":{port}" if port != default_port else ""
        )
        host = f"{bucket}.{hostname}" if virtual_hosted else hostname
        self._host_header = host + (f":{port}" if port != default_port else "")
        self._base_path = parts.path.rstrip("/")
        self._pool = _Pool(
            parts.scheme, host, port, timeout=timeout, connect_address=connect_address
        )
        self._max_connections = max_connections
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._closed = False
        self._kinds: dict[str, bool] | None = None  # key kind -> kept exactly (after a probe)
        self._probe_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    @classmethod
    def from_config(cls, cfg: StoreConfig, env: Mapping[str, str] | None = None) -> S3Raw:
        """Resolve endpoint, region, addressing and credentials exactly as ``open_s3`` does.

        Credentials: the store's own, else the provider's standard variables, else
        ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``; with none of
        them requests go unsigned (public buckets). Unlike obstore, no instance-metadata or
        profile-file credentials are looked up.
        """
        from daulat.providers import load_catalogue
        from daulat.stores.s3 import _credentials

        environ: Mapping[str, str] = os.environ if env is None else env
        profile = load_catalogue().provider(cfg.provider).s3
        region = cfg.region or "us-east-1"
        endpoint = cfg.endpoint
        virtual = cfg.addressing == "virtual"
        if endpoint is None and profile is not None:
            endpoint = profile.endpoint_for(region)
            if profile.virtual_hosted_style and cfg.addressing is None:
                virtual = True
        if endpoint is None:  # AWS: the SDKs' regional endpoint
            suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
            endpoint = f"https://s3.{region}.{suffix}"
        found = _credentials(cfg, environ)
        credentials: S3Credentials | None = None
        if found is not None:
            credentials = S3Credentials(
                found["access_key_id"], found["secret_access_key"], found.get("token")
            )
        elif environ.get("AWS_ACCESS_KEY_ID") and environ.get("AWS_SECRET_ACCESS_KEY"):
            credentials = S3Credentials(
                environ["AWS_ACCESS_KEY_ID"],
                environ["AWS_SECRET_ACCESS_KEY"],
                environ.get("AWS_SESSION_TOKEN") or None,
            )
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
                region=region,
                prefix=cfg.prefix,
                virtual_hosted=virtual,
                credentials=credentials,
                checksum=checksum,
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

    def _path(self, full_key: str | None) -> str:
        bucket = "" if self.virtual_hosted else "/" + uri_encode(self.bucket)
        if full_key is None:
            return self._base_path + (bucket or "/")
        return f"{self._base_path}{bucket}/{uri_encode(full_key, safe='/')}"

    def same_account(self, other: S3Raw) -> bool:
        """Same endpoint, region and credentials: a server-side copy between the two works."""
        return (
            self.endpoint == other.endpoint
            and self._base_path == other._base_path
            and self.region == other.region
            and self.credentials == other.credentials
        )

    # -------------------------------------------------------------- transport

    def _pool_executor(self) -> ThreadPoolExecutor:
        with self._executor_lock:
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

    def _exchange(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]],
        headers: Mapping[str, str],
        body: bytes | memoryview,
        payload_hash: str | None,
        stream: bool,
    ) -> _Reply | _Stream:
        """One request, in a worker thread. A stale keep-alive connection is retried once."""
        if self.credentials is not None:
            sent = sign_v4(
                method=method,
                host=self._host_header,
                path=path,
                query=query,
                headers=headers,
                payload_hash=payload_hash or hashlib.sha256(body).hexdigest(),
                credentials=self.credentials,
                region=self.region,
                now=dt.datetime.now(dt.UTC),
            )
        else:
            sent = {**{k.lower(): v for k, v in headers.items()}, "host": self._host_header}
        sent["user-agent"] = USER_AGENT
        target = path
        if query:
            target += "?" + "&".join(f"{uri_encode(k)}={uri_encode(v)}" for k, v in query)
        for attempt in (0, 1):
            conn, reused = self._pool.acquire()
            try:
                conn.request(
                    method,
                    target,
                    body=body if body or method in ("PUT", "POST") else None,
                    headers=sent,
                )
                response = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if reused and attempt == 0:
                    continue  # the server closed an idle connection: not a real failure
                raise
            except BaseException:
                conn.close()
                raise
            reply_headers = {k.lower(): v for k, v in response.getheaders()}
            if stream and response.status in (200, 206) and method != "HEAD":
                return _Stream(response.status, reply_headers, response, conn, self._pool)
            try:
                data = response.read()
            except BaseException:
                conn.close()
                raise
            if response.will_close:
                conn.close()
            else:
                self._pool.release(conn)
            return _Reply(response.status, reply_headers, data)
        raise AssertionError("unreachable")

    async def _request(
        self,
        op: str,
        key: str | None,
        method: str,
        *,
        full_key: str | None = None,
        query: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        body: bytes | memoryview = b"",
        payload_hash: str | None = None,
        ok: Iterable[int] = (200,),
    ) -> _Reply:
        reply = await self._send(
            op, key, method, full_key, query, headers or {}, body, payload_hash, stream=False
        )
        assert isinstance(reply, _Reply)
        if reply.status not in set(ok):
            raise self._http_error(reply.status, reply.body, op=op, key=key)
        return reply

    async def _send(
        self,
        op: str,
        key: str | None,
        method: str,
        full_key: str | None,
        query: Sequence[tuple[str, str]],
        headers: Mapping[str, str],
        body: bytes | memoryview,
        payload_hash: str | None,
        *,
        stream: bool,
    ) -> _Reply | _Stream:
        path = self._path(full_key)
        try:
            return await self._run(
                functools.partial(
                    self._exchange, method, path, query, headers, body, payload_hash, stream
                )
            )
        except DaulatError:
            raise
        except Exception as exc:
            raise self._network_error(exc, op=op, key=key) from None

    def _where(self, op: str, key: str | None) -> str:
        return f"{op} {key!r}" if key is not None else op

    def _http_error(self, status: int, body: bytes, *, op: str, key: str | None) -> StoreError:
        """Map a refusal to daulat's hierarchy, naming only the S3 code or HTTP status."""
        code = _error_code(body)
        reason = code or f"HTTP {status}"
        store, where = self.name, self._where(op, key)
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
        where = self._where(op, key)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return StoreError(
                f"store {self.name!r}: {where} failed (TLS certificate not trusted)",
                store=self.name,
                key=key,
            )
        if isinstance(exc, TimeoutError):
            reason = "timed out"
        elif isinstance(exc, ConnectionRefusedError):
            reason = "cannot connect"
        elif isinstance(exc, (OSError, http.client.HTTPException)):
            reason = f"connection failed: {type(exc).__name__}"
        else:
            reason = type(exc).__name__
        return Transient(
            f"store {self.name!r}: {where} failed ({reason})", store=self.name, key=key
        )

    # -------------------------------------------------------------- listing

    async def list_all(self, prefix: str = "") -> AsyncGenerator[list[ObjectInfo], None]:
        """Yield batches of every object whose key starts with ``prefix`` (a plain string).

        ListObjectsV2 with ``encoding-type=url``: keys come back exactly, whatever they
        contain. The next page is requested while the caller works on this one.
        """
        full_prefix = self._list_prefix(prefix)
        ahead = asyncio.ensure_future(self._list_page(full_prefix, None))
        try:
            while True:
                batch, token = await ahead
                if token is not None:
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

    async def _list_page(
        self,
        full_prefix: str,
        token: tuple[str, str] | None,
        *,
        max_keys: int | None = None,
        bucket_keys: bool = False,
    ) -> tuple[list[ObjectInfo], tuple[str, str] | None]:
        """One page; keys relative to the store, or as bucket keys with ``bucket_keys``."""
        query = [
            ("list-type", "2"),
            ("encoding-type", "url"),
            ("max-keys", str(max_keys or self.list_page)),
            ("prefix", full_prefix),
        ]
        if token is not None:
            query.append(token)
        reply = await self._request("list", None, "GET", query=query)
        root = self._xml(reply.body, "list")
        decode = _decoder(root)
        batch: list[ObjectInfo] = []
        last = None
        for item in root.iter("Contents"):
            full = decode(_child(item, "Key"))
            last = full
            key = full if bucket_keys else self._relative(full)
            if key is None or not full.startswith(full_prefix):
                continue
            batch.append(
                ObjectInfo(
                    key=key,
                    size=int(_child(item, "Size") or 0),
                    modified=_iso_time(_child(item, "LastModified")),
                    etag=_etag(_child(item, "ETag")),
                    etag_scheme="s3",
                )
            )
        nxt: tuple[str, str] | None = None
        if _child(root, "IsTruncated").lower() == "true":
            token_text = _child(root, "NextContinuationToken")
            if token_text:
                nxt = ("continuation-token", token_text)
            elif last is not None:
                nxt = ("start-after", last)
        return batch, nxt

    def _xml(self, body: bytes, op: str, key: str | None = None) -> ET.Element:
        """Parse an answer. ``Key`` elements outside listings are dropped unread: they echo
        the key raw, and a key with a control character is not well-formed XML 1.0."""
        if op not in ("list", "list uploads"):
            body = _KEY_ELEMENT.sub(b"", body)
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            raise StoreError(
                f"store {self.name!r}: {self._where(op, key)} failed (the server's answer is "
                "not XML)",
                store=self.name,
                key=key,
            ) from None
        for el in root.iter():
            el.tag = el.tag.rsplit("}", 1)[-1]
        if root.tag == "Error":
            # S3 may answer 200 and still fail (CompleteMultipartUpload, CopyObject).
            raise self._http_error(500, body, op=op, key=key)
        return root

    # -------------------------------------------------------------- reads

    async def stat(self, key: str) -> tuple[ObjectInfo, dict[str, str], str | None]:
        """HEAD: the object's info, its user metadata (raw names) and content type."""
        full = self.full_key(key)
        self._check_known_kinds(full, key)
        reply = await self._send("head", key, "HEAD", full, (), {}, b"", None, stream=False)
        assert isinstance(reply, _Reply)
        if reply.status != 200:
            raise self._http_error(reply.status, reply.body, op="head", key=key)
        size = int(reply.headers.get("content-length", "0"))
        return (
            self._info(key, size, reply.headers),
            _user_metadata(reply.headers),
            reply.headers.get("content-type"),
        )

    async def head(self, key: str) -> ObjectInfo:
        return (await self.stat(key))[0]

    def _info(self, key: str, size: int, headers: Mapping[str, str]) -> ObjectInfo:
        modified = headers.get("last-modified")
        when = email.utils.parsedate_to_datetime(modified) if modified else None
        return ObjectInfo(
            key=key,
            size=size,
            modified=when.astimezone(dt.UTC) if when else dt.datetime.now(dt.UTC),
            etag=_etag(headers.get("etag")),
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
        headers: dict[str, str] = {}
        if start or end is not None:
            headers["range"] = f"bytes={start}-" + (str(end - 1) if end is not None else "")
        reply = await self._send("get", key, "GET", full, (), headers, b"", None, stream=True)
        if isinstance(reply, _Reply):
            if reply.status == 416:
                info, meta, _ = await self.stat(key)
                if start >= info.size:
                    return S3RawReader(info, meta, None, self)
            raise self._http_error(reply.status, reply.body, op="get", key=key)
        size = int(reply.headers.get("content-length", "0"))
        total = reply.headers.get("content-range", "").rpartition("/")[2]
        if total.isdigit():
            size = int(total)
        info = self._info(key, size, reply.headers)
        reader = S3RawReader(info, _user_metadata(reply.headers), reply, self)
        if reply.status == 200 and headers:  # the server ignored Range: cut it out here
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
    ) -> PutResult:
        """Write an object atomically (the Store contract), hashing it while streaming.

        A body that ends within ``single_put_max`` goes as one signed PUT carrying its
        checksum; a longer one as a multipart upload of ``part_size`` parts (doubling every
        1,000 parts, so 10,000 parts reach ~8 TiB), aborted on any failure. ``metadata`` names
        are sent as given (``x-amz-meta-NAME``).
        """
        full = self.full_key(key)
        await self._check_kinds(full, key)
        meta = self._meta_headers(metadata, key)
        hasher = StreamHasher()
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
                    result = await self._multipart_put(key, full, head, it, hasher, sha256, meta)
                    break
            else:
                body = b"".join(head)
                await hasher.update(body)
                check_digest(hasher, sha256, store=self.name, key=key)
                result = await self._single_put(key, full, body, hasher.hexdigest(), meta)
        if self.verify_keys and _suspicious(full):
            await self._verify_written(key, full, result.size)
        return result

    def _meta_headers(self, metadata: Mapping[str, str] | None, key: str) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, value in (metadata or {}).items():
            if not _META_NAME.match(name) or not value.isascii() or not value.isprintable():
                raise StoreError(
                    f"store {self.name!r}: metadata {name!r} of {key!r} must be an ASCII "
                    "token with a printable ASCII value",
                    store=self.name,
                    key=key,
                )
            headers[f"x-amz-meta-{name.lower()}"] = value
        return headers

    def _checksum_headers(self, body: bytes, sha256_hex: str) -> dict[str, str]:
        if self.checksum == "md5":
            return {"content-md5": base64.b64encode(hashlib.md5(body).digest()).decode()}
        return {"x-amz-checksum-sha256": base64.b64encode(bytes.fromhex(sha256_hex)).decode()}

    async def _single_put(
        self, key: str, full: str, body: bytes, sha256_hex: str, meta: Mapping[str, str]
    ) -> PutResult:
        headers = {**meta, **self._checksum_headers(body, sha256_hex)}
        reply = await self._request(
            "put", key, "PUT", full_key=full, headers=headers, body=body, payload_hash=sha256_hex
        )
        return PutResult(
            key=key, size=len(body), sha256=sha256_hex, etag=_etag(reply.headers.get("etag"))
        )

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
    ) -> PutResult:
        """Upload parts as the stream fills them, at most PARTS_IN_FLIGHT at once.

        Memory: the parts in flight plus the one being filled; a part is cut out of the
        chunks with one copy, and only after a slot is free, so the stream waits (back
        pressure) instead of piling up parts.
        """
        upload_id = await self._create_upload(key, full, meta)
        in_flight: set[asyncio.Task[tuple[int, str]]] = set()
        done: list[tuple[int, str]] = []

        async def wait_for_slot(limit: int) -> None:
            while len(in_flight) > limit:
                finished, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    in_flight.discard(task)
                    done.append(task.result())

        def launch(number: int, piece: bytes | memoryview) -> None:
            in_flight.add(
                asyncio.ensure_future(self._upload_part(key, full, upload_id, number, piece))
            )

        async def chunks() -> AsyncIterator[bytes]:
            while head:
                yield head.pop(0)  # do not keep the read-ahead alive for the whole upload
            async for chunk in rest:
                yield bytes(chunk)

        try:
            pending: list[bytes] = []
            pending_size = 0
            number = 1
            async for chunk in chunks():
                await hasher.update(chunk)
                pending.append(chunk)
                pending_size += len(chunk)
                # Strictly greater: the last part is never empty (S3 refuses empty parts
                # after the first).
                while pending_size > self._part_size(number):
                    size = self._part_size(number)
                    await wait_for_slot(PARTS_IN_FLIGHT - 1)
                    joined = memoryview(b"".join(pending))
                    remainder = bytes(joined[size:])
                    launch(number, joined[:size])
                    pending, pending_size = [remainder], len(remainder)
                    number += 1
            check_digest(hasher, expected, store=self.name, key=key)
            if pending_size or number == 1:
                launch(number, b"".join(pending))
            pending = []
            await wait_for_slot(0)
            etag = await self._complete_upload(key, full, upload_id, sorted(done))
        except BaseException:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            await asyncio.shield(self._abort_quietly(full, upload_id))
            raise
        return PutResult(key=key, size=hasher.size, sha256=hasher.hexdigest(), etag=etag)

    async def _create_upload(self, key: str, full: str, headers: Mapping[str, str]) -> str:
        reply = await self._request(
            "upload", key, "POST", full_key=full, query=[("uploads", "")], headers=headers
        )
        upload_id = _child(self._xml(reply.body, "upload", key), "UploadId")
        if not upload_id:
            raise StoreError(
                f"store {self.name!r}: upload {key!r} failed (no upload id)",
                store=self.name,
                key=key,
            )
        return upload_id

    async def _upload_part(
        self, key: str, full: str, upload_id: str, number: int, piece: bytes | memoryview
    ) -> tuple[int, str]:
        digest = (
            await asyncio.to_thread(_sha256_hex, piece)
            if len(piece) >= 4 * MiB
            else _sha256_hex(piece)
        )
        reply = await self._request(
            "upload",
            key,
            "PUT",
            full_key=full,
            query=[("partNumber", str(number)), ("uploadId", upload_id)],
            body=piece,
            payload_hash=digest,
        )
        etag = reply.headers.get("etag")
        if not etag:
            raise StoreError(
                f"store {self.name!r}: upload {key!r} failed (part without ETag)",
                store=self.name,
                key=key,
            )
        return number, etag

    async def _complete_upload(
        self, key: str, full: str, upload_id: str, parts: Sequence[tuple[int, str]]
    ) -> str | None:
        body = (
            "<CompleteMultipartUpload>"
            + "".join(
                f"<Part><PartNumber>{n}</PartNumber><ETag>{_xml_text(e)}</ETag></Part>"
                for n, e in parts
            )
            + "</CompleteMultipartUpload>"
        ).encode()
        reply = await self._request(
            "upload", key, "POST", full_key=full, query=[("uploadId", upload_id)], body=body
        )
        return _etag(_child(self._xml(reply.body, "upload", key), "ETag"))

    async def _abort_quietly(self, full: str, upload_id: str) -> None:
        # A failed abort leaves the upload for abort_stale_uploads; the original error matters.
        with contextlib.suppress(StoreError):
            await self._abort(full, upload_id, key=self._relative(full) or full)

    async def _abort(self, full: str, upload_id: str, *, key: str) -> None:
        with contextlib.suppress(NotFound):  # already completed or aborted
            await self._request(
                "abort",
                key,
                "DELETE",
                full_key=full,
                query=[("uploadId", upload_id)],
                ok=(200, 204),
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
            await self._request("delete", key, "DELETE", full_key=full, ok=(200, 204))

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
        digest = _sha256_hex(body)
        await self._request(
            "probe",
            full,
            "PUT",
            full_key=full,
            headers=self._checksum_headers(body, digest),
            body=body,
            payload_hash=digest,
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
        query_base = [("encoding-type", "url"), ("prefix", self._list_prefix(prefix))]
        markers: list[tuple[str, str]] = []
        while True:
            reply = await self._request(
                "list uploads", None, "GET", query=[("uploads", ""), *query_base, *markers]
            )
            root = self._xml(reply.body, "list uploads")
            decode = _decoder(root)
            batch = []
            for item in root.iter("Upload"):
                key = self._relative(decode(_child(item, "Key")))
                if key is None:
                    continue
                initiated = _child(item, "Initiated")
                batch.append(
                    MultipartUpload(
                        key=key,
                        upload_id=_child(item, "UploadId"),
                        initiated=_iso_time(initiated) if initiated else dt.datetime.now(dt.UTC),
                    )
                )
            if batch:
                yield batch
            if _child(root, "IsTruncated").lower() != "true":
                return
            key_marker = decode(_child(root, "NextKeyMarker"))
            id_marker = _child(root, "NextUploadIdMarker")
            if not key_marker:
                return
            markers = [("key-marker", key_marker), ("upload-id-marker", id_marker)]

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        """Abort one upload (its parts are freed); succeeds when it is already gone."""
        await self._abort(self.full_key(key), upload_id, key=key)

    async def abort_stale_uploads(
        self,
        prefix: str = "",
        older_than: dt.timedelta | None = None,
        *,
        initiated_before: dt.datetime | None = None,
    ) -> int:
        """Abort unfinished multipart uploads under ``prefix``; return how many.

        Run after a crash: a killed daulat (or obstore under it) leaves uploads whose parts
        are stored, invisible and billed. Only uploads begun ``older_than`` ago (by this
        machine's clock against the server's ``Initiated``) and before ``initiated_before``
        are aborted; with neither, every upload under ``prefix`` is, so call it so only while
        nothing else writes there.
        """
        now = dt.datetime.now(dt.UTC)
        aborted = 0
        async for batch in self.list_multipart_uploads(prefix):
            for upload in batch:
                if older_than is not None and now - upload.initiated < older_than:
                    continue
                if initiated_before is not None and upload.initiated >= initiated_before:
                    continue
                await self.abort_multipart_upload(upload.key, upload.upload_id)
                aborted += 1
        return aborted

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
        if size is None or size > self.copy_single_max:
            info, src_meta, content_type = await src.stat(src_key)
            size, if_match = info.size, if_match or info.etag
        if if_match:
            if_match = f'"{normalise_etag(if_match)}"'  # daulat keeps tags unquoted
        else:
            src_meta, content_type = {}, None
        copy_source = uri_encode(f"/{src.bucket}/{src_full}", safe="/")
        if size > self.copy_single_max:
            result = await self._copy_parts(
                dst_key,
                dst_full,
                copy_source,
                size,
                metadata if metadata is not None else src_meta,
                content_type if metadata is None else None,
                if_match,
            )
        else:
            headers = {"x-amz-copy-source": copy_source}
            if metadata is not None:
                headers["x-amz-metadata-directive"] = "REPLACE"
                headers.update(self._meta_headers(metadata, dst_key))
            if if_match:
                headers["x-amz-copy-source-if-match"] = if_match
            if self.checksum == "sha256":
                headers["x-amz-checksum-algorithm"] = "SHA256"
            reply = await self._request("copy", dst_key, "PUT", full_key=dst_full, headers=headers)
            root = self._xml(reply.body, "copy", dst_key)
            sha_b64 = _child(root, "ChecksumSHA256")
            result = CopyResult(
                key=dst_key,
                size=size,
                etag=_etag(_child(root, "ETag")),
                sha256=_b64_to_hex(sha_b64),
            )
        if self.verify_keys and _suspicious(dst_full):
            await self._verify_written(dst_key, dst_full, size)
        return result

    async def _copy_parts(
        self,
        key: str,
        full: str,
        copy_source: str,
        size: int,
        metadata: Mapping[str, str],
        content_type: str | None,
        if_match: str | None,
    ) -> CopyResult:
        headers = self._meta_headers(metadata, key)
        if content_type:
            headers["content-type"] = content_type
        part = max(self.copy_part_size, -(-size // MAX_PARTS))
        ranges = [
            (n + 1, off, min(off + part, size) - 1) for n, off in enumerate(range(0, size, part))
        ]
        upload_id = await self._create_upload(key, full, headers)
        sem = asyncio.Semaphore(COPY_PARTS_IN_FLIGHT)

        async def one(number: int, first: int, last: int) -> tuple[int, str]:
            async with sem:
                part_headers = {
                    "x-amz-copy-source": copy_source,
                    "x-amz-copy-source-range": f"bytes={first}-{last}",
                }
                if if_match:
                    part_headers["x-amz-copy-source-if-match"] = if_match
                reply = await self._request(
                    "copy",
                    key,
                    "PUT",
                    full_key=full,
                    query=[("partNumber", str(number)), ("uploadId", upload_id)],
                    headers=part_headers,
                )
                return number, _child(self._xml(reply.body, "copy", key), "ETag")

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
        with self._executor_lock:
            self._closed = True
            executor, self._executor = self._executor, None
        self._pool.close()
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


class S3RawReader:
    """Streaming read of one object through :class:`S3Raw` (an ObjectReader)."""

    def __init__(
        self, info: ObjectInfo, metadata: Mapping[str, str], stream: _Stream | None, raw: S3Raw
    ) -> None:
        self.info = info
        self.metadata: Mapping[str, str] = metadata
        self._stream = stream
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
            stream.close()  # no-op after EOF (the connection went back to the pool)

    async def read_all(self) -> bytes:
        return b"".join([chunk async for chunk in self])


# ------------------------------------------------------------------------------ the Store


class FallbackS3Store:
    """The S3 Store: obstore for ordinary keys, :class:`S3Raw` for the rest and for listing.

    Routing: a key that :func:`~daulat.stores.base.portable_key_problem` rejects (obstore
    refuses or silently rewrites it) or that holds a backslash (some servers turn it into
    ``/``, so its write is checked) goes to :class:`S3Raw`; every other key to obstore, which
    is faster for bulk data. Listing always goes through :class:`S3Raw`: obstore fails on
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
    ) -> PutResult:
        if not self.needs_raw(key):
            return await self.fast.put(
                key, data, sha256=sha256, metadata=metadata, prehashed=prehashed
            )
        named = {METADATA_PREFIX + k: v for k, v in (metadata or {}).items()}
        return await self.raw.put(key, data, sha256=sha256, metadata=named, prehashed=prehashed)

    async def delete(self, key: str) -> None:
        if self.needs_raw(key):
            await self.raw.delete(key)
        else:
            await self.fast.delete(key)

    async def close(self) -> None:
        await self.fast.close()
        await self.raw.close()

    # -------------------------------------------------------------- beyond the protocol

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
    ) -> PutResult:
        """Server-side copy from ``source`` (see :meth:`S3Raw.copy_object`).

        The bytes never pass through this machine, but the result still carries the
        content's SHA-256 as every put does: the server's own when it reports one, else
        computed by reading the copy back (what arrived is what is hashed).
        """
        result = await self.raw.copy_object(
            src_key, dst_key, source=source.raw, size=size, if_match=if_match
        )
        if result.sha256 is not None:
            return PutResult(dst_key, result.size, result.sha256, result.etag)
        hasher = StreamHasher()
        async for chunk in await self.get(dst_key):
            await hasher.update(chunk)
        return PutResult(dst_key, hasher.size, hasher.hexdigest(), result.etag)

    async def abort_stale_uploads(
        self,
        prefix: str = "",
        older_than: dt.timedelta | None = None,
        *,
        initiated_before: dt.datetime | None = None,
    ) -> int:
        """Abort multipart uploads left by a killed run (obstore's too); see S3Raw."""
        return await self.raw.abort_stale_uploads(
            prefix, older_than, initiated_before=initiated_before
        )


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


def _discard_stream(cf: Future[Any]) -> None:
    if not cf.cancelled() and cf.exception() is None:
        result = cf.result()
        if isinstance(result, _Stream):
            result.close()


def _child(el: ET.Element, name: str) -> str:
    found = el.find(name)
    return (found.text or "") if found is not None else ""


def _decoder(root: ET.Element) -> Callable[[str], str]:
    """How to read keys from this answer: URL-decoded (``+`` is a space) if the server says
    it encoded them, else as they are."""
    if _child(root, "EncodingType").lower() == "url":
        return functools.partial(urllib.parse.unquote_plus, encoding="utf-8", errors="strict")
    return str


def _iso_time(text: str) -> dt.datetime:
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _user_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    return {k[len("x-amz-meta-") :]: v for k, v in headers.items() if k.startswith("x-amz-meta-")}


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


def _xml_text(value: str) -> str:
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _etag(value: str | None) -> str | None:
    """ETags in daulat's one spelling (unquoted, see ``normalise_etag``): S3 quotes them in
    headers and XML, SeaweedFS's CopyObjectResult does not, and the engine compares a listed
    tag with the one recorded at put time."""
    return normalise_etag(value) if value else None
