"""Protected names (``encrypt_names``): objects stored under keyed hashes of their names.

With names protected, the object whose key relative to the source prefix is ``k`` is stored at
``<dst prefix><hex HMAC-SHA256(name key, UTF-8 k)>``: 64 hex characters whatever ``k`` is. The
real names exist at the destination only inside the age-encrypted manifest.

The name key (32 random bytes) belongs to one destination endpoint (store and prefix). It must
stay the same for the life of that destination: a second key would store every object again
under other names. It is kept in two places, as 64 hex characters and a newline:

* ``<state_dir>/names/<id>.key`` (mode 0600, directory 0700), which every run on this machine
  uses;
* ``DST/<prefix>.daulat/names.key.age``, age-encrypted to the run's recipients, so that the
  holder of an identity can recover it on another machine (``--identity FILE``), with its
  signature ``names.key.age.sig`` (SSHSIG, namespace ``daulat-names-key@daulat``, over the file
  as stored). Anyone who knows a recipient can encrypt a key of their choosing to it, so a
  recovered key is used only when a pinned signer signed it: a planted key would let its author
  compute the stored names of every object written afterwards.

A run finds (or makes) the key before it plans, since the plan compares stored names, but
keeps it in either place only once it is known to go ahead (:class:`RunNameKey`): a run refused
by any check writes no key at the destination (nor rewrites the one there) and keeps no new key
in the local state.

The key never appears in messages, reprs, summaries, manifests or the audit log.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from daulat.crypto import (
    AGE_MAGIC,
    DecryptError,
    Identity,
    Recipient,
    decrypt_bytes,
    encrypt_bytes,
    fsync_directory,
)
from daulat.errors import ConfigError, MissingRoot, NotFound, StoreError
from daulat.signing import (
    NAME_KEY_NAMESPACE,
    PublicKey,
    SignatureError,
    SigningKey,
    sign_bytes,
    verify_bytes,
)
from daulat.state import private_dir
from daulat.transfer.retry import RetryPolicy

if TYPE_CHECKING:
    from daulat.transfer.model import Endpoint

__all__ = [
    "NAME_KEY_OBJECT",
    "NAME_KEY_SIGNATURE",
    "NameKey",
    "NameKeyError",
    "RunNameKey",
    "existing_name_key",
    "has_protected_names",
    "local_key_path",
    "manifest_names_evidence",
    "name_key_for_run",
    "stored_names_evidence",
]

#: Where the encrypted name key lives, relative to the destination prefix.
NAME_KEY_OBJECT: Final = ".daulat/names.key.age"
NAME_KEY_SIGNATURE: Final = NAME_KEY_OBJECT + ".sig"
KEY_BYTES: Final = 32


class NameKeyError(ConfigError):
    """The destination's name key cannot be used as things stand (CLI exit 2)."""


class NameKey:
    """The secret that turns names into stored names. Never shows itself in a repr or str."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a name key is {KEY_BYTES} bytes")
        self._key = key

    @classmethod
    def generate(cls) -> NameKey:
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def parse(cls, text: bytes) -> NameKey | None:
        """The key in a key file's content, or None if the content is not one."""
        try:
            raw = bytes.fromhex(text.decode("ascii").strip())
        except ValueError:
            return None
        return cls(raw) if len(raw) == KEY_BYTES else None

    def stored_name(self, key: str) -> str:
        """The stored name of ``key`` (relative to the source prefix)."""
        # surrogatepass: a key read from a filesystem may hold lone surrogates; it still needs
        # one stable name.
        return hmac.digest(self._key, key.encode("utf-8", "surrogatepass"), "sha256").hex()

    def _file_content(self) -> bytes:
        return self._key.hex().encode("ascii") + b"\n"

    def __repr__(self) -> str:
        return "NameKey(<secret>)"

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a name key is not pickled")


def local_key_path(state_dir: Path, dst: Endpoint) -> Path:
    """Where this machine keeps the name key of ``dst``."""
    ident = hashlib.sha256(f"{dst.store.name}:{dst.prefix}".encode()).hexdigest()[:32]
    return state_dir / "names" / f"{ident}.key"


def _where(dst: Endpoint) -> str:
    return f"{dst.store.name}:{dst.prefix}{NAME_KEY_OBJECT}"


def _read_local(path: Path) -> NameKey | None:
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise NameKeyError(f"cannot read the name key file {path}: {exc.strerror}") from None
    key = NameKey.parse(content)
    if key is None:
        raise NameKeyError(
            f"the name key file {path} is damaged: move it away and run again with "
            "--identity FILE to recover the key from the destination"
        )
    return key


def _save_local(path: Path, key: NameKey) -> NameKey:
    """Write ``key`` to ``path`` unless a key is already there; returns the key now in force.

    Written to a temporary file and linked into place, so a crash never leaves a partial key
    file, and an existing key is never replaced.
    """
    private_dir(path.parent.parent)  # the state directory, then its names/
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(tmp, flags, 0o600)
        try:
            os.write(fd, key._file_content())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            # Another run got there first: its key is the destination's key.
            existing = _read_local(path)
            assert existing is not None
            return existing
        fsync_directory(path.parent)
        return key
    except OSError as exc:
        raise NameKeyError(f"cannot write the name key file {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


async def _fetch_sealed(dst: Endpoint, retry: RetryPolicy) -> bytes | None:
    async def get() -> bytes:
        return await (await dst.store.get(dst.prefix + NAME_KEY_OBJECT)).read_all()

    try:
        return await retry.call(get)
    except NotFound:
        return None


async def _check_signed(
    dst: Endpoint, sealed: bytes, trusted: Sequence[PublicKey], retry: RetryPolicy
) -> None:
    """Refuse a name key at the destination that no pinned signer signed."""

    async def get() -> bytes:
        return await (await dst.store.get(dst.prefix + NAME_KEY_SIGNATURE)).read_all()

    try:
        armored = await retry.call(get)
    except NotFound:
        problem = "it is not signed"
    else:
        try:
            verify_bytes(armored, sealed, NAME_KEY_NAMESPACE, trusted)
            return
        except SignatureError as exc:
            problem = str(exc)
    raise NameKeyError(
        f"{_where(dst)} is not used: {problem}. A name key is believed only when a key in "
        "`signers` signed it; a copy from the machine that holds the name key signs it"
    )


def _open_sealed(sealed: bytes, identities: Sequence[Identity], dst: Endpoint) -> NameKey:
    try:
        key = NameKey.parse(decrypt_bytes(sealed, identities))
    except DecryptError as exc:
        raise NameKeyError(f"cannot open {_where(dst)} with the given identity: {exc}") from None
    if key is None:
        raise NameKeyError(f"{_where(dst)} does not hold a name key")
    return key


def _withheld(dst: Endpoint, evidence: str) -> NameKeyError:
    return NameKeyError(
        f"{dst.label or dst.store.name} already holds objects under protected names "
        f"({evidence}), but its name key is neither at {_where(dst)} (withheld or deleted by "
        "the provider) nor in this machine's state: a second name key would store every "
        "object again under other names, so nothing was written. Copy the key file from the "
        "machine that made it (.daulat/names/ beside its daulat.toml) into this one's, or have "
        f"{NAME_KEY_OBJECT} put back, and run again"
    )


# Listing pages read, at most, and objects under stored names opened, when looking for
# protected names at a destination whose name key is missing.
EVIDENCE_PAGES = 3
EVIDENCE_OBJECTS = 4


def _is_stored_name(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


async def stored_names_evidence(dst: Endpoint, retry: RetryPolicy | None = None) -> str | None:
    """Objects directly under the destination prefix whose names have the shape of stored
    names (64 hex characters) and whose content is age ciphertext: a destination that holds
    protected names, whether or not its name key is there. Reads the first pages of the
    listing and the first bytes of a few objects, never the whole destination."""
    policy = retry or RetryPolicy()
    found: list[str] = []
    pages = dst.store.list(dst.prefix)
    try:
        for _ in range(EVIDENCE_PAGES):
            batch = await anext(pages, None)
            if batch is None:
                break
            found += [o.key for o in batch if _is_stored_name(o.key[len(dst.prefix) :])]
            if len(found) >= EVIDENCE_OBJECTS:
                break
    except (MissingRoot, NotFound):
        return None
    finally:
        close = getattr(pages, "aclose", None)
        if close is not None:
            with contextlib.suppress(StoreError):
                await close()
    for key in found[:EVIDENCE_OBJECTS]:

        async def head(key: str = key) -> bytes:
            return await (await dst.store.get(key, start=0, end=len(AGE_MAGIC))).read_all()

        try:
            first = await policy.call(head)
        except NotFound:
            continue
        if first == AGE_MAGIC:
            return f"{key[len(dst.prefix) :]} is age ciphertext under a stored name"
    return None


class _Found(Exception):
    """Stops reading a manifest at its first entry under a stored name."""


async def manifest_names_evidence(
    dst: Endpoint, identities: Sequence[Identity], trusted: Sequence[PublicKey]
) -> str | None:
    """The newest manifest at the destination, signed by one of ``trusted`` and readable with
    ``identities``, lists objects under stored names (``stored_as``)."""
    from daulat.transfer.manifests import list_manifests, read_manifest

    if not identities or not trusted:
        return None
    try:
        found = await list_manifests(dst)
    except MissingRoot:
        return None
    if not found:
        return None
    newest = found[0]

    def look(entries: list[dict[str, object]]) -> None:
        if any(isinstance(e.get("stored_as"), str) for e in entries):
            raise _Found

    try:
        await read_manifest(dst, newest, trusted, identities, look)
    except _Found:
        return f"its newest manifest {newest[len(dst.prefix) :]} lists stored names"
    except DecryptError:
        return None
    return None


async def _refuse_second_key(
    dst: Endpoint,
    retry: RetryPolicy,
    identities: Sequence[Identity],
    trusted: Sequence[PublicKey],
) -> None:
    """No name key anywhere: before a new one is made (or the destination is taken for one
    without protected names), make sure it holds no objects under protected names."""
    evidence = await stored_names_evidence(dst, retry) or await manifest_names_evidence(
        dst, identities, trusted
    )
    if evidence is not None:
        raise _withheld(dst, evidence)


def _missing(dst: Endpoint) -> NameKeyError:
    return NameKeyError(
        f"{dst.label or dst.store.name} already holds objects under protected names; its name "
        "key is not in this machine's state: pass --identity FILE to recover it"
    )


async def _publish(
    dst: Endpoint,
    key: NameKey,
    recipients: Sequence[Recipient],
    retry: RetryPolicy,
    signing_key: SigningKey | None,
) -> None:
    # Rewritten on every run so that it is always readable by the recipients the objects are
    # encrypted to now.
    sealed = encrypt_bytes(key._file_content(), recipients)
    await retry.call(
        lambda: dst.store.put(dst.prefix + NAME_KEY_OBJECT, sealed, metadata={"encryption": "age"})
    )
    if signing_key is not None:
        armored = sign_bytes(signing_key, sealed, NAME_KEY_NAMESPACE).encode("ascii")
        await retry.call(lambda: dst.store.put(dst.prefix + NAME_KEY_SIGNATURE, armored))


@dataclass(frozen=True)
class RunNameKey:
    """The name key a run into ``dst`` uses, and what keeping it takes (:meth:`keep`).

    The run needs the key to plan (it compares stored names), before its refusals are decided;
    keeping it writes to the destination, so that waits until the run goes ahead."""

    key: NameKey
    dst: Endpoint
    local: Path  # this machine's key file
    new_here: bool  # not in this machine's state yet (made now, or recovered from dst)
    recipients: Sequence[Recipient]
    retry: RetryPolicy
    signing_key: SigningKey | None = field(default=None, repr=False)

    async def keep(self) -> None:
        """Make the key durable before the run's first write: in this machine's state (unless
        it came from there) and, encrypted to ``recipients`` and signed, at the destination.

        Raises :class:`NameKeyError`, having written nothing at the destination, when another
        run put a different key in the state since this one found none: the run planned with a
        key that is not the destination's."""
        if self.new_here:
            kept = _save_local(self.local, self.key)
            if not hmac.compare_digest(kept._key, self.key._key):
                raise NameKeyError(
                    f"another run made the name key of {self.dst.label or self.dst.store.name} "
                    "while this one was planning with none; nothing was written: run again"
                )
        await _publish(self.dst, self.key, self.recipients, self.retry, self.signing_key)


async def name_key_for_run(
    state_dir: Path,
    dst: Endpoint,
    recipients: Sequence[Recipient],
    identities: Sequence[Identity] = (),
    *,
    retry: RetryPolicy | None = None,
    signing_key: SigningKey | None = None,
    trusted: Sequence[PublicKey] = (),
) -> RunNameKey:
    """The name key a copy to ``dst`` uses; nothing is written until :meth:`RunNameKey.keep`.

    This machine's key if it has one; else the destination's (recovered with ``identities``,
    and only if one of ``trusted`` signed it); else a new key, unless the destination already
    holds objects under protected names (:func:`stored_names_evidence`,
    :func:`manifest_names_evidence`): its key was withheld, and a second one is never made.
    Kept, it is in the local state and, encrypted to ``recipients`` and signed with
    ``signing_key``, at the destination. Raises :class:`NameKeyError` when the destination has
    a key and no identity to open it was given, or its signature is not trusted (never a second
    key for one destination), and store errors as they come.
    """
    policy = retry or RetryPolicy()
    path = local_key_path(state_dir, dst)
    key = _read_local(path)
    new_here = key is None
    if key is None:
        sealed = await _fetch_sealed(dst, policy)
        if sealed is not None:
            if not identities:
                raise _missing(dst)
            await _check_signed(dst, sealed, trusted, policy)
            key = _open_sealed(sealed, identities, dst)
        else:
            await _refuse_second_key(dst, policy, identities, trusted)
            key = NameKey.generate()
    return RunNameKey(key, dst, path, new_here, tuple(recipients), policy, signing_key)


async def existing_name_key(
    state_dir: Path,
    dst: Endpoint,
    identities: Sequence[Identity] = (),
    *,
    retry: RetryPolicy | None = None,
    trusted: Sequence[PublicKey] = (),
) -> NameKey | None:
    """The name key of ``dst`` if it has protected names (for verification), else None.

    A key recovered from the destination with ``identities`` (only if one of ``trusted``
    signed it) is kept in the local state.
    """
    policy = retry or RetryPolicy()
    path = local_key_path(state_dir, dst)
    key = _read_local(path)
    if key is not None:
        return key
    sealed = await _fetch_sealed(dst, policy)
    if sealed is None:
        await _refuse_second_key(dst, policy, identities, trusted)
        return None
    if not identities:
        raise _missing(dst)
    await _check_signed(dst, sealed, trusted, policy)
    return _save_local(path, _open_sealed(sealed, identities, dst))


async def has_protected_names(endpoint: Endpoint, retry: RetryPolicy | None = None) -> bool:
    """Whether ``endpoint`` holds objects under protected names (it holds a name key)."""
    try:
        await (retry or RetryPolicy()).call(
            lambda: endpoint.store.head(endpoint.prefix + NAME_KEY_OBJECT)
        )
    except NotFound:
        return False
    return True
