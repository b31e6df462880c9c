"""Writes through ``daulat serve`` (``writable = true``): real parts as in test_gateway.py. The
gateway runs as ``python -m daulat serve``; replicas are directories and SeaweedFS buckets
(behind the fault-injecting proxy where one must refuse); the clients are boto3, the AWS CLI
and raw HTTP where a body must be malformed on purpose."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http.client
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import boto3
import google_crc32c
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from conftest import fs_store_config, s3_store_config
from faultproxy import fault_proxy
from pydantic import SecretStr
from servers import S3Server
from test_gateway import (
    KEY_ID,
    SECRET,
    MiB,
    _audit,
    _free_port,
    _sha,
    _status,
    _toml,
    client,
    gateway,
)
from test_gateway_clients import _aws_env, _run

from daulat.cli import run as cli
from daulat.crypto import decrypt_bytes, load_identities, new_identity
from daulat.gateway import payload
from daulat.gateway.auth import AuthError, Signed, signing_key
from daulat.stores.hashing import StreamHasher

pytestmark = pytest.mark.timeout(300)


def _config(
    tmp: Path, stores: list[dict[str, Any]], buckets: dict[str, str], gateway_toml: str = ""
) -> Path:
    """``buckets``: name → the lines of its table (replicas, writable, quorum). Directory
    stores are created: a write never creates a store's root (a missing one is down)."""
    for raw in stores:
        if raw["url"].startswith("file://"):
            Path(raw["url"].removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    text = _toml(stores, {}, gateway_toml)
    for name, lines in buckets.items():
        text += f"[gateway.buckets.{name}]\n{lines}\n"
    config = tmp / "daulat.toml"
    config.write_text(text)
    return config


def _rows(config: Path, key: str) -> dict[str, tuple[str, str | None, str | None]]:
    """Destination (STORE:PREFIX + codec tag) → (state, sha256, error) of ``key``'s rows."""
    db = sqlite3.connect(config.parent / ".daulat" / "transfers.sqlite")
    try:
        rows = db.execute(
            "SELECT pair, state, sha256, error FROM journal WHERE key = ?", (key,)
        ).fetchall()
    finally:
        db.close()
    return {pair.partition(" -> ")[2]: (state, sha, error) for pair, state, sha, error in rows}


def _chunk_count(config: Path, key: str) -> int:
    db = sqlite3.connect(config.parent / ".daulat" / "transfers.sqlite")
    try:
        row = db.execute("SELECT sha256 FROM chunks WHERE key = ?", (key,)).fetchone()
    finally:
        db.close()
    return 0 if row is None else len(row[0]) // 32


def _direct(server: S3Server) -> Any:
    return boto3.client(
        "s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key, region_name="us-east-1",
        config=BotoConfig(s3={"addressing_style": "path"}),
    )  # fmt: skip


def _writes(config: Path) -> list[dict[str, Any]]:
    return [e["details"] for e in _audit(config) if e["operation"] == "gateway.write"]


# ------------------------------------------------------------------------------ PutObject


def test_put_then_get_head_same_bytes_etag_and_the_replica_vouched(
    tmp_path: Path, s3_server: S3Server
) -> None:
    stores = [
        fs_store_config(tmp_path / "prim", "prim"),
        s3_store_config(s3_server, "vault", "gw-writes"),
    ]
    config = _config(
        tmp_path, stores, {"pemilu": 'replicas = ["prim", "vault:arsip"]\nwritable = true'}
    )
    objects = {"a.txt": b"hello\n", "dir/big.bin": os.urandom(9 * MiB + 5), "empty": b""}
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        for key, data in objects.items():
            put = s3.put_object(Bucket="pemilu", Key=key, Body=data)
            assert put["ETag"] == f'"{_sha(data)}"', key
        for key, data in objects.items():
            got = s3.get_object(Bucket="pemilu", Key=key)
            assert got["Body"].read() == data and got["ETag"] == f'"{_sha(data)}"', key
            head = s3.head_object(Bucket="pemilu", Key=key)
            assert head["ETag"] == f'"{_sha(data)}"' and head["ContentLength"] == len(data)
            assert "x-daulat-verified" not in head["ResponseMetadata"]["HTTPHeaders"]
        listed = s3.list_objects_v2(Bucket="pemilu")["Contents"]
        assert {o["Key"]: o["ETag"] for o in listed} == {
            k: f'"{_sha(v)}"' for k, v in objects.items()
        }
        # The primary is the directory; the replica holds the same bytes, vouched for.
        for key, data in objects.items():
            assert (tmp_path / "prim" / key).read_bytes() == data
            held = _direct(s3_server).get_object(Bucket="gw-writes", Key=f"arsip/{key}")
            assert held["Body"].read() == data
            assert _rows(config, key) == {"vault:arsip/": ("done", _sha(data), None)}
        assert _chunk_count(config, "dir/big.bin") == 2
        assert [(w["key"], w["replicas"], w["lagging"]) for w in _writes(config)] == [
            (k, ["prim", "vault:arsip/"], {}) for k in objects
        ]
        # daulat's own verify finds the replica a verified copy of the primary.
        assert cli(["verify", "prim", "vault:arsip", "--config", str(config)]) == 0
        # The primary cut off: the written objects are served from the replica.
        (tmp_path / "prim").rename(tmp_path / "prim.off")
        for key, data in objects.items():
            assert s3.get_object(Bucket="pemilu", Key=key)["Body"].read() == data, key
        # ... and the gateway is read-only: a write fails, and says why.
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket="pemilu", Key="late.txt", Body=b"late")
        assert _status(exc.value) == 503
        assert "primary" in exc.value.response["Error"]["Message"]


def test_encrypted_replica_receives_ciphertext_and_serves_it_decrypted(tmp_path: Path) -> None:
    identity = tmp_path / "id.txt"
    recipient = new_identity(identity)
    vault = fs_store_config(tmp_path / "vault", "vault")
    vault["encrypt_to"] = [recipient]
    stores = [fs_store_config(tmp_path / "prim", "prim"), vault]
    config = _config(
        tmp_path,
        stores,
        {"pemilu": 'replicas = ["prim", "vault"]\nwritable = true'},
        f'identity = "{identity}"',
    )
    data = os.urandom(3 * MiB + 11)
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        s3.put_object(Bucket="pemilu", Key="secret.bin", Body=data)
        stored = (tmp_path / "vault" / "secret.bin").read_bytes()
        assert stored.startswith(b"age-encryption.org/v1\n") and data[:4096] not in stored
        assert decrypt_bytes(stored, load_identities(identity)) == data
        ((state, sha, _),) = _rows(config, "secret.bin").values()
        assert (state, sha) == ("done", _sha(data))
        (tmp_path / "prim").rename(tmp_path / "prim.off")
        got = s3.get_object(Bucket="pemilu", Key="secret.bin")
        assert got["Body"].read() == data and got["ETag"] == f'"{_sha(data)}"'


def _lagging(config: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, int]:
    capsys.readouterr()
    cli(["stores", "--json", "--config", str(config)])
    return {r["name"]: r["gateway_lagging"] for r in json.loads(capsys.readouterr().out)}


def test_replica_down_lags_then_sync_catches_up_and_quorum_unmet_is_503(
    tmp_path: Path, s3_server: S3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    with fault_proxy(s3_server.endpoint) as proxy:
        rep2 = s3_store_config(s3_server, "rep2", "gw-writes-lag")
        rep2["endpoint"] = proxy.endpoint
        stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep1")] + [rep2]
        config = _config(tmp_path, stores, {
            "pemilu": 'replicas = ["prim", "rep1", "rep2"]\nwritable = true\nquorum = 2',
            "strict": 'replicas = ["prim", "rep1", "rep2"]\nwritable = true\nquorum = 3',
        })  # fmt: skip
        proxy.mode = "deny"
        with gateway(config) as endpoint:
            s3 = client(endpoint)
            s3.put_object(Bucket="pemilu", Key="lag.txt", Body=b"rep2 was down\n")
            rows = _rows(config, "lag.txt")
            assert rows["rep1:"][:2] == ("done", _sha(b"rep2 was down\n"))
            assert rows["rep2:"][0] == "failed" and "lags" in (rows["rep2:"][2] or "")
            (write,) = _writes(config)
            assert write["replicas"] == ["prim", "rep1"] and list(write["lagging"]) == ["rep2"]
            # Quorum 3 cannot hold with rep2 refusing: 503, and no row claims a copy.
            with pytest.raises(ClientError) as exc:
                s3.put_object(Bucket="strict", Key="strict.txt", Body=b"three or nothing\n")
            assert _status(exc.value) == 503
            message = exc.value.response["Error"]["Message"]
            assert "2 store(s) hold it verified (prim, rep1), quorum is 3" in message
            assert "the primary prim now serves the new bytes" in message
            assert {s for s, _, _ in _rows(config, "strict.txt").values()} == {"failed"}
            # Not acknowledged, yet the primary took it (and serves it): audited as such.
            # Not acknowledged, yet the primary took it (and serves it): audited as such, once
            # per attempt (the client retries a 503 once).
            first, *missed = _writes(config)
            assert first["acknowledged"] is True and missed
            for entry in missed:
                assert entry["key"] == "strict.txt" and entry["acknowledged"] is False
                assert entry["replicas"] == ["prim", "rep1"] and list(entry["lagging"]) == ["rep2"]
                assert entry["sha256"] == _sha(b"three or nothing\n")
        proxy.mode = "pass"
        # daulat stores shows what lags (lag.txt at rep2; strict.txt, not acknowledged, at
        # both), and daulat sync copies it and records it done.
        assert _lagging(config, capsys) == {"prim": 0, "rep1": 1, "rep2": 2}
        assert cli(["sync", "prim", "rep2", "--config", str(config)]) == 0
        assert _rows(config, "lag.txt")["rep2:"][:2] == ("done", _sha(b"rep2 was down\n"))
        assert _lagging(config, capsys)["rep2"] == 0
        assert (
            _direct(s3_server).get_object(Bucket="gw-writes-lag", Key="lag.txt")["Body"].read()
            == b"rep2 was down\n"
        )
        # The primary and rep1 gone: rep2 serves it.
        (tmp_path / "prim").rename(tmp_path / "prim.off")
        (tmp_path / "rep1").rename(tmp_path / "rep1.off")
        with gateway(config) as endpoint:
            got = client(endpoint).get_object(Bucket="pemilu", Key="lag.txt")
            assert got["Body"].read() == b"rep2 was down\n"


def _retrying(endpoint: str) -> Any:
    """A boto3 client that retries as SDKs do by default (a 5xx is sent again, a 4xx never)."""
    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
        region_name="us-east-1",
        config=BotoConfig(
            s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"}
        ),
    )  # fmt: skip


def test_a_primary_refusing_one_write_is_403_once_and_one_refusing_all_access_is_503(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """A 403 on the primary's PUT while its bucket still lists (a bucket policy denying
    writes, or a prefix) concerns that write: 403 to the client, which does not send it
    again, and the primary stays up, serving reads. Access refused to the whole bucket is
    the store's: revoked, 503 (SDKs retry it, and the gateway answers those at once). A
    proxy in front of the gateway counts the requests it received."""
    with fault_proxy(s3_server.endpoint) as proxy:
        prim = s3_store_config(s3_server, "prim", "gw-writes-prim")
        prim["endpoint"] = proxy.endpoint
        stores = [prim, fs_store_config(tmp_path / "rep", "rep")]
        config = _config(
            tmp_path, stores, {"pemilu": 'replicas = ["prim", "rep"]\nwritable = true\nquorum = 1'}
        )
        with gateway(config) as endpoint, fault_proxy(endpoint) as front:
            s3 = _retrying(front.endpoint)
            s3.put_object(Bucket="pemilu", Key="x.txt", Body=b"before\n")
            before = _rows(config, "x.txt")
            proxy.mode = "deny-write"
            with pytest.raises(ClientError) as exc:
                s3.put_object(Bucket="pemilu", Key="x.txt", Body=b"the primary refuses\n")
            assert (_status(exc.value), exc.value.response["Error"]["Code"]) == (
                403, "AccessDenied"
            )  # fmt: skip
            assert front.sends()["pemilu/x.txt"] == 2  # the first write, and this one once
            assert proxy.stats["deny"] == 1  # the primary was sent it once
            # Still the primary, up: it serves the key.
            assert s3.get_object(Bucket="pemilu", Key="x.txt")["Body"].read() == b"before\n"
            assert not [e for e in _audit(config) if e["operation"] == "gateway.revoked"]
            proxy.mode = "deny"
            with pytest.raises(ClientError) as exc:
                s3.put_object(Bucket="pemilu", Key="y.txt", Body=b"nobody takes it\n")
            assert _status(exc.value) == 503
            assert front.sends()["pemilu/y.txt"] == 4  # sent again 3 times, as any 503
        # Neither write happened anywhere: the replica keeps its earlier copy, vouched for.
        assert _rows(config, "x.txt") == before
        assert (tmp_path / "rep" / "x.txt").read_bytes() == b"before\n"
        assert _rows(config, "y.txt") == {}
        assert not (tmp_path / "rep" / "y.txt").exists()
        assert [w["key"] for w in _writes(config)] == ["x.txt"]
        revoked = [e for e in _audit(config) if e["operation"] == "gateway.revoked"]
        assert [e["details"]["replica"] for e in revoked] == ["prim"]


def test_a_key_a_replica_can_never_hold_is_400_written_nowhere_and_never_lagging(
    tmp_path: Path, s3_server: S3Server
) -> None:
    stores = [
        fs_store_config(tmp_path / "prim", "prim"),
        s3_store_config(s3_server, "vault", "gw-writes"),
    ]
    config = _config(
        tmp_path, stores, {"pemilu": 'replicas = ["prim", "vault:never"]\nwritable = true'}
    )
    # Portable (S3 holds them), but no directory can: 1,024 bytes with a 1,021-byte segment,
    # a 300-byte segment, a backslash.
    refused = {
        "d/" + "b" * 1022: "KeyTooLongError",
        "s" * 300 + "/x": "KeyTooLongError",
        "a\\b": "InvalidArgument",
    }
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        for key, code in refused.items():
            with pytest.raises(ClientError) as exc:
                s3.put_object(Bucket="pemilu", Key=key, Body=b"never anywhere")
            error = exc.value.response["Error"]
            assert (_status(exc.value), error["Code"]) == (400, code), key
            # Named once, a long key cut: it is in the request's path already.
            message = error["Message"]
            assert message.count(repr(key)[:40]) == 1 and len(message) < 200, message
            with pytest.raises(ClientError) as exc:
                s3.create_multipart_upload(Bucket="pemilu", Key=key)
            assert (_status(exc.value), exc.value.response["Error"]["Code"]) == (400, code)
        # The primary is not taken for down: the next write is acknowledged.
        s3.put_object(Bucket="pemilu", Key="fine.txt", Body=b"fine\n")
    for key in refused:
        assert _rows(config, key) == {}, key
    assert [p.name for p in (tmp_path / "prim").iterdir()] == ["fine.txt"]
    held = _direct(s3_server).list_objects_v2(Bucket="gw-writes", Prefix="never/")
    assert [o["Key"] for o in held.get("Contents", [])] == ["never/fine.txt"]
    assert [w["key"] for w in _writes(config)] == ["fine.txt"]


# ------------------------------------------------------------------ bodies that lie


def _signed_request(
    endpoint: str, key: str, headers: dict[str, str], payload_hash: str
) -> dict[str, str]:
    """Headers of a PUT to pemilu/KEY signed (SigV4) with ``payload_hash`` as its
    x-amz-content-sha256."""

    class _Auth(S3SigV4Auth):  # type: ignore[misc]
        def payload(self, request: Any) -> str:
            return payload_hash

    url = f"{endpoint}/pemilu/{urllib.parse.quote(key)}"
    req = AWSRequest(method="PUT", url=url, headers=headers)
    _Auth(Credentials(KEY_ID, SECRET), "s3", "us-east-1").add_auth(req)
    return dict(req.headers.items())


def _send(endpoint: str, key: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    host = urllib.parse.urlsplit(endpoint)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
    try:
        conn.request("PUT", f"/pemilu/{urllib.parse.quote(key)}", body=body, headers=headers)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def _chunked(data: bytes, size: int, sign: Any = None, trailer: bytes = b"") -> bytes:
    out = b""
    pieces = [data[i : i + size] for i in range(0, len(data), size)] + [b""]
    for piece in pieces:
        ext = f";chunk-signature={sign(piece)}".encode() if sign else b""
        out += f"{len(piece):x}".encode() + ext + b"\r\n" + piece
        out += b"\r\n" if piece else b""
    return out + trailer + b"\r\n"


def _chunk_signer(headers: dict[str, str]) -> Any:
    seed = headers["Authorization"].rpartition("Signature=")[2]
    stamp = headers["X-Amz-Date"]
    key = signing_key(SecretStr(SECRET), stamp[:8], "us-east-1")
    scope = f"{stamp[:8]}/us-east-1/s3/aws4_request"
    state = {"previous": seed}

    def sign(piece: bytes) -> str:
        text = "\n".join([
            "AWS4-HMAC-SHA256-PAYLOAD", stamp, scope, state["previous"],
            hashlib.sha256(b"").hexdigest(), hashlib.sha256(piece).hexdigest(),
        ])  # fmt: skip
        state["previous"] = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
        return state["previous"]

    return sign


def test_bodies_that_break_their_promises_are_refused_and_never_vouched(tmp_path: Path) -> None:
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep")]
    config = _config(tmp_path, stores, {
        "pemilu": 'replicas = ["prim", "rep"]\nwritable = true',
        "frozen": 'replicas = ["prim", "rep"]',
    })  # fmt: skip
    data = os.urandom(200 * 1024 + 3)
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        refused: list[tuple[str, int, bytes]] = []

        # x-amz-content-sha256 signed for other bytes than sent.
        h = _signed_request(endpoint, "k1", {}, _sha(b"other bytes"))
        refused.append(("k1", *_send(endpoint, "k1", h, data)))
        # Content-MD5 and a checksum header that do not match (boto3 sends them as given).
        with pytest.raises(ClientError) as exc:
            s3.put_object(
                Bucket="pemilu", Key="k2", Body=data, ContentMD5="AAAAAAAAAAAAAAAAAAAAAA=="
            )
        assert (_status(exc.value), exc.value.response["Error"]["Code"]) == (400, "BadDigest")
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket="pemilu", Key="k3", Body=data, ChecksumCRC32="AAAAAA==")
        assert (_status(exc.value), exc.value.response["Error"]["Code"]) == (400, "BadDigest")
        # aws-chunked, every chunk signed: the signatures checked, one altered byte refused.
        base = {
            "Content-Encoding": "aws-chunked",
            "x-amz-decoded-content-length": str(len(data)),
        }
        h = _signed_request(endpoint, "k4", base, payload.SIGNED_CHUNKS)
        body = _chunked(data, 64 * 1024, _chunk_signer(h))
        assert _send(endpoint, "k4-good-name", h, body)[0] == 403  # signed for another key
        assert _send(endpoint, "k4", h, body)[0] == 200
        h = _signed_request(endpoint, "k5", base, payload.SIGNED_CHUNKS)
        body = _chunked(data, 64 * 1024, _chunk_signer(h))
        tampered = body.replace(data[70000:70010], bytes(10), 1)
        refused.append(("k5", *_send(endpoint, "k5", h, tampered)))
        # aws-chunked with an unsigned CRC32 trailer (over loopback): checked.
        trailer_headers = {**base, "x-amz-trailer": "x-amz-checksum-crc32"}
        h = _signed_request(endpoint, "k6", trailer_headers, payload.UNSIGNED_TRAILER)
        good = _chunked(data, 64 * 1024, trailer=f"x-amz-checksum-crc32:{crc}\r\n".encode())
        assert _send(endpoint, "k6", h, good)[0] == 200
        h = _signed_request(endpoint, "k7", trailer_headers, payload.UNSIGNED_TRAILER)
        bad = _chunked(data, 64 * 1024, trailer=b"x-amz-checksum-crc32:AAAAAA==\r\n")
        refused.append(("k7", *_send(endpoint, "k7", h, bad)))

        # A CRC32C trailer (google-crc32c computes it), and a presigned PUT (unsigned body,
        # accepted from this machine).
        crc32c = base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()
        c_headers = {**base, "x-amz-trailer": "x-amz-checksum-crc32c"}
        h = _signed_request(endpoint, "k9", c_headers, payload.UNSIGNED_TRAILER)
        good = _chunked(data, 64 * 1024, trailer=f"x-amz-checksum-crc32c:{crc32c}\r\n".encode())
        assert _send(endpoint, "k9", h, good)[0] == 200
        url = s3.generate_presigned_url("put_object", Params={"Bucket": "pemilu", "Key": "k10"})
        request = urllib.request.Request(url, data=b"presigned\n", method="PUT")
        with urllib.request.urlopen(request, timeout=30) as reply:
            assert reply.status == 200
        assert s3.get_object(Bucket="pemilu", Key="k10")["Body"].read() == b"presigned\n"

        assert [(k, status) for k, status, _ in refused] == [("k1", 400), ("k5", 403), ("k7", 400)]
        assert b"XAmzContentSHA256Mismatch" in refused[0][2] and b"BadDigest" in refused[2][2]
        for key in ("k1", "k2", "k3", "k5", "k7"):
            with pytest.raises(ClientError) as exc:
                s3.head_object(Bucket="pemilu", Key=key)
            assert _status(exc.value) == 404, key
            assert not (tmp_path / "prim" / key).exists() and not (tmp_path / "rep" / key).exists()
            assert _rows(config, key) == {}, key
        for key in ("k4", "k6", "k9"):
            assert s3.get_object(Bucket="pemilu", Key=key)["Body"].read() == data
            assert _rows(config, key) == {"rep:": ("done", _sha(data), None)}

        # A bucket without writable = true is read-only, as before.
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket="frozen", Key="k8", Body=b"x")
        assert (_status(exc.value), exc.value.response["Error"]["Code"]) == (
            405,
            "MethodNotAllowed",
        )
        # Keys that would name another object somewhere, or daulat's own files: refused.
        hostile = ["a/../b", "a//b", "./a", "/lead", "trail/", ".daulat/x", ".DAULAT/keys",
                   "x/.Daulat/y", "nul\x00", "k" * 1100, "cafe\u0301", "rtl\u202etxt.exe"]  # fmt: skip
        for key in hostile:
            with pytest.raises(ClientError) as exc:
                s3.put_object(Bucket="pemilu", Key=key, Body=b"hostile")
            assert _status(exc.value) == 400, key
        for bad_upload in ("a//b", ".daulat/m"):
            with pytest.raises(ClientError) as exc:
                s3.create_multipart_upload(Bucket="pemilu", Key=bad_upload)
            assert _status(exc.value) == 400
    written = sorted(str(p.relative_to(tmp_path / "prim")) for p in (tmp_path / "prim").rglob("*"))
    assert written == ["k10", "k4", "k6", "k9"]
    # A client that cannot sign the body may send it unsigned only over TLS or loopback.
    signed = Signed(payload.UNSIGNED, "20260101T000000Z", "20260101/us-east-1/s3/aws4_request", "")
    with pytest.raises(AuthError):
        payload.promises(signed, {}, secure=False)


def test_chunk_signatures_follow_the_aws_example() -> None:
    """AWS's documented example of a chunk-signed upload (sigv4-streaming): 65,536 + 1,024
    bytes of 'a', secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY, 2013-05-24."""
    key = signing_key(
        SecretStr("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"), "20130524", "us-east-1"
    )
    seed = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    signed = Signed(
        payload.SIGNED_CHUNKS, "20130524T000000Z", "20130524/us-east-1/s3/aws4_request", seed, key
    )
    body = (
        b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
        b"\r\n" + b"a" * 65536 + b"\r\n"
        b"400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
        b"\r\n" + b"a" * 1024 + b"\r\n"
        b"0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"
        b"\r\n\r\n"
    )
    headers = {"content-encoding": ["aws-chunked"], "x-amz-decoded-content-length": ["66560"]}
    promises = payload.promises(signed, headers, secure=False)

    async def decode(raw: bytes) -> bytes:
        messages = iter(
            {"type": "http.request", "body": raw[i : i + 7000], "more_body": i + 7000 < len(raw)}
            for i in range(0, len(raw), 7000)
        )

        async def receive() -> dict[str, Any]:
            return next(messages)

        return b"".join([p async for p in payload.body(receive, promises, StreamHasher())])

    assert asyncio.run(decode(body)) == b"a" * 66560
    with pytest.raises(AuthError):
        asyncio.run(decode(body.replace(b"a" * 1024, b"b" + b"a" * 1023)))


# ------------------------------------------------------------------------------ multipart


def test_multipart_uploads_boto3_and_the_aws_cli(tmp_path: Path, s3_server: S3Server) -> None:
    stores = [
        fs_store_config(tmp_path / "prim", "prim"),
        s3_store_config(s3_server, "vault", "gw-writes-mp"),
    ]
    config = _config(tmp_path, stores, {"pemilu": 'replicas = ["prim", "vault"]\nwritable = true'})
    # What a killed gateway left in the spool is removed at the next start.
    left = tmp_path / ".daulat" / "gateway-spool" / "999999-dead" / "upload"
    left.mkdir(parents=True)
    (left / "00001.part").write_bytes(b"left behind")
    data = os.urandom(12 * MiB + 17)
    (tmp_path / "big.bin").write_bytes(data)
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        five = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
        s3.upload_file(str(tmp_path / "big.bin"), "pemilu", "boto/big.bin", Config=five)
        assert not left.parent.exists()
        env = _aws_env(tmp_path)
        aws = [sys.executable, "-m", "awscli", "--endpoint-url", endpoint]
        _run([*aws, "s3", "cp", str(tmp_path / "big.bin"), "s3://pemilu/cli/big.bin"], env)
        for key in ("boto/big.bin", "cli/big.bin"):
            got = s3.get_object(Bucket="pemilu", Key=key)
            assert _sha(got["Body"].read()) == _sha(data) and got["ETag"] == f'"{_sha(data)}"'
            assert _rows(config, key) == {"vault:": ("done", _sha(data), None)}
            assert _chunk_count(config, key) == 2
            held = _direct(s3_server).get_object(Bucket="gw-writes-mp", Key=key)["Body"].read()
            assert _sha(held) == _sha(data)
        # Parts are checked as S3 checks them; ListParts and AbortMultipartUpload work.
        up = s3.create_multipart_upload(Bucket="pemilu", Key="m.bin")["UploadId"]
        e1 = s3.upload_part(
            Bucket="pemilu", Key="m.bin", UploadId=up, PartNumber=1, Body=b"x" * 100
        )["ETag"]
        e2 = s3.upload_part(Bucket="pemilu", Key="m.bin", UploadId=up, PartNumber=2, Body=b"y")[
            "ETag"
        ]
        assert len(e1.strip('"')) == 64
        parts = s3.list_parts(Bucket="pemilu", Key="m.bin", UploadId=up)["Parts"]
        assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, 100), (2, 1)]
        for wrong, code in [
            ([{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}], "InvalidPartOrder"),
            ([{"PartNumber": 1, "ETag": e2}], "InvalidPart"),
            ([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}], "EntityTooSmall"),
        ]:
            with pytest.raises(ClientError) as exc:
                s3.complete_multipart_upload(
                    Bucket="pemilu", Key="m.bin", UploadId=up, MultipartUpload={"Parts": wrong}
                )
            assert exc.value.response["Error"]["Code"] == code
        s3.abort_multipart_upload(Bucket="pemilu", Key="m.bin", UploadId=up)
        with pytest.raises(ClientError) as exc:
            s3.list_parts(Bucket="pemilu", Key="m.bin", UploadId=up)
        assert exc.value.response["Error"]["Code"] == "NoSuchUpload"
        with pytest.raises(ClientError) as exc:
            s3.head_object(Bucket="pemilu", Key="m.bin")
        assert _status(exc.value) == 404
        spool = tmp_path / ".daulat" / "gateway-spool"
        (mine,) = [p for p in spool.iterdir() if p.is_dir()]
        assert list(mine.iterdir()) == [] and oct(mine.stat().st_mode & 0o777) == "0o700"


def test_a_part_sent_again_reuses_its_bytes_in_a_spool_more_than_half_full(
    tmp_path: Path,
) -> None:
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep")]
    config = _config(
        tmp_path,
        stores,
        {"pemilu": 'replicas = ["prim", "rep"]\nwritable = true'},
        'write_spool = "6MiB"',
    )
    first, again, last = os.urandom(5 * MiB), os.urandom(5 * MiB), b"tail"
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        up = s3.create_multipart_upload(Bucket="pemilu", Key="m.bin")["UploadId"]
        s3.upload_part(Bucket="pemilu", Key="m.bin", UploadId=up, PartNumber=1, Body=first)
        # The client retries part 1: 5 + 5 MiB would pass 6 MiB, but the first goes.
        e1 = s3.upload_part(Bucket="pemilu", Key="m.bin", UploadId=up, PartNumber=1, Body=again)
        # A second part beside it still counts against the bound.
        with pytest.raises(ClientError) as exc:
            s3.upload_part(Bucket="pemilu", Key="m.bin", UploadId=up, PartNumber=2, Body=first)
        assert (_status(exc.value), exc.value.response["Error"]["Code"]) == (503, "SlowDown")
        e2 = s3.upload_part(Bucket="pemilu", Key="m.bin", UploadId=up, PartNumber=2, Body=last)
        parts = [{"PartNumber": 1, "ETag": e1["ETag"]}, {"PartNumber": 2, "ETag": e2["ETag"]}]
        s3.complete_multipart_upload(
            Bucket="pemilu", Key="m.bin", UploadId=up, MultipartUpload={"Parts": parts}
        )
        assert s3.get_object(Bucket="pemilu", Key="m.bin")["Body"].read() == again + last


def test_uploads_in_progress_are_bounded_and_idle_ones_expire(tmp_path: Path) -> None:
    import datetime as dt

    from daulat.gateway.spool import UPLOAD_IDLE, Spool, SpoolError

    spool = Spool(tmp_path, 1024, max_uploads=3)
    spool.start()
    try:
        uploads = [spool.create("pemilu", f"k{i}") for i in range(3)]
        with pytest.raises(SpoolError) as exc:
            spool.create("pemilu", "k3")
        assert (exc.value.status, exc.value.code) == (503, "SlowDown")
        assert "3 multipart uploads in progress" in exc.value.message
        # One left a day and a minute ago: aborted, its directory gone, room for another.
        stale = uploads[1]
        stale.started -= UPLOAD_IDLE + dt.timedelta(minutes=1)
        fresh = spool.create("pemilu", "k3")
        assert not stale.dir.exists() and stale.id not in spool.uploads
        assert {u.key for u in spool.uploads.values()} == {"k0", "k2", "k3"}
        assert fresh.dir.is_dir()
    finally:
        spool.close()


# ---------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "bucket_toml, message",
    [
        ('replicas = ["prim", "rep"]\nwritable = true\nquorum = 3', "quorum = 3 is more than"),
        ('replicas = ["prim", "rep"]\nwritable = true\nquorum = 0', "quorum"),
        ('replicas = ["prim", "rep"]\nwritable = "yes"', "writable"),
        ('replicas = ["prim", "rep"]\nwritable = true\nquorum = "2"', "quorum"),
        ('replicas = ["prim", "rep"]\nquorum = 2', "quorum = 2 needs writable = true"),
        # A write of report.csv to prim would overwrite prim:sub's sub/report.csv.
        ('replicas = ["prim", "prim:sub"]\nwritable = true', "lie one inside the other"),
        ('replicas = ["rep:a/b", "prim", "rep:a"]\nwritable = true', "'rep:a/b/' and 'rep:a/'"),
        # Two store names, one directory.
        ('replicas = ["prim", "alias"]\nwritable = true', "are the same place"),
    ],
)
def test_bad_write_config_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bucket_toml: str, message: str
) -> None:
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep")]
    stores.append(fs_store_config(tmp_path / "prim", "alias"))
    config = _config(tmp_path, stores, {"pemilu": bucket_toml})
    env = {**os.environ, "GW_KEY": KEY_ID, "GW_SECRET": SECRET}
    proc = subprocess.run(
        [sys.executable, "-m", "daulat", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_default_quorum_is_two_and_shown_in_the_banner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from daulat.config import load_config
    from daulat.gateway.config import gateway_config
    from daulat.gateway.server import banner

    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep")]
    config = _config(tmp_path, stores, {
        "pemilu": 'replicas = ["prim", "rep"]\nwritable = true',
        "solo": 'replicas = ["prim"]\nwritable = true',
        "frozen": 'replicas = ["prim", "rep"]',
    })  # fmt: skip
    monkeypatch.setenv("GW_KEY", KEY_ID)
    monkeypatch.setenv("GW_SECRET", SECRET)
    gw = gateway_config(load_config(config))
    assert {n: (b.writable, b.quorum) for n, b in gw.buckets.items()} == {
        "pemilu": (True, 2), "solo": (True, 1), "frozen": (False, 2),
    }  # fmt: skip
    assert "writes: pemilu (quorum 2), solo (quorum 1)" in banner(gw)


def test_sdk_bodies_over_tls_are_aws_chunked_with_a_checked_trailer(tmp_path: Path) -> None:
    """Over https botocore sends PutObject and UploadPart bodies as aws-chunked with an
    unsigned CRC32 trailer (STREAMING-UNSIGNED-PAYLOAD-TRAILER), as it does against S3."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(tmp_path / "gw.key"), "-out", str(tmp_path / "gw.crt"),
         "-days", "2", "-subj", "/CN=localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep")]
    tls = f'tls_cert = "{tmp_path / "gw.crt"}"\ntls_key = "{tmp_path / "gw.key"}"'
    config = _config(
        tmp_path, stores, {"pemilu": 'replicas = ["prim", "rep"]\nwritable = true'}, tls
    )
    data = os.urandom(11 * MiB + 3)
    (tmp_path / "big.bin").write_bytes(data)
    with gateway(config) as endpoint:
        s3 = boto3.client(
            "s3", endpoint_url=endpoint.replace("http://", "https://"), verify=False,
            aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET, region_name="us-east-1",
            config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )  # fmt: skip
        s3.put_object(Bucket="pemilu", Key="small.txt", Body=b"over tls\n")
        five = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
        s3.upload_file(str(tmp_path / "big.bin"), "pemilu", "big.bin", Config=five)
        assert s3.get_object(Bucket="pemilu", Key="small.txt")["Body"].read() == b"over tls\n"
        assert _sha(s3.get_object(Bucket="pemilu", Key="big.bin")["Body"].read()) == _sha(data)
        assert (tmp_path / "rep" / "big.bin").read_bytes() == data


def test_a_replica_altering_or_withholding_a_written_object_is_never_served(
    tmp_path: Path,
) -> None:
    """A provider that accepted a write and later alters or withholds it: the read path's
    chunk checks hold for written objects as for copied ones."""
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep1", "rep2")]
    config = _config(
        tmp_path, stores, {"pemilu": 'replicas = ["prim", "rep1", "rep2"]\nwritable = true'}
    )
    data = {"altered.bin": os.urandom(9 * MiB + 1), "withheld.txt": b"withheld\n"}
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        for key, body in data.items():
            s3.put_object(Bucket="pemilu", Key=key, Body=body)
        altered = bytearray((tmp_path / "rep1" / "altered.bin").read_bytes())
        altered[8 * MiB + 5] ^= 1
        (tmp_path / "rep1" / "altered.bin").write_bytes(bytes(altered))
        (tmp_path / "rep1" / "withheld.txt").unlink()
        (tmp_path / "prim").rename(tmp_path / "prim.off")
        for key, body in data.items():
            assert s3.get_object(Bucket="pemilu", Key=key)["Body"].read() == body, key
    found = {e["operation"]: e["details"] for e in _audit(config)}
    assert found["gateway.mismatch"]["replica"] == "rep1"
    assert found["gateway.mismatch"]["key"] == "altered.bin"
    assert found["gateway.withheld"]["key"] == "withheld.txt"


def test_a_replica_holding_age_copies_is_written_only_with_its_encrypt_to(
    tmp_path: Path,
) -> None:
    """Plaintext is never written beside a replica's ciphertext: a writable bucket whose
    replica holds age copies needs encrypt_to on that store (exit 2 at start otherwise)."""
    identity = tmp_path / "id.txt"
    recipient = new_identity(identity)
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "vault")]
    config = _config(
        tmp_path,
        stores,
        {"pemilu": 'replicas = ["prim", "vault"]\nwritable = true'},
        f'identity = "{identity}"',
    )
    (tmp_path / "prim" / "a.txt").write_bytes(b"copied encrypted\n")
    assert cli(["copy", "prim", "vault", "--encrypt-to", recipient, "--config", str(config)]) == 0
    env = {**os.environ, "GW_KEY": KEY_ID, "GW_SECRET": SECRET}
    proc = subprocess.run(
        [sys.executable, "-m", "daulat", "serve", "--config", str(config), "--listen",
         f"127.0.0.1:{_free_port()}"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "declares no encrypt_to" in proc.stderr and "Traceback" not in proc.stderr


def test_a_write_only_the_primary_took_is_never_listed_away_and_a_sync_is_seen_live(
    tmp_path: Path,
) -> None:
    """A write the quorum missed leaves the new bytes at the primary alone. With the primary
    down, a listing from the replica would leave the key out (a mirroring client would then
    delete it): 503. Once ``daulat sync`` (another process, the gateway still running) has
    copied it, the running gateway serves and lists it from the replica."""
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep")]
    config = _config(tmp_path, stores, {"pemilu": 'replicas = ["prim", "rep"]\nwritable = true'})
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        s3.put_object(Bucket="pemilu", Key="first.txt", Body=b"both hold it\n")
        (tmp_path / "rep").rename(tmp_path / "rep.off")
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket="pemilu", Key="only-primary.txt", Body=b"quorum missed\n")
        assert _status(exc.value) == 503
        assert (tmp_path / "prim" / "only-primary.txt").read_bytes() == b"quorum missed\n"
        (tmp_path / "rep.off").rename(tmp_path / "rep")
        (tmp_path / "prim").rename(tmp_path / "prim.off")
        deadline = time.monotonic() + 90
        while True:  # until the gateway's probe finds the replica back
            with pytest.raises(ClientError) as exc:
                s3.list_objects_v2(Bucket="pemilu")
            assert _status(exc.value) == 503
            message = exc.value.response["Error"]["Message"]
            if "rep: down" not in message or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert "only-primary.txt" in message, message
        (tmp_path / "prim.off").rename(tmp_path / "prim")
        assert cli(["sync", "prim", "rep", "--config", str(config)]) == 0
        (tmp_path / "prim").rename(tmp_path / "prim.off")
        got = s3.get_object(Bucket="pemilu", Key="only-primary.txt")
        assert got["Body"].read() == b"quorum missed\n"
        listed = [o["Key"] for o in s3.list_objects_v2(Bucket="pemilu")["Contents"]]
        assert listed == ["first.txt", "only-primary.txt"]
