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
import shutil
import signal
import sqlite3
import subprocess
import sys
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
from test_transfer_faults import Proc, count_keys, daulat_bin, run_daulat, start_daulat

from daulat import interrupts
from daulat.crypto import new_identity
from daulat.errors import Interrupted
from daulat.signing import existing_local_key, signers_line

MiB = 1024 * 1024
PROGRESS_LINE = re.compile(r"^exit \S+ → \S+: [\d,]+ of [\d,]+ objects?, .* of .*, \d+ s$", re.M)


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
    wait_for(lambda: landed() > 0, 60, "a first object at the destination", proc)
    # Counted from the first object's landing, not from the process's start: on a busy machine
    # start-up alone can take longer than ``after``, and a signal at the first landing may
    # come before the run heard back of any object (nothing done in the journal yet).
    started = time.monotonic()
    wait_for(lambda: time.monotonic() - started > after, after + 5, f"{after} s of copying", proc)
    if not quiet:
        # Off a terminal a progress line comes every 10 s of the run; on a busy machine the
        # run itself may have started seconds after the process did.
        wait_for(lambda: PROGRESS_LINE.search(proc.err) is not None, 60, "a progress line", proc)
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
    11 s after the first object, when a progress line is due."""
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
        after=11.0,
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


@pytest.mark.timeout(300)
def test_an_exit_interrupted_mid_multipart_says_the_bytes_it_sent_and_their_rate(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """One 40 MiB object, filesystem → SeaweedFS at 2 MiB/s: the signal lands while its
    multipart upload is half sent, so no object is finished. The summary still says how many
    bytes went out and the rate from them, never "0 B/s"."""
    data = dataset(0, 1, 40 * MiB)
    src_raw = fs_store_config(tmp_path / "src", "src")
    fill_config(src_raw, data.objects)
    dst_raw = s3_store_config(s3_server, "dst", unique("int-mpu"))
    config = write_config(tmp_path, [src_raw, dst_raw])
    proc = start_daulat(
        ["exit", "src", "dst", "--config", str(config), "--bwlimit", "2M"], tmp_path
    )
    # Off a terminal a progress line comes every 10 s: the upload is under way by then.
    wait_for(lambda: PROGRESS_LINE.search(proc.err) is not None, 120, "a progress line", proc)
    proc.popen.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130, proc.err[-3000:]
    _, status, summary = last_run(config)
    assert status == "interrupted" and summary["copied_objects"] == 0, summary
    assert summary["sent_bytes"] >= 8 * MiB, summary  # at least one part's worth went out
    rate = summary["throughput_bytes_per_s"]
    assert 0.5 * MiB < rate < 3 * MiB, summary  # about the 2 MiB/s cap, over the whole run
    head, parts = proc.out.splitlines()[:2]
    assert head.startswith("exit src → dst: ") and not head.endswith(" 0 B/s"), proc.out
    assert re.search(r"sent [\d.]+ MiB in all", parts), proc.out
    assert "copied 0 (0 B)" in parts, proc.out


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
# Honest numbers when a run is interrupted part-way (in-process: the signal is sent from
# inside a store call, so it lands exactly where the test needs it)


def _local_pair(tmp_path: Path, src: dict[str, bytes], dst: dict[str, bytes]) -> Path:
    src_raw = fs_store_config(tmp_path / "src", "src")
    dst_raw = fs_store_config(tmp_path / "dst", "dst")
    for root, objects in ((tmp_path / "src", src), (tmp_path / "dst", dst)):
        root.mkdir(parents=True, exist_ok=True)
        for key, data in objects.items():
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(data)
    return write_config(tmp_path, [src_raw, dst_raw])


def test_an_interrupted_sync_delete_counts_the_deletions_it_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hostile review: SIGINT during ``sync --delete --json`` reported "deleted_objects": 0
    while "deleted": {"count": 208}. Deletions are counted as they happen."""
    from test_transfer import cli

    from daulat.stores.fs import FsStore

    extra = {f"old/{i:03d}.txt": b"gone" for i in range(40)}
    config = _local_pair(tmp_path, {"keep.txt": b"keep"}, extra)
    original = FsStore.delete
    calls = 0

    async def delete(self: FsStore, key: str) -> None:
        nonlocal calls
        calls += 1
        n = calls
        if n > 5:
            await asyncio.sleep(30)  # never ends: the signal cancels the run first
        if n == 5:
            await asyncio.sleep(0.5)  # the first four are done
        await original(self, key)
        if n == 5:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(FsStore, "delete", delete)
    argv = ["sync", "src", "dst", "--delete", "--max-delete", "100%", "--json", "-c", str(config)]
    res = cli(argv, capsys)
    assert res.code == 130, res.explain()
    d = res.json
    gone = len(extra) - sum(1 for k in extra if (tmp_path / "dst" / k).exists())
    assert gone == 5
    assert d["deleted_objects"] == d["deleted"]["count"] == gone, d
    assert d["interrupted"] == "SIGINT"
    _, status, recorded = last_run(config)
    assert status == "interrupted" and recorded["deleted_objects"] == gone


def test_deletions_in_flight_at_a_signal_are_counted_and_the_rest_remain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hostile review 2, finding 14: SIGINT while ten deletions were out at the provider; they
    completed there but the summary, JSON and audit counted none of them, and it said "0
    object(s) remain" with 30 planned deletions not done. Deletions in flight are waited for
    and counted; the planned ones not done are reported as remaining."""
    from test_transfer import cli

    from daulat.stores.fs import FsStore

    extra = {f"old/{i:03d}.txt": b"gone" for i in range(40)}
    config = _local_pair(tmp_path, {"keep.txt": b"keep"}, extra)
    original = FsStore.delete
    calls = 0

    async def delete(self: FsStore, key: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 10:  # all ten allowed at once are out: the signal lands now
            os.kill(os.getpid(), signal.SIGINT)
        await original(self, key)  # done at the provider ...
        await asyncio.sleep(0.3)  # ... and its answer on the way back

    monkeypatch.setattr(FsStore, "delete", delete)
    argv = ["sync", "src", "dst", "--delete", "--max-delete", "100%", "--concurrency", "10"]
    res = cli([*argv, "--json", "-c", str(config)], capsys)
    assert res.code == 130, res.explain()
    d = res.json
    gone = len(extra) - sum(1 for k in extra if (tmp_path / "dst" / k).exists())
    assert gone == 10, res.out[-3000:] + res.err[-2000:]
    assert d["deleted_objects"] == d["deleted"]["count"] == gone, d
    assert d["left_deletions"] == len(extra) - gone, d
    run_id, status, recorded = last_run(config)
    assert status == "interrupted" and recorded["deleted_objects"] == gone
    [entry] = [e for e in audit_entries(config) if e["details"].get("run_id") == run_id]
    assert entry["details"]["deleted"]["count"] == gone
    assert entry["details"]["left_deletions"] == len(extra) - gone
    # People read the same: what was deleted, and what was planned but not done.
    calls = 0
    res = cli([*argv, "-c", str(config)], capsys)
    assert res.code == 130, res.explain()
    assert "deleted 10" in res.out, res.out
    assert "planned deletion(s) not done" in res.err, res.err
    assert "0 object(s) (0 B) remain;" not in res.err, res.err


def test_a_run_interrupted_while_listing_never_says_nothing_remains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hostile review: a SIGTERM during listing printed "0 objects ... 0 remain" when 303
    remained. Now the summary says the listing did not finish, counts what it had listed,
    and gives no number for what remains (null in JSON)."""
    from test_transfer import cli

    from daulat.stores.fs import FsStore

    objects = {f"d{i % 7}/{i:04d}.txt": b"x" * i for i in range(303)}
    config = _local_pair(tmp_path, objects, {})
    original = FsStore.list

    async def slow_list(self: FsStore, prefix: str = "") -> Any:
        async for batch in original(self, prefix):
            yield batch
            if self.name == "src":
                os.kill(os.getpid(), signal.SIGTERM)
                await asyncio.sleep(30)

    monkeypatch.setattr(FsStore, "list", slow_list)
    res = cli(["exit", "src", "dst", "--json", "-c", str(config)], capsys)
    assert res.code == 143, res.explain()
    d = res.json
    assert d["left_objects"] is None and d["left_bytes"] is None, d
    assert d["remaining_known"] is False and 0 < d["listed_objects"] <= 303
    res = cli(["exit", "src", "dst", "-c", str(config)], capsys)
    assert res.code == 143
    assert "0 object(s)" not in res.err and "0 remain" not in res.err, res.err
    assert "listing did not finish" in res.err and "unknown" in res.err, res.err
    assert "left unknown" in res.out and "left 0" not in res.out, res.out
    assert "Traceback" not in res.err


def test_a_missing_source_bucket_is_an_error_not_an_empty_remainder(
    s3_server: S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hostile review: ``exit nob fs:x`` with a missing source bucket said "0 objects remain"."""
    from test_transfer import cli

    src = s3_store_config(s3_server, "nob", unique("real"))
    src["url"] = f"s3://{unique('nobucket')}"
    dst = fs_store_config(tmp_path / "x", "x")
    config = write_config(tmp_path, [src, dst])
    res = cli(["exit", "nob", "x", "-c", str(config)], capsys)
    assert res.code == 1, res.explain()
    assert "does not exist" in res.err and "cannot list the source nob" in res.err, res.err
    assert "0 objects" not in res.err and "left 0" not in res.out, res.out + res.err
    assert "Traceback" not in res.err
    res = cli(["exit", "nob", "x", "--json", "-c", str(config)], capsys)
    assert res.code == 1
    assert res.json["left_objects"] is None and "does not exist" in res.json["stopped"]


# Ctrl-C while an encrypted copy is being read: decryption streams, readers and hashing are
# cancelled cleanly (no "aclose(): asynchronous generator is already running").

UNCLEAN = (
    "Traceback",
    "Exception ignored",
    "never retrieved",
    "RuntimeError",
    "Task was destroyed",
)


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


# --------------------------------------------------------------------------------------------
# Signals at awkward moments: before the run's task started, in the synchronous part of a
# command, twice in a row (as `timeout` sends them). The process signals itself at an exact
# point (a real signal, delivered to the real handlers), through a small driver that patches
# one function and then runs the CLI.

DRIVER = """
import asyncio, os, signal, sys, threading, time
from daulat import cli, interrupts

phase, signame, *argv = sys.argv[1:]
sig = signal.Signals[signame]

def once(target, attr):
    real = getattr(target, attr)
    fired = []
    def patched(*args, **kwargs):
        if not fired:
            fired.append(True)
            os.kill(os.getpid(), sig)
        return real(*args, **kwargs)
    setattr(target, attr, patched)

if phase == "before-task":  # the handlers are installed, the coroutine has not started
    once(asyncio.Runner, "run")
elif phase == "loading":  # reading the config, before any library call
    import daulat.cli.transfers as transfers  # where exit looks up _load
    once(transfers, "_load")
elif phase == "report":  # inside the synchronous report, while it collects
    import daulat.report.write as write
    once(write, "collect")
elif phase == "twice":
    # The first signal, then the same one again as soon as its handler has run (before the
    # run was cancelled or moments after): `timeout` signals the process and its group.
    def twice():
        while not os.path.exists(os.environ["DAULAT_TEST_GO"]):
            time.sleep(0.01)
        os.kill(os.getpid(), sig)
        while interrupts.received() is None:
            time.sleep(0.0005)
        os.kill(os.getpid(), sig)
    threading.Thread(target=twice, daemon=True).start()
code = cli.run(argv)
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
"""


def drive(
    workdir: Path, phase: str, sig: signal.Signals, args: list[str], **env: str
) -> tuple[int, str]:
    script = workdir / "driver.py"
    script.write_text(DRIVER)
    done = subprocess.run(
        [sys.executable, str(script), phase, sig.name, *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **env},
    )
    return done.returncode, done.stderr


@pytest.fixture
def small_project(tmp_path: Path) -> Path:
    """src (30 small files) and an empty dst, both on the filesystem; returns the config."""
    data = dataset(30, 0, 0)
    src_raw = fs_store_config(tmp_path / "src", "src")
    fill_config(src_raw, data.objects)
    (tmp_path / "dst").mkdir()
    return write_config(tmp_path, [src_raw, fs_store_config(tmp_path / "dst", "dst")])


@pytest.mark.parametrize(
    ("command", "operation"),
    [
        (["exit", "src", "dst"], "exit"),
        (["copy", "src", "dst"], "copy"),
        (["verify", "src", "dst"], "verify"),
        (["scan", "src"], "scan"),
        (["clean", "dst"], "clean"),
    ],
    ids=["exit", "copy", "verify", "scan", "clean"],
)
def test_a_signal_before_the_run_started_is_audited(
    small_project: Path, command: list[str], operation: str
) -> None:
    """SIGTERM after the command called its library function, before the coroutine took its
    first step: it is stopped (143, no traceback) and the audit log says it was interrupted
    by SIGTERM (the run used to be dropped unstarted, and unrecorded)."""
    workdir = small_project.parent
    code, err = drive(workdir, "before-task", signal.SIGTERM, command)
    assert code == 143, err
    assert "Traceback" not in err and "interrupted by SIGTERM" in err, err
    [entry] = audit_entries(small_project)
    assert entry["operation"] == operation, entry
    assert entry["details"]["outcome"] == "interrupted", entry
    assert entry["details"]["signal"] == "SIGTERM", entry
    # Nothing was copied.
    assert not [p for p in (workdir / "dst").rglob("*") if p.is_file()]


def test_a_signal_while_loading_says_nothing_was_started(small_project: Path) -> None:
    """Before the library call (the config being read) there is nothing to record, and the
    message does not claim that anything finished was recorded."""
    workdir = small_project.parent
    code, err = drive(workdir, "loading", signal.SIGTERM, ["exit", "src", "dst"])
    assert code == 143, err
    assert "interrupted by SIGTERM before anything was started" in err, err
    assert "what was finished is recorded" not in err and "Traceback" not in err, err
    assert not (workdir / ".daulat" / "audit.jsonl").exists()


# Runs the console script's entry point (from pyproject.toml) the way the installed script
# does, with the signal sent while the command line's modules are being imported.
STARTUP = """
import importlib.abc, os, signal, sys, tomllib
sig = signal.Signals[sys.argv[1]]
class Interrupt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name in ("daulat", "daulat.cli"):
            os.kill(os.getpid(), sig)
        return None
entry = tomllib.load(open(sys.argv[2], "rb"))["project"]["scripts"]["daulat"]
module, _, function = entry.partition(":")
sys.argv = ["daulat", *sys.argv[3:]]
sys.meta_path.insert(0, Interrupt())
getattr(__import__(module, fromlist=[function]), function)()
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_the_command_starts_up_is_one_line(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """Ctrl-C in the seconds the ``daulat`` script spends importing: the signal's exit code and
    one line saying nothing was started, not a Python traceback."""
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    done = subprocess.run(
        [sys.executable, "-c", STARTUP, sig.name, str(pyproject), "exit", "src", "dst"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 128 + sig, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert f"interrupted by {sig.name} before anything was started" in lines[0]
    assert "daulat exit src dst" in lines[0]
    assert not (tmp_path / ".daulat").exists()


def test_python_m_daulat_runs_the_command(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "daulat", "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.startswith("daulat "), done.stderr


def test_sigint_in_a_synchronous_command_is_audited_with_its_signal(small_project: Path) -> None:
    """Ctrl-C while ``report`` collects (no event loop): exit 130, and the audit entry names
    SIGINT (Python's own handler raised KeyboardInterrupt without saying which signal)."""
    workdir = small_project.parent
    code, err = drive(workdir, "report", signal.SIGINT, ["report", "-o", "r.html"])
    assert code == 130, err
    assert "interrupted by SIGINT" in err and "Traceback" not in err, err
    [entry] = audit_entries(small_project)
    assert entry["operation"] == "report"
    assert entry["details"]["outcome"] == "interrupted"
    assert entry["details"]["signal"] == "SIGINT"
    assert not (workdir / "r.html").exists()


@pytest.mark.timeout(120)
def test_the_same_signal_delivered_twice_is_one_interrupt(tmp_path: Path) -> None:
    """SIGINT twice within moments (``timeout -s INT`` signals the process and its process
    group) stops the run once, cleanly: the summary, the resume line and the audit entry are
    there, not "SIGINT again: stopping now"."""
    data = dataset(10, 2, 8 * MiB)
    src_raw = fs_store_config(tmp_path / "src", "src")
    fill_config(src_raw, data.objects)
    dst = tmp_path / "dst"
    config = write_config(tmp_path, [src_raw, fs_store_config(dst, "dst")])
    go = tmp_path / "go"  # the driver signals once this exists (below, when copying started)
    proc_args = ["exit", "src", "dst", "--bwlimit", "2M", "--quiet"]
    result: list[tuple[int, str]] = []
    runner = threading.Thread(
        target=lambda: result.append(
            drive(tmp_path, "twice", signal.SIGINT, proc_args, DAULAT_TEST_GO=str(go))
        )
    )
    runner.start()
    deadline = time.monotonic() + 60
    while _files(dst) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()
    runner.join(120)
    [(code, err)] = result
    assert code == 130, err
    assert "again" not in err, err
    assert "interrupted by SIGINT" in err and "resume with: daulat exit src dst" in err, err
    [entry] = [e for e in audit_entries(config) if e["operation"] == "exit"]
    assert entry["details"]["outcome"] == "interrupted"
    assert entry["details"]["signal"] == "SIGINT"


@pytest.mark.timeout(120)
def test_timeout_s_int_stops_an_exit_once(tmp_path: Path) -> None:
    """The real thing: ``timeout -s INT 12 daulat exit ...`` (GNU timeout sends SIGINT to
    daulat and then to its own process group, daulat included): exit 130 with the summary,
    never "SIGINT again"."""
    data = dataset(10, 3, 32 * MiB)
    src_raw = fs_store_config(tmp_path / "src", "src")
    fill_config(src_raw, data.objects)
    config = write_config(tmp_path, [src_raw, fs_store_config(tmp_path / "dst", "dst")])
    timeout_bin = shutil.which("timeout")
    assert timeout_bin, "GNU timeout (coreutils) is needed"
    done = subprocess.run(
        [
            timeout_bin,
            "--preserve-status",
            "-s",
            "INT",
            # Long enough for the command to start its work on a busy machine (start-up alone
            # took over 12 s at a load of 40), short of the 48 s the copy needs at 2 MiB/s.
            "25",
            daulat_bin(),
            "exit",
            "src",
            "dst",
            "--bwlimit",
            "2M",
            "--quiet",
            "--config",
            str(config),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    assert done.returncode == 130, done.stderr
    assert "SIGINT again" not in done.stderr, done.stderr
    assert "before anything was started" not in done.stderr, "start-up took over 25 s"
    assert "interrupted by SIGINT" in done.stderr, done.stderr
    [entry] = [e for e in audit_entries(config) if e["operation"] == "exit"]
    assert entry["details"]["outcome"] == "interrupted"


# A library call in a script of its own: the signal is sent by the process to itself at the
# first progress event of the copy (the run is under way: not one of the events before the
# plan, which say what the run waits for), then what the call raised is printed as JSON.
LIBRARY = """
import json, os, signal, sys
import daulat
sig = signal.Signals[sys.argv[1]]
own = sys.argv[2] in ("own-handler", "raising-handler")
class Shutdown(Exception):
    pass
if own:
    seen = []
    def mine(signum, frame):
        seen.append(signum)
        if sys.argv[2] == "raising-handler":
            raise Shutdown("stop")
    signal.signal(sig, mine)
before = signal.getsignal(sig)
sent = []
def progress(p):
    if not sent and p.waiting_for is None:
        sent.append(1)
        if sys.argv[2] == "raising-handler":
            # From another thread, as from another process: the handler runs where the
            # event loop runs Python's signal handlers, not inside this callback.
            import threading
            threading.Timer(0.3, os.kill, (os.getpid(), sig)).start()
        else:
            os.kill(os.getpid(), sig)
out = {}
try:
    summary = daulat.copy("daulat.toml", "src", "dst", bwlimit=200_000, concurrency=2,
                          progress=progress)
    out["returned"] = summary.ok
except Shutdown:
    out["raised"] = "Shutdown"
except daulat.Interrupted as stopped:
    out["interrupted"] = stopped.signal_name
    out["exit_code"] = stopped.exit_code
    out["result"] = type(stopped.result).__name__
    out["left"] = stopped.result.left_objects
out["handler_restored"] = signal.getsignal(sig) == before
if own:
    out["own_handler_ran"] = seen == [sig]
print(json.dumps(out))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_a_library_call_raises_interrupted_with_the_result(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """``daulat.copy`` stopped by Ctrl-C or SIGTERM: the caller gets ``daulat.Interrupted`` with
    the partial summary (not a bare KeyboardInterrupt, nor a process killed unrecorded), the
    audit entry names the signal (not CancelledError), the process's handlers are back after
    the call, and the call again resumes."""
    data = dataset(4, 3, 1 * MiB)
    src_raw = fs_store_config(tmp_path / "src", "src")
    fill_config(src_raw, data.objects)
    dst_raw = fs_store_config(tmp_path / "dst", "dst")
    config = write_config(tmp_path, [src_raw, dst_raw])
    out = _library_call(tmp_path, sig.name, "default")
    assert out["interrupted"] == sig.name and out["exit_code"] == 128 + sig, out
    assert out["result"] == "Summary" and out["left"] > 0, out
    assert out["handler_restored"], out
    [entry] = audit_entries(config)
    assert entry["operation"] == "copy"
    details = entry["details"]
    assert details["outcome"] == "interrupted", details
    assert details["signal"] == sig.name and details["error"] == "Interrupted", details
    # The call again resumes and completes.
    again = subprocess.run(
        [sys.executable, "-c", "import daulat; print(daulat.copy('daulat.toml', 'src', 'dst').ok)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert again.stdout.strip() == "True", again.stderr
    assert_exact_copy(data.objects, read_config(dst_raw))


def _library_call(
    workdir: Path, signame: str, mode: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run LIBRARY in ``workdir`` (a signal ``signame`` during a daulat.copy call, ``mode`` as
    it reads it, ``env`` added to the environment); what it printed, as JSON."""
    script = workdir / "library.py"
    script.write_text(LIBRARY)
    done = subprocess.run(
        [sys.executable, str(script), signame, mode],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=100,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.mark.timeout(120)
def test_a_library_call_leaves_the_callers_own_sigterm_handler_in_charge(tmp_path: Path) -> None:
    """A job runner that handles SIGTERM itself keeps its handler during a call: daulat does not
    replace it (its handler runs, the copy goes on), and it is the same handler afterwards."""
    data = dataset(3, 0, 0)
    src_raw = fs_store_config(tmp_path / "src", "src")
    fill_config(src_raw, data.objects)
    write_config(tmp_path, [src_raw, fs_store_config(tmp_path / "dst", "dst")])
    out = _library_call(tmp_path, "SIGTERM", "own-handler")
    assert out == {"returned": True, "handler_restored": True, "own_handler_ran": True}, out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_callers_handler_that_raises_stops_the_call_cleanly_with_its_exception(
    tmp_path: Path, loop: str
) -> None:
    """A job runner whose SIGTERM handler raises its own exception to stop work: the call stops
    (uvloop would pass the exception to its exception handler and copy on to the end), the
    caller gets that exception, the audit log says the run was interrupted, and the
    caller's handler is back afterwards."""
    data = dataset(4, 3, 1 * MiB)
    src_raw = fs_store_config(tmp_path / "src", "src")
    fill_config(src_raw, data.objects)
    config = write_config(tmp_path, [src_raw, fs_store_config(tmp_path / "dst", "dst")])
    out = _library_call(tmp_path, "SIGTERM", "raising-handler", {"DAULAT_EVENT_LOOP": loop})
    assert out == {"raised": "Shutdown", "handler_restored": True, "own_handler_ran": True}, out
    [entry] = audit_entries(config)
    assert entry["operation"] == "copy"
    assert entry["details"]["outcome"] == "interrupted", entry["details"]


RATE_UNITS = {"B": 1, "KiB": 1024, "MiB": MiB, "GiB": 1024 * MiB}


@pytest.mark.timeout(300)
def test_an_interrupted_summary_counts_start_up_and_keeps_under_the_bwlimit(tmp_path: Path) -> None:
    """The summary's time is the command's (start-up, listing and planning included, as the
    user's clock sees it) and its rate is over that same time: never above --bwlimit, as it
    was when start-up was left out (the token bucket starts with a second's worth)."""
    data = dataset(0, 8, 500_000)
    src_raw = fs_store_config(tmp_path / "src", "src")
    fill_config(src_raw, data.objects)
    dst = tmp_path / "dst"
    config = write_config(tmp_path, [src_raw, fs_store_config(dst, "dst")])
    started = time.monotonic()
    proc = start_daulat(
        ["exit", "src", "dst", "--config", str(config), "--bwlimit", "500K"], tmp_path
    )

    def finished() -> int:
        return sum(
            1
            for p in dst.rglob("*")
            if p.is_file() and not p.relative_to(dst).parts[0].startswith(".")
        )

    wait_for(lambda: finished() >= 2, 120, "two objects copied", proc)
    signalled = time.monotonic() - started
    proc.popen.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130, proc.err[-3000:]
    head = proc.out.splitlines()[0]
    found = re.search(r"; ([\d.]+) s, ([\d.]+) (B|KiB|MiB|GiB)/s$", head)
    assert found, proc.out
    elapsed, rate = float(found[1]), float(found[2]) * RATE_UNITS[found[3]]
    assert elapsed >= signalled - 0.2, (elapsed, signalled, head)
    assert rate <= 500 * 1024, head
