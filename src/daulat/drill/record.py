"""The record: table ``drills`` of ``.daulat/drills.sqlite``, written by every drill."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from daulat.config import Config
from daulat.drill.result import CONFIDENCE, DrillResult
from daulat.drill.units import _now
from daulat.state import DatabaseKind, claim, connect, connect_readonly
from daulat.transfer.journal import JOURNAL_KIND, JOURNAL_NAME
from daulat.transfer.model import Endpoint

DRILLS_NAME = "drills.sqlite"
DRILLS_KIND = DatabaseKind(
    "drill record",
    application_id=0x644C5444,  # "dLTD"
    tables={"drills": frozenset({"id", "status", "src_store"})},
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS drills (
    id TEXT PRIMARY KEY,
    started TEXT NOT NULL,
    finished TEXT,
    status TEXT NOT NULL,             -- running | complete | failed
    src TEXT NOT NULL,                -- STORE or STORE:PREFIX/ (as exit labels it)
    dst TEXT NOT NULL,
    src_store TEXT NOT NULL,
    src_prefix TEXT NOT NULL,
    dst_store TEXT NOT NULL,
    scratch TEXT NOT NULL,            -- key prefix of the scratch copy at dst_store
    scratch_removed INTEGER NOT NULL DEFAULT 0,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    objects INTEGER,                  -- in the source, per the scan
    bytes INTEGER,
    sample_objects INTEGER,
    sample_bytes INTEGER,
    concurrency INTEGER,
    predicted_s REAL,
    low_s REAL,
    high_s REAL,
    predicted_hours REAL,             -- read by daulat.policy (max_exit_hours)
    model TEXT,                       -- JSON: per-class parameters, overhead, interval method
    projection TEXT,                  -- JSON, or NULL: a what-if, not a measurement
    result TEXT,                      -- JSON: the whole DrillResult
    after_run INTEGER,                -- last transfer-journal run id when the drill ended
    error TEXT
);
"""


class DrillLog:
    """Table ``drills`` in ``.daulat/drills.sqlite``: one row per drill, written at its start
    (status ``running``) and end (``complete`` or ``failed``)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / DRILLS_NAME
        self.db = connect(self.path, DRILLS_KIND, timeout=60)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(_SCHEMA)
            claim(self.db, self.path, DRILLS_KIND)
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> DrillLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def begin(
        self, drill_id: str, started: str, src: Endpoint, dst: Endpoint, scratch: str
    ) -> None:
        self.db.execute(
            "INSERT INTO drills (id, started, status, src, dst, src_store, src_prefix, dst_store, "
            "scratch, host, pid) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                drill_id,
                started,
                src.label or src.store.name,
                dst.label or dst.store.name,
                src.store.name,
                src.prefix,
                dst.store.name,
                scratch,
                socket.gethostname(),
                os.getpid(),
            ),
        )

    def fail(self, drill_id: str, error: str) -> None:
        self.db.execute(
            "UPDATE drills SET status = 'failed', finished = ?, error = ? WHERE id = ?",
            (_now(), error, drill_id),
        )

    def scratch_removed(self, drill_id: str, removed: bool) -> None:
        self.db.execute(
            "UPDATE drills SET scratch_removed = ? WHERE id = ?", (int(removed), drill_id)
        )

    def complete(self, r: DrillResult) -> None:
        model: dict[str, Any] = {
            "classes": [
                {
                    k: getattr(c, k)
                    for k in (
                        "label",
                        "objects",
                        "bytes",
                        "sampled_objects",
                        "per_object_s",
                        "throughput_bps",
                        "parallelism",
                        "steady",
                        "fit",
                        "predicted_s",
                    )
                }
                for c in r.classes
            ],
            "overhead": asdict(r.overhead),
            "interval_method": r.interval_method,
            "confidence": CONFIDENCE,
            "seed": r.seed,
        }
        if r.fitted is not None:
            # What `daulat plan` extrapolates: the fit, its replicates and the overheads.
            model["fitted"] = r.fitted.to_json()
        self.db.execute(
            """UPDATE drills SET status = 'complete', finished = ?, objects = ?, bytes = ?,
                 sample_objects = ?, sample_bytes = ?, concurrency = ?, predicted_s = ?,
                 low_s = ?, high_s = ?, predicted_hours = ?, model = ?, projection = ?,
                 result = ?, error = ?, after_run = ? WHERE id = ?""",
            (
                r.finished,
                r.objects,
                r.bytes,
                r.sampled_objects,
                r.sampled_bytes,
                r.concurrency,
                r.predicted_s,
                r.low_s,
                r.high_s,
                r.predicted_hours,
                json.dumps(model),
                json.dumps(asdict(r.projection)) if r.projection else None,
                json.dumps(r.to_json()),
                "; ".join(r.problems) or None,
                _last_run_id(self.path.parent / JOURNAL_NAME),
                r.id,
            ),
        )

    def leftovers(self, dst_store: str) -> list[tuple[str, str]]:
        """(id, scratch) of drills to ``dst_store`` whose scratch copy may still exist: those
        that ended without removing it, and those 'running' in a process of this host that is
        gone (killed)."""
        out = []
        host = socket.gethostname()
        for drill_id, scratch, status, h, pid in self.db.execute(
            "SELECT id, scratch, status, host, pid FROM drills "
            "WHERE dst_store = ? AND scratch_removed = 0",
            (dst_store,),
        ).fetchall():
            if status != "running" or (h == host and not _alive(int(pid))):
                out.append((str(drill_id), str(scratch)))
        return out

    def rows(self, where: str = "", args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        self.db.row_factory = sqlite3.Row
        try:
            return list(self.db.execute(f"SELECT * FROM drills {where} ORDER BY rowid", args))
        finally:
            self.db.row_factory = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def latest_exit_hours(
    config: Config | Path,
    store_name: str,
    *,
    bound: Literal["predicted", "high"] = "predicted",
) -> float | None:
    """Hours the latest complete drill of the whole of ``store_name`` predicts for its exit.

    ``config`` is a Config or a state directory. ``bound="high"`` gives the upper end of the
    95 % interval instead (a conservative reading for ``max_exit_hours``). Drills of a prefix
    only (``STORE:PREFIX``) do not count: they time part of the store. None when no such drill
    was recorded.
    """
    state_dir = config.state_dir if isinstance(config, Config) else config
    path = state_dir / DRILLS_NAME
    if not path.is_file():
        return None
    column = "predicted_s" if bound == "predicted" else "high_s"
    db = connect_readonly(path, DRILLS_KIND)
    try:
        row = db.execute(
            f"SELECT {column} FROM drills WHERE src_store = ? AND src_prefix = '' "
            "AND status = 'complete' AND predicted_s IS NOT NULL ORDER BY rowid DESC LIMIT 1",
            (store_name,),
        ).fetchone()
    except sqlite3.DatabaseError:
        return None
    finally:
        db.close()
    return float(row[0]) / 3600 if row else None


def _last_run_id(path: Path) -> int:
    """The highest run id in the transfer journal at ``path`` (0 if there is none)."""
    if not path.is_file():
        return 0
    db = connect_readonly(path, JOURNAL_KIND)
    try:
        (n,) = db.execute("SELECT coalesce(max(id), 0) FROM runs").fetchone()
        return int(n)
    except sqlite3.DatabaseError:
        return 0
    finally:
        db.close()
