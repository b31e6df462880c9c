"""Everything the transparency report shows, gathered from daulat's state as plain data.

The same data is rendered as HTML or printed as JSON (``daulat report --format json``), so a
published report can be checked by machines as well as read by people.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from daulat import __version__
from daulat.auditing import audit_log
from daulat.config import Config, placement_of
from daulat.manifest import MANIFEST_NAME, Manifest
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


@dataclass
class ReplicaRow:
    source: str
    destination: str
    encrypted: bool
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
        return asdict(self)


def _stores(config: Config) -> list[StoreRow]:
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
                    last_scan=scan.finished if scan else None,
                )
            )
    finally:
        if manifest is not None:
            manifest.close()
    return rows


def _replicas(config: Config) -> list[ReplicaRow]:
    path = config.state_dir / JOURNAL_NAME
    if not path.exists():
        return []
    db = connect_readonly(path, JOURNAL_KIND)
    try:
        if not has_tables(db, "journal", "runs"):
            return []  # created, then killed before its tables were
        rows = db.execute(
            """SELECT j.pair,
                      sum(j.state = 'done'),
                      sum(j.state = 'done' AND j.verified IS NOT NULL),
                      max(j.verified),
                      (SELECT max(r.finished) FROM runs r WHERE r.pair = j.pair),
                      (SELECT r.status FROM runs r WHERE r.pair = j.pair
                       ORDER BY r.id DESC LIMIT 1)
               FROM journal j GROUP BY j.pair ORDER BY j.pair"""
        ).fetchall()
    finally:
        db.close()
    out = []
    for pair, done, verified, last_verified, last_run, status in rows:
        left, _, right = pair.partition(" -> ")
        encrypted = "[age:" in right
        right = right.split(" [", 1)[0]
        out.append(
            ReplicaRow(
                source=left.rstrip(":"),
                destination=right.rstrip(":"),
                encrypted=encrypted,
                objects_done=int(done or 0),
                objects_verified=int(verified or 0),
                last_verified=last_verified,
                last_run=last_run,
                last_run_status=status,
            )
        )
    return out


def _audit(config: Config) -> AuditHead:
    log = audit_log(config.state_dir)
    if not log.path.exists():
        return AuditHead(0, None, None, True, "no audited operations yet")
    result = log.verify()
    return AuditHead(
        entries=result.entries,
        head_seq=result.head_seq,
        head_hash=result.head_hash,
        intact=result.ok,
        summary=result.summary(),
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
        size = s.bytes or 0
        by_country[s.country] += size
        by_provider[s.provider_name] += size
        for j in s.jurisdictions:
            by_jurisdiction[j] += size
    notes = []
    if any(s.objects is None for s in stores):
        notes.append(
            "Stores never scanned show no object counts: run `daulat scan` for a complete report."
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
