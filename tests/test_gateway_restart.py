"""What outlives a restart of ``daulat serve``, and what must not: multipart uploads go on
with their ids (their records beside their spooled parts), and nothing of a stopped gateway
lingers without end. Real parts as in test_gateway.py."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from conftest import fs_store_config, s3_store_config
from servers import S3Server
from test_gateway import KEY_ID, SECRET, MiB, _free_port, _sha, client, gateway
from test_gateway_writes import _config, _direct

from daulat.gateway.spool import RECORD, UPLOAD_IDLE, Spool
from daulat.stores.described import Described
from daulat.stores.hashing import StreamHasher

pytestmark = pytest.mark.timeout(300)


def _modes(root: Path) -> set[str]:
    return {oct(p.stat().st_mode & 0o777) for p in root.rglob("*") if not p.name.endswith(".lock")}


def test_multipart_upload_goes_on_after_a_restart(tmp_path: Path, s3_server: S3Server) -> None:
    stores = [
        fs_store_config(tmp_path / "prim", "prim"),
        s3_store_config(s3_server, "vault", "gw-restart"),
    ]
    config = _config(tmp_path, stores, {"pemilu": 'replicas = ["prim", "vault"]\nwritable = true'})
    data = os.urandom(6 * MiB + 3)
    spool = tmp_path / ".daulat" / "gateway-spool"
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        up = s3.create_multipart_upload(
            Bucket="pemilu", Key="c1/rekap.pdf", ContentType="application/pdf",
            Metadata={"tps": "7"},
        )["UploadId"]  # fmt: skip
        e1 = s3.upload_part(
            Bucket="pemilu", Key="c1/rekap.pdf", UploadId=up, PartNumber=1, Body=data[: 5 * MiB]
        )["ETag"]
        dropped = s3.create_multipart_upload(Bucket="pemilu", Key="dropped")["UploadId"]
        s3.upload_part(Bucket="pemilu", Key="dropped", UploadId=dropped, PartNumber=1, Body=b"x")
    # Stopped: the uploads wait on disk, private, with their records.
    (uploads,) = [p for p in spool.iterdir() if p.is_dir()]
    assert {p.name for p in uploads.iterdir()} == {up, dropped}
    assert json.loads((uploads / up / RECORD).read_text())["key"] == "c1/rekap.pdf"
    assert _modes(spool) == {"0o700", "0o600"}
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        e2 = s3.upload_part(
            Bucket="pemilu", Key="c1/rekap.pdf", UploadId=up, PartNumber=2, Body=data[5 * MiB :]
        )["ETag"]
        parts = s3.list_parts(Bucket="pemilu", Key="c1/rekap.pdf", UploadId=up)["Parts"]
        assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, 5 * MiB), (2, MiB + 3)]
        s3.complete_multipart_upload(
            Bucket="pemilu", Key="c1/rekap.pdf", UploadId=up,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
        )  # fmt: skip
        got = s3.get_object(Bucket="pemilu", Key="c1/rekap.pdf")
        assert _sha(got["Body"].read()) == _sha(data)
        assert (got["ContentType"], got["Metadata"]) == ("application/pdf", {"tps": "7"})
        held = _direct(s3_server).get_object(Bucket="gw-restart", Key="c1/rekap.pdf")
        assert _sha(held["Body"].read()) == _sha(data)
        s3.abort_multipart_upload(Bucket="pemilu", Key="dropped", UploadId=dropped)
        with pytest.raises(ClientError) as err:
            s3.list_parts(Bucket="pemilu", Key="dropped", UploadId=dropped)
        assert err.value.response["Error"]["Code"] == "NoSuchUpload"
    # Nothing in progress, nothing left: not even the stopped gateway's directory.
    assert [p for p in spool.iterdir()] == []


async def _body(data: bytes, hasher: StreamHasher) -> AsyncIterator[bytes]:
    await hasher.update(data)
    yield data


def test_a_restart_removes_what_it_cannot_take_over(tmp_path: Path) -> None:
    """Uploads idle past UPLOAD_IDLE, of a bucket no longer writable, without a record, a
    part being written when the gateway stopped and one a retry replaced: removed at the next
    start."""

    async def scenario() -> None:
        first = Spool(tmp_path, 1 << 20)
        first.start(["pemilu"])
        kept = first.create("pemilu", "kept", Described("text/csv", {"a": "b"}))
        idle = first.create("pemilu", "idle")
        gone = first.create("arsip", "of-a-bucket-now-read-only")
        for upload in (kept, idle, gone):
            h = StreamHasher()
            await first.write_part(upload, 1, _body(b"part", h), h)
        old = (dt.datetime.now(dt.UTC) - UPLOAD_IDLE - dt.timedelta(hours=1)).timestamp()
        record = json.loads((idle.dir / RECORD).read_text())
        record["started"] = dt.datetime.fromtimestamp(old, dt.UTC).isoformat()
        (idle.dir / RECORD).write_text(json.dumps(record))
        for p in idle.dir.iterdir():
            os.utime(p, (old, old))
        (kept.dir / "00002.0123abcd.tmp").write_bytes(b"half a part")
        # Part 1 as it was before a retry replaced it, the gateway stopped in between.
        replaced = kept.dir / f"00001-{'0' * 64}.part"
        replaced.write_bytes(b"old")
        os.utime(replaced, (old, old))
        stray = first.mine / ("A" * 43)
        stray.mkdir()
        (stray / "00001.part").write_bytes(b"no record")
        first.close()

        second = Spool(tmp_path, 1 << 20)
        removed = second.start(["pemilu"])
        try:
            assert {p.name for p in removed} == {idle.id, gone.id, stray.name}
            assert list(second.uploads) == [kept.id]
            took = second.uploads[kept.id]
            assert (took.key, took.described) == ("kept", Described("text/csv", {"a": "b"}))
            assert [p.size for p in took.parts.values()] == [4] and second.used == 4
            assert sorted(p.name for p in took.dir.iterdir()) == [
                f"00001-{took.parts[1].sha256}.part",
                RECORD,
            ]
            h = StreamHasher()
            assert b"".join([p async for p in second.read(list(took.parts.values()), h)]) == (
                b"part"
            )
            assert [p for p in second.root.iterdir() if p.is_dir()] == [second.mine]
        finally:
            second.close()

    asyncio.run(scenario())


def test_serve_on_a_fresh_project_makes_its_own_files_private_from_the_start(
    tmp_path: Path,
) -> None:
    """The state daulat serve creates (the state directory, the spool, the journal and its
    WAL, the audit log, an upload's record and part) is private as created: no start, the
    first or the next, has anything of its own to make private, so none says it did."""
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep")]
    config = _config(tmp_path, stores, {"pemilu": 'replicas = ["prim", "rep"]\nwritable = true'})
    assert not (tmp_path / ".daulat").exists()
    for _ in range(2):
        with gateway(config) as endpoint:
            s3 = client(endpoint)
            s3.put_object(Bucket="pemilu", Key="a.txt", Body=b"a")
            up = s3.create_multipart_upload(Bucket="pemilu", Key="m.bin")["UploadId"]
            s3.upload_part(Bucket="pemilu", Key="m.bin", UploadId=up, PartNumber=1, Body=b"p")
    logs = sorted(tmp_path.glob("serve-*.log"))
    assert len(logs) == 2
    for log in logs:
        text = log.read_text()
        assert "made private" not in text and "could read" not in text, text
    state = tmp_path / ".daulat"
    assert oct(state.stat().st_mode & 0o777) == "0o700"
    assert _modes(state) <= {"0o700", "0o600"}, _modes(state)


def _serve(config: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``daulat serve`` as a process of this test's own (to kill -9), once it listens."""
    port = _free_port()
    env = {**os.environ, "GW_KEY": KEY_ID, "GW_SECRET": SECRET}
    proc = subprocess.Popen(
        [sys.executable, "-m", "daulat", "serve", "--config", str(config),
         "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc, f"http://127.0.0.1:{port}"
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("daulat serve did not start")
        time.sleep(0.1)


def _start_put(endpoint: str, path: str, size: int, sent: int) -> http.client.HTTPConnection:
    """A signed PUT of ``size`` bytes of which only ``sent`` are sent: an upload in flight."""
    url = endpoint + path
    req = AWSRequest(method="PUT", url=url, headers={"content-length": str(size)})

    class _Unsigned(S3SigV4Auth):  # type: ignore[misc]
        def payload(self, request: Any) -> str:
            return "UNSIGNED-PAYLOAD"  # taken from this machine (loopback)

    _Unsigned(Credentials(KEY_ID, SECRET), "s3", "us-east-1").add_auth(req)
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.putrequest("PUT", path, skip_host=True, skip_accept_encoding=True)
    for name, value in req.headers.items():
        conn.putheader(name, value)
    conn.putheader("host", parts.netloc)
    conn.endheaders()
    conn.send(b"x" * sent)
    return conn


def test_what_a_killed_gateway_left_mid_upload_goes_at_the_next_start(tmp_path: Path) -> None:
    """kill -9 while a PutObject and an UploadPart stream: the directory replicas hold the
    puts' temp files and the key directories they made, the spool a part being written. The
    next start removes them (the upload itself goes on), and never a user's empty
    directory."""
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep")]
    config = _config(tmp_path, stores, {"pemilu": 'replicas = ["prim", "rep"]\nwritable = true'})
    (tmp_path / "prim" / "deep").mkdir()
    (tmp_path / "prim" / "users-own-empty").mkdir()
    proc, endpoint = _serve(config)
    conns = []
    try:
        s3 = client(endpoint)
        up = s3.create_multipart_upload(Bucket="pemilu", Key="mp/m.bin")["UploadId"]
        conns.append(_start_put(endpoint, "/pemilu/deep/dir/x.bin", 8 * MiB, 3 * MiB))
        conns.append(
            _start_put(endpoint, f"/pemilu/mp/m.bin?partNumber=1&uploadId={up}", 8 * MiB, MiB)
        )
        spool = tmp_path / ".daulat" / "gateway-spool"
        temps = [tmp_path / r / ".daulat-tmp" for r in ("prim", "rep")]
        deadline = time.monotonic() + 30
        while not (
            all(t.is_dir() and any(t.iterdir()) for t in temps) and any(spool.rglob("*.tmp"))
        ):
            assert time.monotonic() < deadline, "the uploads never began"
            time.sleep(0.1)
        assert (tmp_path / "rep" / "deep" / "dir").is_dir()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        for conn in conns:
            conn.close()
    assert (tmp_path / "prim" / "deep" / "dir").is_dir()  # left by the killed puts
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        s3.list_buckets()  # answered once the start is done (the socket listens before)
        for root in ("prim", "rep"):
            assert not (tmp_path / root / ".daulat-tmp").exists(), root
            assert not (tmp_path / root / "deep" / "dir").exists(), root
        # "deep" at prim was there before the put: not the gateway's to remove.
        assert (tmp_path / "prim" / "deep").is_dir()
        assert not (tmp_path / "rep" / "deep").exists()
        assert (tmp_path / "prim" / "users-own-empty").is_dir()
        assert not list(spool.rglob("*.tmp"))
        # The upload goes on with its id.
        assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="pemilu")["Uploads"]] == [
            up
        ]
        s3.upload_part(Bucket="pemilu", Key="mp/m.bin", UploadId=up, PartNumber=1, Body=b"m")
        s3.complete_multipart_upload(
            Bucket="pemilu", Key="mp/m.bin", UploadId=up,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": f'"{_sha(b"m")}"'}]},
        )  # fmt: skip
        assert s3.get_object(Bucket="pemilu", Key="mp/m.bin")["Body"].read() == b"m"
    # Nothing of the stopped gateways is left in the spool but the running one's (none now).
    assert [p for p in spool.iterdir() if p.is_dir() and any(p.iterdir())] == []


def test_a_lock_file_a_killed_gateway_left_alone_goes_at_the_next_start(tmp_path: Path) -> None:
    """A gateway killed between taking its lock and making its directory leaves the lock
    file alone; the next start removes it, never the lock of a gateway still running."""
    from daulat.state import hold_lock, private_dir

    root = private_dir(private_dir(tmp_path / ".daulat") / "gateway-spool")
    dead = root / "999999-deadbeef.lock"
    dead.touch(mode=0o600)
    live = hold_lock(root / "1-cafe.lock")
    spool = Spool(tmp_path / ".daulat", 1024)
    try:
        spool.start()
        assert not dead.exists()
        assert (root / "1-cafe.lock").exists()
    finally:
        spool.close()
        os.close(live)
