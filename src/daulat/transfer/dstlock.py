"""One run at a time into one destination, on this machine.

Two runs writing the same objects at once each see the other's writes as "different from what
was written" and both end incomplete. So every run that writes holds a lock, in the state
directory, named after its destination's real location (:mod:`daulat.transfer.locations`:
two store names for one place share it); a second run into the same place is refused (exit 2)
naming the process that holds it and when it started. The lock is an ``flock`` on a file in
``.daulat/locks/``: the kernel drops it when its process ends however it ends, so a killed run
never leaves a stale lock.

Another machine (or another daulat.toml with its own state directory) is not locked out: the
provider offers nothing daulat could lock with. The journal's per-object checks still keep such
a race from being reported as complete (see docs/threat-model.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

from daulat.errors import SafetyRefusal, StateError
from daulat.state import hold_lock
from daulat.transfer.locations import Location

__all__ = ["LOCKS", "DestinationBusy", "lock_destination", "release"]

LOCKS = "locks"


class DestinationBusy(SafetyRefusal):
    """Another run on this machine is writing the same destination."""


def _lock_path(state_dir: Path, dst: Location) -> Path:
    # The server is left out: two spellings of one server must share the lock, and a lock
    # shared by two servers' buckets of one name only makes two runs wait for each other.
    ident = f"{dst.kind}\n{dst.account}\n{dst.container}\n{dst.path}"
    return state_dir / LOCKS / f"{hashlib.sha256(ident.encode()).hexdigest()[:32]}.lock"


def lock_destination(state_dir: Path, dst: Location, label: str) -> int:
    """Hold the lock of ``dst``; returns its descriptor (see :func:`release`)."""
    path = _lock_path(state_dir, dst)
    try:
        fd = hold_lock(path)
    except StateError:
        holder = ""
        with contextlib.suppress(OSError):
            holder = path.read_text(encoding="utf-8").strip()
        who = f" ({holder})" if holder else ""
        raise DestinationBusy(
            f"another daulat run on this machine is writing {label} ({dst}){who}; wait for it "
            "to end (or stop it), then run again"
        ) from None
    started = datetime.now(UTC).isoformat(timespec="seconds")
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, started {started}\n".encode(), 0)
    return fd


def release(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
