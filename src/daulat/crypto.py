"""age encryption: key files, recipients, and bounded-memory streaming encrypt/decrypt.

daulat encrypts objects with `age <https://age-encryption.org/v1>`_ (X25519 recipients) so that
no storage provider can read them. The customer holds the identity (secret key) file; daulat only
needs the public recipient string (``age1...``) to encrypt.

Key files
    :func:`new_identity` writes a standard age identity file (the format ``age-keygen`` writes, so
    ``age -d -i FILE`` reads it), created with mode 0600 and never overwriting.
    :func:`load_identities` reads such a file; :func:`recipient_of` gives its public key;
    :func:`parse_recipients` checks recipient strings.

Small objects
    :func:`encrypt_bytes` / :func:`decrypt_bytes` run inline: the X25519 exchange costs ~0.15 ms
    and the data ~1.8 ms per MiB, so they suit objects up to :data:`INLINE_LIMIT` (1 MiB).

Streams
    :func:`encrypt_stream` / :func:`decrypt_stream` turn an async iterable of chunks into an async
    iterator of chunks of at least ``chunk_size`` bytes (1 MiB; only the last one may be shorter),
    in memory bounded by ``max_buffer`` whatever the object size. pyrage has no incremental API,
    so each stream runs ``pyrage.encrypt_io``/``decrypt_io`` in its own worker thread between a
    reader fed from the event loop and a writer feeding it back, both through bounded queues:

    * back-pressure both ways: a slow consumer stops the worker, which stops pulling the source;
    * an exception from the source is re-raised to the consumer as is; crypto failures become
      :class:`EncryptError` / :class:`DecryptError` (never a pyrage exception);
    * when the consumer stops early (``aclose()``, ``break`` then garbage collection, task
      cancellation) the source is cancelled and closed, and the worker thread ends.

    pyrage holds the GIL while it computes (it reads and writes in 8 KiB / 64 KiB pieces), so the
    event loop keeps running between pieces (measured: loop stalls of at most ~5 ms, the GIL
    switch interval) but all streams of a process share one core's worth of GIL time
    (400-650 MB/s per stream and ~750 MB/s for four concurrent streams on the development
    machine).

    Decryption is authenticated per 64 KiB chunk: every chunk yielded has been verified, but a
    truncated or tampered object only fails when the damage is reached. Treat decrypted output as
    valid only once the iterator has finished without raising.

Sizes
    There is no ``encrypted_size(plaintext_size)``: the ciphertext size is not a function of the
    plaintext size alone, because the age implementation in pyrage (rage) adds a random "grease"
    stanza to every header, so headers vary (about 190 to 320 bytes for one recipient). The
    payload after the header is exact: :func:`payload_size` (and its inverse
    :func:`plaintext_size`). Once the first output chunk exists (with the default chunk size it
    contains the whole header), ``header_size(first_chunk) + payload_size(n)`` is the exact
    total.

Secrets
    No message, ``repr`` or ``str`` produced here contains secret key text: :class:`Identity`
    redacts itself, and key-file errors name the file and line, never its content.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as _dt
import os
import threading
from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Final, final

import pyrage  # type: ignore[import-untyped]

from daulat.errors import DaulatError

__all__ = [
    "AGE_CHUNK_SIZE",
    "AGE_MAGIC",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_BUFFER",
    "INLINE_LIMIT",
    "NO_MATCHING_IDENTITY",
    "AgeStream",
    "CryptoError",
    "DecryptError",
    "EncryptError",
    "Identity",
    "KeyFileError",
    "Recipient",
    "RecipientError",
    "decrypt_bytes",
    "decrypt_stream",
    "encrypt_bytes",
    "encrypt_stream",
    "header_size",
    "load_identities",
    "new_identity",
    "parse_recipient",
    "parse_recipients",
    "payload_size",
    "plaintext_size",
    "recipient_of",
]

MiB: Final = 1024 * 1024
#: Target size of the chunks the streams yield (only the last chunk may be smaller).
DEFAULT_CHUNK_SIZE: Final = 1 * MiB
#: Suggested largest object for encrypt_bytes/decrypt_bytes (they block ~2 ms per MiB).
INLINE_LIMIT: Final = 1 * MiB
#: Default bound on the bytes queued between the event loop and a stream's worker thread.
DEFAULT_MAX_BUFFER: Final = 8 * MiB
#: age's STREAM chunk: every 64 KiB of plaintext carries a 16-byte Poly1305 tag.
AGE_CHUNK_SIZE: Final = 64 * 1024
_TAG_SIZE: Final = 16
_NONCE_SIZE: Final = 16
_AGE_MAGIC: Final = b"age-encryption.org/v1\n"
#: How every binary age file begins.
AGE_MAGIC: Final = _AGE_MAGIC
_MAC_LINE: Final = b"\n--- "
_SECRET_PREFIX: Final = "AGE-SECRET-KEY-"
_PLUGIN_PREFIX: Final = "AGE-PLUGIN-"
_MAX_SHOWN: Final = 120

_X25519Identity = pyrage.x25519.Identity
_X25519Recipient = pyrage.x25519.Recipient
_PyrageDecryptError = pyrage.DecryptError
_PyrageEncryptError = pyrage.EncryptError
_PyrageIdentityError = pyrage.IdentityError
_PyrageRecipientError = pyrage.RecipientError


# --------------------------------------------------------------------------------------- errors


class CryptoError(DaulatError):
    """Base class of the errors this module raises on purpose. Messages never hold secrets."""


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


# ------------------------------------------------------------------------------ keys and types


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


def _raw_recipients(recipients: Sequence[Recipient]) -> list[object]:
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


def _raw_identities(identities: Sequence[Identity]) -> list[object]:
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


# ------------------------------------------------------------------------------ error mapping


def _decrypt_error(exc: BaseException) -> DecryptError:
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


def _encrypt_error(exc: BaseException) -> EncryptError:
    return EncryptError(f"age encryption failed: {exc or type(exc).__name__}")


# -------------------------------------------------------------------------------- small objects


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    return data if isinstance(data, bytes) else bytes(data)


def encrypt_bytes(data: bytes | bytearray | memoryview, recipients: Sequence[Recipient]) -> bytes:
    """Encrypt a small object in one call, inline (no thread).

    It blocks the calling thread (and so the event loop) for ~0.15 ms plus ~1.8 ms per MiB:
    meant for objects up to :data:`INLINE_LIMIT`; use :func:`encrypt_stream` beyond.
    """
    raws = _raw_recipients(recipients)
    try:
        out: object = pyrage.encrypt(_as_bytes(data), raws)
    except (_PyrageEncryptError, OSError) as exc:
        raise _encrypt_error(exc) from None
    if not isinstance(out, bytes):  # pragma: no cover - pyrage contract
        raise EncryptError("age encryption failed: pyrage returned no bytes")
    return out


def decrypt_bytes(data: bytes | bytearray | memoryview, identities: Sequence[Identity]) -> bytes:
    """Decrypt a small object in one call, inline; binary or ASCII-armored input.

    Raises :class:`DecryptError` (wrong identity, or not intact age data). Blocks like
    :func:`encrypt_bytes`; use :func:`decrypt_stream` above :data:`INLINE_LIMIT`.
    """
    raws = _raw_identities(identities)
    try:
        out: object = pyrage.decrypt(_as_bytes(data), raws)
    except (_PyrageDecryptError, OSError) as exc:
        raise _decrypt_error(exc) from None
    if not isinstance(out, bytes):  # pragma: no cover - pyrage contract
        raise DecryptError("cannot decrypt: pyrage returned no bytes")
    return out


# ------------------------------------------------------------------------------------- sizes


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


# ------------------------------------------------------------------------------------ streams


class _Aborted(Exception):
    """Raised inside the worker thread's reader/writer to make pyrage stop."""


_Operation = Callable[[object, object], None]


class _Bridge:
    """Bounded byte queues between the event loop and one worker thread running pyrage.

    The loop side feeds input chunks (:meth:`feed`) and takes output chunks
    (:meth:`next_output`); the worker side is the file-like object pyrage reads from
    (:meth:`read`) and writes to (:meth:`write`). One lock and condition guard both queues; only
    the worker ever waits on the condition, and the loop side waits on asyncio events the worker
    sets with ``call_soon_threadsafe`` only when the loop is actually waiting.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        chunk_size: int,
        max_buffer: int,
    ) -> None:
        self._loop = loop
        self._cond = threading.Condition(threading.Lock())
        self._chunk_size = chunk_size
        self._in_limit = max(1, max_buffer // 2)
        self._out_limit = max(1, max_buffer - self._in_limit)
        self._cancelled = False
        # loop -> worker
        self._in: collections.deque[bytes] = collections.deque()
        self._in_bytes = 0
        self._in_eof = False
        self._in_failed = False
        self.source_error: BaseException | None = None
        self._feeder_waiting = False
        self._space = asyncio.Event()
        # worker -> loop
        self._out: collections.deque[bytes] = collections.deque()
        self._out_bytes = 0
        self._out_done = False
        self._out_error: BaseException | None = None
        self._consumer_waiting = False
        self._data = asyncio.Event()
        self._worker_done: asyncio.Future[None] = loop.create_future()
        self._worker: threading.Thread | None = None
        # worker-only state
        self._cur = b""
        self._cur_off = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._write_failed = False
        self._read_failed = False

    # -- loop side -----------------------------------------------------------------------------

    async def feed(self, chunks: AsyncIterable[bytes]) -> None:
        """Copy the source into the input queue, waiting while the queue is full."""
        iterator = aiter(chunks)
        try:
            async for item in iterator:
                if not isinstance(item, (bytes, bytearray, memoryview)):
                    raise TypeError(f"stream chunks must be bytes-like, got {type(item).__name__}")
                if not item:
                    continue
                chunk = bytes(item) if not isinstance(item, bytes) else item
                while True:
                    with self._cond:
                        if self._cancelled:
                            return
                        if not self._in or self._in_bytes + len(chunk) <= self._in_limit:
                            self._in.append(chunk)
                            self._in_bytes += len(chunk)
                            self._cond.notify_all()
                            break
                        self._feeder_waiting = True
                        self._space.clear()
                    await self._space.wait()
        except BaseException as exc:
            # Also on cancellation from outside, so that the worker never waits for input
            # that will not come.
            with self._cond:
                if not self._cancelled:
                    self.source_error = exc
                self._in_failed = True
                self._cond.notify_all()
            if not isinstance(exc, Exception):
                raise
        else:
            with self._cond:
                self._in_eof = True
                self._cond.notify_all()
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def next_output(self) -> bytes | None:
        """The next output chunk; None at the end; raises the stream's error."""
        while True:
            with self._cond:
                if self._out:
                    data = self._out.popleft()
                    self._out_bytes -= len(data)
                    self._cond.notify_all()
                    return data
                if self._out_done:
                    error = self._out_error
                    break
                self._consumer_waiting = True
                self._data.clear()
            await self._data.wait()
        if error is None:
            return None
        if self.source_error is not None:
            raise self.source_error
        raise error

    def start_worker(self, operation: _Operation, name: str) -> None:
        worker = threading.Thread(target=self.run, args=(operation,), name=name, daemon=True)
        try:
            worker.start()
        except BaseException:
            self._worker_done.set_result(None)
            raise
        self._worker = worker

    def cancel(self, feeder: asyncio.Task[None]) -> None:
        """Tell the worker and the feeder to stop, without waiting (idempotent; from any
        thread, as a finaliser may run in one)."""
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()
        if feeder.done():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            feeder.cancel()
        else:
            self._call_loop(feeder.cancel)

    async def shutdown(self, feeder: asyncio.Task[None]) -> None:
        """Stop the worker and the feeder (idempotent) and wait until both have ended."""
        self.cancel(feeder)
        await asyncio.wait([feeder, self._worker_done])
        if self._worker is not None:
            # The worker has reported its end and only has to return: this join is immediate.
            self._worker.join(timeout=1.0)
        if not feeder.cancelled():
            feeder.exception()  # retrieved: the consumer already got source errors

    # -- worker side ---------------------------------------------------------------------------

    def read(self, size: int = -1) -> bytes:
        """File-like read for pyrage: at most ``size`` bytes; b"" at the end of the source."""
        if self._cancelled:
            self._read_failed = True
            raise _Aborted("stream cancelled by its consumer")
        cur = self._cur
        off = self._cur_off
        if off >= len(cur):
            wake = False
            with self._cond:
                while not (self._in or self._in_eof or self._in_failed or self._cancelled):
                    self._cond.wait()
                if self._cancelled or self._in_failed:
                    self._read_failed = True
                    if self._cancelled:
                        raise _Aborted("stream cancelled by its consumer")
                    raise _Aborted("the source of the stream failed")
                if not self._in:
                    return b""
                cur = self._in.popleft()
                self._in_bytes -= len(cur)
                if self._feeder_waiting and (not self._in or self._in_bytes <= self._in_limit // 2):
                    self._feeder_waiting = False
                    wake = True
            if wake:
                self._call_loop(self._space.set)
            off = 0
        if size < 0 or size >= len(cur) - off:
            piece = cur if off == 0 else cur[off:]
            self._cur = b""
            self._cur_off = 0
        else:
            piece = cur[off : off + size]
            self._cur = cur
            self._cur_off = off + size
        return piece

    def write(self, data: bytes) -> int:
        """File-like write for pyrage: coalesce pieces into ``chunk_size`` output chunks."""
        try:
            if self._cancelled:
                raise _Aborted("stream cancelled by its consumer")
            size = len(data)
            self._pending.append(bytes(data))
            self._pending_bytes += size
            if self._pending_bytes >= self._chunk_size:
                self._push_pending()
            return size
        except BaseException:
            self._write_failed = True
            raise

    def flush(self) -> None:
        """File-like flush: nothing to do (chunks are pushed when full and at the end)."""

    def _push_pending(self) -> None:
        if not self._pending:
            return
        chunk = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending = []
        self._pending_bytes = 0
        wake = False
        with self._cond:
            while (
                self._out and self._out_bytes + len(chunk) > self._out_limit and not self._cancelled
            ):
                self._cond.wait()
            if self._cancelled:
                raise _Aborted("stream cancelled by its consumer")
            self._out.append(chunk)
            self._out_bytes += len(chunk)
            if self._consumer_waiting:
                self._consumer_waiting = False
                wake = True
        if wake:
            self._call_loop(self._data.set)

    def run(self, operation: _Operation) -> None:
        """Worker thread body: run pyrage, flush the tail, report the outcome to the loop."""
        error: BaseException | None = None
        try:
            operation(self, self)
            # pyrage flushes its last buffered piece when dropping its BufWriter and ignores
            # errors there, so failures of our reader and writer are checked here rather than
            # trusted to surface through pyrage.
            if self._write_failed:
                raise _Aborted("writing the output failed")
            if self._read_failed:
                raise _Aborted("reading the input failed")
            self._push_pending()
        except BaseException as exc:
            error = exc
        self._pending = []
        self._cur = b""
        with self._cond:
            self._out_done = True
            self._out_error = error
            self._consumer_waiting = False
        self._call_loop(self._finish_on_loop)

    def _finish_on_loop(self) -> None:
        self._data.set()
        if not self._worker_done.done():
            self._worker_done.set_result(None)

    def _call_loop(self, callback: Callable[[], object]) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to tell
            self._loop.call_soon_threadsafe(callback)


def _check_stream_args(chunk_size: int, max_buffer: int) -> None:
    if chunk_size <= 0:
        raise ValueError("chunk_size must be > 0")
    if max_buffer <= 0:
        raise ValueError("max_buffer must be > 0")


@final
class AgeStream:
    """The output of :func:`encrypt_stream` / :func:`decrypt_stream`: an async iterator of
    chunks, with ``aclose()``.

    Deliberately not an async generator. When a run is cancelled, the code that consumes a
    stream (a hashing loop, an upload) may stop without closing it; asyncio then closes
    abandoned async generators itself, concurrently, at garbage collection or when the loop
    shuts down, and a generator that was itself closing an inner one is then "already running"
    (``RuntimeError: aclose(): asynchronous generator is already running``, printed as a
    traceback on Ctrl-C). This object needs no such help: ``aclose()`` is idempotent and may
    run concurrently, and an abandoned stream stops its worker and its feeder without awaiting
    anything (:meth:`__del__`).
    """

    def __init__(
        self,
        chunks: AsyncIterable[bytes],
        operation: _Operation,
        map_error: Callable[[BaseException], CryptoError],
        *,
        name: str,
        chunk_size: int,
        max_buffer: int,
    ) -> None:
        self._chunks: AsyncIterable[bytes] | None = chunks
        self._operation = operation
        self._map_error = map_error
        self._name = name
        self._chunk_size = chunk_size
        self._max_buffer = max_buffer
        self._bridge: _Bridge | None = None
        self._feeder: asyncio.Task[None] | None = None
        self._finished = False

    def __aiter__(self) -> AgeStream:
        return self

    async def __anext__(self) -> bytes:
        if self._finished:
            raise StopAsyncIteration
        bridge = self._bridge if self._bridge is not None else self._start()
        try:
            chunk = await bridge.next_output()
        except CryptoError:
            await self.aclose()
            raise
        except Exception as exc:
            await self.aclose()
            if exc is bridge.source_error:
                raise
            raise self._map_error(exc) from None
        except BaseException:
            # Cancelled: the stream ends, as a generator would; its worker and feeder are
            # stopped and (unless cancelled again meanwhile) awaited, so the source is closed
            # before the consumer goes on to abort what it was writing.
            self._stop()
            with contextlib.suppress(asyncio.CancelledError):
                await self.aclose()
            raise
        if chunk is None:
            await self.aclose()
            raise StopAsyncIteration
        return chunk

    def _start(self) -> _Bridge:
        chunks, self._chunks = self._chunks, None
        assert chunks is not None
        loop = asyncio.get_running_loop()
        bridge = _Bridge(loop, chunk_size=self._chunk_size, max_buffer=self._max_buffer)
        self._bridge = bridge
        self._feeder = loop.create_task(bridge.feed(chunks), name=f"{self._name}-feeder")
        try:
            bridge.start_worker(self._operation, self._name)
        except BaseException:
            self._stop()
            raise
        return bridge

    def _stop(self) -> None:
        """Tell the worker and the feeder to end, without waiting (idempotent)."""
        self._finished = True
        if self._bridge is not None and self._feeder is not None:
            self._bridge.cancel(self._feeder)

    async def aclose(self) -> None:
        """Stop the stream and wait until its worker thread and feeder have ended; closes the
        source. Idempotent, and safe to call from several tasks at once."""
        self._stop()
        if self._bridge is not None and self._feeder is not None:
            await self._bridge.shutdown(self._feeder)
        elif self._chunks is not None:
            # Never started: the source is closed all the same, as the worker would have.
            chunks, self._chunks = self._chunks, None
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def __del__(self) -> None:
        # Abandoned without aclose() (its consumer was cancelled): nothing can be awaited
        # here, so the worker and the feeder are told to end, and end on their own.
        with contextlib.suppress(Exception):
            self._stop()


def encrypt_stream(
    chunks: AsyncIterable[bytes],
    recipients: Sequence[Recipient],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_buffer: int = DEFAULT_MAX_BUFFER,
) -> AgeStream:
    """Encrypt a stream of plaintext chunks to ``recipients`` (binary age format).

    Returns an :class:`AgeStream` (``aclose()`` it, or let it finish, to release the worker;
    one dropped unfinished stops its worker too). Arguments are checked at once.
    Yields chunks of at least ``chunk_size`` bytes; the last may be shorter, and with the default
    chunk size the first holds the whole header. About ``max_buffer`` + 2 x ``chunk_size`` + the
    largest input chunk is held in memory, whatever the stream's length. Errors from ``chunks``
    propagate unchanged; encryption failures raise :class:`EncryptError`. Closing the iterator
    early (or cancelling the consuming task) stops the worker thread and closes ``chunks``.
    """
    raws = _raw_recipients(recipients)
    _check_stream_args(chunk_size, max_buffer)

    def operation(reader: object, writer: object) -> None:
        pyrage.encrypt_io(reader, writer, raws)

    return AgeStream(
        chunks,
        operation,
        _encrypt_error,
        name="daulat-age-encrypt",
        chunk_size=chunk_size,
        max_buffer=max_buffer,
    )


def decrypt_stream(
    chunks: AsyncIterable[bytes],
    identities: Sequence[Identity],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_buffer: int = DEFAULT_MAX_BUFFER,
) -> AgeStream:
    """Decrypt a stream of age ciphertext chunks (binary or ASCII-armored).

    Same chunking, memory and cancellation behaviour as :func:`encrypt_stream`. A wrong identity
    raises :class:`DecryptError` (:data:`NO_MATCHING_IDENTITY`) before any output; damaged or
    truncated data raises :class:`DecryptError` when the damage is reached, so the output is
    valid only once the iterator has finished without raising.
    """
    raws = _raw_identities(identities)
    _check_stream_args(chunk_size, max_buffer)

    def operation(reader: object, writer: object) -> None:
        pyrage.decrypt_io(reader, writer, raws)

    return AgeStream(
        chunks,
        operation,
        _decrypt_error,
        name="daulat-age-decrypt",
        chunk_size=chunk_size,
        max_buffer=max_buffer,
    )
