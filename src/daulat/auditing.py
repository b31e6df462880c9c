"""Where commands record what they changed: the audit log beside the configuration."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from daulat.audit import AuditEntry, AuditLog

AUDIT_NAME = "audit.jsonl"


def audit_log(state_dir: Path) -> AuditLog:
    return AuditLog(state_dir / AUDIT_NAME)


def record(state_dir: Path, operation: str, details: Mapping[str, object]) -> AuditEntry:
    """Append one entry; called after each state-changing operation, success or not."""
    return audit_log(state_dir).append(operation, details)
