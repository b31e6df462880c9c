"""A restore leaves the user's files alone: existing destination files whose content differs
from the replica's are not replaced without ``--overwrite``, and the summary names them.
Identical ones are left as they are and count as verified. A plain replica's restore says
"restored", never "decrypted" (daulat.transfer.existing; ``Summary.restored_plain``).

Real directory stores, the real command line (``daulat.cli.run``), real age encryption.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from conftest import fs_store_config
from test_encryption import _write_config

from daulat.cli import run as cli

FILES = {f"forms/tps-{i:03d}.json": f"ballot form {i} ".encode() * (i + 3) for i in range(6)}


def _project(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[Path, str]:
    """Source files, an identity, and stores src, vault (encrypted), plain and the targets."""
    for key, data in FILES.items():
        path = tmp / "src" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    key = tmp / "id.txt"
    monkeypatch.chdir(tmp)
    assert cli(["keys", "new", "--out", str(key)]) == 0
    recipient = capsys.readouterr().out.strip()
    assert recipient.startswith("age1") and stat.S_IMODE(key.stat().st_mode) == 0o600
    names = ("src", "vault", "plain", "back", "back2", "back3")
    _write_config(tmp, [fs_store_config(tmp / n, n) for n in names])
    return key, recipient


def test_restore_leaves_edited_files_alone_unless_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key, recipient = _project(tmp_path, monkeypatch, capsys)
    assert cli(["exit", "src", "vault", "--encrypt-to", recipient]) == 0
    assert cli(["restore", "vault", "back", "--identity", str(key)]) == 0
    capsys.readouterr()
    back = tmp_path / "back"

    # The user edits one restored file and loses another; the next restore brings back the
    # lost one and leaves the edited one alone, saying so.
    edited = back / "forms/tps-001.json"
    edited.write_bytes(b"my own corrections, made after the restore")
    (back / "forms/tps-003.json").unlink()
    assert cli(["restore", "vault", "back", "--identity", str(key)]) == 1
    res = capsys.readouterr()
    assert edited.read_bytes() == b"my own corrections, made after the restore"
    assert (back / "forms/tps-003.json").read_bytes() == FILES["forms/tps-003.json"]
    assert "left alone: 'forms/tps-001.json'" in res.out, res.out
    assert "--overwrite" in res.err and "Traceback" not in res.err, res.err
    assert "unverified" not in res.out, res.out

    # A directory the user already has: one identical file (kept, counted verified), one
    # that differs (kept, named); the JSON says which.
    back2 = tmp_path / "back2"
    (back2 / "forms").mkdir(parents=True)
    (back2 / "forms/tps-000.json").write_bytes(FILES["forms/tps-000.json"])
    (back2 / "forms/tps-002.json").write_bytes(b"a different draft")
    assert cli(["restore", "vault", "back2", "--identity", str(key), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["kept_existing"] == ["forms/tps-002.json"], out
    assert out["kept_existing_objects"] == 1 and not out["ok"], out
    assert out["verified_objects"] == len(FILES) - 1, out
    assert out["copied_objects"] == len(FILES) - 2 and not out["unverified"], out
    assert (back2 / "forms/tps-002.json").read_bytes() == b"a different draft"

    # A dry run says what it would leave alone, and changes nothing.
    assert cli(["restore", "vault", "back2", "--identity", str(key), "--dry-run"]) == 0
    res = capsys.readouterr()
    assert "would leave alone: 'forms/tps-002.json'" in res.out, res.out

    # --overwrite replaces it, as asked.
    assert cli(["restore", "vault", "back2", "--identity", str(key), "--overwrite"]) == 0
    capsys.readouterr()
    for name, data in FILES.items():
        assert (back2 / name).read_bytes() == data


def test_plain_restore_says_restored_not_decrypted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key, _ = _project(tmp_path, monkeypatch, capsys)
    assert cli(["exit", "src", "plain"]) == 0
    capsys.readouterr()
    assert cli(["restore", "plain", "back3", "--identity", str(key)]) == 0
    res = capsys.readouterr()
    assert "every object restored and verified against the source manifest" in res.out, res.out
    assert "decrypt" not in res.out, res.out
    assert cli(["restore", "plain", "back3", "--identity", str(key), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["restored_plain"] and "decrypt" not in out["verified_by"], out["verified_by"]


def test_a_plain_replica_restores_without_an_identity_an_encrypted_one_needs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, recipient = _project(tmp_path, monkeypatch, capsys)
    assert cli(["exit", "src", "plain"]) == 0
    assert cli(["exit", "src", "vault", "--encrypt-to", recipient]) == 0
    capsys.readouterr()
    assert cli(["restore", "plain", "back", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["restored_plain"], out
    for key, data in FILES.items():
        assert (tmp_path / "back" / key).read_bytes() == data
    assert cli(["restore", "vault", "back2"]) == 2
    assert "--identity" in capsys.readouterr().err
    assert not (tmp_path / "back2").exists() or not any((tmp_path / "back2").rglob("*.json"))


def test_identical_files_a_restore_leaves_are_journaled_as_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Files already present with the replica's content are not written again, but they are
    journaled like every restored object (the manifest's SHA-256, the run that found them), so
    the run's verification has no problem to record, a later restore skips them by the
    journal, and the restore's manifest lists them."""
    import hashlib
    import sqlite3

    from test_transfer import journal_path

    key, recipient = _project(tmp_path, monkeypatch, capsys)
    assert cli(["exit", "src", "vault", "--encrypt-to", recipient]) == 0
    back = tmp_path / "back"
    for name, data in FILES.items():  # the user already has every file, unchanged
        (back / name).parent.mkdir(parents=True, exist_ok=True)
        (back / name).write_bytes(data)
    capsys.readouterr()

    # A dry run finds them identical but journals nothing.
    assert cli(["restore", "vault", "back", "--identity", str(key), "--dry-run"]) == 0
    db = sqlite3.connect(journal_path(tmp_path / "daulat.toml"))
    try:
        [(dry_run_id,)] = db.execute("SELECT max(id) FROM runs").fetchall()
        assert db.execute(
            "SELECT count(*) FROM journal WHERE run_id = ?", (dry_run_id,)
        ).fetchone() == (0,)
    finally:
        db.close()
    capsys.readouterr()

    assert cli(["restore", "vault", "back", "--identity", str(key), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["copied_objects"] == 0, out
    assert out["skipped_objects"] == out["verified_objects"] == len(FILES), out
    run_id = out["run_id"]
    db = sqlite3.connect(journal_path(tmp_path / "daulat.toml"))
    try:
        rows = db.execute(
            "SELECT coalesce(stored_as, key), state, sha256, plain_size, verified FROM journal "
            "WHERE run_id = ?",
            (run_id,),
        ).fetchall()
        [(objects, verified, problems)] = db.execute(
            "SELECT objects, verified, problems FROM verifications WHERE run_id = ?", (run_id,)
        ).fetchall()
    finally:
        db.close()
    assert sorted(r[0] for r in rows) == sorted(FILES), rows
    for name, state, sha256, plain_size, when in rows:
        assert state == "done" and when is not None, (name, state, when)
        assert sha256 == hashlib.sha256(FILES[name]).hexdigest() and plain_size == len(FILES[name])
    assert (objects, verified, problems) == (len(FILES), len(FILES), 0)

    # The next restore skips them by the journal: nothing to compare, nothing kept aside.
    assert cli(["restore", "vault", "back", "--identity", str(key), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["ok"] and again["copied_objects"] == 0 and again["planned_objects"] == 0, again
    assert again["verified_objects"] == len(FILES), again
    for name, data in FILES.items():
        assert (back / name).read_bytes() == data
