"""``daulat clean STORE``: remove what daulat itself left behind at a store, and nothing else.

What a killed or failed run can leave, and how each is known to be daulat's own:

- **temp files** of a directory store (``.daulat-tmp/*.daulat-part``): named by daulat and locked
  while written, so a file whose lock can be taken belongs to no live writer
  (:func:`daulat.stores.cleanup.cleanup_temp`);
- **unfinished uploads** daulat began: only those the journal recorded before their first part
  was sent, and whose run is no longer going on. Other applications' uploads in the same bucket
  are never touched. By kind of store:

  - S3: the multipart upload is aborted, by upload id;
  - GCS: the resumable session is cancelled (``DELETE`` on the session URI the journal keeps;
    the URI is never shown);
  - Azure: the session's uncommitted blocks (their ids carry daulat's session id) are discarded,
    when that touches nothing of anyone else (:meth:`daulat.stores.azureblocks.AzureBlocks.abort_session`);
    otherwise they are left to Azure's clean-up and the report says why.

  An upload a later run could *resume* (a large object's, :mod:`daulat.transfer.resume`) is
  kept and counted unless ``include_resumable``: aborting it throws away what was uploaded;
- **drill scratch copies** (``.daulat/drill-<id>/``) that a drill recorded and could not remove.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from daulat.address import store_only
from daulat.audit import audited
from daulat.config import Config
from daulat.drill.record import DrillLog
from daulat.drill.run import sweep_leftovers
from daulat.stores import open_store
from daulat.stores.abilities import UploadCleanup, unwrap_resumable, upload_cleanup
from daulat.stores.base import Store
from daulat.stores.cleanup import cleanup_temp
from daulat.stores.resumable import ResumableStore, Session, SessionKept
from daulat.transfer.journal import Journal
from daulat.transfer.retry import RetryPolicy

Call = Callable[[Callable[[], Awaitable[None]]], Awaitable[None]]


@dataclass
class CleanReport:
    """What ``clean`` removed at one store (or, with ``dry_run``, would remove)."""

    store: str
    dry_run: bool = False
    temp_files: int = 0
    temp_bytes: int = 0
    uploads_aborted: int = 0  # S3 uploads aborted, GCS sessions cancelled, Azure blocks discarded
    resumable_kept: int = 0  # resumable uploads kept (no ``include_resumable``)
    uploads_left: int = 0  # could not be discarded without touching another writer's data
    # One line per recorded upload of a finished run: the key, what was (or would be) done.
    uploads: list[str] = field(default_factory=list)
    drill_scratch_problems: list[str] = field(default_factory=list)
    drill_scratch_removed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.drill_scratch_problems

    def to_json(self) -> dict[str, object]:
        return {**self.__dict__, "ok": self.ok}


async def clean_store(
    config: Config,
    name: str,
    *,
    include_resumable: bool = False,
    dry_run: bool = False,
) -> CleanReport:
    """Remove daulat's own leftovers at store ``name`` (see the module docstring); audited."""
    # An unknown name (or a STORE:PREFIX) is a ConfigError before anything is touched.
    config.store(store_only(name, "clean"))
    with audited(
        config.state_dir,
        "clean",
        {"store": name, "dry_run": dry_run, "include_resumable": include_resumable},
        lambda r: r.to_json(),
    ) as audit:
        report = await _clean(config, name, include_resumable=include_resumable, dry_run=dry_run)
        audit.done(report, "ok" if report.ok else "incomplete")
    return report


async def _clean(
    config: Config, name: str, *, include_resumable: bool, dry_run: bool
) -> CleanReport:
    report = CleanReport(name, dry_run=dry_run)
    store = open_store(config.store(name))
    retry = RetryPolicy()
    call: Call = retry.call
    try:
        report.temp_files, report.temp_bytes = await cleanup_temp(store, dry_run=dry_run)
        with Journal.in_state_dir(config.state_dir) as journal:
            await _clean_uploads(journal, store, call, report, include_resumable=include_resumable)
        log = DrillLog(config.state_dir)
        try:
            if dry_run:
                report.drill_scratch_removed = [s for _id, s in log.leftovers(store.name)]
            else:
                removed, problems = await sweep_leftovers(log, store, lambda _m: None)
                report.drill_scratch_removed, report.drill_scratch_problems = removed, problems
        finally:
            log.close()
    finally:
        await store.close()
    return report


async def _clean_uploads(
    journal: Journal, store: Store, call: Call, report: CleanReport, *, include_resumable: bool
) -> None:
    """Abort (cancel, discard) the uploads the journal records at ``store`` whose run is no
    longer going on; resumable ones only with ``include_resumable``."""
    s3 = upload_cleanup(store)
    resumable = unwrap_resumable(store)
    places: list[tuple[str, UploadCleanup | None, ResumableStore | None]] = []
    if s3 is not None:
        places.append((s3.location, s3, None))
    if resumable is not None and (s3 is None or resumable.location != s3.location):
        places.append((resumable.location, None, resumable))
    for location, multipart, sessions in places:
        continuable = {(k, u) for k, u, *_ in journal.resumable_uploads(location)}
        for key, upload_id, run, _started, part_size in journal.recorded_uploads(location):
            if journal.run_is_live(run):
                continue  # a run still working, here or in another process: its own
            if (key, upload_id) in continuable and not include_resumable:
                report.resumable_kept += 1
                report.uploads.append(f"{key}: kept, a later run resumes it")
                continue
            if report.dry_run:
                report.uploads_aborted += 1
                report.uploads.append(f"{key}: would {_verb(multipart)}")
                continue
            try:
                if multipart is not None:
                    await call(functools.partial(multipart.abort_multipart_upload, key, upload_id))
                elif sessions is not None:
                    session = Session(upload_id, part_size or 0)
                    await call(functools.partial(sessions.abort_session, key, session))
            except SessionKept as e:
                # Stays recorded: a later clean (or run) tries again once it can.
                report.uploads_left += 1
                report.uploads.append(f"{key}: left, {e}")
                continue
            journal.forget_upload(location, key, upload_id)
            report.uploads_aborted += 1
            report.uploads.append(f"{key}: {_verb(multipart, done=True)}")


def _verb(multipart: UploadCleanup | None, *, done: bool = False) -> str:
    if multipart is not None:
        return "aborted the multipart upload" if done else "abort the multipart upload"
    return "discarded the upload session" if done else "discard the upload session"
