"""Pin a signing key in ``daulat.toml``: ``signers`` (public keys believed) and ``signing_key``.

``daulat keys new`` calls this so that a config copied to another machine carries the pinned
signer: a restore there believes only manifests signed by a key in ``signers``. The file is
edited in place with tomlkit, so comments, order and formatting stay as the user wrote them,
and replaced atomically (a crash leaves the old or the new file, never half of one).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tomlkit
from tomlkit.exceptions import TOMLKitError

from daulat.crypto import fsync_directory
from daulat.errors import ConfigError
from daulat.signing import PublicKey, SignatureError, parse_public_key


@dataclass(frozen=True)
class Pinned:
    """What :func:`pin_signer` changed."""

    added_signer: bool
    signing_key: str  # as written (relative to the config)
    replaced_signing_key: str | None  # the value it replaced, if another
    added_also: tuple[PublicKey, ...] = ()  # of ``also``, those that were not pinned yet


def pin_signer(
    config: Path, public: PublicKey, signing_key: Path, *, also: Sequence[PublicKey] = ()
) -> Pinned:
    """Add ``public`` to the top-level ``signers`` of ``config`` (no duplicates) and set
    ``signing_key`` to ``signing_key``'s path relative to the config's directory.

    ``also``: more keys to believe (not to sign with), such as the key that signed this
    machine's earlier manifests, so that they stay believed.

    Raises :class:`ConfigError` for a file that cannot be read, parsed or written, or whose
    ``signers`` is not a list.
    """
    try:
        text = config.read_text(encoding="utf-8")
        doc = tomlkit.parse(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config}: cannot read: {exc}") from None
    except TOMLKitError as exc:
        raise ConfigError(f"{config}: not valid TOML: {exc}") from None
    signers = doc.get("signers")
    if signers is None:
        signers = tomlkit.array()
        doc.add("signers", signers)
    elif not isinstance(signers, list):
        raise ConfigError(f"{config}: field 'signers' must be a list of OpenSSH public keys")
    known = set()
    for line in signers:
        with contextlib.suppress(SignatureError):
            known.add(parse_public_key(str(line)))
    added: list[PublicKey] = []
    for key in (public, *also):
        if key not in known:
            signers.append(key.line)
            known.add(key)
            added.append(key)
    rel = os.path.relpath(signing_key.resolve(), config.resolve().parent)
    old = doc.get("signing_key")
    replaced = str(old) if old is not None and str(old) != rel else None
    if old is None:
        doc.add("signing_key", rel)
    else:
        doc["signing_key"] = rel
    _replace(config, tomlkit.dumps(doc))
    return Pinned(public in added, rel, replaced, tuple(k for k in added if k != public))


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        mode = path.stat().st_mode & 0o777
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_directory(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ConfigError(f"{path}: cannot write: {exc.strerror or exc}") from None
