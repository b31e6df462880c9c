"""``daulat scan STORE --from-inventory URL``: S3 Inventory (CSV.gz, Parquet) and Azure Blob
Inventory (CSV, Parquet) reports, built here in the formats AWS and Microsoft document, read
into the manifest as a complete scan (against SeaweedFS and Azurite, reports read from a
bucket or container and from local files), planned from, and refused with the file and line
when malformed."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import gzip
import hashlib
import io
import json
import sys
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import azure_store_config, fs_store_config, run, s3_store_config
from servers import AzuriteServer, S3Server

from daulat.cli import run as cli
from daulat.config import Config, StoreConfig, load_config
from daulat.inventory import Manifest
from daulat.stores import ObjectInfo, open_store

# Keys that test the report's encodings: form encoding in S3 CSV ('+' for a space, '%2B'
# for a plus), commas and quotes in CSV fields, newlines, Unicode in both normal forms.
KEYS = [
    "plain/a.txt",
    "a b+c%2F d,e",
    'quote"d, and <xml>&amp;',
    "new\nline\rreturn",
    "emoji/🗳️ ballot 😀",
    unicodedata.normalize("NFC", "norm/café"),
    unicodedata.normalize("NFD", "norm/café"),
    "deep/x/y/z/leaf",
    *(f"bulk/{i:03d}" for i in range(40)),
]
MANIFEST_S3_COLUMNS = (
    "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass"
)
PARQUET_S3_SCHEMA = (
    "message s3.inventory { required binary bucket (UTF8); required binary key (UTF8); "
    "optional binary version_id (UTF8); optional boolean is_latest; optional boolean "
    "is_delete_marker; optional int64 size; optional int64 last_modified_date "
    "(TIMESTAMP_MILLIS); optional binary e_tag (UTF8); }"
)


def write_config(directory: Path, stores: list[Mapping[str, Any]]) -> Config:
    lines: list[str] = []
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


def put_all(raw: Mapping[str, Any], objects: Mapping[str, bytes]) -> list[ObjectInfo]:
    """Put ``objects`` and return what a listing then reports of them."""

    async def go() -> list[ObjectInfo]:
        store = open_store(StoreConfig.model_validate(raw))
        try:
            sem = asyncio.Semaphore(16)

            async def one(k: str, v: bytes) -> None:
                async with sem:
                    await store.put(k, v)

            await asyncio.gather(*(one(k, v) for k, v in objects.items()))
            return [o async for batch in store.list() for o in batch]
        finally:
            await store.close()

    return run(go())


def put_files(raw: Mapping[str, Any], files: Mapping[str, bytes]) -> None:
    async def go() -> None:
        store = open_store(StoreConfig.model_validate(raw))
        try:
            for k, v in files.items():
                await store.put(k, v)
        finally:
            await store.close()

    run(go())


def rows_of(config: Config, store: str) -> list[tuple[str, int, str | None]]:
    with Manifest.in_state_dir(config.state_dir) as m:
        return [(r.key, r.size, r.etag) for r in m.objects(store)]


def last_scan(config: Config, store: str) -> Any:
    with Manifest.in_state_dir(config.state_dir) as m:
        return m.last_scan(store)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# ------------------------------------------------------------------------------ S3 Inventory


def s3_csv(bucket: str, objects: Iterable[ObjectInfo], *, versions: bool = True) -> bytes:
    """A CSV.gz data file as S3 Inventory writes it: no header, every field quoted, keys
    form-encoded; with ``versions`` an old version and a delete marker are listed too."""
    out = io.StringIO()
    for i, o in enumerate(objects):
        key = quote_plus(o.key, safe="/")
        out.write(
            f'"{bucket}","{key}","v{i}","true","false","{o.size}","{_iso(o.modified)}",'
            f'"{o.etag}","STANDARD"\n'
        )
        if versions and i % 7 == 0:
            out.write(
                f'"{bucket}","{key}","old{i}","false","false","1","{_iso(o.modified)}","0","STANDARD"\n'
            )
    if versions:
        out.write(
            f'"{bucket}","gone/deleted","dm","true","true","","2026-01-01T00:00:00.000Z","",""\n'
        )
    return gzip.compress(out.getvalue().encode())


def s3_parquet(bucket: str, objects: Iterable[ObjectInfo]) -> bytes:
    objs = list(objects)
    table = pa.table(
        {
            "bucket": pa.array([bucket] * len(objs), pa.string()),
            "key": pa.array([o.key for o in objs], pa.string()),
            "version_id": pa.array([None] * len(objs), pa.string()),
            "is_latest": pa.array([True] * len(objs), pa.bool_()),
            "is_delete_marker": pa.array([False] * len(objs), pa.bool_()),
            "size": pa.array([o.size for o in objs], pa.int64()),
            "last_modified_date": pa.array(
                [o.modified.astimezone(dt.UTC).replace(tzinfo=None) for o in objs],
                pa.timestamp("ms"),
            ),
            "e_tag": pa.array([o.etag for o in objs], pa.string()),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy")
    return buf.getvalue()


def s3_report(bucket: str, base: str, data: list[bytes], fmt: str = "CSV") -> dict[str, bytes]:
    """The report's files by key: data files under ``base/data/``, the manifest and its
    checksum under ``base/2026-12-04T00-00Z/``."""
    files: dict[str, bytes] = {}
    entries = []
    ext = "csv.gz" if fmt == "CSV" else "parquet"
    for i, body in enumerate(data):
        key = f"{base}/data/part-{i}.{ext}"
        files[key] = body
        entries.append({"key": key, "size": len(body), "MD5checksum": _md5(body)})
    manifest = {
        "sourceBucket": bucket,
        "destinationBucket": "arn:aws:s3:::inventory-destination",
        "version": "2016-11-30",
        "creationTimestamp": "1796428800000",
        "fileFormat": fmt,
        "fileSchema": MANIFEST_S3_COLUMNS if fmt == "CSV" else PARQUET_S3_SCHEMA,
        "files": entries,
    }
    raw = json.dumps(manifest, indent=4).encode()
    files[f"{base}/2026-12-04T00-00Z/manifest.json"] = raw
    files[f"{base}/2026-12-04T00-00Z/manifest.checksum"] = _md5(raw).encode()
    return files


def write_local(root: Path, files: Mapping[str, bytes]) -> None:
    for key, body in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


def test_s3_inventory_csv_from_a_bucket_is_the_listing_and_plans(
    s3_server: S3Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A CSV.gz report of every version, read from the inventory bucket on SeaweedFS: the
    scan it records is the listed scan (nothing added, changed or removed), and `daulat
    plan` extrapolates from it, objects the report adds included."""
    monkeypatch.chdir(tmp_path)
    src = s3_store_config(s3_server, "src", "inv-src")
    inv = s3_store_config(s3_server, "inv", "inv-dest")
    (tmp_path / "dst").mkdir()
    config = write_config(tmp_path, [src, inv, fs_store_config(tmp_path / "dst", "dst")])
    objects = {k: (k * 3).encode()[: 1 + i * 37 % 500] for i, k in enumerate(KEYS)}
    listed = put_all(src, objects)
    assert cli(["scan", "src"]) == 0
    listed_rows = rows_of(config, "src")
    assert len(listed_rows) == len(KEYS)

    half = len(listed) // 2
    report = s3_report(
        "inv-src",
        "reports/inv-src/daily",
        [s3_csv("inv-src", listed[:half]), s3_csv("inv-src", listed[half:])],
    )
    put_files(inv, report)
    url = "s3://inv-dest/reports/inv-src/daily/2026-12-04T00-00Z/manifest.json"
    capsys.readouterr()
    assert cli(["scan", "src", "--from-inventory", url, "--json"]) == 0
    (summary,) = json.loads(capsys.readouterr().out)
    assert summary["objects"] == len(KEYS)
    assert (summary["added"], summary["changed"], summary["removed"]) == (0, 0, 0)
    assert rows_of(config, "src") == listed_rows
    assert last_scan(config, "src").id == summary["id"]

    # The same through STORE:PATH, from a report that leaves one object out: a complete
    # scan, so the object it leaves out is removed.
    report = s3_report("inv-src", "reports/inv-src/daily", [s3_csv("inv-src", listed[1:])])
    put_files(inv, report)
    assert (
        cli(
            [
                "scan",
                "src",
                "--from-inventory",
                "inv:reports/inv-src/daily/2026-12-04T00-00Z/manifest.json",
                "--json",
            ]
        )
        == 0
    )
    (summary,) = json.loads(capsys.readouterr().out)
    assert summary["objects"] == len(KEYS) - 1 and summary["removed"] == 1

    # Planned from a report of more than the bucket holds (the point of an inventory).
    assert cli(["drill", "src", "dst", "--sample", "10", "--seed", "1", "--json"]) == 0
    # The drill, too, takes the source as of the report's date.
    assert json.loads(capsys.readouterr().out)["scanned"] == "2026-12-05T00:00:00+00:00"
    big = [
        ObjectInfo(f"virtual/{i:05d}", 10**9, listed[0].modified, "e", "s3") for i in range(2000)
    ]
    report = s3_report("inv-src", "reports/inv-src/daily", [s3_csv("inv-src", [*listed, *big])])
    put_files(inv, report)
    assert cli(["scan", "src", "--from-inventory", url]) == 0
    capsys.readouterr()
    assert cli(["plan", "src", "dst", "--workers", "4", "--link", "1G", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["census"]["objects"] == len(KEYS) + 2000
    assert plan["census"]["bytes"] == sum(len(v) for v in objects.values()) + 2000 * 10**9

    # The census is as of the report's creationTimestamp, not of when it was read, and
    # every output that shows its date says it came from an inventory report.
    made = "2026-12-05T00:00:00+00:00"
    assert (plan["census"]["date"], plan["census"]["from_inventory"]) == (made, url)
    assert cli(["plan", "src", "dst", "--workers", "4", "--link", "1G"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert f"inventory report {url} of src, made {made}" in said, said
    assert cli(["stores", "--json"]) == 0
    (row,) = [r for r in json.loads(capsys.readouterr().out) if r["name"] == "src"]
    assert (row["last_scan"], row["last_scan_report"]) == (made, url)
    assert cli(["stores"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert f"src: objects and size as of {made}, the date of inventory report {url}" in said
    scan = last_scan(config, "src")
    assert (scan.census_date, scan.report) == (made, url) and scan.finished != made


def test_s3_inventory_parquet_from_local_files(
    s3_server: S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = s3_store_config(s3_server, "src", "inv-parquet", prefix="under")
    config = write_config(tmp_path, [src])
    objects = {k: k.encode() for k in KEYS}
    listed = put_all(src, objects)
    assert cli(["scan", "src", "--config", str(config.path)]) == 0
    listed_rows = rows_of(config, "src")
    # The report is of the whole bucket: keys are the bucket's, outside the prefix too.
    whole = [ObjectInfo(f"under/{o.key}", o.size, o.modified, o.etag, "s3") for o in listed]
    outside = [ObjectInfo("elsewhere/x", 5, listed[0].modified, "e", "s3")]
    write_local(
        tmp_path / "copy",
        s3_report("inv-parquet", "inv", [s3_parquet("inv-parquet", whole + outside)], "Parquet"),
    )
    manifest = tmp_path / "copy" / "inv" / "2026-12-04T00-00Z" / "manifest.json"
    capsys.readouterr()
    assert (
        cli(
            [
                "scan",
                "src",
                "--from-inventory",
                str(manifest),
                "--json",
                "--config",
                str(config.path),
            ]
        )
        == 0
    )
    (summary,) = json.loads(capsys.readouterr().out)
    assert (summary["objects"], summary["added"], summary["changed"], summary["removed"]) == (
        len(KEYS),
        0,
        0,
        0,
    )
    assert rows_of(config, "src") == listed_rows


# ------------------------------------------------------------------------------ Azure


def azure_report(
    container: str,
    objects: Iterable[ObjectInfo],
    fmt: str = "csv",
    *,
    filters: Mapping[str, Any] | None = None,
    extra_rows: int = 0,
) -> tuple[dict[str, bytes], str]:
    """A Blob Inventory report of rule ``Rule_1``: files by blob name, and the manifest's."""
    objs = list(objects)
    fields = [
        "Name",
        "Creation-Time",
        "Last-Modified",
        "Etag",
        "Content-Length",
        "BlobType",
        "Snapshot",
    ]
    rows: list[list[Any]] = []
    for o in objs:
        rows.append(
            [f"{container}/{o.key}", o.modified, o.modified, o.etag, o.size, "BlockBlob", ""]
        )
    if objs:  # a snapshot of the first blob: not an object a listing shows
        o = objs[0]
        rows.append(
            [
                f"{container}/{o.key}",
                o.modified,
                o.modified,
                o.etag,
                o.size,
                "BlockBlob",
                "2026-12-01T00:00:00.0000000Z",
            ]
        )
    base = "2026/12/04/00-00-00/Rule_1"
    files: dict[str, bytes] = {}
    if fmt == "csv":
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(fields)
        for r in rows:
            w.writerow(
                [
                    v.strftime("%Y-%m-%dT%H:%M:%S.%f0Z") if isinstance(v, dt.datetime) else v
                    for v in r
                ]
            )
        body = out.getvalue().encode()
        blob = f"{base}/Rule_1_1000000_0.csv"
    else:
        cols = list(zip(*rows, strict=True))
        table = pa.table(
            {
                "Name": pa.array(cols[0], pa.string()),
                "Creation-Time": pa.array(
                    [v.astimezone(dt.UTC).replace(tzinfo=None) for v in cols[1]], pa.timestamp("ms")
                ),
                "Last-Modified": pa.array(
                    [v.astimezone(dt.UTC).replace(tzinfo=None) for v in cols[2]], pa.timestamp("ms")
                ),
                "Etag": pa.array(cols[3], pa.string()),
                "Content-Length": pa.array(cols[4], pa.int64()),
                "BlobType": pa.array(cols[5], pa.string()),
                "Snapshot": pa.array([v or None for v in cols[6]], pa.string()),
            }
        )
        buf = io.BytesIO()
        pq.write_table(table, buf)
        body = buf.getvalue()
        blob = f"{base}/Rule_1_1000000_0.parquet"
    files[blob] = body
    manifest = {
        "destinationContainer": "inventory",
        "endpoint": "https://account.blob.core.windows.net",
        "files": [{"blob": blob, "size": len(body)}],
        "inventoryCompletionTime": "2026-12-04T00:10:00Z",
        "inventoryStartTime": "2026-12-04T00:00:00Z",
        "ruleDefinition": {
            "filters": dict(filters or {"blobTypes": ["blockBlob", "appendBlob", "pageBlob"]}),
            "format": fmt,
            "objectType": "blob",
            "schedule": "daily",
            "schemaFields": fields,
        },
        "ruleName": "Rule_1",
        "status": "Succeeded",
        "summary": {
            "objectCount": len(rows) + extra_rows,
            "totalObjectSize": sum(r[4] for r in rows),
        },
        "version": "1.0",
    }
    raw = json.dumps(manifest, indent=2).encode()
    files[f"{base}/Rule_1-manifest.json"] = raw
    files[f"{base}/Rule_1-manifest.checksum"] = _md5(raw).encode()
    return files, f"{base}/Rule_1-manifest.json"


def test_azure_blob_inventory_csv_from_a_container_and_parquet_from_files(
    azurite_server: AzuriteServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = azure_store_config(azurite_server, "az", "inv-az-src")
    inv = azure_store_config(azurite_server, "azinv", "inv-az-dest")
    config = write_config(tmp_path, [src, inv])
    keys = [k for k in KEYS if "\r" not in k]  # Azure refuses CR in blob names
    listed = put_all(src, {k: k.encode() * 2 for k in keys})
    cfg = ["--config", str(config.path)]
    assert cli(["scan", "az", *cfg]) == 0
    listed_rows = rows_of(config, "az")
    files, manifest = azure_report("inv-az-src", listed)
    put_files(inv, files)
    capsys.readouterr()
    assert (
        cli(["scan", "az", "--from-inventory", f"az://inv-az-dest/{manifest}", "--json", *cfg]) == 0
    )
    (summary,) = json.loads(capsys.readouterr().out)
    assert (summary["objects"], summary["added"], summary["changed"], summary["removed"]) == (
        len(keys),
        0,
        0,
        0,
    )
    assert rows_of(config, "az") == listed_rows
    # The census is as of the run's inventoryCompletionTime.
    assert summary["census_date"] == summary["report_made"] == "2026-12-04T00:10:00+00:00"
    assert summary["report"] == f"az://inv-az-dest/{manifest}"

    files, manifest = azure_report("inv-az-src", listed, "parquet")
    write_local(tmp_path / "copy", files)
    assert (
        cli(["scan", "az", "--from-inventory", str(tmp_path / "copy" / manifest), "--json", *cfg])
        == 0
    )
    (summary,) = json.loads(capsys.readouterr().out)
    assert (summary["objects"], summary["added"], summary["changed"], summary["removed"]) == (
        len(keys),
        0,
        0,
        0,
    )


# ------------------------------------------------------------------------------ refusals


@pytest.fixture
def local_s3(tmp_path: Path, s3_server: S3Server) -> tuple[Config, list[ObjectInfo]]:
    src = s3_store_config(s3_server, "src", "inv-bad")
    az = {
        "name": "az",
        "url": "az://box",
        "provider": "azure",
        "region": "westeurope",
        "endpoint": "http://127.0.0.1:9/acct",
        "credentials": {"account_name": "acct", "account_key": "a2V5"},
    }
    config = write_config(tmp_path, [src, az])
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    objs = [ObjectInfo(f"k/{i:03d}", i, now, f"etag{i}", "s3") for i in range(10)]
    return config, objs


def _refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") <= 2, err
    return " ".join(err.split())


def test_malformed_reports_name_the_file_and_line(
    local_s3: tuple[Config, list[ObjectInfo]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, objs = local_s3
    cfg = ["--config", str(config.path)]
    assert cli(["scan", "src", *cfg]) == 0  # an empty bucket: one complete scan, id 1
    root = tmp_path / "r"
    manifest = root / "inv" / "2026-12-04T00-00Z" / "manifest.json"
    part = root / "inv" / "data" / "part-0.csv.gz"

    def attempt(data: bytes, *, fix_md5: bool = True) -> str:
        files = s3_report("inv-bad", "inv", [data])
        if not fix_md5:
            files["inv/data/part-0.csv.gz"] = data + b"\0"
            doc = json.loads(files["inv/2026-12-04T00-00Z/manifest.json"])
            doc["files"][0]["size"] = len(data) + 1
            raw = json.dumps(doc).encode()
            files["inv/2026-12-04T00-00Z/manifest.json"] = raw
            files["inv/2026-12-04T00-00Z/manifest.checksum"] = _md5(raw).encode()
        write_local(root, files)
        return _refused(["scan", "src", "--from-inventory", str(manifest), *cfg], capsys)

    good = (
        gzip.decompress(s3_csv("inv-bad", objs, versions=False)).decode().splitlines(keepends=True)
    )
    # A row with a field missing (line 3).
    bad = [*good[:2], good[2].replace(',"STANDARD"', ""), *good[3:]]
    msg = attempt(gzip.compress("".join(bad).encode()))
    assert f"inventory report {part}, line 3:" in msg and "fields" in msg
    # A size that is not a number (line 2).
    bad = [good[0], good[1].replace('"1"', '"1x"'), *good[2:]]
    msg = attempt(gzip.compress("".join(bad).encode()))
    assert f"{part}, line 2:" in msg and "Size '1x'" in msg
    # A key listed twice (line 11 repeats line 4).
    msg = attempt(gzip.compress("".join([*good, good[3]]).encode()))
    assert f"{part}, line 11:" in msg and "second time" in msg
    # Another bucket's row.
    msg = attempt(gzip.compress("".join([*good, good[0].replace("inv-bad", "other")]).encode()))
    assert f"{part}, line 11:" in msg and "'other'" in msg
    # Keys no provider can hold: a stray % (not URL-encoded), 1,025 bytes, a NUL.
    for key, why in (("a/%ZZbad", "not URL-encoded"), ("k" * 1025, "1,025 bytes"),
                     ("a%00b", "NUL")):  # fmt: skip
        fields = next(csv.reader([good[1]]))
        fields[1] = key
        out = io.StringIO()
        csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(fields)
        msg = attempt(gzip.compress("".join([good[0], out.getvalue(), *good[2:]]).encode()))
        assert f"{part}, line 2:" in msg and why in msg, (key[:20], msg)
    # A data file altered after the manifest was written: named, not read.
    msg = attempt(gzip.compress(b"".join(g.encode() for g in good)), fix_md5=False)
    assert f"inventory report {part}:" in msg and "MD5" in msg
    # Not gzip at all, though the manifest vouches for it.
    msg = attempt(b"\x1f\x8bnot really gzip")
    assert str(part) in msg and "decompressed" in msg
    # A manifest that is not JSON: its line.
    manifest.write_text('{\n  "sourceBucket": "inv-bad",\n  "fileFormat": "CSV",\n  oops\n}')
    msg = _refused(["scan", "src", "--from-inventory", str(manifest), *cfg], capsys)
    assert f"inventory report {manifest}, line 4:" in msg
    # A manifest that does not match its checksum.
    write_local(root, s3_report("inv-bad", "inv", [s3_csv("inv-bad", objs)]))
    (manifest.parent / "manifest.checksum").write_text("0" * 32)
    msg = _refused(["scan", "src", "--from-inventory", str(manifest), *cfg], capsys)
    assert "manifest.checksum" in msg
    # A report without a believable date: missing, not a number, made in the future.
    for stamp in (None, "yesterday", "4102444800000"):
        files = s3_report("inv-bad", "inv", [s3_csv("inv-bad", objs)])
        doc = json.loads(files["inv/2026-12-04T00-00Z/manifest.json"])
        if stamp is None:
            del doc["creationTimestamp"]
        else:
            doc["creationTimestamp"] = stamp
        files["inv/2026-12-04T00-00Z/manifest.json"] = json.dumps(doc).encode()
        files.pop("inv/2026-12-04T00-00Z/manifest.checksum", None)
        write_local(root, files)
        (manifest.parent / "manifest.checksum").unlink(missing_ok=True)
        msg = _refused(["scan", "src", "--from-inventory", str(manifest), *cfg], capsys)
        assert "creationTimestamp" in msg or "future" in msg, (stamp, msg)
    # The report of another bucket.
    write_local(root, s3_report("someone-else", "inv", [s3_csv("someone-else", objs)]))
    msg = _refused(["scan", "src", "--from-inventory", str(manifest), *cfg], capsys)
    assert "'someone-else'" in msg and "'inv-bad'" in msg
    # Every failure left the earlier complete scan as the latest, and nothing removed.
    scan = last_scan(config, "src")
    assert scan is not None and scan.id == 1


def _nulled(body: bytes, column: str, row: int) -> bytes:
    """Parquet ``body`` with ``column`` null in row ``row`` (counted from 1)."""
    table = pq.read_table(io.BytesIO(body))
    i = table.schema.get_field_index(column)
    values = table.column(i).to_pylist()
    values[row - 1] = None
    table = table.set_column(i, table.schema.field(i), pa.array(values, table.column(i).type))
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def test_empty_required_fields_are_named_by_row_in_parquet_and_line_in_csv(
    local_s3: tuple[Config, list[ObjectInfo]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A null in a column every row needs is "COLUMN is empty" at its row (Parquet) or line
    (CSV), in the named file: not "Size None is not a size"."""
    config, objs = local_s3
    cfg = ["--config", str(config.path)]
    manifest = tmp_path / "p" / "inv" / "2026-12-04T00-00Z" / "manifest.json"
    part = tmp_path / "p" / "inv" / "data" / "part-0.parquet"
    for column in ("size", "last_modified_date", "key", "bucket"):
        body = _nulled(s3_parquet("inv-bad", objs), column, 2)
        write_local(tmp_path / "p", s3_report("inv-bad", "inv", [body], "Parquet"))
        msg = _refused(["scan", "src", "--from-inventory", str(manifest), *cfg], capsys)
        assert f"inventory report {part}, row 2: {column} is empty" in msg, msg
    good = gzip.decompress(s3_csv("inv-bad", objs, versions=False)).decode().splitlines(True)
    fields = next(csv.reader([good[1]]))
    fields[5] = ""  # Size
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(fields)
    body = gzip.compress("".join([good[0], out.getvalue(), *good[2:]]).encode())
    write_local(tmp_path / "c", s3_report("inv-bad", "inv", [body]))
    msg = _refused(
        [
            "scan",
            "src",
            "--from-inventory",
            str(tmp_path / "c" / manifest.relative_to(tmp_path / "p")),
            *cfg,
        ],
        capsys,
    )
    assert f"{tmp_path / 'c' / 'inv' / 'data' / 'part-0.csv.gz'}, line 2: Size is empty" in msg
    # Azure Parquet: a blob without a Content-Length.
    files, name = azure_report("box", objs, "parquet")
    blob = next(k for k in files if k.endswith(".parquet"))
    files[blob] = _nulled(files[blob], "Content-Length", 3)
    doc = json.loads(files[name])
    doc["files"][0]["size"] = len(files[blob])
    files[name] = json.dumps(doc).encode()
    files[name.replace(".json", ".checksum")] = _md5(files[name]).encode()
    write_local(tmp_path / "az", files)
    msg = _refused(["scan", "az", "--from-inventory", str(tmp_path / "az" / name), *cfg], capsys)
    assert f"{tmp_path / 'az' / blob}, row 3: Content-Length is empty" in msg, msg


def test_azure_reports_that_leave_part_of_the_store_out_are_refused(
    local_s3: tuple[Config, list[ObjectInfo]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, objs = local_s3
    cfg = ["--config", str(config.path)]
    now = objs[0].modified

    def attempt(**kw: Any) -> str:
        files, manifest = azure_report("box", objs, **kw)
        write_local(tmp_path / "az", files)
        return _refused(
            ["scan", "az", "--from-inventory", str(tmp_path / "az" / manifest), *cfg], capsys
        )

    msg = attempt(filters={"blobTypes": ["blockBlob", "appendBlob"], "prefixMatch": ["box/k/0"]})
    assert "covers only prefixes" in msg and "removed" in msg
    msg = attempt(filters={"blobTypes": ["blockBlob", "appendBlob"], "excludePrefix": ["box/k"]})
    assert "leaves out prefix 'box/k'" in msg
    msg = attempt(filters={"blobTypes": ["blockBlob"]})
    assert "appendBlob" in msg
    msg = attempt(extra_rows=5)  # the summary counts rows the files do not hold
    assert "counts 16 objects" in msg and "11 rows" in msg
    # A CSV without Content-Length: the header's line.
    files, manifest = azure_report("box", [ObjectInfo("a", 1, now, "e", "azure")])
    blob = next(k for k in files if k.endswith(".csv"))
    files[blob] = files[blob].replace(b"Content-Length", b"Length")
    doc = json.loads(files[manifest])
    doc["files"][0]["size"] = len(files[blob])
    files[manifest] = json.dumps(doc).encode()
    files[manifest.replace(".json", ".checksum")] = _md5(files[manifest]).encode()
    write_local(tmp_path / "az2", files)
    msg = _refused(
        ["scan", "az", "--from-inventory", str(tmp_path / "az2" / manifest), *cfg], capsys
    )
    assert f"{tmp_path / 'az2' / blob}, line 1:" in msg and "content-length" in msg


def test_azure_reports_without_a_believable_date_are_refused(
    local_s3: tuple[Config, list[ObjectInfo]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """inventoryCompletionTime is the census date: missing, not a date or in the future,
    the report is refused naming the manifest, as an S3 report without creationTimestamp."""
    config, objs = local_s3
    for when in (None, "yesterday", 1796428800, "2100-01-01T00:00:00Z"):
        files, manifest = azure_report("box", objs)
        doc = json.loads(files[manifest])
        if when is None:
            del doc["inventoryCompletionTime"]
        else:
            doc["inventoryCompletionTime"] = when
        files[manifest] = json.dumps(doc).encode()
        files[manifest.replace(".json", ".checksum")] = _md5(files[manifest]).encode()
        path = tmp_path / "az" / manifest
        write_local(tmp_path / "az", files)
        msg = _refused(
            ["scan", "az", "--from-inventory", str(path), "--config", str(config.path)], capsys
        )
        assert f"inventory report {path}:" in msg and "inventoryCompletionTime" in msg, msg
        assert ("future" in msg) == (when == "2100-01-01T00:00:00Z"), msg
    with Manifest.in_state_dir(config.state_dir) as m:
        assert m.last_scan("az") is None


def test_parquet_without_pyarrow_names_the_extra(
    local_s3: tuple[Config, list[ObjectInfo]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, objs = local_s3
    write_local(
        tmp_path / "p", s3_report("inv-bad", "inv", [s3_parquet("inv-bad", objs)], "Parquet")
    )
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    manifest = tmp_path / "p" / "inv" / "2026-12-04T00-00Z" / "manifest.json"
    msg = _refused(
        ["scan", "src", "--from-inventory", str(manifest), "--config", str(config.path)], capsys
    )
    assert "pip install 'daulat[inventory]'" in msg


def test_inventory_needs_one_store_and_a_known_bucket(
    local_s3: tuple[Config, list[ObjectInfo]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = local_s3
    cfg = ["--config", str(config.path)]
    msg = _refused(["scan", "--from-inventory", "x.json", *cfg], capsys)
    assert "exactly one STORE" in msg
    msg = _refused(["scan", "src", "--from-inventory", "s3://nobody/m.json", *cfg], capsys)
    assert "no configured store is in s3://nobody" in msg


def test_an_empty_report_says_what_it_marks_removed(
    local_s3: tuple[Config, list[ObjectInfo]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A report listing nothing is legitimate for an empty bucket, and is also what a report
    of the wrong prefix looks like: the objects it marks removed are said."""
    config, objs = local_s3
    cfg = ["--config", str(config.path)]
    root = tmp_path / "r"
    manifest = root / "inv" / "2026-12-04T00-00Z" / "manifest.json"
    write_local(root, s3_report("inv-bad", "inv", [s3_csv("inv-bad", objs)]))
    assert cli(["scan", "src", "--from-inventory", str(manifest), *cfg]) == 0
    write_local(root, s3_report("inv-bad", "inv", [s3_csv("inv-bad", [])]))
    capsys.readouterr()
    assert cli(["scan", "src", "--from-inventory", str(manifest), *cfg]) == 0
    said = capsys.readouterr().err
    assert "lists no object" in said and "10 object(s)" in said and "removed" in said, said
