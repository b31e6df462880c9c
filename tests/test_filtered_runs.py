"""Filters on the commands that read objects: copy, sync, exit, verify, scan and drill.

Excluded objects are invisible to the operation: not copied, never deleted by ``sync --delete``,
not part of an exit's "every object verified" (the summary counts them as excluded), not checked
by verify, not looked at by a filtered scan (which marks nothing removed and leaves the objects
of record as the latest whole scan saw them), not sampled by a drill.
What a filter makes partial is the run, never the bookkeeping of the whole: an unfiltered exit
after a filtered one copies the rest, the destination manifest still describes everything daulat
wrote there, a filtered verification does not stand for a whole one.

Every test runs the ``daulat`` command against the filesystem and the suite's SeaweedFS and then
looks at the stores themselves.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import fs_store_config, run, s3_store_config
from servers import S3Server
from test_transfer import (
    CliResult,
    cli,
    fill_config,
    journal_path,
    manifest_entries,
    read_config,
    unique,
    write_config,
)

from daulat.audit import audit_log
from daulat.config import StoreConfig
from daulat.crypto import new_identity
from daulat.filters import build_filter
from daulat.inventory import Manifest
from daulat.stores import open_store

SOURCE = {
    "photos/2024/a.jpg": b"jpeg a" * 10,
    "photos/2024/b.jpg": b"jpeg b" * 20,
    "photos/raw/c.cr2": b"raw c" * 30,
    "docs/report.pdf": b"pdf" * 40,
    "docs/notes.txt": b"notes" * 5,
    "tmp/cache.tmp": b"cache" * 7,
}
JPG = {k: v for k, v in SOURCE.items() if k.endswith(".jpg")}
NOT_TMP = {k: v for k, v in SOURCE.items() if not k.startswith("tmp/")}


def audit(config: Path) -> list[dict[str, Any]]:
    lines = (config.parent / ".daulat" / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def ok(res: CliResult) -> dict[str, Any]:
    assert res.code == 0, res.explain()
    return res.json


@pytest.fixture
def s3_source(s3_server: S3Server) -> dict[str, Any]:
    raw = s3_store_config(s3_server, "src", unique("flt"))
    fill_config(raw, SOURCE)
    return raw


# --------------------------------------------------------------------------------------------
# copy, exit: excluded objects are not copied, and counted as excluded


def test_copy_with_include_copies_only_what_is_selected(
    s3_source: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SeaweedFS → filesystem; the keys are matched relative to the source prefix."""
    dst = fs_store_config(tmp_path / "dst", "dst")
    config = write_config(tmp_path / "cfg", [s3_source, dst])
    res = cli(["copy", "src", "dst", "--include", "*.jpg", "-c", str(config), "--json"], capsys)
    d = ok(res)
    assert read_config(dst) == JPG
    assert d["source_objects"] == 2 and d["copied_objects"] == 2
    assert d["excluded_objects"] == len(SOURCE) - 2
    assert d["excluded_bytes"] == sum(len(v) for k, v in SOURCE.items() if k not in JPG)
    assert d["filter"] == ["+ *.jpg", "- /**"]

    # Relative to the prefix: an anchored rule means the prefix's root, not the bucket's.
    res = cli(
        ["copy", "src:photos", "dst:p", "--include", "/2024/**", "-c", str(config), "--json"],
        capsys,
    )
    ok(res)
    assert read_config(dst, "p/") == {k.removeprefix("photos/"): v for k, v in JPG.items()}


def test_exit_with_a_filter_then_without(
    s3_source: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A filtered exit verifies what it selects and exits 0, counting the rest as excluded;
    the unfiltered exit after it copies only the rest and then verifies everything. The
    manifest of each run describes everything daulat wrote there."""
    dst = fs_store_config(tmp_path / "dst", "dst")
    config = write_config(tmp_path / "cfg", [s3_source, dst])

    two = ["--exclude", "tmp/", "--exclude", "*.pdf"]
    res = cli(["exit", "src", "dst", *two, "-c", str(config)], capsys)
    assert res.code == 0, res.explain()
    assert "excluded by filters: 2 objects" in res.out
    assert "every object the filters select verified" in res.out
    selected = {k: v for k, v in NOT_TMP.items() if not k.endswith(".pdf")}
    assert read_config(dst) == selected
    assert last_run_status(config, capsys) == "complete (filtered)"

    d = ok(cli(["exit", "src", "dst", "--exclude", "tmp/**", "-c", str(config), "--json"], capsys))
    assert d["ok"] and d["verified_objects"] == d["source_objects"] == len(NOT_TMP)
    assert d["copied_objects"] == 1 and d["skipped_objects"] == len(selected)
    assert d["excluded_objects"] == 1
    at_dst = read_config(dst, skip_manifests=False)
    assert {e["key"] for e in manifest_entries(at_dst)} == set(NOT_TMP)

    # Without a filter: not "complete" from the filtered runs' bookkeeping; the rest is copied.
    d = ok(cli(["exit", "src", "dst", "-c", str(config), "--json"], capsys))
    assert d["copied_objects"] == 1 and d["skipped_objects"] == len(NOT_TMP)
    assert d["verified_objects"] == d["source_objects"] == len(SOURCE)
    assert d["filter"] is None and d["excluded_objects"] == 0
    assert read_config(dst) == SOURCE
    at_dst = read_config(dst, skip_manifests=False)
    assert {e["key"] for e in manifest_entries(at_dst)} == set(SOURCE)
    assert last_run_status(config, capsys) == "complete"

    # The audit log keeps the rules and the excluded counts of the filtered runs only.
    exits = [e["details"] for e in audit(config) if e["operation"] == "exit"]
    assert exits[0]["filter"] == ["- tmp/", "- *.pdf"] and exits[0]["excluded_objects"] == 2
    assert exits[1]["filter"] == ["- tmp/**"]
    assert "filter" not in exits[2]


def last_run_status(config: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """The report's "last run" of the one copy src → dst."""
    out = config.parent / "report.json"
    res = cli(["report", "--format", "json", "-o", str(out), "-c", str(config)], capsys)
    assert res.code == 0, res.explain()
    (replica,) = json.loads(out.read_text())["replicas"]
    status: str = replica["last_run_status"]
    return status


def test_filtered_copy_keeps_the_whole_destination_in_its_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a full exit, a filtered copy of one changed object writes a manifest that still
    lists every object daulat wrote there, not only the filtered one."""
    src = fs_store_config(tmp_path / "src", "src")
    dst = fs_store_config(tmp_path / "dst", "dst")
    fill_config(src, SOURCE)
    config = write_config(tmp_path / "cfg", [src, dst])
    ok(cli(["exit", "src", "dst", "-c", str(config), "--json"], capsys))
    (tmp_path / "src" / "docs" / "notes.txt").write_bytes(b"changed notes")
    d = ok(
        cli(["copy", "src", "dst", "--include", "docs/*.txt", "-c", str(config), "--json"], capsys)
    )
    assert d["copied_objects"] == 1 and d["source_objects"] == 1
    at_dst = read_config(dst, skip_manifests=False)
    entries = {e["key"]: e for e in manifest_entries(at_dst)}
    assert set(entries) == set(SOURCE)
    assert entries["docs/notes.txt"]["size"] == len(b"changed notes")


def test_filter_from_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = fs_store_config(tmp_path / "src", "src")
    dst = fs_store_config(tmp_path / "dst", "dst")
    fill_config(src, SOURCE)
    config = write_config(tmp_path / "cfg", [src, dst])
    rules = tmp_path / "rules.txt"
    rules.write_text("# photos but not raw ones\n- photos/raw/**\n+ photos/**\n- *\n")
    res = cli(
        ["copy", "src", "dst", "--filter-from", str(rules), "-c", str(config), "--json"], capsys
    )
    d = ok(res)
    assert read_config(dst) == JPG
    assert d["filter"] == ["- photos/raw/**", "+ photos/**", "- *"]


@pytest.mark.parametrize("command", ["copy", "sync", "exit", "verify", "scan", "drill"])
def test_every_command_takes_a_filter_file(
    command: str, s3_source: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SeaweedFS → filesystem; the rules select the two JPEGs and are recorded as given."""
    dst = fs_store_config(tmp_path / "dst", "dst")
    config = write_config(tmp_path / "cfg", [s3_source, dst])
    rules = tmp_path / "rules.txt"
    rules.write_text("- photos/raw/**\n+ photos/**\n- *\n")
    flt = ["--filter-from", str(rules), "-c", str(config), "--json"]
    if command == "verify":
        ok(cli(["exit", "src", "dst", "-c", str(config), "--json"], capsys))
    if command == "drill":
        assert cli(["scan", "src", "-c", str(config)], capsys).code == 0
    argv = {
        "copy": ["copy", "src", "dst"],
        "sync": ["sync", "src", "dst", "--delete"],
        "exit": ["exit", "src", "dst"],
        "verify": ["verify", "src", "dst"],
        "scan": ["scan", "src"],
        "drill": ["drill", "src", "dst", "--sample", "100%"],
    }[command]
    res = cli([*argv, *flt], capsys)
    assert res.code == 0, res.explain()
    d = json.loads(res.out)
    if command == "scan":
        (d,) = d
    selected = d["objects"] if command in ("verify", "scan", "drill") else d["source_objects"]
    assert selected == len(JPG) and d["excluded_objects"] == len(SOURCE) - len(JPG)
    assert d["filter"] == ["- photos/raw/**", "+ photos/**", "- *"]
    if command in ("copy", "sync", "exit"):
        assert read_config(dst) == JPG
    (entry,) = [e for e in audit(config) if e["operation"] == argv[0]][-1:]
    assert entry["details"]["filter"] == d["filter"]


# --------------------------------------------------------------------------------------------
# sync --delete: an excluded object at the destination is never deleted


def test_sync_delete_never_deletes_excluded_destination_objects(
    s3_server: S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """filesystem → SeaweedFS prefix; destination keys are matched relative to the
    destination prefix."""
    src = fs_store_config(tmp_path / "src", "src")
    fill_config(src, {"keep/a.txt": b"a", "keep/b.txt": b"b"})
    dst = s3_store_config(s3_server, "dst", unique("fltsync"))
    fill_config(
        dst,
        {
            "mirror/keep/old.txt": b"gone at the source",
            "mirror/logs/1.log": b"log 1",
            "mirror/logs/2.log": b"log 2",
            "mirror/other.bin": b"another application's",
            "outside.txt": b"outside the prefix",
        },
    )
    config = write_config(tmp_path / "cfg", [src, dst])
    base = ["sync", "src", "dst:mirror", "--delete", "--max-delete", "100%", "-c", str(config)]
    sync = [*base, "--exclude", "/logs/**", "--filter", "- *.bin"]

    d = ok(cli([*sync, "--dry-run", "--json"], capsys))
    assert [e["key"] for e in d["would_delete"]] == ["keep/old.txt"]
    d = ok(cli([*sync, "--json"], capsys))
    assert d["deleted_objects"] == 1 and d["deleted"]["keys"] == ["keep/old.txt"]
    kept = {
        "mirror/logs/1.log": b"log 1",
        "mirror/logs/2.log": b"log 2",
        "mirror/other.bin": b"another application's",
        "outside.txt": b"outside the prefix",
    }
    assert read_config(dst) == {"mirror/keep/a.txt": b"a", "mirror/keep/b.txt": b"b", **kept}
    # Again: still nothing excluded is touched.
    d = ok(cli([*sync, "--json"], capsys))
    assert d["deleted_objects"] == 0 and d["skipped_objects"] == 2
    # Without the filters the same sync deletes them: they were kept by the filters alone.
    d = ok(cli([*base, "--json"], capsys))
    assert d["deleted_objects"] == 3
    assert read_config(dst) == {
        "mirror/keep/a.txt": b"a",
        "mirror/keep/b.txt": b"b",
        "outside.txt": b"outside the prefix",
    }


def test_max_delete_share_is_of_the_selected_destination_objects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = fs_store_config(tmp_path / "src", "src")
    dst = fs_store_config(tmp_path / "dst", "dst")
    fill_config(src, {"a/keep.txt": b"k"})
    # Selected at the destination: a/keep.txt, a/x.txt, a/y.txt (2 to delete = 66%); the
    # 7 objects under b/ are excluded (of all 10 it would be 20%).
    fill_config(dst, {"a/keep.txt": b"k", "a/x.txt": b"x", "a/y.txt": b"y"})
    fill_config(dst, {f"b/{i}.txt": b"b" for i in range(7)})
    config = write_config(tmp_path / "cfg", [src, dst])
    sync = ["sync", "src", "dst", "--delete", "--include", "a/**", "-c", str(config)]
    res = cli([*sync, "--max-delete", "50%"], capsys)
    assert res.code == 2, res.explain()
    assert "2 of the 3 objects the filters select" in res.err and "--max-delete 50%" in res.err
    assert len(read_config(dst)) == 10
    d = ok(cli([*sync, "--max-delete", "70%", "--json"], capsys))
    assert d["deleted_objects"] == 2
    assert read_config(dst) == {"a/keep.txt": b"k", **{f"b/{i}.txt": b"b" for i in range(7)}}


def test_a_filter_that_selects_nothing_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """For exit and sync --delete, like an empty source, with a message that blames the
    filters; --allow-empty-source goes on. A copy is not refused."""
    src = fs_store_config(tmp_path / "src", "src")
    dst = fs_store_config(tmp_path / "dst", "dst")
    fill_config(src, SOURCE)
    fill_config(dst, {"photos/x.png": b"png"})
    config = write_config(tmp_path / "cfg", [src, dst])
    typo = ["--include", "*.jpeg", "-c", str(config)]
    for argv in (["exit", "src", "dst"], ["sync", "src", "dst", "--delete"]):
        res = cli([*argv, *typo], capsys)
        assert res.code == 2, res.explain()
        assert "refused" in res.err and "filters excluded every object" in res.err
        assert "+ *.jpeg" in res.err and "--allow-empty-source" in res.err
        assert "Traceback" not in res.err
    assert read_config(dst) == {"photos/x.png": b"png"}
    res = cli(["sync", "src", "dst", "--delete", "--include", "*.png", "-c", str(config)], capsys)
    assert res.code == 2 and "filters excluded every object" in res.err
    assert read_config(dst) == {"photos/x.png": b"png"}
    d = ok(cli(["exit", "src", "dst", *typo, "--allow-empty-source", "--json"], capsys))
    assert d["source_objects"] == 0 and d["excluded_objects"] == len(SOURCE)
    assert ok(cli(["copy", "src", "dst", *typo, "--json"], capsys))["copied_objects"] == 0


def test_sync_delete_with_filters_into_protected_names_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """There the keys are keyed hashes: no filter can judge them, so nothing is deleted.
    Filters without --delete still work (they judge the source's real names)."""
    recipient = new_identity(tmp_path / "id.txt")
    src = fs_store_config(tmp_path / "src", "src")
    vault = fs_store_config(tmp_path / "vault", "vault")
    fill_config(src, SOURCE)
    config = write_config(tmp_path / "cfg", [src, vault])
    enc = ["--encrypt-to", recipient, "--encrypt-names", "-c", str(config)]
    d = ok(cli(["exit", "src", "vault", "--include", "*.jpg", *enc, "--json"], capsys))
    assert d["names_protected"] and d["verified_objects"] == 2
    before = read_config(vault)
    assert len(before) == 2 and not set(before) & set(SOURCE)
    (tmp_path / "src" / "photos" / "2024" / "a.jpg").unlink()
    for extra in (["--include", "*.jpg"], ["--exclude", "docs/**"]):
        res = cli(["sync", "src", "vault", "--delete", *extra, *enc], capsys)
        assert res.code == 2, res.explain()
        assert "refused" in res.err and "names are protected" in res.err
        assert read_config(vault) == before
    res = cli(["sync", "src", "vault", "--delete", "--exclude", "x", "--dry-run", *enc], capsys)
    assert res.code == 2 and "would be refused" in res.err and "would delete" not in res.out
    # A plain sync --delete into it (not writing protected names) is refused as well.
    plain = ["--exclude", "x", "--allow-plaintext", "-c", str(config)]
    res = cli(["sync", "src", "vault", "--delete", *plain], capsys)
    assert res.code == 2 and "names are protected" in res.err
    assert read_config(vault) == before


# --------------------------------------------------------------------------------------------
# verify: only what the filters select


def test_verify_checks_only_selected_objects(
    s3_server: S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = fs_store_config(tmp_path / "src", "src")
    fill_config(src, SOURCE)
    dst = s3_store_config(s3_server, "dst", unique("fltver"))
    config = write_config(tmp_path / "cfg", [src, dst])
    ok(cli(["exit", "src", "dst", "-c", str(config), "--json"], capsys))
    # Damage an excluded object, plant one excluded and one selected object.
    fill_config(
        dst,
        {
            "docs/report.pdf": b"replaced",
            "docs/planted.pdf": b"planted",
            "photos/planted.jpg": b"planted",
        },
    )
    for full in ([], ["--full"]):
        res = cli(
            ["verify", "src", "dst", "--include", "*.jpg", *full, "-c", str(config), "--json"],
            capsys,
        )
        d = res.json
        assert res.code == 1, res.explain()
        assert d["objects"] == d["verified"] == 2
        assert [p["key"] for p in d["problems"]] == ["photos/planted.jpg"]
        assert d["excluded_objects"] == len(SOURCE) - 2 and d["filter"] == ["+ *.jpg", "- /**"]
    only = ["--include", "photos/2024/**", "-c", str(config), "--json"]
    d = ok(cli(["verify", "src", "dst", *only], capsys))
    assert d["ok"] and d["verified"] == 2
    res = cli(["verify", "src", "dst", "-c", str(config), "--json"], capsys)
    assert res.code == 1
    assert {p["key"] for p in res.json["problems"]} == {
        "docs/report.pdf",
        "docs/planted.pdf",
        "photos/planted.jpg",
    }
    res = cli(["verify", "src", "dst", "--include", "*.jpg", "-c", str(config)], capsys)
    assert "excluded by filters: 4 objects" in res.out


def test_a_filtered_verification_is_not_one_of_the_whole_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The policies take an object as verified when its time is not older than the pair's
    latest verification; a filtered one must not make them forget the objects it left out."""
    src = fs_store_config(tmp_path / "src", "src")
    dst = fs_store_config(tmp_path / "dst", "dst")
    fill_config(src, SOURCE)
    config = write_config(tmp_path / "cfg", [src, dst])
    ok(cli(["exit", "src", "dst", "-c", str(config), "--json"], capsys))

    def table(sql: str) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(journal_path(config))
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()

    whole = table("SELECT count(*) FROM verifications")[0][0]
    ok(cli(["verify", "src", "dst", "--include", "*.jpg", "-c", str(config), "--json"], capsys))
    ok(cli(["exit", "src", "dst", "--include", "*.pdf", "-c", str(config), "--json"], capsys))
    assert table("SELECT count(*) FROM verifications")[0][0] == whole
    (latest,) = table("SELECT max(time) FROM verifications")[0]
    unverified = table(f"SELECT key FROM journal WHERE verified IS NULL OR verified < '{latest}'")
    assert unverified == []
    ok(cli(["verify", "src", "dst", "-c", str(config), "--json"], capsys))
    assert table("SELECT count(*) FROM verifications")[0][0] == whole + 1


# --------------------------------------------------------------------------------------------
# scan: only what the filters select, nothing marked removed


def test_filtered_scan_records_only_selected_and_marks_nothing_removed(
    s3_source: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "cfg", [s3_source])
    state = config.parent / ".daulat"
    (first,) = ok_list(
        cli(["scan", "src", "--include", "docs/**", "-c", str(config), "--json"], capsys)
    )
    assert first["status"] == "filtered" and first["objects"] == 2 and first["removed"] == 0
    assert first["excluded_objects"] == len(SOURCE) - 2
    with Manifest.in_state_dir(state) as m:
        # It records what it found, and leaves the objects of record alone (none yet).
        assert {k for k, _, _ in m.changes(first["id"])} == {"docs/report.pdf", "docs/notes.txt"}
        assert list(m.objects("src")) == []
        assert m.last_scan("src") is None  # a filtered scan is not a whole one

    (whole,) = ok_list(cli(["scan", "src", "-c", str(config), "--json"], capsys))
    assert whole["status"] == "complete" and whole["filter"] is None
    # Deleted from the store: one excluded object, one selected; a selected one changes.
    fill_config(s3_source, {"photos/2024/a.jpg": b"changed"})
    delete_from(s3_source, "docs/notes.txt", "tmp/cache.tmp")
    res = cli(["scan", "src", "--exclude", "docs/**", "-c", str(config)], capsys)
    assert res.code == 0, res.err
    assert "-0 removed" in res.out and "~1 changed" in res.out and "scan #3" in res.out
    assert "excluded by filters: 1 object (" in res.out and "marks nothing removed" in res.out
    with Manifest.in_state_dir(state) as m:
        # Every row stays: the excluded object's untouched, and the selected one that is gone
        # too (an unfiltered scan finds removals). SeaweedFS may list the directory its last
        # file left as an empty 'tmp/' marker for a while: not one of the test's objects.
        assert {o.key for o in m.objects("src") if not o.key.endswith("/")} == set(SOURCE)
        # The change is the filtered scan's finding; the objects stay as the whole scan saw them.
        assert ("photos/2024/a.jpg", "changed", len(b"changed")) in list(m.changes(3))
        old = len(SOURCE["photos/2024/a.jpg"])
        assert [o.size for o in m.objects("src", "photos/2024/a.jpg")] == [old]
        latest = m.last_scan("src")
        assert latest is not None and latest.id == whole["id"]
        scan = m.scan(3)
        assert scan is not None and scan.status == "filtered" and scan.filter == ["- docs/**"]
    scans = [e["details"] for e in audit(config) if e["operation"] == "scan"]
    assert scans[0]["filter"] == ["+ docs/**", "- /**"] and scans[0]["excluded_objects"] == 4
    assert "filter" not in scans[1]
    with Manifest.in_state_dir(state) as m:
        markers = {o.key for o in m.objects("src") if o.key.endswith("/")}
    (last,) = ok_list(cli(["scan", "src", "-c", str(config), "--json"], capsys))
    with Manifest.in_state_dir(state) as m:
        gone_markers = markers - {o.key for o in m.objects("src")}
    assert last["removed"] == 2 + len(gone_markers) and last["changed"] == 1


def test_a_filtered_scan_leaves_the_figures_of_the_latest_whole_scan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`daulat stores`, the policies' counts and drills go by the latest whole scan: a filtered
    scan that saw an addition but could not see the removal beside it must not change them."""
    src = fs_store_config(tmp_path / "src", "src")
    fill_config(src, SOURCE)
    config = write_config(tmp_path / "cfg", [src])
    with config.open("a") as f:
        f.write('[[policies]]\nname = "stays home"\nstores = ["src"]\nresidency = ["ID"]\n')
    (whole,) = ok_list(cli(["scan", "src", "-c", str(config), "--json"], capsys))
    total = sum(len(v) for v in SOURCE.values())
    assert (whole["objects"], whole["bytes"]) == (len(SOURCE), total)

    (tmp_path / "src" / "docs" / "notes.txt").unlink()
    (tmp_path / "src" / "photos" / "new.jpg").write_bytes(b"new jpeg")
    (part,) = ok_list(
        cli(["scan", "src", "--include", "*.jpg", "-c", str(config), "--json"], capsys)
    )
    assert part["status"] == "filtered" and part["added"] == 1 and part["removed"] == 0

    def figures() -> tuple[Any, Any, Any, Any]:
        (row,) = ok_list(cli(["stores", "-c", str(config), "--json"], capsys))
        res = cli(["check", "-c", str(config), "--json"], capsys)
        assert res.code in (0, 1), res.explain()
        findings = [f for p in res.json["policies"] for f in p["findings"]]
        (residency,) = [f for f in findings if f["rule"] == "residency"]
        return row["objects"], row["bytes"], row["last_scan"], residency["objects"]

    assert figures() == (len(SOURCE), total, whole["finished"], len(SOURCE))
    with Manifest.in_state_dir(config.parent / ".daulat") as m:
        assert {o.key for o in m.objects("src")} == set(SOURCE)  # as the whole scan saw it

    # The next whole scan reports every change since the last whole one, and the figures move.
    (again,) = ok_list(cli(["scan", "src", "-c", str(config), "--json"], capsys))
    assert (again["added"], again["removed"]) == (1, 1)
    now = total - len(SOURCE["docs/notes.txt"]) + len(b"new jpeg")
    assert figures() == (len(SOURCE), now, again["finished"], len(SOURCE))


def delete_from(raw: dict[str, Any], *keys: str) -> None:
    async def go() -> None:
        store = open_store(StoreConfig.model_validate(raw))
        try:
            for key in keys:
                await store.delete(key)
        finally:
            await store.close()

    run(go())


# --------------------------------------------------------------------------------------------
# drill: samples and predicts only what the filters select


def test_drill_samples_only_selected_objects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = fs_store_config(tmp_path / "src", "src")
    dst = fs_store_config(tmp_path / "dst", "dst")
    objects = {f"keep/{i:03d}.bin": bytes([i]) * (200 + i) for i in range(30)}
    objects |= {f"skip/{i:03d}.bin": bytes([i]) * (300 + i) for i in range(50)}
    fill_config(src, objects)
    config = write_config(tmp_path / "cfg", [src, dst])
    assert cli(["scan", "src", "-c", str(config)], capsys).code == 0
    drill = ["drill", "src", "dst", "--sample", "100%", "--seed", "1", "-c", str(config)]
    d = ok(cli([*drill, "--include", "keep/**", "--json"], capsys))
    assert d["objects"] == 30 and d["sampled_objects"] == 30
    assert d["excluded_objects"] == 50 and d["filter"] == ["+ keep/**", "- /**"]
    # The exit still lists every object: the listing overhead counts all 80.
    o = d["overhead"]
    assert o["predicted_s"] == pytest.approx(
        80 * o["list_s_per_object"] + 30 * o["bookkeeping_s_per_object"] + o["fixed_s"]
    )
    res = cli([*drill, "--include", "none/**"], capsys)
    assert res.code == 1 and "filters excluded every object" in res.err
    drills = [e["details"] for e in audit(config) if e["operation"] == "drill"]
    assert drills[0]["filter"] == ["+ keep/**", "- /**"] and drills[0]["excluded_objects"] == 50
    assert drills[1]["filter"] == ["+ none/**", "- /**"] and drills[1]["outcome"] == "failed"

    # The history pairs a filtered drill only with an exit with the same filters.
    ok(cli(["exit", "src", "dst", "-c", str(config), "--json"], capsys))
    (row,) = ok_list(cli(["drill", "--history", "-c", str(config), "--json"], capsys))
    assert row["exit_run"] is None
    ok(cli(["exit", "src", "dst", "--include", "keep/**", "-c", str(config), "--json"], capsys))
    (row,) = ok_list(cli(["drill", "--history", "-c", str(config), "--json"], capsys))
    assert row["exit_run"] is not None and row["actual_objects"] == 30


def ok_list(res: CliResult) -> list[dict[str, Any]]:
    assert res.code == 0, res.explain()
    data: list[dict[str, Any]] = json.loads(res.out)
    return data


# --------------------------------------------------------------------------------------------
# Bad patterns: one line, exit 2, on every command


@pytest.mark.parametrize(
    "argv",
    [
        ["copy", "src", "dst"],
        ["sync", "src", "dst", "--delete"],
        ["exit", "src", "dst"],
        ["verify", "src", "dst"],
        ["scan", "src"],
        ["drill", "src", "dst"],
    ],
    ids=lambda a: a[0],
)
@pytest.mark.parametrize(
    "bad",
    [
        ["--include", "*.{jpg"],
        ["--exclude", "[z-a]"],
        ["--filter", "* nonsense"],
        ["--filter-from", "MISSING"],
    ],
    ids=["include", "exclude", "filter", "filter-from"],
)
def test_bad_patterns_are_usage_errors_on_every_command(
    argv: list[str], bad: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = fs_store_config(tmp_path / "src", "src")
    dst = fs_store_config(tmp_path / "dst", "dst")
    fill_config(src, SOURCE)
    config = write_config(tmp_path / "cfg", [src, dst])
    bad = [str(tmp_path / "missing.txt") if b == "MISSING" else b for b in bad]
    res = cli([*argv, *bad, "-c", str(config)], capsys)
    assert res.code == 2, res.explain()
    assert "Traceback" not in res.err
    assert len(res.err.strip().splitlines()) == 1, res.err
    assert not (tmp_path / "dst").exists()
    # Nothing ran; the refusal is recorded once, as failed (tests/test_audit_commands.py).
    entries = [e.to_dict() for e in audit_log(config.parent / ".daulat").entries()]
    assert [(e["operation"], e["details"]["outcome"]) for e in entries] == [(argv[0], "failed")]


def test_library_filter_equals_the_cli_filter() -> None:
    """The summary's rules are the filter's own description, in rclone's order."""
    flt = build_filter(include=["*.jpg"], exclude=["tmp/"])
    assert flt.describe() == ["+ *.jpg", "- tmp/", "- /**"]
