"""``--engine ray`` scaling and the driver's bookkeeping; writes the ``ray-scaling`` section of
bench/RESULTS.md.

1. Scaling: the same ``daulat exit`` (filesystem → filesystem, so that no server competes for
   the two cores) on a local Ray cluster of a head and three worker nodes (``ray start``
   process groups, one CPU each; tests/raycluster.py), first with one uncapped worker, then
   with 1, 2 and 4 workers each capped with ``--bwlimit`` at a quarter of that. Goal: the
   aggregate rate ≥ 0.9 x N x the cap.
2. Bookkeeping (no servers, no Ray): the driver's commit path (``Executor.commit``: batched
   journal commits and the summary's counters) fed simulated outcomes; objects committed per
   second, and the peak RSS of a fresh process after 100,000 and after 1,000,000.

    python bench/ray_scaling.py [--small N] [--large N] [--large-mib M]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import REPO_DIR, git_describe, machine, now_utc, update_section

MiB = 1024 * 1024


# --------------------------------------------------------------------------------------------
# 1. Scaling


def _dataset(root: Path, n: int, size: int) -> None:
    root.mkdir(parents=True)
    block = os.urandom(size)
    for i in range(n):
        d = root / f"d{i % 100:02d}"
        d.mkdir(exist_ok=True)
        # Distinct content per object (its first 8 bytes), written fast.
        (d / f"o{i:06d}").write_bytes(i.to_bytes(8, "big") + block[8:])


def _exit(
    src: Path, address: str, workers: int, bwlimit: int | None, env: dict[str, str]
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="rayscale-"))
    try:
        (work / "dst").mkdir()
        (work / "daulat.toml").write_text(
            f'[stores.src]\nurl = "file://{src}"\nprovider = "local"\ncountry = "ID"\n'
            f'[stores.dst]\nurl = "file://{work / "dst"}"\nprovider = "local"\ncountry = "ID"\n'
        )
        argv = ["exit", "src", "dst", "--json", "--engine", "ray", "--ray-address", address,
                "--workers", str(workers)]  # fmt: skip
        if bwlimit is not None:
            argv += ["--bwlimit", str(bwlimit)]
        t = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "daulat", *argv], cwd=work, env=env, capture_output=True,
            text=True,
        )  # fmt: skip
        wall = time.perf_counter() - t
        summary = json.loads(done.stdout)
        assert done.returncode == 0 and summary["ok"], done.stderr[-2000:]
        summary["_wall"] = wall
        summary["_argv"] = "daulat " + " ".join(argv)
        return summary
    finally:
        shutil.rmtree(work, ignore_errors=True)


def scaling(cases: list[tuple[str, int, int]]) -> str:
    from raycluster import ray_cluster, ray_env

    env = ray_env()
    lines: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="rayscale-src-"))
    try:
        with ray_cluster(worker_nodes=3) as cluster:
            for label, n, size in cases:
                src = base / label
                _dataset(src, n, size)
                one = _exit(src, cluster.address, 1, None, env)
                rate1 = one["copied_bytes"] / one["duration_s"]
                cap = int(rate1 / 4)
                lines += [
                    f"### {label}: {n:,} x {size // 1024:,} KiB, filesystem → filesystem",
                    "",
                    f"- One uncapped worker: {rate1 / 1e6:.2f} MB/s ({one['duration_s']:.1f} s "
                    f"in daulat's summary, {one['_wall']:.1f} s wall); cap per worker "
                    f"`--bwlimit {cap}` (a quarter).",
                    "",
                    "| workers | summary s | wall s | MB/s | N x cap MB/s | ratio (goal ≥ 0.9) |",
                    "|---:|---:|---:|---:|---:|---:|",
                ]
                for workers in (1, 2, 4):
                    s = _exit(src, cluster.address, workers, cap, env)
                    rate = s["copied_bytes"] / s["duration_s"]
                    ratio = rate / (workers * cap)
                    lines.append(
                        f"| {workers} | {s['duration_s']:.1f} | {s['_wall']:.1f} | "
                        f"{rate / 1e6:.2f} | {workers * cap / 1e6:.2f} | {ratio:.2f} |"
                    )
                lines += ["", f"- Command: `{s['_argv'].replace(str(workers), 'N', 1)}`", ""]
                shutil.rmtree(src, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# 2. Bookkeeping

_BOOKKEEPING = r"""
import asyncio, resource, sys, tempfile, time
from pathlib import Path
from daulat.stores.fs import FsStore
from daulat.transfer.engine import Endpoint, Kind, Options, Summary, _Executor
from daulat.transfer.journal import Journal, Outcome, State
from daulat.scale.driver import driver_batches

n = int(sys.argv[1])
tmp = Path(tempfile.mkdtemp())
(tmp / "a").mkdir(); (tmp / "b").mkdir()
src, dst = Endpoint(FsStore("a", tmp / "a")), Endpoint(FsStore("b", tmp / "b"))
journal = Journal(tmp / "j.sqlite")
run_id = journal.begin_run("exit", "a: -> b:", "a", "b")
summary = Summary(Kind.EXIT.value, "a", "b", run_id, planned_objects=n, left_objects=n)
ex = _Executor(src, dst, journal, Options(), "a: -> b:", summary, None)
driver_batches(ex)  # as the Ray driver commits
digest = "ab" * 32
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
for i in range(n):
    ex.commit(Outcome(f"k/{i:09d}", 65536, f"etag{i}", State.DONE, sha256=digest,
                      dst_size=65536, dst_etag=f"d{i}", plain_size=65536))
ex.finish()
dt = time.perf_counter() - t
assert summary.copied_objects == n
print(n / dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, before / 1024)
"""


def bookkeeping() -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR / "src")}
    rows = []
    for n in (100_000, 1_000_000):
        out = subprocess.run(
            [sys.executable, "-c", _BOOKKEEPING, str(n)], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr[-2000:]
        rate, peak, start = map(float, out.stdout.split())
        rows.append((n, rate, peak, start))
    growth = rows[1][2] - rows[0][2]
    lines = [
        "| objects committed | objects/s | peak RSS MiB | RSS before MiB |",
        "|---:|---:|---:|---:|",
        *[f"| {n:,} | {r:,.0f} | {p:.1f} | {s:.1f} |" for n, r, p, s in rows],
        "",
        f"- Peak RSS growth from 100,000 to 1,000,000 objects: **{growth:.1f} MiB** "
        f"(goal ≤ 10 MiB: {'met' if growth <= 10 else 'NOT met'}).",
        f"- Commit rate at 1,000,000: **{rows[1][1]:,.0f} objects/s** (goal ≥ 100,000: "
        f"{'met' if rows[1][1] >= 100_000 else 'NOT met'}).",
        "- Command: `python bench/ray_scaling.py` (the bookkeeping part runs "
        "`Executor.commit` in a fresh process per size, journal on the local disk, "
        "`PRAGMA synchronous=FULL` as in a real run).",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--large", type=int, default=8)
    ap.add_argument("--large-mib", type=int, default=256)
    ap.add_argument("--skip-scaling", action="store_true")
    args = ap.parse_args()
    started = now_utc()
    load = os.getloadavg()[0]
    book = bookkeeping()
    scale = (
        "(not run)"
        if args.skip_scaling
        else scaling(
            [("small", args.small, 64 * 1024), ("large", args.large, args.large_mib * MiB)]
        )
    )
    body = f"""
## Ray scaling and the driver's bookkeeping (`bench/ray_scaling.py`)

- Date: {started}; machine: {machine()}; daulat git {git_describe()}; ray {_ray_version()}
- 1-minute load average at the start: {load:.1f} (a shared machine: other test suites ran).
- A Ray "cluster" of four one-CPU nodes on a two-core machine: the workers share two cores,
  so this shows the engine's overhead and the bandwidth caps holding, not more hardware.

### Driver bookkeeping (simulated results, no servers)

{book}

{scale}
"""
    update_section("ray-scaling", body)
    print(body)


def _ray_version() -> str:
    try:
        import ray

        return str(ray.__version__)
    except ImportError:
        return "not installed"


if __name__ == "__main__":
    _ = resource
    main()
