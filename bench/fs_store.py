"""Client CPU per object of the filesystem store: puts, gets and a listing of small objects.

    PYTHONPATH=src python bench/fs_store.py [--objects 10000] [--size 65536] [--runs 3]

Writes ``--objects`` objects of ``--size`` bytes under the bench's nested keys
(``d{i%100:02d}/obj{i:06d}.bin``) the way the transfer engine does (whole bodies, hashed by the
caller, 64 in flight), reads them back (``get`` + ``read_all``, as the engine reads a source),
lists them, and copies them to a second directory with the transfer engine (``copy``). Each
phase reports the process's CPU time (user + sys, all threads) per object:
the figure to compare between two versions of ``stores/fs.py``, steadier than wall time on a
shared machine. Runs on a temporary directory on the default temp filesystem; ``--durable``
adds the fsync per object that real destinations do (off by default: it measures the disk).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from daulat.stores.fs import FsStore
from daulat.transfer.engine import Endpoint, Kind, transfer
from daulat.transfer.journal import Journal


def key_of(i: int) -> str:
    return f"d{i % 100:02d}/obj{i:06d}.bin"


async def _pool(n: int, fn: Callable[[int], Awaitable[None]], concurrency: int = 64) -> None:
    it = iter(range(n))

    async def worker() -> None:
        for i in it:
            await fn(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


async def one_run(root: Path, objects: int, size: int, durable: bool) -> dict[str, float]:
    store = FsStore("bench", root, durable=durable)
    body = os.urandom(size)
    digest = hashlib.sha256(body).hexdigest()
    figures: dict[str, float] = {}

    async def put(i: int) -> None:
        await store.put(key_of(i), body, sha256=digest, metadata={"sha256": digest}, prehashed=True)

    async def get(i: int) -> None:
        data = await (await store.get(key_of(i))).read_all()
        assert len(data) == size

    for phase, fn in (("put", put), ("put again", put), ("get", get)):
        c0 = _cpu()
        await _pool(objects, fn)
        figures[phase] = (_cpu() - c0) / objects * 1e6
    c0 = _cpu()
    listed = sum([len(batch) async for batch in store.list()])
    figures["list"] = (_cpu() - c0) / objects * 1e6
    assert listed == objects, listed
    # The whole engine, directory to directory: listing both sides, planning, reading each
    # source file, writing it at the destination, journaling.
    dst = FsStore("bench-dst", root.parent / "dst", durable=durable)
    c0 = _cpu()
    with Journal(root.parent / "journal.sqlite") as journal:
        summary = await transfer(
            Kind.COPY, Endpoint(store, label="src"), Endpoint(dst, label="dst"), journal
        )
    figures["copy fs→fs"] = (_cpu() - c0) / objects * 1e6
    assert summary.ok and summary.copied_objects == objects, summary.to_json()
    await store.close()
    await dst.close()
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=64 * 1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--durable", action="store_true")
    args = ap.parse_args()
    results: dict[str, list[float]] = {}
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="daulat-bench-fs-") as tmp:
            t0 = time.monotonic()
            figures = asyncio.run(
                one_run(Path(tmp) / "root", args.objects, args.size, args.durable)
            )
            wall = time.monotonic() - t0
        for phase, us in figures.items():
            results.setdefault(phase, []).append(us)
        print("  ".join(f"{p} {us:6.1f}" for p, us in figures.items()), f"(wall {wall:.1f} s)")
    print(
        f"client CPU per object (µs), {args.objects:,} x {args.size:,} B, median (min):",
        "  ".join(f"{p} {statistics.median(v):.1f} ({min(v):.1f})" for p, v in results.items()),
    )


if __name__ == "__main__":
    main()
