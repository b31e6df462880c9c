"""The audit log only grows: a log cut short, emptied, rewritten at its head or deleted is
reported by ``daulat audit verify`` (exit 1) and refused by every run (exit 2), and
``.daulat/audit.verified`` never goes back to a shorter state; ``daulat audit restart`` starts
a new log after a real loss, naming the old head."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from daulat.audit import AuditLog, ProblemKind, audit_log
from daulat.audit.continuity import RUN_STATE, intact_log, remember, saved_checkpoint
from daulat.cli import run
from daulat.config import load_config
from daulat.inventory import Manifest, scan_store
from daulat.stores import open_store


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(5):
        (src / "d" / f"{i}.txt").write_bytes(b"x" * (10 + i))
    (tmp_path / "daulat.toml").write_text(
        f'[stores.src]\nurl = "{src.as_uri()}"\nprovider = "local"\ncountry = "ID"\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _three_scans(project: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    for _ in range(3):
        assert run(["scan", "src", "-q"]) == 0
    capsys.readouterr()
    state = project / ".daulat"
    return state / "audit.jsonl", state / "audit.verified"


def _refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert run(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_newest_entries_cut_off_are_reported_and_every_run_refuses(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, verified = _three_scans(project, capsys)
    record = json.loads(verified.read_text())
    assert (record["entries"], record["head_seq"]) == (3, 2)  # the newest entry is covered too
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:1]))  # the two newest entries removed at a line boundary
    cut, kept = log.read_bytes(), verified.read_bytes()

    assert run(["audit", "verify"]) == 1
    err = capsys.readouterr().err
    assert "2 entries removed from the end: was 3, now 1" in err, err

    for args in (["scan", "src", "-q"], ["check"], ["keys", "new", "--out", "k.txt"]):
        assert "2 entries removed from the end" in _refused(args, capsys)
    # Nothing was added to the shorter chain, and the record of the longer log stands.
    assert log.read_bytes() == cut and verified.read_bytes() == kept
    assert not (project / "k.txt").exists()


def test_only_the_newest_entry_removed_is_detected(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, _ = _three_scans(project, capsys)
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-1]))
    assert run(["audit", "verify"]) == 1
    assert "1 entry removed from the end: was 3, now 2" in capsys.readouterr().err
    assert "1 entry removed from the end" in _refused(["scan", "src"], capsys)


def test_an_emptied_log_is_not_intact(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, verified = _three_scans(project, capsys)
    kept = verified.read_bytes()
    log.write_bytes(b"")
    assert run(["audit", "verify"]) == 1
    err = capsys.readouterr().err
    assert "3 entries removed from the end: was 3, now 0" in err and "intact" not in err, err
    assert "removed from the end" in _refused(["scan", "src"], capsys)
    assert log.read_bytes() == b"" and verified.read_bytes() == kept


def test_a_head_rewritten_to_another_valid_entry_is_reported(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cutting the newest entry and appending a forged one in its place keeps a valid chain
    of the same length: the recorded head's hash exposes it."""
    log, _ = _three_scans(project, capsys)
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-1]))
    AuditLog(log).append("scan", {"outcome": "ok", "forged": True})
    assert AuditLog(log).verify().ok  # the chain alone cannot tell

    assert run(["audit", "verify"]) == 1
    err = capsys.readouterr().err
    assert "entry 2 is not the entry the last verification recorded" in err, err
    assert "rewritten" in _refused(["scan", "src"], capsys)
    result = AuditLog(log).verify(since=saved_checkpoint(AuditLog(log)))
    assert [p.kind for p in result.problems] == [ProblemKind.REWRITTEN]


def test_a_deleted_log_is_refused_by_runs_as_by_audit_verify(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, verified = _three_scans(project, capsys)
    log.unlink()
    assert run(["audit", "verify"]) == 1
    err = capsys.readouterr().err
    assert "it was deleted; the last verification recorded 3 entries" in err, err
    assert "audit restart" in _refused(["scan", "src"], capsys)
    assert not log.exists()  # no new chain was started behind the user's back

    # Without audit.verified too, the scan manifest shows that daulat ran here.
    verified.unlink()
    assert run(["audit", "verify"]) == 1
    assert "manifest.sqlite beside it shows that daulat ran here" in capsys.readouterr().err
    assert "manifest.sqlite" in _refused(["scan", "src"], capsys)
    assert not log.exists()


def test_restart_after_a_loss_names_the_old_head_and_keeps_the_old_file(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, verified = _three_scans(project, capsys)
    old_head = json.loads(verified.read_text())["head_hash"]
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(lines[0])
    damaged = log.read_bytes()

    assert run(["audit", "restart", "--reason", "disk replaced"]) == 0
    said = capsys.readouterr().out
    assert old_head in said
    kept = [p for p in log.parent.iterdir() if p.name.startswith("audit.jsonl.lost-")]
    assert len(kept) == 1 and kept[0].read_bytes() == damaged  # set aside, byte for byte

    first = next(audit_log(log.parent).entries())
    assert (first.seq, first.operation) == (0, "audit.restart")
    assert first.details["previous_head_hash"] == old_head
    assert first.details["previous_entries"] == 3
    assert first.details["reason"] == "disk replaced"
    assert "removed from the end" in str(first.details["problem"])

    # The new log is the log now: runs go on, and it verifies.
    assert run(["scan", "src", "-q"]) == 0
    assert run(["audit", "verify"]) == 0
    assert "intact: 2 entries" in capsys.readouterr().out

    # A head published before the restart is named as the old log's, with where that is kept.
    assert run(["audit", "verify", "--head", old_head]) == 1
    said = capsys.readouterr().err
    assert "is the head of the log before the restart at entry 0" in said, said
    assert kept[0].name in said

    # A published report never presents the new chain as the whole history.
    assert run(["report", "--format", "json", "-o", "r.json"]) == 0
    restarts = json.loads((project / "r.json").read_text())["audit"]["restarts"]
    assert [(r["seq"], r["previous_head_hash"], r["reason"]) for r in restarts] == [
        (0, old_head, "disk replaced")
    ]
    assert run(["report", "-o", "r.html"]) == 0
    page = (project / "r.html").read_text()
    assert "id='audit-restarts'" in page and old_head in page and "disk replaced" in page


def test_restart_of_a_deleted_log_and_refusal_of_an_intact_one(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, _ = _three_scans(project, capsys)
    before = log.read_bytes()
    assert "nothing to restart" in _refused(["audit", "restart"], capsys)
    assert log.read_bytes() == before
    assert not [p for p in log.parent.iterdir() if ".lost-" in p.name]

    log.unlink()
    assert run(["audit", "restart"]) == 0
    capsys.readouterr()
    assert [e.operation for e in audit_log(log.parent).entries()] == ["audit.restart"]
    assert run(["scan", "src", "-q"]) == 0


def test_a_new_project_starts_its_log_with_its_first_run(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing shows an earlier log: the first run is not refused, and the log exists from
    before the run starts (so that state a killed run leaves is never taken for a lost log)."""
    assert run(["drill", "src", "src"]) == 2  # refused (no scan yet), and recorded
    capsys.readouterr()
    log = project / ".daulat" / "audit.jsonl"
    assert log.exists() and (log.stat().st_mode & 0o777) == 0o600
    assert [e.operation for e in audit_log(log.parent).entries()] == ["drill"]
    assert run(["scan", "src", "-q"]) == 0


def test_the_run_state_named_is_the_state_runs_write() -> None:
    from daulat.drill.record import DRILLS_NAME
    from daulat.inventory.database import MANIFEST_NAME
    from daulat.transfer.journalschema import JOURNAL_NAME

    assert [name for name, _ in RUN_STATE] == [MANIFEST_NAME, JOURNAL_NAME, DRILLS_NAME]


def test_a_deleted_log_beside_a_journal_of_runs_is_refused(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "dst").mkdir()
    with (project / "daulat.toml").open("a", encoding="utf-8") as f:
        f.write(f'[stores.dst]\nurl = "{(project / "dst").as_uri()}"\nprovider = "local"\n')
        f.write('country = "ID"\n')
    assert run(["copy", "src", "dst", "-q"]) == 0
    state = project / ".daulat"
    (state / "audit.jsonl").unlink()
    (state / "audit.verified").unlink()
    assert "transfers.sqlite beside it shows that daulat ran here" in _refused(
        ["copy", "src", "dst"], capsys
    )


def test_an_emptied_log_without_its_kept_state_beside_runs_is_refused(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Emptying the log and deleting ``audit.verified`` too leaves the scan that runs recorded:
    ``audit verify`` fails and runs refuse. A new project's empty log (its state kept from
    creation) is not taken for that."""
    assert run(["scan", "src", "-q"]) == 0
    state = project / ".daulat"
    (state / "audit.jsonl").write_bytes(b"")
    (state / "audit.verified").unlink()
    assert "manifest.sqlite beside it shows that daulat ran here" in _refused(
        ["scan", "src"], capsys
    )
    assert run(["audit", "verify"]) != 0
    assert "is empty" in capsys.readouterr().err
    assert (state / "audit.jsonl").read_bytes() == b""  # nothing was added to it


def test_a_run_killed_before_its_first_entry_is_not_taken_for_an_emptied_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A first run that dies after writing state but before its audit entry: the empty log
    has its kept state beside it, so the next run goes on."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_bytes(b"a")
    (tmp_path / "daulat.toml").write_text(
        f'[stores.src]\nurl = "{(tmp_path / "src").as_uri()}"\nprovider = "local"\n'
        'country = "ID"\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    state = tmp_path / ".daulat"
    intact_log(audit_log(state))  # what a run does first
    with Manifest.in_state_dir(state) as manifest:  # then the state it writes, then killed
        cfg = load_config(tmp_path / "daulat.toml")
        store = open_store(cfg.store("src"))
        asyncio.run(scan_store(store, manifest))
    assert (state / "audit.jsonl").read_bytes() == b""
    assert run(["scan", "src", "-q"]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("damage", ["directory", "garbage", "link"])
def test_a_damaged_kept_state_is_refused_not_ignored(
    project: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    """``audit.verified`` replaced by a directory, edited into something that is not a state,
    or made a link: ignoring it would switch the tail check off for good. ``audit verify``
    fails, runs refuse, and ``audit restart`` sets it aside (kept) so that runs go on."""
    log, verified = _three_scans(project, capsys)
    verified.unlink()
    if damage == "directory":
        verified.mkdir()
    elif damage == "garbage":
        verified.write_text("{}", encoding="utf-8")
    else:
        (project / "elsewhere.json").write_text("{}", encoding="utf-8")
        verified.symlink_to(project / "elsewhere.json")
    assert "audit.verified" in _refused(["scan", "src"], capsys)
    assert run(["audit", "verify"]) == 1
    assert "audit.verified" in capsys.readouterr().err
    assert run(["audit", "restart", "--reason", "audit.verified damaged"]) == 0
    capsys.readouterr()
    assert list(log.parent.glob("audit.verified.lost-*"))
    assert run(["scan", "src", "-q"]) == 0
    assert run(["audit", "verify"]) == 0


def test_the_kept_state_never_goes_back(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    for i in range(3):
        audit.append("op", {"i": i})
    short = audit.verify().checkpoint
    audit.append("op", {"i": 3})
    long = audit.verify().checkpoint
    assert short is not None and long is not None
    remember(audit, long)
    remember(audit, short)  # e.g. a slower process that verified before the last append
    assert saved_checkpoint(audit) == long
