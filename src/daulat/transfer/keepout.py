"""What a copy never carries: daulat's local state, and daulat's reserved ``.daulat/`` namespace.

Two kinds of object are kept out of every copy, sync, exit and verify, at both ends:

- **Local state.** A ``.daulat/`` directory beside a ``daulat.toml`` holds private keys
  (``keys/signing``, ``keys/proof``, ``names/*.key``), the journal (every real name and
  plaintext SHA-256), the audit log and run locks. Copied to a provider, the signing key would
  let it sign manifests that every restore believes. So the running configuration's state
  directory, found by its real path (:class:`OwnState`), is never read as source data, never
  written and never deleted: a source or destination inside it is refused before anything
  happens (:func:`refuse_inside_state`), and where a directory store contains it, it is left
  out of the listing on both sides and named in the summary. The same holds, by name, for any
  other daulat state directory at any depth of a source (another project's ``.daulat/`` with
  ``keys/``, ``names/``, ``runs/``, ``*.sqlite`` journals, ``audit.jsonl``): daulat does not
  carry key material; back it up yourself, encrypted (see ``docs/threat-model.md``).
- **The reserved namespace.** At every destination daulat keeps its manifests, signatures and
  name keys under ``PREFIX.daulat/``. daulat's own files there (:data:`OWN_FILE`) are not data
  and are skipped silently, as they always were. Any *other* object under the source's
  top-level ``.daulat/`` cannot be copied (the destination's ``.daulat/`` is daulat's), so it
  is counted as *reserved*, named, and the run is not complete: nothing is left behind
  silently.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from daulat.errors import OverlappingLocations
from daulat.transfer.locations import Location

__all__ = [
    "KEPT_KEYS",
    "OWN_FILE",
    "KeepOut",
    "KeptOut",
    "OwnState",
    "Verdict",
    "refuse_inside_state",
]

RESERVED = ".daulat/"

# daulat's own files under a destination's ``.daulat/`` (relative to the prefix): manifests and
# their signatures, the name key and its signature, carried origin manifests, drill scratch
# copies and S3 key probes.
OWN_FILE = re.compile(
    r"\.daulat/(?:"
    r"manifest-[^/]*\.jsonl(?:\.age)?(?:\.sig)?"
    r"|names\.key\.age(?:\.sig)?"
    r"|origin/.*"
    r"|drill-[^/]+/.*"
    r"|keyprobe-[^/]+/.*"
    r")",
    re.DOTALL,
)

# Files of a local state directory, at any depth: key material, journals and databases, the
# audit log, run and destination locks.
_STATE_FILE = re.compile(
    r"(?P<dir>(?:.*/)?\.daulat/)(?:"
    r"(?:keys|names|runs|locks)/.*"
    r"|[^/]*\.sqlite(?:-wal|-shm|-journal)?"
    r"|audit\.jsonl"
    r")",
    re.DOTALL,
)

# How many reserved keys a summary names (the count is always whole).
KEPT_KEYS = 100


class Verdict(StrEnum):
    DATA = "data"
    OWN = "own"  # daulat's own destination files: skipped without a word
    STATE = "state"  # local state: skipped, said in the summary
    RESERVED = "reserved"  # someone's object in daulat's namespace: not copied, run incomplete


@dataclass(frozen=True)
class OwnState:
    """Where the running configuration's state directory lies inside an endpoint: its key
    prefix relative to the endpoint's prefix (``"proj/.daulat/"``), or None outside it."""

    path: str  # the state directory's real path, ending in '/'
    src: str | None = None
    dst: str | None = None

    @classmethod
    def of(cls, state_dir: Path, src: Location, dst: Location) -> OwnState:
        path = real_dir(state_dir)
        return cls(path, _within(src, path), _within(dst, path))


def real_dir(path: Path) -> str:
    real = os.path.realpath(path)
    return real if real.endswith("/") else real + "/"


def _within(loc: Location, state: str) -> str | None:
    if loc.kind != "file" or not state.startswith(loc.path):
        return None
    return state[len(loc.path) :]


def refuse_inside_state(state_dir: Path, src: Location, dst: Location) -> None:
    """Raise :class:`OverlappingLocations` (exit 2) when either endpoint is daulat's own state
    directory or lies inside it."""
    state = real_dir(state_dir)
    for role, loc in (("source", src), ("destination", dst)):
        if loc.kind == "file" and loc.path.startswith(state):
            raise OverlappingLocations(
                f"the {role} ({loc}) is inside daulat's own state directory {state.rstrip('/')}, "
                "which holds its private keys, journal and audit log: daulat never copies "
                f"them, nor writes into it. Choose a {role} outside it"
            )


@dataclass
class KeptOut:
    """What a listing left out, for the summary."""

    state_objects: int = 0
    state_bytes: int = 0
    state_dirs: list[str] = field(default_factory=list)
    reserved_objects: int = 0
    reserved_bytes: int = 0
    reserved: list[str] = field(default_factory=list)  # the first KEPT_KEYS, in listing order


@dataclass
class KeepOut:
    """The verdict on each key of one side's listing (keys relative to its prefix).

    ``state``: the running state directory's prefix in this listing (:class:`OwnState`).
    ``destination``: the listing is of a destination, whose whole top-level ``.daulat/`` is
    daulat's (nothing there is data, and nothing there is ever deleted)."""

    state: str | None = None
    destination: bool = False
    kept: KeptOut = field(default_factory=KeptOut)

    def verdict(self, key: str) -> Verdict:
        if self.state is not None and key.startswith(self.state):
            return Verdict.STATE
        if _STATE_FILE.fullmatch(key) is not None:
            return Verdict.STATE
        if key.startswith(RESERVED):
            if self.destination or OWN_FILE.fullmatch(key):
                return Verdict.OWN
            return Verdict.RESERVED
        return Verdict.DATA

    def admit(self, key: str, size: int) -> bool:
        """Whether ``key`` is data to list; counts what it keeps out."""
        v = self.verdict(key)
        if v == Verdict.DATA:
            return True
        k = self.kept
        if v == Verdict.STATE:
            k.state_objects += 1
            k.state_bytes += size
            where = _state_dir_of(key, self.state)
            if where not in k.state_dirs:
                k.state_dirs.append(where)
        elif v == Verdict.RESERVED:
            k.reserved_objects += 1
            k.reserved_bytes += size
            if len(k.reserved) < KEPT_KEYS:
                k.reserved.append(key)
        return False


def _state_dir_of(key: str, own: str | None) -> str:
    """The state directory (relative prefix) that ``key`` lies in."""
    if own is not None and key.startswith(own):
        return own
    m = _STATE_FILE.fullmatch(key)
    return m["dir"] if m is not None else key
