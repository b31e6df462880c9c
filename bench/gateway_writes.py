"""PUT through ``daulat serve`` (a writable bucket) vs straight to SeaweedFS, with boto3.

    PYTHONPATH=src python bench/gateway_writes.py [--mib 64] [--rounds 3] [--concurrent 4]

Starts SeaweedFS (tests/servers.py) and ``daulat serve`` over a writable bucket whose primary
is a directory and whose replica is a SeaweedFS bucket (quorum 2: every write lands twice,
the replica's journal row and chunk hashes recorded). Measures the median time of ``--rounds``
``put_object`` calls of ``--mib`` MiB each, direct and through the gateway, then the
gateway's peak RSS (VmHWM) after those sequential PUTs and after ``--concurrent`` concurrent
ones: it should not grow with the object's size (bounded buffers per request). Prints one
Markdown line per figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
from botocore.config import Config as BotoConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import fs_store_config, s3_store_config  # noqa: E402
from servers import seaweedfs  # noqa: E402
from test_gateway import _toml, client, gateway  # noqa: E402

MiB = 1024 * 1024


def _hwm(pid: int) -> int:
    """Peak resident memory of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _median(fn: Callable[[int], object], rounds: int) -> float:
    times = []
    for i in range(rounds):
        started = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrent", type=int, default=4)
    args = ap.parse_args()
    size = args.mib * MiB
    data = os.urandom(size)
    tmp = Path(tempfile.mkdtemp(prefix="gwwrites-"))
    with seaweedfs(tmp / "weed") as server:
        direct = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            aws_access_key_id=server.access_key_id,
            aws_secret_access_key=server.secret_access_key,
            region_name="us-east-1",
            config=BotoConfig(s3={"addressing_style": "path"}),
        )
        server.create_bucket("bench-direct")
        stores = [fs_store_config(tmp / "prim", "prim"), s3_store_config(server, "rep", "bench")]
        (tmp / "prim").mkdir()
        config = tmp / "daulat.toml"
        config.write_text(
            _toml(stores, {})
            + '[gateway.buckets.pemilu]\nreplicas = ["prim", "rep"]\nwritable = true\n'
        )
        d = _median(
            lambda i: direct.put_object(Bucket="bench-direct", Key=f"d{i}", Body=data),
            args.rounds,
        )
        with gateway(config) as endpoint:
            s3 = client(endpoint)
            g = _median(
                lambda i: s3.put_object(Bucket="pemilu", Key=f"g{i}", Body=data), args.rounds
            )
            pid = _serve_pid(config)
            single = _hwm(pid)
            with ThreadPoolExecutor(args.concurrent) as pool:
                list(
                    pool.map(
                        lambda i: client(endpoint).put_object(
                            Bucket="pemilu", Key=f"c{i}", Body=data
                        ),
                        range(args.concurrent),
                    )
                )
            many = _hwm(pid)
    print(f"- PUT of {args.mib} MiB, median of {args.rounds}: direct to SeaweedFS "
          f"{size / d / MiB:.0f} MiB/s; through daulat serve (directory + SeaweedFS, quorum 2) "
          f"{size / g / MiB:.0f} MiB/s ({d / g:.2f}x)")  # fmt: skip
    print(f"- gateway peak RSS: {single / 1024:.0f} MiB after the sequential PUTs, "
          f"{many / 1024:.0f} MiB after {args.concurrent} concurrent ones")  # fmt: skip


def _serve_pid(config: Path) -> int:
    """The ``daulat serve`` process serving ``config`` (this benchmark's own child)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and str(config).encode() in argv and entry.name != str(os.getpid()):
            return int(entry.name)
    raise SystemExit("the gateway's process was not found")


if __name__ == "__main__":
    main()
