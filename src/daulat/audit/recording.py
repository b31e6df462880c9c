"""Where daulat records what it did: the audit log beside the configuration.

Every library entry point that changes state records itself with :func:`audited`, so that the
command line and Python callers are audited alike, and a run is recorded whatever its end; a
call that fails before its entry point began (a missing identity file, say) is recorded by
:func:`failures_audited`, through the same code:

* ``outcome``: ``"ok"``, what the entry point reports (``"incomplete"``…), ``"failed"`` when it
  raised, ``"interrupted"`` when a signal or a cancellation stopped it;
* on failure or interruption, ``error`` (the exception's class; ``"Interrupted"`` whenever a
  signal stopped it), ``signal`` (``"SIGINT"``) and, for daulat's own errors, ``message``;
* the entry point's details, including what an interrupted run had done.

A damaged log (any entry edited, removed or unreadable, not only its tail) stops the operation
*before* it changes anything: an action that could not be recorded in an intact chain is not
taken.
"""

from __future__ import annotations

import contextvars
import logging
import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daulat import interrupts
from daulat.audit.continuity import DamagedLog, intact_log, remember_appended
from daulat.audit.log import AuditEntry, AuditLog, AuditLogError
from daulat.errors import DaulatError, Interrupted
from daulat.state import private_dir

AUDIT_NAME = "audit.jsonl"
# How much of an error message goes into the log (messages name keys, which can be long).
MESSAGE_LIMIT = 500

log = logging.getLogger("daulat.audit")


def audit_log(state_dir: Path) -> AuditLog:
    """The audit log of ``state_dir``; existing state is made private (0700, files 0600) first
    (AuditLog creates a missing directory 0700 itself)."""
    if state_dir.is_dir():
        private_dir(state_dir)
    return AuditLog(state_dir / AUDIT_NAME)


def record(state_dir: Path, operation: str, details: Mapping[str, object]) -> AuditEntry:
    """Append one entry now (for operations with nothing to wrap, such as ``keys new``)."""
    private_dir(state_dir)
    return audit_log(state_dir).append(operation, details)


@dataclass
class AuditRecord:
    """What :func:`audited` will write; the entry point fills it in as it learns."""

    details: dict[str, object]
    describe: Callable[[Any], Mapping[str, object]] | None = None
    result: object | None = field(default=None, repr=False)

    def update(self, details: Mapping[str, object]) -> None:
        self.details.update(details)

    def done(self, result: object, outcome: str | None = None) -> None:
        """The operation returned ``result``; ``outcome`` overrides the default ``"ok"``."""
        self.result = result
        if self.describe is not None:
            self.details.update(self.describe(result))
        if outcome is not None:
            self.details["outcome"] = outcome


def ensure_writable(state_dir: Path) -> AuditLog:
    """The audit log, checked to accept an append; :class:`StateError` naming it if not.

    The whole chain is verified, not only its last line: an edited or removed entry anywhere
    stops the run, and so does a log that does not extend the state it last verified at (its
    newest entries cut off, emptied, deleted: see :mod:`daulat.audit.continuity`).
    ``audit.verified`` keeps that state, so only the entries added since are parsed; the bytes
    before them are hashed and must be exactly the ones that verified.
    """
    private_dir(state_dir)
    return intact_log(audit_log(state_dir))


@dataclass
class _Call:
    """A call under :func:`failures_audited`: whether an :func:`audited` block took over."""

    recorded: bool = False
    outer: _Call | None = None

    def mark(self) -> None:
        """Recorded: by this call's own entry, which is every enclosing call's entry too."""
        call: _Call | None = self
        while call is not None:
            call.recorded = True
            call = call.outer


# The innermost failures_audited() call. A mutable object, so that an audited() block running
# in a copy of the context (asyncio.to_thread, a task) still marks the call as recorded.
_call: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("daulat_call", default=None)


def _ended(
    exc: BaseException,
    details: dict[str, object],
    describe: Callable[[Any], Mapping[str, object]] | None,
) -> dict[str, object]:
    """``details`` completed with how ``exc`` ended the operation (the one place that decides
    what a failed or interrupted operation's entry says)."""
    # Here, not at the top: every audited command enters command_failures_audited, its
    # `--help` too, and only an operation that ran a coroutine can end cancelled.
    import asyncio

    d = details
    if isinstance(exc, Interrupted):
        d["outcome"] = "interrupted"
        d["signal"] = exc.signal_name
        if exc.result is not None and describe is not None:
            d.update(describe(exc.result))
            d["outcome"] = "interrupted"
    elif isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)):
        d["outcome"] = "interrupted"
        signum = interrupts.received()
        if signum is not None:
            # A signal cancelled the run: the entry names it, as an Interrupted one does, not
            # the CancelledError that carried it through the event loop.
            d["signal"] = signal.Signals(signum).name
            d["error"] = Interrupted.__name__
            return d
    else:
        d["outcome"] = "failed"
    d["error"] = type(exc).__name__
    if isinstance(exc, DaulatError) and not isinstance(exc, Interrupted):
        d["message"] = str(exc)[:MESSAGE_LIMIT]
    return d


def _append(audit: AuditLog, operation: str, details: Mapping[str, object]) -> None:
    try:
        audit.append(operation, details)
        remember_appended(audit)
    except (AuditLogError, OSError, ValueError) as failure:
        # The error that ended the operation matters more than this one; say both.
        log.warning("daulat: the audit log could not record this %s: %s", operation, failure)


@contextmanager
def failures_audited(
    state_dir: Path, operation: str, details: Mapping[str, object]
) -> Iterator[None]:
    """Record ``operation`` as failed (or interrupted) when the block raises before an
    :func:`audited` block inside it began: a missing identity file, an engine that does not
    exist, a Ray cluster that cannot be reached. Library calls and commands wrap everything
    after the configuration is loaded in it, so that every failed call is in the log, written
    by the same code as every other entry; one that reached its :func:`audited` block is
    recorded there, once."""
    with _failures_recorded(lambda: state_dir, operation, details, ()):
        yield


@contextmanager
def _failures_recorded(
    state_dir: Callable[[], Path | None],
    operation: str,
    details: Mapping[str, object],
    unrecorded: tuple[type[BaseException], ...],
) -> Iterator[None]:
    call = _Call(outer=_call.get())
    token = _call.set(call)
    try:
        yield
    except BaseException as exc:
        # A damaged log refused the call: there is nothing to record it in.
        if not call.recorded and not isinstance(exc, (DamagedLog, *unrecorded)):
            call.mark()
            try:
                where = state_dir()
                audit = ensure_writable(where) if where is not None else None
            except (AuditLogError, OSError, DaulatError) as failure:
                log.warning(
                    "daulat: the audit log could not record this %s: %s", operation, failure
                )
            else:
                if audit is not None:
                    _append(audit, operation, _ended(exc, dict(details), None))
        raise
    finally:
        _call.reset(token)


@contextmanager
def command_failures_audited(
    state_dir: Callable[[], Path | None],
    operation: str,
    details: Mapping[str, object],
    unrecorded: tuple[type[BaseException], ...] = (),
) -> Iterator[None]:
    """:func:`failures_audited` for a whole command: what ends it before its library call
    recorded anything (a filter, a recipient, a key file or a store name refused, an output
    path refused) is recorded as the command's failure. ``state_dir`` is asked only then (the
    configuration's may not be known, or not exist: then nothing can be recorded); exceptions
    of the ``unrecorded`` classes (a command line that does not parse) are not recorded."""
    with _failures_recorded(state_dir, operation, details, unrecorded):
        yield


@contextmanager
def audited(
    state_dir: Path,
    operation: str,
    details: Mapping[str, object],
    describe: Callable[[Any], Mapping[str, object]] | None = None,
) -> Iterator[AuditRecord]:
    """Record ``operation`` in the audit log when the block ends, however it ends.

    ``describe`` turns a result (given to :meth:`AuditRecord.done`, or carried by an
    :class:`~daulat.errors.Interrupted`) into details, so an interrupted run is recorded with
    what it had done. Raises :class:`StateError` before the block runs when the log is damaged.
    """
    interrupts.begin()
    call = _call.get()
    if call is not None:
        # From here the operation's record is this block's, even when the log refuses it
        # (damaged): the enclosing calls must not try, and warn, a second time.
        call.mark()
    audit = ensure_writable(state_dir)
    rec = AuditRecord(dict(details), describe)
    try:
        yield rec
    except BaseException as exc:
        _append(audit, operation, _ended(exc, rec.details, describe))
        raise
    rec.details.setdefault("outcome", "ok")
    audit.append(operation, rec.details)
    remember_appended(audit)
