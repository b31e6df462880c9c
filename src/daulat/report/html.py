"""Render :class:`ReportData` as one self-contained HTML file.

The file has no script and fetches nothing: charts are inline SVG written from the data
(:mod:`daulat.report.charts`), fonts are the reader's own, and the print stylesheet keeps
charts and table rows whole on a page and readable in black and white, because auditors print
the report. Every number a chart shows is also in a table. Every piece of text that comes from
configuration, stores or providers goes through :func:`daulat.report.escaping.esc`: names are
data, possibly hostile.
"""

from __future__ import annotations

from typing import Any

from daulat.drill.units import human_duration
from daulat.plurals import plural
from daulat.report.charts import Series, bar_chart
from daulat.report.data import ReplicaRow, ReportData
from daulat.report.escaping import esc
from daulat.report.marker import GENERATOR_META

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
.charts { display: grid; gap: 1rem;
          grid-template-columns: repeat(auto-fit, minmax(min(420px, 100%), 1fr)); }
figure { margin: 1rem 0; }
svg.chart { display: block; width: 100%; max-width: 560px; height: auto; overflow: visible; }
table.chart-data { font-size: .85rem; max-width: 560px; }
.charts figure { margin: 0; }
code, .hash { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .85rem;
              word-break: break-all; }
.note { background: #fff8c5; border: 1px solid #d4a72c; padding: .5rem .8rem; border-radius: 4px; }
@media print {
  @page { margin: 14mm 12mm; }
  body { max-width: none; margin: 0; padding: 0; font-size: 10pt; color: #000; }
  .sub, th { color: #000; }
  table { font-size: 8.5pt; }
  th, td { border-color: #555; overflow-wrap: anywhere; }
  /* Black and white: a status is its word; colour only adds to it. */
  .pass, .fail, .unknown { color: #000; }
  .fail { text-decoration: underline; }
  .note { background: none; border: 1px solid #000; }
  .charts { display: block; } .charts figure { margin: 0 0 1.2rem; }
  h2 { break-after: avoid; page-break-after: avoid; }
  figure, svg.chart, table, tr { break-inside: avoid; page-break-inside: avoid; }
  thead { display: table-header-group; }
  a { color: #000; }
  a[href^="http"]::after, a[href^="mailto:"]::after { content: " <" attr(href) ">";
                                                      word-break: break-all; }
}
"""


def _gib(n: int | None) -> str:
    if n is None:
        return "not scanned"
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,} B"


def _size_chart(values: dict[str, int], title: str, chart_id: str, what: str) -> str:
    """A chart of bytes per ``what`` (country, provider, ...) and the same numbers as a table."""
    keys = sorted(values, key=lambda k: (-values[k], k))
    texts = [_gib(values[k]) for k in keys]
    svg = bar_chart(
        chart_id, title, keys, [Series("size", [float(values[k]) for k in keys], texts)]
    )
    table = _table(
        [what, "size", "bytes"],
        [[esc(k), esc(t), f"{values[k]:,}"] for k, t in zip(keys, texts, strict=True)],
        numeric={1, 2},
        cls="chart-data",
        label=f"{title}: values",
    )
    return f'<figure data-chart="{chart_id}">{svg}{table}</figure>'


def _percent(value: object) -> str:
    """A signed percentage, or "-" for what is not a number."""
    try:
        return f"{float(value):+.1f} %"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "-"


def _duration(hours: object) -> str:
    """Hours as a person reads a duration (``1.4 s``, ``12 min 5 s``, ``3 h 20 min``), never a
    raw float: a drill of a small store predicts fractions of a second."""
    try:
        return human_duration(float(hours) * 3600)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "-"


def _table(
    headers: list[str],
    rows: list[list[str]],
    numeric: set[int] | None = None,
    *,
    cls: str | None = None,
    label: str | None = None,
) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{cell}</td>' if i in numeric else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    attrs = (f' class="{cls}"' if cls else "") + (f' aria-label="{esc(label)}"' if label else "")
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _status(value: str) -> str:
    cls = {"pass": "pass", "fail": "fail"}.get(value, "unknown")
    return f'<span class="{cls}">{esc(value)}</span>'


def _where(data: ReportData) -> str:
    rows = [
        [
            esc(s.name),
            esc(s.provider_name),
            esc(s.region or "-"),
            esc(s.country),
            esc(s.home_jurisdiction),
            esc(", ".join(s.jurisdictions)),
            "yes" if s.encrypt_to else "no",
            f"{s.objects:,}" if s.objects is not None else "not scanned",
            _gib(s.bytes),
            esc(s.last_scan or "-")
            + (" (date of an inventory report)" if s.last_scan_report else ""),
            f"{s.written_objects:,} ({_gib(s.written_bytes)})" if s.written_objects else "-",
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
            "declares encrypt_to",
            "objects",
            "size",
            "last scan",
            "written by daulat",
        ],
        rows,
        numeric={7, 8, 10},
    )
    charts = "".join(
        [
            _size_chart(data.by_country, "Data by country of storage", "chart-country", "country"),
            _size_chart(data.by_provider, "Data by provider", "chart-provider", "provider"),
            _size_chart(
                data.by_jurisdiction,
                "Data reachable by each country's law",
                "chart-jurisdiction",
                "law of",
            ),
        ]
    )
    return (
        "<h2 id='where'>Where the data lives</h2>"
        "<p>Countries come from each store's declared region or country (the provider's "
        "published region list), never from where an IP address seems to be. A provider's home "
        "law reaches data it holds abroad (e.g. the US CLOUD Act), so one byte can be reachable "
        "by more than one country's law.</p>"
        f'<div class="charts">{charts}</div>{table}{_gateway_standing(data)}'
    )


def _gateway_standing(data: ReportData) -> str:
    """Stores the gateway (daulat serve) last found refusing or unreachable, or recovered."""
    seen = [s for s in data.stores if s.gateway]
    if not seen:
        return ""
    rows = [
        [
            esc(s.name),
            # Failing while a gateway last found it so; history once a later one watches it.
            _status("fail")
            if g["state"] != "recovered" and not g.get("watched")
            else _status("pass"),
            esc(str(g["state"]))
            + (
                f" (seen by a {esc(str(g['seen_by']))})"
                if g.get("seen_by") not in (None, "gateway")
                else ""
            ),
            esc(str(g["since"]))
            + (
                # What it recovered from, in the past: never shown as its state.
                f" (last found {esc(str(g['was']))} at {esc(str(g['was_since']))})"
                if g.get("was") and g.get("was_since")
                else ""
            )
            + (f" (the gateway stopped at {esc(str(g['stopped']))})" if g.get("stopped") else "")
            + (
                f" (watched again since {esc(str(g['watched']))}, not found so)"
                if g.get("watched")
                else ""
            ),
            esc(str(g["replica"])),
            esc(str(g.get("error") or "")),
        ]
        for s in seen
        if (g := s.gateway) is not None
    ]
    table = _table(
        ["store", "", "gateway found it", "since", "replica", "error"],
        rows,
        label="Stores as the gateway last found them",
    )
    return (
        "<h3 id='gateway-standing'>As the gateway last found them</h3>"
        "<p>A store that refused access (revoked: 403/401) or did not answer while "
        "<code>daulat serve</code> read from it, from the audit log; reads went on from the "
        "next replica.</p>" + table
    )


def _policies(data: ReportData) -> str:
    if data.policies is None:
        return "<h2 id='policies'>Policies</h2><p>No policies are defined.</p>"
    findings = [f for p in data.policies.get("policies", []) for f in p.get("findings", [])]
    rows = [
        [
            esc(str(f.get("policy", ""))),
            esc(str(f.get("rule", ""))),
            esc(str(f.get("store") or "-")),
            _status(str(f.get("status", "unknown"))),
            esc(str(f.get("why", ""))),
            esc(str(f.get("fix") or "")),
        ]
        for f in findings
    ]
    status = str(data.policies.get("status", "unknown"))
    return (
        f"<h2 id='policies'>Policies: {_status(status)}</h2>"
        "<p>A rule that cannot be evaluated yet is shown as unknown, never as pass.</p>"
        + _table(["policy", "rule", "store", "status", "why", "how to fix"], rows)
    )


def _encryption(r: ReplicaRow) -> str:
    """ "age" only when every object daulat last wrote there is (see ``data._replicas``)."""
    if r.encrypted:
        return "age"
    if not r.encrypted_objects:
        return "no"
    if r.encrypted_objects < r.objects_done:
        return f"partly: {r.encrypted_objects:,} of {r.objects_done:,}"
    return "no: other copies wrote plaintext there"


def _replicas(data: ReportData) -> str:
    if not data.replicas:
        return "<h2 id='replicas'>Replicas</h2><p>No copies have been made with daulat yet.</p>"
    rows = [
        [
            esc(r.source),
            esc(r.destination),
            _encryption(r),
            f"{r.objects_done:,}",
            f"{r.objects_verified:,}",
            esc(r.last_verified or "never"),
            esc(r.last_run_status or "-"),
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
    names: list[str] = []
    predicted: list[float | None] = []
    actual: list[float | None] = []
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
                esc(str(d.get("time", ""))),
                esc(name),
                _duration(p_h),
                f"{_duration(interval[0])} to {_duration(interval[1])}" if interval else "-",
                _duration(a_h) if a_h is not None else "not yet",
                _percent(error),
            ]
        )
    chart = bar_chart(
        "chart-drills",
        "Exit time: predicted by drill vs actual",
        names,
        [
            Series("predicted", predicted, [_duration(h or 0.0) for h in predicted]),
            Series(
                "actual",
                actual,
                [_duration(h) if h is not None else "not yet" for h in actual],
                color="#1a7f37",
                fill="hatched",
            ),
        ],
    )
    return (
        "<h2 id='drills'>Exit drills</h2>"
        + f'<figure data-chart="chart-drills">{chart}'
        + _table(
            ["time", "drill", "predicted", "95 % interval", "actual", "error"],
            rows,
            numeric={2, 4, 5},
        )
        + "</figure>"
    )


def _risk(data: ReportData) -> str:
    scored = [r for r in data.risk if r.get("exposure")]
    parts = ["<h2 id='risk'>Provider risk</h2>"]
    chart = ""
    if scored:
        chart = bar_chart(
            "chart-risk",
            "Exposure score (0 to 100)",
            [str(r["store"]) for r in scored],
            [
                Series(
                    "score",
                    [float(r["exposure"]["score"]) for r in scored],
                    [str(r["exposure"]["score"]) for r in scored],
                    color="#cf222e",
                )
            ],
            max_value=100,
        )
    rows = []
    for r in data.risk:
        exposure: dict[str, Any] | None = r.get("exposure")
        recent = r.get("most_recent_event") or {}
        rows.append(
            [
                esc(r["store"]),
                esc(r["provider_name"]),
                esc(", ".join(law["citation"] for law in r["laws"]) or "-"),
                f"{r['events']:,}",
                esc(", ".join(str(d) for d in r["notice_days_observed"]) or "-"),
                esc(f"{recent.get('date', '')} {recent.get('summary', '')}".strip() or "-"),
                esc(exposure["score"]) if exposure else "-",
            ]
        )
    table = _table(
        ["store", "provider", "laws", "recorded events", "notice days seen", "latest", "score"],
        rows,
        numeric={3, 6},
    )
    # The chart and the table that holds its numbers stay together, on screen and on paper.
    parts.append(f'<figure data-chart="chart-risk">{chart}{table}</figure>' if chart else table)
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
        f"<p>{plural(a.entries, 'entry', 'entries')}, chain {state}. Head: entry {a.head_seq}, hash "
        f'<span class="hash" id="audit-head">{esc(a.head_hash or "none")}</span></p>'
        "<p>Anyone holding the log can check this report against it with "
        f"<code>daulat audit verify --head {esc(a.head_hash or 'HASH')}</code>.</p>"
        + _restarts(a.restarts)
    )


def _restarts(restarts: list[dict[str, Any]]) -> str:
    """Each restart of the log after a loss: the chain above begins there, not at the start."""
    if not restarts:
        return ""
    items = "".join(
        f"<li>entry {r['seq']} ({esc(str(r['time']))}): the old log had "
        f"{esc(str(r['previous_entries'] if r['previous_entries'] is not None else 'unknown'))} "
        f"entries, head <span class='hash'>{esc(str(r['previous_head_hash'] or 'unknown'))}</span>"
        f"; problem: {esc(str(r['problem'] or '-'))}"
        + (f"; reason given: {esc(str(r['reason']))}" if r.get("reason") else "")
        + "</li>"
        for r in restarts
    )
    return (
        f"<p class='fail' id='audit-restarts'>The log was restarted after a loss "
        f"{len(restarts)} time(s) (<code>daulat audit restart</code>): what came before each "
        f"restart is not in this chain; check it against the old head.</p><ul>{items}</ul>"
    )


def render(data: ReportData) -> str:
    """The whole report as one HTML document: no script, nothing fetched, charts inline SVG."""
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in data.notes)
    total = sum(s.known_bytes for s in data.stores)
    objects = sum(s.known_objects for s in data.stores)
    body = "".join(
        [
            f"<h1>Data sovereignty report</h1><p class='sub'>Generated {esc(data.generated)} "
            f"by daulat {esc(data.daulat_version)} from {esc(data.config)}. "
            f"<span id='totals'>{plural(len(data.stores), 'store')}, {plural(objects, 'object')}, "
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
        f"{GENERATOR_META}"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>daulat report</title><style>{_CSS}</style></head><body>{body}</body></html>"
    )
