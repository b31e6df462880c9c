"""A ``signing_key`` in daulat.toml that does not exist is a configuration mistake for a run that
writes a replica: one line, exit 2, nothing written (restore keeps its new-machine fallback,
tested in test_signed_manifests.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import fs_store_config
from test_transfer import cli, write_config


@pytest.mark.parametrize("command", ["copy", "sync", "exit"])
def test_missing_signing_key_is_a_config_error_before_anything_is_written(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src, dst = tmp_path / "a", tmp_path / "b"
    src.mkdir()
    (src / "f.txt").write_text("data")
    config = write_config(tmp_path, [fs_store_config(src, "a"), fs_store_config(dst, "b")])
    config.write_text('signing_key = "nope.sign"\n' + config.read_text())
    monkeypatch.chdir(tmp_path)
    res = cli([command, "a", "b"], capsys)
    assert res.code == 2, res.out + res.err
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "signing_key" in lines[0] and "nope.sign" in lines[0], res.err
    assert "Traceback" not in res.err
    assert not dst.exists()
    assert not (tmp_path / ".daulat" / "keys" / "signing").exists()
