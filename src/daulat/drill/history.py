"""History: recorded drills paired with the real exits that followed them."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from daulat.config import Config
from daulat.drill.record import DRILLS_NAME, DrillLog
from daulat.plurals import plural
from daulat.state import connect_readonly
from daulat.transfer.journal import JOURNAL_KIND, JOURNAL_NAME


@dataclass
class HistoryRow:
    """A drill, and the first complete real exit of the same SRC → DST after it."""

    drill_id: str
    time: str
    src: str
    dst: str
    sample_objects: int
    objects: int
    predicted_s: float
    low_s: float
    high_s: float
    projection: dict[str, Any] | None
    exit_run: int | None = None
    exit_started: str | None = None
    actual_s: float | None = None
    actual_objects: int | None = None
    comparable: bool = False
    note: str | None = None
    error_pct: float | None = None  # (predicted - actual) / actual x 100, when comparable

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["predicted_hours"] = self.predicted_s / 3600
        d["interval_hours"] = [self.low_s / 3600, self.high_s / 3600]
        d["actual_hours"] = self.actual_s / 3600 if self.actual_s is not None else None
        return d


def drill_history(config: Config | Path) -> list[HistoryRow]:
    """Every complete drill, oldest first, with the real exit that followed it, if any.

    An exit is matched when it ran for the same SRC → DST labels, finished complete and began
    after the drill ended (its run id in the transfer journal is higher than the last one when
    the drill ended: timestamps in seconds could not order a drill and an exit a second apart),
    with the same filters as the drill (a filtered exit moved part of the source, so it is
    never the real exit of an unfiltered drill). It is *comparable* only if it copied everything itself (not a
    resumption that skipped objects already copied) and encrypted as the drill did; then the
    error is (predicted - actual) / actual. A source that changed by more than 5 % in objects
    since the drill is noted.
    """
    state_dir = config.state_dir if isinstance(config, Config) else config
    if not (state_dir / DRILLS_NAME).is_file():
        return []
    with DrillLog(state_dir) as log:
        drills = log.rows("WHERE status = 'complete'")
    exits = _exit_runs(state_dir / JOURNAL_NAME)
    out = []
    for d in drills:
        result = json.loads(d["result"]) if d["result"] else {}
        after = int(d["after_run"] or 0)
        row = HistoryRow(
            drill_id=d["id"],
            time=d["finished"] or d["started"],
            src=d["src"],
            dst=d["dst"],
            sample_objects=int(d["sample_objects"] or 0),
            objects=int(d["objects"] or 0),
            predicted_s=float(d["predicted_s"]),
            low_s=float(d["low_s"]),
            high_s=float(d["high_s"]),
            projection=json.loads(d["projection"]) if d["projection"] else None,
        )
        rules = result.get("filter")
        match = next(
            (
                e
                for e in exits
                if e["src"] == row.src
                and e["dst"] == row.dst
                and e["id"] > after
                and e["summary"].get("filter") == rules
            ),
            None,
        )
        if match is not None:
            _pair(row, match, bool(result.get("encrypted")))
        out.append(row)
    return out


def _pair(row: HistoryRow, run: dict[str, Any], drill_encrypted: bool) -> None:
    s = run["summary"]
    row.exit_run = run["id"]
    row.exit_started = run["started"]
    row.actual_s = float(s.get("duration_s") or 0.0)
    row.actual_objects = int(s.get("source_objects") or 0)
    notes = []
    copied, total = int(s.get("copied_objects") or 0), row.actual_objects
    if copied < total:
        notes.append(
            f"a resumed exit: {total - copied:,} of {plural(total, 'object')} were copied before it"
        )
    if bool(s.get("encrypted")) != drill_encrypted:
        notes.append("encryption differs between the drill and the exit")
    row.comparable = not notes and row.actual_s > 0
    if row.objects and abs(total - row.objects) > 0.05 * row.objects:
        notes.append(
            f"the source changed: {plural(row.objects, 'object')} at the drill, {total:,} at exit"
        )
    row.note = "; ".join(notes) or None
    if row.comparable and row.actual_s:
        row.error_pct = (row.predicted_s - row.actual_s) / row.actual_s * 100


def _exit_runs(path: Path) -> list[dict[str, Any]]:
    """Complete ``exit`` runs of the transfer journal, oldest first (read-only)."""
    if not path.is_file():
        return []
    db = connect_readonly(path, JOURNAL_KIND)
    try:
        rows = db.execute(
            "SELECT id, src, dst, started, summary FROM runs "
            "WHERE kind = 'exit' AND status = 'complete' ORDER BY id"
        ).fetchall()
    except sqlite3.DatabaseError:
        return []
    finally:
        db.close()
    out = []
    for run_id, src, dst, started, summary in rows:
        try:
            s = json.loads(summary or "{}")
        except ValueError:
            continue
        if not s.get("dry_run"):
            out.append({"id": run_id, "src": src, "dst": dst, "started": started, "summary": s})
    return out
