"""The Store protocol: one small interface over every kind of object store.

Contracts every implementation keeps (the conformance suite in ``tests/conformance`` checks them):

Keys
    A key is a non-empty UTF-8 string of at most 1,024 bytes. ``/`` separates segments. Every store
    accepts *portable* keys: no empty segment (no leading, trailing or doubled ``/``), no ``.`` or
    ``..`` segment, no NUL or other control character. A store may refuse more (the filesystem
    refuses backslashes and segments over 255 bytes); a refused key raises :class:`InvalidKey` for
    that object only and writes nothing. A key the store could never hold is refused with
    :class:`InvalidKey` by ``head``, ``get`` and ``delete`` too (never ``NotFound`` or a silent
    delete), and ``list`` refuses a prefix no such key starts with (:mod:`daulat.stores.keys`).
    Keys are compared as exact strings: NFC and NFD spellings of one word are two keys.
Atomic put
    :meth:`Store.put` either makes the complete object visible under its key or leaves the key as it
    was. No reader ever sees a partial object. When ``sha256`` is given and the content does not
    match, the put raises :class:`IntegrityError` and nothing is left behind.
Streaming
    ``put`` accepts an async iterable of chunks and ``get`` returns an async iterator, so memory
    stays bounded by the chunk and part sizes, never by the object size.
Reads
    ``get(key, start=, end=)`` reads the byte range ``[start, end)``; ``end`` past the object's size
    is clipped, and a ``start`` at or past the end yields no bytes. A missing key raises
    :class:`NotFound`.
Listing
    ``list(prefix)`` yields batches of :class:`ObjectInfo` for every key that starts with
    ``prefix`` as a plain string (``"f"`` matches ``f00001.bin``). Order is unspecified. Listing
    pages through the provider's results, so stores of any size are listed in bounded memory.
Delete
    ``delete`` is idempotent: deleting a missing key succeeds.
Errors
    Only :mod:`daulat.errors` exceptions escape, with messages free of secrets.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from daulat.errors import InvalidKey

MAX_KEY_BYTES = 1024

#: Called by a put with (key, upload id) once a multipart upload exists and before its first
#: part is sent, so that the caller can record the upload as its own (and later abort exactly
#: that one). Stores without multipart uploads never call it.
OnUpload = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a store reports about one object.

    ``etag`` is the provider's entity tag exactly as reported. It is an opaque version marker:
    it equals an MD5 of the content only in some cases (S3 single-part uploads without KMS), so
    daulat never treats it as a content hash. ``etag_scheme`` says whose tag it is (``s3``,
    ``azure``, ``gcs``, ``local``) so that tags are only ever compared within one scheme.
    ``checksums`` holds the provider's own whole-object hashes where it reports them, by
    algorithm (``crc32c``, ``md5``), as lower-case hex.
    """

    key: str
    size: int
    modified: datetime
    etag: str | None = None
    etag_scheme: str = ""
    checksums: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PutResult:
    """The outcome of a completed put: size and SHA-256 of what was written."""

    key: str
    size: int
    sha256: str
    etag: str | None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """Optional abilities of a store kind, as data rather than subclassing."""

    user_metadata: bool = True
    server_side_copy: bool = False
    # A streamed put reads ``metadata`` only once the body's last chunk has been taken (the
    # filesystem sets its extended attributes just before the rename), so a caller may complete
    # the mapping from what the end of the body tells (daulat seals an object's proof there).
    metadata_at_commit: bool = False
    #: The most metadata one object may carry here, in bytes, counted as S3 counts it: each
    #: name as daulat's stores write it (``daulat_`` and daulat's name) plus its value, in
    #: UTF-8. None: no limit daulat's own fields could reach. A put past it is refused by the
    #: server (or the filesystem) after its bytes were sent, so writers check it first.
    max_metadata: int | None = None


class ObjectReader(Protocol):
    """A streaming read of one object (or a range of it)."""

    info: ObjectInfo
    metadata: Mapping[str, str]

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def read_all(self) -> bytes:
        """Read the rest of the stream into memory. For small objects only."""
        ...


@runtime_checkable
class Store(Protocol):
    """An object store. See the module docstring for the contracts."""

    @property
    def name(self) -> str:
        """The configured store name, used in messages."""
        ...

    @property
    def capabilities(self) -> Capabilities: ...

    def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        """Yield batches of objects whose key starts with ``prefix``."""
        ...

    async def head(self, key: str) -> ObjectInfo:
        """Describe one object; :class:`NotFound` if missing."""
        ...

    async def get(self, key: str, *, start: int = 0, end: int | None = None) -> ObjectReader:
        """Open a streaming read of ``[start, end)``; :class:`NotFound` if missing."""
        ...

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
        """Write an object atomically, hashing it while streaming.

        ``sha256`` (hex) is the expected content hash; on mismatch nothing is written and
        :class:`IntegrityError` is raised. ``prehashed`` (with bytes ``data``) says the caller
        has just computed ``sha256`` from these very bytes, so the store need not hash them
        again. ``metadata`` is user metadata stored with the object. ``on_upload(key,
        upload_id)`` is called when the put begins a multipart upload, before its first part
        is sent (wrappers forward it; stores without multipart uploads ignore it).
        """
        ...

    async def delete(self, key: str) -> None:
        """Delete an object; succeeds when it is already gone."""
        ...

    async def close(self) -> None:
        """Release connections. The store is unusable afterwards."""
        ...


def check_portable_key(key: str, *, store: str = "") -> None:
    """Raise :class:`InvalidKey` unless ``key`` is portable (see the module docstring)."""
    reason = portable_key_problem(key)
    if reason is not None:
        raise InvalidKey(f"store {store!r} cannot hold key {key!r}: {reason}", store=store, key=key)


# Everything a key can get wrong, as one scan: control characters, and empty, "." or ".."
# segments. Checked on every get and put, so the common (portable) case must be cheap.
_SUSPECT = re.compile(r"[\x00-\x1f\x7f]|(?:^|/)\.{0,2}(?:/|$)")


def portable_key_problem(key: str) -> str | None:
    """Why ``key`` is not portable, or None when it is."""
    if not key:
        return "empty key"
    if len(key) * 4 <= MAX_KEY_BYTES and key.isascii() and _SUSPECT.search(key) is None:
        return None
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        return f"longer than {MAX_KEY_BYTES} bytes"
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        return "contains a control character (NUL, newline, ...)"
    for segment in key.split("/"):
        if segment == "":
            return "empty path segment (leading, trailing or doubled '/')"
        if segment in (".", ".."):
            return f"'{segment}' path segment"
    return None
