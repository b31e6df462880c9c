"""What the trust work costs the client in CPU: the same exit under two checkouts of daulat.

    python bench/trust_cost.py --before DIR [--after DIR] [--objects 3000] [--large-mib 256]
                               [--runs 3] [--loop product|asyncio|uvloop] [--no-results]

``--before`` is a checkout of daulat from before signed manifests, provider-checked upload
checksums, proofs of completion and the audit anchor (e.g. ``git worktree add /tmp/before
d833ecd``); ``--after`` defaults to this checkout. Both run the same exit, SeaweedFS A → B on
127.0.0.1, in a child process whose ``PYTHONPATH`` is the checkout's ``src``, driving
``daulat.transfer.run_transfer`` directly (no CLI start-up). The child's CPU seconds (user +
system, every thread) are compared:

* small: ``--objects`` x 64 KiB — CPU ms per object;
* large: 2 x ``--large-mib`` MiB — CPU s per GiB;
* fixed: 10 x 64 KiB — the CPU seconds a run costs whatever its size (key loading, manifests,
  clients). Beside the totals, the table gives the marginal costs: (small - fixed) per
  object beyond the first 10, and (large - fixed) per GiB. The fixed cost's own spread
  (±0.05 CPU s between identical runs after the trust work) lands on those differences
  (±25 µs an object at 2,000), so a last row gives the copy phase alone: the CPU spent
  while the executor ran (``engine._Executor.run`` in both checkouts), small - fixed, per
  object. It leaves out listings, planning and the manifest, which scale with the objects
  too but are not the copy.

Each child runs the exit on the event loop its checkout's commands run on: asyncio's for a
checkout from before ``daulat.loops``, uvloop's after it (part of the client's CPU per object,
as users run it). ``--loop asyncio`` or ``--loop uvloop`` runs both on that loop instead, to
show what the trust work itself costs on one loop (section ``trust-cost-asyncio`` or
``trust-cost-uvloop``).

A second table splits each case's CPU into user and system seconds, with the child's context
switches and minor page faults (``getrusage``): work the kernel does for the client (system
calls, wake-ups, faults) shows there, and never in instruction counts.

``--callgrind N`` counts instructions instead (``valgrind --tool=callgrind``, every thread): the
same exit of N and 4N small objects under each checkout, the four runs side by side. The
difference between the two sizes removes start-up, so the result is instructions per small
object before and after, plus the start-up difference: figures the machine's load cannot move
(CPU seconds here move by ±10 % between runs at load 20). Valgrind emulates no SHA extensions,
so SHA-256's share is overstated. Printed, not written to RESULTS.md.

The children write and reuse compiled bytecode (under WORKDIR/pycache, not in the
checkouts; the warm-up runs fill it), as an installed package does: without it, every module a
run imports lazily would be compiled from source inside the measured time.

Runs alternate between the checkouts (before, after, after, before, ...), so drifts in the
machine's load hit both. Each run writes into a new, empty bucket and a new state directory.
The section ``trust-cost`` of bench/RESULTS.md is rewritten.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import clean_env, machine, now_utc, sigterm_as_interrupt, update_section
from proof_cost import store_toml
from servers import S3Server, seaweedfs, start_all
from transfer import Dataset, _fill, delete_bucket

MiB = 1024 * 1024
GiB = 1024 * MiB
FIXED = "trust-fixed"  # the dataset that measures a run's fixed cost
#: The children's event loop (--loop): "product" (each checkout's own), or "asyncio" or
#: "uvloop" for both.
LOOP = "product"

CHILD = r"""
import asyncio, json, os, resource, sys, time
from pathlib import Path
from daulat.config import load_config
from daulat.transfer import Kind, Options, run_transfer

from daulat.transfer import engine

# The copy phase alone (both checkouts' executor is engine._Executor): CPU the process spent
# while the executor ran, every thread. Beside the whole run's, it leaves out the fixed cost
# (clients, keys, listings' first pages, manifests), whose spread from run to run (±0.05 s
# after) would otherwise land on the per-object figure.
copy_cpu = [0.0]
run_executor = engine._Executor.run
async def timed_run(self):
    c = time.process_time()
    try:
        return await run_executor(self)
    finally:
        copy_cpu[0] += time.process_time() - c
engine._Executor.run = timed_run

# The event loop: the one the checkout's commands run on (daulat.loops where the checkout has
# it; asyncio's before it), or the same for both with --loop asyncio|uvloop.
factory = None
if os.environ["TRUST_COST_LOOP"] == "uvloop":
    import uvloop
    factory = uvloop.new_event_loop
elif os.environ["TRUST_COST_LOOP"] == "product":
    try:
        from daulat.loops import loop_factory
    except ImportError:
        pass
    else:
        factory = loop_factory()

config = load_config(Path(sys.argv[1]))
r0 = resource.getrusage(resource.RUSAGE_SELF)
t0, c0 = time.monotonic(), time.process_time()
with asyncio.Runner(loop_factory=factory) as runner:
    summary = runner.run(run_transfer(config, Kind.EXIT, "a", "b", Options()))
c1, r1 = time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"ok": summary.ok, "copied": summary.copied_objects,
                  "wall": time.monotonic() - t0, "cpu": c1 - c0, "copy": copy_cpu[0],
                  "user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime,
                  "switches": (r1.ru_nvcsw - r0.ru_nvcsw) + (r1.ru_nivcsw - r0.ru_nivcsw),
                  "faults": r1.ru_minflt - r0.ru_minflt}))
sys.stdout.flush()
os._exit(0)
"""


def git_head(checkout: Path) -> str:
    res = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return res.stdout.strip() or "?"


def one_run(
    workdir: Path,
    a: S3Server,
    b: S3Server,
    ds: Dataset,
    checkout: Path,
    tag: str,
    i: int,
    *,
    callgrind: Path | None = None,
) -> dict[str, float]:
    """One exit in a child; ``callgrind``: under valgrind, its profile written there."""
    bucket = f"trust-{tag}-{ds.name}-{i}-{int(time.time())}"
    b.create_bucket(bucket)
    run_dir = workdir / "runs" / bucket
    run_dir.mkdir(parents=True)
    config = run_dir / "daulat.toml"
    config.write_text(store_toml("a", ds.name, a) + store_toml("b", bucket, b))
    env = clean_env()
    env["PYTHONPATH"] = str(checkout / "src")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["TRUST_COST_LOOP"] = LOOP
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache" / tag)
    load = os.getloadavg()[0]
    argv = [sys.executable, "-c", CHILD, str(config)]
    if callgrind:
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={callgrind}", *argv]
        env["PYTHONMALLOC"] = "malloc"
    res = subprocess.run(
        argv,
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(f"{tag} exit failed: {res.stderr[-2000:]}")
    out: dict[str, float] = json.loads(res.stdout.strip().splitlines()[-1])
    if callgrind:
        counted = re.findall(r"Collected : (\d+)", res.stderr)
        if not counted:
            raise RuntimeError(f"no instruction count from callgrind: {res.stderr[-2000:]}")
        out["instructions"] = float(counted[-1])
        out["hashing"] = float(bulk_sha256(callgrind))
        callgrind.unlink()
    if not out["ok"] or out["copied"] != ds.objects:
        raise RuntimeError(f"{tag} exit not ok or not {ds.objects} objects: {out}")
    out["load"] = load
    delete_bucket(b, bucket)
    shutil.rmtree(run_dir, ignore_errors=True)
    return out


def render(
    runs: dict[tuple[str, str], list[dict[str, float]]],
    sets: list[Dataset],
    heads: dict[str, str],
    command: str,
) -> str:
    lines = [
        "## Trust cost — client CPU of the same exit before and after signed manifests, "
        "upload checksums, proofs and the audit anchor"
        + (f" (both on {LOOP}'s event loop)" if LOOP != "product" else ""),
        "",
        f"- Date: {now_utc()}; {machine()}; before = git {heads['before']}, after = git "
        f"{heads['after']}. SeaweedFS A → B on 127.0.0.1, `run_transfer` in a child process "
        "(no CLI start-up); client CPU = the child's user + system seconds, every thread. "
        + (
            f"Event loop: {LOOP}'s for both checkouts (`--loop {LOOP}`)."
            if LOOP != "product"
            else "Event loop: each checkout's own, as its commands run (before: asyncio's; "
            "after: `daulat.loops`, uvloop's)."
        ),
        "- Loads at the starts of the runs: "
        + ", ".join(f"{r['load']:.1f}" for rs in runs.values() for r in rs)
        + " (a shared 2-CPU machine: CPU seconds are steadier than wall time).",
        "",
        "| case | before | after | after ÷ before | CPU of every run (before; after) |",
        "|---|---:|---:|---:|---|",
    ]
    fixed = next((ds for ds in sets if ds.name == FIXED), None)

    def median_cpu(tag: str, ds: Dataset) -> float:
        return statistics.median(r["cpu"] for r in runs[tag, ds.name])

    marginal: list[str] = []
    for ds in sets:
        small = ds.size < MiB
        every = "; ".join(
            ", ".join(f"{r['cpu']:.2f}" for r in runs[tag, ds.name]) for tag in ("before", "after")
        )
        if ds is fixed:
            before, after = median_cpu("before", ds), median_cpu("after", ds)
            lines.append(
                f"| {ds.describe()}: fixed cost of a run (CPU s, median) | {before:.3f} | "
                f"{after:.3f} | {after / before:.2f}x | {every} |"
            )
            continue
        unit = "CPU ms/object" if small else "CPU s/GiB"

        def per(r: dict[str, float], ds: Dataset = ds, small: bool = small) -> float:
            return r["cpu"] * 1000 / ds.objects if small else r["cpu"] / (ds.bytes / GiB)

        before = statistics.median(per(r) for r in runs["before", ds.name])
        after = statistics.median(per(r) for r in runs["after", ds.name])
        lines.append(
            f"| {ds.describe()} ({unit}, median) | {before:.3f} | {after:.3f} | "
            f"**{after / before:.2f}x** | {every} |"
        )
        if fixed is not None:
            # What each object or GiB adds beyond the fixed cost of a run (medians).
            m = {
                tag: (
                    (median_cpu(tag, ds) - median_cpu(tag, fixed))
                    * 1000
                    / (ds.objects - fixed.objects)
                    if small
                    else (median_cpu(tag, ds) - median_cpu(tag, fixed)) / (ds.bytes / GiB)
                )
                for tag in ("before", "after")
            }
            marginal.append(
                f"| {ds.describe()}, beyond the fixed cost ({unit}) | {m['before']:.3f} | "
                f"{m['after']:.3f} | **{m['after'] / m['before']:.2f}x** | |"
            )
            if small:
                # The executor's phase alone: no fixed cost, and none of its spread, to remove.
                c = {
                    tag: (
                        statistics.median(r.get("copy", float("nan")) for r in runs[tag, ds.name])
                        - statistics.median(
                            r.get("copy", float("nan")) for r in runs[tag, fixed.name]
                        )
                    )
                    * 1000
                    / (ds.objects - fixed.objects)
                    for tag in ("before", "after")
                }
                marginal.append(
                    f"| {ds.describe()}, the copy phase alone ({unit}) | {c['before']:.3f} | "
                    f"{c['after']:.3f} | **{c['after'] / c['before']:.2f}x** | |"
                )
    lines += marginal
    lines += ["", *split(runs, sets)]
    lines += [
        "",
        "Reproduce (from the repository root, after `pip install -e '.[test]'`):",
        "",
        "```",
        command,
        "```",
    ]
    return "\n".join(lines)


def split(runs: dict[tuple[str, str], list[dict[str, float]]], sets: list[Dataset]) -> list[str]:
    """Where each side's CPU goes: user and system seconds, context switches and page faults
    of the child (medians). More system time means more system calls, wake-ups or faults,
    which instruction counts (``--callgrind``) do not see."""
    lines = [
        "| case | side | user CPU s | system CPU s | context switches | minor page faults |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for ds in sets:
        for tag in ("before", "after"):
            rs = runs[tag, ds.name]

            def med(field: str, rs: list[dict[str, float]] = rs) -> float:
                return statistics.median(r.get(field, float("nan")) for r in rs)

            lines.append(
                f"| {ds.describe()} | {tag} | {med('user'):.2f} | {med('sys'):.2f} | "
                f"{med('switches'):,.0f} | {med('faults'):,.0f} |"
            )
    return lines


def instructions(
    workdir: Path, a: S3Server, b: S3Server, checkouts: dict[str, Path], n: int
) -> str:
    """Instructions per small object before and after, and the start-up difference."""
    sets = [Dataset(f"trust-cg-{k}", k, 64 * 1024) for k in (n, 4 * n)]
    for ds in sets:
        a.create_bucket(ds.name)
        asyncio.run(_fill(a, ds, None, 32))
        for tag, path in checkouts.items():  # bytecode caches, as for the timed runs
            one_run(workdir, a, b, ds, path, tag, -1)
    jobs = [(tag, ds) for tag in checkouts for ds in sets]
    profiles = workdir / "callgrind"
    profiles.mkdir(exist_ok=True)
    with ThreadPoolExecutor(len(jobs)) as pool:  # counts, not times: side by side is fine
        results = list(
            pool.map(
                lambda job: one_run(
                    workdir,
                    a,
                    b,
                    job[1],
                    checkouts[job[0]],
                    job[0],
                    0,
                    callgrind=profiles / f"{job[0]}-{job[1].objects}.out",
                ),
                jobs,
            )
        )
    count = {
        (tag, ds.objects): r["instructions"] for (tag, ds), r in zip(jobs, results, strict=True)
    }
    hashing = {(tag, ds.objects): r["hashing"] for (tag, ds), r in zip(jobs, results, strict=True)}

    def per_object(c: dict[tuple[str, int], float], tag: str) -> float:
        return (c[tag, 4 * n] - c[tag, n]) / (3 * n)

    per = {tag: per_object(count, tag) for tag in checkouts}
    sha = {tag: per_object(hashing, tag) for tag in checkouts}
    rest = {tag: per[tag] - sha[tag] for tag in checkouts}
    start = {tag: count[tag, n] - n * per[tag] for tag in checkouts}
    return (
        f"- Under callgrind ({n:,} and {4 * n:,} x 64 KiB, start-up removed): "
        f"**{per['before']:,.0f} instructions per small object before, {per['after']:,.0f} "
        f"after ({per['after'] / per['before'] - 1:+.2%})**; start-up {start['before'] / 1e6:,.0f}"
        f" M before, {start['after'] / 1e6:,.0f} M after (before = git "
        f"{git_head(checkouts['before'])}, after = git {git_head(checkouts['after'])}); counts: "
        + ", ".join(f"{tag} {k:,}: {c:,.0f}" for (tag, k), c in count.items())
        + f"\n- Of these, the bodies' SHA-256 (hashlib's and obstore's; valgrind runs it without "
        f"the CPU's SHA instructions, so it weighs far more here than in CPU seconds): {sha['before']:,.0f} "
        f"before, {sha['after']:,.0f} after. **Everything else: {rest['before']:,.0f} before, "
        f"{rest['after']:,.0f} after ({rest['after'] / rest['before'] - 1:+.2%})**, the "
        "figure to hold CPU seconds against."
    )


# The bulk SHA-256 of object bodies in a callgrind profile: hashlib.sha256(data) (the engine's
# plaintext hash), and obstore's block function (the upload checksum, or the signed payload).
_HASHLIB_SHA256 = re.compile(r"^\s*([\d,]+) .*:_hashlib_openssl_sha256 \[", re.MULTILINE)
_OBSTORE_SHA256 = re.compile(
    r"^\s*([\d,]+) .*sha256_block_data_order\w* \[.*_obstore", re.MULTILINE
)


def bulk_sha256(profile: Path) -> int:
    """Instructions spent hashing bodies in ``profile`` (inclusive of hashlib's call)."""
    res = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(profile)],
        capture_output=True,
        text=True,
        check=True,
    )
    hashlib_ = max(
        (int(m.replace(",", "")) for m in _HASHLIB_SHA256.findall(res.stdout)), default=0
    )
    # The dispatcher's inclusive count holds the variant it chose: the largest is the whole.
    obstore = max((int(m.replace(",", "")) for m in _OBSTORE_SHA256.findall(res.stdout)), default=0)
    return hashlib_ + obstore


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--before", type=Path, required=True, help="checkout of the older daulat")
    p.add_argument("--after", type=Path, default=Path(__file__).resolve().parents[1])
    p.add_argument("--objects", type=int, default=3000)
    p.add_argument("--large-mib", type=int, default=256)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--no-results", action="store_true", help="print, do not write RESULTS.md")
    p.add_argument(
        "--callgrind",
        type=int,
        metavar="N",
        help="count instructions of N and 4N small objects instead (printed only)",
    )
    p.add_argument(
        "--loop",
        choices=("product", "asyncio", "uvloop"),
        default="product",
        help="the children's event loop: each checkout's own (default), or asyncio's or "
        "uvloop's for both (writes the section trust-cost-asyncio or trust-cost-uvloop)",
    )
    args = p.parse_args(argv)
    global LOOP
    LOOP = args.loop
    checkouts = {"before": args.before.resolve(), "after": args.after.resolve()}
    heads = {tag: git_head(path) for tag, path in checkouts.items()}
    workdir = (args.workdir or Path(os.environ.get("TMPDIR", "/tmp")) / "daulat-trust").resolve()
    for old in ("runs", "seaweedfs-a", "seaweedfs-b"):
        shutil.rmtree(workdir / old, ignore_errors=True)
    if args.callgrind:
        with (
            sigterm_as_interrupt(),
            start_all(seaweedfs(workdir / "seaweedfs-a"), seaweedfs(workdir / "seaweedfs-b")) as (
                a,
                b,
            ),
        ):
            print(instructions(workdir, a, b, checkouts, args.callgrind), flush=True)
        sys.stdout.flush()
        os._exit(0)
    sets = [
        Dataset("trust-small", args.objects, 64 * 1024),
        Dataset("trust-large", 2, args.large_mib * MiB),
        Dataset(FIXED, 10, 64 * 1024),
    ]
    runs: dict[tuple[str, str], list[dict[str, float]]] = {
        (tag, ds.name): [] for tag in checkouts for ds in sets
    }
    with (
        sigterm_as_interrupt(),
        start_all(seaweedfs(workdir / "seaweedfs-a"), seaweedfs(workdir / "seaweedfs-b")) as (a, b),
    ):
        for ds in sets:
            a.create_bucket(ds.name)
            print(f"filling A with {ds.describe()} ...", flush=True)
            asyncio.run(_fill(a, ds, None, 32))
            for tag, path in checkouts.items():  # warm-up: caches, server start-up
                one_run(workdir, a, b, ds, path, tag, -1)
        for i in range(args.runs):
            order = ("before", "after") if i % 2 == 0 else ("after", "before")
            for ds in sets:
                for tag in order:
                    r = one_run(workdir, a, b, ds, checkouts[tag], tag, i)
                    runs[tag, ds.name].append(r)
                    print(f"{ds.name} {tag} {i + 1}: {json.dumps(r)}", flush=True)
    command = "python bench/trust_cost.py " + " ".join(argv or sys.argv[1:])
    text = render(runs, sets, heads, command)
    if not args.no_results:
        update_section("trust-cost" if LOOP == "product" else f"trust-cost-{LOOP}", text)
    print(text)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
