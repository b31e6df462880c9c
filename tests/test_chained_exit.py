"""Leaving a store that was itself an exit's destination: daulat's own `.daulat/` manifests there
are not data to carry on, and must not block verification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daulat.cli import run as cli


def test_exit_from_an_earlier_destination_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stores = "".join(
        f'[stores.{n}]\nurl = "file://{tmp_path}/{n}"\nprovider = "local"\ncountry = "ID"\n'
        for n in ("a", "b", "c")
    )
    (tmp_path / "daulat.toml").write_text(stores)
    for i in range(10):
        p = tmp_path / "a" / f"k{i}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(str(i))
    monkeypatch.chdir(tmp_path)
    assert cli(["exit", "a", "b"]) == 0
    capsys.readouterr()
    assert cli(["exit", "b", "c", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["source_objects"] == 10 and summary["verified_objects"] == 10
    assert cli(["verify", "b", "c", "--full"]) == 0
    copied = sorted(p.name for p in (tmp_path / "c").iterdir() if p.is_file())
    assert copied == [f"k{i}.txt" for i in range(10)]
