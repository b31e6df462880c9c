"""The one conformance suite: every store kind must pass it unchanged.

Parametrised by the ``make_store`` fixture over the filesystem, S3 (SeaweedFS), Azure Blob
(Azurite) and Google Cloud Storage (fake-gcs-server), all real, and over the encrypting
wrapper (``crypt-*``, see ``make_store`` below). ``tests/test_s3raw.py`` runs them over moto too (S3 keeping every legal
key, as AWS does), except those that read user metadata back: moto's WSGI server drops
``x-amz-meta-`` headers whose names hold ``_``. The contracts are written in :mod:`daulat.stores.base`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import textwrap
import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import obstore.store
import pytest
from conftest import STORE_KINDS, StoreMaker, run, store_maker

from daulat.crypto import load_identities, new_identity
from daulat.errors import IntegrityError, InvalidKey, NotFound, Transient
from daulat.stores import Store
from daulat.stores.crypt import CryptStore
from daulat.transfer.names import NameKey

# The wrappers that change bytes or keys run the suite too: CryptStore over a directory (with
# and without protected names) and over SeaweedFS keeps every contract its inner store keeps.
CRYPT_KINDS = ("crypt-fs", "crypt-fs-names", "crypt-s3")


@pytest.fixture(params=STORE_KINDS + CRYPT_KINDS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreMaker:
    """A factory of fresh, empty stores of one kind, or of a wrapper over one kind (this
    module's own, in place of conftest's)."""
    kind: str = request.param
    if not kind.startswith("crypt-"):
        return store_maker(kind, request, tmp_path)
    make_inner = store_maker(kind.split("-")[1], request, tmp_path)
    key_file = tmp_path / f"{kind}.key"
    new_identity(key_file)
    identity = load_identities(key_file)[0]
    names = NameKey.generate() if kind.endswith("-names") else None

    def make() -> tuple[Store, dict[str, Any]]:
        inner, raw = make_inner()
        store = CryptStore(
            inner, recipients=[identity.recipient], identities=[identity], names=names
        )
        # The memory test re-opens the store in a subprocess: it wraps it alike.
        return store, {**raw, "_crypt": {"identity": str(key_file), "names": names is not None}}

    return make


async def _all_keys(store: Store, prefix: str = "") -> list[str]:
    return sorted([o.key async for batch in store.list(prefix) for o in batch])


async def _chunks(total: int, chunk: int = 1024 * 1024, seed: bytes = b"x") -> AsyncIterator[bytes]:
    block = hashlib.sha256(seed).digest() * (chunk // 32)
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        yield block[:n]
        sent += n


def _expected_sha(total: int, chunk: int = 1024 * 1024, seed: bytes = b"x") -> str:
    h = hashlib.sha256()
    block = hashlib.sha256(seed).digest() * (chunk // 32)
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        h.update(block[:n])
        sent += n
    return h.hexdigest()


def test_round_trip(store: Store) -> None:
    async def go() -> None:
        data = b"daulat \x00\xff" * 1000
        res = await store.put("a/b/c.bin", data, metadata={"sha256": "deadbeef"})
        assert res.size == len(data)
        assert res.sha256 == hashlib.sha256(data).hexdigest()
        info = await store.head("a/b/c.bin")
        assert info.key == "a/b/c.bin" and info.size == len(data)
        reader = await store.get("a/b/c.bin")
        assert await reader.read_all() == data
        assert reader.metadata.get("sha256") == "deadbeef"
        assert reader.info.size == len(data)
        await store.close()

    run(go())


def test_prehashed_put_round_trips(store: Store) -> None:
    """A caller that has just hashed the bytes says so; the object and its result are the same."""

    async def go() -> None:
        data = b"hashed once \x00" * 5000
        digest = hashlib.sha256(data).hexdigest()
        res = await store.put(
            "pre/hashed.bin", data, sha256=digest, metadata={"sha256": digest}, prehashed=True
        )
        assert res.size == len(data) and res.sha256 == digest
        reader = await store.get("pre/hashed.bin")
        assert await reader.read_all() == data
        assert reader.metadata.get("sha256") == digest
        # Without the hash, `prehashed` means nothing: the store hashes the bytes itself.
        res = await store.put("pre/plain.bin", data, prehashed=True)
        assert res.sha256 == digest

    run(go())


def test_put_reports_the_etag_that_head_and_list_report(store: Store) -> None:
    """The engine records a put's ETag and later compares it with listings; they must agree."""

    async def go() -> None:
        whole = await store.put("tag/whole.bin", b"whole body" * 100)
        streamed = await store.put("tag/streamed.bin", _chunks(3 * 1024 * 1024 + 5))
        listed = {o.key: o.etag async for batch in store.list("tag/") for o in batch}
        for res in (whole, streamed):
            assert res.etag is not None
            assert res.etag == (await store.head(res.key)).etag == listed[res.key]
        # A rewrite is a new version: its tag differs and is again what listings show.
        again = await store.put("tag/whole.bin", b"another body")
        assert again.etag != whole.etag
        assert again.etag == (await store.head("tag/whole.bin")).etag

    run(go())


def test_overwrite_replaces_content(store: Store) -> None:
    async def go() -> None:
        await store.put("k", b"first version")
        await store.put("k", b"second")
        assert await (await store.get("k")).read_all() == b"second"
        assert (await store.head("k")).size == 6

    run(go())


def test_zero_length_object(store: Store) -> None:
    async def go() -> None:
        res = await store.put("empty", b"")
        assert res.sha256 == hashlib.sha256(b"").hexdigest()
        assert (await store.head("empty")).size == 0
        assert await (await store.get("empty")).read_all() == b""
        assert await _all_keys(store) == ["empty"]
        # An empty async body is an empty object too.
        await store.put("empty2", _chunks(0))
        assert (await store.head("empty2")).size == 0

    run(go())


def test_ranged_reads(store: Store) -> None:
    async def go() -> None:
        data = bytes(range(256)) * 40  # 10,240 bytes
        await store.put("r", data)

        async def read(start: int, end: int | None) -> bytes:
            return await (await store.get("r", start=start, end=end)).read_all()

        assert await read(0, 10) == data[:10]
        assert await read(100, 1100) == data[100:1100]
        assert await read(5000, None) == data[5000:]
        assert await read(10_000, 20_000) == data[10_000:]  # end past the size is clipped
        assert await read(10_240, None) == b""  # start at the end: empty
        assert await read(50_000, 60_000) == b""  # start past the end: empty
        assert await read(7, 7) == b""
        with pytest.raises(NotFound):
            await store.get("missing", start=0, end=10)

    run(go())


def test_empty_range_reads_info_and_metadata(store: Store) -> None:
    """``get(key, start=0, end=0)`` is a metadata request: no bytes, but the object's info
    and user metadata (adoption after a crash reads proofs this way), also for a streamed
    object and a zero-length one."""

    async def go() -> None:
        await store.put("m/small", b"x" * 100, metadata={"proof": "1s.small"})
        await store.put("m/empty", b"", metadata={"proof": "1s.empty"})
        await store.put("m/large", _chunks(9 * 1024 * 1024), metadata={"proof": "1n.large"})
        for key, size, proof in (
            ("m/small", 100, "1s.small"),
            ("m/empty", 0, "1s.empty"),
            ("m/large", 9 * 1024 * 1024, "1n.large"),
        ):
            reader = await store.get(key, start=0, end=0)
            assert reader.info.size == size, key
            assert reader.info.etag == (await store.head(key)).etag, key
            assert reader.metadata.get("proof") == proof, key
            assert await reader.read_all() == b""
        with pytest.raises(NotFound):
            await store.get("m/missing", start=0, end=0)
        await store.close()

    run(go())


def keys_past_two_pages(store: Store) -> int:
    """Enough keys to cross two of the provider's own listing pages and end in a partial one:
    Azure answers 5,000 keys a page, S3 and GCS 1,000 (what daulat asks for). Each key costs
    a PUT, slow on moto and fake-gcs-server, so the others are not filled to Azure's size."""
    inner = getattr(store, "inner", None)
    return 5_100 if isinstance(inner, obstore.store.AzureStore) else 2_100


def test_listing_paginates_over_5000_keys(store: Store) -> None:
    """Named for Azure's 5,000-key pages; every kind lists past two of its provider's pages."""
    n = keys_past_two_pages(store)

    async def go() -> None:
        sem = asyncio.Semaphore(64)

        async def put(i: int) -> None:
            async with sem:
                await store.put(f"many/{i:05d}.txt", str(i).encode())

        await asyncio.gather(*(put(i) for i in range(n)))
        batches = [batch async for batch in store.list("many/")]
        keys = [o.key for b in batches for o in b]
        assert len(batches) > 1, "a listing this large must arrive in more than one batch"
        assert len(keys) == n and len(set(keys)) == n
        assert sorted(keys) == [f"many/{i:05d}.txt" for i in range(n)]
        assert all(
            o.size == len(o.key.split("/")[1].split(".")[0].lstrip("0") or "0")
            for b in batches
            for o in b
        )

    run(go())


def test_prefix_listing_is_a_string_prefix(store: Store) -> None:
    async def go() -> None:
        for key in ["f00001.bin", "f/x", "g", "dir/a", "dir/b/c", "dira", "di"]:
            await store.put(key, b"1")
        assert await _all_keys(store, "f") == ["f/x", "f00001.bin"]
        assert await _all_keys(store, "dir/") == ["dir/a", "dir/b/c"]
        assert await _all_keys(store, "dir") == ["dir/a", "dir/b/c", "dira"]
        assert await _all_keys(store, "dir/b/") == ["dir/b/c"]
        assert await _all_keys(store, "nothing") == []
        assert len(await _all_keys(store)) == 7

    run(go())


ODD_KEYS = [
    "with space/and more spaces.txt",
    "percent%20literal%2F.txt",
    "unicode/Indonésia/日本語/عربى.txt",
    unicodedata.normalize("NFC", "norm/café"),
    unicodedata.normalize("NFD", "norm/café"),
    "emoji/🗳️ ballot 😀.json",
    "hash#1",
    "plus+and&amp=eq;semi,comma'quote\"",
    "brackets[1](2){3}!@$^~`",
    "tab-like but not\u00a0nbsp",
]


def test_odd_keys_round_trip_exactly(store: Store) -> None:
    async def go() -> None:
        for i, key in enumerate(ODD_KEYS):
            await store.put(key, f"content {i}".encode())
        assert await _all_keys(store) == sorted(ODD_KEYS)
        for i, key in enumerate(ODD_KEYS):
            assert await (await store.get(key)).read_all() == f"content {i}".encode()
            assert (await store.head(key)).size == len(f"content {i}")

    run(go())


NON_PORTABLE_KEYS = [
    "../escape",
    "a/../../b",
    "/absolute",
    "a//b",
    "trailing/",
    "nul\x00byte",
    ".",
    "a/./b",
    "",
    "lone\udcffsurrogate",
]


@pytest.mark.parametrize("key", NON_PORTABLE_KEYS)
def test_non_portable_keys_are_refused_or_kept_exactly(store: Store, key: str) -> None:
    """A store that cannot hold such a key exactly refuses it and writes nothing, and refuses
    it alike when asked to read or delete it (never "does not exist", never a silent delete:
    either would hide an attack string or a typo); one that can (S3 as AWS and moto keep it)
    lists and reads it back under exactly that key. Never a rename."""

    async def go() -> None:
        try:
            await store.put(key, b"payload")
        except InvalidKey:
            assert await _all_keys(store) == []
            if key.endswith("/"):
                # SeaweedFS keeps an empty folder marker 'dir/' and refuses only a non-empty
                # one: an object may have this key, so a read of it may say NotFound.
                return
            with pytest.raises(InvalidKey):
                await store.head(key)
            with pytest.raises(InvalidKey):
                await store.get(key)
            with pytest.raises(InvalidKey):
                await store.delete(key)
            return
        assert await _all_keys(store) == [key]
        assert await (await store.get(key)).read_all() == b"payload"
        await store.delete(key)
        assert await _all_keys(store) == []

    run(go())


@pytest.mark.parametrize("prefix", ["../", "/", "a//", "./", "nul\x00", "lone\udcff"])
def test_a_prefix_no_writable_key_starts_with_is_refused_by_list(store: Store, prefix: str) -> None:
    """Listing follows the key rule: where the store refuses to write under a prefix, listing
    that prefix raises InvalidKey rather than answering "nothing there"; where it writes, the
    listing finds what it wrote."""

    async def go() -> None:
        await store.put("plain", b"1")
        try:
            await store.put(prefix + "x", b"payload")
        except InvalidKey:
            with pytest.raises(InvalidKey):
                await _all_keys(store, prefix)
            return
        assert await _all_keys(store, prefix) == [prefix + "x"]

    run(go())


def test_missing_key_is_not_found(store: Store) -> None:
    async def go() -> None:
        with pytest.raises(NotFound):
            await store.head("no/such/key")
        with pytest.raises(NotFound):
            await store.get("no/such/key")

    run(go())


def test_delete_is_idempotent(store: Store) -> None:
    async def go() -> None:
        await store.put("d/x", b"1")
        await store.delete("d/x")
        await store.delete("d/x")
        await store.delete("never/existed")
        with pytest.raises(NotFound):
            await store.head("d/x")
        assert await _all_keys(store) == []

    run(go())


@pytest.mark.parametrize("size", [1000, 20 * 1024 * 1024], ids=["single-put", "multipart"])
def test_wrong_hash_fails_and_leaves_nothing(store: Store, size: int) -> None:
    async def go() -> None:
        wrong = hashlib.sha256(b"something else").hexdigest()
        with pytest.raises(IntegrityError):
            await store.put("bad", _chunks(size), sha256=wrong)
        with pytest.raises(NotFound):
            await store.head("bad")
        assert await _all_keys(store) == []
        # An earlier version under the key survives a failed overwrite untouched.
        await store.put("bad", b"good old content")
        with pytest.raises(IntegrityError):
            await store.put("bad", _chunks(size), sha256=wrong)
        assert await (await store.get("bad")).read_all() == b"good old content"
        # The right hash is accepted.
        res = await store.put("good", _chunks(size), sha256=_expected_sha(size))
        assert res.size == size and res.sha256 == _expected_sha(size)

    run(go())


@pytest.mark.parametrize("size", [1000, 20 * 1024 * 1024], ids=["single-put", "multipart"])
def test_failing_body_leaves_nothing_and_its_error_escapes(store: Store, size: int) -> None:
    """A body that fails at its very end (a source found changed once read) leaves nothing under
    the key, and its own error comes out of the put unchanged: a Transient must stay Transient so
    that the engine reads the object again instead of giving up on it."""

    async def torn() -> AsyncIterator[bytes]:
        async for chunk in _chunks(size):
            yield chunk
        raise Transient("the source changed while it was read", store="src", key="torn")

    async def go() -> None:
        with pytest.raises(Transient, match="changed while it was read"):
            await store.put("torn", torn())
        with pytest.raises(NotFound):
            await store.head("torn")
        assert await _all_keys(store) == []
        await store.put("torn", b"the whole earlier version")
        with pytest.raises(Transient):
            await store.put("torn", torn())
        assert await (await store.get("torn")).read_all() == b"the whole earlier version"
        assert await _all_keys(store) == ["torn"]

    run(go())


@pytest.mark.parametrize("size", [1000, 20 * 1024 * 1024], ids=["single-put", "multipart"])
def test_a_put_commits_only_when_its_body_ends(store: Store, size: int) -> None:
    """Until the body's end is taken, readers see the earlier version and the listing holds
    nothing new: every byte may have been handed to a store while the writer can still decide
    that the object must not be made (the gateway gives a replica the end of a write only once
    the primary took it, and else raises from the body: see the test above)."""

    async def go() -> None:
        await store.put("late", b"the earlier version")
        await store.put("other", b"x")
        seen: list[object] = []

        async def body() -> AsyncIterator[bytes]:
            async for chunk in _chunks(size):
                yield chunk
            await asyncio.sleep(0.3)  # room for anything the store would do unasked
            seen.append(await (await store.get("late")).read_all())
            seen.append(await _all_keys(store))

        res = await store.put("late", body())
        assert seen == [b"the earlier version", ["late", "other"]]
        assert res.sha256 == _expected_sha(size)
        assert (await store.head("late")).size == size

    run(go())


LARGE = 96 * 1024 * 1024

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import asyncio, hashlib, json, resource, sys
    from pathlib import Path
    from daulat.config import load_config
    from daulat.stores import open_store

    SIZE = int(sys.argv[2])
    CRYPT = json.loads(sys.argv[3])

    async def body():
        block = hashlib.sha256(b"big").digest() * (1024 * 1024 // 32)
        sent = 0
        while sent < SIZE:
            n = min(len(block), SIZE - sent)
            yield block[:n]
            sent += n

    def rss():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    async def main():
        cfg = load_config(Path(sys.argv[1]))
        store = open_store(next(iter(cfg.stores.values())))
        if CRYPT:
            from daulat.crypto import load_identities
            from daulat.stores.crypt import CryptStore
            from daulat.transfer.names import NameKey

            ids = load_identities(CRYPT["identity"])
            names = NameKey.generate() if CRYPT["names"] else None
            store = CryptStore(
                store, recipients=[ids[0].recipient], identities=ids, names=names
            )
        await store.put("tiny", b"warm up the client")
        await (await store.get("tiny")).read_all()
        base = rss()
        put = await store.put("big.bin", body())
        h = hashlib.sha256()
        got = 0
        async for chunk in await store.get("big.bin"):
            h.update(chunk)
            got += len(chunk)
        await store.close()
        print(json.dumps({"base": base, "peak": rss(), "put_sha": put.sha256,
                          "get_sha": h.hexdigest(), "size": got}))

    asyncio.run(main())
    """
)


def test_large_object_streams_in_bounded_memory(make_store: StoreMaker, tmp_path: Path) -> None:
    _store, raw = make_store()
    crypt = raw.pop("_crypt", None)
    config = tmp_path / "daulat.toml"
    config.write_text(_toml_store(raw))
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(config), str(LARGE), json.dumps(crypt)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["size"] == LARGE
    assert out["put_sha"] == out["get_sha"] == _expected_sha(LARGE, seed=b"big")
    growth = out["peak"] - out["base"]
    assert growth < LARGE // 3, f"peak RSS grew by {growth / 2**20:.0f} MiB for a 96 MiB object"


def _toml_store(raw: dict[str, object]) -> str:
    name = raw["name"]
    lines = [f"[stores.{name}]"]
    creds = raw.get("credentials")
    for k, v in raw.items():
        if k in ("name", "credentials"):
            continue
        lines.append(f"{k} = {json.dumps(v)}")
    if isinstance(creds, dict):
        lines.append(f"[stores.{name}.credentials]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in creds.items()]
    return "\n".join(lines) + "\n"
