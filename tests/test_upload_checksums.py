"""Uploads the provider checks: a body altered or cut short on its way is refused by the server.

A proxy between daulat and SeaweedFS flips one byte of every PUT body, or cuts it to half (with
a Content-Length to match, so the request itself looks whole). Every single PUT and every part
of a multipart upload carries ``x-amz-checksum-sha256``, so SeaweedFS refuses each altered body
and stores nothing: the run retries, reports the object failed, never verified, and nothing is
committed under the key. Once the proxy passes bodies unchanged, the same run completes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from conftest import run, s3_store_config
from faultproxy import fault_proxy
from servers import S3Server

from daulat.config import StoreConfig
from daulat.errors import NotFound
from daulat.stores import open_store
from daulat.stores.fs import FsStore
from daulat.transfer.engine import Endpoint, Kind, Options, transfer
from daulat.transfer.journal import Journal
from daulat.transfer.retry import RetryPolicy

KiB, MiB = 1024, 1024 * 1024
BUCKET = "checked-uploads"


@pytest.mark.parametrize("mode", ["flip", "truncate"])
@pytest.mark.parametrize("size", [64 * KiB, 20 * MiB], ids=["single-put", "multipart"])
def test_an_altered_body_is_refused_and_nothing_is_committed(
    s3_server: S3Server, tmp_path: Path, mode: str, size: int
) -> None:
    (tmp_path / "src").mkdir()
    body = os.urandom(size)
    (tmp_path / "src" / "obj.bin").write_bytes(body)
    prefix = f"{mode}-{size}-{os.getpid()}"
    direct_cfg = s3_store_config(s3_server, "direct", BUCKET, prefix)

    with fault_proxy(s3_server.endpoint) as proxy:
        cfg = StoreConfig.model_validate({**direct_cfg, "endpoint": proxy.endpoint})
        proxy.mode = mode

        async def exit_once() -> tuple[object, ...]:
            src = FsStore("src", tmp_path / "src")
            dst = open_store(cfg)
            with Journal(tmp_path / "journal.sqlite") as journal:
                summary = await transfer(
                    Kind.EXIT,
                    Endpoint(src, label="src"),
                    Endpoint(dst, label="dst"),
                    journal,
                    Options(retry=RetryPolicy(base=0.01, cap=0.05, budget=3.0)),
                )
            await dst.close()
            return (
                summary.ok,
                [k for k, _ in summary.failed],
                summary.failed,
                summary.verified_objects,
                summary.retries,
                summary.copied_objects,
            )

        ok, failed, reasons, verified, retries, copied = run(exit_once())
        assert proxy.stats["flipped" if mode == "flip" else "truncated"] >= 1
        assert not ok and failed == ["obj.bin"] and copied == 0
        assert not verified and retries >= 1, reasons

        async def nothing_committed() -> None:
            direct = open_store(StoreConfig.model_validate(direct_cfg))
            with pytest.raises(NotFound):
                await direct.head("obj.bin")
            assert [o async for batch in direct.list() for o in batch] == []
            await direct.close()

        run(nothing_committed())
        proxy.mode = "pass"
        ok, failed, _, verified, _, copied = run(exit_once())
        assert ok and failed == [] and copied == 1 and verified == 1

    async def committed() -> None:
        direct = open_store(StoreConfig.model_validate(direct_cfg))
        got = await (await direct.get("obj.bin")).read_all()
        assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
        await direct.close()

    run(committed())
