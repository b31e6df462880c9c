"""Writing the report to a file, as ``daulat report`` and the demo do, recorded in the audit log.

The report goes where ``-o`` says, so a slip of the finger must not destroy anything: it never
replaces the configuration in use, anything in a daulat state directory, a file holding a secret
key, a symbolic link or anything but a regular file; it replaces another file only when that is
a report daulat wrote (see :mod:`daulat.report.marker`) or when asked to (``force``). It is
written to a temporary file beside the target and renamed over it, so a failure never leaves a
half-written report (or a half-destroyed previous one).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from daulat.audit import audited
from daulat.config import STATE_DIR, Config
from daulat.errors import ConfigError, SafetyRefusal
from daulat.report.data import ReportData, collect
from daulat.report.html import render
from daulat.report.marker import HEAD_BYTES, holds_secret_key, is_report

__all__ = ["ReportRefused", "WrittenReport", "check_output", "write_report"]


class ReportRefused(SafetyRefusal):
    """The report would replace a file that must not be replaced (the message says which)."""


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


def check_output(path: Path, *, force: bool = False, config: Config | None = None) -> None:
    """Raise if the report may not be written to ``path`` (one line naming it, exit 2):
    :class:`ConfigError` when it cannot be (a directory, a missing directory),
    :class:`ReportRefused` when it must not be (see the module doc). ``force`` allows
    replacing a regular file that is not a report, nothing else. With ``config``, its file
    and signing key are protected too."""
    shown = path
    if path.is_symlink():
        raise ReportRefused(
            f"{shown} is a symbolic link: the report is written only to a regular file; "
            "give the path of the file itself"
        )
    if path.is_dir():
        raise ConfigError(f"{shown} is a directory: give a file name, e.g. {path / 'report.html'}")
    parent = path.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise ConfigError(f"cannot write {shown}: the directory {parent} {what}")
    target = path.resolve()
    if STATE_DIR in target.parent.parts:
        raise ReportRefused(
            f"{shown} is inside a daulat state directory ({STATE_DIR}/), which holds the "
            "journal, the audit log and keys: write the report elsewhere"
        )
    if config is not None:
        if target == config.path.resolve():
            raise ReportRefused(f"{shown} is the configuration file in use: choose another name")
        if config.signing_key is not None and target == config.signing_key.resolve():
            raise ReportRefused(f"{shown} is the signing key in use: choose another name")
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"cannot write {shown}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ReportRefused(f"{shown} exists and is not a regular file: choose another name")
    head = _head(path)
    if holds_secret_key(head):
        raise ReportRefused(f"{shown} holds a secret key: the report never replaces it")
    if not is_report(head) and not force:
        raise ReportRefused(
            f"{shown} exists and is not a daulat report: choose another name, or pass --force "
            "to replace it"
        )


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(HEAD_BYTES)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


def write_report(
    config: Config,
    path: Path,
    fmt: Literal["html", "json"] = "html",
    *,
    force: bool = False,
    policies: Callable[[Config], dict[str, Any] | None] = _policies,
    drills: Callable[[Config], list[dict[str, Any]]] = _drills,
) -> WrittenReport:
    """Collect the report's data, render it as ``fmt`` and write it to ``path``.

    Raises :class:`ConfigError` when ``path`` cannot be written (a directory, a missing
    directory, no permission) and :class:`ReportRefused` when it must not be (see
    :func:`check_output`; ``force`` replaces a file that is not a report), before anything is
    collected where that can be known.
    """
    check_output(path, force=force, config=config)
    with audited(config.state_dir, "report", {"file": str(path.resolve()), "format": fmt}) as a:
        data = collect(config, policies=policies, drills=drills)
        text = json.dumps(data.to_json(), indent=2, default=str) if fmt == "json" else render(data)
        raw = text.encode("utf-8")
        # Checked again just before: the file may have changed while the data was collected.
        check_output(path, force=force, config=config)
        _write_atomically(path, raw)
        written = WrittenReport(path, fmt, len(raw), data)
        a.done(written)
        a.update(_details(written))
    return written


def _write_atomically(path: Path, raw: bytes) -> None:
    """Write ``raw`` to a new file beside ``path`` and rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.daulat-tmp")
    try:
        # O_EXCL|O_NOFOLLOW: never through a name someone else made; 0o666 less the umask,
        # as any file the user writes.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
        raise


def _details(written: WrittenReport) -> Mapping[str, object]:
    return {"audit_head": written.data.audit.head_hash}
