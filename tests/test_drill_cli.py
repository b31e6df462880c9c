"""`daulat drill` as a user runs it: scan first, drill, exit, then compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daulat.cli import run as cli


def test_drill_then_exit_then_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path
    (root / "daulat.toml").write_text(
        f'[stores.src]\nurl = "file://{root}/src"\nprovider = "local"\ncountry = "ID"\n'
        f'[stores.dst]\nurl = "file://{root}/dst"\nprovider = "local"\ncountry = "ID"\n'
    )
    for i in range(120):
        p = root / "src" / f"f/{i:03d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(bytes([i % 251]) * (100 + 997 * i))
    monkeypatch.chdir(root)

    assert cli(["drill", "src", "dst"]) == 2
    assert "daulat scan" in capsys.readouterr().err

    assert cli(["scan", "src"]) == 0
    capsys.readouterr()
    assert cli(["drill", "src", "dst", "--sample", "40", "--workers", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["sampled_objects"] == 40 and result["objects"] == 120
    assert result["low_s"] <= result["predicted_s"] <= result["high_s"]
    assert result["projection"] is not None
    # The scratch copy is gone: nothing of the drill stays at the destination.
    left = [p for p in (root / "dst").rglob("*") if p.is_file()] if (root / "dst").exists() else []
    assert left == []

    assert cli(["exit", "src", "dst"]) == 0
    capsys.readouterr()
    assert cli(["drill", "--history", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["actual_s"] is not None and row["error_pct"] is not None
    assert cli(["audit", "show", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    ops = [e["operation"] for e in entries]
    # The refused first drill is recorded too, with its error class.
    assert ops == ["drill", "scan", "drill", "exit"]
    assert entries[0]["details"]["outcome"] == "failed"
    assert entries[0]["details"]["error"] == "ConfigError"
    assert [e["details"]["outcome"] for e in entries[1:]] == ["ok", "ok", "ok"]
