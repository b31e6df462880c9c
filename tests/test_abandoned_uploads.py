"""Touch only your own uploads: daulat aborts the multipart uploads it recorded, never another
client's, and with its journal lost only stale uploads on keys it is about to write.

Real SeaweedFS, the real CLI (a subprocess, killed with SIGKILL mid-upload), and another
client (plain botocore) with unfinished uploads of its own in the same bucket and prefix.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from conftest import s3_store_config
from servers import S3Server

MiB = 1024 * 1024
BUCKET = "abandoned-uploads"


def _client(server: S3Server) -> Any:
    session = botocore.session.Session()
    session.set_credentials(server.access_key_id, server.secret_access_key)
    return session.create_client("s3", endpoint_url=server.endpoint, region_name=server.region)


def _daulat(
    args: list[str], cwd: Path, *, wait: bool = True
) -> subprocess.CompletedProcess[str] | subprocess.Popen[str]:
    argv = [sys.executable, "-c", "from daulat.cli import main; main()", *args]
    if not wait:
        return subprocess.Popen(
            argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def setup(s3_server: S3Server, tmp_path: Path) -> Iterator[tuple[Path, str, Any]]:
    """A config with a filesystem source and an S3 destination under a fresh prefix."""
    prefix = f"run-{os.getpid()}-{time.monotonic_ns()}"
    raw = s3_store_config(s3_server, "dst", BUCKET, prefix)
    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "daulat.toml").write_text(
        textwrap.dedent(
            f"""
            [stores.src]
            url = "file://{src}"
            provider = "local"
            country = "ID"

            [stores.dst]
            url = "{raw["url"]}"
            provider = "self-hosted"
            country = "ID"
            endpoint = "{raw["endpoint"]}"
            [stores.dst.credentials]
            access_key_id = "{s3_server.access_key_id}"
            secret_access_key = "{s3_server.secret_access_key}"
            """
        )
    )
    client = _client(s3_server)
    yield tmp_path, prefix, client
    for upload in _uploads(client, prefix):
        client.abort_multipart_upload(
            Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"]
        )
    client.close()


def _uploads(client: Any, prefix: str) -> list[dict[str, Any]]:
    found = client.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads", [])
    # SeaweedFS answers with the whole bucket's uploads, whatever the prefix.
    return [u for u in found if u["Key"].startswith(prefix + "/")]


def _foreign_upload(client: Any, key: str) -> tuple[str, str]:
    """Another application's upload: begun, one part sent, not completed."""
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    part = client.upload_part(
        Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1, Body=b"f" * (5 * MiB)
    )
    return upload_id, part["ETag"]


def _journal_uploads(cwd: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(cwd / ".daulat" / "transfers.sqlite")
    try:
        return db.execute("SELECT key, upload_id, part_size FROM uploads").fetchall()
    finally:
        db.close()


def _big_source(cwd: Path, size: int = 64 * MiB) -> None:
    (cwd / "src" / "big.bin").write_bytes(os.urandom(size))
    (cwd / "src" / "small.txt").write_text("small")


def test_another_clients_upload_survives_an_exit_and_completes_afterwards(
    setup: tuple[Path, str, Any],
) -> None:
    cwd, prefix, client = setup
    _big_source(cwd, 20 * MiB)
    # Same bucket, same prefix; one on a key daulat writes, one beside it.
    theirs = {
        f"{prefix}/big.bin": _foreign_upload(client, f"{prefix}/big.bin"),
        f"{prefix}/theirs/video.mp4": _foreign_upload(client, f"{prefix}/theirs/video.mp4"),
    }
    proc = _daulat(["exit", "src", "dst", "--json"], cwd)
    assert isinstance(proc, subprocess.CompletedProcess)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["aborted_uploads"] == 0
    assert {u["UploadId"] for u in _uploads(client, prefix)} == {u for u, _ in theirs.values()}
    assert _journal_uploads(cwd) == []  # daulat's own upload was completed and forgotten
    # The other application finishes its work afterwards, undisturbed.
    for key, (upload_id, etag) in theirs.items():
        client.complete_multipart_upload(
            Bucket=BUCKET,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
        )
    got = client.get_object(Bucket=BUCKET, Key=f"{prefix}/theirs/video.mp4")["Body"].read()
    assert got == b"f" * (5 * MiB)


def _kill_mid_upload(cwd: Path, client: Any, prefix: str) -> str:
    """Start a throttled exit of a 64 MiB object, SIGKILL it once its multipart upload has
    parts at the server; return the upload id the journal recorded."""
    proc = _daulat(["exit", "src", "dst", "--bwlimit", "8M"], cwd, wait=False)
    assert isinstance(proc, subprocess.Popen)
    deadline = time.monotonic() + 120
    try:
        while True:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no upload with parts appeared"
            uploads = [u for u in _uploads(client, prefix) if u["Key"].endswith("/big.bin")]
            if uploads and client.list_parts(
                Bucket=BUCKET, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"]
            ).get("Parts"):
                break
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
    assert (cwd / ".daulat").is_dir(), (out, err, sorted(os.listdir(cwd)))
    recorded = _journal_uploads(cwd)
    # Keys as the store names them (relative to its prefix), with the upload's id.
    assert [(k, u) for k, u, _ in recorded] == [("big.bin", uploads[0]["UploadId"])]
    assert recorded[0][2] == 8 * MiB  # the part size, for a later resume
    return str(uploads[0]["UploadId"])


def test_an_upload_left_by_a_killed_run_is_continued_by_the_next(
    setup: tuple[Path, str, Any],
) -> None:
    cwd, prefix, client = setup
    _big_source(cwd)
    foreign_id, _ = _foreign_upload(client, f"{prefix}/theirs.bin")
    left = _kill_mid_upload(cwd, client, prefix)
    proc = _daulat(["exit", "src", "dst", "--json"], cwd)
    assert isinstance(proc, subprocess.CompletedProcess)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["aborted_uploads"], summary["resumed_uploads"]) == (0, 1)
    remaining = {u["UploadId"] for u in _uploads(client, prefix)}
    assert left not in remaining and remaining == {foreign_id}
    assert _journal_uploads(cwd) == []


def test_an_upload_left_for_a_key_no_longer_written_is_aborted_by_the_next(
    setup: tuple[Path, str, Any],
) -> None:
    cwd, prefix, client = setup
    _big_source(cwd)
    foreign_id, _ = _foreign_upload(client, f"{prefix}/theirs.bin")
    left = _kill_mid_upload(cwd, client, prefix)
    (cwd / "src" / "big.bin").unlink()  # nothing will continue it
    proc = _daulat(["exit", "src", "dst", "--json"], cwd)
    assert isinstance(proc, subprocess.CompletedProcess)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["aborted_uploads"] == 1
    remaining = {u["UploadId"] for u in _uploads(client, prefix)}
    assert left not in remaining and remaining == {foreign_id}
    assert _journal_uploads(cwd) == []


def test_with_the_journal_lost_only_stale_uploads_on_keys_it_writes_are_aborted(
    setup: tuple[Path, str, Any],
) -> None:
    cwd, prefix, client = setup
    _big_source(cwd)
    left = _kill_mid_upload(cwd, client, prefix)
    for leftover in (cwd / ".daulat").glob("transfers.sqlite*"):
        leftover.unlink()
    foreign_id, _ = _foreign_upload(client, f"{prefix}/theirs.bin")
    # A fresh upload without a record looks like anyone's: it survives (default: 7 days).
    proc = _daulat(["exit", "src", "dst", "--json"], cwd)
    assert isinstance(proc, subprocess.CompletedProcess)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["aborted_uploads"] == 0
    assert {u["UploadId"] for u in _uploads(client, prefix)} == {left, foreign_id}
    # Stale (older than the given age) and on a key this run writes: aborted. The other
    # client's upload is just as old but on a key daulat does not write: it survives.
    (cwd / "src" / "big.bin").write_bytes(os.urandom(9 * MiB))  # planned again
    time.sleep(1.5)
    proc = _daulat(
        ["copy", "src", "dst", "--json", "--abort-uploads-older-than", "1s"], cwd
    )
    assert isinstance(proc, subprocess.CompletedProcess)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["aborted_uploads"] == 1
    assert {u["UploadId"] for u in _uploads(client, prefix)} == {foreign_id}
