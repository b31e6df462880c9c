"""An in-memory Store for tests: faithful to the Store contracts, except that it holds ANY key.

Real servers refuse or rewrite hostile keys (SeaweedFS refuses ``..`` segments and rewrites
``\\`` and ``//``; see /work/shared/research/local-stores.md), yet an S3 bucket at AWS can hold
them. To test what daulat does when a *source* serves such keys, this store keeps every key
exactly as given: ``../escape``, ``/abs``, ``a//b``, ``nul\\x00``, ``back\\slash``, ``..`` and
segments of any length.

Everything else follows :mod:`daulat.stores.base`: atomic puts with an optional SHA-256 check,
streaming reads and writes, ranged reads, string-prefix listing in batches, idempotent delete,
ETags that change whenever an object is rewritten.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from daulat.errors import IntegrityError, NotFound, StoreError
from daulat.stores.base import Capabilities, ObjectInfo, OnUpload, PutResult

CHUNK = 1024 * 1024
LIST_BATCH = 100


@dataclass(frozen=True)
class _Object:
    data: bytes
    metadata: dict[str, str]
    etag: str
    modified: datetime


class MemoryReader:
    def __init__(self, info: ObjectInfo, metadata: Mapping[str, str], body: bytes) -> None:
        self.info = info
        self.metadata = metadata
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self._body), CHUNK):
            yield self._body[i : i + CHUNK]

    async def read_all(self) -> bytes:
        return b"".join([chunk async for chunk in self])


class MemoryStore:
    """A dict of key → object, serving keys that no real store would accept."""

    _versions = itertools.count(1)

    def __init__(self, name: str = "mem") -> None:
        self._name = name
        self.objects: dict[str, _Object] = {}
        self.closed = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(user_metadata=True, server_side_copy=False)

    def _open(self) -> None:
        if self.closed:
            raise StoreError(f"store {self._name!r} is closed", store=self._name)

    def _info(self, key: str, obj: _Object) -> ObjectInfo:
        return ObjectInfo(
            key=key, size=len(obj.data), modified=obj.modified, etag=obj.etag, etag_scheme="memory"
        )

    def _lookup(self, key: str) -> _Object:
        self._open()
        try:
            return self.objects[key]
        except KeyError:
            raise NotFound(
                f"store {self._name!r}: {key!r} does not exist", store=self._name, key=key
            ) from None

    async def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        self._open()
        keys = sorted(k for k in self.objects if k.startswith(prefix))
        for i in range(0, len(keys), LIST_BATCH):
            batch = [
                self._info(k, self.objects[k])
                for k in keys[i : i + LIST_BATCH]
                if k in self.objects
            ]
            if batch:
                yield batch

    async def head(self, key: str) -> ObjectInfo:
        return self._info(key, self._lookup(key))

    async def get(self, key: str, *, start: int = 0, end: int | None = None) -> MemoryReader:
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"invalid range [{start}, {end})")
        obj = self._lookup(key)
        stop = len(obj.data) if end is None else min(end, len(obj.data))
        return MemoryReader(self._info(key, obj), dict(obj.metadata), obj.data[start:stop])

    async def put(
        self,
        key: str,
        data: bytes | AsyncIterable[bytes],
        *,
        sha256: str | None = None,
        metadata: Mapping[str, str] | None = None,
        prehashed: bool = False,
        on_upload: OnUpload | None = None,
    ) -> PutResult:
        self._open()
        if isinstance(data, (bytes, bytearray, memoryview)):
            body = bytes(data)
        else:
            body = b"".join([bytes(chunk) async for chunk in data])
        digest = hashlib.sha256(body).hexdigest()
        if sha256 is not None and sha256.lower() != digest:
            raise IntegrityError(
                f"content of {key!r} does not match its expected SHA-256; nothing was written "
                f"to {self._name!r}",
                store=self._name,
                key=key,
            )
        etag = f'"{hashlib.md5(body).hexdigest()}-v{next(self._versions)}"'
        self.objects[key] = _Object(body, dict(metadata or {}), etag, datetime.now(UTC))
        return PutResult(key=key, size=len(body), sha256=digest, etag=etag)

    async def delete(self, key: str) -> None:
        self._open()
        self.objects.pop(key, None)

    async def close(self) -> None:
        self.closed = True
