"""``--engine ray`` on a real local Ray cluster: a head and two worker nodes, each its own
``ray start`` process group on 127.0.0.1 (see raycluster.py), against real SeaweedFS and the
filesystem.

- the same exit with the single-process engine and with Ray gives the same journal rows and
  the same destination manifest (SeaweedFS → SeaweedFS, filesystem → SeaweedFS, hostile keys,
  encryption and protected names included);
- a worker process killed by PID mid-run: the run completes verified, and re-sends at most
  the objects that worker had in flight;
- the driver killed with SIGKILL mid-run: the same command completes, and sends nothing again
  that was complete;
- without Ray: one line naming ``pip install 'daulat[ray]'``, exit 2.

The cluster takes about a minute to start on two busy cores, so this module starts one and
keeps its tests few.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import fs_store_config, s3_store_config
from raycluster import RayCluster, ray_cluster, ray_env
from servers import S3Server
from test_transfer import (
    assert_exact_copy,
    cli,
    fill_config,
    journal_path,
    manifest_entries,
    read_config,
    unique,
    write_config,
)

from daulat.config import load_config
from daulat.errors import InvalidKey
from daulat.scale.driver import driver_batches
from daulat.scale.shards import Bounds, Taper, bounds_for, shards
from daulat.scale.verifying import VerifySpec, run_verify_shard
from daulat.scale.worker import Report
from daulat.stores.fs import FsStore
from daulat.transfer import run_verify
from daulat.transfer.engine import Executor
from daulat.transfer.journal import Journal, Outcome, State, WorkItem
from daulat.transfer.model import VERIFIED_BY_CONTENT, Endpoint, Options, Summary
from daulat.transfer.verify import ContentJob, Judged, ToCheck

# Tests that start the local cluster carry ``ray`` (slow, one at a time: tests/conftest.py);
# the pure ones (shards, batch commits, no Ray installed, a verify shard run here) do not.

RUN_TIMEOUT = 300.0
AGE_RECIPIENT_ENV = "DAULAT_TEST_RECIPIENT"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    with ray_cluster(worker_nodes=2) as c:
        yield c


def daulat(args: list[str], workdir: Path, *, wait: bool = True) -> subprocess.Popen[bytes]:
    """``python -m daulat ARGS`` with this worktree's code, in its own process group."""
    n = len(list(workdir.glob("run-*.out")))
    out = (workdir / f"run-{n}.out").open("wb")
    err = (workdir / f"run-{n}.err").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "daulat", *args],
        cwd=workdir,
        stdout=out,
        stderr=err,
        stdin=subprocess.DEVNULL,
        env={**ray_env(), "COLUMNS": "200", "NO_COLOR": "1"},
        start_new_session=True,
    )
    if wait:
        try:
            proc.wait(RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"daulat {args[:3]} hung; stderr: {_text(workdir, n, 'err')[-3000:]}")
    return proc


def _text(workdir: Path, n: int, what: str) -> str:
    return (workdir / f"run-{n}.{what}").read_text(errors="replace")


def last_output(workdir: Path) -> tuple[str, str]:
    n = len(list(workdir.glob("run-*.out"))) - 1
    return _text(workdir, n, "out"), _text(workdir, n, "err")


def exit_json(args: list[str], workdir: Path) -> tuple[int, dict[str, Any]]:
    proc = daulat([*args, "--json"], workdir)
    out, err = last_output(workdir)
    try:
        return proc.returncode, json.loads(out)
    except ValueError:
        pytest.fail(f"exit {proc.returncode}, no JSON; stderr: {err[-3000:]}")


Row = tuple[Any, ...]


def rows_of(config: Path, dst_store: str) -> dict[str, Row]:
    """Journal rows of the pair into ``dst_store``: key → every column a copy decides."""
    db = sqlite3.connect(journal_path(config), timeout=30)
    try:
        return {
            r[0]: tuple(r[1:])
            for r in db.execute(
                "SELECT key, state, size, src_etag, sha256, dst_size, dst_etag, error, "
                "plain_size, stored_as FROM journal WHERE pair LIKE ?",
                (f"% -> {dst_store}:%",),
            )
        }
    finally:
        db.close()


def without_time(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        ({k: v for k, v in e.items() if k != "copied"} for e in entries),
        key=lambda e: str(e.get("key")),
    )


# Keys SeaweedFS and the filesystem can hold, chosen to trip up sharding and batching:
# Unicode, control characters, spaces, dots, deep paths, a zero-length object.
ODD_KEYS = [
    "odd/emoji-😀.txt",
    "odd/Ελληνικά.txt",
    "odd/new\nline",
    "odd/back\\slash",
    "odd/tab\there",
    "odd/ending-dot.",
    "odd/zero\u200bwidth.txt",
    "odd/ spaced .txt",
    "odd/%2F-encoded",
    "odd/deep/" + "/".join(["s" * 100] * 3),
    "empty/zero-length.bin",
]


def dataset(n: int, big: int = 0, *, odd: bool = True) -> dict[str, bytes]:
    data = {f"obj/{i % 7}/o-{i:04d}.bin": os.urandom(1 + (i * 997) % 5000) for i in range(n)}
    for key in ODD_KEYS if odd else ():
        data[key] = b"" if key.startswith("empty/") else f"content of {key!r}".encode()
    for j in range(big):
        data[f"big/b{j}.bin"] = os.urandom(9 * 1024 * 1024 + j)  # streamed in parts
    return data


def fs_source(root: Path, data: Mapping[str, bytes], name: str = "srcfs") -> dict[str, Any]:
    raw = fs_store_config(root, name)
    for key, content in data.items():
        p = root / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
    return raw


# --------------------------------------------------------------------------------------------
# Pure: shards


def test_shards_bound_objects_and_bytes_and_never_split_an_object() -> None:
    items = [WorkItem(f"k{i}", size, None) for i, size in enumerate([500, 300, 300, 10, 10, 10])]
    got = list(shards(items, Bounds(objects=2, bytes=400)))
    assert [[i.key for i in s] for s in got] == [["k0"], ["k1"], ["k2", "k3"], ["k4", "k5"]]
    assert [i for s in got for i in s] == items  # every item once, in order
    b = bounds_for(10_000, 10_000 * 65536, workers=4)
    assert b.objects == 625
    assert bounds_for(8, 8 * 256 * 2**20, workers=4).bytes < 256 * 2**20 * 2
    # Few objects: still at least one shard per worker.
    few = [WorkItem(f"b{i}", 32 * 2**20, None) for i in range(4)]
    assert len(list(shards(few, bounds_for(4, 4 * 32 * 2**20, workers=4)))) == 4
    # The benchmark's large case, 8 x 256 MiB: at least a shard per worker for 1, 2 and 4
    # workers, and with 4 each object is a shard (no worker idles while another has two).
    large = [WorkItem(f"L{i}", 256 * 2**20, None) for i in range(8)]
    cut = {w: len(list(shards(large, bounds_for(8, 8 * 256 * 2**20, w)))) for w in (1, 2, 4)}
    assert cut[1] >= 1 and cut[2] >= 2 and cut[4] == 8, cut


def test_shards_taper_at_the_end_of_the_plan() -> None:
    """The driver's shards get smaller as the plan runs out (the end of a 4-worker run left
    workers idle up to a whole shard's time), never to crumbs, and every item goes once."""
    n, size = 10_000, 65_536
    items = [WorkItem(f"k{i:05d}", size, None) for i in range(n)]
    b = bounds_for(n, n * size, workers=4)
    got = list(shards(items, b, Taper(n, n * size, 4)))
    assert [i for s in got for i in s] == items
    lengths = [len(s) for s in got]
    assert lengths[0] == b.objects and max(lengths) <= b.objects
    # The last shard of each worker is at most a sixth of a full one, and none is a crumb.
    assert all(x <= b.objects / 6 for x in lengths[-4:]), lengths
    assert min(lengths) >= b.objects / 8, lengths
    assert len(got) <= 2 * len(list(shards(items, b)))  # a few more shards, not many
    # One worker, or objects that are a shard each: as without tapering.
    one = bounds_for(n, n * size, workers=1)
    assert list(shards(items, one, Taper(n, n * size, 1))) == list(shards(items, one))
    large = [WorkItem(f"L{i}", 256 * 2**20, None) for i in range(8)]
    big = bounds_for(8, 8 * 256 * 2**20, 4)
    assert list(shards(large, big, Taper(8, 8 * 256 * 2**20, 4))) == list(shards(large, big))


# --------------------------------------------------------------------------------------------
# The driver's commit path, batch-wise


def _executor(root: Path, planned: int) -> tuple[Executor, Journal]:
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    journal = Journal(root / "j.sqlite")
    run_id = journal.begin_run("exit", "a: -> b:", "a", "b")
    summary = Summary(
        "exit", "a", "b", run_id, planned_objects=planned, left_objects=planned, left_bytes=10**12
    )
    src, dst = Endpoint(FsStore("a", root / "a")), Endpoint(FsStore("b", root / "b"))
    ex = Executor(src, dst, journal, Options(), "a: -> b:", summary, None)
    driver_batches(ex)
    return ex, journal


def _outcomes(n: int) -> list[Outcome]:
    out = []
    for i in range(n):
        key = f"k/{i:05d}"
        if i % 97 == 5:
            out.append(Outcome(key, 10, "e", State.FAILED, error=f"boom {i}"))
        elif i % 89 == 7:
            out.append(Outcome(key, 20, "e", State.REFUSED, error="name", stored_as="x" + key))
        elif i == 1234:  # a large object: committed at once, with its chunk hashes
            out.append(Outcome(key, 9 * 2**20, "e", State.DONE, sha256="cd" * 32,
                               dst_size=9 * 2**20, dst_etag="d", plain_size=9 * 2**20,
                               chunks=b"\x01" * 64, chunk_size=8 * 2**20))  # fmt: skip
        else:
            out.append(Outcome(key, 100 + i, f"e{i}", State.DONE, sha256="ab" * 32,
                               dst_size=100 + i, dst_etag=f"d{i}", plain_size=100 + i))  # fmt: skip
    return out


def test_commit_many_matches_commit_one_by_one(tmp_path: Path) -> None:
    """The same outcomes committed one by one and in worker-sized batches: the same journal
    rows, chunk hashes and counters; nothing counted before its batch committed, and a large
    object's batch committed at once."""
    outcomes = _outcomes(12_000)
    one, j1 = _executor(tmp_path / "one", len(outcomes))
    for o in outcomes:
        one.commit(o)
    one.finish()
    # Made now: its writer also commits what is pending after a second.
    many, j2 = _executor(tmp_path / "many", len(outcomes))
    many.commit_many(outcomes[:1000])  # below the batch size: pending, not counted yet
    assert many.summary.copied_objects == 0 and many.summary.failed == []
    assert j2.db.execute("SELECT count(*) FROM journal").fetchone() == (0,)
    many.commit_many(outcomes[1000:1300])  # holds the large object: all committed at once
    assert j2.db.execute("SELECT count(*) FROM journal").fetchone() == (1300,)
    done_so_far = sum(1 for o in outcomes[:1300] if o.state == State.DONE)
    assert many.summary.copied_objects == done_so_far
    for start in range(1300, len(outcomes), 700):
        many.commit_many(outcomes[start : start + 700])
    many.commit_many([])
    many.finish()
    query = (
        "SELECT key, size, src_etag, state, sha256, dst_size, dst_etag, error, plain_size, "
        "stored_as, verified FROM journal ORDER BY key"
    )
    assert j2.db.execute(query).fetchall() == j1.db.execute(query).fetchall()
    chunks = "SELECT key, chunk_size, sha256 FROM chunks ORDER BY key"
    assert j2.db.execute(chunks).fetchall() == j1.db.execute(chunks).fetchall() != []
    s1, s2 = one.summary, many.summary
    counters = ("copied_objects", "copied_bytes", "left_objects", "left_bytes", "failed", "refused")
    for name in counters:
        assert getattr(s2, name) == getattr(s1, name), name
    assert s2.copied_objects == sum(1 for o in outcomes if o.state == State.DONE)
    assert len(s2.failed) > 100 and len(s2.refused) > 100
    assert many.progress.done_objects == s2.copied_objects


def test_worker_report_pickles_its_outcomes_exactly() -> None:
    report = Report(outcomes=_outcomes(300), retries=3, final=True, stopped="x")
    back = pickle.loads(pickle.dumps(report, protocol=5))
    assert back == report and all(type(o.state) is State for o in back.outcomes)


# --------------------------------------------------------------------------------------------
# No Ray installed


def test_without_ray_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path, [fs_store_config(tmp_path / "a", "a"), fs_store_config(tmp_path / "b", "b")]
    )
    (tmp_path / "a").mkdir()
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    for command in ("exit", "copy", "sync", "verify"):
        result = cli([command, "a", "b", "--config", str(config), "--engine", "ray"], capsys)
        assert result.code == 2, result.explain()
        lines = [line for line in result.err.splitlines() if line.strip()]
        assert len(lines) == 1 and "pip install 'daulat[ray]'" in lines[0], result.err
        assert "Traceback" not in result.err
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


# --------------------------------------------------------------------------------------------
# The same results as one process


@pytest.mark.ray
@pytest.mark.parametrize("source", ["seaweedfs", "filesystem"])
def test_ray_exit_matches_single_process(
    source: str,
    cluster: RayCluster,
    s3_server: S3Server,
    s3_server_b: S3Server,
    tmp_path: Path,
) -> None:
    # Enough for several shards per worker (16 objects per shard at least), few enough that
    # the run is short: the cluster's start is this module's real cost.
    data = dataset(120, big=1 if source == "filesystem" else 0)
    if source == "seaweedfs":
        src = s3_store_config(s3_server, "src", unique("raysrc"))
        fill_config(src, {k: v for k, v in data.items() if k not in ODD_KEYS})
        for key in ODD_KEYS:
            try:
                fill_config(src, {key: data[key]})
            except InvalidKey:  # SeaweedFS refuses it: then it is not part of the source
                del data[key]
        assert len(data) > 120
    else:
        src = fs_source(tmp_path / "src", data, "src")
    one = s3_store_config(s3_server_b, "one", unique("rayone"))
    many = s3_store_config(s3_server_b, "many", unique("raymany"))
    config = write_config(tmp_path, [src, one, many])
    base = ["exit", "src", "--config", str(config), "--concurrency", "8"]

    code_one, single = exit_json([base[0], base[1], "one", *base[2:]], tmp_path)
    code_ray, on_ray = exit_json(
        [base[0], base[1], "many", *base[2:], "--engine", "ray", "--ray-address", cluster.address],
        tmp_path,
    )
    # Keys the destination cannot hold are refused by both alike (a backslash on SeaweedFS).
    assert code_ray == code_one and on_ray["ok"] == single["ok"], (
        on_ray,
        last_output(tmp_path)[1][-3000:],
    )
    refused = {r["key"] for r in single["refused"]}
    assert single["verified_objects"] == len(data) - len(refused) > 120, single
    for field in (
        "source_objects",
        "source_bytes",
        "copied_objects",
        "copied_bytes",
        "verified_objects",
        "unverified",
        "left_objects",
    ):
        assert on_ray[field] == single[field], field
    # The bytes sent over the wire are counted on the workers too (refused attempts may send
    # some, so at least what was copied, as in one process).
    assert on_ray["sent_bytes"] >= on_ray["copied_bytes"] > 0, on_ray
    assert single["sent_bytes"] >= single["copied_bytes"] > 0, single
    for field in ("failed", "refused"):  # their reasons name each destination store
        assert [r["key"] for r in on_ray[field]] == [r["key"] for r in single[field]], field
    # Same journal rows (the pair's name aside), same manifest, the same objects.
    named = {k: (*v[:6], (v[6] or "").replace("'many'", "'one'"), *v[7:])
             for k, v in rows_of(config, "many").items()}  # fmt: skip
    assert named == {k: (*v[:6], v[6] or "", *v[7:]) for k, v in rows_of(config, "one").items()}
    at_one, at_many = (
        read_config(one, skip_manifests=False),
        read_config(many, skip_manifests=False),
    )
    assert without_time(manifest_entries(at_many)) == without_time(manifest_entries(at_one))
    assert_exact_copy(read_config(one), read_config(many))
    assert_exact_copy({k: v for k, v in data.items() if k not in refused}, read_config(many))


@pytest.mark.ray
def test_ray_exit_encrypted_with_protected_names(
    cluster: RayCluster, s3_server_b: S3Server, tmp_path: Path
) -> None:
    """age encryption and protected names on Ray: the same plaintext hashes and sizes in the
    journal as one process, only hashed names at the destination, and a restore gives the
    source back."""
    data = dataset(60, big=1, odd=False)
    src = fs_source(tmp_path / "src", data, "src")
    one = s3_store_config(s3_server_b, "one", unique("rayencone"))
    many = s3_store_config(s3_server_b, "many", unique("rayencmany"))
    back = fs_store_config(tmp_path / "back", "back")
    config = write_config(tmp_path, [src, one, many, back])
    identity = tmp_path / "id.txt"
    daulat(["keys", "new", "--out", str(identity), "--config", str(config)], tmp_path)
    recipient = last_output(tmp_path)[0].strip()
    assert recipient.startswith("age1"), last_output(tmp_path)
    enc = ["--encrypt-to", recipient, "--encrypt-names", "--config", str(config)]
    code_one, single = exit_json(["exit", "src", "one", *enc], tmp_path)
    code_ray, on_ray = exit_json(
        ["exit", "src", "many", *enc, "--engine", "ray", "--ray-address", cluster.address],
        tmp_path,
    )
    assert code_one == 0 and single["ok"], single
    assert code_ray == 0 and on_ray["ok"] and on_ray["names_protected"], on_ray
    r1, r2 = rows_of(config, "one"), rows_of(config, "many")
    assert set(r1) == set(r2) == set(data)
    # state, size, source ETag, SHA-256 and plaintext size: equal. The stored size, ETag and
    # name differ per copy (age adds random-length grease; each store has its name key).
    same = {k: (*v[:4], v[7]) for k, v in r1.items()}
    assert {k: (*v[:4], v[7]) for k, v in r2.items()} == same
    assert all(v[8] is not None and len(v[8]) == 64 for v in r2.values())
    stored = read_config(many)
    assert set(stored) == {v[8] for v in r2.values()}  # only hashed names
    code = daulat(
        ["restore", "many", "back", "--identity", str(identity), "--config", str(config)],
        tmp_path,
    ).returncode
    assert code == 0, last_output(tmp_path)
    assert_exact_copy(data, read_config(back))


# --------------------------------------------------------------------------------------------
# Lost workers and a killed driver


def _inodes(root: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".daulat")]
        for name in filenames:
            p = Path(dirpath) / name
            try:
                out[str(p.relative_to(root))] = p.stat().st_ino
            except FileNotFoundError:
                continue
    return out


def _slow_fs_exit(tmp_path: Path, n: int) -> tuple[Path, dict[str, bytes], Path, list[str]]:
    data = {f"f/{i:04d}.bin": os.urandom(32 * 1024) for i in range(n)}
    src = fs_source(tmp_path / "src", data, "src")
    dst_root = tmp_path / "dst"
    dst_root.mkdir()
    config = write_config(tmp_path, [src, fs_store_config(dst_root, "dst")])
    return config, data, dst_root, ["exit", "src", "dst", "--config", str(config)]


CONCURRENCY = 4


@pytest.mark.ray
def test_worker_killed_mid_run_resends_at_most_its_objects_in_flight(
    cluster: RayCluster, tmp_path: Path
) -> None:
    """Each worker copies at most CONCURRENCY objects at once at 256 KiB/s (8 objects/s); one
    worker process is killed by PID while it has a shard. The run completes and verifies every
    object, and at most CONCURRENCY objects were written twice (seen as a new file under the
    same name; each write is a rename of a new file)."""
    _config, data, dst_root, args = _slow_fs_exit(tmp_path, 160)
    proc = daulat(
        [*args, "--engine", "ray", "--ray-address", cluster.address, "--workers", "3",
         "--concurrency", str(CONCURRENCY), "--bwlimit", "256K", "--json"],
        tmp_path,
        wait=False,
    )  # fmt: skip
    first_seen: dict[str, int] = {}
    rewritten: set[str] = set()
    killed: int | None = None
    deadline = time.monotonic() + RUN_TIMEOUT
    while proc.poll() is None:
        assert time.monotonic() < deadline, "the run hung"
        for key, ino in _inodes(dst_root).items():
            if first_seen.setdefault(key, ino) != ino:
                rewritten.add(key)
        if killed is None and len(first_seen) >= 40:
            workers = cluster.shard_workers()
            if workers:
                killed = workers[0]
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.01)
    for key, ino in _inodes(dst_root).items():
        if first_seen.setdefault(key, ino) != ino:
            rewritten.add(key)
    out, err = last_output(tmp_path)
    assert killed is not None, "no shard worker process was found to kill"
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["ok"] and summary["verified_objects"] == len(data), summary
    assert_exact_copy(data, read_config(fs_store_config(dst_root, "check")))
    assert len(rewritten) <= CONCURRENCY, sorted(rewritten)


@pytest.mark.ray
def test_driver_killed_mid_run_rerun_sends_nothing_complete_again(
    cluster: RayCluster, tmp_path: Path
) -> None:
    _config, data, dst_root, args = _slow_fs_exit(tmp_path, 160)
    ray_args = [*args, "--engine", "ray", "--ray-address", cluster.address, "--workers", "3",
                "--concurrency", str(CONCURRENCY), "--bwlimit", "256K"]  # fmt: skip
    proc = daulat(ray_args, tmp_path, wait=False)
    deadline = time.monotonic() + RUN_TIMEOUT
    while len(_inodes(dst_root)) < 60:
        assert proc.poll() is None, last_output(tmp_path)[1][-3000:]
        assert time.monotonic() < deadline, "the run hung"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    # Ray stops the dead driver's tasks; wait for that before taking the snapshot.
    deadline = time.monotonic() + 60
    while cluster.shard_workers():
        assert time.monotonic() < deadline, "the dead driver's shards kept running"
        time.sleep(0.2)
    complete = _inodes(dst_root)
    assert 0 < len(complete) < len(data)
    rerun = daulat([*ray_args, "--json"], tmp_path)
    out, err = last_output(tmp_path)
    assert rerun.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["ok"] and summary["verified_objects"] == len(data), summary
    after = _inodes(dst_root)
    resent = sorted(k for k, ino in complete.items() if after.get(k) != ino)
    assert resent == [], resent
    assert_exact_copy(data, read_config(fs_store_config(dst_root, "check")))


# --------------------------------------------------------------------------------------------
# verify --full on Ray workers

# ``verify --engine ray`` through the library (the CLI passes its runner the same way):
# ``run_verify`` with the Ray engine's runner; prints the report's JSON and the shards run.
_RAY_VERIFY = r"""
import asyncio, json, sys
from pathlib import Path
from daulat.config import load_config
from daulat.crypto import load_identities
from daulat.scale.driver import RayRunner
from daulat.transfer import run_verify

config, src, dst, address, identity = sys.argv[1:6]
cfg = load_config(Path(config))
runner = RayRunner(cfg, address=address, workers=2)
files = [identity] if identity else []
ids = load_identities(identity) if identity else []
report = asyncio.run(run_verify(cfg, src, dst, full=True, concurrency=4, identities=ids,
                                runner=runner, identity_files=files))
print(json.dumps({"report": report.to_json(), "shards": runner.shards_run}))
sys.exit(0 if report.ok else 1)
"""


def ray_verify(
    config: Path, src: str, dst: str, address: str, workdir: Path, identity: Path | None = None
) -> tuple[int, dict[str, Any], int]:
    done = subprocess.run(
        [sys.executable, "-c", _RAY_VERIFY, str(config), src, dst, address, str(identity or "")],
        cwd=workdir, env=ray_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )  # fmt: skip
    try:
        out = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"exit {done.returncode}, no JSON; stderr: {done.stderr[-3000:]}")
    return done.returncode, out["report"], int(out["shards"])


class _ShardsHere:
    """Dispatches verify shards to the Ray task's own function in this process: the worker's
    code (config, stores, identity files, verdict batches) without a cluster, so that it is
    checked even where no Ray cluster can start."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.shards = 0

    async def check_content(
        self,
        job: ContentJob,
        items: Iterator[ToCheck],
        planned: tuple[int, int],
        on_judged: Callable[[Sequence[Judged]], None],
    ) -> None:
        spec = VerifySpec(str(self.config.resolve()), job)
        todo = list(items)
        assert planned[0] == len(todo)
        for i in range(0, len(todo), 7):
            self.shards += 1
            batches = await asyncio.to_thread(list, run_verify_shard(spec, todo[i : i + 7]))
            for batch in batches:
                assert batch.error is None and batch.stopped is None, batch
                on_judged(batch.judged)


def test_verify_shard_task_judges_as_one_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = dataset(40, odd=False)
    src = fs_source(tmp_path / "src", data, "src")
    (tmp_path / "dst").mkdir()
    config = write_config(tmp_path, [src, fs_store_config(tmp_path / "dst", "dst")])
    assert cli(["exit", "src", "dst", "--config", str(config)], capsys).code == 0
    victim = tmp_path / "dst" / "obj" / "2" / "o-0002.bin"
    victim.write_bytes(bytes(b ^ 1 for b in victim.read_bytes()))
    here = _ShardsHere(config)
    cfg = load_config(config)
    report = asyncio.run(run_verify(cfg, "src", "dst", full=True, runner=here))
    assert here.shards == 6
    single = cli(["verify", "src", "dst", "--full", "--json", "--config", str(config)], capsys)
    assert single.code == 1 and json.loads(single.out) == report.to_json()
    assert report.problems == [("obj/2/o-0002.bin", "content differs from the source")]


@pytest.mark.ray
def test_ray_verify_full_finds_an_altered_and_a_planted_object(
    cluster: RayCluster, s3_server_b: S3Server, tmp_path: Path
) -> None:
    """verify --full with its reading on Ray workers: the same report (and exit code) as one
    process, for a clean copy and after one object was altered at the destination (same
    size) and one planted there; the journal then calls the altered one not done."""
    data = dataset(80, odd=False)
    src = fs_source(tmp_path / "src", data, "src")
    dst = s3_store_config(s3_server_b, "dst", unique("rayverify"))
    config = write_config(tmp_path, [src, dst])
    code, summary = exit_json(["exit", "src", "dst", "--config", str(config)], tmp_path)
    assert code == 0 and summary["ok"], summary

    code, clean, shards = ray_verify(config, "src", "dst", cluster.address, tmp_path)
    assert code == 0 and clean["ok"] and clean["verified"] == len(data), clean
    assert clean["verified_by"] == VERIFIED_BY_CONTENT
    assert shards >= 2  # read on the workers, in shards

    altered = "obj/3/o-0010.bin"
    fill_config(dst, {altered: bytes(b ^ 0xFF for b in data[altered])})  # same size
    fill_config(dst, {"planted.bin": b"not from the source"})
    code_ray, on_ray, _ = ray_verify(config, "src", "dst", cluster.address, tmp_path)
    code_one, single = exit_json(
        ["verify", "src", "dst", "--full", "--config", str(config)], tmp_path
    )
    assert code_ray == code_one == 1, (on_ray, single)
    assert on_ray == single
    problems = [(p["key"], p["reason"]) for p in on_ray["problems"]]
    assert (altered, "content differs from the source") in problems, problems
    assert {k for k, _ in problems} == {altered, "planted.bin"}, problems
    assert on_ray["verified"] == len(data) - 1 and not on_ray["ok"]
    state = rows_of(config, "dst")[altered]
    assert state[0] == "failed", state  # replaced: the next exit sends it again


@pytest.mark.ray
def test_ray_verify_full_decrypts_on_the_workers(
    cluster: RayCluster, s3_server_b: S3Server, tmp_path: Path
) -> None:
    """An age-encrypted destination: each worker opens the identity file itself (the
    identity is never pickled) and finds an object whose ciphertext was replaced."""
    data = dataset(40, odd=False)
    src = fs_source(tmp_path / "src", data, "src")
    dst = s3_store_config(s3_server_b, "dst", unique("rayverifyenc"))
    config = write_config(tmp_path, [src, dst])
    identity = tmp_path / "id.txt"
    daulat(["keys", "new", "--out", str(identity), "--config", str(config)], tmp_path)
    recipient = last_output(tmp_path)[0].strip()
    code, summary = exit_json(
        ["exit", "src", "dst", "--encrypt-to", recipient, "--config", str(config)], tmp_path
    )
    assert code == 0 and summary["ok"], summary
    code, clean, _ = ray_verify(config, "src", "dst", cluster.address, tmp_path, identity)
    assert code == 0 and clean["ok"] and clean["verified"] == len(data), clean
    stored = read_config(dst)
    victim = "obj/1/o-0001.bin"
    fill_config(dst, {victim: stored["obj/0/o-0000.bin"]})  # another object's ciphertext
    code, found, _ = ray_verify(config, "src", "dst", cluster.address, tmp_path, identity)
    assert code == 1 and {p["key"] for p in found["problems"]} == {victim}, found
    assert {"key": victim, "reason": "content differs from the source"} in found["problems"]
    # Without the identity as a file, the workers could not decrypt: a clear refusal.
    done = subprocess.run(
        [sys.executable, "-c", _RAY_VERIFY.replace("identity_files=files", "identity_files=[]"),
         str(config), "src", "dst", cluster.address, str(identity)],
        cwd=tmp_path, env=ray_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )  # fmt: skip
    assert done.returncode != 0 and "--identity FILE" in done.stderr, done.stderr[-2000:]
