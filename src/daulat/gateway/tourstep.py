"""``daulat demo``'s gateway step: read through ``daulat serve``, the primary refuses, read again.

The gateway runs in this process on a free port of 127.0.0.1, with the demo's primary wrapped in
:class:`Refusable` so that the tour can make it refuse every request on cue (403, as a provider
that cut its customer off answers). The client is obstore's S3 client
signing with SigV4, as any application would.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from daulat.config import Config, StoreConfig
from daulat.errors import AccessDenied
from daulat.gateway.config import gateway_config
from daulat.stores import Store, open_store
from daulat.stores.base import ObjectInfo, ObjectReader, PutResult
from daulat.stores.forwarding import ForwardingStore

BUCKET = "pemilu"


@dataclass
class TourRead:
    key: str
    size: int
    sha256: str
    endpoint: str
    again_sha256: str
    denied: int  # requests the refusing primary turned away during the second read


class Refusable(ForwardingStore):
    """A Store that forwards to ``inner`` until :meth:`revoke`, then refuses every request as a
    provider that cut its customer off does (counted in ``denied``)."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.revoked = False
        self.denied = 0

    def revoke(self) -> None:
        self.revoked = True

    def _check(self, key: str | None = None) -> None:
        if self.revoked:
            self.denied += 1
            raise AccessDenied(
                f"store {self.name!r}: access denied (the demo revoked it)",
                store=self.name,
                key=key,
            )

    async def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        self._check()
        async for batch in self.inner.list(prefix):
            self._check()
            yield batch

    async def head(self, key: str) -> ObjectInfo:
        self._check(key)
        return await self.inner.head(key)

    async def get(self, key: str, *, start: int = 0, end: int | None = None) -> ObjectReader:
        self._check(key)
        return await self.inner.get(key, start=start, end=end)

    async def put(self, key: str, data: Any, **kwargs: Any) -> PutResult:
        self._check(key)
        return await self.inner.put(key, data, **kwargs)

    async def delete(self, key: str) -> None:
        self._check(key)
        await self.inner.delete(key)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _read(store: Store, key: str) -> bytes:
    reader = await store.get(key)
    return b"".join([bytes(piece) async for piece in reader])


async def read_through_gateway(cfg: Config, primary: str, replica: str, key: str) -> TourRead:
    """Serve ``[primary, replica]`` as bucket ``pemilu``; read ``key``; make the primary refuse;
    read it again. Raises what the reads raise (the tour stops with the message)."""
    from daulat.gateway.runtime import Runtime
    from daulat.gateway.server import serve

    port = _free_port()
    key_id, secret = "DEMO" + secrets.token_hex(8).upper(), secrets.token_urlsafe(24)
    raw = {
        "access_key_id": key_id,
        "secret_access_key": secret,
        "buckets": {BUCKET: {"replicas": [primary, replica]}},
    }
    gcfg = replace(cfg, raw_gateway=raw)
    gw = gateway_config(gcfg, f"127.0.0.1:{port}")
    runtime = Runtime(gcfg, gw)
    refusing = Refusable(open_store(cfg.store(primary)))
    runtime.stores[primary] = refusing  # start() uses it instead of opening the store
    endpoint = f"http://127.0.0.1:{port}"
    client = open_store(
        StoreConfig.model_validate(
            {
                "name": "gateway-client",
                "url": f"s3://{BUCKET}",
                "provider": "self-hosted",
                "country": "ID",
                "endpoint": endpoint,
                "credentials": {"access_key_id": key_id, "secret_access_key": secret},
            }
        )
    )
    task = asyncio.create_task(serve(gcfg, gw, runtime=runtime))
    try:
        for _ in range(200):
            if task.done():
                await task  # raises why it did not start
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.05)
        first = await _read(client, key)
        refusing.revoke()
        again = await _read(client, key)
        return TourRead(
            key,
            len(first),
            hashlib.sha256(first).hexdigest(),
            endpoint,
            hashlib.sha256(again).hexdigest(),
            refusing.denied,
        )
    finally:
        await client.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
