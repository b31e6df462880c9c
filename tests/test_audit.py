"""Tests for the tamper-evident audit log, on real files.

Each tampering test damages the file the way a person with a text editor (or a
script) would, then checks that verify() notices, says what kind of damage it
is, and points at the right entry and line.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from daulat.audit import (
    GENESIS_PREV,
    AuditEntry,
    AuditLog,
    AuditLogError,
    Checkpoint,
    ProblemKind,
    VerifyResult,
    secret_looking_key,
)


def _log_with(path: Path, n: int) -> AuditLog:
    log = AuditLog(path)
    for i in range(n):
        log.append("scan", {"bucket": f"b{i}", "objects": i * 10}, actor="tester@host")
    return log


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(lines), encoding="utf-8")


def _rehash(obj: dict[str, object]) -> dict[str, object]:
    """What a careful forger does: recompute the hash over the edited content."""
    body = {k: v for k, v in obj.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {**body, "hash": hashlib.sha256(canonical.encode("utf-8")).hexdigest()}


def _kinds(result: VerifyResult) -> list[ProblemKind]:
    return [p.kind for p in result.problems]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / ".daulat" / "audit.jsonl"


# ------------------------------------------------------------------ happy path


def test_append_builds_a_hash_chain_that_verifies(path: Path) -> None:
    log = _log_with(path, 5)

    entries = list(log.entries())
    assert [e.seq for e in entries] == [0, 1, 2, 3, 4]
    assert entries[0].prev == GENESIS_PREV
    for before, after in itertools.pairwise(entries):
        assert after.prev == before.hash
    # The hash is reproducible from the spec alone, without daulat.
    for raw in _lines(path):
        obj = json.loads(raw)
        assert _rehash(obj)["hash"] == obj["hash"]

    head = log.head()
    assert head == entries[-1]
    result = log.verify()
    assert result.ok, result.summary()
    assert result.entries == 5
    assert result.head_seq == 4
    assert result.head_hash == head.hash
    assert result.problems == []
    assert "intact" in result.summary()


def test_entry_fields(path: Path) -> None:
    log = AuditLog(path)
    entry = log.append("keys.new", {"recipient": "age1xyz", "nested": {"ü": [1, 2.5, None]}})
    assert entry.seq == 0
    assert entry.time.endswith("Z")
    assert "@" in entry.actor
    assert entry.operation == "keys.new"
    assert entry.details == {"recipient": "age1xyz", "nested": {"ü": [1, 2.5, None]}}
    line = path.read_bytes()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert "ü".encode() in line  # ensure_ascii=False: stored as UTF-8, not \\u escapes
    assert AuditEntry(**json.loads(line)) == entry


def test_empty_and_missing_log(path: Path) -> None:
    log = AuditLog(path)
    assert log.head() is None
    assert list(log.entries()) == []
    missing = log.verify()
    assert not missing.ok
    assert _kinds(missing) == [ProblemKind.NO_LOG]

    path.parent.mkdir(parents=True)
    path.touch()
    empty = log.verify()
    assert empty.ok and empty.entries == 0 and empty.head_hash is None


def test_file_is_created_0600_whatever_the_umask(path: Path) -> None:
    old = os.umask(0)
    try:
        AuditLog(path).append("check", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_published_head_is_found_until_the_log_is_cut(path: Path) -> None:
    log = _log_with(path, 3)
    head = log.head()
    assert head is not None
    published = head.hash
    log.append("exit", {"provider": "aws"}, actor="tester@host")  # the log grows afterwards

    result = log.verify(published_head=published.upper())
    assert result.ok, result.summary()
    assert result.published_head_seq == 2

    # Cutting entries off at a line boundary leaves a valid chain; only the
    # published head exposes it.
    _write_lines(path, _lines(path)[:2])
    assert log.verify().ok
    cut = log.verify(published_head=published)
    assert not cut.ok
    assert _kinds(cut) == [ProblemKind.HEAD_NOT_FOUND]

    with pytest.raises(ValueError, match="not a hex SHA-256"):
        log.verify(published_head="abc")


# ------------------------------------------------------------------ tampering


def test_edited_middle_entry_is_named(path: Path) -> None:
    log = _log_with(path, 5)
    lines = _lines(path)
    obj = json.loads(lines[2])
    obj["details"]["objects"] = 999_999  # still valid JSON, hash left alone
    lines[2] = json.dumps(obj) + "\n"
    _write_lines(path, lines)

    result = log.verify()
    assert not result.ok
    assert len(result.problems) == 1
    problem = result.problems[0]
    assert (problem.kind, problem.seq, problem.line) == (ProblemKind.EDITED, 2, 3)
    assert problem.message == "entry 2 (line 3) was edited: its hash does not match its content"
    assert "entry 2 (line 3) was edited" in result.summary()


def test_edited_last_entry_blocks_head_and_append(path: Path) -> None:
    log = _log_with(path, 3)
    lines = _lines(path)
    lines[-1] = lines[-1].replace('"b2"', '"bX"')
    _write_lines(path, lines)
    before = path.read_bytes()

    # A report must not publish a head hash that does not match its content,
    # and new entries must not be chained onto an edited one.
    with pytest.raises(AuditLogError, match=r"\(entry 2\) was edited"):
        log.head()
    with pytest.raises(AuditLogError, match="edited"):
        log.append("check", {})
    assert path.read_bytes() == before
    assert _kinds(log.verify()) == [ProblemKind.EDITED]


def test_edited_seq_is_one_problem_not_a_cascade(path: Path) -> None:
    log = _log_with(path, 6)
    lines = _lines(path)
    obj = json.loads(lines[3])
    obj["seq"] = 9
    lines[3] = json.dumps(obj) + "\n"
    _write_lines(path, lines)

    result = log.verify()
    assert _kinds(result) == [ProblemKind.EDITED]
    assert "stands where entry 3 belongs" in result.problems[0].message


def test_edited_and_rehashed_entry_breaks_the_next_link(path: Path) -> None:
    log = _log_with(path, 5)
    lines = _lines(path)
    lines[1] = json.dumps(_rehash({**json.loads(lines[1]), "actor": "mallory@evil"})) + "\n"
    _write_lines(path, lines)

    result = log.verify()
    assert _kinds(result) == [ProblemKind.BROKEN_CHAIN]
    assert (result.problems[0].seq, result.problems[0].line) == (2, 3)
    assert "does not link to entry 1" in result.problems[0].message


def test_deleted_middle_line(path: Path) -> None:
    log = _log_with(path, 5)
    lines = _lines(path)
    del lines[2]
    _write_lines(path, lines)

    result = log.verify()
    assert _kinds(result) == [ProblemKind.MISSING]
    problem = result.problems[0]
    assert problem.seq == 2
    assert problem.line == 3
    assert problem.message.startswith("entry 2 is missing")
    assert "right after entry 1" in problem.message


def test_deleted_first_lines(path: Path) -> None:
    log = _log_with(path, 5)
    _write_lines(path, _lines(path)[2:])

    result = log.verify()
    assert _kinds(result) == [ProblemKind.MISSING]
    assert result.problems[0].message.startswith("entries 0 to 1 are missing")
    assert "at the start of the log" in result.problems[0].message


def test_swapped_lines(path: Path) -> None:
    log = _log_with(path, 5)
    lines = _lines(path)
    lines[1], lines[2] = lines[2], lines[1]
    _write_lines(path, lines)

    result = log.verify()
    assert _kinds(result) == [ProblemKind.REORDERED]
    problem = result.problems[0]
    assert (problem.seq, problem.line) == (1, 3)
    assert "out of order" in problem.message


def test_truncated_last_line(path: Path) -> None:
    log = _log_with(path, 4)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # cut mid-JSON in the last entry

    result = log.verify()
    assert _kinds(result) == [ProblemKind.TRUNCATED]
    assert result.problems[0].line == 4
    assert "cut off" in result.problems[0].message
    assert result.head_seq == 2
    # Appending on top of the damage would hide it; append refuses instead.
    with pytest.raises(AuditLogError, match="middle of a line"):
        log.append("check", {})
    with pytest.raises(AuditLogError, match="line 4"):
        list(log.entries())


def test_missing_final_newline_is_reported(path: Path) -> None:
    log = _log_with(path, 2)
    path.write_bytes(path.read_bytes()[:-1])
    result = log.verify()
    assert _kinds(result) == [ProblemKind.TRUNCATED]
    assert result.problems[0].seq == 1
    assert result.entries == 2


def test_forged_entry_with_recomputed_hash_but_wrong_prev(path: Path) -> None:
    log = _log_with(path, 3)
    forged = _rehash(
        {
            "seq": 3,
            "time": "2030-01-01T00:00:00.000000Z",
            "actor": "mallory@evil",
            "operation": "exit",
            "details": {"provider": "aws", "deleted": True},
            "prev": "ab" * 32,
        }
    )
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(forged) + "\n")

    result = log.verify()
    assert _kinds(result) == [ProblemKind.BROKEN_CHAIN]
    assert (result.problems[0].seq, result.problems[0].line) == (3, 4)


def test_inserted_copy_of_an_entry(path: Path) -> None:
    log = _log_with(path, 4)
    lines = _lines(path)
    lines.insert(3, lines[1])
    _write_lines(path, lines)

    result = log.verify()
    assert _kinds(result) == [ProblemKind.DUPLICATE]
    assert (result.problems[0].seq, result.problems[0].line) == (1, 4)


def test_non_json_and_malformed_lines(path: Path) -> None:
    log = _log_with(path, 4)
    lines = _lines(path)
    lines[1] = "this is not json\n"
    lines[2] = json.dumps({"seq": 2, "hello": "world"}) + "\n"
    _write_lines(path, lines)

    result = log.verify()
    assert _kinds(result) == [ProblemKind.NOT_JSON, ProblemKind.MALFORMED]
    assert result.problems[0].line == 2
    assert result.problems[0].message.startswith("line 2 is not valid JSON")
    assert (result.problems[1].line, result.problems[1].seq) == (3, 2)
    # The two damaged lines stood where entries 1 and 2 were; they are not
    # reported a second time as "missing".
    assert ProblemKind.MISSING not in _kinds(result)


def test_blank_line(path: Path) -> None:
    log = _log_with(path, 2)
    lines = _lines(path)
    lines.insert(1, "\n")
    _write_lines(path, lines)
    result = log.verify()
    assert _kinds(result) == [ProblemKind.NOT_JSON]
    assert result.problems[0].message == "line 2 is blank"


# ------------------------------------------------------------------ concurrency


def _append_many(path: str, worker: int, count: int, barrier: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    log = AuditLog(Path(path))
    for i in range(count):
        log.append("check", {"worker": worker, "i": i}, actor=f"worker{worker}@test")


def test_concurrent_appenders_in_separate_processes(path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    workers, per_worker = 4, 50
    barrier = ctx.Barrier(workers)
    procs = [
        ctx.Process(target=_append_many, args=(str(path), w, per_worker, barrier))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0

    entries = list(AuditLog(path).entries())
    assert [e.seq for e in entries] == list(range(workers * per_worker))
    # Each worker's own entries are in the order it wrote them.
    for w in range(workers):
        mine = [e.details["i"] for e in entries if e.details["worker"] == w]
        assert mine == list(range(per_worker))
    result = AuditLog(path).verify()
    assert result.ok, result.summary()
    assert result.entries == workers * per_worker
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# ------------------------------------------------------------------ secrets & input checks


@pytest.mark.parametrize(
    "details",
    [
        {"password": "hunter2-value"},
        {"target": {"account_key": "hunter2-value"}},
        {"creds": [{"AWS_SECRET_ACCESS_KEY": "hunter2-value"}]},
        {"sasToken": "hunter2-value"},
        {"sas": "hunter2-value"},
        {"identity": "hunter2-value"},
        {"private_key": "hunter2-value"},
        {"token": "hunter2-value"},
    ],
)
def test_secret_looking_key_is_refused_and_nothing_written(
    path: Path, details: dict[str, object]
) -> None:
    log = AuditLog(path)
    with pytest.raises(ValueError, match="looks like a secret") as excinfo:
        log.append("scan", details)
    assert "hunter2" not in str(excinfo.value)
    assert not path.exists()

    log.append("scan", {"bucket": "ok"})
    before = path.read_bytes()
    with pytest.raises(ValueError):
        log.append("scan", details)
    assert path.read_bytes() == before


def test_error_names_the_key(path: Path) -> None:
    with pytest.raises(ValueError, match=r"details\['target'\]\['account_key'\]"):
        AuditLog(path).append("scan", {"target": {"account_key": "x"}})


@pytest.mark.parametrize(
    "key", ["bucket", "object_key", "key", "region", "kansas", "identifier", "objects"]
)
def test_innocent_keys_are_allowed(key: str) -> None:
    assert not secret_looking_key(key)


def test_values_json_cannot_hold_are_refused(path: Path) -> None:
    log = AuditLog(path)
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        log.append("scan", {"when": object()})
    with pytest.raises(ValueError, match="JSON cannot represent"):
        log.append("scan", {"ratio": float("nan")})
    with pytest.raises(TypeError, match="non-string key"):
        log.append("scan", {"sizes": {1: 2}})
    with pytest.raises(ValueError, match="operation"):
        log.append("", {})
    assert not path.exists()


def test_a_checkpoint_skips_parsing_but_not_checking_the_verified_prefix(tmp_path: Path) -> None:
    """verify(since=...) hashes the prefix it verified before and parses only what follows;
    any change to that prefix (even one that keeps every line well-formed) is still found."""
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(5):
        log.append("scan", {"n": i})
    first = log.verify()
    assert first.ok and first.checkpoint is not None
    log.append("exit", {"n": 5})
    again = log.verify(since=first.checkpoint)
    assert again.ok and again.entries == 6 and again.head_seq == 5
    assert again.checkpoint == log.verify().checkpoint
    assert Checkpoint.from_json(first.checkpoint.to_json()) == first.checkpoint
    assert Checkpoint.from_json("{not json") is None

    data = log.path.read_bytes()
    log.path.write_bytes(data.replace(b'"n":1', b'"n":7', 1))
    edited = log.verify(since=again.checkpoint)
    assert not edited.ok and edited.checkpoint is None
    assert [p.kind for p in edited.problems] == [ProblemKind.EDITED]
    lines = data.splitlines(keepends=True)
    log.path.write_bytes(b"".join(lines[:2] + lines[3:]))
    removed = log.verify(since=again.checkpoint)
    assert not removed.ok and ProblemKind.MISSING in {p.kind for p in removed.problems}
