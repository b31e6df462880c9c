"""Sharded vs single listing benchmark: 100,000 objects on a local SeaweedFS, listed by one
ListObjectsV2 chain and by daulat's sharded listing (daulat.census.sharded.sharded_list).

    python bench/listing.py [--objects 100000] [--runs 3] [--shards 4,8,32]

Starts its own SeaweedFS on 127.0.0.1 (tests/servers.py), fills a bucket with N empty
objects in three shapes at once (60 % under 100 "directories" `dNN/objNNNNNN`, 30 % flat at
the root `fNNNNNN`, 10 % in a deep chain `deep/a/b/c/N/objNNNNNN`), then in rounds whose
order rotates lists the whole bucket in-process:

* `single`: one listing (`Store.list`, the next page asked for while the last is handled);
* `sharded N`: `sharded_list(store, shards=N)`, by prefixes, as daulat lists a server that
  does not document binary key order (SeaweedFS lists in directory-tree order).

Every listing must yield exactly the N keys (checked). Wall time is the median of the runs;
the "listing" section of bench/RESULTS.md is rewritten (other sections are kept).

Loopback has almost no round-trip time, so this measures the server's and the client's
work per page; over a WAN link (tens of ms per page) a single listing is bound by round
trips and shards gain more (the plan model's listing time assumes the shards divide it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from common import cpu_model, git_describe, machine, now_utc, package_version, update_section
from servers import S3Server, seaweedfs

from daulat.census.sharded import ListingStats, sharded_list
from daulat.config import StoreConfig
from daulat.stores import Store, open_store

BUCKET = "bench-listing"
SECTION = "listing"


def keys(n: int) -> list[str]:
    nested, flat = n * 6 // 10, n * 3 // 10
    return [
        *(f"d{i % 100:02d}/obj{i:06d}" for i in range(nested)),
        *(f"f{i:06d}" for i in range(flat)),
        *(f"deep/a/b/c/{i % 7}/obj{i:06d}" for i in range(n - nested - flat)),
    ]


async def fill(server: S3Server, names: list[str], concurrency: int = 96) -> float:
    import obstore
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
    todo = iter(names)
    t0 = time.perf_counter()

    async def worker() -> None:
        for key in todo:
            await obstore.put_async(store, key, b"")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0


def store_of(server: S3Server) -> Store:
    return open_store(
        StoreConfig.model_validate(
            {
                "name": "bench",
                "url": f"s3://{BUCKET}",
                "provider": "self-hosted",
                "country": "ID",
                "endpoint": server.endpoint,
                "credentials": {
                    "access_key_id": server.access_key_id,
                    "secret_access_key": server.secret_access_key,
                },
            }
        )
    )


async def one_listing(server: S3Server, shards: int) -> tuple[float, int, ListingStats]:
    store = store_of(server)
    stats = ListingStats()
    try:
        t0 = time.perf_counter()
        n = 0
        seen: set[str] = set()
        pages = store.list() if shards == 1 else sharded_list(store, shards=shards, stats=stats)
        async for batch in pages:
            n += len(batch)
            seen.update(o.key for o in batch)
        wall = time.perf_counter() - t0
    finally:
        await store.close()
    if len(seen) != n:
        raise SystemExit(f"shards={shards}: a key was listed twice")
    return wall, n, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--shards", default="4,8,32")
    args = ap.parse_args()
    variants = [1, *(int(s) for s in args.shards.split(","))]
    names = keys(args.objects)
    with (
        tempfile.TemporaryDirectory(prefix="bench-listing-") as tmp,
        seaweedfs(Path(tmp) / "weed") as server,
    ):
        server.create_bucket(BUCKET)
        print(f"filling s3://{BUCKET} with {len(names):,} empty objects ...", flush=True)
        fill_s = asyncio.run(fill(server, names))
        print(f"  {fill_s:.1f} s ({len(names) / fill_s:,.0f} PUT/s)")
        walls: dict[int, list[float]] = {v: [] for v in variants}
        stats: dict[int, ListingStats] = {}
        loads: list[float] = []
        for r in range(args.runs):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for v in order:
                loads.append(os.getloadavg()[0])
                wall, n, st = asyncio.run(one_listing(server, v))
                if n != len(names):
                    raise SystemExit(f"shards={v}: listed {n:,} objects, not {len(names):,}")
                walls[v].append(wall)
                stats[v] = st
                print(f"  run {r + 1} {'single' if v == 1 else f'sharded {v}'}: {wall:.2f} s")
    render(args, names, walls, stats, fill_s, loads)


def render(
    args: Any,
    names: list[str],
    walls: dict[int, list[float]],
    stats: dict[int, ListingStats],
    fill_s: float,
    loads: list[float],
) -> None:
    single = statistics.median(walls[1])
    cmd = (
        "python bench/listing.py"
        + (f" --objects {args.objects}" if args.objects != 100_000 else "")
        + (f" --runs {args.runs}" if args.runs != 3 else "")
        + (f" --shards {args.shards}" if args.shards != "4,8,32" else "")
    )
    lines = [
        f"## Listing — sharded vs single, {len(names):,} objects, SeaweedFS on loopback",
        "",
        f"Measured {now_utc()} on {machine()} ({cpu_model()}), daulat {git_describe()},"
        f" obstore {package_version('obstore')}, botocore {package_version('botocore')}."
        f" Command: `{cmd}`. Median of {args.runs} runs, order rotated; fill"
        f" {fill_s:.0f} s. Load average during the runs {min(loads):.1f} to {max(loads):.1f}"
        + (
            " (other work was running on the 2 cores: wall times are noisy)."
            if max(loads) > 1.5
            else "."
        ),
        "",
        "Keys: 60 % under 100 prefixes `dNN/`, 30 % flat at the root, 10 % under"
        " `deep/a/b/c/N/`. Every listing yielded each key exactly once (checked).",
        "",
        "| listing | mode | wall s | objects/s | vs single | prefix tasks (walked / flat) | walls of all runs |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for v, ws in walls.items():
        med = statistics.median(ws)
        st = stats[v]
        mode = "one ListObjectsV2 chain" if v == 1 else str(st.mode)
        tasks = "" if v == 1 else f"{st.level_tasks} / {st.flat_tasks}"
        lines.append(
            f"| {'single' if v == 1 else f'sharded, {v} shards'} | {mode} | {med:.2f} |"
            f" {len(names) / med:,.0f} | {single / med:.2f}x | {tasks} |"
            f" {', '.join(f'{w:.2f}' for w in ws)} |"
        )
    best = max((v for v in walls if v != 1), key=lambda v: single / statistics.median(walls[v]))
    lines += [
        "",
        f"Best here: {best} shards, {single / statistics.median(walls[best]):.2f}x the single"
        " listing. On loopback a page costs the server's and the client's CPU rather than a"
        " round trip, so the gain is bounded by the cores the server and client share; against"
        " a provider, where each page waits a round trip, a single listing is bound by that"
        " wait and shards divide it.",
    ]
    update_section(SECTION, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
