"""`daulat risk` and the audit log as the commands write and check it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daulat.cli import run as cli

CONFIG = """
[stores.kpu-alibaba]
url = "s3://pemilu-2024"
provider = "alibaba"
region = "ap-southeast-5"
endpoint = "http://127.0.0.1:1"

[stores.bank-aws]
url = "s3://core-banking"
provider = "aws"
region = "eu-central-1"
endpoint = "http://127.0.0.1:1"

[stores.src]
url = "file://{root}/src"
provider = "local"
country = "ID"

[stores.dst]
url = "file://{root}/dst"
provider = "local"
country = "ID"
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "daulat.toml").write_text(CONFIG.format(root=tmp_path))
    for i in range(5):
        p = tmp_path / "src" / f"d/{i}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"object {i}")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_risk_reports_laws_events_and_a_score_that_adds_up(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["risk", "--json", "--country", "ID", "--sector", "government"]) == 0
    rows = {r["store"]: r for r in json.loads(capsys.readouterr().out)}
    kpu = rows["kpu-alibaba"]
    assert kpu["data_country"] == "ID" and kpu["home_jurisdiction"] == "CN"
    assert kpu["jurisdictions"] == ["ID", "CN"]
    assert any("Intelligence" in law["name"] for law in kpu["laws"])
    exposure = kpu["exposure"]
    assert exposure["score"] == sum(c["value"] for c in exposure["components"])
    assert {c["name"]: c["value"] for c in exposure["components"]}["jurisdiction"] == 30
    bank = rows["bank-aws"]
    assert bank["jurisdictions"] == ["DE", "US"]
    assert any("2713" in law["citation"] for law in bank["laws"])
    assert bank["events"] > 0 and sum(bank["events_by_action"].values()) == bank["events"]
    assert rows["src"]["exposure"] is None and rows["src"]["events"] == 0
    # The human form shows the formula, so the score can be recomputed by hand.
    assert cli(["risk"]) == 0
    text = capsys.readouterr().out
    assert "jurisdiction = 30 if H differs from D" in text and "CLOUD Act" in text


def test_every_state_changing_command_is_audited_and_tampering_is_detected(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["scan", "src"]) == 0
    assert cli(["exit", "src", "dst"]) == 0
    assert cli(["verify", "src", "dst"]) == 0
    assert cli(["keys", "new", "--out", str(workdir / "k.txt")]) == 0
    capsys.readouterr()
    assert cli(["audit", "show", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["operation"] for e in entries] == ["scan", "exit", "verify", "keys.new"]
    assert entries[1]["details"]["copied"] == 5 and entries[1]["details"]["ok"] is True
    log = workdir / ".daulat" / "audit.jsonl"
    assert "AGE-SECRET-KEY" not in log.read_text()
    assert cli(["audit", "verify"]) == 0
    head = capsys.readouterr().out
    assert "intact: 4 entries" in head

    original = log.read_bytes()
    lines = original.splitlines(keepends=True)
    cases = {
        "was edited": lines[0]
        + lines[1].replace(b'"copied":5', b'"copied":4')
        + b"".join(lines[2:]),
        "entry 1": lines[0] + b"".join(lines[2:]),  # removed: the chain names the gap
        "out of order": lines[0] + lines[2] + lines[1] + lines[3],
    }
    for phrase, content in cases.items():
        log.write_bytes(content)
        assert cli(["audit", "verify"]) == 1, phrase
        assert phrase in capsys.readouterr().err
    log.write_bytes(original)
    assert cli(["audit", "verify"]) == 0
