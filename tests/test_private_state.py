"""Private local state: ``.daulat/`` is 0700 and every file in it 0600 (journal, manifest database,
drills, name keys, audit log, SQLite's -wal/-shm), whatever the umask; state found with looser
modes is tightened, with a one-line notice."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from daulat.cli import run
from daulat.signing import local_signing_key
from daulat.transfer.adoption import proof_key
from daulat.transfer.journal import Journal


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """Relative path -> permission bits of everything under ``root`` (and root itself, as '.')."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            p = Path(dirpath) / name
            found[str(p.relative_to(root))] = stat.S_IMODE(p.lstat().st_mode)
    return found


def assert_private(state: Path) -> None:
    found = modes(state)
    wrong = {
        path: oct(mode)
        for path, mode in found.items()
        if mode != (0o700 if (state / path).is_dir() else 0o600)
    }
    assert not wrong, wrong


def project(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for i in range(25):
        (src / "d").mkdir(parents=True, exist_ok=True)
        (src / "d" / f"{i:02d}.bin").write_bytes(os.urandom(200 + i))
    (tmp_path / "dst").mkdir()  # a local directory that does not exist is an error to scan
    (tmp_path / "daulat.toml").write_text(
        f'[stores.src]\nurl = "{src.as_uri()}"\nprovider = "local"\ncountry = "ID"\n'
        f'[stores.dst]\nurl = "{(tmp_path / "dst").as_uri()}"\nprovider = "local"\n'
        'country = "ID"\n',
        encoding="utf-8",
    )
    return tmp_path


def test_state_is_private_under_umask_022(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    umask_022: None,
) -> None:
    monkeypatch.chdir(project(tmp_path))
    assert run(["scan"]) == 0
    capsys.readouterr()
    assert run(["keys", "new", "--out", str(tmp_path / "id.txt")]) == 0
    recipient = capsys.readouterr().out.strip()
    assert run(["exit", "src", "dst", "--encrypt-to", recipient, "--encrypt-names"]) == 0
    drill = ["drill", "src", "dst", "--sample", "5", "--seed", "3"]
    assert run([*drill, "--encrypt-to", recipient, "--encrypt-names"]) == 0
    assert run(["check"]) == 0
    state = tmp_path / ".daulat"
    names = {p.name for p in state.iterdir()}
    # Everything the brief lists is there, so the check below covers it.
    assert {"transfers.sqlite", "manifest.sqlite", "drills.sqlite", "audit.jsonl"} <= names
    assert any(n.endswith("-wal") for n in names) and any(n.endswith("-shm") for n in names)
    assert any(p.suffix == ".key" for p in (state / "names").iterdir())
    assert {"proof", "signing"} <= {p.name for p in (state / "keys").iterdir()}
    assert_private(state)


def test_keys_made_first_in_a_new_state_directory_are_private(
    tmp_path: Path, umask_022: None
) -> None:
    """The proof and signing keys, made by library calls before anything else exists in the
    state directory: the directory they make is private too, and a loosened one is tightened
    with the notice."""
    notices: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: notices.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("daulat.state")
    logger.addHandler(handler)
    try:
        for make in (proof_key, local_signing_key):
            state = tmp_path / make.__name__ / ".daulat"
            make(state)
            assert_private(state)
            state.chmod(0o755)
            for p in state.rglob("*"):
                p.chmod(0o755 if p.is_dir() else 0o644)
            notices.clear()
            make(state)
            assert_private(state)
            assert sum("made private" in n for n in notices) == 1, notices
    finally:
        logger.removeHandler(handler)


def test_looser_state_is_tightened_with_a_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(project(tmp_path))
    assert run(["scan"]) == 0
    assert run(["exit", "src", "dst"]) == 0
    state = tmp_path / ".daulat"
    # As an archive tool or an older daulat would have left it.
    state.chmod(0o755)
    for p in state.iterdir():
        p.chmod(0o644)
    capsys.readouterr()
    assert run(["stores"]) == 0
    err = capsys.readouterr().err
    notices = [line for line in err.splitlines() if "made private" in line]
    assert len(notices) == 1 and str(state) in notices[0], err
    assert_private(state)


def test_console_script_under_umask_022(tmp_path: Path) -> None:
    """The same through the installed command, whose umask is inherited from the shell."""
    project(tmp_path)
    for argv in (["scan"], ["exit", "src", "dst"]):
        proc = subprocess.run(
            ["sh", "-c", 'umask 022 && exec daulat "$@"', "sh", *argv],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
    assert_private(tmp_path / ".daulat")


_HOLDER = r"""
import sys, time
from pathlib import Path
from daulat.transfer.journal import Journal, Outcome, State
state = Path(sys.argv[1])
first = Journal.in_state_dir(state)
# A second open of the same journal in this process (the gateway's reader and its writer, a
# run and its audit): it must not cost the first connection its locks.
second = Journal.in_state_dir(state)
run = first.begin_run("copy", "a: -> b:", "a", "b")
first.record("a: -> b:", run, [Outcome("before", 1, "e", State.DONE, sha256="0" * 64)])
print("ready", flush=True)
sys.stdin.readline()  # another process opens and closes the journal meanwhile
first.record("a: -> b:", run, [Outcome("after", 1, "e", State.DONE, sha256="0" * 64)])
first.end_run(run, "complete", "{}")
first.close(); second.close()
"""


def test_a_journal_opened_twice_in_one_process_keeps_its_writes_when_another_closes(
    tmp_path: Path,
) -> None:
    """SQLite's WAL mode tells a closing connection it is the last one by the shared locks the
    others hold on the database file; POSIX drops every lock a process holds on a file when
    that process closes any descriptor of it. Opening the journal must therefore never open
    and close the database file itself: a second open in one process (the gateway does so)
    let another process's close checkpoint and delete the WAL under the first, whose later
    commits then went to a deleted file and were lost."""
    state = tmp_path / ".daulat"
    with Journal.in_state_dir(state):
        pass
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(state)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "ready"
        with Journal.in_state_dir(state) as other:
            other.db.execute("SELECT count(*) FROM journal").fetchone()
        assert (state / "transfers.sqlite-wal").exists(), "the WAL was deleted under a writer"
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=120) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
    with Journal.in_state_dir(state) as journal:
        keys = {r[0] for r in journal.db.execute("SELECT key FROM journal")}
    assert keys == {"before", "after"}, keys
