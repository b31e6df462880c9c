"""The transparency report, opened in real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from daulat.cli import run as cli

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=10000",
]

CONFIG = """
[stores.kpu-primary]
url = "file://{root}/primary"
provider = "local"
country = "ID"

[stores.vault]
url = "file://{root}/vault"
provider = "local"
country = "ID"

[stores.kpu-alibaba]
url = "s3://pemilu-2024"
provider = "alibaba"
region = "ap-southeast-5"
endpoint = "http://127.0.0.1:1"

[stores.bank-<b>aws</b>]
url = "s3://core"
provider = "aws"
region = "eu-central-1"
endpoint = "http://127.0.0.1:1"
"""


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is missing: apt-get install chromium (scripts/test installs it)")
    return path


def _browse(html: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            _chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp / 'chromium-profile'}",
            *extra,
            html.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def report_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = CONFIG.format(root=tmp_path).replace("bank-<b>aws</b>", "bank-aws")
    (tmp_path / "daulat.toml").write_text(config)
    for i in range(30):
        p = tmp_path / "primary" / f"c1/tps-{i:03d}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"tps": i, "votes": [i, 2 * i]}))
    monkeypatch.chdir(tmp_path)
    assert cli(["exit", "kpu-primary", "vault"]) == 0
    assert cli(["scan", "kpu-primary", "vault"]) == 0
    return tmp_path


def test_report_renders_offline_in_chromium(
    report_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = report_dir / "report.html"
    assert cli(["report", "-o", str(out)]) == 0
    html = out.read_text()
    # Self-contained: no script or stylesheet is fetched from anywhere.
    assert not re.search(r"<script[^>]+src=", html)
    assert not re.search(r"<link[^>]+href=\"?https?:", html)

    dom = _browse(out, report_dir, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    for chart in ("chart-country", "chart-provider", "chart-jurisdiction", "chart-risk"):
        block = dom.stdout.split(f'id="{chart}"', 1)
        assert len(block) == 2, f"{chart} missing"
        assert 'class="main-svg"' in block[1][:20000], f"{chart} was not drawn"
    assert "30 objects" in dom.stdout or "60 objects" in dom.stdout or "61 objects" in dom.stdout
    assert "kpu-alibaba" in dom.stdout and "Alibaba Cloud" in dom.stdout
    assert "National Intelligence Law" in dom.stdout and "2713" in dom.stdout
    # The report shows the audit head as it was when the report was made (before its own entry).
    entries = [
        json.loads(line) for line in (report_dir / ".daulat/audit.jsonl").read_text().splitlines()
    ]
    assert entries[-1]["operation"] == "report"
    assert entries[-2]["hash"] in dom.stdout

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    res = _browse(out, report_dir, "--window-size=1280,2600", f"--screenshot={shot}")
    assert res.returncode == 0 and shot.stat().st_size > 20_000


def _json_report(directory: Path) -> str:
    path = directory / "report.json"
    assert cli(["report", "--format", "json", "-o", str(path)]) == 0
    return path.read_text()


def test_json_report_has_the_same_facts(report_dir: Path) -> None:
    data = json.loads(_json_report(report_dir))
    stores = {s["name"]: s for s in data["stores"]}
    assert stores["kpu-primary"]["objects"] == 30
    assert stores["kpu-alibaba"]["jurisdictions"] == ["ID", "CN"]
    assert stores["bank-aws"]["country"] == "DE" and stores["bank-aws"]["objects"] is None
    assert data["by_jurisdiction"]["ID"] == sum(
        s["bytes"] or 0 for s in data["stores"] if "ID" in s["jurisdictions"]
    )
    (replica,) = data["replicas"]
    assert replica["source"] == "kpu-primary" and replica["destination"] == "vault"
    assert replica["objects_verified"] == 30
    assert data["audit"]["intact"] and data["audit"]["entries"] >= 3
    assert any("scan" in n for n in data["notes"])  # the cloud stores were never scanned


def test_hostile_names_are_escaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "daulat.toml").write_text(
        '[stores.x]\nurl = "file:///tmp/<script>alert(1)</script>"\nprovider = "local"\ncountry = "ID"\n'
    )
    monkeypatch.chdir(tmp_path)
    assert cli(["report", "-o", "r.html"]) == 0
    html = (tmp_path / "r.html").read_text()
    body = html.split("</head>", 1)[1]
    assert "<script>alert(1)</script>" not in body
