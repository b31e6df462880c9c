"""The manifest: change detection across scans, failed scans, and flat memory on big stores.

Everything runs against a real SQLite file in ``tmp_path``; nothing of daulat's is mocked.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daulat.errors import Transient
from daulat.inventory import Manifest, ObjectRow, scan_store
from daulat.stores.base import Capabilities, ObjectInfo

T0 = datetime(2024, 2, 14, 7, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=6)
STORE = "kpu-primary"


def obj(
    key: str, size: int, etag: str | None = None, modified: datetime = T0, scheme: str = "s3"
) -> ObjectInfo:
    return ObjectInfo(key=key, size=size, modified=modified, etag=etag, etag_scheme=scheme)


@pytest.fixture
def manifest(tmp_path: Path) -> Iterator[Manifest]:
    with Manifest(tmp_path / "state" / "manifest.sqlite") as m:
        yield m


def set_sha256(path: Path, store: str, key: str, digest: str) -> None:
    """No public setter exists yet: write the hash the way a future hashing pass would."""
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        cur = db.execute(
            "UPDATE objects SET sha256 = ? WHERE store = ? AND key = ?", (digest, store, key)
        )
        assert cur.rowcount == 1, f"no object {key!r} in {store!r}"
    finally:
        db.close()


def rows(m: Manifest, store: str = STORE) -> dict[str, ObjectRow]:
    return {r.key: r for r in m.objects(store)}


def full_scan(m: Manifest, store: str, *batches: list[ObjectInfo]) -> int:
    scan_id = m.begin_scan(store)
    for batch in batches:
        m.record_batch(scan_id, store, batch)
    m.finish_scan(scan_id, store)
    return scan_id


# --- change detection --------------------------------------------------------------------


def test_two_scans_count_added_changed_removed_and_keep_hashes_of_unchanged(
    manifest: Manifest,
) -> None:
    first = [
        obj("pemilu/aceh/c1.json", 100, '"e-a"'),
        obj("pemilu/aceh/scan.jpg", 2000, '"e-b"'),
        obj("pemilu/bali/c1.json", 300, '"e-c"'),
    ]
    first_more = [obj("rekap/aceh.csv", 40, '"e-d"'), obj("rekap/bali.csv", 50, '"e-e"')]
    s1 = manifest.begin_scan(STORE)
    manifest.record_batch(s1, STORE, first)
    manifest.record_batch(s1, STORE, first_more)
    summary1 = manifest.finish_scan(s1, STORE)
    assert (summary1.status, summary1.objects, summary1.bytes) == ("complete", 5, 2490)
    assert (summary1.added, summary1.changed, summary1.removed) == (5, 0, 0)

    sha_a, sha_b = "a" * 64, "b" * 64
    set_sha256(manifest.path, STORE, "pemilu/aceh/c1.json", sha_a)
    set_sha256(manifest.path, STORE, "pemilu/aceh/scan.jpg", sha_b)

    # Second scan: c1.json unchanged, scan.jpg rewritten (new size and ETag), bali/c1.json
    # unchanged, both recap files gone, one new object. The changed key is in the later batch.
    s2 = manifest.begin_scan(STORE)
    manifest.record_batch(
        s2,
        STORE,
        [obj("pemilu/aceh/c1.json", 100, '"e-a"'), obj("pemilu/bali/c1.json", 300, '"e-c"')],
    )
    manifest.record_batch(
        s2,
        STORE,
        [obj("pemilu/aceh/scan.jpg", 2500, '"e-b2"', T1), obj("pemilu/papua/c1.json", 70, '"e-f"')],
    )
    summary2 = manifest.finish_scan(s2, STORE)

    assert (summary2.added, summary2.changed, summary2.removed) == (1, 1, 2)
    assert (summary2.status, summary2.objects, summary2.bytes) == ("complete", 4, 2970)
    assert list(manifest.changes(s2)) == [
        ("pemilu/aceh/scan.jpg", "changed", 2500),
        ("pemilu/papua/c1.json", "added", 70),
        ("rekap/aceh.csv", "removed", 40),
        ("rekap/bali.csv", "removed", 50),
    ]
    now = rows(manifest)
    assert sorted(now) == [
        "pemilu/aceh/c1.json",
        "pemilu/aceh/scan.jpg",
        "pemilu/bali/c1.json",
        "pemilu/papua/c1.json",
    ]
    assert now["pemilu/aceh/c1.json"].sha256 == sha_a, "hash of an unchanged object was lost"
    assert now["pemilu/aceh/scan.jpg"].sha256 is None, "a changed object kept its old hash"
    assert now["pemilu/aceh/scan.jpg"].size == 2500
    assert now["pemilu/aceh/scan.jpg"].etag == '"e-b2"'
    assert now["pemilu/papua/c1.json"].sha256 is None
    assert manifest.totals(STORE) == (4, 2970)
    last = manifest.last_scan(STORE)
    assert last is not None and last.id == s2


def test_unchanged_rescan_records_no_changes(manifest: Manifest) -> None:
    batch = [obj(f"k/{i:03d}", i + 1, f'"{i}"') for i in range(50)]
    full_scan(manifest, STORE, batch[:20], batch[20:])
    set_sha256(manifest.path, STORE, "k/007", "7" * 64)
    s2 = full_scan(manifest, STORE, batch[25:], batch[:25])
    summary = manifest.scan(s2)
    assert summary is not None
    assert (summary.added, summary.changed, summary.removed, summary.objects) == (0, 0, 0, 50)
    assert list(manifest.changes(s2)) == []
    assert rows(manifest)["k/007"].sha256 == "7" * 64


@pytest.mark.parametrize(
    ("before", "after", "changed"),
    [
        (obj("x", 10, '"1"'), obj("x", 10, '"2"'), True),  # same size, new ETag
        (obj("x", 10, '"1"'), obj("x", 11, '"1"'), True),  # new size, same ETag
        (obj("x", 10, None, T0), obj("x", 10, None, T1), True),  # no ETag: modified time decides
        (obj("x", 10, None, T0), obj("x", 10, None, T0), False),
        (obj("x", 10, '"1"'), obj("x", 10, None), True),  # ETag disappeared
    ],
)
def test_what_counts_as_a_change(
    manifest: Manifest, before: ObjectInfo, after: ObjectInfo, changed: bool
) -> None:
    full_scan(manifest, STORE, [before])
    set_sha256(manifest.path, STORE, "x", "f" * 64)
    s2 = full_scan(manifest, STORE, [after])
    summary = manifest.scan(s2)
    assert summary is not None
    assert (summary.added, summary.changed, summary.removed) == (0, int(changed), 0)
    row = rows(manifest)["x"]
    assert (row.size, row.etag) == (after.size, after.etag)
    if changed:
        assert row.sha256 is None
    else:
        assert row.sha256 == "f" * 64


def test_stores_are_independent(manifest: Manifest) -> None:
    full_scan(manifest, "a", [obj("shared", 1, '"a"'), obj("only-a", 2, '"a2"')])
    full_scan(manifest, "b", [obj("shared", 5, '"b"')])
    # A later scan of "a" must not mark "b"'s objects removed (scan ids are global).
    s3 = full_scan(manifest, "a", [obj("shared", 1, '"a"')])
    summary = manifest.scan(s3)
    assert summary is not None
    assert (summary.added, summary.changed, summary.removed) == (0, 0, 1)
    assert list(manifest.changes(s3)) == [("only-a", "removed", 2)]
    assert manifest.totals("b") == (1, 5)
    assert rows(manifest, "b")["shared"].etag == '"b"'


def test_checksums_are_kept_and_prefix_listing(manifest: Manifest) -> None:
    info = ObjectInfo("a/b/c.bin", 9, T0, '"x"', "s3", {"crc32c": "AAAA"})
    full_scan(manifest, STORE, [info, obj("a/bc", 1), obj("ab", 1), obj("b", 1)])
    assert rows(manifest)["a/b/c.bin"].checksums == {"crc32c": "AAAA"}
    assert [r.key for r in manifest.objects(STORE, "a/")] == ["a/b/c.bin", "a/bc"]
    assert [r.key for r in manifest.objects(STORE, "a")] == ["a/b/c.bin", "a/bc", "ab"]


def test_manifest_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    with Manifest(path) as m:
        full_scan(m, STORE, [obj("k", 3, '"1"')])
    with Manifest(path) as m:
        s2 = full_scan(m, STORE, [obj("k", 3, '"1"'), obj("n", 4, '"2"')])
        assert list(m.changes(s2)) == [("n", "added", 4)]
        assert m.totals(STORE) == (2, 7)


# --- failed scans ------------------------------------------------------------------------


def test_failed_scan_marks_nothing_removed(manifest: Manifest) -> None:
    everything = [obj(f"f/{i}", 10, f'"{i}"') for i in range(10)]
    s1 = full_scan(manifest, STORE, everything)
    set_sha256(manifest.path, STORE, "f/9", "9" * 64)

    s2 = manifest.begin_scan(STORE)
    manifest.record_batch(s2, STORE, everything[:3])
    manifest.fail_scan(s2, "connection reset")

    failed = manifest.scan(s2)
    assert failed is not None and failed.status == "failed"
    assert [c for c in manifest.changes(s2) if c[1] == "removed"] == []
    assert manifest.totals(STORE) == (10, 100)
    assert rows(manifest)["f/9"].sha256 == "9" * 64
    last = manifest.last_scan(STORE)
    assert last is not None and last.id == s1, "a failed scan became the latest complete scan"

    # The next complete scan does see what really disappeared.
    s3 = full_scan(manifest, STORE, everything[:8])
    summary = manifest.scan(s3)
    assert summary is not None
    assert (summary.added, summary.changed, summary.removed) == (0, 0, 2)
    assert manifest.totals(STORE) == (8, 80)


class FlakyStore:
    """A store whose listing yields one batch and then fails, as a network drop would."""

    def __init__(self, name: str, first: list[ObjectInfo], error: BaseException) -> None:
        self._name = name
        self._first = first
        self._error = error

    @property
    def name(self) -> str:
        return self._name

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    async def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        yield self._first
        raise self._error

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (Transient("store 'kpu-primary': list failed (HTTP 503)"), "HTTP 503"),
        (asyncio.CancelledError(), "interrupted"),
    ],
)
def test_scan_store_failing_midway_marks_scan_failed_and_removes_nothing(
    manifest: Manifest, error: BaseException, reason: str
) -> None:
    everything = [obj(f"f/{i}", 10, f'"{i}"') for i in range(10)]
    s1 = full_scan(manifest, STORE, everything)
    store = FlakyStore(STORE, [*everything[:2], obj("f/new", 5, '"n"')], error)

    with pytest.raises(type(error)):
        asyncio.run(scan_store(store, manifest))  # type: ignore[arg-type]

    row = manifest._db.execute(
        "SELECT id, status, error FROM scans WHERE store = ? ORDER BY id DESC LIMIT 1", (STORE,)
    ).fetchone()
    assert row[0] != s1
    assert row[1] == "failed"
    assert reason in row[2]
    assert [c for c in manifest.changes(row[0]) if c[1] == "removed"] == []
    assert {f"f/{i}" for i in range(10)} <= set(rows(manifest))
    last = manifest.last_scan(STORE)
    assert last is not None and last.id == s1


# --- memory ------------------------------------------------------------------------------

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    from datetime import UTC, datetime
    from pathlib import Path

    from daulat.inventory import Manifest
    from daulat.stores.base import ObjectInfo

    def peak_kib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    T = datetime(2024, 2, 14, tzinfo=UTC)
    out = {}
    with Manifest(Path(sys.argv[1])) as m:
        for round_ in ("first", "rescan"):
            scan_id = m.begin_scan("big")
            for b in range(200):
                batch = [
                    ObjectInfo(f"pemilu/{b:04d}/tps-{i:04d}.json", 1000 + i, T, f'"{b}-{i}"', "s3")
                    for i in range(1000)
                ]
                m.record_batch(scan_id, "big", batch)
                del batch
                if round_ == "first" and b == 9:
                    out["early_kib"] = peak_kib()
            s = m.finish_scan(scan_id, "big")
            out[round_] = [s.objects, s.bytes, s.added, s.changed, s.removed]
        out["totals"] = list(m.totals("big"))
    out["peak_kib"] = peak_kib()
    print(json.dumps(out))
    """
)


@pytest.mark.timeout(660)
def test_memory_stays_flat_for_200k_objects(tmp_path: Path) -> None:
    script = tmp_path / "stream.py"
    script.write_text(_MEMORY_SCRIPT, encoding="utf-8")
    # Linux carries ru_maxrss across fork+exec: a child started straight from this (large)
    # pytest process would report pytest's peak. A small launcher in between resets it.
    launcher = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"
    proc = subprocess.run(
        [sys.executable, "-c", launcher, sys.executable, str(script), str(tmp_path / "big.sqlite")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    expected_bytes = 200 * sum(1000 + i for i in range(1000))
    assert result["first"] == [200_000, expected_bytes, 200_000, 0, 0]
    assert result["rescan"] == [200_000, expected_bytes, 0, 0, 0]
    assert result["totals"] == [200_000, expected_bytes]
    peak_mib = result["peak_kib"] / 1024
    growth_mib = (result["peak_kib"] - result["early_kib"]) / 1024
    assert peak_mib < 120, f"peak RSS {peak_mib:.0f} MiB"
    # Flat: after the first 10,000 rows, 390,000 more rows must not grow the process much.
    assert growth_mib < 32, f"RSS grew {growth_mib:.0f} MiB while streaming"
