"""An encrypted replica is not silently re-encrypted to another recipient: refused (exit 2)
unless --reencrypt. Real directories and the real age keys daulat makes."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import fs_store_config
from test_transfer import cli, write_config


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_exit_to_another_recipient_is_refused_unless_reencrypt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src, vault = tmp_path / "big", tmp_path / "bvault"
    src.mkdir()
    for i in range(5):
        (src / f"o{i}.txt").write_text(f"object {i}")
    write_config(tmp_path, [fs_store_config(src, "big"), fs_store_config(vault, "bvault")])
    monkeypatch.chdir(tmp_path)
    mine = cli(["keys", "new", "--out", "mine.txt", "--no-config"], capsys).out.strip()
    theirs = cli(["keys", "new", "--out", "theirs.txt", "--no-config"], capsys).out.strip()
    assert cli(["exit", "big", "bvault", "--encrypt-to", mine], capsys).code == 0
    before = _tree(vault)

    res = cli(["exit", "big", "bvault", "--encrypt-to", theirs], capsys)
    assert res.code == 2, res.out + res.err
    assert "other recipients" in res.err and "--reencrypt" in res.err and theirs in res.err
    assert "Traceback" not in res.err
    assert _tree(vault) == before
    # The same recipient again is an ordinary rerun.
    assert cli(["exit", "big", "bvault", "--encrypt-to", mine], capsys).code == 0
    # Meant: --reencrypt moves the replica to the new recipient.
    moved = cli(["exit", "big", "bvault", "--encrypt-to", theirs, "--reencrypt"], capsys)
    assert moved.code == 0, moved.explain()
    assert _tree(vault) != before
