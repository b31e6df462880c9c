"""No traceback for user error, anywhere: malformed arguments, a wrong config value, broken or
foreign state files. Each gives one clear line and exit 2 (usage, config, unusable state) or 1
(the job failed); a damaged state file is named in the message.

Most cases run in-process (``daulat.cli.run``: an exception escaping it fails the test with its
traceback); the console script checks that nothing escapes ``main()`` either.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import s3_store_config
from servers import S3Server
from test_transfer import write_config

from daulat.cli import run
from daulat.config import StoreConfig
from daulat.stores import open_store


@dataclass
class Result:
    code: int
    out: str
    err: str


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Result:
    code = run(argv)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def exe(argv: list[str], cwd: Path) -> Result:
    daulat = shutil.which("daulat")
    assert daulat, "the daulat console script is not installed"
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.run(
        [daulat, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    src = tmp_path / "src"
    for i in range(30):
        (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 3}" / f"{i:02d}.txt").write_bytes(b"x" * (100 + i))
    (tmp_path / "dst").mkdir()  # a local directory that does not exist is an error to scan
    (tmp_path / "daulat.toml").write_text(
        f'[stores.src]\nurl = "{src.as_uri()}"\nprovider = "local"\ncountry = "ID"\n'
        f'[stores.dst]\nurl = "{(tmp_path / "dst").as_uri()}"\nprovider = "local"\n'
        'country = "ID"\n'
        '[[policies]]\nstores = ["src", "dst"]\nresidency = ["ID"]\nmax_exit_hours = 24\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def assert_clean(res: Result, codes: tuple[int, ...], what: object) -> None:
    assert res.code in codes, (what, res.code, res.err[-2000:])
    assert "Traceback" not in res.err + res.out, (what, res.err[-3000:])
    assert res.err.strip(), (what, "no message")


MALFORMED: list[tuple[list[str], int]] = [
    (["risk", "--country", "XX"], 2),
    (["risk", "--country", ""], 2),
    (["risk", "--country", "1"], 2),
    (["risk", "--country", "\x1b[31m"], 2),
    (["audit", "verify", "--head", "abc"], 2),
    (["audit", "verify", "--head", ""], 2),
    (["audit", "verify", "--head", "g" * 64], 2),
    (["report", "-o", "missing-dir/report.html"], 2),
    (["report", "-o", "src"], 2),  # a directory
    (["report", "-o", ""], 2),  # the current directory
    (["report", "-o", "daulat.toml/x.html"], 2),  # a file as the directory
    (["report", "--format", "pdf"], 2),
    (["keys", "new", "--out", "missing-dir/k.txt"], 2),
    (["keys", "new", "--out", "src"], 2),
    (["keys", "show", "missing.txt"], 2),
    (["keys", "show", "daulat.toml"], 2),
    (["init", "--dir", "daulat.toml"], 2),
    (["demo", "--dir", "daulat.toml"], 2),
    (["scan", "nostore"], 2),
    (["copy", "nostore", "dst"], 2),
    (["copy", "src", "nostore:p"], 2),
    (["copy", ":p", "dst"], 2),
    (["copy", "src", "dst", "--bwlimit", "fast"], 2),
    (["copy", "src", "dst", "--concurrency", "0"], 2),
    # An empty --max-delete is a mistake, not the default 50 % (it used to run the sync).
    (["sync", "src", "dst", "--delete", "--max-delete", ""], 2),
    (["sync", "src", "dst", "--delete", "--max-delete", " "], 2),
    (["restore", "dst", "src", "--identity", "daulat.toml", "--bwlimit", "fast"], 2),
    (["exit", "src", "dst", "--encrypt-to", "age1nope"], 2),
    (["exit", "src", "dst", "--encrypt-names"], 2),
    (["restore", "dst", "src"], 2),
    (["restore", "dst", "src", "--identity", "missing.txt"], 2),
    (["verify", "src", "dst", "--identity", "daulat.toml"], 2),
    (["drill", "src", "dst", "--sample", "lots"], 2),
    (["drill", "src", "dst", "--link", "fast"], 2),
    (["drill", "src"], 2),
    (["stores", "--config", "missing.toml"], 2),
    (["stores", "--config", "src"], 2),
    (["check", "--no-such-option"], 2),
]


@pytest.mark.parametrize(("argv", "code"), MALFORMED, ids=[" ".join(a) for a, _ in MALFORMED])
def test_malformed_arguments(
    project: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int
) -> None:
    res = cli(argv, capsys)
    assert_clean(res, (code,), argv)
    assert len(res.err.strip().splitlines()) <= 4, res.err  # one clear message, not a dump


def test_malformed_arguments_console_script(project: Path) -> None:
    for argv in (
        ["risk", "--country", "XX"],
        ["audit", "verify", "--head", "abc"],
        ["report", "-o", "missing-dir/report.html"],
        ["demo", "--dir", "daulat.toml"],
    ):
        assert_clean(exe(argv, project), (2,), argv)


def test_unassigned_country_in_the_config(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``country = "XX"`` passed the config's shape check and raised ValueError later (exit 1)."""
    toml = project / "daulat.toml"
    toml.write_text(toml.read_text().replace('country = "ID"', 'country = "XX"', 1))
    for argv in (["stores"], ["scan"], ["check"], ["risk"], ["report"]):
        res = cli(argv, capsys)
        assert_clean(res, (2,), argv)
        assert "'XX'" in res.err and "country" in res.err
    assert_clean(exe(["stores"], project), (2,), "console script")


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def _foreign_other_app(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA application_id = 1234")
    db.execute("CREATE TABLE users (id INTEGER, name TEXT)")
    db.commit()
    db.close()


def _foreign_same_names(path: Path) -> None:
    """Another program's database that happens to use daulat's table names."""
    db = sqlite3.connect(path)
    for table in ("journal", "runs", "scans", "objects", "changes", "drills"):
        db.execute(f"CREATE TABLE {table} (x)")
    db.commit()
    db.close()


def _foreign_unrelated(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE invoices (number INTEGER, total REAL)")
    db.commit()
    db.close()


BREAKERS = {
    "garbage": _garbage,
    "other-app": _foreign_other_app,
    "same-names": _foreign_same_names,
    "unrelated": _foreign_unrelated,
}
COMMANDS = [
    ["stores"],
    ["scan"],
    ["copy", "src", "dst"],
    ["exit", "src", "dst"],
    ["verify", "src", "dst"],
    ["check"],
    ["report", "-o", "r.html"],
    ["drill", "src", "dst", "--sample", "3"],
    ["drill", "--history"],
]
# Which commands open which state file: those must refuse with exit 2 and name the file.
USES = {
    "transfers.sqlite": {"copy", "exit", "verify", "check", "report", "drill", "drill --history"},
    "manifest.sqlite": {"stores", "scan", "check", "report", "drill"},
    "drills.sqlite": {"check", "report", "drill", "drill --history"},
}


def _tables(path: Path) -> set[str] | None:
    try:
        db = sqlite3.connect(path)
        try:
            return {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return None


@pytest.mark.parametrize("breaker", list(BREAKERS))
@pytest.mark.parametrize("name", list(USES))
def test_broken_state_files_are_named_not_tracebacks(
    project: Path, capsys: pytest.CaptureFixture[str], name: str, breaker: str
) -> None:
    # Real state first: a scan, an exit and a drill.
    assert cli(["scan"], capsys).code == 0
    assert cli(["exit", "src", "dst"], capsys).code == 0
    assert cli(["drill", "src", "dst", "--sample", "3", "--seed", "1"], capsys).code == 0
    state = project / ".daulat"
    saved = (state / name).read_bytes()

    def put_back(content: bytes | None) -> None:
        for p in state.iterdir():
            if p.name.startswith(name):
                p.unlink()
        if content is None:
            BREAKERS[breaker](state / name)
        else:
            (state / name).write_bytes(content)

    for argv in COMMANDS:
        put_back(None)
        before = _tables(state / name)
        res = cli(argv, capsys)
        command = " ".join(argv[:2]) if argv[:2] == ["drill", "--history"] else argv[0]
        if command in USES[name]:
            assert_clean(res, (2,), (name, breaker, argv))
            errors = [x for x in res.err.splitlines() if x.startswith("error:")]
            assert len(errors) == 1 and str(state / name) in errors[0], (argv, res.err)
        else:
            assert res.code in (0, 1, 2) and "Traceback" not in res.err, (argv, res.err)
        # Someone else's database is never turned into daulat's: no table added to it.
        assert _tables(state / name) == before, argv
        put_back(saved)


def test_damaged_audit_log_stops_before_any_change(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An action that could not be recorded is not taken: the exit refuses before copying."""
    log = project / ".daulat" / "audit.jsonl"
    assert cli(["scan", "src"], capsys).code == 0
    log.write_bytes(log.read_bytes()[:-5])  # cut the last line
    res = cli(["exit", "src", "dst"], capsys)
    assert_clean(res, (2,), "exit")
    assert str(log) in res.err
    assert not any((project / "dst").iterdir())


def test_an_edited_or_removed_audit_entry_stops_the_next_run(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not only a damaged last line: any entry edited or removed anywhere in the chain stops a
    run before it copies, with one line pointing at `daulat audit verify` (which says where)."""
    log = project / ".daulat" / "audit.jsonl"
    for _ in range(3):
        assert cli(["scan", "src"], capsys).code == 0
    assert (project / ".daulat" / "audit.verified").is_file()  # the runs left a checkpoint
    good = log.read_bytes()
    lines = good.splitlines(keepends=True)
    edited = lines[0].replace(b'"operation":"scan"', b'"operation":"scam"')
    assert edited != lines[0]
    for content in (edited + b"".join(lines[1:]), lines[0] + b"".join(lines[2:])):
        log.write_bytes(content)
        res = cli(["exit", "src", "dst"], capsys)
        assert_clean(res, (2,), "exit")
        errors = [x for x in res.err.splitlines() if x.strip()]
        assert len(errors) == 1 and str(log) in errors[0], res.err
        assert "daulat audit verify" in errors[0] and "damaged" in errors[0], res.err
        assert not any((project / "dst").iterdir())
        assert log.read_bytes() == content  # nothing appended to a broken chain
        assert cli(["audit", "verify"], capsys).code == 1
    log.write_bytes(good)
    assert cli(["exit", "src", "dst"], capsys).code == 0


def test_the_unpinned_signer_note_comes_only_from_runs_that_signed_a_manifest(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No `signers` pinned: a run that signed a manifest says how to pin its key; a run that
    signed nothing (its destination could not be listed) does not."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(project / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(project / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with (project / "daulat.toml").open("a", encoding="utf-8") as f:
        f.write(
            '[stores.nowhere]\nurl = "s3://no-such-bucket"\nendpoint = "http://127.0.0.1:9"\n'
            'provider = "self-hosted"\ncountry = "ID"\n'
        )
    unlisted = cli(["exit", "src", "nowhere"], capsys)
    assert unlisted.code == 1 and "cannot list the destination" in unlisted.err, unlisted.err
    assert "does not pin" not in unlisted.err + unlisted.out
    signed = cli(["exit", "src", "dst"], capsys)
    assert signed.code == 0 and "does not pin" in signed.err, signed.err


@pytest.mark.timeout(180)
def test_stores_on_a_bucket_of_more_than_1000_objects(tmp_path: Path, s3_server: S3Server) -> None:
    """Probing a store reads one page; a listing left open fetched the next one after the
    store was closed: "Task exception was never retrieved ... store is closed", every run."""
    raw = s3_store_config(s3_server, "big", "stores-1100")

    async def fill() -> None:
        store = open_store(StoreConfig.model_validate(raw))
        sem = asyncio.Semaphore(32)

        async def put(i: int) -> None:
            async with sem:
                await store.put(f"o/{i:05d}", b"x")

        try:
            await asyncio.gather(*(put(i) for i in range(1100)))
        finally:
            await store.close()

    asyncio.run(fill())
    write_config(tmp_path, [raw])
    for _ in range(2):
        res = exe(["stores"], tmp_path)
        assert res.code == 0, res.err
        assert "Task exception" not in res.err and "closed" not in res.err, res.err
        assert "Traceback" not in res.err
    res = exe(["scan", "--quiet"], tmp_path)
    assert res.code == 0 and "1,100 objects" in res.out, res.err


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
