"""SIGINT and SIGTERM stop a run cleanly: real signals sent to a ``daulat exit`` process that is
copying (throttled with ``--bwlimit`` so it is mid-copy when the signal lands), through the
console script, so the exit code is what a shell sees (``main()`` ends with ``os._exit``).

What must hold after the signal:

* exit code 130 (SIGINT) or 143 (SIGTERM), never 0, and no traceback;
* it says what was done and prints the exact command to resume;
* the journal holds the run as ``interrupted``, and every object it says is done is complete and
  exact at the destination (nothing partial is visible under a final key);
* the audit log has an entry for the run, with its outcome, signal and error class;
* the same command then completes without copying again what was finished;
* when stderr is not a terminal, a progress line appears every 10 s (none with ``--quiet``).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shlex
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import fs_store_config, s3_store_config
from faultproxy import Proxy, fault_proxy
from servers import S3Server
from test_transfer import (
    DataSet,
    assert_exact_copy,
    fill_config,
    journal_path,
    journal_rows,
    read_config,
    unique,
    write_config,
)
from test_transfer_faults import Proc, count_keys, run_daulat, start_daulat

from daulat import interrupts
from daulat.crypto import new_identity
from daulat.signing import existing_local_key, signers_line
from daulat.errors import Interrupted

MiB = 1024 * 1024
PROGRESS_LINE = re.compile(r"^exit \S+ → \S+: [\d,]+ of [\d,]+ objects, .* of .*, \d+ s$", re.M)


def dataset(small: int, big: int, big_size: int) -> DataSet:
    rng = random.Random(7)
    objects = {f"s/{i:03d}.bin": rng.randbytes(64 * 1024) for i in range(small)}
    objects.update({f"big/{j}.bin": rng.randbytes(big_size) for j in range(big)})
    return DataSet(objects)


def wait_for(predicate: Any, timeout: float, what: str, proc: Proc) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.popen.poll() is None, f"daulat ended before {what}:\n{proc.err[-2000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{proc.err[-2000:]}"
        time.sleep(0.05)


def last_run(config: Path) -> tuple[int, str, dict[str, Any]]:
    db = sqlite3.connect(journal_path(config))
    try:
        run_id, status, summary = db.execute(
            "SELECT id, status, summary FROM runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
    finally:
        db.close()
    return run_id, status, json.loads(summary or "{}")


def audit_entries(config: Path) -> list[dict[str, Any]]:
    path = config.parent / ".daulat" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def interrupt_and_resume(
    config: Path,
    workdir: Path,
    data: DataSet,
    dst_raw: dict[str, Any],
    sig: signal.Signals,
    *,
    landed: Any,
    after: float,
    quiet: bool,
    bwlimit: str,
) -> None:
    args = ["exit", "src", "dst", "--config", str(config), "--bwlimit", bwlimit]
    if quiet:
        args.append("--quiet")
    proc = start_daulat(args, workdir)
    started = time.monotonic()
    wait_for(lambda: landed() > 0, 60, "a first object at the destination", proc)
    wait_for(lambda: time.monotonic() - started > after, after + 5, f"{after} s of copying", proc)
    proc.popen.send_signal(sig)
    code = proc.wait(60)
    err, out = proc.err, proc.out
    assert code == 128 + sig, (code, err[-3000:])
    assert "Traceback" not in err, err
    name = sig.name
    assert f"interrupted by {name}" in err, err
    assert f"resume with: daulat {shlex.join(args)}" in err, err
    assert out.startswith("exit src → dst: "), out  # what was done: the summary
    progress = PROGRESS_LINE.findall(err)
    if quiet:
        assert not progress, err
    else:
        # Not a terminal: a short line every 10 s while the copy runs.
        assert progress, err

    run_id, status, summary = last_run(config)
    assert status == "interrupted"
    assert summary["interrupted"] == name and summary["ok"] is False
    done_in = {
        k: run for k, (state, run) in journal_rows(journal_path(config)).items() if state == "done"
    }
    done = set(done_in)
    assert 0 < len(done) < len(data.objects), "the signal did not land mid-copy"
    assert summary["copied_objects"] == len(done)
    # Every object the journal calls done is at the destination, and whatever is visible under
    # a final key is complete and exact (an upload the provider finished just as the signal
    # landed may be there, or appear moments later, without being in the journal: the next run
    # adopts it by its proof).
    at_dst = read_config(dst_raw)
    assert done <= set(at_dst)
    assert all(at_dst[k] == data.objects[k] for k in at_dst)

    [entry] = [e for e in audit_entries(config) if e["details"].get("run_id") == run_id]
    assert entry["operation"] == "exit"
    details = entry["details"]
    assert details["outcome"] == "interrupted" and details["signal"] == name
    assert details["error"] == "Interrupted" and details["copied"] == len(done)

    final = start_daulat(["exit", "src", "dst", "--config", str(config), "--json"], workdir)
    assert final.wait(180) == 0, final.err[-3000:]
    result = json.loads(final.out)
    assert result["ok"] is True and result["verified_objects"] == len(data.objects)
    # Nothing finished was copied again: what the journal held was skipped (its rows are still
    # the interrupted run's), and what was complete at the destination without a row, adopted.
    after = journal_rows(journal_path(config))
    assert {k: after[k] for k in done} == {k: ("done", run) for k, run in done_in.items()}
    adopted = result["adopted_objects"]
    assert result["skipped_objects"] == len(done) + adopted
    assert result["copied_objects"] == len(data.objects) - len(done) - adopted
    assert_exact_copy(data.objects, read_config(dst_raw))


def _files(root: Path) -> int:
    n = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d not in (".daulat-tmp", ".daulat")]
        n += len(filenames)
    return n


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("sig", "quiet"), [(signal.SIGINT, True), (signal.SIGTERM, False)], ids=["INT", "TERM"]
)
def test_signal_stops_a_filesystem_exit_cleanly(
    tmp_path: Path, sig: signal.Signals, quiet: bool
) -> None:
    """fs → fs, 40 small objects and 3 x 12 MiB at 2 MiB/s (about 19 s): the signal lands
    after 13 s, when a progress line is due."""
    data = dataset(40, 3, 12 * MiB)
    src_raw = fs_store_config(tmp_path / "src", "src")
    fill_config(src_raw, data.objects)
    dst_root = tmp_path / "dst"
    dst_raw = fs_store_config(dst_root, "dst")
    config = write_config(tmp_path, [src_raw, dst_raw])
    interrupt_and_resume(
        config,
        tmp_path,
        data,
        dst_raw,
        sig,
        landed=lambda: _files(dst_root),
        after=13.0,
        quiet=quiet,
        bwlimit="2M",
    )


@pytest.mark.timeout(300)
def test_sigint_stops_a_seaweedfs_exit_cleanly(
    s3_server: S3Server, s3_server_b: S3Server, tmp_path: Path
) -> None:
    """SeaweedFS A → SeaweedFS B (two servers: no server-side copy, the bytes stream through
    daulat), 60 small objects and 2 x 16 MiB (multipart uploads in flight when it stops)."""
    data = dataset(60, 2, 16 * MiB)
    src_raw = s3_store_config(s3_server, "src", unique("int-src"))
    fill_config(src_raw, data.objects)
    bucket = unique("int-dst")
    dst_raw = s3_store_config(s3_server_b, "dst", bucket)
    config = write_config(tmp_path, [src_raw, dst_raw])
    interrupt_and_resume(
        config,
        tmp_path,
        data,
        dst_raw,
        signal.SIGINT,
        landed=lambda: count_keys(s3_server_b, bucket),
        after=2.0,
        quiet=True,
        bwlimit="4M",
    )


def test_interrupts_run_turns_a_signal_into_interrupted() -> None:
    """The library runner: SIGTERM while a coroutine waits cancels it, and the caller gets
    Interrupted with the signal (exit code 143), not a dead process."""
    cleaned: list[bool] = []

    async def work() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.append(True)  # cancellation runs the coroutine's own clean-up

    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    with pytest.raises(Interrupted) as caught:
        interrupts.run(work())
    timer.join()
    assert caught.value.signum == signal.SIGTERM and caught.value.exit_code == 143
    assert cleaned == [True]
    # The handlers are restored afterwards.
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


# --------------------------------------------------------------------------------------------
# Ctrl-C while an encrypted copy is being read: decryption streams, readers and hashing are
# cancelled cleanly (no "aclose(): asynchronous generator is already running").

UNCLEAN = ("Traceback", "Exception ignored", "never retrieved", "RuntimeError", "Task was destroyed")


@pytest.fixture(scope="module")
def encrypted_copy(
    s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Proxy]]:
    """A filesystem source (12 x 8 MiB and 20 small objects) and its age-encrypted copy on
    SeaweedFS, reached through a proxy the tests can throttle; the config (the local signing
    key pinned) and the identity file ``id.txt`` are in one directory."""
    workdir = tmp_path_factory.mktemp("encrypted-copy")
    data = dataset(20, 12, 8 * MiB)
    src_raw = fs_store_config(workdir / "data", "data")
    fill_config(src_raw, data.objects)
    recipient = new_identity(workdir / "id.txt")
    with fault_proxy(s3_server.endpoint) as proxy:
        vault_raw = s3_store_config(s3_server, "vault", unique("enc-int"))
        vault_raw["endpoint"] = proxy.endpoint
        restored = workdir / "restored"
        restored.mkdir()
        config = write_config(workdir, [src_raw, vault_raw, fs_store_config(restored, "restored")])
        code, proc = run_daulat(
            ["exit", "data", "vault", "--encrypt-to", recipient, "--config", str(config)],
            workdir,
        )
        assert code == 0, proc.err[-3000:]
        # Pin the key the manifests were signed with, as the exit's notice says to.
        own = existing_local_key(workdir / ".daulat")
        assert own is not None
        config.write_text(signers_line([own]) + "\n" + config.read_text())
        yield config, proxy


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("command", "rate"),
    [
        (["verify", "data", "vault", "--full"], None),
        (["verify", "data", "vault", "--full"], 16 * MiB),
        (["restore", "vault", "restored"], None),
        (["restore", "vault", "restored"], 16 * MiB),
    ],
    ids=["verify-full", "verify-full-throttled", "restore", "restore-throttled"],
)
def test_sigint_while_decrypting_an_encrypted_copy_is_clean(
    encrypted_copy: tuple[Path, Proxy], command: list[str], rate: int | None
) -> None:
    """SIGINT lands while encrypted objects are being downloaded, decrypted and hashed (or
    written), as fast as SeaweedFS sends them or throttled by the proxy: the run ends with 130,
    says it was interrupted, and stderr holds no traceback and no complaint about generators or
    tasks left behind ("aclose(): asynchronous generator is already running" was printed for
    every stream in flight); the audit log records the interruption."""
    config, proxy = encrypted_copy
    workdir = config.parent
    for leftover in (workdir / "restored").iterdir():
        if leftover.is_file():
            leftover.unlink()
    proxy.response_rate = rate
    args = [*command, "-i", str(workdir / "id.txt"), "--config", str(config)]
    if command[0] == "restore":
        args.append("--allow-plaintext")  # a second run writes over the first's objects
    before = len(audit_entries(config))
    served = proxy.stats["response_bytes"]
    try:
        proc = start_daulat(args, workdir)
        wait_for(
            lambda: proxy.stats["response_bytes"] - served > 24 * MiB,
            60,
            "encrypted objects being read",
            proc,
        )
        proc.popen.send_signal(signal.SIGINT)
        code = proc.wait(60)
    finally:
        proxy.response_rate = None
    err = proc.err
    assert code == 130, (code, err[-3000:])
    assert "interrupted by SIGINT" in err, err
    for word in UNCLEAN:
        assert word not in err, err
    entries = audit_entries(config)[before:]
    assert [e["details"]["outcome"] for e in entries] == ["interrupted"], entries
    assert entries[0]["details"]["signal"] == "SIGINT"
