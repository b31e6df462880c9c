"""Where the seconds of one ``daulat exit --engine ray`` go, phase by phase (issue 12, item 5).

Runs the same exit as ``bench/ray_scaling.py`` (filesystem → filesystem, a local cluster of
a head and a worker node with two task slots each) with the driver's phases timed from
inside: the ``daulat`` command runs under a small wrapper that wraps the engine's phase
functions and the Ray driver's, and replaces the shard task by one that notes, on the worker,
when its process started, when the task body began, when ``daulat.scale.worker`` was
imported and when the shard ended. Every time is wall-clock seconds from the moment the
``daulat`` process was launched. Prints the timeline; writes nothing to RESULTS.md.

    python bench/ray_timeline.py [--objects 2000] [--size 65536] [--workers 4]
        [--bwlimit B] [--address HOST:PORT] [--runs 1] [--src DIR]

Without ``--bwlimit`` the cap is the scaling benchmark's small-case cap scaled to the
object count (16,432,021 B/s at 10,000 objects), so that each worker has the same ~10 s of
work as there. Without ``--address`` a cluster is started for the measurement and stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ray_scaling import _config, _dataset

# The scaling benchmark's small case: 10,000 x 64 KiB, a quarter of one uncapped worker.
SCALING_OBJECTS, SCALING_CAP = 10_000, 16_432_021

# The wrapper the ``daulat`` command runs under. Marks are appended to LOG as
# "<epoch seconds>\t<where>\t<what>" (one write per line, so worker processes can share it).
WRAPPER = r'''
import os, sys, time
LOG = os.environ["DAULAT_TIMELINE_LOG"]


def mark(what, where="driver"):
    with open(LOG, "a") as f:
        f.write(f"{time.time():.4f}\t{where}\t{what}\n")


mark("python up")
import daulat_console
import daulat.cli  # what the command imports before it runs (typer, rich, the commands)
mark("CLI imported")
import daulat.transfer as tr
import daulat.transfer.engine as eng
from daulat.transfer.journal import Journal
import daulat.scale.driver as drv
import daulat.scale.cluster as clu
mark("engine and Ray driver imported")


def timed(owner, name, label):
    f = getattr(owner, name)
    if f is None:
        return
    import asyncio, functools
    if asyncio.iscoroutinefunction(f):
        @functools.wraps(f)
        async def w(*a, **k):
            mark(f"{label} begins")
            try:
                return await f(*a, **k)
            finally:
                mark(f"{label} ends")
    else:
        @functools.wraps(f)
        def w(*a, **k):
            mark(f"{label} begins")
            try:
                return f(*a, **k)
            finally:
                mark(f"{label} ends")
    setattr(owner, name, w)


timed(tr, "_run_transfer", "run_transfer (config loaded)")
timed(tr, "open_endpoint", "open store")
timed(eng, "_run", "engine run")
timed(eng, "list_into", "source listing")
timed(eng, "list_destination", "destination listing")
timed(Journal, "plan", "plan (SQL)")
timed(eng, "adopt_proven", "adoption by proof")
timed(eng, "check_chain_before_writing", "manifest chain check")
timed(eng, "verify_listed", "verification listing")
timed(eng, "write_manifest", "manifest + signing")
timed(eng, "cleanup_temp", "temp clean-up")
timed(Journal, "close", "journal close")
timed(drv.RayRunner, "__call__", "Ray runner")
timed(drv, "connect", "ray.init (connect)")
timed(clu.Connection, "close", "ray shutdown")
try:  # connecting and warming the workers early, where the code does
    import daulat.scale.warmup as early
except ImportError:
    early = None
if early is not None:
    timed(early, "connect", "ray.init (connect, early)")
    timed(early.EarlyStart, "close", "end of run waits for Ray to stop")
    _warm_worker = early.warm_worker

    def timed_warm(config_path, stores):
        where = f"worker {os.getpid()}"
        process_started(where)
        mark("warm-up body begins", where)
        _warm_worker(config_path, stores)
        mark("warm-up body ends", where)

    early.warm_worker = timed_warm

_shard = drv.RayRunner._shard


async def shard(self, conn, task, spec, ex, items, n, in_flight):
    mark(f"shard {n} submitted ({len(items)} objects)")
    try:
        return await _shard(self, conn, task, spec, ex, items, n, in_flight)
    finally:
        mark(f"shard {n} done")


drv.RayRunner._shard = shard


def process_started(where):
    """Note when this process started: its start in clock ticks since boot, turned into the
    epoch by way of the uptime now (/proc/stat's btime is whole seconds)."""
    with open(f"/proc/{os.getpid()}/stat") as f:
        start = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    with open("/proc/uptime") as f:
        up = float(f.read().split()[0])
    with open(LOG, "a") as f:
        f.write(f"{time.time() - (up - start):.4f}\t{where}\tprocess started\n")
    # The CPU this process spent so far (Ray's worker start, its imports): a figure the
    # machine's load does not stretch, as it does the wall-clock times.
    cpu = sum(os.times()[:2])
    with open(LOG, "a") as f:
        f.write(f"{time.time():.4f}\t{where}\tCPU before its first task {cpu:.2f} s\n")


def timed_shard(spec, items):
    """The shard task, noting on the worker when its process began and its body ran."""
    where = f"worker {os.getpid()}"
    process_started(where)
    # daulat.scale.worker is imported before the body runs (the arguments are its classes).
    mark("task body begins", where)
    from daulat.scale.worker import run_shard
    first = True
    for report in run_shard(spec, items):
        if first:
            mark("first report", where)
            first = False
        yield report
    mark("task body ends", where)


# Pickled by value (defined in __main__), so the worker runs this and imports daulat itself.
drv.run_shard = timed_shard
sys.argv = ["daulat", *sys.argv[1:]]
try:
    daulat_console.main()
finally:
    mark("command ends")
'''


def run_once(
    address: str, src: Path, objects: int, workers: int, bwlimit: int, env: dict[str, str]
) -> tuple[list[tuple[float, str, str]], float]:
    """One timed exit into a fresh directory: its marks, in seconds from the launch, and the
    summary's duration."""
    work = Path(tempfile.mkdtemp(prefix="raytl-"))
    try:
        _config(work, src)
        log = work / "timeline.log"
        wrapper = work / "wrap.py"
        wrapper.write_text(WRAPPER)
        argv = ["exit", "src", "dst", "--json", "--engine", "ray", "--ray-address", address,
                "--workers", str(workers), "--bwlimit", str(bwlimit)]  # fmt: skip
        launched = time.time()
        done = subprocess.run(
            [sys.executable, str(wrapper), *argv], cwd=work, capture_output=True, text=True,
            env={**env, "DAULAT_TIMELINE_LOG": str(log)},
        )  # fmt: skip
        ended = time.time()
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads(done.stdout)
        assert summary["ok"] and summary["copied_objects"] == objects, summary
        marks = [(0.0, "driver", "launched")]
        for line in log.read_text().splitlines():
            t, where, what = line.split("\t", 2)
            marks.append((float(t) - launched, where, what))
        marks.append((ended - launched, "driver", "process exited"))
        return sorted(marks), summary["duration_s"]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def show(marks: list[tuple[float, str, str]], workers_asked: int) -> None:
    """The driver's phases, the first shards' submissions, the first and last shard done, and
    each worker process's first task; then one line per worker process."""
    workers = sorted({w for _, w, _ in marks if w.startswith("worker ")})
    names = {w: f"worker {i + 1}" for i, w in enumerate(workers)}
    done = [t for t, where, what in marks if where == "driver" and what.endswith(" done")]
    seen: set[tuple[str, str]] = set()
    for t, where, what in marks:
        if where.startswith("worker ") and (where, what) in seen:
            continue
        seen.add((where, what))
        if what.startswith("shard ") and what.endswith(" done") and t not in (done[0], done[-1]):
            continue
        submitted = what.startswith("shard ") and "submitted" in what
        if submitted and int(what.split()[1]) >= workers_asked:
            continue
        print(f"{t:8.2f}  {names.get(where, where):9}  {what}")
    print()
    for w in workers:
        mine = {what: t for t, where, what in reversed(marks) if where == w}
        ends = [t for t, where, what in marks if where == w and what == "task body ends"]
        cpu = next((what for _, where, what in marks if where == w and "CPU" in what), "")
        shards = len(ends)
        print(
            f"{names[w]}: process started {mine.get('process started', float('nan')):.2f}, "
            f"first task body {mine.get('task body begins', float('nan')):.2f}, "
            f"first report {mine.get('first report', float('nan')):.2f}, "
            f"{shards} shard(s), last ended {max(ends, default=float('nan')):.2f} "
            f"(idle {done[-1] - max(ends, default=done[-1]):.2f} s before the last shard); "
            f"{cpu}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64 * 1024)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--bwlimit", type=int)
    ap.add_argument("--address", help="An existing cluster (else one is started and stopped).")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument(
        "--src",
        type=Path,
        help="Run the driver from this source tree (e.g. an earlier commit's src, for a "
        "before/after; the cluster's workers run the code their nodes were started with).",
    )
    args = ap.parse_args()
    bwlimit = args.bwlimit or round(SCALING_CAP * args.objects / SCALING_OBJECTS)
    from raycluster import ray_cluster, ray_env

    env = ray_env()
    if args.src is not None:
        env["PYTHONPATH"] = str(args.src.resolve())
    base = Path(tempfile.mkdtemp(prefix="raytl-src-"))
    try:
        _dataset(base / "src", args.objects, args.size)
        print(
            f"exit of {args.objects:,} x {args.size:,} B, --workers {args.workers} "
            f"--bwlimit {bwlimit} (each worker's share at the cap: "
            f"{args.objects * args.size / args.workers / bwlimit:.2f} s)"
        )

        def runs(address: str) -> None:
            for i in range(args.runs):
                print(f"\n-- run {i + 1}, load {os.getloadavg()[0]:.1f}")
                marks, duration = run_once(
                    address, base / "src", args.objects, args.workers, bwlimit, env
                )
                show(marks, args.workers)
                print(f"summary duration_s {duration:.2f}")

        if args.address:
            runs(args.address)
        else:
            with ray_cluster(worker_nodes=1, cpus_per_node=2) as cluster:
                runs(cluster.address)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
