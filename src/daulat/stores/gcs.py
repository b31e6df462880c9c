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

Layout
    The store is put together from one module per concern: the client, requests and errors
    (:mod:`.gcsclient`), reads (:mod:`.gcsread`), uploads (:mod:`.gcsupload`), resumable
    sessions a later run continues (:mod:`.gcsresume`); credentials are in :mod:`.gcscreds` and
    the translation of Google's errors in :mod:`.gcserrors`.
"""

from __future__ import annotations

from collections.abc import Mapping

from daulat.config import StoreConfig
from daulat.errors import ConfigError
from daulat.stores.gcsclient import DEFAULT_ENDPOINT, GcsHandle, gcs_name_problem
from daulat.stores.gcscreds import GcsCredentialChain
from daulat.stores.gcserrors import bucket_missing
from daulat.stores.gcsread import GcsReader, GcsReads
from daulat.stores.gcsresume import GcsResumable
from daulat.stores.gcsupload import CHUNK_SIZE, SINGLE_PUT_MAX

__all__ = [
    "CHUNK_SIZE",
    "SINGLE_PUT_MAX",
    "GcsReader",
    "GcsStore",
    "gcs_name_problem",
    "open_gcs",
]


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


class GcsStore(GcsReads, GcsResumable):
    """Store adapter over ``google-cloud-storage``; see the module docstring."""

    async def delete(self, key: str) -> None:
        name = self._check(key)

        def delete(h: GcsHandle) -> None:
            from google.api_core.exceptions import NotFound as GoogleNotFound

            try:
                h.bucket.delete_blob(name, timeout=self._timeout, retry=self._retry())
            except GoogleNotFound as exc:
                if bucket_missing(exc):
                    raise

        await self._call(delete, key=key, op="delete")
