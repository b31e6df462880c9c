"""Where the CPU of a small-object exit goes: daulat's threads, the servers, the hot functions.

    python bench/profile.py [--objects 10000] [--size 65536] [--runs 3] [--workdir DIR]

Starts two SeaweedFS servers, A and B, on 127.0.0.1 (tests/servers.py), fills A with
OBJECTS x SIZE (the transfer benchmark's small case), then runs `daulat exit a b` RUNS times,
each into a new bucket, in a child Python process that drives daulat's library
(`daulat.transfer.run_transfer`, what the command calls) so that it can report, before it
exits:

* CPU seconds per thread group of the client: the Python thread running the event loop,
  obstore's tokio workers (HTTP, signing, TLS where used), and other threads (the asyncio
  default executor: filesystem calls, age on large bodies);
* what servers A and B spent meanwhile (from /proc);
* for one more run, under cProfile, the functions of the event-loop thread with the most own
  time (cProfile sees that thread only, and slows it down: read the list as "where", not
  "how much").

The section `profile` of bench/RESULTS.md is rewritten with the medians and the exact command.
On a 2-CPU machine where the client and both servers share the CPUs, the objects/s of any
client is bounded by (client + servers' CPU per object) / 2: this is what shows how far a
faster client can move that bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import (
    clean_env,
    git_describe,
    machine,
    now_utc,
    package_version,
    process_cpu,
    sigterm_as_interrupt,
    update_section,
)
from servers import S3Server, seaweedfs, start_all
from transfer import Dataset, _fill, _pid, delete_bucket

CHILD = r"""
import asyncio, cProfile, io, json, os, pstats, sys, time
from pathlib import Path
from daulat.config import load_config
from daulat.transfer import Kind, Options, run_transfer

config = load_config(Path(sys.argv[1]))
profile = sys.argv[2] == "profile"

def threads():
    groups = {"event loop": 0.0, "tokio": 0.0, "other": 0.0}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            comm = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
            stat = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu = (int(stat[11]) + int(stat[12])) / tick
        group = "event loop" if int(tid) == os.getpid() else (
            "tokio" if comm.startswith("tokio") else "other")
        groups[group] += cpu
    return groups

prof = cProfile.Profile() if profile else None
t0, c0 = time.monotonic(), time.process_time()
if prof:
    prof.enable()
summary = asyncio.run(run_transfer(config, Kind.EXIT, "a", "b", Options()))
if prof:
    prof.disable()
out = {"ok": summary.ok, "copied": summary.copied_objects, "verified": summary.verified_objects,
       "wall": time.monotonic() - t0, "cpu": time.process_time() - c0, "threads": threads()}
if prof:
    stats = pstats.Stats(prof)
    rows = []
    for (file, line, fn), (cc, nc, tt, ct, _) in stats.stats.items():
        where = fn if file == "~" else f"{Path(file).name}:{line} {fn}"
        rows.append((tt, ct, nc, where))
    rows.sort(reverse=True)
    out["top"] = rows[:25]
print(json.dumps(out))
sys.stdout.flush()
os._exit(0)
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--objects", type=int, default=10_000)
    p.add_argument("--size", type=int, default=64 * 1024)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--no-results", action="store_true", help="print, do not write RESULTS.md")
    return p.parse_args(argv)


def store_toml(name: str, bucket: str, server: S3Server) -> str:
    return (
        f'[stores.{name}]\nurl = "s3://{bucket}"\nprovider = "self-hosted"\ncountry = "ID"\n'
        f'endpoint = "{server.endpoint}"\n'
        f'credentials = {{ access_key_id = "{server.access_key_id}", '
        f'secret_access_key = "{server.secret_access_key}" }}\n'
    )


def one_run(
    workdir: Path, a: S3Server, b: S3Server, source: str, n: int, mode: str
) -> dict[str, object]:
    bucket = f"prof-{n}-{int(time.time())}"
    b.create_bucket(bucket)
    run_dir = workdir / "runs" / bucket
    run_dir.mkdir(parents=True)
    config = run_dir / "daulat.toml"
    config.write_text(store_toml("a", source, a) + store_toml("b", bucket, b))
    pids = [pid for pid in (_pid(a), _pid(b)) if pid]
    before = sum(process_cpu(p) for p in pids)
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(config), mode],
        cwd=run_dir,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    servers = sum(process_cpu(p) for p in pids) - before
    if res.returncode != 0:
        raise RuntimeError(f"profiled exit failed: {res.stderr[-2000:]}")
    out: dict[str, object] = json.loads(res.stdout.strip().splitlines()[-1])
    out["servers"] = servers
    out["load"] = os.getloadavg()[0]
    if not out["ok"]:
        raise RuntimeError(f"exit not ok: {out}")
    delete_bucket(b, bucket)
    shutil.rmtree(run_dir, ignore_errors=True)
    return out


def render(runs: list[dict[str, object]], prof: dict[str, object], args: argparse.Namespace) -> str:
    n = args.objects

    def med(get) -> float:  # type: ignore[no-untyped-def]
        return statistics.median(get(r) for r in runs)

    loop = med(lambda r: r["threads"]["event loop"])
    tokio = med(lambda r: r["threads"]["tokio"])
    other = med(lambda r: r["threads"]["other"])
    client = med(lambda r: r["cpu"])
    servers = med(lambda r: r["servers"])
    wall = med(lambda r: r["wall"])
    per = 1000 / n
    cpus = os.cpu_count() or 1
    loads = ", ".join(f"{r['load']:.1f}" for r in runs)
    bound = n / ((client + servers) / cpus)
    lines = [
        f"## Profile — where the CPU of a small-object exit goes ({n:,} x {args.size // 1024} KiB,"
        " SeaweedFS A → B)",
        "",
        f"- Date: {now_utc()}; {machine()}; daulat {package_version('daulat')} (git"
        f" {git_describe()}), obstore {package_version('obstore')}",
        f"- Runs: {len(runs)} (medians below); 1-minute load average at their start:"
        f" {loads} on {cpus} CPUs",
        f"- Wall {wall:.2f} s ({n / wall:.0f} objects/s).",
        "",
        "| where | CPU s | ms per object | share of all CPU |",
        "|---|---:|---:|---:|",
    ]
    total = client + servers
    for label, value in (
        ("daulat: event-loop thread (Python)", loop),
        ("daulat: obstore's tokio threads (HTTP, signing)", tokio),
        ("daulat: other threads", other),
        ("servers A + B (SeaweedFS)", servers),
    ):
        lines.append(f"| {label} | {value:.2f} | {value * per:.3f} | {value / total:.0%} |")
    lines += [
        f"| **all** | {total:.2f} | {total * per:.3f} | 100% |",
        "",
        f"- With {cpus} CPUs shared by client and servers, objects/s ≤ {cpus} / (CPU per"
        f" object) = **{bound:.0f}/s** at these costs; with a client that cost nothing it"
        f" would be {n / (servers / cpus):.0f}/s.",
        "- Hottest functions of the event-loop thread (one extra run under cProfile, own time;"
        " the profiler slows that thread, so read it as where, not how much):",
        "",
        "| own s | with callees s | calls | function |",
        "|---:|---:|---:|---|",
    ]
    for tt, ct, nc, where in prof.get("top", [])[:15]:  # type: ignore[attr-defined]
        lines.append(f"| {tt:.2f} | {ct:.2f} | {nc:,} | `{where}` |")
    argv = " ".join(
        x
        for x in (
            "python bench/profile.py",
            f"--objects {n}" if n != 10_000 else "",
            f"--size {args.size}" if args.size != 64 * 1024 else "",
            f"--runs {args.runs}" if args.runs != 3 else "",
        )
        if x
    )
    lines += [
        "",
        "Reproduce (from the repository root, after `pip install -e '.[test]'`):",
        "",
        f"```\n{argv}\n```",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = (args.workdir or Path(os.environ.get("TMPDIR", "/tmp")) / "daulat-profile").resolve()
    shutil.rmtree(workdir / "runs", ignore_errors=True)
    ds = Dataset("profile-src", args.objects, args.size)
    with (
        sigterm_as_interrupt(),
        start_all(seaweedfs(workdir / "seaweedfs-a"), seaweedfs(workdir / "seaweedfs-b")) as (a, b),
    ):
        a.create_bucket(ds.name)
        print(f"filling A with {ds.describe()} ...", flush=True)
        asyncio.run(_fill(a, ds, None, 32))
        runs = []
        for i in range(args.runs):
            runs.append(one_run(workdir, a, b, ds.name, i, "plain"))
            print(f"run {i + 1}: {json.dumps(runs[-1])}", flush=True)
        prof = one_run(workdir, a, b, ds.name, args.runs, "profile")
    text = render(runs, prof, args)
    if args.no_results:
        print(text)
    else:
        update_section("profile", text)
        print(text)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
