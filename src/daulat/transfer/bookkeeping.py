"""Where the executor's results go: the journal (or what stands in for it), and the record of
the multipart uploads it begins.

:class:`Bookkeeping` is what the executor needs of the journal; :class:`Ledger` where
multipart uploads are recorded while they run, and :func:`record_uploads` the wrapper that records
an upload before its first part and forgets it once the object is committed or the upload
aborted (so that a killed run's parts can be found and aborted: :mod:`daulat.transfer.uploads`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from daulat.stores.base import OnUpload, PutResult
from daulat.transfer.journal import Completing, Outcome, WorkItem


class Bookkeeping(Protocol):
    """What the executor needs of the journal: the planned work and where outcomes go. The
    journal itself, or on a Ray worker, which never opens it, the stream of results back to
    the driver (:mod:`daulat.scale.worker`)."""

    def work(self) -> Iterable[WorkItem]: ...

    def record(
        self, pair: str, run_id: int, outcomes: Sequence[Outcome], settled: Sequence[str] = ()
    ) -> None: ...

    def record_completing(self, pair: str, run_id: int, row: Completing) -> None: ...


class Ledger(Protocol):
    """Where multipart uploads are recorded (:class:`~daulat.transfer.uploads.UploadLedger`)."""

    def started(self, key: str, upload_id: str) -> None: ...

    def finished(self, key: str, upload_id: str) -> None: ...

    async def failed(self, key: str, upload_id: str) -> None: ...


async def record_uploads(
    ledger: Ledger | None, write: Callable[[OnUpload | None], Awaitable[PutResult]]
) -> PutResult:
    """Run ``write`` so that a multipart upload it begins is recorded in ``ledger`` before its
    first part, and forgotten once the object is committed or the upload aborted."""
    if ledger is None:
        return await write(None)
    begun: list[tuple[str, str]] = []

    def on_upload(key: str, upload_id: str) -> None:
        ledger.started(key, upload_id)
        begun.append((key, upload_id))

    try:
        result = await write(on_upload)
    except Exception:
        for key, upload_id in begun:
            await ledger.failed(key, upload_id)
        raise
    for key, upload_id in begun:
        ledger.finished(key, upload_id)
    return result
