"""Signatures that prove who *wrote* a destination's manifests: OpenSSH SSHSIG over Ed25519.

age proves who can read a copy, not who made it: anyone who knows the recipient can encrypt
bytes to it. So every manifest daulat leaves at a destination (and the name key of a
name-protected one) is signed with a key only the customer holds, in the format of
``ssh-keygen -Y sign``, so that a standard tool checks it without daulat::

    ssh-keygen -Y verify -f allowed_signers -I daulat -n daulat-manifest@daulat \\
        -s manifest-….jsonl.age.sig < manifest-….jsonl.age

Format (OpenSSH's PROTOCOL.sshsig): the signature is the armored blob ::

    "SSHSIG" uint32(1) string(public key) string(namespace) string("") string(hash) string(sig)

and what the key signs is ``"SSHSIG" string(namespace) string("") string(hash) string(H(m))``,
so the message is hashed once (SHA-512) and may be streamed. Written here rather than taken from
a package: the ``sshsig`` package on PyPI only verifies, and the format is a few dozen lines over
``cryptography``'s Ed25519 and OpenSSH key serialisation.

Keys
    A signing key is an OpenSSH private key file (``ssh-keygen -t ed25519`` writes the same; no
    passphrase, since daulat signs unattended), created 0600 and never overwritten. Its public
    key is one OpenSSH line, ``ssh-ed25519 AAAA…``: that is what ``signers`` in daulat.toml pins.
    Nothing here ever shows private key material in a message or repr.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from daulat.crypto import KeyFileError, fsync_directory
from daulat.errors import DaulatError
from daulat.state import private_dir

__all__ = [
    "LOCAL_KEY",
    "MANIFEST_NAMESPACE",
    "NAME_KEY_NAMESPACE",
    "PublicKey",
    "Signature",
    "SignatureError",
    "SigningKey",
    "load_signing_key",
    "local_signing_key",
    "new_signing_key",
    "parse_public_key",
    "parse_signature",
    "sign_digest",
    "signers_line",
]

#: What manifests are signed for: a signature made for one use is never valid for another.
MANIFEST_NAMESPACE: Final = "daulat-manifest@daulat"
#: What a destination's encrypted name key (``names.key.age``) is signed for.
NAME_KEY_NAMESPACE: Final = "daulat-names-key@daulat"
#: The signing key of a state directory without a configured ``signing_key``.
LOCAL_KEY: Final = Path("keys") / "signing"

_MAGIC: Final = b"SSHSIG"
_VERSION: Final = 1
_KEY_TYPE: Final = b"ssh-ed25519"
_BEGIN: Final = "-----BEGIN SSH SIGNATURE-----"
_END: Final = "-----END SSH SIGNATURE-----"
_HASHES: Final = {"sha512": hashlib.sha512, "sha256": hashlib.sha256}


class SignatureError(DaulatError):
    """A signature or public key that cannot be used (malformed, wrong key, wrong data)."""


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise SignatureError("the signature is truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def string(self) -> bytes:
        (n,) = struct.unpack(">I", self.take(4))
        return self.take(n)

    def done(self) -> bool:
        return self.pos == len(self.data)


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key, as OpenSSH writes it (``ssh-ed25519 AAAA…``)."""

    blob: bytes  # the SSH wire encoding: string("ssh-ed25519") string(32 bytes)

    @property
    def line(self) -> str:
        """The OpenSSH line (no comment): what ``signers`` and allowed_signers files hold."""
        return f"ssh-ed25519 {base64.b64encode(self.blob).decode('ascii')}"

    @property
    def fingerprint(self) -> str:
        """``SHA256:…`` as ``ssh-keygen -l`` prints it."""
        digest = base64.b64encode(hashlib.sha256(self.blob).digest()).decode("ascii")
        return "SHA256:" + digest.rstrip("=")

    def _key(self) -> Ed25519PublicKey:
        r = _Reader(self.blob)
        if r.string() != _KEY_TYPE:
            raise SignatureError("not an ssh-ed25519 key")
        return Ed25519PublicKey.from_public_bytes(r.string())

    def __str__(self) -> str:
        return self.line


def parse_public_key(text: str) -> PublicKey:
    """An OpenSSH public key line (``ssh-ed25519 AAAA… [comment]``) → :class:`PublicKey`.

    Raises :class:`SignatureError` saying what is wrong; only Ed25519 keys are accepted.
    """
    parts = text.strip().split()
    if len(parts) < 2:
        raise SignatureError(
            f"{_shown(text)} is not an OpenSSH public key line (expected 'ssh-ed25519 AAAA…')"
        )
    if parts[0] != "ssh-ed25519":
        raise SignatureError(f"{parts[0]!r} keys are not supported: use an ssh-ed25519 key")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise SignatureError(f"{_shown(parts[1])} is not base64") from None
    r = _Reader(blob)
    try:
        ok = r.string() == _KEY_TYPE and len(r.string()) == 32 and r.done()
    except (SignatureError, struct.error):
        ok = False
    if not ok:
        raise SignatureError(f"{_shown(parts[1])} is not an ssh-ed25519 public key")
    return PublicKey(blob)


def _shown(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")


class SigningKey:
    """An Ed25519 private key. Never shows itself in a repr, str or pickle."""

    __slots__ = ("_key", "path", "public")

    def __init__(self, key: Ed25519PrivateKey, path: Path | None = None) -> None:
        self._key = key
        self.path = path
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public = PublicKey(_string(_KEY_TYPE) + _string(raw))

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    def _sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def _file_content(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )

    def __repr__(self) -> str:
        return f"SigningKey({self.public.fingerprint})"

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a signing key is not pickled")


def message_hasher(algorithm: str = "sha512") -> Hasher:
    """A fresh hash object for the message (what the signature's ``H(m)`` is)."""
    try:
        return _HASHES[algorithm]()
    except KeyError:
        raise SignatureError(f"hash algorithm {algorithm!r} is not supported") from None


def _signed_data(namespace: str, algorithm: str, digest: bytes) -> bytes:
    return (
        _MAGIC
        + _string(namespace.encode())
        + _string(b"")
        + _string(algorithm.encode())
        + _string(digest)
    )


def sign_digest(key: SigningKey, digest: bytes, namespace: str, algorithm: str = "sha512") -> str:
    """The armored SSHSIG signature of a message whose ``algorithm`` hash is ``digest``."""
    sig = key._sign(_signed_data(namespace, algorithm, digest))
    blob = (
        _MAGIC
        + struct.pack(">I", _VERSION)
        + _string(key.public.blob)
        + _string(namespace.encode())
        + _string(b"")
        + _string(algorithm.encode())
        + _string(_string(_KEY_TYPE) + _string(sig))
    )
    text = base64.b64encode(blob).decode("ascii")
    lines = [text[i : i + 70] for i in range(0, len(text), 70)]
    return "\n".join([_BEGIN, *lines, _END]) + "\n"


def sign_bytes(key: SigningKey, data: bytes, namespace: str) -> str:
    h = message_hasher()
    h.update(data)
    return sign_digest(key, h.digest(), namespace)


@dataclass(frozen=True)
class Signature:
    """A parsed SSHSIG signature: who claims to have signed, for what, with which hash."""

    public_key: PublicKey
    namespace: str
    algorithm: str
    _sig: bytes

    def check(self, digest: bytes, namespace: str, trusted: Iterable[PublicKey]) -> None:
        """Raise :class:`SignatureError` unless this is a valid signature over the message whose
        hash is ``digest``, made for ``namespace`` by one of the ``trusted`` keys."""
        if self.namespace != namespace:
            raise SignatureError(f"signed for {self.namespace!r}, not {namespace!r}")
        if self.public_key not in set(trusted):
            raise SignatureError(
                f"signed by {self.public_key.fingerprint}, which is not a pinned signer"
            )
        try:
            self.public_key._key().verify(
                self._sig, _signed_data(self.namespace, self.algorithm, digest)
            )
        except (InvalidSignature, ValueError):
            raise SignatureError("the signature does not match the data") from None

    def hasher(self) -> Hasher:
        return message_hasher(self.algorithm)


def parse_signature(armored: str | bytes) -> Signature:
    """Parse an armored SSHSIG signature (as ``ssh-keygen -Y sign`` writes it)."""
    text = armored.decode("ascii", "replace") if isinstance(armored, bytes) else armored
    lines = [ln.strip() for ln in text.strip().splitlines()]
    if len(lines) < 3 or lines[0] != _BEGIN or lines[-1] != _END:
        raise SignatureError("not an SSH signature (no BEGIN/END SSH SIGNATURE lines)")
    try:
        blob = base64.b64decode("".join(lines[1:-1]), validate=True)
    except ValueError:
        raise SignatureError("the SSH signature is not valid base64") from None
    r = _Reader(blob)
    try:
        if r.take(6) != _MAGIC or struct.unpack(">I", r.take(4))[0] != _VERSION:
            raise SignatureError("not an SSHSIG version 1 signature")
        key_blob = r.string()
        namespace = r.string().decode("utf-8", "replace")
        r.string()  # reserved
        algorithm = r.string().decode("ascii", "replace")
        sig_blob = _Reader(r.string())
        kind, sig = sig_blob.string(), sig_blob.string()
    except struct.error:
        raise SignatureError("the signature is truncated") from None
    if kind != _KEY_TYPE or len(sig) != 64:
        raise SignatureError(f"signature type {kind.decode('ascii', 'replace')!r} is not supported")
    if algorithm not in _HASHES:
        raise SignatureError(f"hash algorithm {algorithm!r} is not supported")
    public = parse_public_key(f"ssh-ed25519 {base64.b64encode(key_blob).decode('ascii')}")
    return Signature(public, namespace, algorithm, sig)


def verify_bytes(
    armored: str | bytes, data: bytes, namespace: str, trusted: Sequence[PublicKey]
) -> PublicKey:
    """Check a signature over ``data``; returns the signer. Raises :class:`SignatureError`."""
    sig = parse_signature(armored)
    h = sig.hasher()
    h.update(data)
    sig.check(h.digest(), namespace, trusted)
    return sig.public_key


# ------------------------------------------------------------------------------------ key files


def _write_new(path: Path, content: bytes) -> None:
    """Create ``path`` 0600 in one step, never replacing anything (nor following a symlink)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(
            f"refusing to overwrite existing key file {path}: choose another path or move the "
            "old file yourself"
        ) from None
    except OSError as exc:
        raise KeyFileError(
            f"cannot create key file {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    fsync_directory(path.parent)


def new_signing_key(path: str | os.PathLike[str]) -> PublicKey:
    """Write a new OpenSSH Ed25519 private key file at ``path`` (0600, never overwriting) and
    return its public key."""
    key = SigningKey.generate()
    _write_new(Path(path), key._file_content())
    return key.public


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    """Read an OpenSSH Ed25519 private key file (unencrypted). Raises :class:`KeyFileError`
    naming the file, never showing its content."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"signing key file {p} does not exist") from None
    except OSError as exc:
        raise KeyFileError(
            f"cannot read signing key file {p}: {exc.strerror or type(exc).__name__}"
        ) from None
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(
            f"signing key file {p} is protected by a passphrase: daulat signs unattended and "
            "needs a key without one"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(
            f"signing key file {p} is not an OpenSSH private key (the content is not shown)"
        ) from None
    finally:
        del data
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"signing key file {p} is not an Ed25519 key: use ssh-keygen -t ed25519")
    return SigningKey(key, p)


def public_key_of(path: str | os.PathLike[str]) -> PublicKey:
    """The public key of a signing key file."""
    return load_signing_key(path).public


def local_signing_key(state_dir: Path) -> tuple[SigningKey, bool]:
    """This state directory's own signing key (``keys/signing``), created 0600 on first need.

    Returns (key, whether it was created now).
    """
    path = state_dir / LOCAL_KEY
    # Through the state helpers: the key may be the first thing made in a new state directory,
    # and one left readable by others is tightened with the usual notice.
    private_dir(state_dir)
    private_dir(path.parent)
    if path.exists():
        return load_signing_key(path), False
    try:
        new_signing_key(path)
    except KeyFileError:
        if not path.exists():
            raise
        # Another run created it at the same moment: use that one.
    return load_signing_key(path), True


def existing_local_key(state_dir: Path) -> PublicKey | None:
    """The public key of the state directory's own signing key, if it has one."""
    path = state_dir / LOCAL_KEY
    if not path.exists():
        return None
    try:
        return public_key_of(path)
    except KeyFileError:
        return None


def signers_line(keys: Iterable[PublicKey]) -> str:
    """The line that pins ``keys`` in daulat.toml."""
    return "signers = [" + ", ".join(f'"{k.line}"' for k in keys) + "]"
