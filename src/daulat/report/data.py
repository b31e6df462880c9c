"""Everything the transparency report shows, gathered from daulat's state as plain data.

The same data is rendered as HTML or printed as JSON (``daulat report --format json``), so a
published report can be checked by machines as well as read by people.
"""

from __future__ import annotations

import contextlib
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from daulat import __version__
from daulat.audit import AuditLogError, audit_log
from daulat.audit.continuity import RESTART_OPERATION
from daulat.config import Config, placement_of
from daulat.inventory.database import MANIFEST_NAME, Manifest
from daulat.report.marker import JSON_MARKER, REPORT_FORMAT
from daulat.risk.stores import store_risks
from daulat.state import connect_readonly, has_tables
from daulat.transfer.journal import JOURNAL_KIND, JOURNAL_NAME


@dataclass
class StoreRow:
    name: str
    provider: str
    provider_name: str
    region: str | None
    country: str
    home_jurisdiction: str
    jurisdictions: list[str]
    encrypt_to: bool
    objects: int | None
    bytes: int | None
    last_scan: str | None
    # What daulat serve last found about the store (daulat.gateway.standing), if anything.
    gateway: dict[str, Any] | None = None
    # What daulat wrote there, per the journal (each key's latest completed write): a store
    # written after its last scan, or never scanned, holds at least this.
    written_objects: int = 0
    written_bytes: int = 0
    # ``last_scan`` is the census date: where the scan was read from an inventory report,
    # the report's date, and this its address.
    last_scan_report: str | None = None

    @property
    def known_bytes(self) -> int:
        """The bytes daulat knows the store holds: its last scan's, or what daulat wrote there
        when that is more (a scan before the writes, or none)."""
        return max(self.bytes or 0, self.written_bytes)

    @property
    def known_objects(self) -> int:
        return max(self.objects or 0, self.written_objects)

    @property
    def written_beyond_scan(self) -> bool:
        return self.written_bytes > (self.bytes or 0) or self.written_objects > (self.objects or 0)


@dataclass
class ReplicaRow:
    source: str
    destination: str
    encrypted: bool  # every object daulat last wrote there is age-encrypted (see _replicas)
    encrypted_objects: int
    objects_done: int
    objects_verified: int
    last_verified: str | None
    last_run: str | None
    last_run_status: str | None


@dataclass
class AuditHead:
    entries: int
    head_seq: int | None
    head_hash: str | None
    intact: bool
    summary: str
    #: Each ``daulat audit restart`` in the log (a new log after a loss), oldest first: what
    #: the old log was when it last verified, and why it was restarted. A report must say so:
    #: an intact chain that begins with a restart is not the whole history.
    restarts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ReportData:
    generated: str
    daulat_version: str
    config: str
    stores: list[StoreRow]
    by_country: dict[str, int]
    by_provider: dict[str, int]
    by_jurisdiction: dict[str, int]
    replicas: list[ReplicaRow]
    risk: list[dict[str, Any]]
    audit: AuditHead
    policies: dict[str, Any] | None = None
    drills: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        # The marker first: it is how ``daulat report`` knows the file may be replaced.
        return {JSON_MARKER: REPORT_FORMAT, **asdict(self)}


def written_by_daulat(config: Config) -> dict[str, tuple[int, int]]:
    """(objects, bytes) daulat wrote to each store from any other, per the journal."""
    return {name: (n, size) for name, (n, size, _) in daulat_writes(config).items()}


def daulat_writes(config: Config) -> dict[str, tuple[int, int, str | None]]:
    """(objects, bytes, time of the latest) daulat wrote to each store from any other, per the
    journal."""
    from daulat.policy.state import _State

    state = _State(config.state_dir)
    try:
        names = list(config.stores)
        written = {}
        for name in names:
            pn, pb, en, eb = state.writes(name, [n for n in names if n != name], "")
            written[name] = (pn + en, pb + eb, state.last_write(name))
        return written
    finally:
        state.close()


def _stores(config: Config) -> list[StoreRow]:
    from daulat.gateway.standing import store_standing

    standing = store_standing(config.state_dir)
    written = written_by_daulat(config)
    rows = []
    manifest_path = config.state_dir / MANIFEST_NAME
    manifest = Manifest(manifest_path) if manifest_path.exists() else None
    try:
        for cfg in config.stores.values():
            placement = placement_of(cfg)
            scan = manifest.last_scan(cfg.name) if manifest else None
            objects, size = manifest.totals(cfg.name) if manifest and scan else (None, None)
            rows.append(
                StoreRow(
                    name=cfg.name,
                    provider=cfg.provider.value,
                    provider_name=placement.provider.name,
                    region=cfg.region,
                    country=placement.country,
                    home_jurisdiction=placement.provider.hq_country or placement.country,
                    jurisdictions=placement.jurisdictions,
                    encrypt_to=bool(cfg.encrypt_to),
                    objects=objects,
                    bytes=size,
                    last_scan=scan.census_date if scan else None,
                    last_scan_report=scan.report if scan else None,
                    gateway=s.to_json() if (s := standing.get(cfg.name)) else None,
                    written_objects=written.get(cfg.name, (0, 0))[0],
                    written_bytes=written.get(cfg.name, (0, 0))[1],
                )
            )
    finally:
        if manifest is not None:
            manifest.close()
    return rows


# A journal pair id: "SRC:PREFIX -> DST:PREFIX[ [TAG]]" (see daulat.transfer.engine.pair_id).
_PAIR = re.compile(
    r"^(?P<src>[A-Za-z0-9][A-Za-z0-9._-]*):(?P<sp>.*?) -> "
    r"(?P<dst>[A-Za-z0-9][A-Za-z0-9._-]*):(?P<dp>.*?)(?: \[(?P<tag>[^\]]*)\])?$"
)

# Every object daulat wrote, judged by its latest completed write at each destination key:
# an object re-written in clear after an encrypted copy is plaintext now, whichever run (and
# whichever source) wrote it last.
_CURRENT = """
CREATE TEMP TABLE current AS
SELECT pair, dst, dkey, enc, verified FROM (
    SELECT j.pair AS pair, p.dst AS dst, p.dp || coalesce(j.stored_as, j.key) AS dkey,
           p.enc AS enc, j.verified AS verified,
           row_number() OVER (PARTITION BY p.dst, p.dp || coalesce(j.stored_as, j.key)
                              ORDER BY j.run_id DESC, p.enc) AS rn
    FROM journal j JOIN temp.pairs p ON p.pair = j.pair
    WHERE j.state = 'done')
WHERE rn = 1
"""


def _replicas(config: Config) -> list[ReplicaRow]:
    """One row per source → destination, with what is there now.

    ``encrypted`` holds only when every object daulat last wrote in that copy, and every other
    object daulat last wrote under the destination's prefix (from any source), is age-encrypted.
    """
    path = config.state_dir / JOURNAL_NAME
    if not path.exists():
        return []
    db = connect_readonly(path, JOURNAL_KIND)
    try:
        if not has_tables(db, "journal", "runs"):
            return []  # created, then killed before its tables were
        db.execute("PRAGMA temp_store=FILE")
        db.execute(
            "CREATE TEMP TABLE pairs (pair TEXT PRIMARY KEY, dst TEXT, dp TEXT, enc INTEGER)"
        )
        labels: dict[str, tuple[str, str, str, str]] = {}
        rows: dict[tuple[str, str], dict[str, Any]] = {}

        def rows_for(src: str, dst: str, store: str, dp: str) -> dict[str, Any]:
            return rows.setdefault((src, dst), _empty_row(store, dp))

        for pair, run_id, finished in db.execute(
            # The pairs that wrote something, with their latest run and when they last ended.
            """SELECT r.pair, max(r.id), max(r.finished) FROM runs r
               WHERE EXISTS (SELECT 1 FROM journal j WHERE j.pair = r.pair)
               GROUP BY r.pair"""
        ).fetchall():
            m = _PAIR.match(pair)
            if m is None:
                continue
            db.execute(
                "INSERT INTO temp.pairs VALUES (?, ?, ?, ?)",
                (pair, m["dst"], m["dp"], int((m["tag"] or "").startswith("age:"))),
            )
            src = f"{m['src']}:{m['sp']}".rstrip(":")
            dst = f"{m['dst']}:{m['dp']}".rstrip(":")
            labels[pair] = (src, dst, m["dst"], m["dp"])
            row = rows_for(src, dst, m["dst"], m["dp"])
            row["last_run"] = max(filter(None, [row["last_run"], finished]), default=None)
            if run_id > row["last_run_id"]:
                status, filtered = db.execute(
                    "SELECT status, CASE WHEN json_valid(summary) "
                    "THEN json_extract(summary, '$.filter') IS NOT NULL ELSE 0 END "
                    "FROM runs WHERE id = ?",
                    (run_id,),
                ).fetchone()
                if filtered:  # it covered what its filters selected, not the whole copy
                    status = f"{status} (filtered)"
                row["last_run_id"], row["last_run_status"] = run_id, status
        db.execute(_CURRENT)
        for pair, done, enc, verified, last_verified in db.execute(
            """SELECT pair, count(*), coalesce(sum(enc), 0), count(verified), max(verified)
               FROM temp.current GROUP BY pair"""
        ).fetchall():
            row = rows_for(*labels[pair])
            row["done"] += int(done)
            row["enc"] += int(enc)
            row["verified"] += int(verified)
            row["last_verified"] = max(
                filter(None, [row["last_verified"], last_verified]), default=None
            )
        out = []
        for (src, dst), row in sorted(rows.items()):
            (plain_beside,) = db.execute(
                "SELECT count(*) FROM temp.current WHERE dst = ? AND enc = 0 "
                "AND substr(dkey, 1, length(?)) = ?",
                (row["store"], row["dp"], row["dp"]),
            ).fetchone()
            out.append(
                ReplicaRow(
                    source=src,
                    destination=dst,
                    encrypted=row["done"] > 0 and row["enc"] == row["done"] and not plain_beside,
                    encrypted_objects=row["enc"],
                    objects_done=row["done"],
                    objects_verified=row["verified"],
                    last_verified=row["last_verified"],
                    last_run=row["last_run"],
                    last_run_status=row["last_run_status"],
                )
            )
        return out
    finally:
        db.close()


def _empty_row(store: str, dp: str) -> dict[str, Any]:
    return {
        "store": store,
        "dp": dp,
        "done": 0,
        "enc": 0,
        "verified": 0,
        "last_verified": None,
        "last_run": None,
        "last_run_id": 0,
        "last_run_status": None,
    }


def _audit(config: Config) -> AuditHead:
    log = audit_log(config.state_dir)
    if not log.path.exists():
        return AuditHead(0, None, None, True, "no audited operations yet")
    result = log.verify()
    restarts: list[dict[str, Any]] = []
    with contextlib.suppress(AuditLogError, OSError):  # a damaged log is BROKEN already
        restarts = [
            {
                "seq": e.seq,
                "time": e.time,
                "previous_head_hash": e.details.get("previous_head_hash"),
                "previous_entries": e.details.get("previous_entries"),
                "problem": e.details.get("problem"),
                "reason": e.details.get("reason"),
            }
            for e in log.entries()
            if e.operation == RESTART_OPERATION
        ]
    return AuditHead(
        entries=result.entries,
        head_seq=result.head_seq,
        head_hash=result.head_hash,
        intact=result.ok,
        summary=result.summary(),
        restarts=restarts,
    )


def collect(
    config: Config,
    *,
    policies: Callable[[Config], dict[str, Any] | None] | None = None,
    drills: Callable[[Config], list[dict[str, Any]]] | None = None,
) -> ReportData:
    """Gather the report's data from the config, manifest, journal, register and audit log."""
    stores = _stores(config)
    by_country: dict[str, int] = defaultdict(int)
    by_provider: dict[str, int] = defaultdict(int)
    by_jurisdiction: dict[str, int] = defaultdict(int)
    for s in stores:
        size = s.known_bytes
        by_country[s.country] += size
        by_provider[s.provider_name] += size
        for j in s.jurisdictions:
            by_jurisdiction[j] += size
    notes = []
    if any(s.objects is None and not s.written_objects for s in stores):
        notes.append(
            "Stores never scanned show no object counts: run `daulat scan` for a complete report."
        )
    beyond = [s.name for s in stores if s.written_beyond_scan]
    if beyond:
        notes.append(
            "Sizes and charts count each store by its last scan, or by what daulat wrote there "
            "(per the journal) where that is more: "
            + ", ".join(beyond)
            + (
                " were written after their last scan or never scanned; `daulat scan` them for "
                "what they hold now."
                if len(beyond) > 1
                else " was written after its last scan or never scanned; `daulat scan` it for "
                "what it holds now."
            )
        )
    return ReportData(
        generated=datetime.now(UTC).isoformat(timespec="seconds"),
        daulat_version=__version__,
        config=str(config.path),
        stores=stores,
        by_country=dict(by_country),
        by_provider=dict(by_provider),
        by_jurisdiction=dict(by_jurisdiction),
        replicas=_replicas(config),
        risk=[r.to_json() for r in store_risks(config)],
        audit=_audit(config),
        policies=policies(config) if policies else None,
        drills=drills(config) if drills else [],
        notes=notes,
    )
