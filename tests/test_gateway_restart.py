"""What outlives a restart of ``daulat serve``, and what must not: multipart uploads go on
with their ids (their records beside their spooled parts), and nothing of a stopped gateway
lingers without end. Real parts as in test_gateway.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from conftest import fs_store_config, s3_store_config
from servers import S3Server
from test_gateway import MiB, _sha, client, gateway
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
