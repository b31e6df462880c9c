"""``daulat clean STORE``: remove what daulat itself left behind at a store, and nothing else.

What a killed or failed run can leave, and how each is known to be daulat's own:

- **temp files** of a directory store (``.daulat-tmp/*.daulat-part``): named by daulat and locked
  while written, so a file whose lock can be taken belongs to no live writer
  (:func:`daulat.stores.cleanup.cleanup_temp`);
- **unfinished multipart uploads** at an S3 store: only those the journal recorded, by upload id,
  before their first part was sent, and whose run is no longer going on
  (:func:`daulat.transfer.uploads.abort_recorded`). Other applications' uploads in the same
  bucket are never touched. No recorded upload is resumable yet, so ``include_resumable``
  changes nothing today; it is there so that the command keeps its meaning once some are;
- **drill scratch copies** (``.daulat/drill-<id>/``) that a drill recorded and could not remove.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from daulat.address import store_only
from daulat.audit import audited
from daulat.config import Config
from daulat.drill.record import DrillLog
from daulat.drill.run import sweep_leftovers
from daulat.stores import open_store
from daulat.stores.abilities import upload_cleanup
from daulat.stores.cleanup import cleanup_temp
from daulat.transfer.journal import Journal
from daulat.transfer.retry import RetryPolicy
from daulat.transfer.uploads import abort_recorded


@dataclass
class CleanReport:
    """What ``clean`` removed at one store (or, with ``dry_run``, would remove)."""

    store: str
    dry_run: bool = False
    temp_files: int = 0
    temp_bytes: int = 0
    uploads_aborted: int = 0
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
        report = await _clean(config, name, dry_run=dry_run)
        audit.done(report, "ok" if report.ok else "incomplete")
    return report


async def _clean(config: Config, name: str, *, dry_run: bool) -> CleanReport:
    report = CleanReport(name, dry_run=dry_run)
    store = open_store(config.store(name))
    retry = RetryPolicy()
    call: Callable[[Callable[[], Awaitable[None]]], Awaitable[None]] = retry.call
    try:
        report.temp_files, report.temp_bytes = await cleanup_temp(store, dry_run=dry_run)
        s3 = upload_cleanup(store)
        if s3 is not None:
            with Journal.in_state_dir(config.state_dir) as journal:
                report.uploads_aborted = await abort_recorded(journal, s3, call, dry_run=dry_run)
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
