"""``--engine ray`` scaling and the driver's bookkeeping; writes the ``ray-scaling`` section of
bench/RESULTS.md.

1. Scaling: the same ``daulat exit`` (filesystem → filesystem, so that no server competes for
   the two cores) on a local Ray cluster of a head and a worker node (``ray start``
   process groups, two task slots each; tests/raycluster.py), first with one uncapped worker, then
   with 1, 2 and 4 workers each capped with ``--bwlimit`` at a quarter of that. Goal: the
   aggregate rate ≥ 0.9 x N x the cap.
2. Bookkeeping (no servers, no Ray): the driver's commit path (``Executor.commit_many``:
   batched journal commits and the summary's counters) fed simulated worker reports, alone and
   with the rest of the driver's work per report (unpickling it, ``_apply``); objects committed
   per second, and the peak RSS of a fresh process after 100,000 and after 1,000,000.

    python bench/ray_scaling.py [--small N] [--large N] [--large-mib M] [--bookkeeping-only]
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import REPO_DIR, git_describe, machine, now_utc, process_cpu, update_section

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


def _config(work: Path, src: Path) -> None:
    (work / "dst").mkdir(parents=True)
    (work / "daulat.toml").write_text(
        f'[stores.src]\nurl = "file://{src}"\nprovider = "local"\ncountry = "ID"\n'
        f'[stores.dst]\nurl = "file://{work / "dst"}"\nprovider = "local"\ncountry = "ID"\n'
    )


def _daulat(work: Path, argv: list[str], env: dict[str, str]) -> Any:
    """``daulat ARGV --json`` in ``work``; its JSON (the run must succeed)."""
    done = subprocess.run(
        [sys.executable, "-m", "daulat", *argv, "--json"], cwd=work, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, f"daulat {' '.join(argv)}: {done.stderr[-2000:]}"
    return json.loads(done.stdout)


def _busy_ticks() -> tuple[int, int]:
    """(busy, all) clock ticks of every CPU since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


class _ClusterCpu:
    """CPU seconds the cluster's processes spent between :meth:`sample` calls. Ray ends idle
    worker processes (their CPU time leaves with them), so it is sampled while a run goes:
    what a process spent after its last sample is missed (at most one interval)."""

    def __init__(self, cluster: Any) -> None:
        self._cluster = cluster
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}

    def sample(self) -> None:
        baseline = not self._last
        for node in self._cluster.nodes:
            for pid in node.session_pids():
                cpu = process_cpu(pid)
                if cpu:
                    # A process first seen after the first sample started during the run:
                    # counted from 0.
                    self._first.setdefault(pid, cpu if baseline else 0.0)
                    self._last[pid] = cpu

    @property
    def seconds(self) -> float:
        return sum(self._last[p] - self._first[p] for p in self._last)


def _worker_peak_rss_mib(cluster: Any) -> float:
    """The largest peak RSS (VmHWM) of the cluster's Ray worker processes so far."""
    peak = 0
    for node in cluster.nodes:
        for pid in node.session_pids():
            try:
                if not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::"):
                    continue
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
            except OSError:
                continue
    return peak / 1024


def _exit(
    src: Path, cluster: Any, workers: int, bwlimit: int | None, env: dict[str, str]
) -> dict[str, Any]:
    """One ``daulat exit --engine ray`` in a fresh directory (its own journal, empty
    destination), with the CPU the machine, the cluster and the driver spent meanwhile."""
    work = Path(tempfile.mkdtemp(prefix="rayscale-"))
    try:
        _config(work, src)
        argv = ["exit", "src", "dst", "--json", "--engine", "ray", "--ray-address",
                cluster.address, "--workers", str(workers)]  # fmt: skip
        if bwlimit is not None:
            argv += ["--bwlimit", str(bwlimit)]
        load = os.getloadavg()[0]
        busy0, all0 = _busy_ticks()
        cpu = _ClusterCpu(cluster)
        cpu.sample()
        kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        with open(work / "out.json", "wb") as out, open(work / "err.txt", "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "daulat", *argv], cwd=work, env=env, stdout=out,
                stderr=err,
            )  # fmt: skip
            while proc.poll() is None:
                cpu.sample()
                time.sleep(0.5)
        wall = time.perf_counter() - t
        cpu.sample()
        kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy1, all1 = _busy_ticks()
        summary = json.loads((work / "out.json").read_text())
        assert proc.returncode == 0 and summary["ok"], (work / "err.txt").read_text()[-2000:]
        summary["_wall"] = wall
        summary["_load"] = load
        # Share of every CPU's time that was busy (this run and anything else on the machine).
        summary["_busy"] = (busy1 - busy0) / max(1, all1 - all0)
        summary["_cpu_available"] = wall * (os.cpu_count() or 1)
        summary["_cpu_cluster"] = cpu.seconds
        summary["_cpu_driver"] = (kids1.ru_utime + kids1.ru_stime) - (
            kids0.ru_utime + kids0.ru_stime
        )
        summary["_argv"] = "daulat " + " ".join(argv)
        return summary
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _plan(plan_dir: Path, workers: int, cap: int, env: dict[str, str]) -> dict[str, Any]:
    """``daulat plan src dst --workers N --link CAP`` (the cap in bits/s), from the drill."""
    result: dict[str, Any] = _daulat(
        plan_dir, ["plan", "src", "dst", "--workers", str(workers), "--link", f"{cap * 8}"], env
    )
    return result


# Autogroup nice value (sched(7)) of the cluster's sessions while they start and during the
# measured runs (also of this process's session: the drills, the plans and the exits).
START_NICE, RUN_NICE = -20, -10


def scaling(cases: list[tuple[str, int, int]], keep: Path | None = None) -> str:
    """The scaling tables; with ``keep``, the drills' directories (to plan again from the
    same drill) and every run's JSON (``raw.json``) are kept there."""
    import raycluster
    from raycluster import ray_cluster, ray_env

    from daulat.scale.shards import Taper, bounds_for, shards

    env = ray_env()
    # A node that did not register within Ray's fixed 30 s is started again: a benchmark on a
    # busy shared machine may need more attempts than a test.
    raycluster.START_ATTEMPTS = 8
    lines: list[str] = []
    raw: list[dict[str, Any]] = []
    base = Path(tempfile.mkdtemp(prefix="rayscale-src-"))
    try:
        # Two nodes of two task slots each (four workers): every node is a dozen processes
        # that must register with the head within Ray's fixed 30 s, which four nodes often
        # failed to do on this busy machine.
        # Started at the highest priority: Ray gives a node's agents a fixed 15 s to write
        # their port files, which they missed with 30-70 runnable tasks of other suites on
        # the two cores (with autogroup scheduling a node's dozen processes share one
        # session's part of the CPUs). The runs themselves go at RUN_NICE (the nodes' and the
        # drivers' sessions).
        raycluster.AUTOGROUP_NICE = START_NICE
        raycluster.set_autogroup_nice(os.getpid(), START_NICE)  # the drivers' session too
        with ray_cluster(worker_nodes=1, cpus_per_node=2) as cluster:
            for node in cluster.nodes:
                raycluster.set_autogroup_nice(node.proc.pid, RUN_NICE)
            raycluster.set_autogroup_nice(os.getpid(), RUN_NICE)
            for label, n, size in cases:
                src = base / label
                _dataset(src, n, size)
                # The drill first (one process, uncapped, the default sample), in a
                # directory of its own that keeps the scan and the drill for the plans.
                plan_dir = (keep or base) / f"plan-{label}"
                _config(plan_dir, src)
                _daulat(plan_dir, ["scan", "src"], env)
                drill = _daulat(plan_dir, ["drill", "src", "dst"], env)
                one = _exit(src, cluster, 1, None, env)
                rate1 = one["copied_bytes"] / one["duration_s"]
                cap = int(rate1 / 4)
                o = drill["overhead"]
                lines += [
                    f"### {label}: {n:,} x {size // 1024:,} KiB, filesystem → filesystem",
                    "",
                    f"- One uncapped Ray worker: {rate1 / 1e6:.2f} MB/s ({one['duration_s']:.1f} s "
                    f"in daulat's summary, {one['_wall']:.1f} s wall, load {one['_load']:.1f}); "
                    f"cap per worker `--bwlimit {cap}` (a quarter).",
                    f"- Drill (`daulat drill src dst`, one process, uncapped, "
                    f"{drill['sampled_objects']:,} objects sampled in {drill['drill_s']:.1f} s): "
                    f"predicted one uncapped worker {drill['predicted_s']:.1f} s; per class "
                    + "; ".join(
                        f"{c['label']}: {c['per_object_s'] * 1e3:.2f} ms/object"
                        + (
                            f", {c['throughput_bps'] / 8e6:.1f} MB/s"
                            if c.get("throughput_bps")
                            else ""
                        )
                        for c in drill["classes"]
                    )
                    + f"; listing {o['list_s_per_object'] * 1e6:.0f} µs/object, bookkeeping "
                    f"{o['bookkeeping_s_per_object'] * 1e6:.0f} µs/object + {o['fixed_s']:.2f} s.",
                    "",
                    "| workers | shards | summary s | wall s | MB/s | N x cap MB/s "
                    "| ratio (goal ≥ 0.9) | ratio to N x one capped worker (goal ≥ 0.9) "
                    "| plan s (95 % interval) | plan error "
                    "| CPU busy (all CPUs) | cluster + driver CPU s / available | load |",
                    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
                ]
                # The goal is against one capped worker's measured rate (the 1-worker
                # row, run first), beside the nominal cap's.
                capped_one: float | None = None
                sizes = [_Sized(size)] * n
                for workers in (1, 2, 4):
                    plan = _plan(plan_dir, workers, cap, env)
                    s = _exit(src, cluster, workers, cap, env)
                    raw.append({"case": label, "n": n, "size": size, "workers": workers,
                                "cap": cap, "one": one, "drill": drill, "plan": plan,
                                "exit": s})  # fmt: skip
                    if keep is not None:
                        (keep / "raw.json").write_text(json.dumps(raw, indent=1))
                    rate = s["copied_bytes"] / s["duration_s"]
                    ratio = rate / (workers * cap)
                    if workers == 1:
                        capped_one = rate
                    measured = f"{rate / (workers * capped_one):.2f}" if capped_one else "-"
                    cut = sum(
                        1
                        for _ in shards(
                            sizes, bounds_for(n, n * size, workers), Taper(n, n * size, workers)
                        )
                    )
                    err = (plan["predicted_s"] - s["duration_s"]) / s["duration_s"]
                    cpu = s["_cpu_cluster"] + s["_cpu_driver"]
                    lines.append(
                        f"| {workers} | {cut} | {s['duration_s']:.1f} | {s['_wall']:.1f} | "
                        f"{rate / 1e6:.2f} | {workers * cap / 1e6:.2f} | {ratio:.2f} | "
                        f"{measured} | "
                        f"{plan['predicted_s']:.1f} ({plan['low_s']:.1f}-{plan['high_s']:.1f}) "
                        f"| {err:+.0%} | {s['_busy']:.0%} | {cpu:.0f} / "
                        f"{s['_cpu_available']:.0f} | {s['_load']:.1f} |"
                    )
                lines += [
                    "",
                    f"- Commands: `{s['_argv'].replace(f'--workers {workers}', '--workers N')}`;"
                    f" the plan before each: `daulat plan src dst --workers N --link {cap * 8}"
                    " --json` (bits/s) in the drill's directory.",
                    f"- Peak RSS of any Ray worker process after these runs: "
                    f"{_worker_peak_rss_mib(cluster):.0f} MiB (goal ≤ 250 MiB).",
                    "",
                ]
                shutil.rmtree(src, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return "\n".join(lines)


@dataclass(frozen=True)
class _Sized:
    size: int


# --------------------------------------------------------------------------------------------
# 2. Bookkeeping

_BOOKKEEPING = r"""
import pickle, resource, sys, tempfile, time
from pathlib import Path
from daulat.stores.fs import FsStore
from daulat.transfer.engine import Endpoint, Kind, Options, Summary, _Executor
from daulat.transfer.journal import Journal, Outcome, State, WorkItem
from daulat.scale.driver import _apply, _Shard, driver_batches
from daulat.scale.worker import Report

n, per_report, shard_size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
mode = sys.argv[4]
whole = mode == "driver"
# The floor: SQLite alone, a plain INSERT of rows already bound as tuples (no upsert, no
# daulat code), in transactions of the same size.
PLAIN = ("INSERT INTO journal (pair, key, size, src_etag, state, sha256, dst_size, dst_etag, "
         "error, run_id, updated, plain_size, stored_as) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)")
stamp = "2026-12-05T00:00:00+00:00"
tmp = Path(tempfile.mkdtemp())
(tmp / "a").mkdir(); (tmp / "b").mkdir()
src, dst = Endpoint(FsStore("a", tmp / "a")), Endpoint(FsStore("b", tmp / "b"))
journal = Journal(tmp / "j.sqlite")
run_id = journal.begin_run("exit", "a: -> b:", "a", "b")
summary = Summary(Kind.EXIT.value, "a", "b", run_id, planned_objects=n, left_objects=n,
                  left_bytes=n * 65536)
ex = _Executor(src, dst, journal, Options(), "a: -> b:", summary, None)
driver_batches(ex)  # as the Ray driver commits
digest = "ab" * 32
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
wall = cpu = 0.0
in_flight = {}
pending, pending_rows = [], []
for s0 in range(0, n, shard_size):
    keys = [f"k/{i:09d}" for i in range(s0, min(n, s0 + shard_size))]
    for r0 in range(0, len(keys), per_report):
        outcomes = [Outcome(k, 65536, "e" + k, State.DONE, sha256=digest, dst_size=65536,
                            dst_etag="d" + k, plain_size=65536)
                    for k in keys[r0 : r0 + per_report]]
        # What arrives from a worker: its report, pickled (Ray serialises it so).
        wire = pickle.dumps(Report(outcomes=outcomes), protocol=5) if whole else None
        rows = [(ex.pair, o.key, o.size, o.src_etag, "done", o.sha256, o.dst_size, o.dst_etag,
                 None, run_id, stamp, o.plain_size, None) for o in outcomes]
        t, c = time.perf_counter(), time.process_time()
        if whole:
            if r0 == 0:
                state = _Shard(s0, {k: WorkItem(k, 65536, "e" + k) for k in keys})
            _apply(ex, pickle.loads(wire), state, in_flight)
        elif mode in ("record", "sqlite"):
            # Committed in transactions of the driver's batch (5,000), as commit_many does.
            pending += outcomes
            pending_rows += rows
            if len(pending) >= 5000 or (s0 + r0 + per_report >= n):
                if mode == "record":
                    journal.record(ex.pair, run_id, pending)
                else:
                    journal.db.execute("BEGIN")
                    journal.db.executemany(PLAIN, pending_rows)
                    journal.db.execute("COMMIT")
                pending, pending_rows = [], []
        else:
            ex.commit_many(outcomes)
        wall += time.perf_counter() - t
        cpu += time.process_time() - c
t, c = time.perf_counter(), time.process_time()
ex.finish()
wall += time.perf_counter() - t
cpu += time.process_time() - c
assert mode in ("record", "sqlite") or (
    summary.copied_objects == n and summary.left_objects == 0), summary
(committed,) = journal.db.execute("SELECT count(*) FROM journal WHERE state = 'done'").fetchone()
assert committed == n, committed
print(n / wall, n / cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, before / 1024)
"""

# Outcomes per worker report in the simulation: a worker reports every 0.25 s, so 1,000 is
# 4,000 objects/s from one worker; shards of 5,000 objects (the largest the driver cuts).
PER_REPORT, SHARD = 1000, 5000


def bookkeeping() -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR / "src")}
    rows = []
    for what in ("sqlite", "record", "commit", "driver"):
        for n in (100_000, 1_000_000):
            out = subprocess.run(
                [sys.executable, "-c", _BOOKKEEPING, str(n), str(PER_REPORT), str(SHARD), what],
                env=env, capture_output=True, text=True,
            )  # fmt: skip
            assert out.returncode == 0, out.stderr[-2000:]
            rate, cpu_rate, peak, start = map(float, out.stdout.split())
            rows.append((what, n, rate, cpu_rate, peak, start, os.getloadavg()[0]))
    by = {(w, n): (r, c, p) for w, n, r, c, p, _s, _l in rows}
    growth = by["driver", 1_000_000][2] - by["driver", 100_000][2]
    rate = by["commit", 1_000_000][0]
    label = {
        "sqlite": "SQLite alone: plain INSERT of prepared tuples into the journal table",
        "record": "`Journal.record` (the upsert, rows built from outcomes)",
        "commit": "`Executor.commit_many` (the journal commit path)",
        "driver": "the driver's whole path per report (unpickle + `_apply`)",
    }
    lines = [
        f"- Date: {now_utc()}; daulat git {git_describe()}; 1-minute load average before "
        "each row in the table (a shared 2-core machine).",
        "",
        "| path | objects | objects/s (wall) | objects/s (CPU time) | peak RSS MiB "
        "| RSS before MiB | load |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {label[w]} | {n:,} | {r:,.0f} | {c:,.0f} | {p:.1f} | {s:.1f} | {ld:.1f} |"
            for w, n, r, c, p, s, ld in rows
        ],
        "",
        f"- Peak RSS growth from 100,000 to 1,000,000 objects (driver path): **{growth:.1f} MiB** "
        f"(goal ≤ 10 MiB: {'met' if growth <= 10 else 'NOT met'}).",
        f"- Journal commits at 1,000,000: **{rate:,.0f} objects/s** wall "
        f"({by['commit', 1_000_000][1]:,.0f}/s of CPU time; goal ≥ 100,000 wall: "
        f"{'met' if rate >= 100_000 else 'NOT met'}).",
        f"- Command: `python bench/ray_scaling.py --bookkeeping-only` (a fresh process per row; "
        f"simulated reports of {PER_REPORT:,} done outcomes from shards of {SHARD:,}, journal "
        "on the local disk, `PRAGMA synchronous=FULL` and batches of 5,000 as in a real run; "
        "the outcomes are built outside the timed part, the pickled report is loaded inside "
        "it on the driver path).",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--large", type=int, default=8)
    ap.add_argument("--large-mib", type=int, default=256)
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument("--scaling-only", action="store_true", help="Leave the bookkeeping part.")
    ap.add_argument("--keep", type=Path, help="Keep the drills and every run's JSON here.")
    ap.add_argument(
        "--bookkeeping-only",
        action="store_true",
        help="Measure only the driver's bookkeeping and replace only that part of the section.",
    )
    args = ap.parse_args()
    measured = "(not run)" if args.scaling_only else bookkeeping()
    if args.bookkeeping_only:
        # Only this part of the section: the scaling runs above it keep their own date.
        update_section("ray-bookkeeping", measured)
        print(measured)
        return
    book = f"<!-- ray-bookkeeping:begin -->\n{measured}\n<!-- ray-bookkeeping:end -->"
    started = now_utc()
    load = os.getloadavg()[0]
    scale = (
        "(not run)"
        if args.skip_scaling
        else scaling(
            [("small", args.small, 64 * 1024), ("large", args.large, args.large_mib * MiB)],
            args.keep,
        )
    )
    body = f"""
## Ray scaling and the driver's bookkeeping (`bench/ray_scaling.py`)

- Scaling part (the tables after the bookkeeping): date {started}; machine: {machine()}; daulat
  git {git_describe()}; ray {_ray_version()}. The bookkeeping part has its own date and commit.
- 1-minute load average at the start of the scaling part: {load:.1f} (a shared machine: other
  test suites ran).
- A Ray "cluster" of a head and a worker node, two task slots each, on a two-core machine:
  the workers share two cores,
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
