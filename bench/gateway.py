"""GET through ``daulat serve`` vs directly from SeaweedFS, with boto3 (32 threads).

    PYTHONPATH=src python bench/gateway.py [--small 2000] [--large 4] [--large-mib 256]

Starts SeaweedFS (tests/servers.py), fills a bucket, copies it to a directory with ``daulat copy``
(so the gateway serves verified objects and checks every chunk), starts ``daulat serve`` over
[SeaweedFS, directory] and measures, in one run, side by side: objects/s for small objects,
MB/s for large ones, and the latency of a 4 KiB GET (p50, p99). Prints a Markdown section.
The issue's goals: ≥ 0.8x MB/s (1 GiB objects), ≥ 0.5x objects/s (64 KiB), p50 added ≤ 5 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers import seaweedfs  # noqa: E402

MiB = 1024 * 1024
THREADS = 32


def _client(endpoint: str, key: str, secret: str) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
        region_name="us-east-1",
        config=BotoConfig(signature_version="s3v4", s3={"addressing_style": "path"},
                          max_pool_connections=THREADS, retries={"max_attempts": 1}),
    )


def _get_all(s3: Any, bucket: str, keys: list[str]) -> float:
    def one(key: str) -> int:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        n = 0
        while chunk := body.read(MiB):
            n += len(chunk)
        return n

    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        total = sum(pool.map(one, keys))
    assert total > 0
    return time.perf_counter() - started


def _latencies(s3: Any, bucket: str, key: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--large", type=int, default=4)
    ap.add_argument("--large-mib", type=int, default=256)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="daulat-gw-bench-"))
    with seaweedfs(work / "weed") as server:
        server.create_bucket("gwbench")
        direct = _client(server.endpoint, server.access_key_id, server.secret_access_key)
        small = [f"small/{i:05d}" for i in range(args.small)]
        large = [f"large/{i}" for i in range(args.large)]
        payload = os.urandom(64 * 1024)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: direct.put_object(Bucket="gwbench", Key=k, Body=payload), small))
        direct.put_object(Bucket="gwbench", Key="tiny", Body=os.urandom(4096))
        big = os.urandom(args.large_mib * MiB)
        for k in large:
            direct.upload_fileobj(__import__("io").BytesIO(big), "gwbench", k)
        (work / "rep").mkdir()
        config = work / "daulat.toml"
        config.write_text(
            f'[stores.weed]\nurl = "s3://gwbench"\nprovider = "self-hosted"\ncountry = "ID"\n'
            f'endpoint = "{server.endpoint}"\n[stores.weed.credentials]\n'
            f'access_key_id = "{server.access_key_id}"\n'
            f'secret_access_key = "{server.secret_access_key}"\n'
            f'[stores.rep]\nurl = "{(work / "rep").as_uri()}"\nprovider = "local"\ncountry = "ID"\n'
            '[gateway]\naccess_key_id = "bench"\nsecret_access_key = "bench-secret"\n'
            '[gateway.buckets.gwbench]\nreplicas = ["weed", "rep"]\n'
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        subprocess.run([sys.executable, "-m", "daulat", "copy", "weed", "rep", "--config",
                        str(config), "--quiet"], check=True, env=env)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "daulat", "serve", "--config", str(config),
                                 "--listen", f"127.0.0.1:{port}"], env=env)
        try:
            for _ in range(300):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                    break
                time.sleep(0.1)
            gw = _client(f"http://127.0.0.1:{port}", "bench", "bench-secret")
            rows = []
            for name, s3 in (("direct (SeaweedFS)", direct), ("daulat serve", gw)):
                t_small = _get_all(s3, "gwbench", small)
                t_large = _get_all(s3, "gwbench", large)
                lat = _latencies(s3, "gwbench", "tiny", 300)
                q = statistics.quantiles(lat, n=100)
                rows.append((name, len(small) / t_small, args.large * args.large_mib * MiB / t_large / 1e6,
                             statistics.median(lat), q[98]))
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"## Gateway — boto3 GET ({THREADS} threads) through daulat serve vs directly\n")
    print(f"- {args.small} x 64 KiB; {args.large} x {args.large_mib} MiB; 300 sequential 4 KiB GETs. "
          "Gateway replicas: [SeaweedFS, a directory], every chunk checked; served from SeaweedFS.")
    print(f"- Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs.\n")
    print("| path | 64 KiB objects/s | large MB/s | 4 KiB p50 ms | 4 KiB p99 ms |")
    print("|---|---:|---:|---:|---:|")
    for name, ops, mbs, p50, p99 in rows:
        print(f"| {name} | {ops:.0f} | {mbs:.1f} | {p50:.2f} | {p99:.2f} |")
    d, g = rows
    print(f"\n- gateway ÷ direct: objects/s {g[1] / d[1]:.2f}x (goal ≥ 0.5x), MB/s {g[2] / d[2]:.2f}x "
          f"(goal ≥ 0.8x), added p50 {g[3] - d[3]:.2f} ms (goal ≤ 5 ms)")


if __name__ == "__main__":
    main()
