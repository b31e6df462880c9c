"""Client CPU of one S3 store: per small object and per GiB, against a local SeaweedFS.

    PYTHONPATH=src python bench/store_cpu.py [--objects 2000] [--size-mib 1024] [--runs 3]

Measures this process's user+system CPU (every thread: obstore's, botocore's, hashing) around

* ``small``: ``--objects`` puts of 64 KiB bytes (with their SHA-256, as the engine sends them)
  and as many whole reads, through ``open_store`` — CPU ms per object (put + get);
* ``large``: one streamed put of ``--size-mib`` MiB (1 MiB chunks, hashed by the store as
  the engine streams large objects) and one streamed read — CPU s per GiB (put + get).

The server runs in its own processes, so its CPU is not counted. Run it with ``PYTHONPATH``
pointing at two checkouts to compare them; the medians of ``--runs`` rounds are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import resource
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from servers import S3Server, seaweedfs

from daulat.config import StoreConfig
from daulat.stores import Store, open_store

KiB, MiB, GiB = 1024, 1024 * 1024, 1024 * 1024 * 1024


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def open_bucket(server: S3Server, bucket: str) -> Store:
    server.create_bucket(bucket)
    return open_store(
        StoreConfig.model_validate(
            {
                "name": bucket,
                "url": f"s3://{bucket}",
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


async def small(store: Store, objects: int) -> float:
    body = hashlib.sha256(b"small").digest() * (64 * KiB // 32)
    digest = hashlib.sha256(body).hexdigest()
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with sem:
            await store.put(
                f"s/{i:06d}", body, sha256=digest, metadata={"sha256": digest}, prehashed=True
            )
            await (await store.get(f"s/{i:06d}")).read_all()

    await one(-1)  # warm up: connections, credentials
    start = cpu()
    await asyncio.gather(*(one(i) for i in range(objects)))
    return (cpu() - start) * 1000 / objects


async def large(store: Store, size: int) -> float:
    block = hashlib.sha256(b"large").digest() * (MiB // 32)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(size // MiB):
            yield block

    start = cpu()
    await store.put("l/big.bin", body())
    async for _chunk in await store.get("l/big.bin"):
        pass
    return (cpu() - start) / (size / GiB)


async def round_(server: S3Server, n: int, objects: int, size: int) -> tuple[float, float]:
    store = open_bucket(server, f"cpu-bench-{n}")
    try:
        return await small(store, objects), await large(store, size)
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objects", type=int, default=2000)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, seaweedfs(Path(tmp)) as server:
        results = [
            asyncio.run(round_(server, n, args.objects, args.size_mib * MiB))
            for n in range(args.runs)
        ]
    per_object = statistics.median(r[0] for r in results)
    per_gib = statistics.median(r[1] for r in results)
    print(
        f"small: {per_object:.3f} CPU ms/object (64 KiB put + get), runs {[round(r[0], 3) for r in results]}"
    )
    print(
        f"large: {per_gib:.3f} CPU s/GiB (streamed put + get), runs {[round(r[1], 3) for r in results]}"
    )


if __name__ == "__main__":
    main()
