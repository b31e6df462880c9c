"""A Store over an obstore object store (S3 and S3-compatible, Azure Blob).

Provider-specific construction lives in ``s3.py`` and ``azure.py``; this module holds what they
share: streaming puts with hashing, ranged reads, string-prefix listing and error translation.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Mapping,
)
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import obstore
import obstore.exceptions as oe

from daulat.errors import (
    AccessDenied,
    InvalidKey,
    NotFound,
    StoreError,
    Transient,
    Unsupported,
)
from daulat.stores.base import (
    Capabilities,
    ObjectInfo,
    OnUpload,
    PutResult,
    portable_key_problem,
)
from daulat.stores.hashing import StreamHasher, body_digest, hashed
from daulat.stores.keys import check_key, check_prefix
from daulat.stores.listguard import ListingGuard
from daulat.stores.ranges import Level
from daulat.stores.timeouts import (
    Deadlines,
    Liveness,
    StreamWatch,
    body_limit,
    guarded,
    watch_stream,
)

if TYPE_CHECKING:
    from obstore.store import ObjectStore

T = TypeVar("T")
MiB = 1024 * 1024
# Below this size an object is sent as one PUT: obstore turns any iterable body into a multipart
# upload, which costs three requests and ~2x the client CPU for small objects.
SINGLE_PUT_MAX = 8 * MiB
PART_SIZE = 8 * MiB
PARTS_IN_FLIGHT = 2
READ_CHUNK = 1 * MiB
LIST_PAGE = 1000
METADATA_PREFIX = "daulat_"  # Azure metadata names must be C# identifiers: no hyphens
#: The user metadata of one object, names and values (S3 counts names without their
#: ``x-amz-meta-``): AWS takes at most 2 KiB, Azure 8 KiB (as Capabilities.max_metadata).
S3_MAX_METADATA = 2 * 1024
AZURE_MAX_METADATA = 8 * 1024

# obstore retries a failed request itself (cheap: a multipart part is retried alone), but only
# briefly: persistent throttling must reach daulat's retry layer, which backs off per object and
# lowers the concurrency (obstore's default, 10 retries over 3 minutes, hides it entirely).
# ``retry_timeout`` also ends retries of a request that timed out once: a silent endpoint fails
# after one request timeout, not three. The S3 and Azure stores both pass it to obstore.
RETRY_CONFIG: dict[str, Any] = {
    "max_retries": 2,
    "retry_timeout": timedelta(seconds=30),
    "backoff": {
        "init_backoff": timedelta(milliseconds=50),
        "max_backoff": timedelta(seconds=1),
        "base": 2,
    },
}


class ObstoreStore:
    """Store adapter over an obstore ``ObjectStore``; see :mod:`daulat.stores.base`."""

    def __init__(
        self,
        name: str,
        inner: ObjectStore,
        *,
        etag_scheme: str,
        capabilities: Capabilities | None = None,
        key_problem: Callable[[str], str | None] = portable_key_problem,
        request_timeout: float | None = None,
    ) -> None:
        self._name = name
        self._inner: ObjectStore | None = inner
        self._etag_scheme = etag_scheme
        self._capabilities = capabilities or Capabilities()
        self._key_problem = key_problem
        self._request_timeout = request_timeout
        self._live = Liveness(request_timeout)
        self._deadlines = Deadlines()
        #: The store's resumable uploads for large objects (Azure: daulat.stores.azureblocks),
        #: found by the engine through :func:`daulat.stores.resumable.unwrap_resumable`.
        self.resumable: Any = None

    def _fail(self, exc: BaseException, *, key: str | None, op: str) -> StoreError:
        """``exc`` as a daulat error; an endpoint that never answered, or stopped answering for
        good, is :class:`Unresponsive` (the run stops rather than retrying a dead endpoint)."""
        err = translate(exc, store=self._name, key=key, op=op)
        refused = "(cannot connect)" in str(err)
        if refused or isinstance(exc, TimeoutError) or "timed out" in str(err):
            return (
                self._live.unresponsive(refused=refused, store=self._name, key=key, where=op) or err
            )
        if not isinstance(err, Transient):
            self._live.answer()  # the server said something (an HTTP error)
        return err

    @property
    def name(self) -> str:
        return self._name

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def inner(self) -> ObjectStore:
        if self._inner is None:
            raise StoreError(f"store {self._name!r} is closed", store=self._name)
        return self._inner

    def key_problem(self, key: str) -> str | None:
        """Why a put of ``key`` would be refused (:class:`~daulat.stores.keys.KeyRules`)."""
        return self._key_problem(key)

    def _check(self, key: str) -> None:
        check_key(self._key_problem, key, store=self._name)

    def _info(self, meta: Mapping[str, Any]) -> ObjectInfo:
        return ObjectInfo(
            key=meta["path"],
            size=meta["size"],
            modified=meta["last_modified"],
            etag=normalise_etag(meta.get("e_tag")),
            etag_scheme=self._etag_scheme,
        )

    async def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        check_prefix(self._key_problem, prefix, store=self._name)
        # obstore matches prefixes by whole path segments; list the enclosing "directory" and
        # filter so that "f" matches "f00001.bin" as S3 users expect.
        directory = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        stream = obstore.list(self.inner, prefix=directory or None, chunk_size=LIST_PAGE)
        # Ask for the next page while the caller works on this one: listing is a chain of
        # round trips, and overlapping them with the caller's work hides their latency.
        ahead: asyncio.Future[Any] = asyncio.ensure_future(_next_page(stream))
        # The SDK follows the provider's tokens itself: a listing stuck on one page shows as
        # keys listed again (daulat.stores.listguard).
        guard = ListingGuard(self._name, ordered=False)
        try:
            while True:
                try:
                    page = await ahead
                except Exception as exc:
                    raise self._fail(exc, key=None, op="list") from None
                self._live.answer()
                if page is None:
                    return
                ahead = asyncio.ensure_future(_next_page(stream))
                batch = [self._info(m) for m in page if m["path"].startswith(prefix)]
                guard.page([o.key for o in batch])
                if batch:
                    yield batch
        finally:
            _abandon(ahead)

    async def list_level(self, prefix: str = "") -> AsyncGenerator[Level, None]:
        """One level under ``prefix`` (empty or ending in ``/``), for a listing sharded by
        prefixes (:mod:`daulat.stores.ranges`). obstore gathers the whole level before it
        answers, so memory here is bounded by one level's entries, not by a page: a flat
        container of millions of blobs is better scanned from a Blob Inventory report."""
        directory = prefix.rstrip("/")
        try:
            found = await obstore.list_with_delimiter_async(self.inner, directory or None)
        except Exception as exc:
            raise self._fail(exc, key=None, op="list") from None
        self._live.answer()
        objects = [self._info(m) for m in found["objects"] if m["path"].startswith(prefix)]
        prefixes = [f"{p}/" for p in found["common_prefixes"] if f"{p}/".startswith(prefix)]
        if objects or prefixes:
            yield objects, prefixes

    async def head(self, key: str) -> ObjectInfo:
        self._check(key)
        try:
            meta = await obstore.head_async(self.inner, key)
        except Exception as exc:
            raise self._fail(exc, key=key, op="head") from None
        self._live.answer()
        return self._info(meta)

    async def get(self, key: str, *, start: int = 0, end: int | None = None) -> ObstoreReader:
        self._check(key)
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"invalid range [{start}, {end})")
        options: dict[str, Any] = {}
        if end is not None and end == start:
            # An empty range is a HEAD; asked through get so that user metadata comes back
            # too (head_async returns none), as every store's reader carries it.
            options["head"] = True
        elif end is not None:
            options["range"] = (start, end)
        elif start:
            options["range"] = {"offset": start}
        try:
            result = await obstore.get_async(self.inner, key, options=options or None)  # type: ignore[arg-type]
        except Exception as exc:
            err = self._fail(exc, key=key, op="get")
            if "range" in options and not isinstance(err, (NotFound, AccessDenied)):
                # Providers answer a range starting at or past the end with 416; the contract
                # says such a read is empty.
                info = await self.head(key)
                if start >= info.size:
                    return ObstoreReader(info, {}, None, self._name)
            raise err from None
        self._live.answer()
        # Built anew by obstore at each access: read once.
        attributes = dict(result.attributes)
        metadata = {
            k[len(METADATA_PREFIX) :]: v
            for k, v in attributes.items()
            if k.startswith(METADATA_PREFIX)
        }
        reader = ObstoreReader(
            self._info(result.meta),
            metadata,
            result if not options.get("head") else None,
            self._name,
        )
        # The store's own description (Content-Type, metadata other applications wrote):
        # daulat.stores.described reads it.
        reader.attributes = attributes
        return reader

    async def put(
        self,
        key: str,
        data: bytes | AsyncIterable[bytes],
        *,
        sha256: str | None = None,
        metadata: Mapping[str, str] | None = None,
        prehashed: bool = False,
        on_upload: OnUpload | None = None,  # obstore does not tell its upload ids
    ) -> PutResult:
        self._check(key)
        attributes: dict[str, str] | None = None
        if metadata:
            attributes = {METADATA_PREFIX + k: v for k, v in metadata.items()}
        hasher: StreamHasher | None = None  # a stream's (bytes are hashed whole)
        body: bytes | AsyncIterator[bytes]
        digest: str | None = None
        if isinstance(data, (bytes, bytearray, memoryview)):
            body = bytes(data)
        else:
            body = await _small_or_stream(data)
            prehashed = False
        if isinstance(body, bytes):
            digest = await body_digest(body, sha256, prehashed=prehashed, store=self._name, key=key)
        else:
            hasher = StreamHasher()
            body = hashed(body, hasher, expected=sha256, store=self._name, key=key)
        try:
            if isinstance(body, bytes):
                result = await self._deadlines.run(
                    obstore.put_async(
                        self.inner,
                        key,
                        body,
                        attributes=attributes,
                        chunk_size=PART_SIZE,
                        max_concurrency=PARTS_IN_FLIGHT,
                    ),
                    body_limit(self._request_timeout, len(body)),
                )
            else:
                # Parts of PART_SIZE, PARTS_IN_FLIGHT at once: progress means the client keeps
                # taking chunks of the body.
                watch = StreamWatch(body_limit(self._request_timeout, PART_SIZE * PARTS_IN_FLIGHT))
                stream = guarded(body, watch)
                try:
                    result = await watch_stream(
                        obstore.put_async(
                            self.inner,
                            key,
                            stream,
                            attributes=attributes,
                            chunk_size=PART_SIZE,
                            max_concurrency=PARTS_IN_FLIGHT,
                        ),
                        watch,
                    )
                finally:
                    # Finalised here, in the loop: not by obstore's runtime at exit.
                    with contextlib.suppress(RuntimeError):
                        await stream.aclose()
        except StoreError:
            raise
        except Exception as exc:
            raise self._fail(exc, key=key, op="put") from None
        self._live.answer()
        if digest is not None:
            assert isinstance(body, bytes)
            return PutResult(
                key=key, size=len(body), sha256=digest, etag=normalise_etag(result["e_tag"])
            )
        assert hasher is not None
        return PutResult(
            key=key,
            size=hasher.size,
            sha256=hasher.hexdigest(),
            etag=normalise_etag(result["e_tag"]),
        )

    async def delete(self, key: str) -> None:
        self._check(key)
        try:
            await obstore.delete_async(self.inner, key)
        except Exception as exc:
            err = self._fail(exc, key=key, op="delete")
            if not isinstance(err, NotFound):
                raise err from None
        self._live.answer()

    async def close(self) -> None:
        # obstore has no explicit close; dropping the last reference releases the client.
        # Doing it here, inside the event loop, avoids the tokio shutdown abort seen at exit.
        self._inner = None
        resumable, self.resumable = self.resumable, None
        if resumable is not None:
            await resumable.close()


async def _next_page(stream: Any) -> Any:
    # A coroutine, not ``anext(stream, None)`` handed to ensure_future: anext asks obstore for
    # the page at once, and a task cancelled before it first runs never awaits that request,
    # whose end ("stream exhausted") is then reported as "Future exception was never
    # retrieved". Here the page is asked for only once the task runs, and a cancelled task
    # cancels the request it awaits.
    return await anext(stream, None)


def _abandon(ahead: asyncio.Future[Any]) -> None:
    """Drop a prefetched page the caller no longer wants (it stopped listing), leaving no
    pending request and no exception unretrieved."""
    if not ahead.done():
        ahead.cancel()
    elif not ahead.cancelled():
        ahead.exception()  # a failed prefetch nobody reads: retrieved, so never reported


def normalise_etag(etag: str | None) -> str | None:
    """One spelling per tag: Azure quotes ETags on put/head/get but not in listings, and the
    engine compares a listed tag with the one recorded at put time."""
    if etag is None:
        return None
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"')


async def _small_or_stream(data: AsyncIterable[bytes]) -> bytes | AsyncIterator[bytes]:
    """Read ahead: a body that ends within SINGLE_PUT_MAX becomes bytes, else a stream."""
    it = aiter(data)
    head: list[bytes] = []
    size = 0
    async for chunk in it:
        head.append(bytes(chunk))
        size += len(chunk)
        if size > SINGLE_PUT_MAX:
            return _chain(head, it)
    return b"".join(head)


async def _chain(head: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    while head:
        yield head.pop(0)
    async for chunk in rest:
        yield chunk


class ObstoreReader:
    """Streaming read of one object through obstore."""

    def __init__(
        self, info: ObjectInfo, metadata: Mapping[str, str], result: Any, store: str
    ) -> None:
        self.info = info
        self.metadata = metadata
        self.attributes: Mapping[str, str] = {}
        self._result = result
        self._store = store

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._result is None:
            return
        try:
            async for chunk in self._result.stream(min_chunk_size=READ_CHUNK):
                yield bytes(chunk)
        except Exception as exc:
            raise translate(exc, store=self._store, key=self.info.key, op="read") from None

    async def views(self, piece: int = READ_CHUNK) -> AsyncIterator[memoryview]:
        """The same stream as iterating the reader, as views of obstore's own (immutable)
        buffers instead of copies, in pieces of at least ``piece`` bytes: for readers that
        pass the bytes on (the gateway)."""
        if self._result is None:
            return
        try:
            async for chunk in self._result.stream(min_chunk_size=piece):
                yield memoryview(chunk)
        except Exception as exc:
            raise translate(exc, store=self._store, key=self.info.key, op="read") from None

    async def read_all(self) -> bytes:
        if self._result is None:
            return b""
        try:
            # One call instead of a chunk loop: for small objects the loop's per-chunk round
            # trips into obstore cost more than the copy.
            return bytes(await self._result.bytes_async())
        except Exception as exc:
            raise translate(exc, store=self._store, key=self.info.key, op="read") from None


_ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AuthorizationFailure",
        "AuthenticationFailed",
        "AuthorizationPermissionMismatch",
        "NoSuchBucket",
        "ContainerNotFound",
        "AccountIsDisabled",
        "InvalidToken",
        "ExpiredToken",
        "UserSuspended",
        "AllAccessDisabled",
        "AccountProblem",
        "InsufficientAccountPermissions",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ServerBusy",
        "TooManyRequests",
        "InternalError",
        "ServiceUnavailable",
        "OperationTimedOut",
        "RequestTimeout",
        # The body arrived other than it was sent (checked against its checksum): nothing
        # was stored, and sending it again may succeed.
        "BadDigest",
        "InvalidDigest",
        "XAmzContentSHA256Mismatch",
        "XAmzContentChecksumMismatch",
        "Md5Mismatch",
        "IncompleteBody",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "BlobNotFound", "ResourceNotFound"})
# Permanent like a refusal, but not the credentials' fault: say so.
_MISSING_CONTAINER_CODES = frozenset({"NoSuchBucket", "ContainerNotFound"})
_CODE = re.compile(r"<Code>([A-Za-z0-9.]+)</Code>")
_STATUS = re.compile(r"status(?: code)?: (\d{3})")
_NETWORK = re.compile(
    r"timed out|timeout error|connection|reset by peer|broken pipe|"
    r"error sending request|incomplete message",
    re.IGNORECASE,
)


def translate(exc: BaseException, *, store: str, key: str | None, op: str) -> StoreError:
    """Map an obstore/OS exception to daulat's hierarchy with a secret-free message.

    Raw SDK messages can carry signed URLs and request headers, so they are never echoed: the
    message names the provider's error code or HTTP status only.
    """
    if isinstance(exc, StoreError):
        return exc
    where = f"{op} {key!r}" if key is not None else op
    text = str(exc)
    code_m = _CODE.search(text)
    status_m = _STATUS.search(text)
    code = code_m.group(1) if code_m else None
    status = int(status_m.group(1)) if status_m else None
    reason = code or (f"HTTP {status}" if status else None)
    if "no credentials found" in text or "cannot load credentials" in text:
        # Raised by the store's credential chain inside obstore's callback.
        return AccessDenied(
            f"store {store!r} refused {where}: no usable credentials (see `daulat stores`)",
            store=store,
            key=key,
        )
    if reason is None:
        lowered = text.lower()
        if isinstance(exc, TimeoutError):
            reason = "timed out"
        elif "connect" in lowered and ("refused" in lowered or "tcp" in lowered):
            reason = "cannot connect"
        elif "timed out" in lowered or "timeout" in lowered:
            reason = "timed out"
        else:
            reason = type(exc).__name__
    if (
        isinstance(exc, FileNotFoundError)
        or code in _NOT_FOUND_CODES
        or (status == 404 and code is None)
    ):
        return NotFound(f"store {store!r}: {key!r} does not exist", store=store, key=key)
    if code in _MISSING_CONTAINER_CODES:
        return AccessDenied(
            f"store {store!r} refused {where} ({reason}): the bucket/container does not exist",
            store=store,
            key=key,
        )
    if (
        isinstance(exc, (oe.PermissionDeniedError, oe.UnauthenticatedError))
        or code in _ACCESS_CODES
        or status in (401, 403)
    ):
        return AccessDenied(
            f"store {store!r} refused {where} ({reason}): credentials may be wrong or "
            "revoked, or the bucket/account may be missing or disabled",
            store=store,
            key=key,
        )
    if isinstance(exc, ValueError) and "path" in text.lower():
        return InvalidKey(f"store {store!r} cannot address key {key!r}", store=store, key=key)
    if isinstance(exc, oe.NotSupportedError):
        return Unsupported(f"store {store!r} does not support {op}", store=store, key=key)
    if (
        code in _TRANSIENT_CODES
        or status == 429
        or (status is not None and status >= 500)
        or isinstance(exc, (TimeoutError, ConnectionError))
        or (status is None and _NETWORK.search(text))
    ):
        return Transient(f"store {store!r}: {where} failed ({reason})", store=store, key=key)
    return StoreError(f"store {store!r}: {where} failed ({reason})", store=store, key=key)
