"""The transparency report, opened and printed in real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import unicodedata
import xml.etree.ElementTree as ET
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest
from pypdf import PdfReader

from daulat.cli import run as cli
from daulat.report import render
from daulat.report.charts import Series, bar_chart
from daulat.report.data import AuditHead, ReplicaRow, ReportData, StoreRow
from daulat.report.escaping import visible

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


CHARTS = ("chart-country", "chart-provider", "chart-jurisdiction", "chart-drills", "chart-risk")
HOSTILE = (
    "x</svg></title><script>alert(1)</script>\"'&<img src=x onerror=alert(2)>\u202egnp.exe\u200b"
)


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


def _page_requests(netlog: Path) -> list[str]:
    """URLs the page itself asked for. Chromium's own background requests carry no origin
    ("not an origin"); anything the document loads has the file's (opaque) origin."""
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    params = [e.get("params", {}) for e in log["events"] if e["type"] == start]
    return [p["url"] for p in params if "url" in p and p.get("initiator") != "not an origin"]


class _Page(HTMLParser):
    """What a reader gets from a page: its tags, the text of each chart by role, table cells."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.charts: dict[str, dict[str, list[str]]] = {}
        self.cells: list[str] = []
        self._chart: str | None = None
        self._kind: str | None = None
        self._buf: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "svg" and "chart" in (a.get("class") or "").split():
            self._chart = a.get("id") or "?"
            self.charts[self._chart] = {"title": [], "desc": [], "label": [], "value": []}
            self.charts[self._chart]["role"] = [a.get("role") or ""]
        elif self._chart and tag == "title" and (a.get("id") or "").endswith("-title"):
            self._kind = "title"
        elif self._chart and tag == "desc":
            self._kind = "desc"
        elif self._chart and tag == "text" and a.get("class") in ("label", "value"):
            self._kind = a["class"]
        elif tag in ("td", "th"):
            self._kind = "cell"
        self._buf = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self._buf.append(data)

    def handle_endtag(self, tag: str) -> None:
        text = "".join(self._buf).strip()
        if self._kind == "cell" and tag in ("td", "th"):
            self.cells.append(text)
        elif self._kind and self._chart and tag in ("title", "desc", "text"):
            self.charts[self._chart][self._kind].append(text)
        if tag in ("td", "th", "title", "desc", "text"):
            self._kind = None
        if tag == "svg":
            self._chart = None


def _assert_readable_charts(page: _Page, expected: tuple[str, ...]) -> None:
    """Each chart is drawn, named and described, shows its values as text, and every value it
    shows is also in a table."""
    assert sorted(page.charts) == sorted(expected)
    for chart_id, chart in page.charts.items():
        assert chart["role"] == ["img"], chart_id
        assert chart["title"] and chart["title"][0], f"{chart_id} has no <title>"
        assert chart["label"], f"{chart_id} has no labels"
        assert len(chart["value"]) >= len(chart["label"]), f"{chart_id} shows values only as bars"
        for value in chart["value"]:
            assert value in chart["desc"][0], f"{chart_id}: {value!r} not in its <desc>"
            assert value in page.cells, f"{chart_id}: {value!r} is in no table"
        for label in chart["label"]:
            whole = label.removesuffix("…")  # a long label is shortened on the chart only
            assert whole in chart["desc"][0], f"{chart_id}: {label!r} not in its <desc>"


@pytest.fixture
def report_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = CONFIG.format(root=tmp_path).replace("bank-<b>aws</b>", "bank-aws")
    (tmp_path / "daulat.toml").write_text(config)
    for i in range(30):
        p = tmp_path / "primary" / f"c1/tps-{i:03d}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"tps": i, "votes": [i, 2 * i]}))
    monkeypatch.chdir(tmp_path)
    assert cli(["scan", "kpu-primary"]) == 0
    assert cli(["drill", "kpu-primary", "vault", "--sample", "10"]) == 0
    assert cli(["exit", "kpu-primary", "vault"]) == 0
    assert cli(["scan", "kpu-primary", "vault"]) == 0
    return tmp_path


def test_report_renders_offline_in_chromium(
    report_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = report_dir / "report.html"
    assert cli(["report", "-o", str(out)]) == 0
    html = out.read_text()
    # Self-contained and static: no script at all, nothing referenced outside the file.
    assert "<script" not in html.lower()
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:[a-z]+:)?//", html, re.I)
    assert not re.search(r"@import|@font-face", html)
    assert all(u.startswith("url(#") for u in re.findall(r"url\([^)]*\)", html))
    assert len(html.encode()) < 100_000

    netlog = report_dir / "netlog.json"
    dom = _browse(out, report_dir, "--dump-dom", f"--log-net-log={netlog}")
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    assert _page_requests(netlog) == []
    page = _Page(dom.stdout)
    _assert_readable_charts(page, CHARTS)
    assert page.charts["chart-country"]["label"] == ["ID", "DE"]
    assert page.charts["chart-jurisdiction"]["label"][0] == "ID"
    assert {"CN", "US"} <= set(page.charts["chart-jurisdiction"]["label"])
    assert "kpu-alibaba" in page.charts["chart-risk"]["label"]
    assert "bank-aws" in page.charts["chart-risk"]["label"]
    assert page.charts["chart-drills"]["label"] == ["kpu-primary → vault #1"]
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


def _pdf_pages(html: Path, tmp: Path) -> list[str]:
    pdf = tmp / (html.stem + ".pdf")
    res = _browse(html, tmp, "--no-pdf-header-footer", f"--print-to-pdf={pdf}")
    assert res.returncode == 0, res.stderr[-2000:]
    assert pdf.read_bytes().startswith(b"%PDF-") and pdf.stat().st_size > 10_000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(pdf, ARTIFACTS / pdf.name)
    # NFKC undoes the ligatures (fi, ff) the PDF's fonts use.
    return [unicodedata.normalize("NFKC", p.extract_text()) for p in PdfReader(pdf).pages]


def test_report_prints_to_pdf(report_dir: Path) -> None:
    out = report_dir / "report.html"
    assert cli(["report", "-o", str(out)]) == 0
    page = _Page(out.read_text())
    assert sorted(page.charts) == sorted(CHARTS)
    pages = _pdf_pages(out, report_dir)
    text = " ".join(" ".join(pages).split())  # table cells wrap words onto new lines
    for chart in page.charts.values():
        # Charts print as text, not pictures: their titles, labels and values are in the PDF.
        for word in chart["title"] + chart["label"] + chart["value"]:
            assert word in text, word
    assert "kpu-alibaba" in text and "National Intelligence Law" in text


def _big_report(n: int) -> ReportData:
    """A report with three charts of ``n`` bars, each followed by its table of ``n`` rows."""

    def sizes(what: str) -> dict[str, int]:
        return {f"{what}-{i:02d}": (i + 1) * 2**30 for i in range(n)}

    return ReportData(
        generated="2026-01-01T00:00:00+00:00",
        daulat_version="test",
        config="daulat.toml",
        stores=[
            StoreRow(f"s{i}", "local", "Local", None, "ID", "ID", ["ID"], False, 1, 1, None)
            for i in range(n)
        ],
        by_country=sizes("country"),
        by_provider=sizes("provider"),
        by_jurisdiction=sizes("law"),
        replicas=[],
        risk=[],
        audit=AuditHead(0, None, None, True, ""),
    )


@pytest.mark.parametrize("n", [4, 5, 6])
def test_printed_charts_are_not_split_across_pages(tmp_path: Path, n: int) -> None:
    # Sizes at which, without the print stylesheet, a chart's table starts on the chart's page
    # and ends on the next (checked for each of them on this machine's fonts).
    out = tmp_path / f"big-{n}.html"
    out.write_text(render(_big_report(n)))
    pages = _pdf_pages(out, tmp_path)
    assert len(pages) >= 2
    for what, title in (
        ("country", "Data by country of storage"),
        ("provider", "Data by provider"),
        ("law", "Data reachable by each country's law"),
    ):
        (on,) = [p for p in pages if title in p]
        # The chart with its data table: every label and its table row on the title's page.
        for i in range(n):
            assert on.count(f"{what}-{i:02d}") == 2, (what, i)


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
        max(s["bytes"] or 0, s["written_bytes"])
        for s in data["stores"]
        if "ID" in s["jurisdictions"]
    )
    (replica,) = data["replicas"]
    assert replica["source"] == "kpu-primary" and replica["destination"] == "vault"
    assert replica["objects_verified"] == 30
    assert data["audit"]["intact"] and data["audit"]["entries"] >= 3
    assert any("scan" in n for n in data["notes"])  # the cloud stores were never scanned


def test_a_store_written_after_its_scan_is_counted_by_what_daulat_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exit into a store scanned empty before (or never scanned): the charts and totals count
    what the journal says daulat wrote there, never "0 B in SG" beside a policy table that says
    the SG store holds the data."""
    (tmp_path / "daulat.toml").write_text(
        CONFIG.format(root=tmp_path).split("[stores.kpu-alibaba]")[0]
        + f'[stores.offsite]\nurl = "file://{tmp_path}/offsite"\nprovider = "local"\n'
        'country = "SG"\n'
    )
    for i in range(12):
        p = tmp_path / "primary" / f"c1/tps-{i:03d}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * 1000)
    (tmp_path / "offsite").mkdir()
    monkeypatch.chdir(tmp_path)
    assert cli(["scan", "kpu-primary", "offsite"]) == 0  # offsite: scanned empty
    assert cli(["exit", "kpu-primary", "offsite"]) == 0
    data = json.loads(_json_report(tmp_path))
    stores = {s["name"]: s for s in data["stores"]}
    assert stores["offsite"]["objects"] == 0  # its scan, as it was
    assert stores["offsite"]["written_objects"] == 12
    assert stores["offsite"]["written_bytes"] == 12_000
    assert data["by_country"]["SG"] == 12_000
    assert any("offsite was written after its last scan" in n for n in data["notes"])
    out = tmp_path / "report.html"
    assert cli(["report", "-o", str(out)]) == 0
    page = _Page(out.read_text())
    assert "12 (11.7 KiB)" in page.cells
    assert any("SG" in label for label in page.charts["chart-country"]["label"])
    assert cli(["scan", "offsite"]) == 0  # now the scan knows as much: no note
    data = json.loads(_json_report(tmp_path))
    assert not any("written after its last scan" in n for n in data["notes"])
    assert data["by_country"]["SG"] == 12_000


def test_hostile_names_are_escaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml_hostile = json.dumps(HOSTILE)  # a JSON string literal is a valid TOML basic string
    (tmp_path / "daulat.toml").write_text(
        '[stores.x]\nurl = "file:///tmp/<script>alert(1)</script>"\nprovider = "local"\n'
        'country = "ID"\n\n'
        f'[[policies]]\nname = {toml_hostile}\nstores = ["x"]\nresidency = ["ID"]\n'
    )
    monkeypatch.chdir(tmp_path)
    assert cli(["report", "-o", "r.html"]) == 0
    html = (tmp_path / "r.html").read_text()
    body = html.split("</head>", 1)[1]
    assert "<script" not in body and "<img" not in body
    assert "\u202e" not in body and "[U+202E]" in body
    assert "&lt;/svg&gt;&lt;/title&gt;&lt;script&gt;alert(1)" in body  # shown, as text


def _hostile_report() -> ReportData:
    """Every string the report shows, set to markup, quotes and invisible characters."""
    h = HOSTILE
    store = StoreRow(h, "local", h, h, h, h, [h, "ID"], True, 5, 2**20, h)
    finding = {"policy": h, "rule": h, "store": h, "status": h, "why": h, "fix": h}
    return ReportData(
        generated=h,
        daulat_version=h,
        config=h,
        stores=[store, replace(store, name=h + "2")],
        by_country={h: 2**20, "ID": 5},
        by_provider={h: 2**20},
        by_jurisdiction={h: 2**20, "ID": 2**21},
        replicas=[ReplicaRow(h, h, True, 1, 1, 1, h, h, h)],
        risk=[
            {
                "store": h,
                "provider_name": h,
                "laws": [{"citation": h}],
                "events": 1,
                "notice_days_observed": [h],
                "most_recent_event": {"date": h, "summary": h},
                "exposure": {"score": 42},
            }
        ],
        audit=AuditHead(1, 0, h, False, h),
        policies={"status": h, "policies": [{"findings": [finding]}]},
        drills=[
            {
                "src": h,
                "dst": h,
                "time": h,
                "predicted_hours": 1.5,
                "actual_hours": None,
                "interval_hours": [h, h],
                "error_pct": h,
            }
        ],
        notes=[h],
    )


def test_hostile_text_cannot_inject_markup_anywhere(tmp_path: Path) -> None:
    html = render(_hostile_report())
    assert "\u202e" not in html and "\u200b" not in html  # no hidden reordering or look-alikes

    page = _Page(html)
    tags = {tag for tag, _ in page.tags}
    assert not tags & {"script", "img", "iframe", "object", "foreignobject", "a", "link"}
    assert not [(t, k) for t, attrs in page.tags for k in attrs if k.startswith("on")]
    # Each chart is one well-formed SVG element whose text is exactly the (visible) data.
    svgs = re.findall(r"<svg .*?</svg>", html, re.S)
    assert len(svgs) == len(CHARTS)
    shown = visible(HOSTILE)
    for svg in svgs:
        root = ET.fromstring(svg)
        assert not [e for e in root.iter() if e.tag in ("script", "foreignObject")]
        desc = root.find("desc")
        assert desc is not None and shown in (desc.text or "")  # whole, in the description
        labels = [t.text or "" for t in root.iter("text") if t.get("class") == "label"]
        assert any(label.startswith(shown[:40]) for label in labels), labels
    _assert_readable_charts(page, CHARTS)

    out = tmp_path / "hostile.html"
    out.write_text(html)
    dom = _browse(out, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert [line for line in dom.stderr.splitlines() if ":CONSOLE" in line] == []
    browser = _Page(dom.stdout)
    # The browser built the same charts: no </svg> or </title> in the data closed one early.
    assert {k: v["label"] for k, v in browser.charts.items()} == {
        k: v["label"] for k, v in page.charts.items()
    }
    assert not {tag for tag, _ in browser.tags} & {"script", "img"}
    assert shown in browser.cells


def test_chart_shows_every_value_as_text_and_is_reproducible() -> None:
    labels = ["ID", "a long provider name " * 5]
    series = [
        Series("predicted", [3.0, 0.0001], ["3.00", "0.000100"]),
        Series("actual", [None, 2.0], ["not yet", "2.00"], color="#1a7f37", fill="hatched"),
    ]
    svg = bar_chart("chart-t", "Exit time", labels, series)
    assert svg == bar_chart("chart-t", "Exit time", labels, series)  # same data, same bytes
    root = ET.fromstring(svg)
    assert root.get("role") == "img"
    assert root.get("aria-labelledby") == "chart-t-title"
    desc = root.find("desc")
    assert desc is not None and desc.text is not None
    for text in ("3.00", "0.000100", "not yet", "2.00", "predicted", "actual"):
        assert text in desc.text
    values = [t.text for t in root.iter("text") if t.get("class") == "value"]
    assert values == ["3.00", "not yet", "0.000100", "2.00"]
    # Bars: a missing value draws none, a tiny one still shows; the second series is hatched,
    # so it stays distinct from the first printed in black and white.
    bars = [r for r in root.iter("rect") if r.get("class") == "bar"]
    assert len(bars) == 3
    assert float(bars[1].get("width") or 0) >= 1.5
    assert bars[2].get("fill") == "url(#chart-t-p1)" and root.find(".//pattern") is not None
    # A label too long for the chart is shortened on the chart and kept whole in the tooltip.
    drawn = [t.text or "" for t in root.iter("text") if t.get("class") == "label"]
    assert drawn[1].endswith("…") and len(drawn[1]) < len(labels[1])
    tips = [t.text or "" for r in bars for t in r.iter("title")]
    assert any(labels[1] in tip for tip in tips)
    with pytest.raises(ValueError):
        bar_chart("chart-x", "t", ["a"], [Series("s", [1.0, 2.0], ["1", "2"])])


def test_demo_report_is_light(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli(["demo", "--dir", str(tmp_path / "tour")]) == 0
    (report,) = (tmp_path / "tour").rglob("*.html")
    html = report.read_text()
    assert len(html.encode()) <= 300_000  # it was 4.8 MB with Plotly's JavaScript inline
    assert "<script" not in html and set(CHARTS[:4]) <= set(_Page(html).charts)


# ------------------------------------------------------------------ where the report may go


@pytest.fixture
def small_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One filesystem store, an identity with its signing key pinned, an exit recorded."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a")
    (tmp_path / "daulat.toml").write_text(
        f'[stores.data]\nurl = "{(tmp_path / "data").as_uri()}"\nprovider = "local"\n'
        'country = "ID"\n'
    )
    monkeypatch.chdir(tmp_path)
    assert cli(["keys", "new", "--out", "id.txt"]) == 0
    assert cli(["scan"]) == 0
    return tmp_path


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], what: str) -> None:
    capsys.readouterr()
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and what in err, err
    assert "Traceback" not in err


def test_report_never_replaces_config_keys_state_or_links(
    small_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``report -o`` over the config in use, the identity and its signing key, anything in
    .daulat/ or a symbolic link is refused (exit 2, one line), with --force too; each file is
    left exactly as it was, and no temporary file is left behind."""
    (small_project / "target.txt").write_text("the link's target\n")
    (small_project / "link.html").symlink_to("target.txt")
    protected = {
        "daulat.toml": "configuration file in use",
        "id.txt": "secret key",
        "id.txt.sign": "secret key",
        ".daulat/audit.jsonl": "state directory",
        ".daulat/manifest.sqlite": "state directory",
        "link.html": "symbolic link",
    }
    before = {name: (small_project / name).read_bytes() for name in protected}
    for name, what in protected.items():
        for force in ([], ["--force"]):
            _refused(["report", "-o", name, *force], capsys, what)
            _refused(["report", "--format", "json", "-o", name, *force], capsys, what)
    after = {name: (small_project / name).read_bytes() for name in protected}
    # The audit log only grows: each refusal is recorded (tests/test_audit_commands.py).
    assert after.pop(".daulat/audit.jsonl").startswith(before.pop(".daulat/audit.jsonl"))
    assert after == before
    assert (small_project / "link.html").is_symlink()
    assert (small_project / "target.txt").read_text() == "the link's target\n"
    assert not list(small_project.rglob("*.daulat-tmp"))
    # A copy of the identity under another name is still a key.
    (small_project / "backup.txt").write_bytes((small_project / "id.txt").read_bytes())
    _refused(["report", "-o", "backup.txt", "--force"], capsys, "secret key")


def test_report_replaces_only_its_own_reports_unless_forced(
    small_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = small_project / "notes.html"
    notes.write_text("<p>my own notes</p>\n")
    _refused(["report", "-o", "notes.html"], capsys, "not a daulat report")
    assert notes.read_text() == "<p>my own notes</p>\n"
    assert cli(["report", "-o", "notes.html", "--force"]) == 0
    assert "<meta name='generator' content='daulat report'>" in notes.read_text()
    # Its own reports, HTML and JSON, are replaced without asking, again and again.
    for _ in range(2):
        assert cli(["report", "-o", "notes.html"]) == 0
        assert cli(["report", "--format", "json", "-o", "r.json"]) == 0
    data = json.loads((small_project / "r.json").read_text())
    assert next(iter(data)) == "daulat_report" and data["daulat_report"] == 1
    # Reports written before the markers existed are recognised by their opening.
    legacy_html = small_project / "old.html"
    legacy_html.write_text(
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
        "content='width=device-width, initial-scale=1'><title>daulat report</title>"
    )
    legacy_json = small_project / "old.json"
    legacy_json.write_text('{\n  "generated": "2026-01-01T00:00:00Z",\n  "daulat_version": "0"}')
    assert cli(["report", "-o", "old.html"]) == 0
    assert cli(["report", "--format", "json", "-o", "old.json"]) == 0
    # A JSON file that is not a report is not taken for one.
    other = small_project / "other.json"
    other.write_text('{"generated": 1, "stores": []}')
    _refused(["report", "--format", "json", "-o", "other.json"], capsys, "not a daulat report")
    # The default name, in a directory holding someone else's daulat-report.html, likewise.
    (small_project / "daulat-report.html").write_text("hand-written\n")
    _refused(["report"], capsys, "not a daulat report")
    assert (small_project / "daulat-report.html").read_text() == "hand-written\n"


def test_a_failed_write_leaves_the_previous_report_whole(
    small_project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report is written beside the target and renamed over it: when writing fails
    (here: the disk fills up), the previous report is intact and no temporary file is left."""
    import errno
    import os

    assert cli(["report", "-o", "r.html"]) == 0
    previous = (small_project / "r.html").read_bytes()
    real_write = os.write
    calls = []

    def full(fd: int, data: bytes | memoryview) -> int:
        calls.append(fd)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, bytes(data)[:1000])

    monkeypatch.setattr(os, "write", full)
    capsys.readouterr()
    assert cli(["report", "-o", "r.html"]) == 2
    monkeypatch.setattr(os, "write", real_write)
    assert "No space left on device" in capsys.readouterr().err
    assert (small_project / "r.html").read_bytes() == previous
    assert sorted(p.name for p in small_project.iterdir() if "tmp" in p.name) == []
