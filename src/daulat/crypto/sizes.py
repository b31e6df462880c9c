"""The age format's sizes: what a ciphertext's size says of its plaintext's.

There is no ``encrypted_size(plaintext_size)``: the ciphertext size is not a function of the
plaintext size alone, because the age implementation in pyrage (rage) adds a random "grease"
stanza to every header, so headers vary (about 190 to 320 bytes for one recipient). The
payload after the header is exact: :func:`payload_size` (and its inverse
:func:`plaintext_size`). Once the first output chunk exists (with the default chunk size it
contains the whole header), ``header_size(first_chunk) + payload_size(n)`` is the exact total.
"""

from __future__ import annotations

from typing import Final

#: age's STREAM chunk: every 64 KiB of plaintext carries a 16-byte Poly1305 tag.
AGE_CHUNK_SIZE: Final = 64 * 1024
_TAG_SIZE: Final = 16
_NONCE_SIZE: Final = 16
_AGE_MAGIC: Final = b"age-encryption.org/v1\n"
#: How every binary age file begins.
AGE_MAGIC: Final = _AGE_MAGIC
_MAC_LINE: Final = b"\n--- "


def payload_size(plaintext_size: int) -> int:
    """Exact size of the age payload (nonce and STREAM chunks) that follows the header."""
    if plaintext_size < 0:
        raise ValueError("plaintext_size must be >= 0")
    chunks = max(1, -(-plaintext_size // AGE_CHUNK_SIZE))
    return _NONCE_SIZE + plaintext_size + chunks * _TAG_SIZE


def plaintext_size(payload: int) -> int:
    """Inverse of :func:`payload_size`; raises ValueError if no plaintext has that payload size."""
    body = payload - _NONCE_SIZE
    if body < _TAG_SIZE:
        raise ValueError(f"{payload} bytes is too short for an age payload")
    full = AGE_CHUNK_SIZE + _TAG_SIZE
    chunks = -(-body // full)
    size = body - chunks * _TAG_SIZE
    if size < 0 or payload_size(size) != payload:
        raise ValueError(f"no plaintext size gives an age payload of {payload} bytes")
    return size


def header_size(prefix: bytes | bytearray | memoryview) -> int:
    """Length of the binary age header at the start of ``prefix`` (the first stream chunk).

    ``header_size(first_chunk) + payload_size(n)`` is the exact ciphertext size. Raises
    ValueError if ``prefix`` does not start with a complete age header.
    """
    head = prefix if isinstance(prefix, bytes) else bytes(prefix)
    if not head.startswith(_AGE_MAGIC):
        raise ValueError("not a binary age file (missing age-encryption.org/v1 header)")
    mac = head.find(_MAC_LINE)
    end = head.find(b"\n", mac + 1) if mac >= 0 else -1
    if end < 0:
        raise ValueError("incomplete age header: the '---' MAC line is missing")
    return end + 1
