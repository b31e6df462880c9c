"""ListMultipartUploads and ListParts through ``daulat serve``: boto3 and the AWS CLI against
a real gateway (directory replicas), and the paging of the uploads in progress."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from conftest import fs_store_config
from test_gateway import client, gateway
from test_gateway_clients import _aws_env, _rclone_env, _run, _tool
from test_gateway_writes import _config

from daulat.gateway.s3xml import InProgress
from daulat.gateway.spool import _UPLOAD_ID, new_upload_id
from daulat.gateway.uploadlist import page

pytestmark = pytest.mark.timeout(300)


def test_uploads_in_progress_listed_with_boto3_and_the_aws_cli(tmp_path: Path) -> None:
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep", "ro")]
    config = _config(
        tmp_path,
        stores,
        {
            "pemilu": 'replicas = ["prim", "rep"]\nwritable = true',
            "arsip": 'replicas = ["ro"]',
        },
    )
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        assert s3.list_multipart_uploads(Bucket="pemilu").get("Uploads", []) == []
        keys = ["c1/a.bin", "c1/b.bin", "c2/x.bin", "top.bin", "top.bin", "sp ace+%.bin"]
        ids = [s3.create_multipart_upload(Bucket="pemilu", Key=k)["UploadId"] for k in keys]
        s3.upload_part(
            Bucket="pemilu", Key="c1/a.bin", UploadId=ids[0], PartNumber=1, Body=b"x" * 10
        )
        got = s3.list_multipart_uploads(Bucket="pemilu")
        listed = [(u["Key"], u["UploadId"]) for u in got["Uploads"]]
        # By key, then by when each began: the two uploads of top.bin in the order made.
        assert listed == sorted(zip(keys, ids, strict=True), key=lambda p: p[0])
        assert listed[-2:] == [("top.bin", ids[3]), ("top.bin", ids[4])]
        assert all(isinstance(u["Initiated"], dt.datetime) for u in got["Uploads"])
        assert got["IsTruncated"] is False
        # Prefix and delimiter: common prefixes, each one entry.
        got = s3.list_multipart_uploads(Bucket="pemilu", Delimiter="/")
        assert [p["Prefix"] for p in got["CommonPrefixes"]] == ["c1/", "c2/"]
        assert sorted(u["Key"] for u in got["Uploads"]) == ["sp ace+%.bin", "top.bin", "top.bin"]
        got = s3.list_multipart_uploads(Bucket="pemilu", Prefix="c1/")
        assert [u["Key"] for u in got["Uploads"]] == ["c1/a.bin", "c1/b.bin"]
        # Pages of two, by markers: every upload once, across the two of one key too.
        seen: list[tuple[str, str]] = []
        markers: dict[str, str] = {}
        for _ in range(10):
            got = s3.list_multipart_uploads(Bucket="pemilu", MaxUploads=2, **markers)
            seen += [(u["Key"], u["UploadId"]) for u in got.get("Uploads", [])]
            if not got["IsTruncated"]:
                break
            markers = {
                "KeyMarker": got["NextKeyMarker"],
                "UploadIdMarker": got["NextUploadIdMarker"],
            }
        assert sorted(seen) == sorted(zip(keys, ids, strict=True)) and len(seen) == len(keys)
        # boto3's paginator does the same with the delimiter.
        pages = s3.get_paginator("list_multipart_uploads").paginate(
            Bucket="pemilu", Delimiter="/", PaginationConfig={"PageSize": 1}
        )
        flat = [p["Prefix"] for pg in pages for p in pg.get("CommonPrefixes", [])]
        assert flat == ["c1/", "c2/"]
        # ListParts of one of them, in pages by part-number-marker.
        for n in (2, 3):
            s3.upload_part(
                Bucket="pemilu", Key="c1/a.bin", UploadId=ids[0], PartNumber=n, Body=b"y" * n
            )
        parts = s3.list_parts(Bucket="pemilu", Key="c1/a.bin", UploadId=ids[0])["Parts"]
        assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, 10), (2, 2), (3, 3)]
        first = s3.list_parts(Bucket="pemilu", Key="c1/a.bin", UploadId=ids[0], MaxParts=2)
        assert [p["PartNumber"] for p in first["Parts"]] == [1, 2]
        assert first["IsTruncated"] and first["NextPartNumberMarker"] == 2
        rest = s3.list_parts(Bucket="pemilu", Key="c1/a.bin", UploadId=ids[0], PartNumberMarker=2)
        assert [p["PartNumber"] for p in rest["Parts"]] == [3] and not rest["IsTruncated"]
        pages = s3.get_paginator("list_parts").paginate(
            Bucket="pemilu", Key="c1/a.bin", UploadId=ids[0], PaginationConfig={"PageSize": 1}
        )
        assert [p["PartNumber"] for pg in pages for p in pg["Parts"]] == [1, 2, 3]
        # The AWS CLI (encoding-type=url: the space, "+" and "%" arrive as they are).
        env = _aws_env(tmp_path)
        aws = [sys.executable, "-m", "awscli", "--endpoint-url", endpoint, "s3api"]
        out = json.loads(_run([*aws, "list-multipart-uploads", "--bucket", "pemilu"], env))
        assert sorted(u["Key"] for u in out["Uploads"]) == sorted(keys)
        out = json.loads(
            _run(
                [*aws, "list-parts", "--bucket", "pemilu", "--key", "c1/a.bin",
                 "--upload-id", ids[0]],
                env,
            )
        )  # fmt: skip
        assert [p["PartNumber"] for p in out["Parts"]] == [1, 2, 3]
        # Aborted and completed uploads leave the list.
        s3.abort_multipart_upload(Bucket="pemilu", Key="top.bin", UploadId=ids[3])
        got = s3.list_multipart_uploads(Bucket="pemilu", Prefix="top")
        assert [u["UploadId"] for u in got["Uploads"]] == [ids[4]]
        # A read-only bucket has none; a ListParts there knows no upload.
        assert s3.list_multipart_uploads(Bucket="arsip").get("Uploads", []) == []
        out = json.loads(_run([*aws, "list-multipart-uploads", "--bucket", "arsip"], env) or "{}")
        assert out.get("Uploads", []) == []
        with pytest.raises(ClientError) as exc:
            s3.list_parts(Bucket="arsip", Key="k", UploadId=ids[0])
        assert exc.value.response["Error"]["Code"] == "NoSuchUpload"
        for bad in ({"MaxUploads": -1}, {"EncodingType": "base64"}):
            with pytest.raises(Exception) as err:
                s3.list_multipart_uploads(Bucket="pemilu", **bad)
            assert "InvalidArgument" in str(err.value) or "Invalid" in str(err.value)
        # rclone's cleaners list, then abort what is old enough: a read-only bucket has
        # nothing; at the writable one, with max-age=0s, every upload goes.
        renv = _rclone_env(tmp_path, endpoint)
        rclone = [_tool("rclone"), "--retries", "1", "--low-level-retries", "1"]
        for bucket in ("arsip", "pemilu"):
            _run([*rclone, "cleanup", f"gw:{bucket}"], renv)
        listed = json.loads(_run([*rclone, "backend", "list-multipart-uploads", "gw:pemilu"], renv))
        assert sorted(u["UploadId"] for u in listed["pemilu"]) == sorted(ids[:3] + ids[4:])
        _run([*rclone, "backend", "cleanup", "gw:pemilu", "-o", "max-age=0s"], renv)
        assert s3.list_multipart_uploads(Bucket="pemilu").get("Uploads", []) == []


def test_upload_pages_follow_s3s_markers() -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    ups = [
        InProgress("a/1", "id-z", t0),
        InProgress("a/2", "id-y", t0),
        InProgress("b", "id-2", t0 + dt.timedelta(seconds=1)),
        InProgress("b", "id-9", t0),  # began first: listed first
        InProgress("c", "id-1", t0),
    ]
    got = page(ups)
    assert [(u.key, u.upload_id) for u in got.uploads] == [
        ("a/1", "id-z"), ("a/2", "id-y"), ("b", "id-9"), ("b", "id-2"), ("c", "id-1"),
    ]  # fmt: skip
    got = page(ups, delimiter="/", max_uploads=2)
    assert got.prefixes == ["a/"] and [u.upload_id for u in got.uploads] == ["id-9"]
    assert got.truncated and (got.next_key_marker, got.next_upload_id_marker) == ("b", "id-9")
    got = page(ups, delimiter="/", key_marker="b", upload_id_marker="id-9")
    assert [u.upload_id for u in got.uploads] == ["id-2", "id-1"] and not got.truncated
    # A common prefix as the marker: nothing under it again.
    got = page(ups, delimiter="/", key_marker="a/")
    assert got.prefixes == [] and [u.key for u in got.uploads] == ["b", "b", "c"]
    # A key marker alone: after every upload of that key.
    assert [u.key for u in page(ups, key_marker="b").uploads] == ["c"]
    assert page(ups, prefix="a/", max_uploads=0).truncated is False


def test_upload_ids_never_start_with_a_dash() -> None:
    """The AWS CLI reads `--upload-id -x…` as an option (exit 2): one id in 64 of
    token_urlsafe's started so, and made a client's next call fail at random."""
    ids = [new_upload_id() for _ in range(5000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(_UPLOAD_ID.match(i) for i in ids) and len(set(ids)) == len(ids)
