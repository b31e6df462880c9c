"""``daulat serve``: the S3 gateway over verified replicas, with real parts: the gateway runs as
``python -m daulat serve`` on 127.0.0.1, replicas live on the filesystem and on the SeaweedFS
the suite starts (behind the fault-injecting proxy where a replica must die or refuse), and the
client is boto3."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from conftest import fs_store_config, s3_store_config
from faultproxy import fault_proxy
from servers import MotoServer, S3Server

from daulat.cli import run as cli
from daulat.crypto import new_identity

MiB = 1024 * 1024
KEY_ID, SECRET = "GWTESTKEY", "gw-test-secret-0123456789"
pytestmark = pytest.mark.timeout(300)


def _toml(stores: list[dict[str, Any]], buckets: dict[str, list[str]], gateway: str = "") -> str:
    out = []
    for raw in stores:
        out.append(f"[stores.{raw['name']}]")
        out += [f"{k} = {json.dumps(v)}" for k, v in raw.items() if k not in ("name", "credentials")]
        if "credentials" in raw:
            out.append(f"[stores.{raw['name']}.credentials]")
            out += [f"{k} = {json.dumps(v)}" for k, v in raw["credentials"].items()]
    out += ["[gateway]", 'access_key_id = "${GW_KEY}"', 'secret_access_key = "${GW_SECRET}"']
    out.append(gateway)
    for name, replicas in buckets.items():
        out += [f"[gateway.buckets.{name}]", f"replicas = {json.dumps(replicas)}"]
    return "\n".join(out) + "\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def gateway(config: Path) -> Iterator[str]:
    """Run ``daulat serve`` on a free port; yield its endpoint URL; SIGTERM it afterwards."""
    port = _free_port()
    env = {**os.environ, "GW_KEY": KEY_ID, "GW_SECRET": SECRET}
    log = config.parent / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daulat", "serve", "--config", str(config),
             "--listen", f"127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"daulat serve did not start: {log.read_text()}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        text = log.read_text()
        assert "Traceback" not in text, text
        assert code == 143, (code, text)
        assert "stopped by SIGTERM: daulat serve took no new requests" in text, text
        # Uploads in progress outlive the gateway (see spool.py): it must not say otherwise.
        assert "multipart uploads in progress are kept" in " ".join(text.split()), text
        assert "keeps nothing to resume" not in text, text
        assert "resume:" not in text, text


def client(endpoint: str, secret: str = SECRET) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=BotoConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        ),
    )


def _copy(config: Path, src: str, dst: str, *extra: str) -> None:
    assert cli(["copy", src, dst, "--config", str(config), *extra]) == 0


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _audit(config: Path) -> list[dict[str, Any]]:
    path = config.parent / ".daulat" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _status(exc: ClientError) -> int:
    return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])


# ----------------------------------------------------------------------------------- fixtures


@pytest.fixture
def objects() -> dict[str, bytes]:
    big = os.urandom(20 * MiB + 4321)  # three chunks of 8 MiB, the last one short
    return {
        "a.txt": b"hello world\n",
        "dir/b.bin": big,
        "dir/sub/c.txt": b"c" * 10,
        "dir/sub/d.txt": b"d" * 11,
        "empty": b"",
        "z/ünï cödé ✓.txt": "ünï".encode(),
    }


def _fill(root: Path, objects: dict[str, bytes]) -> None:
    for key, data in objects.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


# -------------------------------------------------------------------------------------- tests


def test_list_get_head_range_conditional(
    tmp_path: Path, s3_server: S3Server, objects: dict[str, bytes]
) -> None:
    _fill(tmp_path / "prim", objects)
    stores = [
        fs_store_config(tmp_path / "prim", "prim"),
        s3_store_config(s3_server, "vault", "gw-basic", "arsip"),
    ]
    config = tmp_path / "daulat.toml"
    config.write_text(_toml(stores, {"pemilu": ["prim", "vault:arsip"]}))
    _copy(config, "prim", "vault:arsip")
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["pemilu"]
        s3.head_bucket(Bucket="pemilu")
        assert s3.get_bucket_location(Bucket="pemilu")["LocationConstraint"] in (None, "")

        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket="pemilu", PaginationConfig={"PageSize": 2}
        )
        listed = [o for p in pages for o in p.get("Contents", [])]
        assert [o["Key"] for o in listed] == sorted(objects)
        assert {o["Key"]: o["Size"] for o in listed} == {k: len(v) for k, v in objects.items()}
        for o in listed:  # the ETag of a verified object: its SHA-256, never 32 hex digits
            assert o["ETag"] == f'"{_sha(objects[o["Key"]])}"'
        top = s3.list_objects_v2(Bucket="pemilu", Delimiter="/")
        assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["dir/", "z/"]
        assert [o["Key"] for o in top["Contents"]] == ["a.txt", "empty"]
        sub = s3.list_objects_v2(Bucket="pemilu", Prefix="dir/", Delimiter="/", MaxKeys=1)
        assert sub["IsTruncated"] and [o["Key"] for o in sub["Contents"]] == ["dir/b.bin"]
        rest = s3.list_objects_v2(
            Bucket="pemilu", Prefix="dir/", Delimiter="/",
            ContinuationToken=sub["NextContinuationToken"],
        )
        assert [p["Prefix"] for p in rest["CommonPrefixes"]] == ["dir/sub/"]
        after = s3.list_objects_v2(Bucket="pemilu", StartAfter="dir/sub/c.txt")
        assert [o["Key"] for o in after["Contents"]] == ["dir/sub/d.txt", "empty", "z/ünï cödé ✓.txt"]
        v1 = s3.list_objects(Bucket="pemilu", Prefix="z/")
        assert [o["Key"] for o in v1["Contents"]] == ["z/ünï cödé ✓.txt"]

        for key, data in objects.items():
            got = s3.get_object(Bucket="pemilu", Key=key)
            assert got["Body"].read() == data, key
            assert got["ContentLength"] == len(data)
            assert got["ETag"] == f'"{_sha(data)}"'
        big = objects["dir/b.bin"]
        for first, last in [(0, 0), (8 * MiB - 3, 8 * MiB + 2), (100, 17 * MiB), (20 * MiB, len(big) - 1)]:
            got = s3.get_object(Bucket="pemilu", Key="dir/b.bin", Range=f"bytes={first}-{last}")
            assert got["Body"].read() == big[first : last + 1]
            assert got["ContentRange"] == f"bytes {first}-{last}/{len(big)}"
        tail = s3.get_object(Bucket="pemilu", Key="dir/b.bin", Range="bytes=-10")
        assert tail["Body"].read() == big[-10:]

        head = s3.head_object(Bucket="pemilu", Key="dir/b.bin")
        etag = head["ETag"]
        assert head["ContentLength"] == len(big) and len(etag.strip('"')) == 64
        with pytest.raises(ClientError) as exc:
            s3.get_object(Bucket="pemilu", Key="dir/b.bin", IfNoneMatch=etag)
        assert _status(exc.value) == 304
        with pytest.raises(ClientError) as exc:
            s3.get_object(Bucket="pemilu", Key="a.txt", IfMatch='"nope"')
        assert _status(exc.value) == 412
        assert s3.get_object(Bucket="pemilu", Key="a.txt", IfMatch=s3.head_object(
            Bucket="pemilu", Key="a.txt")["ETag"])["Body"].read() == objects["a.txt"]
        with pytest.raises(ClientError) as exc:
            s3.get_object(Bucket="pemilu", Key="a.txt", IfModifiedSince=head["LastModified"].replace(year=2999))
        assert _status(exc.value) == 304
        with pytest.raises(ClientError) as exc:
            s3.get_object(Bucket="pemilu", Key="a.txt", Range="bytes=500-600")
        assert exc.value.response["Error"]["Code"] == "InvalidRange"
        with pytest.raises(ClientError) as exc:
            s3.get_object(Bucket="pemilu", Key="missing")
        assert exc.value.response["Error"]["Code"] == "NoSuchKey"
        with pytest.raises(ClientError) as exc:
            s3.list_objects_v2(Bucket="other")
        assert exc.value.response["Error"]["Code"] == "NoSuchBucket"
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket="pemilu", Key="new", Body=b"x")
        assert _status(exc.value) == 405
        # daulat's own files beside the data are neither listed nor served.
        with pytest.raises(ClientError):
            s3.get_object(Bucket="pemilu", Key=".daulat/keys/signing")


def test_unauthorised_clients_get_403(tmp_path: Path, objects: dict[str, bytes]) -> None:
    _fill(tmp_path / "prim", objects)
    config = tmp_path / "daulat.toml"
    config.write_text(_toml([fs_store_config(tmp_path / "prim", "prim")], {"pemilu": ["prim"]}))
    with gateway(config) as endpoint:
        with pytest.raises(ClientError) as exc:
            client(endpoint, secret="wrong-secret").get_object(Bucket="pemilu", Key="a.txt")
        assert _status(exc.value) == 403
        assert exc.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
        # No signature at all.
        with pytest.raises(urllib.error.HTTPError) as http:
            urllib.request.urlopen(f"{endpoint}/pemilu/a.txt")
        assert http.value.code == 403 and b"hello" not in http.value.read()
        s3 = client(endpoint)
        url = s3.generate_presigned_url(
            "get_object", Params={"Bucket": "pemilu", "Key": "a.txt"}, ExpiresIn=60
        )
        assert urllib.request.urlopen(url).read() == objects["a.txt"]
        # A tampered presigned URL (another key, same signature) and an expired one.
        with pytest.raises(urllib.error.HTTPError) as http:
            urllib.request.urlopen(url.replace("/a.txt?", "/empty?"))
        assert http.value.code == 403
        expired = s3.generate_presigned_url(
            "get_object", Params={"Bucket": "pemilu", "Key": "a.txt"}, ExpiresIn=1
        )
        time.sleep(2.1)
        with pytest.raises(urllib.error.HTTPError) as http:
            urllib.request.urlopen(expired)
        assert http.value.code == 403 and b"expired" in http.value.read()


def test_replica_dies_mid_get_same_response_continues(
    tmp_path: Path, s3_server: S3Server, objects: dict[str, bytes]
) -> None:
    """The primary's endpoint dies in the middle of a GET: the client receives every byte,
    from the next replica, in the same response; the failover is audited."""
    big = objects["dir/b.bin"]
    with fault_proxy(s3_server.endpoint) as proxy:
        prim = s3_store_config(s3_server, "prim", "gw-dies")
        prim["endpoint"] = proxy.endpoint
        prim["request_timeout"] = 5
        stores = [prim, fs_store_config(tmp_path / "rep", "rep")]
        config = tmp_path / "daulat.toml"
        config.write_text(_toml(stores, {"pemilu": ["prim", "rep"]}))
        _fill(tmp_path / "seed", objects)
        stores.append(fs_store_config(tmp_path / "seed", "seed"))
        config.write_text(_toml(stores, {"pemilu": ["prim", "rep"]}))
        _copy(config, "seed", "prim")
        _copy(config, "prim", "rep")
        with gateway(config) as endpoint:
            s3 = client(endpoint)
            proxy.response_rate = 4 * MiB  # five seconds for the whole object
            body = s3.get_object(Bucket="pemilu", Key="dir/b.bin")["Body"]
            first = body.read(2 * MiB)
            threading.Thread(target=proxy.stop, daemon=True).start()  # the endpoint dies
            rest = body.read()
            assert _sha(first + rest) == _sha(big)
            # The primary stays dead: reads and listings come from the replica.
            assert s3.get_object(Bucket="pemilu", Key="a.txt")["Body"].read() == objects["a.txt"]
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket="pemilu")["Contents"]]
            assert keys == sorted(objects)
            # Every replica gone: S3's 503, at once, no hang.
            (tmp_path / "rep" / "a.txt").unlink()
            started = time.monotonic()
            with pytest.raises(ClientError) as exc:
                s3.get_object(Bucket="pemilu", Key="a.txt")
            assert _status(exc.value) == 503 and time.monotonic() - started < 10
    ops = [e["operation"] for e in _audit(config)]
    assert "gateway.failover" in ops
    failover = next(e for e in _audit(config) if e["operation"] == "gateway.failover")
    assert failover["details"]["replica"] == "prim" and failover["details"]["offset"] > 0


def test_altered_replica_never_served(
    tmp_path: Path, s3_server: S3Server, objects: dict[str, bytes]
) -> None:
    """The primary refuses (403); one replica holds other bytes of the same size: a small
    object and a large one (its second chunk altered) both come from the next replica
    unnoticed, since no chunk is sent before it matched; the next requests read the intact
    replica only."""
    big = objects["dir/b.bin"]
    with fault_proxy(s3_server.endpoint) as proxy:
        prim = s3_store_config(s3_server, "prim", "gw-altered")
        prim["endpoint"] = proxy.endpoint
        stores = [
            prim,
            fs_store_config(tmp_path / "a", "a"),
            fs_store_config(tmp_path / "b", "b"),
            fs_store_config(tmp_path / "seed", "seed"),
        ]
        _fill(tmp_path / "seed", objects)
        config = tmp_path / "daulat.toml"
        config.write_text(_toml(stores, {"pemilu": ["prim", "a", "b"]}))
        _copy(config, "seed", "prim")
        _copy(config, "prim", "a")
        _copy(config, "prim", "b")
        (tmp_path / "a" / "a.txt").write_bytes(b"HELLO WORLD\n")  # same size, other bytes
        altered = bytearray(big)
        altered[9 * MiB] ^= 0xFF  # one byte of the second chunk
        (tmp_path / "a" / "dir" / "b.bin").write_bytes(altered)
        proxy.mode = "deny"  # the primary's provider refuses every request
        with gateway(config) as endpoint:
            s3 = client(endpoint)
            assert s3.get_object(Bucket="pemilu", Key="a.txt")["Body"].read() == b"hello world\n"
            assert _sha(s3.get_object(Bucket="pemilu", Key="dir/b.bin")["Body"].read()) == _sha(big)
            assert _sha(s3.get_object(Bucket="pemilu", Key="dir/b.bin")["Body"].read()) == _sha(big)
            got = s3.get_object(Bucket="pemilu", Key="dir/b.bin", Range="bytes=9437180-9437190")
            assert got["Body"].read() == big[9437180:9437191]
    entries = _audit(config)
    mismatches = [e["details"] for e in entries if e["operation"] == "gateway.mismatch"]
    assert {(m["key"], m["replica"]) for m in mismatches} == {("a.txt", "a"), ("dir/b.bin", "a")}
    assert any(e["operation"] == "gateway.revoked" and e["details"]["replica"] == "prim" for e in entries)


def test_manifests_believed_only_from_pinned_signers(
    tmp_path: Path, s3_server: S3Server, objects: dict[str, bytes]
) -> None:
    """As restore and verify, the gateway believes a replica's signed manifest only when its
    signer is pinned in ``signers``; the state directory's own key is not enough (whoever can
    write that directory could vouch for anything). Here the journal is gone, so the replica's
    manifest is its only proof: unpinned, the primary refusing means 503; pinned, it serves."""
    from daulat.signing import existing_local_key, signers_line

    with fault_proxy(s3_server.endpoint) as proxy:
        prim = s3_store_config(s3_server, "prim", "gw-pinned")
        prim["endpoint"] = proxy.endpoint
        stores = [prim, fs_store_config(tmp_path / "rep", "rep"), fs_store_config(tmp_path / "seed", "seed")]
        _fill(tmp_path / "seed", {"a.txt": objects["a.txt"]})
        config = tmp_path / "daulat.toml"
        config.write_text(_toml(stores, {"pemilu": ["prim", "rep"]}))
        _copy(config, "seed", "prim")
        _copy(config, "prim", "rep")
        for journal in (tmp_path / ".daulat").glob("transfers.sqlite*"):
            journal.unlink()
        own = existing_local_key(tmp_path / ".daulat")
        assert own is not None
        proxy.mode = "deny"
        with gateway(config) as endpoint:
            with pytest.raises(ClientError) as exc:
                client(endpoint).get_object(Bucket="pemilu", Key="a.txt")
            assert _status(exc.value) == 503
        log = "".join(p.read_text() for p in tmp_path.glob("serve-*.log"))
        assert "no pinned signer" in log and signers_line([own]) in log
        config.write_text(signers_line([own]) + "\n" + config.read_text())
        with gateway(config) as endpoint:
            got = client(endpoint).get_object(Bucket="pemilu", Key="a.txt")
            assert got["Body"].read() == objects["a.txt"]


def test_revocation_shown_in_stores_and_report(
    tmp_path: Path, s3_server: S3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    """The gateway's latest finding per store (from its audit entries) is shown by
    ``daulat stores`` (text and JSON) and the report: revoked while the primary refuses,
    recovered once it answers again."""
    with fault_proxy(s3_server.endpoint) as proxy:
        prim = s3_store_config(s3_server, "prim", "gw-standing")
        prim["endpoint"] = proxy.endpoint
        prim["request_timeout"] = 5
        stores = [prim, fs_store_config(tmp_path / "rep", "rep"), fs_store_config(tmp_path / "seed", "seed")]
        _fill(tmp_path / "seed", {"a.txt": b"hello world\n"})
        config = tmp_path / "daulat.toml"
        config.write_text(_toml(stores, {"pemilu": ["prim", "rep"]}))
        _copy(config, "seed", "prim")
        _copy(config, "prim", "rep")

        def standing() -> dict[str, Any]:
            capsys.readouterr()
            cli(["stores", "--json", "--config", str(config)])
            return {r["name"]: r["gateway"] for r in json.loads(capsys.readouterr().out)}

        assert standing()["prim"] is None
        proxy.mode = "deny"
        with gateway(config) as endpoint:
            s3 = client(endpoint)
            assert s3.get_object(Bucket="pemilu", Key="a.txt")["Body"].read() == b"hello world\n"
            deadline = time.monotonic() + 10
            while (now := standing())["prim"] is None and time.monotonic() < deadline:
                time.sleep(0.2)  # the audit entry is written off the gateway's event loop
            assert now["prim"]["state"] == "revoked" and now["rep"] is None
            assert "403" in now["prim"]["error"]
            capsys.readouterr()
            cli(["stores", "--config", str(config)])
            text = " ".join(capsys.readouterr().out.split())
            assert "prim: the gateway last found it refused access (revoked)" in text
            assert cli(["report", "-o", str(tmp_path / "r.json"), "--format", "json",
                        "--config", str(config)]) == 0
            rows = {r["name"]: r for r in json.loads((tmp_path / "r.json").read_text())["stores"]}
            assert rows["prim"]["gateway"]["state"] == "revoked"
            assert cli(["report", "-o", str(tmp_path / "r.html"), "--config", str(config)]) == 0
            html = (tmp_path / "r.html").read_text()
            assert "As the gateway last found them" in html and ">revoked<" in html
            proxy.mode = "pass"  # access restored: after the cool-down, a probe (in the
            time.sleep(2.5)      # background, started by a request) finds it back
            deadline = time.monotonic() + 20
            while standing()["prim"]["state"] != "recovered" and time.monotonic() < deadline:
                assert s3.get_object(Bucket="pemilu", Key="a.txt")["Body"].read() == b"hello world\n"
                time.sleep(0.5)
        assert standing()["prim"]["state"] == "recovered"


def test_listing_pages_from_the_primary_cost_a_page(tmp_path: Path, s3_server: S3Server) -> None:
    """With an S3 primary, a page of the listing starts at the primary where the page starts
    (start-after), so a page deep into a large prefix costs about a page of listing; pages
    with and without a delimiter equal SeaweedFS's own listing (daulat's files excepted)."""
    from concurrent.futures import ThreadPoolExecutor

    with fault_proxy(s3_server.endpoint) as proxy:
        prim = s3_store_config(s3_server, "prim", "gw-paging")
        prim["endpoint"] = proxy.endpoint
        config = tmp_path / "daulat.toml"
        config.write_text(_toml([prim], {"pemilu": ["prim"]}))
        direct = boto3.client(
            "s3", endpoint_url=s3_server.endpoint, aws_access_key_id=s3_server.access_key_id,
            aws_secret_access_key=s3_server.secret_access_key, region_name="us-east-1",
            config=BotoConfig(s3={"addressing_style": "path"}, max_pool_connections=16),
        )
        keys = [f"many/{i:04d}" for i in range(1100)] + ["a.txt", "dir/x/1", "dir/x/2", "dir/y", "z"]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: direct.put_object(Bucket="gw-paging", Key=k, Body=b"x"), keys))
        direct.put_object(Bucket="gw-paging", Key=".daulat/manifest-x.jsonl", Body=b"{}")

        def pages(s3: Any, bucket: str, **kw: Any) -> tuple[list[str], list[str]]:
            keys: list[str] = []
            prefixes: list[str] = []
            size = kw["PaginationConfig"]["PageSize"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, **kw):
                assert page["KeyCount"] <= size
                keys += [o["Key"] for o in page.get("Contents", [])]
                prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
            # daulat's own files are never listed by the gateway.
            return [k for k in keys if not k.startswith(".daulat/")], [
                p for p in prefixes if p != ".daulat/"
            ]

        with gateway(config) as endpoint:
            s3 = client(endpoint)
            for kw in (
                {"Delimiter": "/", "PaginationConfig": {"PageSize": 2}},
                {"Prefix": "many/", "PaginationConfig": {"PageSize": 250}},
                {"Prefix": "dir/", "Delimiter": "/", "PaginationConfig": {"PageSize": 1}},
                {"StartAfter": "many/1050", "PaginationConfig": {"PageSize": 20}},
            ):
                assert pages(s3, "pemilu", **kw) == pages(direct, "gw-paging", **kw), kw
            before = proxy.stats["response_bytes"]
            full = s3.list_objects_v2(Bucket="pemilu")
            whole = proxy.stats["response_bytes"] - before
            assert full["KeyCount"] == 1000 and full["IsTruncated"]
            before = proxy.stats["response_bytes"]
            deep = s3.list_objects_v2(Bucket="pemilu", StartAfter="many/1090", MaxKeys=5)
            assert [o["Key"] for o in deep["Contents"]] == [f"many/{i}" for i in range(1091, 1096)]
            assert proxy.stats["response_bytes"] - before < whole / 10
            # Past a common prefix of 1,100 keys: the listing starts again after it.
            before = proxy.stats["response_bytes"]
            top = s3.list_objects_v2(Bucket="pemilu", Delimiter="/", StartAfter="dir/y", MaxKeys=5)
            assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["many/"]
            assert [o["Key"] for o in top["Contents"]] == ["z"]
            assert proxy.stats["response_bytes"] - before < whole / 10


def test_changed_at_primary_is_served_from_the_primary_only(
    tmp_path: Path, objects: dict[str, bytes]
) -> None:
    _fill(tmp_path / "prim", objects)
    stores = [fs_store_config(tmp_path / "prim", "prim"), fs_store_config(tmp_path / "rep", "rep")]
    config = tmp_path / "daulat.toml"
    config.write_text(_toml(stores, {"pemilu": ["prim", "rep"]}))
    _copy(config, "prim", "rep")
    (tmp_path / "prim" / "a.txt").write_bytes(b"changed at the primary, after the copy\n")
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        got = s3.get_object(Bucket="pemilu", Key="a.txt")
        assert got["Body"].read() == b"changed at the primary, after the copy\n"
        assert got["ETag"].strip('"') != _sha(objects["a.txt"])
        assert len(got["ETag"].strip('"')) != 32
        # The replica's (old) copy is not a copy of this version: the gateway says it serves
        # what no copy verifies, and with the primary's object gone the replica does not stand in.
        head = s3.head_object(Bucket="pemilu", Key="a.txt")
        assert head["ResponseMetadata"]["HTTPHeaders"].get("x-daulat-verified") == "false"
        (tmp_path / "prim" / "a.txt").unlink()
        with pytest.raises(ClientError) as exc:
            s3.get_object(Bucket="pemilu", Key="a.txt")
        assert exc.value.response["Error"]["Code"] == "NoSuchKey"


def test_encrypted_replica_served_decrypted(
    tmp_path: Path, s3_server: S3Server, objects: dict[str, bytes]
) -> None:
    identity = tmp_path / "id.txt"
    recipient = new_identity(identity)
    big = objects["dir/b.bin"]
    with fault_proxy(s3_server.endpoint) as proxy:
        prim = s3_store_config(s3_server, "prim", "gw-enc")
        prim["endpoint"] = proxy.endpoint
        stores = [prim, fs_store_config(tmp_path / "vault", "vault"), fs_store_config(tmp_path / "seed", "seed")]
        _fill(tmp_path / "seed", objects)
        config = tmp_path / "daulat.toml"
        config.write_text(_toml(stores, {"pemilu": ["prim", "vault"]}, f'identity = "{identity}"'))
        _copy(config, "seed", "prim")
        _copy(config, "prim", "vault", "--encrypt-to", recipient)
        assert big[:4096] not in (tmp_path / "vault" / "dir" / "b.bin").read_bytes()
        proxy.mode = "deny"
        with gateway(config) as endpoint:
            s3 = client(endpoint)
            assert _sha(s3.get_object(Bucket="pemilu", Key="dir/b.bin")["Body"].read()) == _sha(big)
            got = s3.get_object(Bucket="pemilu", Key="dir/b.bin", Range=f"bytes={17 * MiB}-{17 * MiB + 99}")
            assert got["Body"].read() == big[17 * MiB : 17 * MiB + 100]
            assert s3.get_object(Bucket="pemilu", Key="z/ünï cödé ✓.txt")["Body"].read() == "ünï".encode()


HOSTILE = ["a/../b.txt", "b.txt", "x/./y", "x/y", "100%2F.txt", "100/.txt", "a//b", "a/b",
           "/abs", "abs", "tr/", "sp ace+plus&eq=?#.txt", "caf\u00e9", "cafe\u0301", "dir/..",
           "..", "%2E%2E/up"]


def test_hostile_keys_served_exactly(tmp_path: Path, moto_server: MotoServer) -> None:
    """Keys are taken from the raw path: '..', '.', '//', a leading '/' and '%2F' are never
    normalised (moto keeps every such key; SeaweedFS refuses or renames some)."""
    s3_server = moto_server
    stores = [s3_store_config(s3_server, "prim", "gw-hostile")]
    config = tmp_path / "daulat.toml"
    config.write_text(_toml(stores, {"pemilu": ["prim"]}))
    direct = boto3.client(
        "s3", endpoint_url=s3_server.endpoint, aws_access_key_id=s3_server.access_key_id,
        aws_secret_access_key=s3_server.secret_access_key, region_name="us-east-1",
        config=BotoConfig(s3={"addressing_style": "path"}),
    )
    for i, key in enumerate(HOSTILE):
        direct.put_object(Bucket="gw-hostile", Key=key, Body=f"object {i}".encode())
    kept = {o["Key"] for o in direct.list_objects_v2(Bucket="gw-hostile")["Contents"]}
    assert set(HOSTILE) <= kept, set(HOSTILE) - kept
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        for i, key in enumerate(HOSTILE):
            assert s3.get_object(Bucket="pemilu", Key=key)["Body"].read() == f"object {i}".encode(), key
        listed = [o["Key"] for o in s3.list_objects_v2(Bucket="pemilu")["Contents"]]
        assert listed == sorted(HOSTILE, key=lambda k: k.encode())


@pytest.mark.parametrize(
    "gateway_toml, message",
    [
        ("", "no [gateway] table"),
        ('[gateway]\naccess_key_id = "k"\nsecret_access_key = "s"\n[gateway.buckets.pemilu]\n'
         'replicas = ["nope"]\n', "unknown store 'nope'"),
        ('[gateway]\naccess_key_id = "k"\nsecret_access_key = "s"\nlisten = "nowhere"\n'
         '[gateway.buckets.pemilu]\nreplicas = ["prim"]\n', "not HOST:PORT"),
        ('[gateway]\naccess_key_id = "${GW_UNSET_VARIABLE}"\nsecret_access_key = "s"\n'
         '[gateway.buckets.pemilu]\nreplicas = ["prim"]\n', "GW_UNSET_VARIABLE"),
        ('[gateway]\naccess_key_id = "k"\nsecret_access_key = "s"\n[gateway.buckets.Bad_Name]\n'
         'replicas = ["prim"]\n', "not an S3 bucket name"),
        ('[gateway]\naccess_key_id = "k"\nsecret_access_key = "s"\ntls_cert = "missing.pem"\n'
         '[gateway.buckets.pemilu]\nreplicas = ["prim"]\n', "tls_key must be given together"),
        ('[gateway]\naccess_key_id = "k"\nsecret_access_key = "s"\ntls_cert = "prim"\n'
         'tls_key = "prim"\n[gateway.buckets.pemilu]\nreplicas = ["prim"]\n',
         "prim is a directory, not a file"),
    ],
)
def test_bad_gateway_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], gateway_toml: str, message: str
) -> None:
    (tmp_path / "prim").mkdir()
    config = tmp_path / "daulat.toml"
    config.write_text(
        f'[stores.prim]\nurl = "{(tmp_path / "prim").as_uri()}"\nprovider = "local"\n'
        f'country = "ID"\n{gateway_toml}'
    )
    assert cli(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert "secret_access_key = " not in err


def test_demo_reads_through_the_gateway(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``daulat demo`` reads an object through the gateway, makes the primary refuse, reads it
    again from vault (same bytes), and the refusal is in the audit log and ``daulat stores``."""
    tour = tmp_path / "tour"
    assert cli(["demo", "--dir", str(tour)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "10. daulat serve" in out and out.index("10. daulat serve") < out.index("11. daulat check")
    assert "served by kpu-primary" in out
    assert "GET again: the same bytes" in out and "served by vault after kpu-primary refused" in out
    revoked = [e for e in _audit(tour / "daulat.toml") if e["operation"] == "gateway.revoked"]
    assert [e["details"]["store"] for e in revoked] == ["kpu-primary"]
    assert cli(["stores", "--json", "--config", str(tour / "daulat.toml")]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["kpu-primary"]["gateway"]["state"] == "revoked"


_CLIENTS = """
import hashlib, json, sys
from concurrent.futures import ThreadPoolExecutor
import boto3
from botocore.config import Config
endpoint, key_id, secret, jobs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key_id,
                  aws_secret_access_key=secret, region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, max_pool_connections=len(jobs),
                                retries={"max_attempts": 1}, read_timeout=120))
def get(job):
    key, rng = job
    extra = {"Range": rng} if rng else {}
    return hashlib.sha256(s3.get_object(Bucket="pemilu", Key=key, **extra)["Body"].read()).hexdigest()
with ThreadPoolExecutor(len(jobs)) as pool:
    print(json.dumps(list(pool.map(get, jobs))))
"""


def test_concurrent_reads_wait_for_the_read_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """24 concurrent GETs (whole objects, ranges, small objects) through a gateway whose read
    budget is 8 MiB: every byte is right, reads waited for the budget (24 streaming reads
    would hold about 48 MiB), what they held never exceeded it and all of it was given back.
    The gateway runs in this process so that its budget can be read."""
    import asyncio

    from daulat.config import load_config
    from daulat.gateway.config import gateway_config
    from daulat.gateway.runtime import Runtime
    from daulat.gateway.server import serve

    budget_bytes = 8 * MiB
    objects = {f"big/{i}": os.urandom(12 * MiB + 1000 * i) for i in range(4)}
    objects.update({f"small/{i}": os.urandom(64 * 1024) for i in range(4)})
    _fill(tmp_path / "prim", objects)
    stores = [fs_store_config(tmp_path / "prim", "prim"), fs_store_config(tmp_path / "rep", "rep")]
    config = tmp_path / "daulat.toml"
    config.write_text(_toml(stores, {"pemilu": ["prim", "rep"]}, f"read_buffers = {budget_bytes}"))
    _copy(config, "prim", "rep")  # the chunk hashes: every read is checked
    monkeypatch.setenv("GW_KEY", KEY_ID)
    monkeypatch.setenv("GW_SECRET", SECRET)
    cfg = load_config(config)
    port = _free_port()
    gw = gateway_config(cfg, f"127.0.0.1:{port}")
    assert gw.read_buffers == budget_bytes
    runtime = Runtime(cfg, gw)
    loop = asyncio.new_event_loop()
    task = loop.create_task(serve(cfg, gw, runtime=runtime))
    thread = threading.Thread(target=loop.run_until_complete, args=(task,), daemon=True)
    jobs: list[tuple[str, str | None]] = []
    expected: list[str] = []
    for i in range(24):
        key = f"big/{i % 4}" if i % 6 else f"small/{i % 4}"
        data = objects[key]
        if i % 3 == 1:  # a range across a chunk boundary, as the AWS CLI asks for
            lo, hi = 7 * MiB + i, 10 * MiB + 3 * i
            jobs.append((key, f"bytes={lo}-{hi}"))
            data = data[lo : hi + 1]
        else:
            jobs.append((key, None))
        expected.append(_sha(data))
    try:
        thread.start()
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.05)
        out = subprocess.run(
            [sys.executable, "-c", _CLIENTS, f"http://127.0.0.1:{port}", KEY_ID, SECRET,
             json.dumps(jobs)],
            capture_output=True, text=True, timeout=240,
        )
    finally:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == expected
    budget = runtime.budget
    assert budget.waits > 0  # the budget was what bounded the reads
    assert budget.limit // 2 < budget.peak <= budget.limit
    assert budget.in_use == 0  # every read gave back what it took
