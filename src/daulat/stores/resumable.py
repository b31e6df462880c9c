"""Uploads that outlive the process: the store half of resuming inside a large object.

A large object is uploaded in parts with the provider's own mechanism (S3 multipart uploads,
Azure uncommitted blocks, GCS resumable sessions). The caller keeps each upload's
:class:`Session` in its journal; a later run hands it back to :meth:`ResumableStore.put_resumable`
with the *whole* object's stream again, from its first byte. The store asks the provider what
it holds for the session, and then, part by part as the stream fills them:

* a part the provider holds, of the right size, whose checksum matches what the stream gives
  now (CRC32C and/or MD5, whichever the provider reports), is *kept*: not sent again;
* any other part (missing, another size, another checksum: tampered with, or from another
  version of the source) is sent.

Re-reading the kept parts from the source costs source reads but no upload, and it is what
keeps the object's SHA-256 right: the caller hashes the whole stream as on any put, so the
recorded hash is of the bytes the source gives now, each kept part checked against them.
(A resumable hash state would need SHA-256's inner state saved between runs, which hashlib does
not expose; and it would take the provider's word that the kept parts are what was sent.)

A session the provider no longer has (expired, aborted, committed over) raises
:class:`UploadGone`: before anything of the stream was read, when found out at the start, so
the caller can begin a fresh upload with the same stream; later as a transient error, so that
the object is tried again from its first byte.

Unlike :meth:`Store.put`, a failed ``put_resumable`` leaves the session at the provider for a
later attempt; the caller aborts it (:meth:`ResumableStore.abort_session`) when it decides not
to resume.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from daulat.errors import StoreError, Transient
from daulat.stores.base import PutResult, Store
from daulat.stores.forwarding import layers


@dataclass(frozen=True, slots=True)
class Session:
    """One upload at the provider, as the journal keeps it.

    ``upload_id``: the S3 UploadId; for Azure daulat's own session id, which every block id
    of the upload carries; for GCS the resumable session URI (a capability: it is kept in the
    0600 journal and never printed). ``part_size``: bytes per part, fixed for the upload's
    life (parts are matched by number, so a resume must cut the stream alike).
    """

    upload_id: str
    part_size: int


@dataclass(slots=True)
class ResumeStats:
    """What one resumable put did (summed over a run by the caller)."""

    resumed: bool = False  # an earlier session was continued
    kept_parts: int = 0  # found at the provider, checked, not sent again
    kept_bytes: int = 0
    sent_parts: int = 0
    sent_bytes: int = 0
    replaced_parts: int = 0  # found at the provider but not matching: sent again


class UploadGone(Transient):
    """The provider no longer has the upload session (expired, aborted, committed over)."""


class SessionKept(StoreError):
    """:meth:`ResumableStore.abort_session` left the session at the provider, because
    discarding it would also discard what another writer put there (Azure: uncommitted blocks
    of other writers beside daulat's, or a committed blob the discarding would rewrite). The
    provider's own expiry removes it; the message says why it was kept."""


#: Called with the new session once it exists and before its first part is sent.
OnSession = Callable[[Session], None]


@runtime_checkable
class ResumableStore(Protocol):
    """A store whose large uploads can be continued by a later process."""

    @property
    def location(self) -> str:
        """Where the store's objects are (endpoint, bucket or container, prefix)."""
        ...

    @property
    def part_size(self) -> int:
        """Bytes per part of new sessions."""
        ...

    async def put_resumable(
        self,
        key: str,
        data: AsyncIterable[bytes],
        *,
        metadata: Mapping[str, str] | None,
        session: Session | None,
        on_session: OnSession,
        stats: ResumeStats,
    ) -> PutResult:
        """Write ``key`` from ``data`` (the whole object), continuing ``session`` if given."""
        ...

    async def abort_session(self, key: str, session: Session) -> None:
        """Discard what the provider holds for ``session`` (succeeds when it is gone);
        :class:`SessionKept` when that cannot be done without touching another writer's
        data."""
        ...


def unwrap_resumable(store: Store | Any) -> ResumableStore | None:
    """The resumable store under retry/fault wrappers (their ``inner``), if any."""
    for current in layers(store, ResumableStore):
        if isinstance(current, ResumableStore):
            return current
        resumable = getattr(current, "resumable", None)
        if isinstance(resumable, ResumableStore):
            return resumable
    return None
