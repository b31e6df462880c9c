"""A store wrapping a store, written once: :class:`ForwardingStore`.

Cross-cutting behaviour (retries, fault injection in tests, a read-only or timed view, a
refusal on cue, encryption) is a Store-to-Store wrapper. Each such wrapper subclasses
:class:`ForwardingStore` and overrides only the calls it changes; every other call of the
:class:`~daulat.stores.base.Store` protocol goes to ``inner`` unchanged.

Optional abilities (:mod:`daulat.stores.abilities`: server-side copy, upload cleanup,
resumable uploads, removal of temp files) are not methods of the wrapper: a run-time protocol
check would then see an ability the inner store may lack. They are found *through* the
wrapper instead: the finders walk ``inner`` (:func:`layers`). A wrapper that changes keys or
bytes names in :attr:`ForwardingStore.hides` the abilities that would bypass it (a
server-side copy of ciphertext, a resumed upload of plaintext parts): the finders stop there.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterator, Mapping
from typing import ClassVar

from daulat.stores.base import Capabilities, ObjectInfo, ObjectReader, OnUpload, PutResult, Store

__all__ = ["MAX_DEPTH", "ForwardingStore", "layers"]

#: How many wrappers deep the finders look (a wrapper chain is two or three long).
MAX_DEPTH = 16


class ForwardingStore:
    """A :class:`~daulat.stores.base.Store` that forwards every call to ``inner``.

    Subclasses override what they change. ``name`` and ``capabilities`` are the inner
    store's; ``close`` closes it (a view that must not close it overrides ``close``)."""

    #: The ability protocols (from :mod:`daulat.stores.abilities`) that finders must not look
    #: for below this wrapper, because using them on ``inner`` would bypass what it does.
    hides: ClassVar[tuple[type, ...]] = ()

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        return self.inner.list(prefix)

    async def head(self, key: str) -> ObjectInfo:
        return await self.inner.head(key)

    async def get(self, key: str, *, start: int = 0, end: int | None = None) -> ObjectReader:
        return await self.inner.get(key, start=start, end=end)

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
        return await self.inner.put(
            key, data, sha256=sha256, metadata=metadata, prehashed=prehashed, on_upload=on_upload
        )

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def close(self) -> None:
        await self.inner.close()


def layers(store: object, ability: type | None = None) -> Iterator[object]:
    """``store`` and the stores it wraps (their ``inner``), outermost first.

    With ``ability``, the walk ends at the first wrapper that hides it (see
    :attr:`ForwardingStore.hides`): that wrapper is yielded (it may offer the ability itself,
    translated), the stores below it are not."""
    current: object = store
    for _ in range(MAX_DEPTH):
        if current is None:
            return
        yield current
        if ability is not None and ability in getattr(current, "hides", ()):
            return
        current = getattr(current, "inner", None)
