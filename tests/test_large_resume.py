"""Resuming inside a large object: ``daulat exit`` killed with SIGKILL half-way through one
large object, then run again, sends only the parts the destination lacks, re-sends parts that
were tampered with, starts afresh when the upload was aborted behind its back, and restarts
encrypted objects (age ciphertext cannot be continued). Every result is checked end to end.

Real servers (SeaweedFS behind a counting proxy, Azurite, fake-gcs-server), the real CLI in a
subprocess. Objects are 48 MiB in 5 MiB parts (10 parts), small enough for CI on 2 cores.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import google_crc32c
import pyrage
import pytest
from conftest import azure_store_config, s3_store_config
from faultproxy import Proxy, fault_proxy
from gcsproxy import GcsProxy, gcs_proxy
from servers import AzuriteServer, GcsServer, S3Server

MiB = 1024 * 1024
PART = 5 * MiB
SIZE = 48 * MiB
BUCKET = "large-resume"
# Small objects daulat writes beside the data (manifests, key probes): allowed on top.
OVERHEAD = 2 * MiB


def daulat(args: list[str], cwd: Path, *, wait: bool = True) -> Any:
    argv = [sys.executable, "-c", "from daulat.cli import main; main()", *args]
    if not wait:
        return subprocess.Popen(
            argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)


def kill_when(cwd: Path, args: list[str], ready: Callable[[], bool], timeout: float = 120) -> None:
    """Run ``daulat ARGS`` and SIGKILL it as soon as ``ready()`` holds."""
    proc = daulat(args, cwd, wait=False)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, ("ended before the kill", proc.communicate())
            assert time.monotonic() < deadline, "the moment to kill never came"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)


def write_source(cwd: Path) -> str:
    src = cwd / "src"
    src.mkdir(exist_ok=True)
    data = os.urandom(SIZE)
    (src / "big.bin").write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def finish(cwd: Path, *extra: str) -> dict[str, Any]:
    proc = daulat(["exit", "src", "dst", "--json", *extra], cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(json.loads(proc.stdout))


def _report(kind: str, held: int, sent: int, summary: dict[str, Any]) -> None:
    """The figure bench/RESULTS.md quotes (shown with ``pytest -s``)."""
    print(
        f"\n[large-resume {kind}] object {SIZE / MiB:.0f} MiB, at the kill {held / MiB:.0f} MiB "
        f"held by the destination; the rerun uploaded {sent / MiB:.1f} MiB "
        f"({100 * sent / SIZE:.0f} % of the object), kept {summary['resumed_bytes'] / MiB:.0f} "
        f"MiB, re-read the whole object from the source, took {summary['duration_s']:.1f} s"
    )


def full_verify(cwd: Path, *extra: str) -> None:
    proc = daulat(["verify", "src", "dst", "--full", "--json", *extra], cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------- S3


@dataclass
class S3Setup:
    cwd: Path
    prefix: str
    client: Any
    proxy: Proxy

    @property
    def key(self) -> str:
        return f"{self.prefix}/big.bin"

    def upload(self) -> dict[str, Any] | None:
        found = self.client.list_multipart_uploads(Bucket=BUCKET, Prefix=self.prefix)
        ours = [u for u in found.get("Uploads", []) if u["Key"] == self.key]
        return ours[0] if ours else None

    def parts(self) -> list[dict[str, Any]]:
        upload = self.upload()
        if upload is None:
            return []
        reply = self.client.list_parts(Bucket=BUCKET, Key=self.key, UploadId=upload["UploadId"])
        return list(reply.get("Parts", []))

    def stored_sha256(self) -> str:
        body = self.client.get_object(Bucket=BUCKET, Key=self.key)["Body"].read()
        return hashlib.sha256(body).hexdigest()


@pytest.fixture
def s3(s3_server: S3Server, tmp_path: Path) -> Iterator[S3Setup]:
    prefix = f"run-{os.getpid()}-{time.monotonic_ns()}"
    raw = s3_store_config(s3_server, "dst", BUCKET, prefix)
    session = botocore.session.Session()
    session.set_credentials(s3_server.access_key_id, s3_server.secret_access_key)
    client = session.create_client(
        "s3", endpoint_url=s3_server.endpoint, region_name=s3_server.region
    )
    with fault_proxy(s3_server.endpoint) as proxy:
        (tmp_path / "daulat.toml").write_text(
            f"""
[stores.src]
url = "file://{tmp_path / "src"}"
provider = "local"
country = "ID"

[stores.dst]
url = "{raw["url"]}"
provider = "self-hosted"
country = "ID"
endpoint = "{proxy.endpoint}"
part_size = {PART}
[stores.dst.credentials]
access_key_id = "{s3_server.access_key_id}"
secret_access_key = "{s3_server.secret_access_key}"
"""
        )
        yield S3Setup(tmp_path, prefix, client, proxy)
    upload = S3Setup(tmp_path, prefix, client, proxy).upload()
    if upload is not None:
        client.abort_multipart_upload(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])
    client.close()


def _kill_half_way(s3: S3Setup, *extra: str) -> int:
    """SIGKILL a throttled exit once about half of the object's parts are at the server;
    return the bytes the server then holds for it."""
    kill_when(
        s3.cwd,
        ["exit", "src", "dst", "--bwlimit", "12M", *extra],
        lambda: len(s3.parts()) >= 4,
    )
    s3.proxy.wait_idle()
    held = sum(int(p["Size"]) for p in s3.parts())
    assert 4 * PART <= held < SIZE
    return held


def test_s3_kill_at_half_resends_only_the_missing_parts(s3: S3Setup) -> None:
    digest = write_source(s3.cwd)
    held = _kill_half_way(s3)
    before = s3.proxy.stats["request_bytes"]
    summary = finish(s3.cwd)
    sent = s3.proxy.stats["request_bytes"] - before
    _report("s3", held, sent, summary)
    assert summary["resumed_uploads"] == 1, summary
    assert summary["resumed_bytes"] == held
    assert summary["aborted_uploads"] == 0
    # Only what was missing (and at most one part more), never the whole object again.
    assert sent <= SIZE - held + PART + OVERHEAD, (sent, held)
    assert s3.upload() is None
    assert s3.stored_sha256() == digest
    full_verify(s3.cwd)


def test_s3_a_tampered_part_is_sent_again(s3: S3Setup) -> None:
    digest = write_source(s3.cwd)
    _kill_half_way(s3)
    upload = s3.upload()
    assert upload is not None
    # The provider swaps part 2 for other bytes of the same size (with a valid checksum).
    forged = os.urandom(PART)
    crc = base64.b64encode(google_crc32c.value(forged).to_bytes(4, "big")).decode()
    s3.client.upload_part(
        Bucket=BUCKET,
        Key=s3.key,
        UploadId=upload["UploadId"],
        PartNumber=2,
        Body=forged,
        ChecksumCRC32C=crc,
    )
    summary = finish(s3.cwd)
    assert summary["resumed_uploads"] == 1
    assert summary["replaced_parts"] == 1, summary
    assert s3.stored_sha256() == digest
    full_verify(s3.cwd)


def test_s3_an_upload_aborted_behind_its_back_starts_again(s3: S3Setup) -> None:
    digest = write_source(s3.cwd)
    _kill_half_way(s3)
    upload = s3.upload()
    assert upload is not None
    s3.client.abort_multipart_upload(Bucket=BUCKET, Key=s3.key, UploadId=upload["UploadId"])
    before = s3.proxy.stats["request_bytes"]
    summary = finish(s3.cwd)
    assert summary["restarted_uploads"] == 1, summary
    assert summary["resumed_uploads"] == 0
    assert s3.proxy.stats["request_bytes"] - before >= SIZE
    assert s3.stored_sha256() == digest
    full_verify(s3.cwd)


def test_s3_a_changed_source_aborts_the_upload_and_copies_anew(s3: S3Setup) -> None:
    write_source(s3.cwd)
    _kill_half_way(s3)
    left = s3.upload()
    assert left is not None
    digest = write_source(s3.cwd)  # another version of the object
    summary = finish(s3.cwd)
    assert summary["resumed_uploads"] == 0
    assert summary["aborted_uploads"] == 1, summary
    assert s3.stored_sha256() == digest


def test_s3_encrypted_objects_restart_from_zero(s3: S3Setup) -> None:
    write_source(s3.cwd)
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    _kill_half_way(s3, "--encrypt-to", recipient)
    before = s3.proxy.stats["request_bytes"]
    summary = finish(s3.cwd, "--encrypt-to", recipient)
    assert summary["resumed_uploads"] == 0
    assert summary["aborted_uploads"] == 1, summary
    assert s3.proxy.stats["request_bytes"] - before >= SIZE
    assert s3.upload() is None


def test_s3_list_parts_reads_every_page(s3_server: S3Server) -> None:
    import asyncio

    from daulat.stores.s3creds import S3Credentials
    from daulat.stores.s3raw import S3Raw

    s3_server.create_bucket(BUCKET)
    raw = S3Raw(
        name="t",
        endpoint=s3_server.endpoint,
        bucket=BUCKET,
        region=s3_server.region,
        credentials=S3Credentials(s3_server.access_key_id, s3_server.secret_access_key),
        list_page=2,
    )
    session = botocore.session.Session()
    session.set_credentials(s3_server.access_key_id, s3_server.secret_access_key)
    client = session.create_client(
        "s3", endpoint_url=s3_server.endpoint, region_name=s3_server.region
    )
    key = f"pages-{time.monotonic_ns()}"
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    for n in range(1, 6):
        client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=n, Body=b"x" * n)

    async def listed() -> dict[int, Any]:
        try:
            return await raw.list_parts(key, upload_id)
        finally:
            await raw.close()

    parts = asyncio.run(listed())
    assert sorted(parts) == [1, 2, 3, 4, 5]
    assert parts[3].size == 3 and parts[3].md5 == hashlib.md5(b"xxx").hexdigest()
    client.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)
    client.close()


# ----------------------------------------------------------------------------------- Azure


@dataclass
class AzureSetup:
    cwd: Path
    prefix: str
    container: Any  # azure.storage.blob.ContainerClient, straight to Azurite
    proxy: Proxy

    @property
    def blob(self) -> Any:
        return self.container.get_blob_client(f"{self.prefix}/big.bin")

    def staged(self) -> list[Any]:
        try:
            return list(self.blob.get_block_list("uncommitted")[1])
        except Exception:  # no blob and no blocks yet
            return []

    def stored_sha256(self) -> str:
        return hashlib.sha256(self.blob.download_blob().readall()).hexdigest()

    def session(self) -> str:
        import sqlite3

        db = sqlite3.connect(self.cwd / ".daulat" / "transfers.sqlite")
        try:
            (upload_id,) = db.execute("SELECT upload_id FROM uploads").fetchone()
        finally:
            db.close()
        return str(upload_id)


@pytest.fixture
def azure(azurite_server: AzuriteServer, tmp_path: Path) -> Iterator[AzureSetup]:
    from azure.storage.blob import ContainerClient

    prefix = f"run-{os.getpid()}-{time.monotonic_ns()}"
    raw = azure_store_config(azurite_server, "dst", "large-resume", prefix)
    container = ContainerClient(
        azurite_server.endpoint,
        "large-resume",
        credential={
            "account_name": azurite_server.account_name,
            "account_key": azurite_server.account_key,
        },
    )
    with fault_proxy(azurite_server.endpoint.rsplit("/", 1)[0]) as proxy:
        endpoint = f"{proxy.endpoint}/{azurite_server.account_name}"
        (tmp_path / "daulat.toml").write_text(
            f"""
[stores.src]
url = "file://{tmp_path / "src"}"
provider = "local"
country = "ID"

[stores.dst]
url = "{raw["url"]}"
provider = "azure"
region = "indonesiacentral"
endpoint = "{endpoint}"
part_size = {PART}
[stores.dst.credentials]
account_name = "{azurite_server.account_name}"
account_key = "{azurite_server.account_key}"
"""
        )
        yield AzureSetup(tmp_path, prefix, container, proxy)
    container.close()


def _azure_kill_half_way(az: AzureSetup) -> int:
    kill_when(
        az.cwd,
        ["exit", "src", "dst", "--bwlimit", "12M"],
        lambda: len(az.staged()) >= 4,
    )
    az.proxy.wait_idle()
    held = sum(int(b.size) for b in az.staged())
    assert 4 * PART <= held < SIZE
    return held


def test_azure_kill_at_half_resends_only_the_missing_blocks(azure: AzureSetup) -> None:
    digest = write_source(azure.cwd)
    held = _azure_kill_half_way(azure)
    session = azure.session()
    assert all(f"-{session}-" in b.id for b in azure.staged())  # block ids carry the session
    before = azure.proxy.stats["request_bytes"]
    summary = finish(azure.cwd)
    sent = azure.proxy.stats["request_bytes"] - before
    _report("azure", held, sent, summary)
    assert summary["resumed_uploads"] == 1, summary
    assert summary["resumed_bytes"] == held
    assert sent <= SIZE - held + PART + OVERHEAD, (sent, held)
    assert azure.stored_sha256() == digest
    full_verify(azure.cwd)


def test_azure_a_block_that_no_longer_matches_is_sent_again(azure: AzureSetup) -> None:
    digest = write_source(azure.cwd)
    _azure_kill_half_way(azure)
    # The provider swaps part 2's block for other bytes under the same id (re-staging an id
    # replaces the block). Azure lists only ids and sizes: a swap that keeps the size is
    # caught only by verify --full (see daulat.stores.azureblocks); this one is shorter.
    (real_2,) = [b.id for b in azure.staged() if b.id.split("-")[2] == "000002"]
    azure.blob.stage_block(real_2, os.urandom(PART - 1))
    summary = finish(azure.cwd)
    assert summary["resumed_uploads"] == 1
    assert summary["replaced_parts"] == 1, summary
    assert azure.stored_sha256() == digest
    full_verify(azure.cwd)


def test_azure_blocks_discarded_behind_its_back_start_again(azure: AzureSetup) -> None:
    digest = write_source(azure.cwd)
    _azure_kill_half_way(azure)
    # Another writer commits a different block list: every uncommitted block is discarded.
    azure.blob.commit_block_list([])
    assert azure.staged() == []
    before = azure.proxy.stats["request_bytes"]
    summary = finish(azure.cwd)
    assert summary["restarted_uploads"] == 1, summary
    assert summary["resumed_uploads"] == 0
    assert azure.proxy.stats["request_bytes"] - before >= SIZE
    assert azure.stored_sha256() == digest
    full_verify(azure.cwd)


# ------------------------------------------------------------------------------------- GCS
#
# fake-gcs-server (1.54) keeps resumable sessions and takes their chunks, but lacks two parts of
# Google's protocol: its answer to a status query (``PUT`` with ``Content-Range: bytes */*``) is
# to commit the bytes it holds as the object, and a cancelled session (``DELETE``, answered 499)
# goes on taking chunks. The proxy in front of it (tests/gcsproxy.py) answers both as Google
# does, from what the server acknowledged; every chunk, the completion and the object's CRC32C
# are the server's own.

GCS_CHUNK = 8 * MiB  # daulat.stores.gcs.CHUNK_SIZE


@dataclass
class GcsSetup:
    cwd: Path
    prefix: str
    server: GcsServer
    proxy: GcsProxy

    @property
    def name(self) -> str:
        return f"{self.prefix}/big.bin"

    def stored(self) -> bytes:
        quoted = urllib.parse.quote(self.name, safe="")
        status, body = self.server.request(
            "GET", f"/download/storage/v1/b/{BUCKET}/o/{quoted}?alt=media", timeout=60
        )
        assert status == 200, status
        return body

    def session(self) -> str:
        import sqlite3

        db = sqlite3.connect(self.cwd / ".daulat" / "transfers.sqlite")
        try:
            (upload_id,) = db.execute("SELECT upload_id FROM uploads").fetchone()
        finally:
            db.close()
        return str(upload_id)


@pytest.fixture
def gcs(gcs_server: GcsServer, tmp_path: Path) -> Iterator[GcsSetup]:
    prefix = f"run-{os.getpid()}-{time.monotonic_ns()}"
    gcs_server.create_bucket(BUCKET)
    with gcs_proxy(gcs_server.endpoint) as proxy:
        (tmp_path / "daulat.toml").write_text(
            f"""
[stores.src]
url = "file://{tmp_path / "src"}"
provider = "local"
country = "ID"

[stores.dst]
url = "gs://{BUCKET}/{prefix}"
provider = "gcp"
region = "asia-southeast2"
endpoint = "{proxy.endpoint}"
"""
        )
        yield GcsSetup(tmp_path, prefix, gcs_server, proxy)
    gcs_server.drop_large_objects(BUCKET)


def _gcs_kill_half_way(gcs: GcsSetup) -> int:
    """SIGKILL a throttled exit once the server acknowledged half of the object; return the
    bytes it then holds for the session."""
    kill_when(
        gcs.cwd,
        ["exit", "src", "dst", "--bwlimit", "12M"],
        lambda: gcs.proxy.acknowledged() >= SIZE // 2,
    )
    held = gcs.proxy.acknowledged()
    assert SIZE // 2 <= held < SIZE, held
    return held


def test_gcs_kill_at_half_sends_only_the_rest_of_the_session(gcs: GcsSetup) -> None:
    digest = write_source(gcs.cwd)
    whole = (gcs.cwd / "src" / "big.bin").read_bytes()
    held = _gcs_kill_half_way(gcs)
    assert gcs.session().startswith(f"{gcs.proxy.endpoint}/upload/")  # kept in the journal
    before, seen = gcs.proxy.sent(), len(gcs.proxy.seen)
    summary = finish(gcs.cwd)
    sent = gcs.proxy.sent() - before
    _report("gcs", held, sent, summary)
    assert summary["resumed_uploads"] == 1, summary
    assert summary["resumed_bytes"] == held
    assert gcs.proxy.status_queries == 1
    assert sent <= SIZE - held + OVERHEAD, (sent, held)
    assert sent <= 0.6 * SIZE
    # The session's chunks continue at the byte Google holds, and the last one's X-Goog-Hash
    # is the CRC32C of the whole object, the kept bytes included (Google checks it).
    chunks = [s for s in gcs.proxy.seen[seen:] if s.method == "PUT" and "upload_id=" in s.path]
    assert chunks[1].headers["content-range"].startswith(f"bytes {held}-")
    crc = base64.b64encode(google_crc32c.value(whole).to_bytes(4, "big")).decode()
    assert chunks[-1].headers["x-goog-hash"] == f"crc32c={crc}"
    assert hashlib.sha256(gcs.stored()).hexdigest() == digest
    full_verify(gcs.cwd)
    # The session URI is a capability: kept in the journal only, never shown.
    assert "upload_id" not in json.dumps(summary)


def test_gcs_a_cancelled_session_starts_again(gcs: GcsSetup) -> None:
    digest = write_source(gcs.cwd)
    _gcs_kill_half_way(gcs)
    # Cancelled behind daulat's back, with the session URI (as Google's DELETE does).
    reply = _http_delete(gcs.session())
    assert reply == 499
    before = gcs.proxy.sent()
    summary = finish(gcs.cwd)
    assert summary["restarted_uploads"] == 1, summary
    assert summary["resumed_uploads"] == 0
    assert gcs.proxy.sent() - before >= SIZE
    assert hashlib.sha256(gcs.stored()).hexdigest() == digest
    full_verify(gcs.cwd)


def test_gcs_kept_bytes_that_differ_from_the_source_start_again(gcs: GcsSetup) -> None:
    """Google keeps no per-chunk checksums: bytes of the session altered at the provider are
    found by the whole object's CRC32C when the session completes; the object is removed and
    uploaded afresh, and what stands at the end is the source's."""
    digest = write_source(gcs.cwd)
    gcs.proxy.flip_chunks = True  # what the server keeps of the first run is not what was sent
    _gcs_kill_half_way(gcs)
    gcs.proxy.flip_chunks = False
    before = gcs.proxy.sent()
    summary = finish(gcs.cwd)
    assert summary["restarted_uploads"] == 1, summary
    assert gcs.proxy.sent() - before >= SIZE
    assert hashlib.sha256(gcs.stored()).hexdigest() == digest
    full_verify(gcs.cwd)


def _http_delete(url: str) -> int:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request("DELETE", f"{parts.path}?{parts.query}")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_gcs_a_session_that_had_finished_is_checked_not_sent_again(gcs_server: GcsServer) -> None:
    """Killed after Google completed the session but before the journal noted it: the next
    attempt finds the object the session made, keeps it when its size and CRC32C are the
    source's, and removes it and starts again when they are not."""
    import asyncio

    from daulat.config import StoreConfig
    from daulat.stores import open_store
    from daulat.stores.gcs import GcsStore
    from daulat.stores.resumable import ResumeStats, Session, UploadGone

    gcs_server.create_bucket(BUCKET)
    body = os.urandom(3 * MiB + 5)

    async def chunks(data: bytes) -> Any:
        for i in range(0, len(data), MiB):
            yield data[i : i + MiB]

    with gcs_proxy(gcs_server.endpoint) as proxy:
        raw = {
            "name": "dst",
            "url": f"gs://{BUCKET}/done-{time.monotonic_ns()}",
            "provider": "gcp",
            "region": "asia-southeast2",
            "endpoint": proxy.endpoint,
        }
        store = open_store(StoreConfig.model_validate(raw))
        assert isinstance(store, GcsStore)

        async def go() -> None:
            sessions: list[Session] = []
            try:
                first = await store.put_resumable(
                    "k",
                    chunks(body),
                    metadata={"a": "1"},
                    session=None,
                    on_session=sessions.append,
                    stats=ResumeStats(),
                )
                sent = proxy.sent()
                stats = ResumeStats()
                again = await store.put_resumable(
                    "k",
                    chunks(body),
                    metadata=None,
                    session=sessions[0],
                    on_session=sessions.append,
                    stats=stats,
                )
                assert proxy.sent() == sent  # nothing sent again
                assert (again.sha256, again.size) == (first.sha256, first.size)
                assert stats.resumed and stats.kept_bytes == len(body)
                assert len(sessions) == 1
                other = os.urandom(len(body))
                with pytest.raises(UploadGone):
                    await store.put_resumable(
                        "k",
                        chunks(other),
                        metadata=None,
                        session=sessions[0],
                        on_session=sessions.append,
                        stats=ResumeStats(),
                    )
                assert [k async for page in store.list() for k in page] == []
            finally:
                await store.close()

        asyncio.run(go())
