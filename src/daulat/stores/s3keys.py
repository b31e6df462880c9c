"""Key fidelity of :class:`~daulat.stores.s3raw.S3Raw`: which kinds of unusual key (a leading
``/``, ``//``, ``.``/``..`` segments, backslashes, control characters) the server keeps exactly,
learnt once by a probe under ``.daulat/keyprobe-*``, so that a key the server would rewrite is
refused before anything is written, and a written one is checked in the listing.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

from daulat.errors import (
    AccessDenied,
    InvalidKey,
    StoreError,
    Transient,
)
from daulat.stores.base import MAX_KEY_BYTES
from daulat.stores.keys import invalid_key
from daulat.stores.s3base import _KINDS, _PROBE_BODY, PROBE_DIR, _KeyKind, _sha256_hex
from daulat.stores.s3listing import S3Listing


def _unkept(kind: _KeyKind) -> str:
    return f"the server refuses or rewrites keys with {kind.what} (found by a probe)"


class S3KeyFidelity(S3Listing):
    """The key probes and checks of :class:`~daulat.stores.s3raw.S3Raw`."""

    def _unkept_kind(self, full: str) -> _KeyKind | None:
        if self._kinds is None:
            return None
        for kind in _KINDS:
            if kind.matches(full) and not self._kinds.get(kind.name, True):
                return kind
        return None

    def _check_known_kinds(self, full: str, key: str) -> None:
        """Reads: a key of a kind the server is known to rewrite would read another object, and
        is refused as its put is (:mod:`daulat.stores.keys`)."""
        kind = self._unkept_kind(full) if self.verify_keys else None
        if kind is not None:
            raise invalid_key(self.name, key, _unkept(kind))

    def read_key_problem(self, key: str) -> str | None:
        """Why this store can hold no object under ``key`` (the rule of every read and of
        listing prefixes), or None. Kinds of key the server rewrites count once a probe has
        found them; reads never probe (a probe writes)."""
        if not key:
            return "empty key"
        full = self._list_prefix(key)
        try:
            size = len(full.encode("utf-8"))
        except UnicodeEncodeError:
            return "not valid UTF-8"
        if size > MAX_KEY_BYTES:
            return f"longer than {MAX_KEY_BYTES} bytes with the store's prefix"
        kind = self._unkept_kind(full) if self.verify_keys else None
        return None if kind is None else _unkept(kind)

    async def _check_kinds(self, full: str, key: str) -> None:
        if not self.verify_keys or not any(kind.matches(full) for kind in _KINDS):
            return
        await self._probe()
        kind = self._unkept_kind(full)
        if kind is not None:
            raise InvalidKey(
                f"store {self.name!r} cannot hold key {key!r}: {_unkept(kind)}, so nothing was "
                "written",
                store=self.name,
                key=key,
            )

    async def key_kinds(self) -> dict[str, bool]:
        """Which kinds of unusual key this server keeps exactly (probing it once)."""
        await self._probe()
        assert self._kinds is not None
        return dict(self._kinds)

    async def _probe(self) -> None:
        """Write one tiny object per kind of unusual key, see which are listed exactly as
        written, and delete whatever the probes left (all under a random directory)."""
        if self._kinds is not None:
            return
        loop = asyncio.get_running_loop()
        if self._probe_lock is None or self._probe_lock[0] is not loop:
            self._probe_lock = (loop, asyncio.Lock())
        async with self._probe_lock[1]:
            if self._kinds is not None:
                return
            directory = self._list_prefix(PROBE_DIR + secrets.token_hex(8) + "/")
            keys: dict[str, str] = {}
            for kind in _KINDS:
                if kind.name == "leading":
                    if self.prefix:
                        continue  # a store key cannot start the bucket key with '/'
                    keys[kind.name] = "/" + directory + "leading"
                else:
                    keys[kind.name] = directory + kind.probe
            refused: dict[str, StoreError | None] = {}
            try:
                # One after the other: SeaweedFS takes ~1 s when parallel PUTs create the
                # same new directory, and 7 small PUTs in a row take ~30 ms.
                for name, full in keys.items():
                    try:
                        await self._probe_put(full)
                        refused[name] = None
                    except Transient:
                        raise
                    except StoreError as exc:
                        refused[name] = exc
                denied = [e for e in refused.values() if isinstance(e, AccessDenied)]
                if len(denied) == len(refused):
                    raise denied[0]  # no write access at all, not a property of keys
                # A single refusal (a proxy that answers 403 to '..') only means that kind
                # of key cannot be written here.
                found = await self._probe_listing(directory)
                if "leading" in keys:
                    found |= await self._probe_listing("/" + directory)
            finally:
                await self._probe_cleanup(directory)
            self._kinds = {
                name: refused[name] is None and found.get(full) == len(_PROBE_BODY)
                for name, full in keys.items()
            }

    async def _probe_put(self, full: str) -> None:
        body = _PROBE_BODY
        await self._call(
            "probe",
            full,
            "put_object",
            Key=full,
            Body=body,
            **self._checksum_params(body, _sha256_hex(body)),
        )

    async def _probe_listing(self, full_prefix: str) -> dict[str, int]:
        found: dict[str, int] = {}
        token: tuple[str, str] | None = None
        while True:
            batch, token = await self._list_page(full_prefix, token, bucket_keys=True)
            found.update((o.key, o.size) for o in batch)
            if token is None:
                return found

    async def _probe_cleanup(self, directory: str) -> None:
        with contextlib.suppress(StoreError):
            found = await self._probe_listing(directory)
            if not self.prefix:
                found |= await self._probe_listing("/" + directory)
            for full in found:
                await self._delete_full(full, full)

    async def _verify_written(self, key: str, full: str, size: int) -> None:
        """After writing an unusual key: is it listed under exactly that key, at that size?"""
        batch, _ = await self._list_page(full, None, max_keys=1, bucket_keys=True)
        listed = {o.key: o.size for o in batch}
        if listed.get(full) == size:
            return
        if full in listed:  # kept the name, not the content (SeaweedFS: 'dir/' markers)
            await self._delete_full(full, key)
        raise InvalidKey(
            f"store {self.name!r} cannot hold key {key!r}: the server accepted it but does not "
            "list it as written (it may have stored it under another name)",
            store=self.name,
            key=key,
        )
