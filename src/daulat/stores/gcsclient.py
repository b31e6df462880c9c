"""The plumbing of the Google Cloud Storage store: its client, its requests, its names.

:class:`GcsBase` builds the ``google-cloud-storage`` client on first use (credentials may need
the network), runs each blocking request on a worker thread and translates its errors into
daulat's (:meth:`GcsBase._call`). The reads (:mod:`.gcsread`), uploads (:mod:`.gcsupload`) and
resumable sessions (:mod:`.gcsresume`) build on it; :mod:`.gcs` puts them together as
:class:`~daulat.stores.gcs.GcsStore`, whose docstring says what the store promises.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import google_crc32c

from daulat.errors import InvalidKey, StoreError, Transient
from daulat.stores.base import MAX_KEY_BYTES, Capabilities, ObjectInfo
from daulat.stores.gcscreds import GcsCredentialChain
from daulat.stores.gcserrors import translate
from daulat.stores.objectstore import normalise_etag
from daulat.stores.threadio import DaemonPool
from daulat.stores.timeouts import Liveness

T = TypeVar("T")

MiB = 1024 * 1024
DEFAULT_ENDPOINT = "https://storage.googleapis.com"
#: Custom metadata of one object: at most 8 KiB of names and values (Cloud Storage quotas).
GCS_MAX_METADATA = 8 * 1024
#: Bytes per read of a body (downloads, and the kept bytes of a continued upload).
READ_CHUNK = 1 * MiB
#: Connections kept per store (requests' default, 10, would drop and reopen connections
#: under the engine's default concurrency).
POOL_CONNECTIONS = 128
#: Seconds within which the client retries one request itself (throttling, 5xx, resets).
RETRY_WINDOW = 5.0
_ACME = ".well-known/acme-challenge/"
#: Threads for the short requests of every GCS store (transfers get threads of their own).
_POOL = DaemonPool(64, name="gcs")


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


class GcsHandle:
    """The Google client of one store, built on first use (credentials may need the network)."""

    def __init__(self, client: Any, bucket: Any, session: Any) -> None:
        self.client = client
        self.bucket = bucket
        self.session = session


class GcsBase:
    """What every part of the store shares: configuration, the client, requests, errors."""

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
        self._handle: GcsHandle | None = None
        self._closed = False
        self._live = Liveness(request_timeout)
        self._capabilities = Capabilities(
            user_metadata=True, server_side_copy=False, max_metadata=GCS_MAX_METADATA
        )

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

    def _client(self) -> GcsHandle:
        """(Thread) The client, built once."""
        with self._lock:
            if self._closed:
                raise StoreError(f"store {self._name!r} is closed", store=self._name)
            if self._handle is None:
                self._handle = self._build()
            return self._handle

    def _build(self) -> GcsHandle:
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
        return GcsHandle(client, client.bucket(self._bucket_name), session)

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

    def key_problem(self, key: str) -> str | None:
        """Why Google would refuse ``key`` (:class:`~daulat.stores.keys.KeyRules`)."""
        return "empty key" if not key else gcs_name_problem(self._full(key))

    def _check(self, key: str) -> str:
        """The object name of ``key``; :class:`InvalidKey` when Google would refuse it."""
        reason = self.key_problem(key)
        if reason is not None:
            raise InvalidKey(
                f"store {self._name!r} cannot hold key {key!r}: {reason}", store=self._name, key=key
            )
        return self._full(key)

    def _fail(self, exc: BaseException, *, key: str | None, op: str) -> StoreError:
        """``exc`` as a daulat error; an endpoint that never answered, or stopped answering for
        good, is :class:`Unresponsive` (the run stops rather than retrying a dead endpoint)."""
        err, timed_out = translate(exc, store=self._name, key=key, op=op)
        refused = "(cannot connect)" in str(err)
        if timed_out or refused:
            return (
                self._live.unresponsive(refused=refused, store=self._name, key=key, where=op) or err
            )
        if not isinstance(err, Transient):
            self._live.answer()
        return err

    async def _call(self, fn: Callable[[GcsHandle], T], *, key: str | None, op: str) -> T:
        """Run one blocking request on a worker thread, errors translated."""
        if self._closed:
            raise StoreError(f"store {self._name!r} is closed", store=self._name)
        try:
            result = await _POOL.run(lambda: fn(self._client()))
        except StoreError:
            raise
        except Exception as exc:
            raise self._fail(exc, key=key, op=op) from None
        self._live.answer()
        return result

    def _info(self, blob: Any) -> ObjectInfo:
        name: str = blob.name
        key = name[len(self._prefix) + 1 :] if self._prefix else name
        checksums: dict[str, str] = {}
        for label, value in (("crc32c", blob.crc32c), ("md5", blob.md5_hash)):
            digest = b64_hex(value)
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

    async def close(self) -> None:
        with self._lock:
            self._closed = True
            handle, self._handle = self._handle, None
        if handle is not None:
            with contextlib.suppress(Exception):
                handle.session.close()


def retrieve_quietly(future: asyncio.Future[Any]) -> None:
    """Take a finished future's exception, so that nobody logs it as never retrieved."""
    if not future.cancelled():
        future.exception()


def b64_hex(value: str | None) -> str | None:
    """Google's base64 hash as lower-case hex; None for none, or one that is not base64."""
    if not value:
        return None
    try:
        return base64.b64decode(value, validate=True).hex()
    except (ValueError, TypeError):
        return None


def crc32c_b64(body: bytes) -> str:
    """The CRC32C of ``body`` as Google writes it (base64 of the big-endian value)."""
    return base64.b64encode(google_crc32c.value(body).to_bytes(4, "big")).decode("ascii")


def generation_of(response: Any) -> int | None:
    try:
        return int(response.json()["generation"])
    except Exception:
        return None
