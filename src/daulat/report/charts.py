"""Horizontal bar charts as inline SVG, written from the report's data.

Why our own module and not a charting library. The report has one kind of chart (labelled
bars, sometimes two series side by side, as in a drill's prediction against the real exit),
and it must hold guarantees a library would have to be bent to give:

- **Plotly** (what the report used): 64 MB installed plus its dependencies, about 4.6 MB of
  JavaScript in every report, and charts drawn by that script, so a viewer without JavaScript
  shows nothing.
- **pygal** (maintained, ~1.3 MB, pulls in importlib-metadata): renders server-side, but by
  default loads its tooltip script from a CDN (the report must open offline), puts ~10 KB of
  CSS with a fixed font stack into every chart, gives each chart a random id (the same data
  would not give the same bytes), sets no ``role``/``aria`` on the chart, and tells series
  apart only by colour, which a black-and-white printout loses.
- **leather** (small, rarely released): draws bars and axes but has no hooks for titles,
  descriptions, value labels or patterns; we would post-process its SVG.
- **matplotlib**: tens of MB with numpy, and text becomes paths unless configured otherwise.

Writing horizontal bars from the data takes one small function and no dependency, and gives:
every label and value is SVG text (selectable, searchable in the printed PDF, read by screen
readers), the chart has a ``<title>`` and a ``<desc>`` listing every value (``role="img"``,
``aria-labelledby``), series differ by fill pattern as well as colour, the same data gives
the same bytes, and every string passes through :func:`daulat.report.escaping.esc`. Bars are
horizontal with the label on its own line above them, so long store or provider names need
no text measuring (SVG has none without a browser) and never collide with the bars.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from daulat.report.escaping import esc

WIDTH = 480
_TITLE_H = 26
_LEGEND_H = 22
_LABEL_H = 17
_BAR_H = 14
_BAR_GAP = 3
_ROW_GAP = 9
_VALUE_CHAR_W = 7.2  # a generous average glyph width at 12px, to reserve room for value text
_MAX_LABEL = 64  # characters drawn; the full label stays in the bar's <title> and the table
_INK = "#1b1f24"

Fill = Literal["solid", "hatched"]


@dataclass(frozen=True)
class Series:
    """One set of bars: a value per label (``None``: no value) and the text shown for it."""

    name: str
    values: Sequence[float | None]
    texts: Sequence[str]
    color: str = "#0969da"
    fill: Fill = "solid"


def _num(x: float) -> str:
    """A coordinate with at most one decimal, so output is compact and stable."""
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _short(label: str) -> str:
    return label if len(label) <= _MAX_LABEL else label[: _MAX_LABEL - 1] + "…"


def _paint(chart_id: str, s: Series, i: int) -> str:
    if s.fill == "hatched":
        return f'fill="url(#{chart_id}-p{i})" stroke="{s.color}" stroke-width="1"'
    return f'fill="{s.color}"'


def _patterns(chart_id: str, series: Sequence[Series]) -> str:
    out = [
        f'<pattern id="{chart_id}-p{i}" width="6" height="6" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><rect width="6" height="6" fill="#fff"/>'
        f'<line x1="0" y1="0" x2="0" y2="6" stroke="{s.color}" stroke-width="3"/></pattern>'
        for i, s in enumerate(series)
        if s.fill == "hatched"
    ]
    return f"<defs>{''.join(out)}</defs>" if out else ""


def bar_chart(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    max_value: float | None = None,
) -> str:
    """An ``<svg>`` element: one row per label, one bar per series, each value as text.

    ``chart_id`` must be unique in the page and made of ``[a-z0-9-]`` (it prefixes element
    ids); ``labels`` and the series' names and texts are data and are escaped here.
    ``max_value`` fixes the full scale (e.g. 100 for a score); otherwise the largest value
    fills the width. Values below zero are drawn as zero.
    """
    for s in series:
        if len(s.values) != len(labels) or len(s.texts) != len(labels):
            raise ValueError(f"series {s.name!r} has not one value and one text per label")
    widest = max((len(t) for s in series for t in s.texts), default=0)
    bar_room = WIDTH - widest * _VALUE_CHAR_W - 8
    top = max([max_value or 0.0] + [v for s in series for v in s.values if v is not None])
    scale = bar_room / top if top > 0 else 0.0

    parts: list[str] = [f'<text x="0" y="17" font-size="15" font-weight="600">{esc(title)}</text>']
    y = float(_TITLE_H)
    if len(series) > 1:
        x = 0.0
        for i, s in enumerate(series):
            parts.append(
                f'<rect x="{_num(x)}" y="{_num(y)}" width="12" height="12" '
                f"{_paint(chart_id, s, i)}/>"
                f'<text x="{_num(x + 17)}" y="{_num(y + 11)}" font-size="12">{esc(s.name)}</text>'
            )
            x += 17 + len(s.name) * _VALUE_CHAR_W + 18
        y += _LEGEND_H

    desc: list[str] = []
    if not labels:
        parts.append(f'<text x="0" y="{_num(y + 13)}" font-size="13">no data</text>')
        y += _LABEL_H + _ROW_GAP
    for row, label in enumerate(labels):
        parts.append(
            f'<text class="label" x="0" y="{_num(y + 13)}" font-size="13">'
            f"{esc(_short(label))}</text>"
        )
        y += _LABEL_H
        shown = []
        for i, s in enumerate(series):
            value, text = s.values[row], s.texts[row]
            width = max(value, 0.0) * scale if value is not None else 0.0
            if value is not None and value > 0:
                width = max(width, 1.5)  # a tiny value still shows a sliver
            if max_value is not None and scale:
                # A fixed scale (a score out of 100) shows its full length as a light track.
                parts.append(
                    f'<rect x="0" y="{_num(y)}" width="{_num(max_value * scale)}" '
                    f'height="{_BAR_H}" fill="#eaeef2"/>'
                )
            tip = f"{label}, {s.name}: {text}" if len(series) > 1 else f"{label}: {text}"
            if width > 0:
                parts.append(
                    f'<rect class="bar" x="0" y="{_num(y)}" width="{_num(width)}" '
                    f'height="{_BAR_H}" {_paint(chart_id, s, i)}><title>{esc(tip)}</title></rect>'
                )
            parts.append(
                f'<text class="value" x="{_num(width + 5)}" y="{_num(y + 11)}" '
                f'font-size="12">{esc(text)}</text>'
            )
            shown.append(f"{s.name} {text}" if len(series) > 1 else text)
            y += _BAR_H + _BAR_GAP
        desc.append(f"{label}: {', '.join(shown)}")
        y += _ROW_GAP - _BAR_GAP
    height = _num(y)
    return (
        f'<svg id="{chart_id}" class="chart" role="img" '
        f'aria-labelledby="{chart_id}-title" aria-describedby="{chart_id}-desc" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'fill="{_INK}" font-family="inherit">'
        f'<title id="{chart_id}-title">{esc(title)}</title>'
        f'<desc id="{chart_id}-desc">{esc("; ".join(desc) or "no data")}</desc>'
        f"{_patterns(chart_id, series)}{''.join(parts)}</svg>"
    )
