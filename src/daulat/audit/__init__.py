"""The audit log: what daulat did, when and by whom, in a file anyone can check.

Two modules, one for each question a reader has:

* :mod:`daulat.audit.log`: the file itself: a hash-chained JSON Lines log, how it is appended
  to under concurrency and how :meth:`AuditLog.verify` finds tampering (format and limits in
  its docstring).
* :mod:`daulat.audit.recording`: how daulat's operations end up in it: :func:`audited` wraps
  every library entry point that changes state, so the command line and Python callers are
  recorded alike, however the run ends.

Callers import from here (``from daulat.audit import audited, AuditLogError``).
"""

from daulat.audit.log import (
    GENESIS_PREV,
    AuditEntry,
    AuditLog,
    AuditLogError,
    Checkpoint,
    JSONValue,
    Problem,
    ProblemKind,
    VerifyResult,
    canonical_json,
    default_actor,
    secret_looking_key,
)
from daulat.audit.recording import (
    AUDIT_NAME,
    AuditRecord,
    audit_log,
    audited,
    command_failures_audited,
    ensure_writable,
    failures_audited,
    record,
)

__all__ = [
    "AUDIT_NAME",
    "GENESIS_PREV",
    "AuditEntry",
    "AuditLog",
    "AuditLogError",
    "AuditRecord",
    "Checkpoint",
    "JSONValue",
    "Problem",
    "ProblemKind",
    "VerifyResult",
    "audit_log",
    "audited",
    "canonical_json",
    "command_failures_audited",
    "default_actor",
    "ensure_writable",
    "failures_audited",
    "record",
    "secret_looking_key",
]
