"""age keys: recipients (public keys), identities (secret keys) and identity files.

:func:`new_identity` writes a standard age identity file (the format ``age-keygen`` writes, so
``age -d -i FILE`` reads it), created with mode 0600 and never overwriting.
:func:`load_identities` reads such a file; :func:`recipient_of` gives its public key;
:func:`parse_recipients` checks recipient strings. :class:`Identity` redacts itself, and
key-file errors name the file and line, never its content; functions that handle secret text
drop it from their frames' locals before raising, so that a traceback printer showing locals
finds none.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final, final

import pyrage  # type: ignore[import-untyped]

from daulat.crypto.errors import DecryptError, KeyFileError, RecipientError

_SECRET_PREFIX: Final = "AGE-SECRET-KEY-"
_PLUGIN_PREFIX: Final = "AGE-PLUGIN-"
_MAX_SHOWN: Final = 120

_X25519Identity = pyrage.x25519.Identity
_X25519Recipient = pyrage.x25519.Recipient
_PyrageIdentityError = pyrage.IdentityError
_PyrageRecipientError = pyrage.RecipientError


@final
class Recipient:
    """An age X25519 public key (``age1...``). Not a secret: ``str()`` gives the key."""

    __slots__ = ("_raw", "_text")

    def __init__(self, raw: object) -> None:
        if not isinstance(raw, _X25519Recipient):
            raise TypeError(f"expected a pyrage.x25519.Recipient, got {type(raw).__name__}")
        self._raw: object = raw
        self._text: str = str(raw)

    @classmethod
    def from_str(cls, value: str) -> Recipient:
        """Parse ``age1...``; raises :class:`RecipientError`. Same as :func:`parse_recipient`."""
        return parse_recipient(value)

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"Recipient({self._text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Recipient) and other._text == self._text

    def __hash__(self) -> int:
        return hash(self._text)


@final
class Identity:
    """An age X25519 identity (secret key).

    ``repr()`` and ``str()`` show only the public key, so an identity that ends up in a log or a
    traceback does not leak. Create one with :meth:`generate` or read a file with
    :func:`load_identities`.
    """

    __slots__ = ("_raw", "_recipient")

    def __init__(self, raw: object) -> None:
        if not isinstance(raw, _X25519Identity):
            raise TypeError(f"expected a pyrage.x25519.Identity, got {type(raw).__name__}")
        self._raw: object = raw
        self._recipient = Recipient(raw.to_public())

    @classmethod
    def generate(cls) -> Identity:
        """A new random identity (not written anywhere; see :func:`new_identity`)."""
        return cls(_X25519Identity.generate())

    @classmethod
    def from_str(cls, value: str) -> Identity:
        """Parse ``AGE-SECRET-KEY-1...``. A bad value raises :class:`KeyFileError` that does not
        contain it."""
        raw = _parse_x25519_identity(value.strip())
        del value  # keep the secret out of this frame's locals if the traceback is printed
        if raw is None:
            raise KeyFileError(
                "not a valid age identity: expected AGE-SECRET-KEY-1... "
                "(the value is not shown because it may be secret)"
            )
        return cls(raw)

    @property
    def recipient(self) -> Recipient:
        """The public key matching this identity."""
        return self._recipient

    def to_public(self) -> Recipient:
        """The public key matching this identity (same as :attr:`recipient`)."""
        return self._recipient

    def __repr__(self) -> str:
        return f"Identity(recipient={self._recipient._text!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and other._recipient == self._recipient

    def __hash__(self) -> int:
        return hash(("identity", self._recipient))

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("daulat.crypto.Identity cannot be pickled (it holds a secret key)")

    def _secret_text(self) -> str:
        return str(self._raw)


def _parse_x25519_identity(text: str) -> object | None:
    """The pyrage identity for ``text``, or None. Never raises with the text in a message."""
    try:
        raw: object = _X25519Identity.from_str(text)
    except (_PyrageIdentityError, ValueError, TypeError):
        return None
    return raw


def _shown(value: str) -> str:
    return repr(value if len(value) <= _MAX_SHOWN else value[:_MAX_SHOWN] + "...")


def _looks_secret(value: str) -> bool:
    upper = value.strip().upper()
    return upper.startswith((_SECRET_PREFIX, _PLUGIN_PREFIX))


def _parse_recipient(value: object) -> Recipient | str:
    """The recipient, or the message for the error. Returns instead of raising so that callers
    can drop values that may be secret before raising."""
    if not isinstance(value, str):
        return f"an age recipient must be a string, not {type(value).__name__}"
    if _looks_secret(value):
        return (
            "a secret key (AGE-SECRET-KEY-1... or AGE-PLUGIN-...) was given where a public "
            "recipient (age1...) was expected; the value is not shown. Use the '# public key:' "
            "line of the key file instead."
        )
    text = value.strip()
    if not text:
        return "empty age recipient: expected an X25519 public key age1..."
    if text.startswith(("ssh-", "ecdsa-")):
        return (
            f"unsupported age recipient {_shown(text)}: SSH keys are not supported, "
            "use an age X25519 public key (age1...)"
        )
    try:
        raw: object = _X25519Recipient.from_str(text)
    except (_PyrageRecipientError, ValueError, TypeError):
        return (
            f"invalid age recipient {_shown(text)}: expected an X25519 public key "
            "(age1 followed by 58 characters)"
        )
    return Recipient(raw)


def parse_recipient(value: str) -> Recipient:
    """Parse one age X25519 recipient (``age1...``); raises :class:`RecipientError` naming it
    (unless it looks like a secret key, which is never shown)."""
    result = _parse_recipient(value)
    del value
    if isinstance(result, str):
        raise RecipientError(result)
    return result


def parse_recipients(values: Iterable[str]) -> list[Recipient]:
    """Parse recipient strings, dropping duplicates (order kept). A single string is accepted as
    one recipient. Raises :class:`RecipientError` naming the bad value, or if there is none."""
    items: Iterable[str] = [values] if isinstance(values, str) else values
    seen: set[Recipient] = set()
    out: list[Recipient] = []
    problem: str | None = None
    for value in items:
        result = _parse_recipient(value)
        if isinstance(result, str):
            problem = result
            break
        if result not in seen:
            seen.add(result)
            out.append(result)
    # A secret pasted by mistake must not stay in this frame's locals for a traceback printer.
    del values, items
    value = ""  # the loop variable too
    if problem is not None:
        raise RecipientError(problem)
    if not out:
        raise RecipientError("no age recipients given: at least one age1... key is required")
    return out


def new_identity(path: str | os.PathLike[str]) -> str:
    """Create a new X25519 identity file at ``path`` and return its recipient (``age1...``).

    The file has the format ``age-keygen`` writes (``# created:``, ``# public key:``, then the
    ``AGE-SECRET-KEY-1...`` line). It is created with mode 0600 in one step (never written and
    then chmod-ed), is fsync-ed, and an existing file or symlink at ``path`` is never replaced:
    :class:`KeyFileError` is raised instead.
    """
    target = Path(path)
    identity = Identity.generate()
    created = _dt.datetime.now().astimezone().replace(microsecond=0).isoformat()
    content = (
        f"# created: {created}\n# public key: {identity.recipient}\n{identity._secret_text()}\n"
    ).encode("ascii")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(
            f"refusing to overwrite existing key file {target}: losing an identity makes every "
            "object encrypted to it unreadable; choose another path or move the old file yourself"
        ) from None
    except OSError as exc:
        raise KeyFileError(
            f"cannot create key file {target}: {exc.strerror or type(exc).__name__}"
        ) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException as exc:
        with contextlib.suppress(OSError):
            target.unlink()
        if isinstance(exc, OSError):
            raise KeyFileError(
                f"cannot write key file {target}: {exc.strerror or type(exc).__name__}"
            ) from None
        raise
    finally:
        del content
    fsync_directory(target.parent)
    return str(identity.recipient)


def fsync_directory(directory: Path) -> None:
    """Make the new directory entry durable (best effort; not possible everywhere)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist") from None
    except IsADirectoryError:
        raise KeyFileError(f"key file {path} is a directory, not an age identity file") from None
    except PermissionError:
        raise KeyFileError(f"cannot read key file {path}: permission denied") from None
    except OSError as exc:
        raise KeyFileError(
            f"cannot read key file {path}: {exc.strerror or type(exc).__name__}"
        ) from None


def _parse_identity_file(data: bytes) -> list[Identity] | str:
    """Identities in an age identity file, or a description of the first problem.

    Returns instead of raising, so that no traceback frame holding the file's text survives.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "is not a text file (not UTF-8), so it is not an age identity file"
    identities: list[Identity] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        entry = line.strip().lstrip("\ufeff")
        if not entry or entry.startswith("#"):
            continue
        if entry.startswith("-----BEGIN"):
            return (
                f"line {lineno}: looks like an SSH or PEM private key; only age X25519 "
                "identities (AGE-SECRET-KEY-1...) are supported"
            )
        if entry.upper().startswith(_PLUGIN_PREFIX):
            return f"line {lineno}: age plugin identities are not supported"
        raw = _parse_x25519_identity(entry)
        if raw is None:
            return (
                f"line {lineno} is not a valid age identity: expected AGE-SECRET-KEY-1... "
                "(the line is not shown because it may be secret)"
            )
        identities.append(Identity(raw))
    if not identities:
        return "contains no age identity (no AGE-SECRET-KEY-1... line)"
    return identities


def load_identities(path: str | os.PathLike[str]) -> list[Identity]:
    """Read an age identity file (comments and blank lines allowed, one identity per line).

    Raises :class:`KeyFileError` for a missing, unreadable or malformed file; the message names
    the file and line but never contains key material.
    """
    key_path = Path(path)
    data = _read_key_file(key_path)
    result = _parse_identity_file(data)
    del data
    if isinstance(result, str):
        raise KeyFileError(f"key file {key_path} {result}")
    return result


def recipient_of(path: str | os.PathLike[str]) -> str:
    """The recipient (``age1...``) of the first identity in an identity file."""
    return str(load_identities(path)[0].recipient)


def raw_recipients(recipients: Sequence[Recipient]) -> list[object]:
    """pyrage's recipients for ``recipients`` (for the package's encrypting modules)."""
    if isinstance(recipients, (str, bytes)):
        raise TypeError("recipients must be a sequence of Recipient; see parse_recipients()")
    raws: list[object] = []
    for recipient in recipients:
        if isinstance(recipient, Recipient):
            raws.append(recipient._raw)
        elif isinstance(recipient, _X25519Recipient):
            raws.append(recipient)
        else:
            raise TypeError(
                f"expected daulat.crypto.Recipient, got {type(recipient).__name__}; "
                "use parse_recipients() to turn age1... strings into recipients"
            )
    if not raws:
        raise RecipientError("no age recipients given: at least one age1... key is required")
    return raws


def raw_identities(identities: Sequence[Identity]) -> list[object]:
    """pyrage's identities for ``identities`` (for the package's decrypting modules)."""
    raws: list[object] = []
    for identity in identities:
        if isinstance(identity, Identity):
            raws.append(identity._raw)
        elif isinstance(identity, _X25519Identity):
            raws.append(identity)
        else:
            raise TypeError(
                f"expected daulat.crypto.Identity, got {type(identity).__name__}; "
                "use load_identities() to read a key file"
            )
    if not raws:
        raise DecryptError("cannot decrypt: no identity given")
    return raws
