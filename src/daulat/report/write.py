"""Writing the report to a file, as ``daulat report`` and the demo do, recorded in the audit log."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from daulat.auditing import audited
from daulat.config import Config
from daulat.errors import ConfigError
from daulat.report.data import ReportData, collect
from daulat.report.html import render

__all__ = ["WrittenReport", "write_report"]


@dataclass(frozen=True)
class WrittenReport:
    path: Path
    format: str
    size: int  # bytes written
    data: ReportData


def _policies(config: Config) -> dict[str, Any] | None:
    from daulat.policy import evaluate_policies

    return evaluate_policies(config).to_json() if config.raw_policies else None


def _drills(config: Config) -> list[dict[str, Any]]:
    from daulat.drill import drill_history

    return [row.to_json() for row in drill_history(config)]


def check_output(path: Path) -> None:
    """Raise :class:`ConfigError` (one line naming ``path``) if a file cannot be written there."""
    if path.is_dir():
        raise ConfigError(f"{path} is a directory: give a file name, e.g. {path / 'report.html'}")
    parent = path.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise ConfigError(f"cannot write {path}: the directory {parent} {what}")


def write_report(
    config: Config,
    path: Path,
    fmt: Literal["html", "json"] = "html",
    *,
    policies: Callable[[Config], dict[str, Any] | None] = _policies,
    drills: Callable[[Config], list[dict[str, Any]]] = _drills,
) -> WrittenReport:
    """Collect the report's data, render it as ``fmt`` and write it to ``path``.

    Raises :class:`ConfigError` when ``path`` cannot be written (a directory, a missing
    directory, no permission), before anything is collected where that can be known.
    """
    check_output(path)
    with audited(config.state_dir, "report", {"file": str(path.resolve()), "format": fmt}) as a:
        data = collect(config, policies=policies, drills=drills)
        text = json.dumps(data.to_json(), indent=2, default=str) if fmt == "json" else render(data)
        raw = text.encode("utf-8")
        try:
            path.write_bytes(raw)
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
        written = WrittenReport(path, fmt, len(raw), data)
        a.done(written)
        a.update(_details(written))
    return written


def _details(written: WrittenReport) -> Mapping[str, object]:
    return {"audit_head": written.data.audit.head_hash}
