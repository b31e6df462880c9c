"""age encryption of small objects in one call, inline (no thread).

The X25519 exchange costs ~0.15 ms and the data ~1.8 ms per MiB, blocking the calling thread
(and so the event loop): meant for objects up to :data:`INLINE_LIMIT` (1 MiB); larger ones
stream (:mod:`daulat.crypto.stream`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import pyrage  # type: ignore[import-untyped]

from daulat.crypto.errors import DecryptError, EncryptError, decrypt_error, encrypt_error
from daulat.crypto.keys import Identity, Recipient, raw_identities, raw_recipients

_PyrageDecryptError = pyrage.DecryptError
_PyrageEncryptError = pyrage.EncryptError

#: Suggested largest object for encrypt_bytes/decrypt_bytes (they block ~2 ms per MiB).
INLINE_LIMIT: Final = 1024 * 1024


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    return data if isinstance(data, bytes) else bytes(data)


def encrypt_bytes(data: bytes | bytearray | memoryview, recipients: Sequence[Recipient]) -> bytes:
    """Encrypt a small object in one call, inline (no thread).

    It blocks the calling thread (and so the event loop) for ~0.15 ms plus ~1.8 ms per MiB:
    meant for objects up to :data:`INLINE_LIMIT`; use :func:`encrypt_stream` beyond.
    """
    raws = raw_recipients(recipients)
    try:
        out: object = pyrage.encrypt(_as_bytes(data), raws)
    except (_PyrageEncryptError, OSError) as exc:
        raise encrypt_error(exc) from None
    if not isinstance(out, bytes):  # pragma: no cover - pyrage contract
        raise EncryptError("age encryption failed: pyrage returned no bytes")
    return out


def decrypt_bytes(data: bytes | bytearray | memoryview, identities: Sequence[Identity]) -> bytes:
    """Decrypt a small object in one call, inline; binary or ASCII-armored input.

    Raises :class:`DecryptError` (wrong identity, or not intact age data). Blocks like
    :func:`encrypt_bytes`; use :func:`decrypt_stream` above :data:`INLINE_LIMIT`.
    """
    raws = raw_identities(identities)
    try:
        out: object = pyrage.decrypt(_as_bytes(data), raws)
    except (_PyrageDecryptError, OSError) as exc:
        raise decrypt_error(exc) from None
    if not isinstance(out, bytes):  # pragma: no cover - pyrage contract
        raise DecryptError("cannot decrypt: pyrage returned no bytes")
    return out
