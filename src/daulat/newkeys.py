"""What ``daulat keys new`` does, for the command and the demo alike: an age identity (FILE), a
signing key (FILE.sign), both 0600, the signer pinned in the configuration, and an audit entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from daulat.audit import ensure_writable, record
from daulat.config import STATE_DIR
from daulat.crypto import KeyFileError, new_identity
from daulat.pinning import Pinned, pin_signer
from daulat.signing import PublicKey, existing_local_key, new_signing_key

__all__ = ["NewKeys", "new_keys"]


@dataclass(frozen=True)
class NewKeys:
    """What :func:`new_keys` made and changed."""

    identity: Path
    recipient: str  # the identity's public key (age1...)
    signing_file: Path
    signing_public: PublicKey
    config: Path | None  # where the signer was pinned (None: nowhere)
    pinned: Pinned | None
    state_dir: Path

    @property
    def local_key(self) -> Path:
        """The state directory's own signing key (see ``Pinned.added_also``)."""
        return self.state_dir / "keys" / "signing"


def new_keys(out_file: Path, config: Path | None) -> NewKeys:
    """Create ``out_file`` (age identity) and ``out_file.sign`` (signing key), never replacing
    a file; pin the signing key in ``config`` (``signers``, ``signing_key``) when given.

    Manifests written before, with no ``signing_key`` set, were signed by the state
    directory's own key: that key is the customer's too, so it is pinned as well and what it
    signed stays believed (``verify`` would otherwise take the newest manifest for withheld).
    Raises :class:`KeyFileError` for an existing key file, and :class:`StateError` when the
    audit log the new keys are recorded in is damaged anywhere in its chain (every entry is
    checked, as before any run, not only the last one the append reads): in both cases before
    any file is written or the configuration changed.
    """
    sign_file = Path(f"{out_file}.sign")
    if sign_file.exists() or sign_file.is_symlink():
        raise KeyFileError(
            f"refusing to overwrite existing key file {sign_file}: choose another --out"
        )
    state_dir = (config.resolve().parent if config else Path.cwd()) / STATE_DIR
    ensure_writable(state_dir)
    recipient = new_identity(out_file)
    public = new_signing_key(sign_file)
    earlier = existing_local_key(state_dir)
    pinned = (
        pin_signer(config, public, sign_file, also=[earlier] if earlier else [])
        if config is not None
        else None
    )
    record(
        state_dir,
        "keys.new",
        {
            "recipient": recipient,
            "file": str(out_file.resolve()),
            "signing_public_key": public.line,
            "signing_file": str(sign_file.resolve()),
            "pinned_in": str(config.resolve()) if config else None,
            "also_pinned": [k.line for k in pinned.added_also] if pinned else [],
        },
    )
    return NewKeys(out_file, recipient, sign_file, public, config, pinned, state_dir)
