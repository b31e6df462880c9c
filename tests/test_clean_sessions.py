"""``daulat clean STORE`` on GCS and Azure: the resumable uploads a killed ``daulat exit`` left
(a GCS resumable session, Azure uncommitted blocks) are kept by default (a later run resumes
them), and with ``--include-resumable`` cancelled or discarded; other writers' sessions and
blocks, and the uploads of a run still going on, are never touched; ``--dry-run`` says what it
would do and does nothing.

Real servers (fake-gcs-server behind tests/gcsproxy.py, Azurite behind the counting proxy), the
real CLI in subprocesses, a real SIGKILL.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import json
import os
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from conftest import azure_store_config
from servers import AzuriteServer
from test_large_resume import (  # noqa: F401
    BUCKET,
    AzureSetup,
    GcsSetup,
    S3Setup,
    azure,
    daulat,
    gcs,
    kill_when,
    s3,
)

from daulat.config import StoreConfig
from daulat.stores import open_store
from daulat.stores.azureblocks import AzureBlocks, block_id
from daulat.stores.resumable import Session, SessionKept, unwrap_resumable
from daulat.transfer.journal import Journal

MiB = 1024 * 1024
SIZE = 24 * MiB


def _source(cwd: Path) -> str:
    (cwd / "src").mkdir(exist_ok=True)
    data = os.urandom(SIZE)
    (cwd / "src" / "big.bin").write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _clean(cwd: Path, *args: str) -> dict[str, Any]:
    proc = daulat(["clean", "dst", "--json", *args], cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(json.loads(proc.stdout))


def _recorded(cwd: Path) -> list[tuple[str, str, str]]:
    """(location, key, upload_id) of every upload the journal records."""
    db = sqlite3.connect(cwd / ".daulat" / "transfers.sqlite")
    try:
        return [
            (str(a), str(b), str(c))
            for a, b, c in db.execute("SELECT location, key, upload_id FROM uploads ORDER BY key")
        ]
    finally:
        db.close()


def _http(method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response
    finally:
        conn.close()


# -------------------------------------------------------------------------------------- S3


def test_clean_keeps_a_resumable_s3_upload_unless_asked(s3: S3Setup) -> None:  # noqa: F811
    digest = _source(s3.cwd)
    kill_when(s3.cwd, ["exit", "src", "dst", "--bwlimit", "4M"], lambda: len(s3.parts()) >= 2)
    s3.proxy.wait_idle()
    upload = s3.upload()
    assert upload is not None
    report = _clean(s3.cwd)
    assert (report["uploads_aborted"], report["resumable_kept"]) == (0, 1), report
    human = daulat(["clean", "dst"], s3.cwd)
    assert human.returncode == 0, human.stdout + human.stderr
    assert "kept 1 upload(s) a later run resumes" in human.stdout, human.stdout
    assert s3.upload() == upload
    human = daulat(["clean", "dst", "--include-resumable", "--dry-run"], s3.cwd)
    assert "big.bin: would abort the multipart upload" in human.stdout, human.stdout
    dry = _clean(s3.cwd, "--include-resumable", "--dry-run")
    assert dry["uploads"] == ["big.bin: would abort the multipart upload"]
    assert s3.upload() == upload
    report = _clean(s3.cwd, "--include-resumable")
    assert report["uploads"] == ["big.bin: aborted the multipart upload"], report
    assert s3.upload() is None
    assert _recorded(s3.cwd) == []
    proc = daulat(["exit", "src", "dst", "--json"], s3.cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["resumed_uploads"] == 0
    assert s3.stored_sha256() == digest


# ------------------------------------------------------------------------------------- GCS


def _gcs_session(endpoint: str, name: str) -> str:
    """Begin a resumable session as any other GCS client would; its URI."""
    quoted = urllib.parse.quote(name, safe="")
    reply = _http(
        "POST",
        f"{endpoint}/upload/storage/v1/b/{BUCKET}/o?uploadType=resumable&name={quoted}",
        b"{}",
        {"Content-Type": "application/json"},
    )
    assert reply.status == 200, reply.status
    return str(reply.getheader("Location"))


def _gcs_status(url: str) -> int:
    return int(_http("PUT", url, headers={"Content-Range": "bytes */*"}).status)


def test_clean_cancels_the_gcs_sessions_daulat_began_and_only_those(gcs: GcsSetup) -> None:  # noqa: F811
    digest = _source(gcs.cwd)
    kill_when(
        gcs.cwd,
        ["exit", "src", "dst", "--bwlimit", "4M"],
        lambda: gcs.proxy.acknowledged() >= 8 * MiB,
    )
    ours = gcs.session()
    ((location, _key, _id),) = _recorded(gcs.cwd)
    foreign = _gcs_session(gcs.proxy.endpoint, f"{gcs.prefix}/theirs.bin")
    live = _gcs_session(gcs.proxy.endpoint, f"{gcs.prefix}/live.bin")
    running = Journal.in_state_dir(gcs.cwd / ".daulat")
    try:
        # A run still going on (this process holds its lock) began the ``live`` session.
        run = running.begin_run("exit", "p", "src", "dst")
        running.record_resumable_upload(location, "live.bin", live, run, 8 * MiB, "{}")

        # By default a resumable upload is kept: the next run continues it.
        report = _clean(gcs.cwd)
        assert (report["uploads_aborted"], report["resumable_kept"]) == (0, 1), report
        assert report["uploads"] == ["big.bin: kept, a later run resumes it"]
        dry = _clean(gcs.cwd, "--include-resumable", "--dry-run")
        assert (dry["dry_run"], dry["uploads_aborted"]) == (True, 1), dry
        assert dry["uploads"] == ["big.bin: would discard the upload session"]
        assert gcs.proxy.requests("DELETE") == []
        assert _gcs_status(ours) == 308

        proc = daulat(["clean", "dst", "--include-resumable"], gcs.cwd)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "aborted 1 unfinished upload(s)" in proc.stdout, proc.stdout
        # The session URI is a capability: never printed.
        assert "upload_id" not in proc.stdout + proc.stderr
        deleted = [s.path for s in gcs.proxy.requests("DELETE")]
        assert deleted == [ours.removeprefix(gcs.proxy.endpoint)]
        assert _gcs_status(ours) == 404
        assert [k for _l, k, _u in _recorded(gcs.cwd)] == ["live.bin"]
        # The live run's session and the other client's are untouched: the other client
        # finishes its upload.
        assert _gcs_status(live) == 308
        body = b"theirs"
        reply = _http(
            "PUT", foreign, body, {"Content-Range": f"bytes 0-{len(body) - 1}/{len(body)}"}
        )
        assert reply.status in (200, 201), reply.status
    finally:
        running.close()
    assert gcs.server.objects(BUCKET)[f"{gcs.prefix}/theirs.bin"] == len(body)
    # The next run uploads the object afresh, and it verifies.
    proc = daulat(["exit", "src", "dst", "--json"], gcs.cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["resumed_uploads"] == 0
    assert hashlib.sha256(gcs.stored()).hexdigest() == digest


# ----------------------------------------------------------------------------------- Azure


def test_clean_discards_the_azure_blocks_daulat_staged_and_only_those(azure: AzureSetup) -> None:  # noqa: F811
    digest = _source(azure.cwd)
    kill_when(
        azure.cwd, ["exit", "src", "dst", "--bwlimit", "4M"], lambda: len(azure.staged()) >= 2
    )
    azure.proxy.wait_idle()
    session = azure.session()
    assert azure.staged() and all(f"-{session}-" in b.id for b in azure.staged())
    # Another writer's blocks, staged for a blob of its own in the same container.
    theirs = azure.container.get_blob_client(f"{azure.prefix}/theirs.bin")
    theirs.stage_block(base64.b64encode(b"their-block-1").decode(), b"x" * 10)

    report = _clean(azure.cwd)
    assert (report["uploads_aborted"], report["resumable_kept"]) == (0, 1), report
    dry = _clean(azure.cwd, "--include-resumable", "--dry-run")
    assert (dry["dry_run"], dry["uploads_aborted"]) == (True, 1), dry
    assert dry["uploads"] == ["big.bin: would discard the upload session"]
    staged = len(azure.staged())
    assert staged >= 2

    report = _clean(azure.cwd, "--include-resumable")
    assert (report["uploads_aborted"], report["uploads_left"]) == (1, 0), report
    assert azure.staged() == []
    assert not azure.blob.exists(), "no blob is left behind"
    assert _recorded(azure.cwd) == []
    assert len(theirs.get_block_list("uncommitted")[1]) == 1
    # The next run uploads the object afresh, and it verifies.
    proc = daulat(["exit", "src", "dst", "--json"], azure.cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["resumed_uploads"] == 0
    assert azure.stored_sha256() == digest


def test_azure_blocks_are_kept_when_discarding_them_would_touch_another_writer(
    azurite_server: AzuriteServer, tmp_path: Path
) -> None:
    """Only a commit discards uncommitted blocks, and it discards every writer's and rewrites
    the blob: with another writer's blocks beside daulat's, or a committed blob of that name,
    daulat's blocks are left to Azure (SessionKept); alone, they are discarded."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import ContainerClient

    prefix = f"keep-{os.getpid()}-{tmp_path.name}"
    raw = azure_store_config(azurite_server, "dst", "clean-sessions", prefix)
    container = ContainerClient(
        azurite_server.endpoint,
        "clean-sessions",
        credential={
            "account_name": azurite_server.account_name,
            "account_key": azurite_server.account_key,
        },
    )
    store = open_store(StoreConfig.model_validate(raw))
    blocks = unwrap_resumable(store)
    assert isinstance(blocks, AzureBlocks)
    sid = "0123456789abcdef"
    session = Session(sid, 5 * MiB)

    def stage(name: str, *ids: str) -> Any:
        blob = container.get_blob_client(f"{prefix}/{name}")
        for ident in ids:
            blob.stage_block(ident, ident.encode())
        return blob

    def ours(n: int) -> str:
        return block_id(sid, n, hashlib.md5(str(n).encode()).hexdigest())

    mixed = stage("mixed.bin", ours(1), "y" * len(ours(1)))
    committed = container.get_blob_client(f"{prefix}/kept.bin")
    committed.upload_blob(b"keep", overwrite=True)
    stage("kept.bin", ours(1))
    alone = stage("alone.bin", ours(1), ours(2))

    async def go() -> None:
        try:
            with pytest.raises(SessionKept, match="another writer"):
                await blocks.abort_session("mixed.bin", session)
            with pytest.raises(SessionKept, match="committed blob"):
                await blocks.abort_session("kept.bin", session)
            await blocks.abort_session("alone.bin", session)
            await blocks.abort_session("alone.bin", session)  # gone already: fine
            await blocks.abort_session("never.bin", session)  # no blob, no blocks: fine
        finally:
            await store.close()

    try:
        asyncio.run(go())
        assert len(mixed.get_block_list("uncommitted")[1]) == 2
        assert committed.download_blob().readall() == b"keep"
        assert len(committed.get_block_list("uncommitted")[1]) == 1
        # No blob was made of it, and no block is left.
        assert not alone.exists()
        with pytest.raises(ResourceNotFoundError):
            alone.get_block_list("all")
    finally:
        container.close()
