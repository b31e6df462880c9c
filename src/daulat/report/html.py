"""Render :class:`ReportData` as one self-contained HTML file.

Charts are drawn by Plotly with its JavaScript embedded inline, so the file opens offline with no
CDN and no network at view time. Every piece of text that comes from configuration or stores is
HTML-escaped: store names and keys are data, possibly hostile.
"""

from __future__ import annotations

from html import escape
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from daulat.drill.units import human_duration
from daulat.report.data import ReportData

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 1100px; color: #1b1f24; padding: 0 1rem; }
h1 { margin-bottom: .2rem; } .sub { color: #57606a; margin-top: 0; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; margin-top: 2.2rem; }
table { border-collapse: collapse; width: 100%; margin: .6rem 0 1rem; font-size: .92rem; }
th, td { border: 1px solid #d0d7de; padding: .35rem .5rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #1a7f37; font-weight: 600; } .fail { color: #cf222e; font-weight: 600; }
.unknown { color: #9a6700; font-weight: 600; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 1rem; }
code, .hash { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .85rem;
              word-break: break-all; }
.note { background: #fff8c5; border: 1px solid #d4a72c; padding: .5rem .8rem; border-radius: 4px; }
"""


def _gib(n: int | None) -> str:
    if n is None:
        return "not scanned"
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,} B"


def _fig(fig: go.Figure, div_id: str) -> str:
    fig.update_layout(
        margin={"l": 40, "r": 10, "t": 40, "b": 40}, height=320, template="plotly_white"
    )
    html: str = pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"displaylogo": False, "responsive": True, "displayModeBar": False},
    )
    return f'<div class="chart" data-chart="{div_id}">{html}</div>'


def _bar(values: dict[str, int], title: str, div_id: str, unit_bytes: bool = True) -> str:
    keys = sorted(values, key=lambda k: -values[k])
    ys = [values[k] / 2**20 if unit_bytes else values[k] for k in keys]
    fig = go.Figure(go.Bar(x=keys, y=ys, marker_color="#0969da"))
    fig.update_layout(title=title, yaxis_title="MiB" if unit_bytes else "")
    return _fig(fig, div_id)


def _duration(hours: object) -> str:
    """Hours as a person reads a duration (``1.4 s``, ``12 min 5 s``, ``3 h 20 min``), never a
    raw float: a drill of a small store predicts fractions of a second."""
    try:
        return human_duration(float(hours) * 3600)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "-"


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{cell}</td>' if i in numeric else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _status(value: str) -> str:
    cls = {"pass": "pass", "fail": "fail"}.get(value, "unknown")
    return f'<span class="{cls}">{escape(value)}</span>'


def _where(data: ReportData) -> str:
    rows = [
        [
            escape(s.name),
            escape(s.provider_name),
            escape(s.region or "-"),
            escape(s.country),
            escape(s.home_jurisdiction),
            escape(", ".join(s.jurisdictions)),
            "yes" if s.encrypt_to else "no",
            f"{s.objects:,}" if s.objects is not None else "not scanned",
            _gib(s.bytes),
            escape(s.last_scan or "-"),
        ]
        for s in data.stores
    ]
    table = _table(
        [
            "store",
            "provider",
            "region",
            "data in",
            "provider's home",
            "laws that reach it",
            "encrypts",
            "objects",
            "size",
            "last scan",
        ],
        rows,
        numeric={7, 8},
    )
    charts = "".join(
        [
            _bar(data.by_country, "Data by country of storage", "chart-country"),
            _bar(data.by_provider, "Data by provider", "chart-provider"),
            _bar(
                data.by_jurisdiction,
                "Data reachable by each country's law",
                "chart-jurisdiction",
            ),
        ]
    )
    return (
        "<h2 id='where'>Where the data lives</h2>"
        "<p>Countries come from each store's declared region or country (the provider's "
        "published region list), never from where an IP address seems to be. A provider's home "
        "law reaches data it holds abroad (e.g. the US CLOUD Act), so one byte can be reachable "
        "by more than one country's law.</p>"
        f'<div class="charts">{charts}</div>{table}'
    )


def _policies(data: ReportData) -> str:
    if data.policies is None:
        return "<h2 id='policies'>Policies</h2><p>No policies are defined.</p>"
    findings = [f for p in data.policies.get("policies", []) for f in p.get("findings", [])]
    rows = [
        [
            escape(str(f.get("policy", ""))),
            escape(str(f.get("rule", ""))),
            escape(str(f.get("store") or "-")),
            _status(str(f.get("status", "unknown"))),
            escape(str(f.get("why", ""))),
            escape(str(f.get("fix") or "")),
        ]
        for f in findings
    ]
    status = str(data.policies.get("status", "unknown"))
    return (
        f"<h2 id='policies'>Policies: {_status(status)}</h2>"
        "<p>A rule that cannot be evaluated yet is shown as unknown, never as pass.</p>"
        + _table(["policy", "rule", "store", "status", "why", "how to fix"], rows)
    )


def _replicas(data: ReportData) -> str:
    if not data.replicas:
        return "<h2 id='replicas'>Replicas</h2><p>No copies have been made with daulat yet.</p>"
    rows = [
        [
            escape(r.source),
            escape(r.destination),
            "age" if r.encrypted else "no",
            f"{r.objects_done:,}",
            f"{r.objects_verified:,}",
            escape(r.last_verified or "never"),
            escape(r.last_run_status or "-"),
        ]
        for r in data.replicas
    ]
    return "<h2 id='replicas'>Replicas and verification</h2>" + _table(
        [
            "source",
            "copy at",
            "encrypted",
            "objects copied",
            "verified",
            "last verified",
            "last run",
        ],
        rows,
        numeric={3, 4},
    )


def _drills(data: ReportData) -> str:
    if not data.drills:
        return (
            "<h2 id='drills'>Exit drills</h2><p>No drill has been run: the time to leave is "
            "unknown. Run <code>daulat drill SRC DST</code>.</p>"
        )
    rows = []
    names, predicted, actual = [], [], []
    for i, d in enumerate(data.drills):
        name = f"{d.get('src')} → {d.get('dst')} #{i + 1}"
        p_h = float(d.get("predicted_hours") or 0.0)
        a_h = d.get("actual_hours")
        names.append(name)
        predicted.append(p_h)
        actual.append(float(a_h) if a_h is not None else None)
        interval = d.get("interval_hours")
        error = d.get("error_pct")
        rows.append(
            [
                escape(str(d.get("time", ""))),
                escape(name),
                _duration(p_h),
                f"{_duration(interval[0])} to {_duration(interval[1])}" if interval else "-",
                _duration(a_h) if a_h is not None else "not yet",
                f"{float(error):+.1f} %" if error is not None else "-",
            ]
        )
    fig = go.Figure(
        [
            go.Bar(name="predicted", x=names, y=predicted, marker_color="#0969da"),
            go.Bar(name="actual", x=names, y=actual, marker_color="#1a7f37"),
        ]
    )
    fig.update_layout(title="Exit time: predicted by drill vs actual", yaxis_title="hours")
    return (
        "<h2 id='drills'>Exit drills</h2>"
        + _fig(fig, "chart-drills")
        + _table(
            ["time", "drill", "predicted", "95 % interval", "actual", "error"],
            rows,
            numeric={2, 4, 5},
        )
    )


def _risk(data: ReportData) -> str:
    scored = [r for r in data.risk if r.get("exposure")]
    parts = ["<h2 id='risk'>Provider risk</h2>"]
    if scored:
        fig = go.Figure(
            go.Bar(
                x=[r["store"] for r in scored],
                y=[r["exposure"]["score"] for r in scored],
                marker_color="#cf222e",
            )
        )
        fig.update_layout(title="Exposure score (0 to 100)", yaxis_range=[0, 100])
        parts.append(_fig(fig, "chart-risk"))
    rows = []
    for r in data.risk:
        exposure: dict[str, Any] | None = r.get("exposure")
        recent = r.get("most_recent_event") or {}
        rows.append(
            [
                escape(r["store"]),
                escape(r["provider_name"]),
                escape(", ".join(law["citation"] for law in r["laws"]) or "-"),
                f"{r['events']:,}",
                escape(", ".join(str(d) for d in r["notice_days_observed"]) or "-"),
                escape(f"{recent.get('date', '')} {recent.get('summary', '')}".strip() or "-"),
                str(exposure["score"]) if exposure else "-",
            ]
        )
    parts.append(
        _table(
            ["store", "provider", "laws", "recorded events", "notice days seen", "latest", "score"],
            rows,
            numeric={3, 6},
        )
    )
    parts.append(
        "<p>The score is a sum of documented components (jurisdiction, track record, data "
        "lost, country, sector, notice); <code>daulat risk</code> shows each one and the "
        "formula. The events come from a register of documented cases, each with sources.</p>"
    )
    return "".join(parts)


def _audit(data: ReportData) -> str:
    a = data.audit
    state = '<span class="pass">intact</span>' if a.intact else '<span class="fail">BROKEN</span>'
    return (
        "<h2 id='audit'>Audit log</h2>"
        f"<p>{a.entries:,} entries, chain {state}. Head: entry {a.head_seq}, hash "
        f'<span class="hash" id="audit-head">{escape(a.head_hash or "none")}</span></p>'
        "<p>Anyone holding the log can check this report against it with "
        f"<code>daulat audit verify --head {escape(a.head_hash or 'HASH')}</code>.</p>"
    )


def render(data: ReportData) -> str:
    """The whole report as one HTML document (Plotly's JavaScript inline)."""
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in data.notes)
    total = sum(s.bytes or 0 for s in data.stores)
    objects = sum(s.objects or 0 for s in data.stores)
    body = "".join(
        [
            f"<h1>Data sovereignty report</h1><p class='sub'>Generated {escape(data.generated)} "
            f"by daulat {escape(data.daulat_version)} from {escape(data.config)}. "
            f"<span id='totals'>{len(data.stores)} stores, {objects:,} objects, "
            f"{_gib(total)}</span>.</p>",
            notes,
            _where(data),
            _policies(data),
            _replicas(data),
            _drills(data),
            _risk(data),
            _audit(data),
        ]
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>daulat report</title><style>{_CSS}</style>"
        f"<script>{get_plotlyjs()}</script></head><body>{body}</body></html>"
    )
