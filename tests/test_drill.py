"""The exit drill: stratified sampling, the real copy path to a scratch prefix that is always
removed, the record of drills, history against real exits, and labelled projections.

Most tests use local filesystem stores (real files, fast); one runs SeaweedFS A → SeaweedFS B.
Timings are never asserted: how good the prediction is gets measured in bench/drill.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import random
import socket
import sqlite3
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import begin_audit, fs_store_config, run, s3_store_config
from rich.console import Console
from servers import S3Server

from daulat.config import Config, StoreConfig, load_config
from daulat.drill import (
    DRILLS_NAME,
    MIN_PER_CLASS,
    SIZE_CLASSES,
    DrillFailed,
    DrillLog,
    DrillResult,
    Stratum,
    allocate,
    draw_sample,
    drill_history,
    latest_exit_hours,
    parse_bandwidth,
    parse_sample,
    render_drill,
    render_history,
    run_drill,
    size_class_of,
)
from daulat.drill import measure as drill_measure
from daulat.errors import ConfigError
from daulat.inventory import MANIFEST_NAME, Manifest, scan_store
from daulat.plan.model import WORKER_START_S
from daulat.stores import Store, open_store
from daulat.transfer import Kind, run_transfer

KiB = 1024
MiB = 1024 * KiB


# --------------------------------------------------------------------------------------------
# Helpers


def write_config(directory: Path, stores: list[Mapping[str, Any]]) -> Config:
    """A daulat.toml with one [stores.NAME] table per store dict (credentials inline)."""
    lines = []
    for raw in stores:
        lines.append(f"[stores.{raw['name']}]")
        for key, value in raw.items():
            if key == "name":
                continue
            if isinstance(value, dict):
                inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
                lines.append(f"{key} = {{ {inner} }}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    path = directory / "daulat.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return load_config(path)


def dataset(seed: int = 3) -> dict[str, bytes]:
    """Objects in three size classes: 200 under 64 KiB, 30 of 64 KiB-1 MiB, 3 of 1-2 MiB."""
    rng = random.Random(seed)
    out = {}
    for i in range(200):
        out[f"small/d{i % 5}/s{i:04d}.bin"] = rng.randbytes(rng.randrange(1, 60 * KiB))
    for i in range(30):
        out[f"medium/m{i:03d}.bin"] = rng.randbytes(rng.randrange(70 * KiB, 400 * KiB))
    for i in range(3):
        out[f"large/l{i}.bin"] = rng.randbytes(rng.randrange(MiB + 1, 2 * MiB))
    return out


def put_files(root: Path, objects: Mapping[str, bytes]) -> None:
    for key, data in objects.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def tree(root: Path) -> dict[str, str]:
    """Every regular file under ``root`` (relative path → SHA-256); the empty staging directory
    the filesystem store keeps for uploads is not content."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def scan(config: Config, name: str) -> None:
    begin_audit(config.state_dir)

    async def go() -> None:
        store = open_store(config.store(name))
        try:
            with Manifest.in_state_dir(config.state_dir) as manifest:
                await scan_store(store, manifest)
        finally:
            await store.close()

    run(go())


@pytest.fixture
def local(tmp_path: Path) -> tuple[Config, dict[str, bytes], dict[str, str]]:
    """Stores ``src`` (the data set) and ``dst`` (already holding content of its own), with
    ``src`` scanned. Returns the config, the source objects and the destination's tree."""
    src_root, dst_root = tmp_path / "src", tmp_path / "dst"
    objects = dataset()
    put_files(src_root, objects)
    put_files(
        dst_root,
        {
            "existing/keep.txt": b"keep me",
            "existing/deep/also.bin": os.urandom(5000),
            ".daulat/manifest-20250101T000000Z.jsonl": b'{"key": "x"}\n',
        },
    )
    config = write_config(
        tmp_path, [fs_store_config(src_root, "src"), fs_store_config(dst_root, "dst")]
    )
    scan(config, "src")
    return config, objects, tree(dst_root)


def classes_of(objects: Mapping[str, bytes]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for data in objects.values():
        c = size_class_of(len(data))
        counts[c] = counts.get(c, 0) + 1
    return counts


def drill(config: Config, src: str = "src", dst: str = "dst", **kw: Any) -> DrillResult:
    return run(run_drill(config, src, dst, **kw))


def drill_rows(config: Config) -> list[dict[str, Any]]:
    db = sqlite3.connect(config.state_dir / DRILLS_NAME)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM drills ORDER BY rowid")]
    finally:
        db.close()


# --------------------------------------------------------------------------------------------
# Sampling


def test_size_classes_cover_every_size() -> None:
    assert size_class_of(0) == 0
    assert size_class_of(64 * KiB - 1) == 0
    assert size_class_of(64 * KiB) == 1
    assert size_class_of(MiB) == 2
    assert size_class_of(16 * MiB) == 3
    assert size_class_of(256 * MiB) == 4
    assert size_class_of(5 * 1024 * MiB) == len(SIZE_CLASSES) - 1


def test_default_sample_is_stratified(local: tuple[Config, dict[str, bytes], Any]) -> None:
    config, objects, _ = local
    counts = classes_of(objects)
    for seed in range(5):
        strata = draw_sample(
            config.state_dir / MANIFEST_NAME, "src", "", None, 64, random.Random(seed)
        )
        for s in strata:
            assert s.objects == counts.get(s.index, 0)
            if s.objects:
                # Every class with objects is represented, at least MIN_PER_CLASS or all of it.
                assert s.initial >= min(s.objects, MIN_PER_CLASS)
                assert len(s.sample) >= s.initial
            keys = [o.key for o in s.sample]
            assert len(set(keys)) == len(keys)
            for o in s.sample:
                assert size_class_of(len(objects[o.key])) == s.index
                assert o.size == len(objects[o.key])


def test_daulat_metadata_at_the_source_is_not_sampled(tmp_path: Path) -> None:
    # A store that was the destination of an earlier exit holds daulat's manifest under .daulat/.
    src = tmp_path / "src"
    put_files(src, {"a.bin": b"a" * 100, "b/c.bin": b"c" * 70000})
    put_files(src, {".daulat/manifest-20250101T000000Z.jsonl": b"{}\n"})
    config = write_config(
        tmp_path, [fs_store_config(src, "src"), fs_store_config(tmp_path / "dst", "dst")]
    )
    scan(config, "src")
    strata = draw_sample(config.state_dir / MANIFEST_NAME, "src", "", None, 64, random.Random(1))
    assert sum(s.objects for s in strata) == 2
    assert all(not o.key.startswith(".daulat/") for s in strata for o in s.sample)
    result = drill(config, seed=1)
    assert result.ok, result.problems
    assert result.objects == 2


def test_sample_is_random_and_reproducible(local: tuple[Config, dict[str, bytes], Any]) -> None:
    config, _, _ = local
    path = config.state_dir / MANIFEST_NAME

    def picked(seed: int) -> list[str]:
        strata = draw_sample(path, "src", "", 0.1, 64, random.Random(seed))
        return sorted(o.key for s in strata for o in s.sample)

    assert picked(1) == picked(1)
    assert picked(1) != picked(2)


def test_sample_count_and_percentage(local: tuple[Config, dict[str, bytes], Any]) -> None:
    config, objects, _ = local
    counts = classes_of(objects)
    path = config.state_dir / MANIFEST_NAME
    for n in (3, 10, 25, 100):
        strata = draw_sample(path, "src", "", n, 64, random.Random(n))
        assert sum(s.initial for s in strata) == n
        assert sum(len(s.sample) for s in strata) == n
        assert all(s.initial >= 1 for s in strata if s.objects)
    strata = draw_sample(path, "src", "", 0.05, 64, random.Random(0))
    for s in strata:
        if s.objects:
            assert s.initial == math.ceil(0.05 * counts[s.index])
    # The real path: exactly the requested sample is copied.
    result = drill(config, sample=12, seed=1)
    assert result.sampled_objects == 12
    assert sum(c.sampled_objects for c in result.classes) == 12
    assert {c.label for c in result.classes} == {SIZE_CLASSES[i].label for i in counts}
    result = drill(config, sample=0.1, seed=1)
    by_label = {c.label: c.sampled_objects for c in result.classes}
    for i, n in counts.items():
        assert by_label[SIZE_CLASSES[i].label] == math.ceil(0.1 * n)


def test_sample_smaller_than_the_classes_is_refused() -> None:
    strata = [Stratum(0, 100, 1000), Stratum(1, 10, 10**6), Stratum(2, 2, 10**7)]
    with pytest.raises(ConfigError, match="3 size classes"):
        allocate(strata, 2, 64)
    with pytest.raises(ConfigError):
        allocate(strata, 1.5, 64)
    # Shares of objects and of bytes: the class of few big objects still gets some.
    out = allocate(strata, 20, 64)
    assert sum(out.values()) == 20 and min(out.values()) >= 1
    assert out[2] == 2  # all of a small class, never more


def test_parse_sample_and_bandwidth() -> None:
    assert parse_sample("200") == 200
    assert parse_sample("5%") == pytest.approx(0.05)
    for bad in ("0", "-3", "0%", "150%", "x"):
        with pytest.raises(ConfigError):
            parse_sample(bad)
    assert parse_bandwidth("10G") == 10e9
    assert parse_bandwidth("10Gbit/s") == 10e9
    assert parse_bandwidth("500Mbps") == 500e6
    assert parse_bandwidth("1e9") == 1e9
    for bad in ("fast", "0", "-1G"):
        with pytest.raises(ConfigError):
            parse_bandwidth(bad)


# --------------------------------------------------------------------------------------------
# The drill on local stores


def test_drill_without_scan_is_a_config_error(tmp_path: Path) -> None:
    put_files(tmp_path / "src", {"a.txt": b"a"})
    config = write_config(
        tmp_path,
        [fs_store_config(tmp_path / "src", "src"), fs_store_config(tmp_path / "dst", "dst")],
    )
    with pytest.raises(ConfigError, match=r"daulat scan src"):
        drill(config)
    assert not (tmp_path / "dst").exists() or tree(tmp_path / "dst") == {}


def test_drill_copies_through_a_scratch_prefix_that_is_removed(
    local: tuple[Config, dict[str, bytes], dict[str, str]], tmp_path: Path
) -> None:
    config, objects, before = local
    src_before = tree(tmp_path / "src")
    result = drill(config, seed=7)
    assert result.ok, result.problems
    assert result.scratch_removed
    assert result.scratch.startswith("dst:.daulat/drill-")
    # The destination's own content is exactly as it was; nothing of the drill is left.
    assert tree(tmp_path / "dst") == before
    assert not list((tmp_path / "dst").rglob("drill-*"))
    # The source was only read.
    assert tree(tmp_path / "src") == src_before
    # Every size class with objects was measured and has a prediction.
    assert {c.label for c in result.classes} == {SIZE_CLASSES[i].label for i in classes_of(objects)}
    for c in result.classes:
        assert c.copied_objects == c.sampled_objects >= 1
        assert c.predicted_s > 0 and c.low_s <= c.predicted_s <= c.high_s
    assert result.objects == len(objects)
    assert result.bytes == sum(len(v) for v in objects.values())
    assert 0 < result.low_s <= result.predicted_s <= result.high_s
    assert result.kind == "measurement" and result.projection is None
    assert any("throttling" in a for a in result.assumptions)
    assert "bootstrap" in result.interval_method
    # No temporary journal is left in the state directory.
    assert not list(config.state_dir.glob("drill-*"))


def test_scratch_is_removed_when_the_drill_fails(
    local: tuple[Config, dict[str, bytes], dict[str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, _, before = local
    real_copy = drill_measure._copy_part
    copied = []

    async def copy_then_fail(*args: Any, **kw: Any) -> Any:
        part = await real_copy(*args, **kw)
        copied.append(part)
        # The scratch prefix now holds objects; then something goes wrong.
        assert list((tmp_path / "dst" / ".daulat").rglob("*.bin"))
        raise RuntimeError("boom after copying")

    monkeypatch.setattr(drill_measure, "_copy_part", copy_then_fail)
    with pytest.raises(RuntimeError, match="boom"):
        drill(config, seed=1)
    assert copied
    assert tree(tmp_path / "dst") == before
    (row,) = drill_rows(config)
    assert row["status"] == "failed" and "boom" in row["error"]
    assert row["scratch_removed"] == 1
    assert latest_exit_hours(config, "src") is None


def test_leftover_scratch_of_a_killed_drill_is_removed(
    local: tuple[Config, dict[str, bytes], dict[str, str]], tmp_path: Path
) -> None:
    config, _, before = local
    # A drill killed outright: its row says 'running', its process is gone, its scratch stays.
    dead = subprocess.Popen(["true"])
    dead.wait()
    log = DrillLog(config.state_dir)
    log.db.execute(
        "INSERT INTO drills (id, started, status, src, dst, src_store, src_prefix, dst_store, "
        "scratch, host, pid) VALUES ('old', '2020-01-01T00:00:00+00:00', 'running', 'src', "
        "'dst', 'src', '', 'dst', '.daulat/drill-old/', ?, ?)",
        (socket.gethostname(), dead.pid),
    )
    log.close()
    put_files(tmp_path / "dst", {".daulat/drill-old/c0/x.bin": b"left behind"})
    result = drill(config, sample=5, seed=2)
    assert result.ok, result.problems
    assert tree(tmp_path / "dst") == before
    old = next(r for r in drill_rows(config) if r["id"] == "old")
    assert old["scratch_removed"] == 1


def test_drill_is_recorded_and_gives_latest_exit_hours(
    local: tuple[Config, dict[str, bytes], dict[str, str]], tmp_path: Path
) -> None:
    config, _, _ = local
    assert latest_exit_hours(config, "src") is None
    first = drill(config, sample=20, seed=1)
    second = drill(config, sample=30, seed=2)
    rows = drill_rows(config)
    assert [r["id"] for r in rows] == [first.id, second.id]
    for r, res in zip(rows, (first, second), strict=True):
        assert r["status"] == "complete"
        assert r["src"] == "src" and r["dst"] == "dst"
        assert r["sample_objects"] == res.sampled_objects
        assert r["predicted_s"] == pytest.approx(res.predicted_s)
        assert r["low_s"] <= r["predicted_s"] <= r["high_s"]
        # daulat.policy's default hook reads `src` and `predicted_hours`.
        assert r["predicted_hours"] == pytest.approx(res.predicted_s / 3600)
        model = json.loads(r["model"])
        assert {c["label"] for c in model["classes"]} == {c.label for c in res.classes}
        assert all("per_object_s" in c and "throughput_bps" in c for c in model["classes"])
        assert "bootstrap" in model["interval_method"]
        assert json.loads(r["result"])["id"] == res.id
    assert latest_exit_hours(config, "src") == pytest.approx(second.predicted_s / 3600)
    assert latest_exit_hours(config.state_dir, "src", bound="high") == pytest.approx(
        second.high_s / 3600
    )
    assert latest_exit_hours(config, "dst") is None
    # A drill of part of the store does not stand for the whole store's exit.
    drill(config, "src:small", "dst", sample=5, seed=3)
    assert latest_exit_hours(config, "src") == pytest.approx(second.predicted_s / 3600)


def test_history_pairs_a_drill_with_the_exit_that_followed(
    local: tuple[Config, dict[str, bytes], dict[str, str]], tmp_path: Path
) -> None:
    config, objects, _ = local
    early = drill(config, sample=15, seed=1)
    (row,) = drill_history(config)
    assert row.drill_id == early.id and row.actual_s is None and row.error_pct is None
    summary = run(run_transfer(config, Kind.EXIT, "src", "dst"))
    assert summary.ok
    late = drill(config, "src", "dst", sample=15, seed=2)  # after the exit: nothing to pair yet
    rows = drill_history(config)
    assert [r.drill_id for r in rows] == [early.id, late.id]
    paired, unpaired = rows
    assert paired.exit_run == summary.run_id
    assert paired.actual_s == pytest.approx(summary.duration_s)
    assert paired.actual_objects == len(objects)
    assert paired.comparable
    assert paired.error_pct == pytest.approx(
        (early.predicted_s - summary.duration_s) / summary.duration_s * 100
    )
    assert unpaired.actual_s is None
    out = paired.to_json()
    assert out["predicted_hours"] == pytest.approx(early.predicted_s / 3600)
    assert out["actual_hours"] == pytest.approx(summary.duration_s / 3600)
    assert len(out["interval_hours"]) == 2
    # A later exit that found everything already copied is a resumption: not comparable.
    again = run(run_transfer(config, Kind.EXIT, "src", "dst"))
    assert again.ok and again.copied_objects == 0
    rows = drill_history(config)
    assert rows[1].exit_run == again.run_id
    assert not rows[1].comparable and rows[1].error_pct is None
    assert "resumed" in (rows[1].note or "")


def test_projection_with_more_workers_is_faster_and_labelled(
    local: tuple[Config, dict[str, bytes], dict[str, str]],
) -> None:
    config, _, _ = local
    result = drill(config, sample=40, seed=5, workers=4)
    p = result.projection
    assert p is not None
    assert p.kind == "projection" and result.kind == "measurement"
    assert p.workers == 4 and p.link_bps is None
    # Faster in the copying; the Ray workers' start-up (at most WORKER_START_S, once) is
    # added, which at this sample's size outweighs what four workers save.
    assert p.predicted_s - WORKER_START_S < result.predicted_s
    assert p.low_s <= p.predicted_s <= p.high_s
    assert json.loads(json.dumps(result.to_json()))["projection"]["kind"] == "projection"
    console = Console(record=True, width=200)
    render_drill(result, console)
    text = console.export_text()
    assert "PROJECTION (not measured)" in text and "4 worker(s)" in text
    # A slow link makes the projection slower than what was measured here.
    slow = drill(config, sample=40, seed=5, link_bps=8e6)
    assert slow.projection is not None
    assert slow.projection.predicted_s > slow.predicted_s
    rows = drill_rows(config)
    assert json.loads(rows[-1]["projection"])["kind"] == "projection"
    with pytest.raises(ConfigError):
        drill(config, workers=0)


def test_render_and_json(local: tuple[Config, dict[str, bytes], dict[str, str]]) -> None:
    config, _, _ = local
    result = drill(config, sample=20, seed=1)
    data = json.loads(json.dumps(result.to_json()))
    assert data["ok"] is True
    assert data["predicted_hours"] == pytest.approx(result.predicted_s / 3600)
    assert data["confidence"] == 0.95
    assert len(data["classes"]) == len(result.classes)
    console = Console(record=True, width=200)
    render_drill(result, console)
    text = console.export_text()
    assert "predicted exit time" in text and "assumptions" in text and "removed" in text
    console = Console(record=True, width=250)
    render_history(drill_history(config), console)
    assert result.id in console.export_text()
    console = Console(record=True)
    render_history([], console)
    assert "no drill" in console.export_text()


def test_empty_or_overlapping_sources_are_refused(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    config = write_config(
        tmp_path,
        [fs_store_config(tmp_path / "src", "src"), fs_store_config(tmp_path / "dst", "dst")],
    )
    scan(config, "src")
    with pytest.raises(DrillFailed, match="no objects"):
        drill(config)
    with pytest.raises(ConfigError, match="overlap"):
        drill(config, "src", "src:sub")


# --------------------------------------------------------------------------------------------
# SeaweedFS A → SeaweedFS B


def test_drill_between_two_seaweedfs_servers(
    s3_server: S3Server, s3_server_b: S3Server, tmp_path: Path
) -> None:
    src_raw = s3_store_config(s3_server, "src", "drill-src")
    dst_raw = s3_store_config(s3_server_b, "dst", "drill-dst")
    config = write_config(tmp_path, [src_raw, dst_raw])
    rng = random.Random(9)
    objects = {f"s/{i:03d}": rng.randbytes(rng.randrange(1, 60 * KiB)) for i in range(150)}
    objects |= {f"m/{i:02d}": rng.randbytes(rng.randrange(70 * KiB, 500 * KiB)) for i in range(20)}
    objects |= {f"l/{i}": rng.randbytes(9 * MiB + i) for i in range(2)}  # streamed (multipart)
    existing = {"keep/me.txt": b"the destination's own data", "keep/other.bin": os.urandom(3000)}

    async def fill(store: Store, data: Mapping[str, bytes]) -> None:
        sem = asyncio.Semaphore(16)

        async def one(k: str, v: bytes) -> None:
            async with sem:
                await store.put(k, v)

        await asyncio.gather(*(one(k, v) for k, v in data.items()))

    async def contents(store: Store) -> dict[str, str]:
        out = {}
        async for batch in store.list(""):
            for o in batch:
                data = await (await store.get(o.key)).read_all()
                out[o.key] = hashlib.sha256(data).hexdigest()
        return out

    async def setup() -> dict[str, str]:
        src = open_store(StoreConfig.model_validate(src_raw))
        dst = open_store(StoreConfig.model_validate(dst_raw))
        try:
            await fill(src, objects)
            await fill(dst, existing)
            return await contents(dst)
        finally:
            await src.close()
            await dst.close()

    before = run(setup())
    scan(config, "src")
    result = drill(config, seed=4)
    assert result.ok, result.problems
    assert {c.label for c in result.classes} == {SIZE_CLASSES[i].label for i in classes_of(objects)}
    assert all(c.copied_objects >= 1 for c in result.classes)

    async def after() -> dict[str, str]:
        dst = open_store(StoreConfig.model_validate(dst_raw))
        try:
            return await contents(dst)
        finally:
            await dst.close()

    assert run(after()) == before  # scratch gone, real content untouched
    assert latest_exit_hours(config, "src") == pytest.approx(result.predicted_s / 3600)
    summary = run(run_transfer(config, Kind.EXIT, "src", "dst"))
    assert summary.ok
    (row,) = drill_history(config)
    assert row.exit_run == summary.run_id and row.comparable and row.error_pct is not None
