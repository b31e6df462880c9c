"""``daulat clean STORE`` removes daulat's own leftovers and nothing else; runs in progress
are told from killed ones by their lock, so neither ``clean`` nor a second run aborts the
uploads of a run that is still going on.

Real SeaweedFS (another client's unfinished upload beside daulat's), a real directory store
(a temp file a live process still writes beside an abandoned one), real processes.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import begin_audit
from test_abandoned_uploads import BUCKET, _client, _daulat, _uploads, setup  # noqa: F401

from daulat.config import load_config
from daulat.stores import open_store
from daulat.stores.s3raw import unwrap_fallback
from daulat.transfer.journal import Journal


def _fs_project(tmp_path: Path) -> Path:
    (tmp_path / "dst").mkdir()
    (tmp_path / "daulat.toml").write_text(
        textwrap.dedent(
            f"""
            [stores.dst]
            url = "file://{tmp_path / "dst"}"
            provider = "local"
            country = "ID"
            """
        )
    )
    return tmp_path


def test_clean_removes_abandoned_temp_files_not_a_live_writers(tmp_path: Path) -> None:
    project = _fs_project(tmp_path)
    tmp = project / "dst" / ".daulat-tmp"
    tmp.mkdir()
    abandoned = tmp / f"{'a' * 16}.999999.daulat-part"
    abandoned.write_bytes(b"x" * 1000)
    live = tmp / f"{'b' * 16}.{os.getpid()}.daulat-part"
    live.write_bytes(b"y" * 10)
    # Another process writes ``live`` and holds its lock, as daulat's writers do.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(live)!r}, os.O_RDWR)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        # A dry run counts what the real one removes, and removes nothing.
        res = _daulat(["clean", "dst", "--dry-run", "--json"], project)
        assert res.returncode == 0, res.stderr
        report = json.loads(res.stdout)
        assert (report["dry_run"], report["temp_files"], report["temp_bytes"]) == (True, 1, 1000)
        assert abandoned.exists() and live.exists()
        res = _daulat(["clean", "dst", "--dry-run"], project)
        assert "would remove 1 temp file(s)" in res.stdout, res.stdout
        assert abandoned.exists()
        res = _daulat(["clean", "dst", "--json"], project)
        assert res.returncode == 0, res.stderr
        report = json.loads(res.stdout)
        assert (report["temp_files"], report["temp_bytes"]) == (1, 1000)
        assert not abandoned.exists() and live.exists()
    finally:
        holder.kill()
        holder.wait()
    res = _daulat(["clean", "dst"], project)
    assert res.returncode == 0, res.stderr
    assert "removed 1 temp file(s)" in res.stdout
    assert not tmp.exists(), "an empty .daulat-tmp/ is removed too"
    entries = [json.loads(line) for line in (project / ".daulat" / "audit.jsonl").open()]
    assert [e["operation"] for e in entries][-2:] == ["clean", "clean"]


def test_clean_aborts_only_recorded_uploads_of_runs_no_longer_going_on(
    setup: tuple[Path, str, Any],  # noqa: F811
) -> None:
    project, prefix, client = setup
    config = load_config(project / "daulat.toml")
    store = open_store(config.store("dst"))
    s3 = unwrap_fallback(store)
    assert s3 is not None
    location = s3.location

    def start(key: str) -> str:
        return str(client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"])

    foreign_key = f"{prefix}/other.bin"
    killed, live = start(f"{prefix}/killed.bin"), start(f"{prefix}/live.bin")
    foreign = start(foreign_key)
    # The journal records keys as the store names them: relative to its prefix.
    begin_audit(config.state_dir)
    with Journal.in_state_dir(config.state_dir) as journal:
        dead_run = journal.begin_run("exit", "p", "src", "dst")
        journal.record_upload(location, "killed.bin", killed, dead_run, 8 << 20)
    # The Journal was closed without ending the run: like a killed process, not live.
    running = Journal.in_state_dir(config.state_dir)
    try:
        live_run = running.begin_run("exit", "p", "src", "dst")
        running.record_upload(location, "live.bin", live, live_run, 8 << 20)
        assert running.run_is_live(live_run) and not running.run_is_live(dead_run)

        dry = _daulat(["clean", "dst", "--dry-run", "--json"], project)
        assert dry.returncode == 0, dry.stderr
        assert json.loads(dry.stdout)["uploads_aborted"] == 1
        assert {u["UploadId"] for u in _uploads(client, prefix)} == {killed, live, foreign}

        res = _daulat(["clean", "dst"], project)
        assert res.returncode == 0, res.stderr
        assert "aborted 1 unfinished upload(s)" in res.stdout
        assert {u["UploadId"] for u in _uploads(client, prefix)} == {live, foreign}
    finally:
        running.close()
    # Once its process is gone, the run's upload is daulat's leftover too; the other
    # client's upload is never touched, and still completes.
    res = _daulat(["clean", "dst"], project)
    assert res.returncode == 0, res.stderr
    assert {u["UploadId"] for u in _uploads(client, prefix)} == {foreign}
    part = client.upload_part(
        Bucket=BUCKET, Key=foreign_key, UploadId=foreign, PartNumber=1, Body=b"theirs"
    )
    client.complete_multipart_upload(
        Bucket=BUCKET,
        Key=foreign_key,
        UploadId=foreign,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert client.get_object(Bucket=BUCKET, Key=foreign_key)["Body"].read() == b"theirs"


def test_run_lock_is_released_when_the_process_dies(tmp_path: Path) -> None:
    state = tmp_path / ".daulat"
    code = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from daulat.transfer.journal import Journal
        j = Journal.in_state_dir(Path({str(state)!r}))
        print(j.begin_run("exit", "p", "a", "b"), flush=True)
        import time; time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    run_id = int(proc.stdout.readline())
    with Journal.in_state_dir(state) as journal:
        assert journal.run_is_live(run_id)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 5
        while journal.run_is_live(run_id) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not journal.run_is_live(run_id)
    lock = state / "runs" / f"{run_id}.lock"
    assert oct(lock.stat().st_mode & 0o777) == "0o600"
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free
    finally:
        os.close(fd)


def test_clean_of_an_unknown_store_is_a_config_error(tmp_path: Path) -> None:
    project = _fs_project(tmp_path)
    res = _daulat(["clean", "nosuch"], project)
    assert res.returncode == 2
    assert "nosuch" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("flag", ["--include-resumable"])
def test_clean_accepts_include_resumable(tmp_path: Path, flag: str) -> None:
    project = _fs_project(tmp_path)
    res = _daulat(["clean", "dst", flag], project)
    assert res.returncode == 0, res.stderr
