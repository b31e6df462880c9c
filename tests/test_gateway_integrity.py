"""``daulat serve`` never sends a byte before its 8 MiB chunk matched its recorded SHA-256, and
a primary that has vanished (its directory, its bucket) is down, not empty. Real parts as in
test_gateway.py: the gateway runs as ``python -m daulat serve``, replicas are directories and
SeaweedFS buckets, clients are boto3 and raw HTTP."""

from __future__ import annotations

import http.client
import os
import shutil
import time
import urllib.parse
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from conftest import fs_store_config, s3_store_config
from servers import S3Server
from test_gateway import MiB, _audit, _copy, _fill, _sha, _status, _toml, client, gateway

pytestmark = pytest.mark.timeout(300)

CHUNK = 8 * MiB


def _raw_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, bool]:
    """(status, every byte received, whether the response was complete) of a GET: a cut
    response's bytes are kept, as a streaming consumer would already have used them."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.netloc, timeout=60)
    try:
        conn.request("GET", f"{u.path}?{u.query}", headers=headers or {})
        resp = conn.getresponse()
        got = bytearray()
        try:
            while piece := resp.read(256 * 1024):
                got += piece
        except http.client.IncompleteRead as exc:
            got += exc.partial
            return resp.status, bytes(got), False
        except OSError:
            return resp.status, bytes(got), False
        length = resp.getheader("content-length")
        return resp.status, bytes(got), length is None or int(length) == len(got)
    finally:
        conn.close()


def _presign(s3: Any, key: str) -> str:
    url: str = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "pemilu", "Key": key}, ExpiresIn=300
    )
    return url


def _alter(path: Path, offset: int, size: int) -> None:
    """Other bytes of the same size at ``offset``, the file's times kept."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(os.urandom(size))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _s3_primary_copied(
    tmp_path: Path, s3_server: S3Server, objects: dict[str, bytes], bucket: str,
    prefix: str = "",
) -> tuple[Path, Any]:
    """Config of bucket ``pemilu`` over primary ``prim`` (``bucket`` on SeaweedFS, under
    ``prefix``) and replica ``rep`` (a directory), ``objects`` copied seed → prim → rep; with a
    boto3 client that reaches the primary's bucket directly, as its provider would."""
    _fill(tmp_path / "seed", objects)
    stores = [
        s3_store_config(s3_server, "prim", bucket, prefix=prefix),
        fs_store_config(tmp_path / "rep", "rep"),
        fs_store_config(tmp_path / "seed", "seed"),
    ]
    config = tmp_path / "daulat.toml"
    config.write_text(_toml(stores, {"pemilu": ["prim", "rep"]}))
    _copy(config, "seed", "prim")
    _copy(config, "prim", "rep")
    direct = boto3.client(
        "s3", endpoint_url=s3_server.endpoint, aws_access_key_id=s3_server.access_key_id,
        aws_secret_access_key=s3_server.secret_access_key, region_name="us-east-1",
        config=BotoConfig(s3={"addressing_style": "path"}),
    )
    return config, direct


@pytest.fixture
def altered_setup(tmp_path: Path) -> tuple[Path, bytes]:
    """Primary ``prim`` (down: its directory replaced by a file), replicas ``a`` then ``b``
    holding verified copies of a 40 MiB object (five chunks) and a small one."""
    big = os.urandom(40 * MiB + 1234)
    _fill(tmp_path / "prim", {"big.bin": big, "small.txt": b"small\n"})
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "a", "b")]
    config = tmp_path / "daulat.toml"
    config.write_text(_toml(stores, {"pemilu": ["prim", "a", "b"]}))
    _copy(config, "prim", "a")
    _copy(config, "prim", "b")
    shutil.rmtree(tmp_path / "prim")
    (tmp_path / "prim").write_text("not a directory")
    return config, big


def test_altered_chunk_is_read_from_the_next_replica(altered_setup: tuple[Path, bytes]) -> None:
    """Replica ``a`` holds 1 MiB of other bytes inside chunk 2; ``b`` is intact: a whole GET
    and a 100-byte range inside that chunk both get the right bytes in one response, and the
    mismatch is audited."""
    config, big = altered_setup
    _alter(config.parent / "a" / "big.bin", 20 * MiB, MiB)
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        status, got, complete = _raw_get(
            _presign(s3, "big.bin"), {"Range": f"bytes={20 * MiB}-{20 * MiB + 99}"}
        )
        assert (status, complete) == (206, True)
        assert got == big[20 * MiB : 20 * MiB + 100]
        status, got, complete = _raw_get(_presign(s3, "big.bin"))
        assert (status, complete, len(got)) == (200, True, len(big))
        assert _sha(got) == _sha(big)
        assert _sha(s3.get_object(Bucket="pemilu", Key="big.bin")["Body"].read()) == _sha(big)
    mismatches = [e["details"] for e in _audit(config) if e["operation"] == "gateway.mismatch"]
    assert [(m["key"], m["replica"], m["chunk"]) for m in mismatches] == [("big.bin", "a", 2)]


def test_no_byte_of_an_altered_chunk_is_sent(altered_setup: tuple[Path, bytes]) -> None:
    """Every replica holds other bytes inside chunk 2: a whole GET is cut, and what the client
    received is the object's first two chunks exactly (it ends at the boundary before the
    altered chunk); a 100-byte range inside that chunk is S3's 503, with no byte of it."""
    config, big = altered_setup
    for name in ("a", "b"):
        _alter(config.parent / name / "big.bin", 20 * MiB, MiB)
    with gateway(config) as endpoint:
        status, got, complete = _raw_get(_presign(client(endpoint), "big.bin"))
        assert status == 200 and not complete
        assert len(got) == 2 * CHUNK and got == big[: 2 * CHUNK]
    with gateway(config) as endpoint:  # a new gateway: no replica is known to be altered yet
        s3 = client(endpoint)
        status, got, _ = _raw_get(
            _presign(s3, "big.bin"), {"Range": f"bytes={20 * MiB}-{20 * MiB + 99}"}
        )
        assert status == 503 and big[20 * MiB : 20 * MiB + 100] not in got
        assert b"ServiceUnavailable" in got and b"chunk 2 does not match" in got


def test_vanished_primary_directory_fails_over(tmp_path: Path) -> None:
    """The primary's directory disappears (an unmounted volume): reads and listings come from
    the replica, a key no copy holds is S3's 503 (never NoSuchKey), and the audit log says the
    primary is down."""
    objects = {"a.txt": b"hello\n", "dir/b.bin": os.urandom(3 * MiB)}
    _fill(tmp_path / "prim", objects)
    stores = [fs_store_config(tmp_path / "prim", "prim"), fs_store_config(tmp_path / "rep", "rep")]
    config = tmp_path / "daulat.toml"
    config.write_text(_toml(stores, {"pemilu": ["prim", "rep"]}))
    _copy(config, "prim", "rep")
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        assert s3.get_object(Bucket="pemilu", Key="a.txt")["Body"].read() == objects["a.txt"]
        with pytest.raises(ClientError) as exc:
            s3.get_object(Bucket="pemilu", Key="missing")
        assert exc.value.response["Error"]["Code"] == "NoSuchKey"  # the primary is there
        (tmp_path / "prim").rename(tmp_path / "prim.away")
        for key, data in objects.items():
            assert s3.get_object(Bucket="pemilu", Key=key)["Body"].read() == data
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="pemilu")["Contents"]]
        assert keys == sorted(objects)
        with pytest.raises(ClientError) as exc:
            s3.get_object(Bucket="pemilu", Key="missing")
        assert _status(exc.value) == 503
    down = [e["details"] for e in _audit(config) if e["operation"] == "gateway.down"]
    assert [d["replica"] for d in down] == ["prim"] and "does not exist" in down[0]["error"]


def test_deleted_primary_bucket_fails_over(tmp_path: Path, s3_server: S3Server) -> None:
    """The primary's S3 bucket is deleted (SeaweedFS: NoSuchBucket): the first GET, with no
    listing before it, is served from the replica, and the listing too; audited as revoked."""
    objects = {"a.txt": b"hello\n", "dir/b.bin": os.urandom(3 * MiB)}
    config, direct = _s3_primary_copied(tmp_path, s3_server, objects, "gw-gone")
    for o in direct.list_objects_v2(Bucket="gw-gone").get("Contents", []):
        direct.delete_object(Bucket="gw-gone", Key=o["Key"])
    direct.delete_bucket(Bucket="gw-gone")
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        assert s3.get_object(Bucket="pemilu", Key="dir/b.bin")["Body"].read() == objects["dir/b.bin"]
        assert s3.get_object(Bucket="pemilu", Key="a.txt")["Body"].read() == objects["a.txt"]
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="pemilu")["Contents"]]
        assert keys == sorted(objects)
        deadline = time.monotonic() + 10
        while not any(e["operation"] == "gateway.revoked" for e in _audit(config)):
            assert time.monotonic() < deadline  # written off the gateway's event loop
            time.sleep(0.1)
    revoked = [e["details"] for e in _audit(config) if e["operation"] == "gateway.revoked"]
    assert [r["replica"] for r in revoked] == ["prim"] and "does not exist" in revoked[0]["error"]


def test_vanished_prefix_directory_of_the_primary_fails_over(tmp_path: Path) -> None:
    """The primary is a prefix of a directory store (``prim:sub``) and ``sub`` disappears
    while the store's root stays: reads and listings come from the replica, a key no copy
    holds is 503 (never NoSuchKey). A prefix nothing was ever copied from that holds nothing
    is still just empty (NoSuchKey, an empty listing)."""
    objects = {"a.txt": b"hello\n", "dir/b.bin": os.urandom(3 * MiB)}
    _fill(tmp_path / "prim" / "sub", objects)
    (tmp_path / "prim" / "other.txt").write_bytes(b"outside the prefix\n")
    stores = [fs_store_config(tmp_path / "prim", "prim"), fs_store_config(tmp_path / "rep", "rep")]
    config = tmp_path / "daulat.toml"
    config.write_text(_toml(stores, {"pemilu": ["prim:sub", "rep:copies"], "fresh": ["prim:new"]}))
    _copy(config, "prim:sub", "rep:copies")
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        assert s3.get_object(Bucket="pemilu", Key="a.txt")["Body"].read() == objects["a.txt"]
        with pytest.raises(ClientError) as exc:
            s3.get_object(Bucket="pemilu", Key="missing")
        assert exc.value.response["Error"]["Code"] == "NoSuchKey"  # the prefix is there
        (tmp_path / "prim" / "sub").rename(tmp_path / "prim" / "sub.away")
        assert (tmp_path / "prim").is_dir()
        for key, data in objects.items():
            assert s3.get_object(Bucket="pemilu", Key=key)["Body"].read() == data
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="pemilu")["Contents"]]
        assert keys == sorted(objects)
        with pytest.raises(ClientError) as exc:
            s3.get_object(Bucket="pemilu", Key="missing")
        assert _status(exc.value) == 503
        # Nothing recorded from prim:new/: its holding nothing is believed.
        with pytest.raises(ClientError) as exc:
            s3.get_object(Bucket="fresh", Key="a.txt")
        assert exc.value.response["Error"]["Code"] == "NoSuchKey"
        assert s3.list_objects_v2(Bucket="fresh")["KeyCount"] == 0
    down = [e["details"] for e in _audit(config) if e["operation"] == "gateway.down"]
    assert [d["replica"] for d in down] == ["prim:sub/"], down
    assert "holds no object" in down[0]["error"]


def test_wiped_s3_prefix_of_the_primary_fails_over(tmp_path: Path, s3_server: S3Server) -> None:
    """The primary is an S3 store with a prefix (``s3://bucket/data``); every object under the
    prefix is deleted while the bucket stays (an S3 prefix never "exists"; it lists empty).
    Copies of its objects are recorded, so it is taken to be gone: the listing (asked first,
    with nothing before it) and the reads come from the replica. A single deleted key of a
    primary that still holds objects is NoSuchKey."""
    objects = {"a.txt": b"hello\n", "dir/b.bin": os.urandom(3 * MiB), "z.txt": b"z"}
    config, direct = _s3_primary_copied(tmp_path, s3_server, objects, "gw-wiped", prefix="data")
    direct.put_object(Bucket="gw-wiped", Key="elsewhere.txt", Body=b"outside the prefix")
    direct.delete_object(Bucket="gw-wiped", Key="data/z.txt")
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        with pytest.raises(ClientError) as exc:
            s3.get_object(Bucket="pemilu", Key="z.txt")
        assert exc.value.response["Error"]["Code"] == "NoSuchKey"  # deleted at the primary
        for o in direct.list_objects_v2(Bucket="gw-wiped", Prefix="data/")["Contents"]:
            direct.delete_object(Bucket="gw-wiped", Key=o["Key"])
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="pemilu")["Contents"]]
        assert keys == sorted(objects)  # the replica's copies, z.txt's too
        for key in ("a.txt", "dir/b.bin"):
            assert s3.get_object(Bucket="pemilu", Key=key)["Body"].read() == objects[key]
    down = [e["details"] for e in _audit(config) if e["operation"] == "gateway.down"]
    assert [d["replica"] for d in down] == ["prim"], down
    assert "holds no object" in down[0]["error"]


def test_every_write_is_405_read_only(tmp_path: Path) -> None:
    """PutObject, DeleteObject, DeleteObjects, CopyObject and a multipart upload all get the
    same 405 MethodNotAllowed with an S3 XML error body."""
    _fill(tmp_path / "prim", {"a.txt": b"hello\n"})
    config = tmp_path / "daulat.toml"
    config.write_text(_toml([fs_store_config(tmp_path / "prim", "prim")], {"pemilu": ["prim"]}))
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        calls = [
            lambda: s3.put_object(Bucket="pemilu", Key="new", Body=b"x"),
            lambda: s3.delete_object(Bucket="pemilu", Key="a.txt"),
            lambda: s3.delete_objects(Bucket="pemilu", Delete={"Objects": [{"Key": "a.txt"}]}),
            lambda: s3.copy_object(Bucket="pemilu", Key="b", CopySource="pemilu/a.txt"),
            lambda: s3.create_multipart_upload(Bucket="pemilu", Key="m"),
            lambda: s3.delete_bucket(Bucket="pemilu"),
        ]
        for call in calls:
            with pytest.raises(ClientError) as exc:
                call()
            error = exc.value.response["Error"]
            assert _status(exc.value) == 405, exc.value.response
            assert (error["Code"], error["Message"]) == (
                "MethodNotAllowed", "this gateway is read-only"
            )
        assert s3.get_object(Bucket="pemilu", Key="a.txt")["Body"].read() == b"hello\n"
    # The unread body of a refused write never spills into the next request on the connection.
    log = "".join(p.read_text() for p in tmp_path.glob("serve-*.log"))
    assert "Invalid HTTP request" not in log, log
