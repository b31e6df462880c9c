"""Writes ``daulat serve`` must refuse, and what a refused write leaves behind: nothing.

A description too long for any store is 400 before a byte is sent; a write the primary
itself refuses (its filesystem will not keep the description beside the file) is recorded
nowhere, held by no replica, and lags nowhere; a description header the client did not sign
is 403, as AWS answers it. Real parts as in test_gateway.py: the gateway as ``python -m
daulat serve``, directories and SeaweedFS buckets, boto3 and raw SigV4 requests."""

from __future__ import annotations

import hashlib
import http.client
import urllib.parse
from pathlib import Path

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from conftest import fs_store_config, s3_store_config
from servers import S3Server
from test_gateway import KEY_ID, SECRET, _status, client, gateway
from test_gateway_writes import _config, _direct, _lagging, _rows, _signed_request, _writes

from daulat.cli import run as cli

pytestmark = pytest.mark.timeout(300)


def test_a_content_type_past_the_cap_is_400_and_written_nowhere(
    tmp_path: Path, s3_server: S3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    stores = [
        fs_store_config(tmp_path / "pa", "pa"),
        s3_store_config(s3_server, "pb", "gw-refusals-ct"),
    ]
    config = _config(tmp_path, stores, {"pemilu": 'replicas = ["pa", "pb"]\nwritable = true'})
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        for size in (1025, 5000, 70_000):
            with pytest.raises(ClientError) as exc:
                s3.put_object(
                    Bucket="pemilu", Key="x/long-ct.bin", Body=b"x", ContentType="a/" + "b" * size
                )
            error = exc.value.response["Error"]
            assert (_status(exc.value), error["Code"]) == (400, "InvalidArgument"), size
            assert "Content-Type" in error["Message"] and "1,024" in error["Message"]
            with pytest.raises(ClientError) as exc:
                s3.create_multipart_upload(
                    Bucket="pemilu", Key="x/long-ct.bin", ContentType="a/" + "b" * size
                )
            assert _status(exc.value) == 400
        # At the cap it is taken and answered.
        at_cap = "a/" + "b" * 1022
        s3.put_object(Bucket="pemilu", Key="x/ok.bin", Body=b"x", ContentType=at_cap)
        assert s3.head_object(Bucket="pemilu", Key="x/ok.bin")["ContentType"] == at_cap
    assert _rows(config, "x/long-ct.bin") == {}
    assert sorted(p.name for p in (tmp_path / "pa" / "x").iterdir()) == ["ok.bin"]
    held = _direct(s3_server).list_objects_v2(Bucket="gw-refusals-ct")
    assert [o["Key"] for o in held.get("Contents", [])] == ["x/ok.bin"]
    assert _lagging(config, capsys) == {"pa": 0, "pb": 0}


def test_a_write_the_primary_refuses_is_held_and_recorded_nowhere(
    tmp_path: Path, s3_server: S3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    """The primary's filesystem refuses the description (as an extended attribute it is more
    than ext4 keeps beside a file) after the S3 replica took the object: the replica's copy
    is removed, no journal row claims the object anywhere, and nothing lags."""
    stores = [
        fs_store_config(tmp_path / "pa", "pa"),
        s3_store_config(s3_server, "pb", "gw-refusals-prim"),
    ]
    config = _config(
        tmp_path, stores, {"pemilu": 'replicas = ["pa", "pb"]\nwritable = true\nquorum = 2'}
    )
    # 2,001 bytes of metadata, within S3's 2 KiB; percent-encoded in daulat's field: ~6 KB.
    meta = {"m": "%" * 2000}
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        s3.put_object(Bucket="pemilu", Key="x/kept.bin", Body=b"kept")
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket="pemilu", Key="x/refused.bin", Body=b"x", Metadata=meta)
        assert _status(exc.value) == 503
        message = exc.value.response["Error"]["Message"]
        assert "the primary pa did not take it" in message
        assert "No space left on device" not in message and "description" in message, message
        # Refused under directories it made: they go with it.
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket="pemilu", Key="tr2/deep/r.bin", Body=b"x", Metadata=meta)
        assert _status(exc.value) == 503
        # The primary is not taken for down: the next write is acknowledged.
        s3.put_object(Bucket="pemilu", Key="x/after.bin", Body=b"after")
    assert _rows(config, "x/refused.bin") == {}
    assert sorted(p.name for p in (tmp_path / "pa").iterdir()) == ["x"]
    assert not (tmp_path / "pa" / "x" / "refused.bin").exists()
    held = _direct(s3_server).list_objects_v2(Bucket="gw-refusals-prim")
    assert sorted(o["Key"] for o in held.get("Contents", [])) == ["x/after.bin", "x/kept.bin"]
    assert [w["key"] for w in _writes(config)] == ["x/kept.bin", "x/after.bin"]
    assert _lagging(config, capsys) == {"pa": 0, "pb": 0}
    assert cli(["sync", "pa", "pb", "--config", str(config)]) == 0
    assert _lagging(config, capsys) == {"pa": 0, "pb": 0}
    # The primary gone: the replica lists what it holds, and no object it was never given is
    # claimed as the primary's.
    (tmp_path / "pa").rename(tmp_path / "pa.off")
    with gateway(config) as endpoint:
        listed = client(endpoint).list_objects_v2(Bucket="pemilu", Prefix="x/")
        assert sorted(o["Key"] for o in listed["Contents"]) == ["x/after.bin", "x/kept.bin"]


def test_a_refused_overwrite_leaves_the_earlier_version_vouched_where_it_is_kept(
    tmp_path: Path, s3_server: S3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    """Overwriting a key with a write the primary refuses leaves the earlier version: the
    primary serves it, a replica that refused the write too stays vouched for, and the S3
    replica that took the refused bytes (its earlier copy overwritten) has them removed and
    lags until ``daulat sync`` copies the earlier version back."""
    stores = [
        fs_store_config(tmp_path / "pa", "pa"),
        fs_store_config(tmp_path / "pc", "pc"),
        s3_store_config(s3_server, "pb", "gw-refusals-over"),
    ]
    config = _config(
        tmp_path, stores, {"pemilu": 'replicas = ["pa", "pc", "pb"]\nwritable = true\nquorum = 2'}
    )
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        s3.put_object(Bucket="pemilu", Key="v.bin", Body=b"first")
        before = _rows(config, "v.bin")
        assert {s for s, _, _ in before.values()} == {"done"}
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket="pemilu", Key="v.bin", Body=b"second", Metadata={"m": "%" * 2000})
        assert _status(exc.value) == 503
        assert s3.get_object(Bucket="pemilu", Key="v.bin")["Body"].read() == b"first"
    after = _rows(config, "v.bin")
    assert after["pc:"] == before["pc:"]
    assert after["pb:"][0] == "failed" and "refused" in (after["pb:"][2] or "")
    direct = _direct(s3_server)
    assert direct.list_objects_v2(Bucket="gw-refusals-over").get("Contents", []) == []
    assert _lagging(config, capsys) == {"pa": 0, "pc": 0, "pb": 1}
    assert cli(["sync", "pa", "pb", "--config", str(config)]) == 0
    assert _lagging(config, capsys)["pb"] == 0
    assert direct.get_object(Bucket="gw-refusals-over", Key="v.bin")["Body"].read() == b"first"


# ------------------------------------------------------------------ unsigned descriptions


def _raw(
    endpoint: str, method: str, target: str, headers: dict[str, str], body: bytes
) -> tuple[int, bytes]:
    host = urllib.parse.urlsplit(endpoint)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
    try:
        conn.request(method, target, body=body, headers=headers)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def _signed_post(endpoint: str, target: str) -> dict[str, str]:
    req = AWSRequest(method="POST", url=endpoint + target, data=b"")
    req.headers["x-amz-content-sha256"] = hashlib.sha256(b"").hexdigest()
    S3SigV4Auth(Credentials(KEY_ID, SECRET), "s3", "us-east-1").add_auth(req)
    return dict(req.headers.items())


def test_metadata_headers_not_signed_are_403_and_stored_nowhere(tmp_path: Path) -> None:
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep")]
    config = _config(tmp_path, stores, {"pemilu": 'replicas = ["prim", "rep"]\nwritable = true'})
    body = b"signed bytes\n"
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        # Header auth: the header added after signing.
        h = _signed_request(endpoint, "h.txt", {}, hashlib.sha256(body).hexdigest())
        status, reply = _raw(
            endpoint, "PUT", "/pemilu/h.txt", {**h, "x-amz-meta-injected": "yes"}, body
        )
        assert status == 403 and b"AccessDenied" in reply, reply
        assert b"not signed" in reply
        # The same request as signed is taken (the refusal is the header's alone).
        assert _raw(endpoint, "PUT", "/pemilu/h.txt", h, body)[0] == 200
        assert s3.head_object(Bucket="pemilu", Key="h.txt")["Metadata"] == {}
        # A presigned PUT, the header added by whoever holds the URL.
        url = s3.generate_presigned_url("put_object", Params={"Bucket": "pemilu", "Key": "p.txt"})
        target = url[len(endpoint) :]
        status, reply = _raw(endpoint, "PUT", target, {"x-amz-meta-injected": "yes"}, body)
        assert status == 403 and b"AccessDenied" in reply, reply
        assert _raw(endpoint, "PUT", target, {}, body)[0] == 200
        assert s3.head_object(Bucket="pemilu", Key="p.txt")["Metadata"] == {}
        # CreateMultipartUpload: the description is kept from there.
        m = _signed_post(endpoint, "/pemilu/m.bin?uploads")
        status, reply = _raw(
            endpoint, "POST", "/pemilu/m.bin?uploads", {**m, "x-amz-meta-injected": "yes"}, b""
        )
        assert status == 403 and b"AccessDenied" in reply, reply
        assert _raw(endpoint, "POST", "/pemilu/m.bin?uploads", m, b"")[0] == 200
        # Signed metadata is taken, from boto3 as from any client that signs what it sends.
        s3.put_object(Bucket="pemilu", Key="s.txt", Body=body, Metadata={"owner": "kpu"})
        assert s3.head_object(Bucket="pemilu", Key="s.txt")["Metadata"] == {"owner": "kpu"}
