"""The errors of :mod:`daulat.crypto`, and how pyrage's failures become them.

Every error raised on purpose is a :class:`CryptoError` (a :class:`daulat.DaulatError`);
pyrage's own exceptions never reach a caller: :func:`encrypt_error` and
:func:`decrypt_error` turn them (and :class:`_Aborted`, the stream worker's way to make pyrage
stop) into :class:`EncryptError` / :class:`DecryptError`. Messages never hold secrets.
"""

from __future__ import annotations

from typing import Final

import pyrage  # type: ignore[import-untyped]

from daulat.errors import DaulatError

_PyrageDecryptError = pyrage.DecryptError


class CryptoError(DaulatError):
    """Base class of the errors :mod:`daulat.crypto` raises on purpose. Messages never hold
    secrets."""


class KeyFileError(CryptoError):
    """An identity (secret key) file cannot be created, read or parsed.

    The message names the file and, for a bad line, its number; never the file's content.
    """


class RecipientError(CryptoError, ValueError):
    """A recipient string is not an age X25519 public key. The message shows the bad value,
    unless it looks like a secret key."""


class EncryptError(CryptoError):
    """Encryption failed."""


class DecryptError(CryptoError):
    """Decryption failed: no identity matches, or the data is not valid, intact age ciphertext."""


NO_MATCHING_IDENTITY: Final = (
    "cannot decrypt: none of the given identities matches this object's recipients"
)


class _Aborted(Exception):
    """Raised inside the worker thread's reader/writer to make pyrage stop."""


def decrypt_error(exc: BaseException) -> DecryptError:
    """The :class:`DecryptError` for a failure of pyrage (or of a stream's worker) while
    decrypting: a wrong identity is told apart from damaged data."""
    detail = str(exc)
    if isinstance(exc, _PyrageDecryptError) and "no matching keys" in detail.lower():
        return DecryptError(NO_MATCHING_IDENTITY)
    if isinstance(exc, _Aborted):
        return DecryptError(f"cannot decrypt: {detail}")
    if isinstance(exc, (_PyrageDecryptError, OSError)):
        return DecryptError(
            "cannot decrypt: the data is not an intact age file (corrupt, truncated or not "
            f"age-encrypted: {detail or type(exc).__name__})"
        )
    return DecryptError(f"cannot decrypt: {type(exc).__name__}: {detail}")


def encrypt_error(exc: BaseException) -> EncryptError:
    """The :class:`EncryptError` for a failure of pyrage (or of a stream's worker) while
    encrypting."""
    return EncryptError(f"age encryption failed: {exc or type(exc).__name__}")
