"""Google Cloud Storage stores (``gs://bucket[/prefix]``), through Google's own client.

Why this client and not obstore
    obstore's ``GCSStore`` writes through GCS's XML API, which the emulator the tests run
    (fake-gcs-server) does not implement, so its writes could never be tested here. Every
    request of this store goes through ``google-cloud-storage`` instead (Google's maintained
    client, JSON API): listings, metadata, downloads, deletes and uploads alike. So the code the
    conformance suite runs against the emulator is the code that talks to Google, with one
    credential chain (:mod:`.gcscreds`) and one request timeout per store. The client blocks;
    its calls run on worker threads and bodies cross to the event loop through bounded pipes
    (:mod:`.threadio`), so memory stays flat whatever the object's size.

Uploads
    A body of up to 8 MiB is one multipart request whose JSON part carries the body's CRC32C:
    Google checks it against the bytes it received and refuses the object on a mismatch. A
    longer (streamed) body is a resumable upload in 8 MiB chunks whose last chunk carries
    ``X-Goog-Hash: crc32c=...`` of the whole body (google-cloud-storage 3.7 and later), checked
    by Google before the object becomes visible. Nothing is visible before the last chunk is
    accepted, so a failed or abandoned upload leaves the key as it was, and the session is
    cancelled. Afterwards the CRC32C Google reports for the stored object is compared with the
    one of the bytes sent; a mismatch (possible only where the server does not check, as the
    emulator does not) deletes exactly that generation and fails the put as Transient.
    ``on_upload(key, session_uri)`` is called once the resumable session exists and before its
    first byte is sent. The session URI is a bearer capability (whoever holds it can write that
    upload), so no message, log line or exception of this store contains it.

Resuming
    :meth:`GcsStore.put_resumable` keeps a session open when its upload fails, for a later
    process to continue from the bytes Google holds (its status query); the whole body's CRC32C
    is what checks the kept bytes, as Google keeps none per chunk. See
    :mod:`daulat.stores.resumable` and :mod:`daulat.transfer.resume`.

Reads
    ``get`` reads the object's resource first (size, generation, hashes, user metadata) and then
    downloads that generation only: an object replaced in between fails the read with
    :class:`~daulat.errors.SourceChanged` instead of mixing two versions. The client checks a
    whole-object download against Google's CRC32C. ``get(key, start=0, end=0)`` is the resource
    alone.

Names
    Every name Google accepts is kept exactly: ``.`` and ``..`` segments, ``//``, leading and
    trailing ``/``, control characters other than CR and LF. The JSON API carries a name as one
    URL-encoded path segment, so nothing resolves or renames it. Names Google refuses are refused
    per object with :class:`~daulat.errors.InvalidKey`: CR or LF, ``.`` or ``..`` as the whole
    name, a name starting with ``.well-known/acme-challenge/``, more than 1,024 bytes (the rules
    hold for the full name, the store's prefix included).

Hashes
    Listings and heads report Google's own hashes in ``ObjectInfo.checksums``: ``crc32c``
    always, ``md5`` when Google has one (composite objects have none), as lower-case hex.
    ``etag`` is the JSON API's ETag, ``etag_scheme`` ``gcs``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import re
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

import google_crc32c

from daulat.config import StoreConfig
from daulat.errors import (
    AccessDenied,
    ConfigError,
    InvalidKey,
    NotFound,
    SourceChanged,
    StoreError,
    Transient,
    Unresponsive,
)
from daulat.stores.base import MAX_KEY_BYTES, Capabilities, ObjectInfo, OnUpload, PutResult
from daulat.stores.gcscreds import GcsCredentialChain
from daulat.stores.gcserrors import bucket_missing, translate
from daulat.stores.hashing import StreamHasher, body_digest, hashed
from daulat.stores.listguard import ListingGuard
from daulat.stores.objectstore import METADATA_PREFIX, normalise_etag
from daulat.stores.objectstore import _small_or_stream as small_or_stream
from daulat.stores.resumable import OnSession, ResumeStats, Session, UploadGone
from daulat.stores.threadio import (
    Abandoned,
    DaemonPool,
    FromLoop,
    PipeWriter,
    ToLoop,
    TooLong,
    in_thread,
)

T = TypeVar("T")

MiB = 1024 * 1024
DEFAULT_ENDPOINT = "https://storage.googleapis.com"
#: Bodies up to this size are sent as one request (the same bound as the other stores').
SINGLE_PUT_MAX = 8 * MiB
#: A resumable upload's chunk: a multiple of 256 KiB (Google's rule). Chunks are sent one after
#: the other, so larger ones are faster on long links; this size keeps a put's memory at two
#: chunks, as the S3 store's two parts in flight.
CHUNK_SIZE = 8 * MiB
#: Bytes of the body read ahead of the upload, so that reading the source overlaps sending.
FEED_AHEAD = 8 * MiB
READ_CHUNK = 1 * MiB
#: Download chunks waiting for the reader.
READ_DEPTH = 4
LIST_PAGE = 1000
#: Connections kept per store (requests' default, 10, would drop and reopen connections
#: under the engine's default concurrency).
POOL_CONNECTIONS = 128
OCTET_STREAM = "application/octet-stream"
#: Seconds within which the client retries one request itself (throttling, 5xx, resets).
RETRY_WINDOW = 5.0
_ACME = ".well-known/acme-challenge/"
#: What Google answers for a resumable session it no longer has: 404 or 410 (expired, unknown),
#: 499 (cancelled).
_SESSION_GONE = (404, 410, 499)
#: A status query's answer: the bytes Google holds, ``bytes=0-LAST``.
_RANGE = re.compile(r"bytes=0-(\d+)")
#: The listing fields daulat reads; Google sends only these.
_LIST_FIELDS = "items(name,size,updated,etag,crc32c,md5Hash,generation),nextPageToken"
#: Threads for the short requests of every GCS store (transfers get threads of their own).
_POOL = DaemonPool(64, name="gcs")


def open_gcs(cfg: StoreConfig, env: Mapping[str, str] | None = None) -> GcsStore:
    """The store of a ``gs://`` config (reads credentials files; no network I/O)."""
    try:
        import google.auth
        import google.cloud.storage  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"store {cfg.name!r}: gs:// stores need the Google Cloud Storage client: "
            "pip install 'daulat[gcs]'"
        ) from None
    chain = GcsCredentialChain.for_store(cfg, env)
    return GcsStore(
        cfg.name,
        cfg.bucket,
        cfg.prefix,
        endpoint=(cfg.endpoint or DEFAULT_ENDPOINT).rstrip("/"),
        chain=chain,
        request_timeout=cfg.request_timeout,
    )


def gcs_name_problem(name: str) -> str | None:
    """Why Google Cloud Storage refuses the object name ``name``, or None."""
    if not name:
        return "empty key"
    if "\r" in name or "\n" in name:
        return "Google Cloud Storage names cannot contain CR or LF"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "not valid UTF-8"
    if size > MAX_KEY_BYTES:
        return f"longer than {MAX_KEY_BYTES} bytes (with the store's prefix)"
    if name in (".", ".."):
        return f"Google Cloud Storage names cannot be {name!r}"
    if name.startswith(_ACME):
        return f"Google Cloud Storage names cannot start with {_ACME!r}"
    return None


class _Client:
    """The Google client of one store, built on first use (credentials may need the network)."""

    def __init__(self, client: Any, bucket: Any, session: Any) -> None:
        self.client = client
        self.bucket = bucket
        self.session = session


class GcsStore:
    """Store adapter over ``google-cloud-storage``; see the module docstring."""

    def __init__(
        self,
        name: str,
        bucket: str,
        prefix: str,
        *,
        endpoint: str,
        chain: GcsCredentialChain,
        request_timeout: float | None,
    ) -> None:
        self._name = name
        self._bucket_name = bucket
        self._prefix = prefix
        self._endpoint = endpoint
        self._chain = chain
        self._request_timeout = request_timeout
        self._timeout: tuple[float, float | None] = (
            (min(request_timeout, 10.0), request_timeout)
            if request_timeout is not None
            else (10.0, None)
        )
        self._lock = threading.Lock()
        self._handle: _Client | None = None
        self._closed = False
        self._answered = False  # whether the endpoint has ever answered a request
        self._capabilities = Capabilities(user_metadata=True, server_side_copy=False)

    # ------------------------------------------------------------------ plumbing

    @property
    def name(self) -> str:
        return self._name

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def credential_source(self) -> str:
        """Where this store's credentials come from (see :mod:`.gcscreds`)."""
        return self._chain.source

    def _client(self) -> _Client:
        """(Thread) The client, built once."""
        with self._lock:
            if self._closed:
                raise StoreError(f"store {self._name!r} is closed", store=self._name)
            if self._handle is None:
                self._handle = self._build()
            return self._handle

    def _build(self) -> _Client:
        from google.auth.transport.requests import AuthorizedSession
        from google.cloud.storage.client import Client
        from requests.adapters import HTTPAdapter

        credentials = self._chain.credentials()
        session = AuthorizedSession(  # type: ignore[no-untyped-call]
            credentials, refresh_timeout=self._timeout[1]
        )
        # No retries inside urllib3: the client's own retry (below) and daulat's retry layer
        # decide, and urllib3's retry warnings would print request URLs.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_CONNECTIONS, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        client = Client(
            project=None,  # objects need no project; None also skips looking for one
            credentials=credentials,
            _http=session,
            client_options={"api_endpoint": self._endpoint},
        )
        # google-cloud-storage 3.x fetches each bucket's metadata in a background thread for
        # its tracing; daulat traces nothing, and the request needs a permission (buckets.get)
        # a store's role may rightly lack.
        if getattr(client, "_bucket_metadata_cache", None) is not None:
            client._bucket_metadata_cache = None
        return _Client(client, client.bucket(self._bucket_name), session)

    def _retry(self) -> Any:
        """The client's own retry of one request: brief, a few seconds at most (daulat's retry
        layer backs off per object and lowers the concurrency), and none after a request that
        timed out, so that a silent endpoint fails after one request timeout."""
        from google.cloud.storage.retry import DEFAULT_RETRY

        limit = self._request_timeout if self._request_timeout is not None else RETRY_WINDOW
        return DEFAULT_RETRY.with_delay(initial=0.05, maximum=1.0, multiplier=2.0).with_timeout(
            min(limit, RETRY_WINDOW)
        )

    def _full(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    def _check(self, key: str) -> str:
        """The object name of ``key``; :class:`InvalidKey` when Google would refuse it."""
        reason = "empty key" if not key else gcs_name_problem(self._full(key))
        if reason is not None:
            raise InvalidKey(
                f"store {self._name!r} cannot hold key {key!r}: {reason}", store=self._name, key=key
            )
        return self._full(key)

    def _fail(self, exc: BaseException, *, key: str | None, op: str) -> StoreError:
        """``exc`` as a daulat error; a timeout of an endpoint that never answered anything is
        :class:`Unresponsive` (the run stops rather than retrying a dead endpoint)."""
        err, timed_out = translate(exc, store=self._name, key=key, op=op)
        if not timed_out:
            if not isinstance(err, Transient):
                self._answered = True
            return err
        if self._answered:
            return err
        limit = f"{self._request_timeout:g} s" if self._request_timeout else "the time limit"
        return Unresponsive(
            f"store {self._name!r}: {op} failed: no answer within {limit} (request_timeout); "
            "is the endpoint right and up?",
            store=self._name,
            key=key,
        )

    async def _call(self, fn: Callable[[_Client], T], *, key: str | None, op: str) -> T:
        """Run one blocking request on a worker thread, errors translated."""
        if self._closed:
            raise StoreError(f"store {self._name!r} is closed", store=self._name)
        try:
            result = await _POOL.run(lambda: fn(self._client()))
        except StoreError:
            raise
        except Exception as exc:
            raise self._fail(exc, key=key, op=op) from None
        self._answered = True
        return result

    def _info(self, blob: Any) -> ObjectInfo:
        name: str = blob.name
        key = name[len(self._prefix) + 1 :] if self._prefix else name
        checksums: dict[str, str] = {}
        for label, value in (("crc32c", blob.crc32c), ("md5", blob.md5_hash)):
            digest = _hex(value)
            if digest is not None:
                checksums[label] = digest
        return ObjectInfo(
            key=key,
            size=int(blob.size or 0),
            modified=blob.updated or datetime.fromtimestamp(0, UTC),
            etag=normalise_etag(blob.etag),
            etag_scheme="gcs",
            checksums=checksums,
        )

    # ------------------------------------------------------------------ reads

    async def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        full = f"{self._prefix}/{prefix}" if self._prefix else prefix
        pages: list[Any] = []  # the client's page iterator, once the first request made it

        def next_page(h: _Client) -> list[Any] | None:
            if not pages:
                listing = h.client.list_blobs(
                    h.bucket,
                    prefix=full or None,
                    page_size=LIST_PAGE,
                    fields=_LIST_FIELDS,
                    timeout=self._timeout,
                    retry=self._retry(),
                )
                pages.append(iter(listing.pages))
            page = next(pages[0], None)
            return None if page is None else list(page)

        # Ask for the next page while the caller works on this one: a listing is a chain of
        # round trips, and overlapping them with the caller's work hides their latency.
        ahead = asyncio.ensure_future(self._call(next_page, key=None, op="list"))
        # The client follows the page tokens: a listing stuck on one page shows as keys
        # listed again (daulat.stores.listguard).
        guard = ListingGuard(self.name, ordered=False)
        try:
            while True:
                page = await ahead
                if page is None:
                    return
                ahead = asyncio.ensure_future(self._call(next_page, key=None, op="list"))
                # Only names under the asked prefix (a listing is the provider's word).
                batch = [self._info(b) for b in page if str(b.name).startswith(full)]
                guard.page([o.key for o in batch])
                if batch:
                    yield batch
        finally:
            # The caller stopped early: the page asked for ahead is not wanted, nor its error.
            ahead.cancel()
            ahead.add_done_callback(_retrieve)

    def _reload(self, h: _Client, name: str) -> Any:
        from google.cloud.storage.blob import Blob

        blob = Blob(name, h.bucket)
        blob.reload(timeout=self._timeout, retry=self._retry())
        return blob

    async def head(self, key: str) -> ObjectInfo:
        name = self._check(key)
        blob = await self._call(lambda h: self._reload(h, name), key=key, op="head")
        return self._info(blob)

    async def get(self, key: str, *, start: int = 0, end: int | None = None) -> GcsReader:
        name = self._check(key)
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"invalid range [{start}, {end})")
        blob = await self._call(lambda h: self._reload(h, name), key=key, op="get")
        info = self._info(blob)
        metadata = {
            k[len(METADATA_PREFIX) :]: v
            for k, v in (blob.metadata or {}).items()
            if k.startswith(METADATA_PREFIX)
        }
        stop = info.size if end is None else min(end, info.size)
        if start >= stop:
            return GcsReader(info, metadata, None)
        generation = blob.generation
        whole = start == 0 and stop == info.size

        def download(h: _Client, pipe: ToLoop) -> None:
            self._download(h, name, generation, start, stop, whole, pipe)

        return GcsReader(info, metadata, functools.partial(self._stream, key, download))

    def _download(
        self,
        h: _Client,
        name: str,
        generation: int | None,
        start: int,
        stop: int,
        whole: bool,
        pipe: ToLoop,
    ) -> None:
        """(Thread) Download ``[start, stop)`` of one generation into ``pipe``."""
        from google.cloud.storage.blob import Blob

        # A fresh Blob: its URL is built from the endpoint and the generation, never from a
        # mediaLink the server sent.
        blob = Blob(name, h.bucket, generation=generation)
        writer = PipeWriter(pipe, READ_CHUNK, limit=stop - start)
        blob.download_to_file(
            writer,
            client=h.client,
            start=None if whole else start,
            end=None if whole else stop - 1,
            raw_download=True,  # the stored bytes, never a decompressed rendition
            checksum="crc32c" if whole else None,
            timeout=self._timeout,
            retry=self._retry(),
        )
        if writer.written != stop - start:
            # Fewer bytes than the object's resource promised for this range: not its content.
            raise TooLong(f"{writer.written} bytes where {stop - start} were asked for")
        writer.flush()

    async def _stream(
        self, key: str, download: Callable[[_Client, ToLoop], None]
    ) -> AsyncIterator[bytes]:
        """Run ``download`` on a thread and yield what it writes, until it ends or fails."""
        pipe = ToLoop(asyncio.get_running_loop(), READ_DEPTH)

        def run() -> None:
            try:
                download(self._client(), pipe)
            except Abandoned:
                return
            except BaseException as exc:
                pipe.finish(exc)
                return
            pipe.finish()

        thread = in_thread(run, name="gcs-download")
        try:
            while True:
                try:
                    chunk = await pipe.receive()
                except StoreError:
                    raise
                except TooLong:
                    raise Transient(
                        f"store {self._name!r}: read {key!r} failed: the server sent another "
                        "number of bytes than the object has",
                        store=self._name,
                        key=key,
                    ) from None
                except Exception as exc:
                    err = self._fail(exc, key=key, op="read")
                    if isinstance(err, NotFound):
                        # The generation read a moment ago is gone: replaced or deleted.
                        err = SourceChanged(
                            f"store {self._name!r}: {key!r} changed while it was read",
                            store=self._name,
                            key=key,
                        )
                    raise err from None
                if chunk is None:
                    return
                self._answered = True
                yield chunk
        finally:
            pipe.close()
            thread.cancel()

    # ------------------------------------------------------------------ writes

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
        self, h: _Client, key: str, name: str, body: bytes, user: Mapping[str, str]
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
        self._check_stored(h, key, name, blob.crc32c, blob.generation, _crc32c(body))
        return blob

    def _check_stored(
        self,
        h: _Client,
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

    def _discard(self, h: _Client, name: str, generation: int | None) -> None:
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

    def _initiate(self, h: _Client, name: str, user: Mapping[str, str], feed: FromLoop) -> Any:
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
        h: _Client,
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
            generation = _generation(getattr(exc, "response", None))
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
            elif status in _SESSION_GONE:
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
            self._discard(h, name, _generation(response))
            raise failed(
                f"store {self._name!r}: put {key!r}: the server ended the upload early; the "
                f"object was removed{again}",
                store=self._name,
                key=key,
            )
        return resource

    def _cancel(self, h: _Client, upload: Any) -> None:
        """(Thread) Cancel a resumable session (best effort); nothing of it becomes visible."""
        url = upload.resumable_url
        if url is None or upload.finished:
            return
        with contextlib.suppress(Exception):
            h.session.delete(url, timeout=self._timeout)

    # ------------------------------------------------------------------ resumable uploads

    @property
    def location(self) -> str:
        """Endpoint, bucket and prefix: where the journal's sessions of this store belong."""
        return f"{self._endpoint}/{self._bucket_name}/{self._prefix}"

    @property
    def part_size(self) -> int:
        return CHUNK_SIZE

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
        """A resumable upload that a later process can continue (see
        :mod:`daulat.stores.resumable`); ``session.upload_id`` is the session URI.

        Continuing: Google is asked how many bytes of the session it holds (a status query,
        ``Content-Range: bytes */*``). That many bytes of ``data`` are read again from the
        source and not sent: they go into the SHA-256 and into the CRC32C of the whole body,
        whose ``X-Goog-Hash`` Google checks with the last chunk, and which the finished
        object's CRC32C must equal. Google keeps no per-chunk checksums, so this is where
        kept bytes that differ from the source are found: the object is refused (or removed)
        and :class:`UploadGone` makes the next attempt begin a new session. A session Google
        no longer has (cancelled, expired after a week) is :class:`UploadGone` before
        anything of ``data`` is read. ``metadata`` is fixed when a session begins.
        """
        name = self._check(key)
        hasher = StreamHasher()
        stream = hashed(aiter(data), hasher, expected=None, store=self._name, key=key)
        loop = asyncio.get_running_loop()
        feed = FromLoop(loop, FEED_AHEAD)
        kept = 0
        if session is None:
            user = {METADATA_PREFIX + k: v for k, v in (metadata or {}).items()}
            upload = await self._call(
                lambda h: self._initiate(h, name, user, feed), key=key, op="put"
            )
            try:
                # The caller records the session before any byte is sent.
                on_session(Session(upload.resumable_url, CHUNK_SIZE))
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._call(lambda h: self._cancel(h, upload), key=key, op="put")
                raise
        else:
            url = self._own_session(key, session)
            state = await self._call(lambda h: self._status(h, key, url), key=key, op="resume")
            stats.resumed = True
            if isinstance(state, dict):
                return await self._finished(key, name, state, stream, hasher, stats)
            kept = state
            upload = self._continued(url, feed)
            stats.kept_bytes = kept
            stats.kept_parts = -(-kept // CHUNK_SIZE)
        pump = asyncio.ensure_future(feed.pump(stream))

        def transmit() -> dict[str, Any]:
            if kept:
                self._skip(key, upload, feed, kept)
            return self._transmit(self._client(), key, name, upload, feed, stats)

        try:
            resource = await in_thread(transmit, name="gcs-upload")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if feed.error is not None:
                raise feed.error from None  # the body's own error, unchanged
            if isinstance(exc, StoreError):
                raise
            raise self._fail(exc, key=key, op="put") from None
        finally:
            feed.close()
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            with contextlib.suppress(RuntimeError):
                await stream.aclose()
        return PutResult(
            key=key,
            size=hasher.size,
            sha256=hasher.hexdigest(),
            etag=normalise_etag(resource.get("etag")),
        )

    async def abort_session(self, key: str, session: Session) -> None:
        """Cancel the session at Google (succeeds when it is gone already)."""
        try:
            url = self._own_session(key, session)
        except UploadGone:
            return  # not a session of this endpoint: nothing daulat may send it to

        def cancel(h: _Client) -> None:
            reply = h.session.delete(url, timeout=self._timeout)
            if reply.status_code not in (200, 204, *_SESSION_GONE):
                raise self._status_error(key, reply.status_code, "cancel upload")

        await self._call(cancel, key=key, op="cancel upload")

    def _own_session(self, key: str, session: Session) -> str:
        """The session URI, if it is one of this store's endpoint: requests to it carry the
        store's access token, which must go nowhere else (the URI comes from the journal, and
        first from a ``Location`` header)."""
        url = session.upload_id
        if not url.startswith(f"{self._endpoint}/upload/"):
            raise UploadGone(
                f"store {self._name!r}: the recorded upload of {key!r} is not one of this "
                "store's endpoint; it starts again",
                store=self._name,
                key=key,
            )
        return url

    def _gone(self, key: str) -> UploadGone:
        return UploadGone(
            f"store {self._name!r}: Google no longer has the upload session of {key!r} "
            "(cancelled or expired); it starts again",
            store=self._name,
            key=key,
        )

    def _status_error(self, key: str, status: int, op: str) -> StoreError:
        """A daulat error for an HTTP status (never the URL: it is a capability)."""
        where = f"store {self._name!r}: {op} {key!r}"
        if status in (401, 403):
            return AccessDenied(f"{where} refused (HTTP {status})", store=self._name, key=key)
        if status in (408, 429) or status >= 500:
            return Transient(f"{where} failed (HTTP {status})", store=self._name, key=key)
        return StoreError(f"{where} failed (HTTP {status})", store=self._name, key=key)

    def _status(self, h: _Client, key: str, url: str) -> int | dict[str, Any]:
        """(Thread) How many bytes Google holds for the session (its status query), or the
        object resource when the session was finished already; :class:`UploadGone` when
        Google no longer has it."""
        reply = h.session.put(
            url, data=b"", headers={"Content-Range": "bytes */*"}, timeout=self._timeout
        )
        status = reply.status_code
        if status in _SESSION_GONE:
            raise self._gone(key)
        if status in (200, 201):
            resource: dict[str, Any] = reply.json()
            return resource
        if status != 308:
            raise self._status_error(key, status, "resume upload")
        held = reply.headers.get("Range")
        if held is None:
            return 0  # nothing persisted yet
        match = _RANGE.fullmatch(held.strip())
        if match is None:
            raise Transient(
                f"store {self._name!r}: resume upload {key!r}: Google answered an unreadable Range",
                store=self._name,
                key=key,
            )
        return int(match.group(1)) + 1

    def _continued(self, url: str, feed: FromLoop) -> Any:
        """A ResumableUpload for an existing session, as ``initiate`` would leave it (the
        client's own documentation sets these attributes to the same end)."""
        from google.cloud.storage._media.requests import ResumableUpload

        upload = ResumableUpload(  # type: ignore[no-untyped-call]
            url, CHUNK_SIZE, checksum="crc32c", retry=self._retry()
        )
        upload._resumable_url = url
        upload._stream = feed
        upload._content_type = OCTET_STREAM
        upload._total_bytes = None  # streamed: the size is told with the last chunk
        return upload

    def _skip(self, key: str, upload: Any, feed: FromLoop, kept: int) -> None:
        """(Thread) Read the ``kept`` bytes Google holds from the body without sending them,
        taking them into the whole body's CRC32C (``X-Goog-Hash`` with the last chunk)."""
        crc = google_crc32c.Checksum()  # type: ignore[no-untyped-call]
        left = kept
        while left:
            piece = feed.read(min(left, READ_CHUNK))
            if not piece:
                # Google holds more than the source has: not an upload of this source.
                raise UploadGone(
                    f"store {self._name!r}: the interrupted upload of {key!r} holds more bytes "
                    "than the source has; it starts again",
                    store=self._name,
                    key=key,
                )
            crc.update(piece)  # type: ignore[no-untyped-call]
            left -= len(piece)
        upload._checksum_object = crc
        upload._bytes_checksummed = kept
        upload._bytes_uploaded = kept

    async def _finished(
        self,
        key: str,
        name: str,
        resource: dict[str, Any],
        stream: AsyncIterator[bytes],
        hasher: StreamHasher,
        stats: ResumeStats,
    ) -> PutResult:
        """The session had finished (the run stopped before it noted so): the object stands if
        it is the source's bytes (size and CRC32C), else that generation is removed and the
        upload starts again."""
        crc = 0
        try:
            async for chunk in stream:
                crc = google_crc32c.extend(crc, chunk)
        finally:
            with contextlib.suppress(RuntimeError):
                await stream.aclose()  # type: ignore[attr-defined]
        sent = base64.b64encode(crc.to_bytes(4, "big")).decode("ascii")
        if resource.get("crc32c") == sent and int(resource.get("size", -1)) == hasher.size:
            stats.kept_bytes = hasher.size
            stats.kept_parts = -(-hasher.size // CHUNK_SIZE)
            return PutResult(
                key=key,
                size=hasher.size,
                sha256=hasher.hexdigest(),
                etag=normalise_etag(resource.get("etag")),
            )
        generation = resource.get("generation")
        await self._call(
            lambda h: self._discard(h, name, int(generation) if generation else None),
            key=key,
            op="put",
        )
        raise UploadGone(
            f"store {self._name!r}: put {key!r}: the object an interrupted upload left differs "
            "from the source (CRC32C); it was removed and the upload starts again",
            store=self._name,
            key=key,
        )

    async def delete(self, key: str) -> None:
        name = self._check(key)

        def delete(h: _Client) -> None:
            from google.api_core.exceptions import NotFound as GoogleNotFound

            try:
                h.bucket.delete_blob(name, timeout=self._timeout, retry=self._retry())
            except GoogleNotFound as exc:
                if bucket_missing(exc):
                    raise

        await self._call(delete, key=key, op="delete")

    async def close(self) -> None:
        with self._lock:
            self._closed = True
            handle, self._handle = self._handle, None
        if handle is not None:
            with contextlib.suppress(Exception):
                handle.session.close()


class GcsReader:
    """A streaming read of one object (or a range of it) from Google Cloud Storage."""

    def __init__(
        self,
        info: ObjectInfo,
        metadata: Mapping[str, str],
        open_stream: Callable[[], AsyncIterator[bytes]] | None,
    ) -> None:
        self.info = info
        self.metadata = metadata
        self._open = open_stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._open is None:
            return
        stream = self._open()
        try:
            async for chunk in stream:
                yield chunk
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    async def read_all(self) -> bytes:
        return b"".join([chunk async for chunk in self])


# ---------------------------------------------------------------------------------- helpers


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Take a finished future's exception, so that nobody logs it as never retrieved."""
    if not future.cancelled():
        future.exception()


def _hex(value: str | None) -> str | None:
    """Google's base64 hash as lower-case hex; None for none, or one that is not base64."""
    if not value:
        return None
    try:
        return base64.b64decode(value, validate=True).hex()
    except (ValueError, TypeError):
        return None


def _crc32c(body: bytes) -> str:
    """The CRC32C of ``body`` as Google writes it (base64 of the big-endian value)."""
    return base64.b64encode(google_crc32c.value(body).to_bytes(4, "big")).decode("ascii")


def _generation(response: Any) -> int | None:
    try:
        return int(response.json()["generation"])
    except Exception:
        return None
