"""Writes ``daulat serve`` must refuse, and what a refused write leaves behind: nothing.

A description too long for a replica's store (as that store writes it) is 400 before a byte
is sent; a write the primary itself refuses at its end (a file its filesystem may not
replace) is a 403 the client does not send again, leaves every store holding what it held
and every journal row as it was, lags nowhere, and changes nothing of the primary's health;
a description header the client did not sign is 403, as AWS answers it. Real parts as in
test_gateway.py: the gateway as ``python -m daulat serve``, directories and SeaweedFS
buckets, boto3 and raw SigV4 requests."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from conftest import fs_store_config, s3_store_config
from faultproxy import fault_proxy
from servers import S3Server
from test_gateway import KEY_ID, SECRET, MiB, _audit, _status, client, gateway
from test_gateway_writes import (
    _config,
    _direct,
    _lagging,
    _retrying,
    _rows,
    _signed_request,
    _writes,
)

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


def _seen(config: Path, key: str) -> int:
    """How many writes of ``key`` the gateways of this test logged as not acknowledged: one
    per request they received for it."""
    return sum(
        log.read_text().count(f"write of {key!r} not acknowledged")
        for log in config.parent.glob("serve-*.log")
    )


def _health_changes(config: Path) -> list[dict[str, Any]]:
    return [
        e for e in _audit(config)
        if e["operation"] in ("gateway.revoked", "gateway.down", "gateway.recovered")
    ]  # fmt: skip


def _copied(config: Path, src: str, dst: str, capsys: pytest.CaptureFixture[str]) -> int:
    """What ``daulat sync SRC DST`` copies (0: it has nothing to do)."""
    capsys.readouterr()
    assert cli(["sync", src, dst, "--json", "--config", str(config)]) == 0
    return int(json.loads(capsys.readouterr().out)["copied_objects"])


@contextlib.contextmanager
def _immutable(path: Path) -> Iterator[None]:
    """``path`` made immutable (``chattr +i``: nothing may replace, rename or remove it, root
    included; the tests run as root, which file modes do not stop)."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"this filesystem keeps no immutable flag: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_description_too_large_for_a_replica_is_400_before_a_byte_is_sent(
    tmp_path: Path, s3_server: S3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    """2,001 bytes of metadata are within S3's 2 KiB, but daulat's field holds them
    percent-encoded (~6 KB): more than ext4 keeps beside a file, more than S3 keeps. Refused
    up front, once (400, which no SDK retries), for PutObject and multipart uploads alike; an
    earlier version stays everywhere, vouched for, and nothing lags."""
    stores = [
        fs_store_config(tmp_path / "pa", "pa"),
        fs_store_config(tmp_path / "pc", "pc"),
        s3_store_config(s3_server, "pb", "gw-refusals-prim"),
    ]
    config = _config(
        tmp_path, stores, {"pemilu": 'replicas = ["pa", "pc", "pb"]\nwritable = true\nquorum = 2'}
    )
    meta = {"m": "%" * 2000}
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        s3.put_object(Bucket="pemilu", Key="x/v.bin", Body=b"first")
        before = _rows(config, "x/v.bin")
        for key in ("x/v.bin", "x/new.bin", "tr2/deep/r.bin"):
            with pytest.raises(ClientError) as exc:
                _retrying(endpoint).put_object(
                    Bucket="pemilu", Key=key, Body=b"second", Metadata=meta
                )
            error = exc.value.response["Error"]
            assert (_status(exc.value), error["Code"]) == (400, "MetadataTooLarge"), key
            assert "pa keeps at most 3,900" in error["Message"], error["Message"]
            with pytest.raises(ClientError) as exc:
                s3.create_multipart_upload(Bucket="pemilu", Key=key, Metadata=meta)
            assert (_status(exc.value), exc.value.response["Error"]["Code"]) == (
                400, "MetadataTooLarge"
            )  # fmt: skip
        # Within ext4's bound, past S3's once daulat's field is counted: the S3 replica
        # would refuse it (AWS does), so it is refused for the bucket.
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket="pemilu", Key="x/s3.bin", Body=b"x", Metadata={"m": "a" * 2030})
        assert exc.value.response["Error"]["Code"] == "MetadataTooLarge"
        assert "pb keeps at most 2,048" in exc.value.response["Error"]["Message"]
        assert s3.get_object(Bucket="pemilu", Key="x/v.bin")["Body"].read() == b"first"
        # The primary is not taken for down: the next write is acknowledged.
        s3.put_object(Bucket="pemilu", Key="x/after.bin", Body=b"after", Metadata={"m": "%" * 600})
        assert s3.head_object(Bucket="pemilu", Key="x/after.bin")["Metadata"] == {"m": "%" * 600}
    assert _rows(config, "x/v.bin") == before
    for key in ("x/new.bin", "tr2/deep/r.bin", "x/s3.bin"):
        assert _rows(config, key) == {}, key
    for root in ("pa", "pc"):
        assert sorted(p.name for p in (tmp_path / root).iterdir()) == ["x"]
        assert sorted(p.name for p in (tmp_path / root / "x").iterdir()) == ["after.bin", "v.bin"]
    held = _direct(s3_server).list_objects_v2(Bucket="gw-refusals-prim")
    assert sorted(o["Key"] for o in held.get("Contents", [])) == ["x/after.bin", "x/v.bin"]
    assert [w["key"] for w in _writes(config)] == ["x/v.bin", "x/after.bin"]
    assert _lagging(config, capsys) == {"pa": 0, "pc": 0, "pb": 0}
    assert _copied(config, "pa", "pb", capsys) == 0
    assert _health_changes(config) == []
    # The primary gone: the replica lists what it holds, and no object it was never given is
    # claimed as the primary's.
    (tmp_path / "pa").rename(tmp_path / "pa.off")
    with gateway(config) as endpoint:
        listed = client(endpoint).list_objects_v2(Bucket="pemilu", Prefix="x/")
        assert sorted(o["Key"] for o in listed["Contents"]) == ["x/after.bin", "x/v.bin"]


@pytest.mark.parametrize("locked", ["d/v.bin", "d"], ids=["file", "directory"])
def test_a_file_the_primary_may_not_replace_refuses_that_write_alone(
    tmp_path: Path, s3_server: S3Server, capsys: pytest.CaptureFixture[str], locked: str
) -> None:
    """The primary's filesystem refuses to replace one file (EPERM: the file, or its
    directory, is immutable) only once the replicas have been sent every byte of the new
    version. The replicas are given the body's end only after the primary's put returned,
    so each abandons its upload and keeps its earlier copy, still vouched for and still
    served with the primary gone; the client gets 403 once (never a 503 it would send
    again); the primary is neither revoked nor down: reads and other writes go on at once."""
    stores = [
        fs_store_config(tmp_path / "pa", "pa"),
        fs_store_config(tmp_path / "pc", "pc"),
        s3_store_config(s3_server, "pb", "gw-refusals-over"),
    ]
    config = _config(
        tmp_path, stores, {"pemilu": 'replicas = ["pa", "pc", "pb"]\nwritable = true\nquorum = 2'}
    )
    # Every byte reaches the replicas before the refusal: the S3 one has begun a multipart
    # upload (parts of 8 MiB), the directory one has written its temporary file.
    second = os.urandom(9 * MiB + 5)
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        s3.put_object(Bucket="pemilu", Key="d/v.bin", Body=b"first")
        before = _rows(config, "d/v.bin")
        assert {s for s, _, _ in before.values()} == {"done"}
        with _immutable(tmp_path / "pa" / locked):
            with pytest.raises(ClientError) as exc:
                _retrying(endpoint).put_object(Bucket="pemilu", Key="d/v.bin", Body=second)
            error = exc.value.response["Error"]
            assert (_status(exc.value), error["Code"]) == (403, "AccessDenied"), error
            assert "permission denied" in error["Message"], error["Message"]
            assert _seen(config, "d/v.bin") == 1
            # Not revoked, not down: the next write and read go to the primary at once.
            s3.put_object(Bucket="pemilu", Key="other.bin", Body=b"other")
            assert s3.get_object(Bucket="pemilu", Key="d/v.bin")["Body"].read() == b"first"
        for root in ("pa", "pc"):
            assert (tmp_path / root / "d" / "v.bin").read_bytes() == b"first"
            # The abandoned upload left nothing (nor the staging directory).
            assert sorted(p.name for p in (tmp_path / root).iterdir()) == ["d", "other.bin"]
        direct = _direct(s3_server)
        assert direct.get_object(Bucket="gw-refusals-over", Key="d/v.bin")["Body"].read() == (
            b"first"
        )
        assert direct.list_multipart_uploads(Bucket="gw-refusals-over").get("Uploads", []) == []
    assert _rows(config, "d/v.bin") == before
    assert _health_changes(config) == []
    assert _lagging(config, capsys) == {"pa": 0, "pc": 0, "pb": 0}
    assert _copied(config, "pa", "pb", capsys) == 0
    assert _copied(config, "pa", "pc", capsys) == 0
    # The primary stopped, then the directory replica: each replica serves the earlier bytes.
    (tmp_path / "pa").rename(tmp_path / "pa.off")
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        assert s3.get_object(Bucket="pemilu", Key="d/v.bin")["Body"].read() == b"first"
        listed = s3.list_objects_v2(Bucket="pemilu")
        assert sorted(o["Key"] for o in listed["Contents"]) == ["d/v.bin", "other.bin"]
        (tmp_path / "pc").rename(tmp_path / "pc.off")
        assert s3.get_object(Bucket="pemilu", Key="d/v.bin")["Body"].read() == b"first"


def test_a_multipart_upload_the_primary_refuses_leaves_every_store_as_it_was(
    tmp_path: Path, s3_server: S3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    """CompleteMultipartUpload takes the same path as PutObject: the primary refusing the
    object at its end leaves the replicas' earlier copies, and the client gets 403."""
    stores = [
        fs_store_config(tmp_path / "pa", "pa"),
        s3_store_config(s3_server, "pb", "gw-refusals-mpu"),
    ]
    config = _config(
        tmp_path, stores, {"pemilu": 'replicas = ["pa", "pb"]\nwritable = true\nquorum = 2'}
    )
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        s3.put_object(Bucket="pemilu", Key="m.bin", Body=b"first")
        before = _rows(config, "m.bin")
        with _immutable(tmp_path / "pa" / "m.bin"):
            up = s3.create_multipart_upload(Bucket="pemilu", Key="m.bin")["UploadId"]
            parts = []
            for n, data in enumerate((os.urandom(5 * MiB), b"tail"), start=1):
                etag = s3.upload_part(
                    Bucket="pemilu", Key="m.bin", UploadId=up, PartNumber=n, Body=data
                )["ETag"]
                parts.append({"PartNumber": n, "ETag": etag})
            with pytest.raises(ClientError) as exc:
                s3.complete_multipart_upload(
                    Bucket="pemilu", Key="m.bin", UploadId=up, MultipartUpload={"Parts": parts}
                )
            assert (_status(exc.value), exc.value.response["Error"]["Code"]) == (
                403, "AccessDenied"
            )  # fmt: skip
            assert s3.get_object(Bucket="pemilu", Key="m.bin")["Body"].read() == b"first"
        got = _direct(s3_server).get_object(Bucket="gw-refusals-mpu", Key="m.bin")
        assert got["Body"].read() == b"first"
    assert _rows(config, "m.bin") == before
    assert _lagging(config, capsys) == {"pa": 0, "pb": 0}
    assert _copied(config, "pa", "pb", capsys) == 0
    assert _health_changes(config) == []


# ------------------------------------------------------------------ a quorum missed for good


@pytest.mark.parametrize("refuser", ["directory", "s3"])
def test_a_quorum_missed_only_by_refusals_for_good_is_that_refusal_sent_once(
    tmp_path: Path, s3_server: S3Server, capsys: pytest.CaptureFixture[str], refuser: str
) -> None:
    """quorum = 2: the primary takes the write and the other replica refuses this object for
    good while it still answers (a directory whose file is immutable: EPERM, AccessDenied; a
    provider that denies the PUT and still lists: 403). Sending it again changes nothing, so
    the client gets that refusal, 403 once, not a 503 an SDK sends again. What is recorded is
    a missed quorum's: the primary serves the new bytes, audited as not acknowledged; the
    replica lags, not down, until a sync copies it once the refusal is lifted."""
    with fault_proxy(s3_server.endpoint) as proxy:
        if refuser == "directory":
            rep = fs_store_config(tmp_path / "rep", "rep")
        else:
            rep = s3_store_config(s3_server, "rep", "gw-refusals-quorum")
            rep["endpoint"] = proxy.endpoint
        stores = [fs_store_config(tmp_path / "pa", "pa"), rep]
        config = _config(
            tmp_path, stores, {"pemilu": 'replicas = ["pa", "rep"]\nwritable = true\nquorum = 2'}
        )

        @contextlib.contextmanager
        def refusing() -> Iterator[None]:
            if refuser == "directory":
                with _immutable(tmp_path / "rep" / "d" / "v.bin"):
                    yield
                return
            proxy.mode = "deny-write"
            try:
                yield
            finally:
                proxy.mode = "pass"

        with gateway(config) as endpoint:
            s3 = client(endpoint)
            s3.put_object(Bucket="pemilu", Key="d/v.bin", Body=b"first")
            with refusing():
                with pytest.raises(ClientError) as exc:
                    _retrying(endpoint).put_object(Bucket="pemilu", Key="d/v.bin", Body=b"second")
                error = exc.value.response["Error"]
                # Before: 503 ServiceUnavailable, sent three times.
                assert (_status(exc.value), error["Code"]) == (403, "AccessDenied"), error
                assert "quorum is 2" in error["Message"], error["Message"]
                assert _seen(config, "d/v.bin") == 1
                if refuser == "s3":
                    assert proxy.stats["deny"] == 1  # the replica was sent it once
                # The primary took it: it serves the new bytes.
                assert s3.get_object(Bucket="pemilu", Key="d/v.bin")["Body"].read() == b"second"
        state, _, why = _rows(config, "d/v.bin")["rep:"]
        assert state == "failed", why
        assert (why or "").startswith("gateway write not acknowledged: "), why
        first, missed = _writes(config)
        assert (first["acknowledged"], missed["acknowledged"]) == (True, False)
        assert (missed["replicas"], list(missed["lagging"])) == (["pa"], ["rep"])
        assert _health_changes(config) == []
        assert _lagging(config, capsys) == {"pa": 0, "rep": 1}
        assert _copied(config, "pa", "rep", capsys) == 1
        assert _lagging(config, capsys) == {"pa": 0, "rep": 0}


def test_a_quorum_missed_also_for_a_replica_down_stays_503(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One replica refuses the object for good, another is down: sending it again may yet
    reach the quorum once that one answers, so the answer stays 503, which SDKs retry."""
    stores = [fs_store_config(tmp_path / n, n) for n in ("pa", "rep", "gone")]
    config = _config(
        tmp_path,
        stores,
        {"pemilu": 'replicas = ["pa", "rep", "gone"]\nwritable = true\nquorum = 3'},
    )
    with gateway(config) as endpoint:
        client(endpoint).put_object(Bucket="pemilu", Key="v.bin", Body=b"first")
        (tmp_path / "gone").rename(tmp_path / "gone.off")
        with _immutable(tmp_path / "rep" / "v.bin"), pytest.raises(ClientError) as exc:
            _retrying(endpoint).put_object(Bucket="pemilu", Key="v.bin", Body=b"second")
        assert (_status(exc.value), exc.value.response["Error"]["Code"]) == (
            503, "ServiceUnavailable"
        )  # fmt: skip
        assert _seen(config, "v.bin") > 1
    assert _lagging(config, capsys) == {"pa": 0, "rep": 1, "gone": 1}


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
