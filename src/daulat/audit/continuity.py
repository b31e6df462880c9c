"""That the audit log only ever grows: its last verified state, a deleted log, a new log.

A hash chain shows that its entries were not changed, but not that its newest entries are
still there: cut off at a line boundary, a log is still a valid chain, and an empty or deleted
log has nothing to check. So daulat remembers the state the log last verified in
``.daulat/audit.verified`` (a :class:`~daulat.audit.log.Checkpoint`: size, SHA-256, entries,
head entry and hash), updated before and after every audited run, and never to a shorter
state. A log that does not extend it (fewer entries, a different entry at the recorded head,
emptied, deleted) is reported by ``daulat audit verify`` and refused by every run.

A deleted log is also told by the state daulat's runs leave (a scan in the manifest, a run in
the transfer journal, a drill record): every run creates the log before it starts, so such a
record without a log means the log was removed. The same state beside an *empty* log with no
``audit.verified`` means both were emptied or removed: a new log has its empty state kept the
moment it is created, before any run writes anything (so a run killed before its first entry
leaves ``audit.verified`` beside the empty log, and is not taken for a loss). An
``audit.verified`` that is not a state (a directory, a link, edited) is damage too. After a
real loss, :func:`restart` starts a new log deliberately: the old file (if any) is set aside,
never deleted, and the new log's entry 0 names the head the old one last verified at.

What stays undetectable here: whoever deletes or rewrites both the log and ``audit.verified``
and the other state, or cuts the log to fewer (but some) entries and deletes
``audit.verified``, leaves nothing to compare with. Only a head hash kept elsewhere (a
signed destination manifest, a published report: ``daulat audit verify --head HASH``)
exposes that.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from daulat.audit.log import (
    AuditEntry,
    AuditLog,
    AuditLogError,
    Checkpoint,
    Problem,
    ProblemKind,
    VerifyResult,
)
from daulat.errors import StateError

__all__ = [
    "RESTART_OPERATION",
    "RUN_STATE",
    "VERIFIED_NAME",
    "DamagedLog",
    "intact_log",
    "remember",
    "remember_appended",
    "restart",
    "saved_checkpoint",
    "verify_log",
]

VERIFIED_NAME = "audit.verified"
# Rows only a run writes after it has created the log (see the module docstring): a database
# merely created (a first scan opens the manifest before its audit record begins) shows nothing.
# The names are those of daulat.inventory, daulat.transfer and daulat.drill (a test pins them;
# importing them here would import the packages that import this one).
RUN_STATE = (
    ("manifest.sqlite", "scans"),
    ("transfers.sqlite", "runs"),
    ("drills.sqlite", "drills"),
)
RESTART_OPERATION = "audit.restart"

log = logging.getLogger("daulat.audit")


def _verified_path(audit: AuditLog) -> Path:
    return audit.path.with_name(VERIFIED_NAME)


def saved_checkpoint(audit: AuditLog) -> Checkpoint | None:
    """The state ``audit`` last verified at, or None when none was kept (or it is unreadable)."""
    try:
        return Checkpoint.from_json(_verified_path(audit).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


def _damaged_checkpoint(audit: AuditLog) -> str | None:
    """What is wrong with ``audit.verified`` when it is there but not a state of the log (a
    directory, a link, edited): daulat writes it whole or not at all (a new file renamed into
    place), so that is tampering or a damaged disk, never a crash. None when it is absent or
    fine."""
    path = _verified_path(audit)
    if not os.path.lexists(path):
        return None
    fix = (
        "check the log against a head kept elsewhere (`daulat audit verify --head HASH`), then "
        "`daulat audit restart` sets it aside"
    )
    if path.is_symlink() or not path.is_file():
        return f"{path}, the state the log last verified at, is not a file; {fix}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return f"{path} cannot be read ({type(exc).__name__}); {fix}"
    if Checkpoint.from_json(text) is None:
        return f"{path} does not hold a state of the log (edited or damaged); {fix}"
    return None


def _has_rows(path: Path, table: str) -> bool:
    if not path.is_file():
        return False
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            return db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None
        finally:
            db.close()
    except sqlite3.Error:  # unreadable or another file: no evidence either way
        return False


def _run_state(audit: AuditLog) -> Path | None:
    """A database holding a run that could only have started once the log existed."""
    for name, table in RUN_STATE:
        path = audit.path.with_name(name)
        if _has_rows(path, table):
            return path
    return None


@contextmanager
def _locked(audit: AuditLog) -> Iterator[None]:
    """The log's own exclusive lock (as appends take it): one writer of ``audit.verified``
    at a time, and never in the middle of an append."""
    fd = os.open(audit.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(path: Path, point: Checkpoint) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(point.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def remember(audit: AuditLog, point: Checkpoint) -> None:
    """Keep ``point`` as the state the log last verified at, unless a longer one is kept
    already (another process verified more meanwhile): the record never goes backwards."""
    path = _verified_path(audit)
    try:
        with _locked(audit):
            kept = saved_checkpoint(audit)
            if kept is not None and (kept.entries, kept.size) >= (point.entries, point.size):
                return
            _write(path, point)
    except OSError as exc:  # the next run re-verifies in full, and compares with the older one
        log.debug("daulat: cannot keep the audit checkpoint %s: %s", path, exc)


def verify_log(audit: AuditLog, published_head: str | None = None) -> VerifyResult:
    """What ``daulat audit verify`` reports: the chain, checked against the state it last
    verified at, and, when there is no log, whether runs show that there was one."""
    damaged = _damaged_checkpoint(audit)
    if damaged is not None:
        full = audit.verify(published_head)
        return VerifyResult(
            ok=False,
            entries=full.entries,
            head_seq=full.head_seq,
            head_hash=full.head_hash,
            problems=[*full.problems, Problem(None, None, ProblemKind.CHECKPOINT, damaged)],
        )
    since = saved_checkpoint(audit)
    result = _restarted_head(audit, audit.verify(published_head, since=since), published_head)
    if since is not None and since.entries:
        return result  # what it last verified at judges it
    missing = not audit.path.exists()
    if not missing and not _emptied(result, since):
        return result
    evidence = _run_state(audit)
    if evidence is None:
        return result
    if missing:
        problem = result.problems[0]
    else:
        problem = Problem(
            None,
            None,
            ProblemKind.REMOVED_AT_END,
            f"the audit log at {audit.path} is empty and {VERIFIED_NAME}, which every run "
            "keeps beside it from the log's start, is gone: its entries were removed",
        )
    message = f"{problem.message}; {evidence.name} beside it shows that daulat ran here"
    return VerifyResult(
        ok=False,
        entries=0,
        head_seq=None,
        head_hash=None,
        problems=[Problem(problem.line, problem.seq, problem.kind, message)],
    )


def _restarted_head(
    audit: AuditLog, result: VerifyResult, published_head: str | None
) -> VerifyResult:
    """``result``, saying so when a published head that is not in the log is the head a
    restart (``daulat audit restart``) named as the old log's: the report was made before the
    restart, and the old file, kept aside, is what holds it."""
    missing = [p for p in result.problems if p.kind == ProblemKind.HEAD_NOT_FOUND]
    if not missing or published_head is None:
        return result
    try:
        restart = next(
            (
                e
                for e in audit.entries()
                if e.operation == RESTART_OPERATION
                and e.details.get("previous_head_hash") == published_head
            ),
            None,
        )
    except (AuditLogError, OSError):
        return result
    if restart is None:
        return result
    aside = restart.details.get("set_aside")
    told = Problem(
        None,
        None,
        ProblemKind.HEAD_NOT_FOUND,
        f"the published head {published_head} is the head of the log before the restart at "
        f"entry {restart.seq} ({restart.time}), not of this one: "
        + (
            f"the old log was kept as {aside} beside this one"
            if aside
            else "the old log was already gone at the restart"
        )
        + "; what came before the restart cannot be checked against this log",
    )
    problems = [told if p in missing else p for p in result.problems]
    return replace(result, problems=problems)


def _emptied(result: VerifyResult, since: Checkpoint | None) -> bool:
    """An empty log with no kept state: a new log has its (empty) state kept from the moment
    it is created, before any run writes anything, so run state beside this one means its
    entries and ``audit.verified`` were both removed."""
    return result.ok and result.entries == 0 and since is None


class DamagedLog(StateError):
    """The audit log does not verify, or does not extend what it last verified at: daulat
    adds nothing to it (and so cannot record the refusal in it either)."""


def _refuse(audit: AuditLog, first: str, more: int) -> StateError:
    extra = f" (and {more} more problem(s))" if more else ""
    return DamagedLog(
        f"{audit.path}: the audit log is damaged, so daulat will not add to it: {first}{extra};"
        " run `daulat audit verify` for the details (after a real loss, `daulat audit restart`"
        " starts a new log that names the old one's head)"
    )


def intact_log(audit: AuditLog) -> AuditLog:
    """``audit``, checked to extend what it last verified at, or :class:`StateError`.

    A missing log is created (empty) when nothing shows that one existed, so that every later
    run finds it; when ``audit.verified`` or a run's state shows there was one, it is refused
    as deleted. The new checkpoint is kept only when it extends the old one.
    """
    damaged = _damaged_checkpoint(audit)
    if damaged is not None:
        raise _refuse(audit, damaged, 0)
    since = saved_checkpoint(audit)
    if not audit.path.exists():
        result = verify_log(audit)
        if (since is not None and since.entries) or _run_state(audit) is not None:
            raise _refuse(audit, result.problems[0].message, 0)
        audit.create()
    elif since is None and audit.path.stat().st_size == 0:
        result = verify_log(audit)  # emptied, when run state shows daulat ran here
        if not result.ok:
            raise _refuse(audit, result.problems[0].message, 0)
    try:
        result = audit.verify(since=since)
    except OSError as exc:
        raise StateError(f"{audit.path}: cannot read the audit log: {exc}") from None
    if not result.ok or result.checkpoint is None:
        first = result.problems[0].message if result.problems else "it does not verify"
        raise _refuse(audit, first, max(len(result.problems) - 1, 0))
    if result.checkpoint != since:
        remember(audit, result.checkpoint)
    return audit


def remember_appended(audit: AuditLog) -> None:
    """After an append: keep the log's new state, so that cutting off even the entry just
    written is detected. Verifies only what follows the kept state (a hash of the rest)."""
    try:
        result = audit.verify(since=saved_checkpoint(audit))
    except OSError as exc:
        log.debug("daulat: cannot re-read the audit log %s: %s", audit.path, exc)
        return
    if result.ok and result.checkpoint is not None:
        remember(audit, result.checkpoint)


def restart(audit: AuditLog, reason: str | None = None) -> tuple[AuditEntry, Path | None]:
    """Start a new log after a real loss: the old file (if any) is renamed aside, never
    deleted, and the new log's entry 0 (``audit.restart``) names the head the old log last
    verified at, why, and where the old file went. Refused (:class:`StateError`) while the log
    verifies: there is nothing to restart from."""
    since = saved_checkpoint(audit)
    result = verify_log(audit)
    if result.ok:
        raise StateError(
            f"{audit.path} verifies ({result.summary()}): there is nothing to restart;"
            " `daulat audit restart` is for a log that was lost or damaged"
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    aside: Path | None = None
    verified = _verified_path(audit)
    if _damaged_checkpoint(audit) is not None:
        # Kept, not deleted, as the log is: whatever it is, it is evidence.
        os.rename(verified, verified.with_name(f"{verified.name}.lost-{stamp}"))
    if audit.path.exists():
        aside = audit.path.with_name(f"{audit.path.name}.lost-{stamp}")
        os.rename(audit.path, aside)  # same directory: atomic, and the old bytes stay whole
    details: dict[str, object] = {
        "previous_head_seq": since.head_seq if since is not None else None,
        "previous_head_hash": since.head_hash if since is not None else None,
        "previous_entries": since.entries if since is not None else None,
        "problem": result.problems[0].message[:500] if result.problems else None,
        "set_aside": aside.name if aside is not None else None,
    }
    if reason:
        details["reason"] = reason
    entry = audit.append(RESTART_OPERATION, details)
    # The one deliberate step back: the old checkpoint described the lost log.
    fresh = audit.verify()
    if fresh.checkpoint is not None:
        with _locked(audit):
            _write(_verified_path(audit), fresh.checkpoint)
    return entry, aside
