"""Crash safety: ``daulat exit`` killed with SIGKILL at random moments, then run again until it
succeeds, must end with an exact, verified copy, and must not have redone finished work.

What is checked after the final run:

* exit 0, every source object verified;
* every destination object's SHA-256 equals the source's, and the destination holds no key the
  source does not have (no partial or leftover object under a final key; ``.daulat/``
  manifests aside);
* finished objects were not uploaded again: after each killed run the journal
  (``.daulat/transfers.sqlite``, table ``journal``) is read, and every key it reports done keeps
  the ``run_id`` of the run that first finished it, through every later run.

The kill moments are drawn from a seeded generator; the seed is in every failure message, and
``DAULAT_CRASH_SEED`` replays a given sequence.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import fs_store_config, s3_store_config
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
from test_transfer_faults import Proc, count_keys, start_daulat

MiB = 1024 * 1024
RUN_TIMEOUT = 180.0


def crash_dataset(small: int, big: int, big_size: int, seed: int = 31) -> DataSet:
    rng = random.Random(seed)
    objects = {
        f"c/{i % 13:02d}/obj-{i:05d}.bin": rng.randbytes(rng.randrange(1, 16 * 1024))
        for i in range(small)
    }
    for j in range(big):
        objects[f"big/huge-{j}.bin"] = rng.randbytes(big_size)
    return DataSet(objects)


def _seed() -> int:
    return int(os.environ.get("DAULAT_CRASH_SEED") or time.time_ns() % 1_000_000)


def _done(config: Path) -> dict[str, int]:
    path = journal_path(config)
    if not path.exists():
        return {}
    try:
        rows = journal_rows(path)
    except sqlite3.OperationalError as exc:
        # Killed between creating the journal file and its tables: nothing is done yet.
        if "no such table" not in str(exc):
            raise
        return {}
    return {k: run_id for k, (state, run_id) in rows.items() if state == "done"}


def kill_and_resume(
    config: Path,
    workdir: Path,
    src: str,
    dst: str,
    *,
    total: int,
    kills: int,
    delays: tuple[float, float],
    bwlimit: str,
    seed: int,
    landed: Callable[[], int],
) -> tuple[dict[str, int], list[str], Proc]:
    """Start ``daulat exit``, SIGKILL it after a random delay, ``kills`` times or more (a run that
    ends on its own first is not killed), then run it to completion (at most 3 more runs).

    The killed runs are slowed with ``--bwlimit`` so that a whole copy outlasts several kills
    (on loopback a full run takes about a second, and most kills would land before the copy
    starts or after it ends); the final runs go at full speed. Every other kill's delay counts
    from the moment a new object appears at the destination (``landed`` counts them) rather
    than from the start, so that kills land mid-copy even when start-up is slow on a busy
    machine; the others can hit start-up and listing.

    Returns (key → run_id when first seen done, a log of what happened, the final process).
    """
    rng = random.Random(seed)
    first_done: dict[str, int] = {}
    log: list[str] = [f"seed={seed}"]
    progress: list[int] = []
    args = ["exit", src, dst, "--config", str(config), "--json"]
    i = 0
    # At least ``kills`` kills, and more (up to twice as many) until two landed mid-copy: a kill
    # before the first commit or after the end proves nothing.
    while i < kills or (len([n for n in progress if 0 < n < total]) < 2 and i < 2 * kills):
        delay = rng.uniform(*delays)
        after_landing = i % 2 == 1
        before = landed() if after_landing else 0
        proc = start_daulat([*args, "--bwlimit", bwlimit], workdir)
        if after_landing:
            until = time.monotonic() + 60
            while landed() <= before and proc.popen.poll() is None:
                assert time.monotonic() < until, (log, "no object landed within 60 s")
                time.sleep(0.05)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and proc.popen.poll() is None:
            time.sleep(0.01)
        ended = proc.popen.poll()
        proc.kill()
        done = _done(config)
        if ended is None:
            progress.append(len(done))
        for key, run_id in done.items():
            first_done.setdefault(key, run_id)
        log.append(
            f"run {i + 1}: {'ended by itself, code ' + str(ended) if ended is not None else 'killed'}"
            f" {delay:.2f} s after {'an object landed' if after_landing else 'start'};"
            f" {len(done)} done in the journal"
        )
        # Every key ever seen done keeps its run id: nothing finished was redone.
        moved = {k: (first_done[k], r) for k, r in done.items() if first_done[k] != r}
        assert not moved, (log, f"redone after a kill: {list(moved.items())[:5]}")
        missing = set(first_done) - set(done)
        assert not missing, (log, f"done keys vanished from the journal: {sorted(missing)[:5]}")
        i += 1
    killed_mid_copy = [n for n in progress if 0 < n < total]
    assert killed_mid_copy, (log, "no kill landed while objects were being copied")
    print("\n".join(log))
    for attempt in range(3):
        proc = start_daulat(args, workdir)
        code = proc.wait(RUN_TIMEOUT)
        log.append(f"resume {attempt + 1}: exit {code}")
        if code == 0:
            return first_done, log, proc
        assert "Traceback" not in proc.err, (log, proc.err[-3000:])
    raise AssertionError((log, proc.out[-3000:], proc.err[-3000:]))


def _files(root: Path) -> int:
    """Objects visible in a filesystem store (staging and manifests aside)."""
    n = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d not in (".daulat-tmp", ".daulat")]
        n += len(filenames)
    return n


def check_after_crashes(
    data: DataSet,
    dst_raw: dict[str, Any],
    config: Path,
    first_done: dict[str, int],
    log: list[str],
    final: Proc,
) -> None:
    import json

    result = json.loads(final.out)
    assert result["ok"] is True, log
    assert result["verified_objects"] == len(data.objects), log
    assert result["source_objects"] == len(data.objects), log
    assert_exact_copy(data.objects, read_config(dst_raw))
    done_now = _done(config)
    assert set(done_now) == set(data.objects), log
    redone = {k: (r, done_now[k]) for k, r in first_done.items() if done_now[k] != r}
    assert not redone, (log, f"{len(redone)} finished objects were uploaded again", redone)
    # The last run copied exactly what no earlier run had finished.
    assert result["skipped_objects"] + result["copied_objects"] == len(data.objects), log
    assert result["copied_objects"] <= len(data.objects) - len(first_done), log


def test_kill_9_seaweedfs_to_seaweedfs(
    s3_server: S3Server, s3_server_b: S3Server, tmp_path: Path
) -> None:
    """SeaweedFS A → SeaweedFS B, 1,500 small objects and 3 x 24 MiB, killed 4 times."""
    data = crash_dataset(1500, 3, 24 * MiB)
    src_raw = s3_store_config(s3_server, "srcs3", unique("crash-src"))
    fill_config(src_raw, data.objects)
    bucket = unique("crash-dst")
    dst_raw = s3_store_config(s3_server_b, "dsts3", bucket)
    config = write_config(tmp_path, [src_raw, dst_raw])
    first_done, log, final = kill_and_resume(
        config,
        tmp_path,
        "srcs3",
        "dsts3",
        total=len(data.objects),
        kills=4,
        delays=(0.3, 3.0),
        bwlimit="10M",
        seed=_seed(),
        landed=lambda: count_keys(s3_server_b, bucket),
    )
    check_after_crashes(data, dst_raw, config, first_done, log, final)


def test_kill_9_fs_to_fs(tmp_path: Path) -> None:
    """Filesystem → filesystem, 1,000 small objects and 2 x 24 MiB, killed 4 times; staging
    files a kill leaves behind are never visible as objects."""
    data = crash_dataset(1000, 2, 24 * MiB, seed=32)
    src_raw = fs_store_config(tmp_path / "src", "srcfs")
    fill_config(src_raw, data.objects)
    dst_root = tmp_path / "dst"
    dst_raw = fs_store_config(dst_root, "dstfs")
    config = write_config(tmp_path, [src_raw, dst_raw])
    first_done, log, final = kill_and_resume(
        config,
        tmp_path,
        "srcfs",
        "dstfs",
        total=len(data.objects),
        kills=4,
        delays=(0.3, 2.5),
        bwlimit="8M",
        seed=_seed(),
        landed=lambda: _files(dst_root),
    )
    check_after_crashes(data, dst_raw, config, first_done, log, final)
    # On disk, outside the staging and manifest directories, exactly the source's files.
    files = {
        str(p.relative_to(dst_root))
        for p in dst_root.rglob("*")
        if p.is_file() and p.relative_to(dst_root).parts[0] not in (".daulat-tmp", ".daulat")
    }
    assert files == set(data.objects), log
