"""Writes through ``daulat serve`` as a hostile review found them: keys with C1 control
characters, writes to a bucket the gateway does not have, CreateBucket of one it has (rclone
with its defaults), the 503 of a missed quorum, uploads left at a store by a gateway stopped
mid-write. Real parts as in test_gateway_writes.py: ``python -m daulat serve``, directories
and SeaweedFS, boto3 and rclone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from conftest import fs_store_config
from test_gateway import KEY_ID, SECRET, _status, client, gateway
from test_gateway_clients import _clean_env, _rclone_env, _run, _s5cmd, _tool
from test_gateway_writes import _config

pytestmark = pytest.mark.timeout(300)


def _error(exc: ClientError) -> tuple[int, str]:
    return _status(exc), exc.response["Error"]["Code"]


def test_keys_with_c1_control_characters_are_refused_and_written_nowhere(tmp_path: Path) -> None:
    """U+0085 (NEL: a line break to some tools) and U+009B (CSI: a terminal escape) are
    control characters as much as U+001B is: 400, as README says of every control character."""
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep")]
    config = _config(tmp_path, stores, {"pemilu": 'replicas = ["prim", "rep"]\nwritable = true'})
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        for key in ("line\u0085break.txt", "csi\u009b31m.txt", "\u0080first"):
            with pytest.raises(ClientError) as exc:
                s3.put_object(Bucket="pemilu", Key=key, Body=b"x")
            assert _error(exc.value) == (400, "InvalidArgument"), key
            assert "control character" in exc.value.response["Error"]["Message"]
            with pytest.raises(ClientError) as exc:
                s3.create_multipart_upload(Bucket="pemilu", Key=key)
            assert _error(exc.value) == (400, "InvalidArgument"), key
        # Printable characters past U+009F are still taken.
        s3.put_object(Bucket="pemilu", Key="caf\u00e9 \u00a0nbsp.txt", Body=b"ok")
    for root in ("prim", "rep"):
        names = [p.name for p in (tmp_path / root).iterdir() if p.name != ".daulat-tmp"]
        assert names == ["caf\u00e9 \u00a0nbsp.txt"], (root, names)


def test_a_write_to_a_bucket_the_gateway_lacks_is_404_and_create_bucket_of_its_own_is_409(
    tmp_path: Path,
) -> None:
    """The gateway answers a write to an unknown bucket as it answers a read of it (404
    NoSuchBucket), not 405 "read-only"; CreateBucket of a configured bucket, writable or not,
    gets S3's 409 BucketAlreadyOwnedByYou; deleting one is still 405."""
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep", "ro")]
    config = _config(
        tmp_path,
        stores,
        {"pemilu": 'replicas = ["prim", "rep"]\nwritable = true', "arsip": 'replicas = ["ro"]'},
    )
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        for call in (
            lambda: s3.put_object(Bucket="newb", Key="a.txt", Body=b"x"),
            lambda: s3.create_multipart_upload(Bucket="newb", Key="a.txt"),
            lambda: s3.create_bucket(Bucket="newb"),
            lambda: s3.delete_bucket(Bucket="newb"),
        ):
            with pytest.raises(ClientError) as exc:
                call()
            assert _error(exc.value) == (404, "NoSuchBucket"), exc.value.response
        for name in ("pemilu", "arsip"):
            with pytest.raises(ClientError) as exc:
                s3.create_bucket(Bucket=name)
            assert _error(exc.value) == (409, "BucketAlreadyOwnedByYou"), name
        with pytest.raises(ClientError) as exc:
            s3.delete_bucket(Bucket="arsip")
        assert _error(exc.value) == (405, "MethodNotAllowed")
        assert not (tmp_path / "newb").exists()


def test_rclone_and_s5cmd_upload_with_their_defaults(tmp_path: Path) -> None:
    """rclone sends CreateBucket before its first upload (no ``--s3-no-check-bucket``) and
    goes on when told the bucket is already the caller's. s5cmd uploads as it is, a large
    file as a multipart upload."""
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep")]
    config = _config(tmp_path, stores, {"pemilu": 'replicas = ["prim", "rep"]\nwritable = true'})
    local = tmp_path / "up.txt"
    local.write_bytes(b"uploaded by rclone\n")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 * 1024 * 1024))  # three parts of 5 MiB
    with gateway(config) as endpoint:
        env = _rclone_env(tmp_path, endpoint)
        rclone = [_tool("rclone"), "--retries", "1", "--low-level-retries", "1"]
        _run([*rclone, "copyto", str(local), "gw:pemilu/dir/up.txt"], env)
        got = client(endpoint).get_object(Bucket="pemilu", Key="dir/up.txt")
        assert got["Body"].read() == b"uploaded by rclone\n"
        env = _clean_env(tmp_path)
        env.update(AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_REGION="us-east-1")
        s5 = [_s5cmd(), "--endpoint-url", endpoint, "--retry-count", "1"]
        _run([*s5, "cp", "--part-size", "5", str(big), "s3://pemilu/big.bin"], env)
        got = client(endpoint).get_object(Bucket="pemilu", Key="big.bin")
        assert got["Body"].read() == big.read_bytes()
    for root in ("prim", "rep"):
        assert (tmp_path / root / "dir" / "up.txt").read_bytes() == b"uploaded by rclone\n"
        assert (tmp_path / root / "big.bin").read_bytes() == big.read_bytes()
