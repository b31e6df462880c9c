"""SHA-256 per fixed-size chunk of a stream, beside the whole-object hash.

The copy engine records, for every object larger than one chunk, the SHA-256 of each
:data:`CHUNK_SIZE` piece of its plaintext (the last piece may be shorter). A reader that serves
part of an object (the gateway, :mod:`daulat.gateway`) can then check every byte it hands out
before handing it out, chunk by chunk, without reading the whole object first. An object of at
most one chunk has one chunk hash: its whole-object SHA-256, recorded as ever.

Anyone can recompute the hashes with standard tools: ``split -b 8M FILE part. && sha256sum
part.*``.
"""

from __future__ import annotations

import hashlib

from daulat.stores.hashing import StreamHasher

MiB = 1024 * 1024
CHUNK_SIZE = 8 * MiB
DIGEST_SIZE = 32


class ChunkHasher(StreamHasher):
    """A :class:`StreamHasher` that also hashes every :data:`CHUNK_SIZE` piece of the stream.

    ``chunks`` is the concatenation of the 32-byte digests, in order, once the stream ended.
    """

    def __init__(self, chunk_size: int = CHUNK_SIZE) -> None:
        super().__init__()
        self.chunk_size = chunk_size
        self._chunk = hashlib.sha256()
        self._in_chunk = 0
        self._digests: list[bytes] = []

    async def update(self, chunk: bytes | memoryview) -> None:
        await super().update(chunk)
        self._chunked(chunk)

    def feed(self, chunk: bytes | memoryview) -> None:
        super().feed(chunk)
        self._chunked(chunk)

    def _chunked(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while len(view):
            take = min(len(view), self.chunk_size - self._in_chunk)
            self._chunk.update(view[:take])
            self._in_chunk += take
            view = view[take:]
            if self._in_chunk == self.chunk_size:
                self._digests.append(self._chunk.digest())
                self._chunk = hashlib.sha256()
                self._in_chunk = 0

    @property
    def chunks(self) -> bytes:
        """The digests of every chunk so far, the partial last one included."""
        tail = [self._chunk.digest()] if self._in_chunk or not self._digests else []
        return b"".join(self._digests + tail)


def chunk_count(size: int, chunk_size: int = CHUNK_SIZE) -> int:
    """How many chunks an object of ``size`` bytes has (an empty object has one)."""
    return max(1, -(-size // chunk_size))


def split_digests(blob: bytes) -> list[bytes]:
    """The 32-byte digests of a concatenation of them."""
    if len(blob) % DIGEST_SIZE:
        raise ValueError("not a whole number of SHA-256 digests")
    return [blob[i : i + DIGEST_SIZE] for i in range(0, len(blob), DIGEST_SIZE)]


def to_hex_list(blob: bytes) -> list[str]:
    return [d.hex() for d in split_digests(blob)]


def from_hex_list(values: object, size: int, chunk_size: int = CHUNK_SIZE) -> bytes | None:
    """The digests of a manifest's ``chunks.sha256`` list, or None when it does not fit an
    object of ``size`` bytes (wrong count, not hex): such a list proves nothing."""
    if not isinstance(values, list) or len(values) != chunk_count(size, chunk_size):
        return None
    try:
        digests = [bytes.fromhex(v) for v in values if isinstance(v, str)]
    except ValueError:
        return None
    if len(digests) != len(values) or any(len(d) != DIGEST_SIZE for d in digests):
        return None
    return b"".join(digests)
