"""One rule for which failed commands reach the audit log: every scan, copy, sync, exit,
restore, verify, drill, check and report that got as far as daulat's own checks is recorded
once, with ``outcome: failed`` and its error class, whether a store name, a filter, a
recipient, a key file or an output path was refused, and whether before or inside the
library call. A command line that does not parse (a usage error, shown with the usage line)
ran nothing and is not recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daulat.audit import audit_log
from daulat.cli import run


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(4):
        (src / "d" / f"{i}.txt").write_bytes(b"z" * (20 + i))
    stores = ""
    for name, root in (("src", src), ("dst", tmp_path / "dst")):
        stores += f'[stores.{name}]\nurl = "{root.as_uri()}"\nprovider = "local"\ncountry = "ID"\n'
    (tmp_path / "daulat.toml").write_text(stores, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dst").mkdir()
    assert run(["scan", "src", "-q"]) == 0  # the log exists and holds one entry
    return tmp_path


def _entries(project: Path) -> list[dict[str, Any]]:
    return [e.to_dict() for e in audit_log(project / ".daulat").entries()]


FAILURES = [
    (["scan", "nope"], "scan", "ConfigError"),
    (["copy", "src", "nope"], "copy", "ConfigError"),
    (["copy", "src", "dst", "--include", "[abc"], "copy", "ConfigError"),
    (["exit", "src", "dst:x", "--encrypt-to", "age1bogus"], "exit", "RecipientError"),
    (["verify", "src", "dst", "--full", "--identity", "nope.txt"], "verify", "KeyFileError"),
    (["restore", "dst", "src:r", "--identity", "nope.txt"], "restore", "KeyFileError"),
    (["drill", "src", "dst", "--encrypt-to", "nope-recipients.txt"], "drill", "RecipientError"),
    (["report", "-o", "daulat.toml"], "report", "ReportRefused"),
    (["report", "-o", "/nonexistent-dir/r.html"], "report", "ConfigError"),
]


@pytest.mark.parametrize(("args", "operation", "error"), FAILURES, ids=lambda v: str(v))
def test_a_command_refused_before_it_starts_is_recorded_once(
    project: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    operation: str,
    error: str,
) -> None:
    before = len(_entries(project))
    config = (project / "daulat.toml").read_bytes()
    code = run(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "could not record" not in err, err
    new = _entries(project)[before:]
    assert [e["operation"] for e in new] == [operation], new
    details = new[0]["details"]
    assert (details["outcome"], details["error"]) == ("failed", error), details
    assert details["message"]  # what the user was told, for the auditor too
    assert (project / "daulat.toml").read_bytes() == config
    assert audit_log(project / ".daulat").verify().ok


@pytest.mark.parametrize(
    "args",
    [
        ["copy", "src", "dst", "--concurrency", "0"],
        ["copy", "src", "dst", "--no-such-option"],
        ["drill", "src", "dst", "--sample", "abc"],
        ["scan", "src", "--shards", "x"],
    ],
    ids=lambda v: " ".join(v),
)
def test_a_command_line_that_does_not_parse_is_not_recorded(
    project: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    before = _entries(project)
    assert run(args) == 2
    assert "usage: daulat" in capsys.readouterr().err.lower()
    assert _entries(project) == before


def test_a_run_that_ends_with_a_finding_is_recorded_once_and_other_commands_not(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``verify`` of a destination never copied ends with exit 1 after its own record; the
    command-level record does not add a second. ``audit verify`` and ``stores`` are not
    state-changing runs."""
    before = len(_entries(project))
    assert run(["verify", "src", "dst"]) == 1
    assert run(["stores"]) == 0
    assert run(["audit", "verify", "--head", "0" * 64]) == 1
    capsys.readouterr()
    new = _entries(project)[before:]
    assert [e["operation"] for e in new] == ["verify"]
    assert new[0]["details"]["outcome"] != "failed"


def test_a_refusal_for_a_damaged_log_adds_nothing_and_says_it_once(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = project / ".daulat" / "audit.jsonl"
    log.write_bytes(log.read_bytes().replace(b'"scan"', b'"scam"', 1))
    damaged = log.read_bytes()
    assert run(["scan", "src"]) == 2
    err = capsys.readouterr().err
    assert err.count("audit log is damaged") == 1 and "could not record" not in err, err
    # Refused for another reason first: that is the error, and the log's state a notice.
    assert run(["scan", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown store 'nope'" in err and "could not record this scan" in err, err
    assert "audit log is damaged" in err
    assert log.read_bytes() == damaged
