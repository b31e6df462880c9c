"""Findings: a rule judged for a store, gathered per policy and for the whole check."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    UNKNOWN = "unknown"


def _worst(statuses: Iterable[Status]) -> Status:
    seen = set(statuses)
    if Status.FAIL in seen:
        return Status.FAIL
    if Status.UNKNOWN in seen or not seen:
        return Status.UNKNOWN
    return Status.PASS


@dataclass(frozen=True)
class Finding:
    """One rule judged for one store (or for the policy as a whole when ``store`` is None).

    ``objects``/``bytes`` are what the finding is about (the objects violating the rule when it
    fails), ``None`` when unknown. ``data`` holds the numbers behind ``why`` for machines.
    """

    policy: str
    rule: str
    store: str | None
    status: Status
    why: str
    fix: str | None = None
    objects: int | None = None
    bytes: int | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "rule": self.rule,
            "store": self.store,
            "status": self.status.value,
            "objects": self.objects,
            "bytes": self.bytes,
            "why": self.why,
            "fix": self.fix,
            "data": self.data,
        }


@dataclass(frozen=True)
class PolicyReport:
    """The findings of one policy."""

    name: str
    index: int
    stores: list[str]
    primary: str | None
    primary_reason: str
    prefix: str  # the data the policy governs: keys under this prefix at the primary
    findings: list[Finding]

    @property
    def status(self) -> Status:
        return _worst(f.status for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "index": self.index,
            "status": self.status.value,
            "stores": self.stores,
            "primary": self.primary,
            "primary_reason": self.primary_reason,
            "prefix": self.prefix,
            "findings": [f.to_json() for f in self.findings],
        }


@dataclass(frozen=True)
class PolicyResult:
    """Everything ``daulat check`` reports. See :mod:`daulat.policy` for the exit-code rule."""

    policies: list[PolicyReport]
    strict: bool
    evaluated_at: datetime
    manifest: Path | None  # the state read (None: did not exist yet)
    journal: Path | None

    @property
    def findings(self) -> list[Finding]:
        return [f for p in self.policies for f in p.findings]

    @property
    def status(self) -> Status:
        return _worst(p.status for p in self.policies)

    def count(self, status: Status) -> int:
        return sum(1 for f in self.findings if f.status == status)

    @property
    def exit_code(self) -> int:
        """1 on any fail (or, when strict, any unknown / no policy); else 0."""
        if self.status == Status.FAIL:
            return 1
        if self.status == Status.UNKNOWN and self.strict:
            return 1
        return 0

    @property
    def ok(self) -> bool:
        """No violation (and, when strict, nothing unknown): ``daulat check`` would exit 0."""
        return self.exit_code == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "exit_code": self.exit_code,
            "strict": self.strict,
            "evaluated_at": self.evaluated_at.isoformat(timespec="seconds"),
            "counts": {s.value: self.count(s) for s in Status},
            "state": {
                "manifest": str(self.manifest) if self.manifest else None,
                "journal": str(self.journal) if self.journal else None,
            },
            "policies": [p.to_json() for p in self.policies],
        }
