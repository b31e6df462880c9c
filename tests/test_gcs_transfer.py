"""exit, copy and verify with Google Cloud Storage at either end (fake-gcs-server, real): between
two buckets, from GCS to SeaweedFS and from SeaweedFS to GCS.

The data set is test_transfer's: odd keys, a zero-length object, 300 small objects and two of
20 MiB (resumable uploads of several chunks at a GCS destination).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import gcs_store_config, run, s3_store_config
from servers import GcsServer, S3Server
from test_transfer import (
    MIX,
    assert_exact_copy,
    assert_manifest,
    cli,
    fill_config,
    read_config,
    sha,
    unique,
    write_config,
)

from daulat.config import StoreConfig
from daulat.stores import open_store


@pytest.fixture(scope="module")
def src_gcs(gcs_server: GcsServer) -> dict[str, Any]:
    raw = gcs_store_config(gcs_server, "srcgcs", unique("mix"))
    fill_config(raw, MIX.objects)
    return raw


@pytest.fixture(scope="module")
def src_seaweed(s3_server: S3Server) -> dict[str, Any]:
    raw = s3_store_config(s3_server, "srcs3", unique("mix"))
    fill_config(raw, MIX.objects)
    return raw


def _dst(kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if kind == "gcs":
        return gcs_store_config(request.getfixturevalue("gcs_server"), "dstgcs", unique("dst"))
    assert kind == "s3"
    return s3_store_config(request.getfixturevalue("s3_server_b"), "dsts3", unique("dst"))


@pytest.mark.parametrize(
    ("src_kind", "dst_kind"),
    [
        ("src_gcs", "gcs"),  # one fake-gcs-server, two buckets
        ("src_gcs", "s3"),  # GCS → SeaweedFS
        ("src_seaweed", "gcs"),  # SeaweedFS → GCS
    ],
)
def test_exit_and_verify_with_gcs(
    src_kind: str,
    dst_kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A full exit arrives byte for byte with its manifest and hash metadata, verifies (cheap
    and full), a second run copies nothing, and an object rewritten behind daulat's back is
    named by the next verify."""
    src_raw: dict[str, Any] = request.getfixturevalue(src_kind)
    dst_raw = _dst(dst_kind, request)
    config = write_config(tmp_path, [src_raw, dst_raw])
    src, dst = src_raw["name"], dst_raw["name"]
    total = len(MIX.objects)

    first = cli(["exit", src, dst, "--config", str(config), "--json"], capsys)
    assert first.code == 0, first.explain()
    data = first.json
    assert data["ok"] is True and data["source_objects"] == total
    assert data["copied_objects"] == total and data["copied_bytes"] == MIX.total_bytes
    assert data["verified_objects"] == total and data["failed"] == []
    assert data["refused"] == [] and data["left_objects"] == 0

    at_dst = read_config(dst_raw, skip_manifests=False)
    assert_exact_copy(
        MIX.objects, {k: v for k, v in at_dst.items() if not k.startswith(".daulat/")}
    )
    assert_manifest(MIX, at_dst)

    async def metadata() -> None:
        store = open_store(StoreConfig.model_validate(dst_raw))
        try:
            for key in ("small/obj-0000.bin", "odd/with space.txt"):
                reader = await store.get(key, start=0, end=0)
                assert reader.metadata.get("sha256") == sha(MIX.objects[key]), key
            # A streamed object's hash is known only at its end: it carries daulat's proof.
            reader = await store.get("big/large-0.bin", start=0, end=0)
            assert reader.metadata.get("proof"), reader.metadata
        finally:
            await store.close()

    run(metadata())

    again = cli(["exit", src, dst, "--config", str(config), "--json"], capsys)
    assert again.code == 0, again.explain()
    assert again.json["copied_objects"] == 0 and again.json["skipped_objects"] == total

    for extra in ([], ["--full"]):
        checked = cli(["verify", src, dst, "--config", str(config), "--json", *extra], capsys)
        assert checked.code == 0, checked.out + checked.err

    # Another writer replaces one copy: the destination's tag changes, and verify says so.
    victim = "small/obj-0000.bin"

    async def tamper() -> None:
        store = open_store(StoreConfig.model_validate(dst_raw))
        try:
            await store.put(victim, b"planted by someone else")
        finally:
            await store.close()

    run(tamper())
    damaged = cli(["verify", src, dst, "--config", str(config), "--json"], capsys)
    assert damaged.code == 1, damaged.out + damaged.err
    assert victim in damaged.out and "Traceback" not in damaged.err


def test_copy_between_gcs_prefixes(
    src_gcs: dict[str, Any],
    gcs_server: GcsServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`copy SRC:small/ DST:backup/` between two buckets copies exactly that prefix, under the
    new one, and verifies; the objects sit under their exact names at the emulator."""
    dst_raw = gcs_store_config(gcs_server, "dstgcs", unique("copy"))
    config = write_config(tmp_path, [src_gcs, dst_raw])
    wanted = MIX.under("small/")
    res = cli(
        ["copy", "srcgcs:small/", "dstgcs:backup/", "--config", str(config), "--json"], capsys
    )
    assert res.code == 0, res.explain()
    assert res.json["ok"] is True and res.json["copied_objects"] == len(wanted)
    found = read_config(dst_raw, "backup/")
    assert_exact_copy({k.removeprefix("small/"): v for k, v in wanted.items()}, found)
    names = set(gcs_server.objects(dst_raw["url"].removeprefix("gs://")))
    assert {f"backup/{k.removeprefix('small/')}" for k in wanted} <= names
    res = cli(["verify", "srcgcs:small/", "dstgcs:backup/", "--config", str(config)], capsys)
    assert res.code == 0, res.out + res.err


def test_scan_records_googles_hashes_in_the_manifest(
    src_gcs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`daulat scan` of a GCS store keeps each object's ETag (scheme gcs) and Google's CRC32C
    and MD5 with their labels in the manifest."""
    import hashlib

    import google_crc32c

    from daulat.inventory import Manifest

    config = write_config(tmp_path, [src_gcs])
    res = cli(["scan", "srcgcs", "--config", str(config), "--json"], capsys)
    assert res.code == 0, res.out + res.err
    with Manifest.in_state_dir(tmp_path / ".daulat") as manifest:
        rows = {row.key: row for row in manifest.objects("srcgcs")}
    assert set(rows) == set(MIX.objects)
    for key in ("small/obj-0000.bin", "big/large-1.bin", "empty/zero-length.bin"):
        body = MIX.objects[key]
        assert rows[key].etag_scheme == "gcs" and rows[key].etag
        assert rows[key].checksums == {
            "crc32c": f"{google_crc32c.value(body):08x}",
            "md5": hashlib.md5(body).hexdigest(),
        }


def test_stores_shows_gcs_with_country_and_law(
    gcs_server: GcsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`daulat stores` lists GCS stores as Google Cloud's, with the region's country from the
    catalogue and the US laws that follow the company; both answer."""
    jakarta = gcs_store_config(gcs_server, "gcs-jakarta", unique("st"))
    frankfurt = {
        **gcs_store_config(gcs_server, "gcs-frankfurt", unique("st")),
        "region": "EUROPE-WEST3",
    }
    config = write_config(tmp_path, [jakarta, frankfurt])
    res = cli(["stores", "--config", str(config), "--json"], capsys)
    assert res.code == 0, res.out + res.err
    rows = {r["name"]: r for r in json.loads(res.out)}
    assert rows["gcs-jakarta"]["provider"] == "gcp"
    assert rows["gcs-jakarta"]["provider_name"] == "Google Cloud"
    assert rows["gcs-jakarta"]["country"] == "ID"
    assert rows["gcs-jakarta"]["jurisdictions"] == ["ID", "US"]
    assert rows["gcs-frankfurt"]["country"] == "DE"
    assert all(r["reachable"] for r in rows.values())
    human = cli(["stores", "--config", str(config)], capsys)
    assert human.code == 0 and "Google Cloud" in human.out
