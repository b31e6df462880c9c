"""Encryption and name protection as a Store wrapper (as rclone's crypt backend is).

``CryptStore(inner, recipients=..., identities=..., names=...)`` is a
:class:`~daulat.stores.base.Store` over any store. It keeps the Store contracts (the one
conformance suite in ``tests/conformance`` runs over it) while the inner store holds only:

Bytes
    Every object is one standard binary age file (X25519 recipients), exactly what
    ``age -d -i KEY`` reads: :func:`daulat.crypto.encrypt_bytes` for a ``bytes`` put,
    :func:`daulat.crypto.encrypt_stream` (bounded buffers, its own worker thread) for a
    streamed one. Reads decrypt with the identities given (a wrapper without identities can
    write, list and describe, not read). Objects are marked ``encryption: age`` in their
    user metadata, beside the caller's metadata.
Names (optional)
    With ``names`` (a name key, :class:`daulat.transfer.names.NameKey`), the object ``k`` is
    stored at ``prefix + HMAC-SHA256(name key, k relative to prefix)`` in hex, the same
    stored names ``exit --encrypt-names`` gives. A keyed hash cannot be reversed, so the
    wrapper lists only names it knows: those it wrote itself and those given as ``known``
    (stored name -> real name, e.g. from a destination's encrypted manifest). Stored objects
    whose real name it does not know are left out of listings and counted in
    :attr:`CryptStore.unnamed`.
Sizes
    ``list``, ``head`` and ``get`` report plaintext sizes, *computed* (not taken from any
    manifest): age adds a header and then, per 64 KiB chunk of plaintext, a 16-byte tag,
    after a 16-byte nonce (:func:`daulat.crypto.plaintext_size`). The header's length is not
    fixed (pyrage adds a random "grease" stanza), so it is read from the object: a ranged
    read of its first :data:`HEADER_PROBE` bytes, except for objects this wrapper wrote
    itself (it remembers their stored size and ETag) and reads that fetch the header anyway.
    Listing a store written by someone else costs one small ranged read per object.

What the engine needs beyond the Store protocol is a small explicit API: the stored key
(:meth:`CryptStore.stored_key`), the ciphertext's size and SHA-256 on every put
(:class:`CryptPutResult`), a hook called with the ciphertext's size once it is all produced
and before the inner put can complete (``on_stored``, where a proof sealing that size is
added to the metadata), the stored object's own description on every read
(:attr:`CryptReader.stored`), and a check of the ciphertext's SHA-256 while it is read
(``stored_sha256``: :class:`StoredMismatch`).

Abilities that would bypass the encryption (server-side copy, resumable or listed multipart
uploads, range and level listings of stored names) are hidden from the finders
(:attr:`CryptStore.hides`); removal of the inner store's own temp files is not.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Mapping,
    MutableMapping,
    Sequence,
)
from dataclasses import dataclass, replace
from typing import ClassVar, Final, Protocol

from daulat.crypto import (
    INLINE_LIMIT,
    DecryptError,
    EncryptError,
    Identity,
    Recipient,
    decrypt_bytes,
    decrypt_stream,
    encrypt_bytes,
    encrypt_stream,
    header_size,
    plaintext_size,
)
from daulat.errors import IntegrityError, StoreError
from daulat.stores.abilities import ServerSideCopy, UploadCleanup
from daulat.stores.base import Capabilities, ObjectInfo, ObjectReader, OnUpload, PutResult, Store
from daulat.stores.forwarding import ForwardingStore
from daulat.stores.hashing import StreamHasher, body_digest, hashed, hashed_by
from daulat.stores.ranges import LevelListing, RangeListing
from daulat.stores.resumable import ResumableStore

__all__ = [
    "AGE_BUFFER",
    "HEADER_PROBE",
    "CryptPutResult",
    "CryptReader",
    "CryptStore",
    "NotAge",
    "StoredMismatch",
    "stored_info",
]

MiB: Final = 1024 * 1024
#: Bytes queued between the event loop and an age worker thread, per streamed object. A
#: store's upload parts already buffer several MiB each; a small queue keeps encryption from
#: adding more.
AGE_BUFFER: Final = 2 * MiB
#: Bytes read to find an object's age header when its size must be computed (one X25519
#: stanza with pyrage's grease is 190-320 bytes; more recipients, more stanzas).
HEADER_PROBE: Final = 4096
# Headers longer than this are not age files daulat or the age tools write.
_HEADER_MAX: Final = 1 * MiB
# Concurrent header reads while a listing computes sizes.
_PROBES: Final = 16
# The metadata mark of an encrypted object (the engine's safety checks look for it).
MARK: Final = {"encryption": "age"}


class NameHasher(Protocol):
    """What turns a name into its stored name (:class:`daulat.transfer.names.NameKey`)."""

    def stored_name(self, key: str) -> str: ...


class NotAge(DecryptError):
    """A stored object is not an age file (or not a whole one): it cannot be decrypted."""


class StoredMismatch(IntegrityError):
    """The stored bytes (the ciphertext) do not have the SHA-256 the reader expected."""


@dataclass(frozen=True, slots=True)
class CryptPutResult(PutResult):
    """A put through :class:`CryptStore`: ``size`` and ``sha256`` are the plaintext's, as the
    Store contract says; the ciphertext written to the inner store is described beside them."""

    stored_key: str
    stored_size: int
    stored_sha256: str


class CryptReader:
    """A decrypting read: ``info`` describes the plaintext (its key and size), ``stored`` the
    object as the inner store holds it."""

    def __init__(
        self,
        info: ObjectInfo,
        stored: ObjectInfo,
        metadata: Mapping[str, str],
        body: AsyncIterable[bytes],
    ) -> None:
        self.info = info
        self.stored = stored
        self.metadata = metadata
        self._body = body

    def __aiter__(self) -> AsyncIterator[bytes]:
        return aiter(self._body)

    async def read_all(self) -> bytes:
        return b"".join([bytes(chunk) async for chunk in self._body])


def stored_info(reader: ObjectReader) -> ObjectInfo:
    """The stored object behind ``reader``: the ciphertext's for a :class:`CryptReader`, else
    the reader's own ``info``."""
    return reader.stored if isinstance(reader, CryptReader) else reader.info


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


async def _one(data: bytes) -> AsyncIterator[bytes]:
    if data:
        yield data


class CryptStore(ForwardingStore):
    """Encrypts what is put to age ``recipients``, decrypts what is read with ``identities``,
    and (with ``names``) stores objects under keyed hashes of their names. See the module
    docstring for the format, sizes and the explicit API beyond the Store protocol."""

    hides: ClassVar[tuple[type, ...]] = (
        ServerSideCopy,
        UploadCleanup,
        ResumableStore,
        RangeListing,
        LevelListing,
    )

    def __init__(
        self,
        inner: Store,
        *,
        recipients: Sequence[Recipient] = (),
        identities: Sequence[Identity] = (),
        names: NameHasher | None = None,
        prefix: str = "",
        known: Mapping[str, str] | None = None,
        max_buffer: int = AGE_BUFFER,
        remember: bool = True,
    ) -> None:
        """``prefix``: with ``names``, the part of every key kept as it is (the stored name is
        ``prefix`` + the hash of the rest, as a destination prefix is). ``known``: stored name
        (relative to ``prefix``) -> real name, for names this wrapper did not write.
        ``remember``: keep the size and name of every object written or read, so that listing
        them later needs no header reads (memory grows with the objects handled: a copy of
        millions of objects, which lists the stores as stored, turns it off)."""
        super().__init__(inner)
        self.recipients = tuple(recipients)
        self.identities = tuple(identities)
        self._namer = names
        self._prefix = prefix
        #: Stored name (relative to ``prefix``) -> real key, for listings under protected names.
        self.names: dict[str, str] = dict(known or {})
        #: Stored objects the last listing left out because their real name is unknown.
        self.unnamed = 0
        self._max_buffer = max_buffer
        self._remembering = remember
        # stored key -> (stored size, ETag, plaintext size) of objects whose size is known.
        self._sizes: dict[str, tuple[int, str | None, int]] = {}

    # --- names and sizes -------------------------------------------------------------------

    def stored_key(self, key: str) -> str:
        """Where ``key`` is stored in the inner store."""
        if self._namer is None:
            return key
        if not key.startswith(self._prefix):
            raise StoreError(
                f"{key!r} is outside {self._prefix!r}, where this store protects names",
                store=self.name,
                key=key,
            )
        return self._prefix + self._namer.stored_name(key[len(self._prefix) :])

    def _real_key(self, stored: str) -> str | None:
        if self._namer is None:
            return stored
        if not stored.startswith(self._prefix):
            return None
        return self.names.get(stored[len(self._prefix) :])

    def _remember(self, stored: str, size: int, etag: str | None, plain: int) -> None:
        if self._remembering:
            self._sizes[stored] = (size, etag, plain)

    def _known_size(self, info: ObjectInfo) -> int | None:
        known = self._sizes.get(info.key)
        if known is not None and known[0] == info.size and known[1] == info.etag:
            return known[2]
        return None

    def _plain_size(self, info: ObjectInfo, head: bytes) -> int:
        """The plaintext size of the stored object ``info`` whose first bytes are ``head``."""
        try:
            return plaintext_size(info.size - header_size(head))
        except ValueError as exc:
            raise NotAge(
                "cannot decrypt: the data is not an intact age file (corrupt, truncated or not "
                f"age-encrypted: {exc})"
            ) from None

    async def _probe(self, info: ObjectInfo) -> int:
        """The plaintext size of ``info``, from the header read at the object's start."""
        known = self._known_size(info)
        if known is not None:
            return known
        want = HEADER_PROBE
        while True:
            reader = await self.inner.get(info.key, start=0, end=want)
            head = await reader.read_all()
            try:
                header_size(head)
            except ValueError:
                if len(head) >= want and want < _HEADER_MAX:
                    want *= 4  # a longer header (many recipients): read more of it
                    continue
            plain = self._plain_size(info, head)
            self._remember(info.key, info.size, info.etag, plain)
            return plain

    def _described(self, key: str, stored: ObjectInfo, plain: int) -> ObjectInfo:
        # The provider's checksums are of the ciphertext: not the object's as read here.
        return ObjectInfo(key, plain, stored.modified, stored.etag, stored.etag_scheme)

    # --- the Store protocol ----------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return replace(self.inner.capabilities, server_side_copy=False)

    async def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        # Protected names share no prefix with the real ones: list everything and filter.
        inner_prefix = prefix if self._namer is None else self._prefix
        unnamed = 0
        sem = asyncio.Semaphore(_PROBES)

        async def sized(key: str, info: ObjectInfo) -> ObjectInfo | None:
            async with sem:
                try:
                    return self._described(key, info, await self._probe(info))
                except NotAge:
                    return None  # not this wrapper's object: not listed as one

        async for batch in self.inner.list(inner_prefix):
            wanted: list[tuple[str, ObjectInfo]] = []
            for info in batch:
                key = self._real_key(info.key)
                if key is None:
                    unnamed += 1
                elif key.startswith(prefix):
                    wanted.append((key, info))
            found = await asyncio.gather(*(sized(k, i) for k, i in wanted))
            out = [o for o in found if o is not None]
            if out:
                yield out
        self.unnamed = unnamed

    async def head(self, key: str) -> ObjectInfo:
        stored = await self.inner.head(self.stored_key(key))
        return self._described(key, stored, await self._probe(stored))

    async def get(
        self,
        key: str,
        *,
        start: int = 0,
        end: int | None = None,
        stored_sha256: str | None = None,
    ) -> ObjectReader:
        """Read ``[start, end)`` of the plaintext. The whole object is read and decrypted from
        its first byte (age has no random access through pyrage); bytes before ``start`` are
        dropped as they come. ``stored_sha256``: the ciphertext's expected SHA-256
        (:class:`StoredMismatch`: for a small object before any byte is given out, for a
        streamed one at its end)."""
        skey = self.stored_key(key)
        if end is not None and end <= start and stored_sha256 is None:
            # A metadata request: the header tells the size; nothing is decrypted.
            reader = await self.inner.get(skey, start=0, end=0)
            await reader.read_all()
            plain = await self._probe(reader.info)
            info = self._described(key, reader.info, plain)
            return CryptReader(info, reader.info, reader.metadata, _empty())
        if not self.identities:
            raise DecryptError(
                f"cannot read {key!r} from {self.name!r}: no identity (age secret key) was given"
            )
        reader = await self.inner.get(skey)
        stored = reader.info
        head, rest = await _read_header(reader, stored.size)
        try:
            plain = self._plain_size(stored, head)
        except NotAge:
            # Damaged, or not age; but an identity that does not match says so first (the
            # engine stops a run on that, never on one damaged object).
            decrypt_bytes(head, self.identities)
            raise
        self._remember(skey, stored.size, stored.etag, plain)
        info = self._described(key, stored, plain)
        if stored.size <= INLINE_LIMIT:
            data = head + b"".join([bytes(c) async for c in _capped(rest, stored, len(head))])
            if stored_sha256 is not None:
                hasher = StreamHasher()
                await hasher.update(data)
                _check_stored(hasher, stored_sha256, store=self.name, key=key)
            body = decrypt_bytes(data, self.identities)
            return CryptReader(info, stored, reader.metadata, _one(body[start:end]))
        cipher: AsyncIterable[bytes] = _prepend(head, _capped(rest, stored, len(head)))
        if stored_sha256 is not None:
            cipher = _checked_stored(cipher, stored_sha256, store=self.name, key=key)
        stream: AsyncIterable[bytes] = decrypt_stream(
            cipher, self.identities, max_buffer=self._max_buffer
        )
        if start > 0 or end is not None:
            stream = _sliced(stream, start, end)
        return CryptReader(info, stored, reader.metadata, stream)

    async def put(
        self,
        key: str,
        data: bytes | AsyncIterable[bytes],
        *,
        sha256: str | None = None,
        metadata: Mapping[str, str] | None = None,
        prehashed: bool = False,
        on_upload: OnUpload | None = None,
        on_stored: Callable[[int], None] | None = None,
    ) -> CryptPutResult:
        """Encrypt ``data`` and write it under :meth:`stored_key`. ``sha256`` is the
        plaintext's (checked before anything is written for bytes, at the end of the stream
        for a streamed body, which then is never completed). ``on_stored(ciphertext size)``
        is called once the ciphertext is all produced, before the inner put can complete; a
        ``bytes`` put reads ``metadata`` after it (a caller may add to the mapping there)."""
        if not self.recipients:
            raise EncryptError(f"cannot write {key!r} to {self.name!r}: no age recipient given")
        skey = self.stored_key(key)
        if isinstance(data, (bytes, bytearray, memoryview)):
            plain = bytes(data)
            digest = await body_digest(plain, sha256, prehashed=prehashed, store=self.name, key=key)
            if len(plain) <= INLINE_LIMIT:
                body = encrypt_bytes(plain, self.recipients)
            else:
                body = await asyncio.to_thread(encrypt_bytes, plain, self.recipients)
            if on_stored is not None:
                on_stored(len(body))
            meta = {**(metadata or {}), **MARK}
            res = await self.inner.put(skey, body, metadata=meta, on_upload=on_upload)
            size = len(plain)
        else:
            hasher = hashed_by(data) if sha256 is None else None
            plain_stream: AsyncIterable[bytes] = data
            if hasher is None:
                hasher = StreamHasher()
                plain_stream = hashed(data, hasher, expected=sha256, store=self.name, key=key)
            cipher: AsyncIterable[bytes] = encrypt_stream(
                plain_stream, self.recipients, max_buffer=self._max_buffer
            )
            if on_stored is not None:
                cipher = _at_end(cipher, on_stored)
            # Read through, not copied: a caller may complete ``metadata`` in ``on_stored``
            # and a store that sets metadata at its commit sees it.
            live: MutableMapping[str, str] = collections.ChainMap(dict(MARK), {})
            if metadata is not None:
                live = collections.ChainMap(dict(MARK), metadata)  # type: ignore[arg-type]
            res = await self.inner.put(skey, cipher, metadata=live, on_upload=on_upload)
            digest, size = hasher.hexdigest(), hasher.size
        self._remember(skey, res.size, res.etag, size)
        if self._namer is not None and self._remembering:
            self.names[skey[len(self._prefix) :]] = key
        return CryptPutResult(key, size, digest, res.etag, skey, res.size, res.sha256)

    async def delete(self, key: str) -> None:
        skey = self.stored_key(key)
        await self.inner.delete(skey)
        self._sizes.pop(skey, None)


async def _read_header(reader: ObjectReader, size: int) -> tuple[bytes, AsyncIterator[bytes]]:
    """The first bytes of ``reader``, up to a whole age header (or all of a short object),
    and the rest of its body."""
    body = aiter(reader)
    head = b""
    while True:
        try:
            header_size(head)
            return head, body
        except ValueError:
            pass
        if len(head) >= min(size, _HEADER_MAX):
            return head, body
        chunk = await anext(body, None)
        if chunk is None:
            return head, body
        head += bytes(chunk)


async def _capped(
    rest: AsyncIterable[bytes], stored: ObjectInfo, already: int
) -> AsyncIterator[bytes]:
    """The rest of a stored body, never past the size its read reported (a store streaming
    without end is stopped, not decrypted)."""
    n = already
    async for chunk in rest:
        n += len(chunk)
        if n > stored.size:
            raise NotAge(
                "cannot decrypt: the data is not an intact age file (the store streamed more "
                f"than the {stored.size:,} bytes it reported)"
            )
        yield chunk


async def _prepend(head: bytes, rest: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    if head:
        yield head
    async for chunk in rest:
        yield chunk


def _check_stored(hasher: StreamHasher, expected: str, *, store: str, key: str) -> None:
    if hasher.hexdigest() != expected.lower():
        raise StoredMismatch(
            f"the stored ciphertext of {key!r} does not match its expected SHA-256 (expected "
            f"{expected}, got {hasher.hexdigest()}); what it decrypts to is not to be used",
            store=store,
            key=key,
        )


async def _checked_stored(
    cipher: AsyncIterable[bytes], expected: str, *, store: str, key: str
) -> AsyncIterator[bytes]:
    hasher = StreamHasher()
    async for chunk in cipher:
        await hasher.update(chunk)
        yield chunk
    _check_stored(hasher, expected, store=store, key=key)


async def _at_end(
    stream: AsyncIterable[bytes], at_end: Callable[[int], None]
) -> AsyncIterator[bytes]:
    n = 0
    async for chunk in stream:
        n += len(chunk)
        yield chunk
    at_end(n)


async def _sliced(
    stream: AsyncIterable[bytes], start: int, end: int | None
) -> AsyncIterator[bytes]:
    """Bytes ``[start, end)`` of ``stream``; the stream is closed once they are out."""
    pos = 0
    try:
        async for chunk in stream:
            lo, hi = pos, pos + len(chunk)
            pos = hi
            if hi <= start:
                continue
            if end is not None and lo >= end:
                break
            stop = len(chunk) if end is None else min(len(chunk), end - lo)
            piece = chunk[max(0, start - lo) : stop]
            if piece:
                yield piece
            if end is not None and hi >= end:
                break
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()
