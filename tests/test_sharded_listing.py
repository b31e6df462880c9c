"""Sharded listing (daulat.census.sharded): the same objects as one listing, each exactly once.

Against real servers: SeaweedFS (100,000 objects and the hostile keys it keeps, by prefixes as
daulat lists it, and by key ranges where its order allows), moto (every legal S3 key, ``..``,
``//``, NUL and 1,024-byte keys included, by ranges and by prefixes) and Azurite (by prefixes).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from conftest import azure_store_config, fs_store_config, run, s3_store_config
from servers import AzuriteServer, MotoServer, S3Server

from daulat.census.sharded import ListingMode, ListingStats, midpoint, resolve_mode, sharded_list
from daulat.config import StoreConfig
from daulat.errors import StoreError
from daulat.inventory import Manifest, scan_store
from daulat.stores import ObjectInfo, Store, open_store

# Every kind of legal S3 key (tests/test_s3raw.py's hostile set): moto keeps them all but
# CR/LF (its HTTP layer answers 404; SeaweedFS keeps those, and is tested with them below).
HOSTILE_KEYS = [
    "../escape",
    "a/../../b",
    "a//b",
    "/abs.txt",
    "//double-leading",
    "trailing/",
    "back\\slash",
    "nul\x00byte",
    "ctl\x01\x1f\x7f-chars",
    "tab\there",
    ".",
    "..",
    "a/./b",
    unicodedata.normalize("NFC", "norm/café"),
    unicodedata.normalize("NFD", "norm/café"),
    "emoji/🗳️ ballot 😀",
    "percent%2Fliteral%00%zz",
    "sp ace+plus&amp=eq?q#frag~tilde",
    "k" * 1024,
    "<xml>&amp;\"quote'",
    "a-c",  # sorts before "a/..." in binary order, after it in a directory walk
    "a0",
    "x\uffff",
    "x\U0001f600",
]
# What SeaweedFS keeps exactly (tests/test_s3raw.py measures it), plus a 1,024-byte key in
# segments a filer holds, and names that sort differently in a tree walk and in binary order.
LONG = "/".join(["k" * 200] * 5) + "/" + "z" * 19
assert len(LONG.encode()) == 1024
SEAWEEDFS_HOSTILE = [
    "ctl\x01\x1f\x7f-chars",
    "new\nline\rreturn\ttab",
    unicodedata.normalize("NFC", "norm/café"),
    unicodedata.normalize("NFD", "norm/café"),
    "emoji/🗳️ ballot 😀",
    "percent%2Fliteral%00%zz",
    "sp ace+plus&amp=eq?q#frag~tilde",
    "<xml>&amp;\"quote'",
    LONG,
    "d07-sibling",
    "d07.dot",
    "x\uffff",
    "x\U0001f600",
]
_n = itertools.count()


def _cfg(raw: dict[str, Any]) -> StoreConfig:
    return StoreConfig.model_validate(raw)


async def _collect(pages: Any) -> list[str]:
    return [o.key for batch in [b async for b in pages] for o in batch]


async def _single(store: Store, prefix: str = "") -> list[str]:
    return await _collect(store.list(prefix))


async def _sharded(store: Store, prefix: str = "", **kw: Any) -> tuple[list[str], ListingStats]:
    stats = ListingStats()
    keys = await _collect(sharded_list(store, prefix, stats=stats, **kw))
    return keys, stats


def _assert_exact(sharded: list[str], single: list[str]) -> None:
    """The same multiset of keys: nothing lost, nothing listed twice."""
    assert len(sharded) == len(set(sharded)), "a key was listed twice"
    assert sorted(sharded) == sorted(single)


# ------------------------------------------------------------------------------ the cut


def test_midpoint_lies_strictly_between() -> None:
    rng = random.Random(7)
    alphabet = "ab/-.0~\x00\x01\u00e9\uffff\U0001f600"
    for _ in range(3000):
        a = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
        b = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
        lo, hi = min(a, b), max(a, b)
        for top in (hi, None):
            cut = midpoint(lo, top)
            if cut is None:
                assert top is not None
                continue
            assert lo < cut and (top is None or cut < top)
            assert not any(0xD800 <= ord(c) <= 0xDFFF for c in cut)
    assert midpoint("a", "a\x00") is None  # nothing lies between a string and its successor
    assert midpoint("d00/obj000999", "d99/") is not None


def test_mode_follows_the_provider(tmp_path: Path) -> None:
    """Ranges only where the provider documents binary key order; prefixes for other S3
    servers and Azure; one listing for the filesystem."""
    s3 = {"url": "s3://b", "endpoint": "http://127.0.0.1:9", "region": "us-east-1"}
    aws = open_store(_cfg({"name": "aws", "provider": "aws", **s3}))
    weed = open_store(_cfg({"name": "w", "provider": "self-hosted", "country": "ID", **s3}))
    az = open_store(
        _cfg(
            {
                "name": "az",
                "url": "az://c",
                "provider": "azure",
                "region": "indonesiacentral",
                "endpoint": "http://127.0.0.1:9/acct",
                "credentials": {"account_name": "acct", "account_key": "a2V5"},
            }
        )
    )
    (tmp_path / "fs").mkdir()
    fs = open_store(_cfg(fs_store_config(tmp_path / "fs", "fs")))
    assert resolve_mode(aws, 8) is ListingMode.RANGES
    assert resolve_mode(weed, 8) is ListingMode.PREFIXES
    assert resolve_mode(az, 8) is ListingMode.PREFIXES
    assert resolve_mode(fs, 8) is ListingMode.SINGLE
    assert resolve_mode(aws, 1) is ListingMode.SINGLE
    with pytest.raises(StoreError):
        resolve_mode(fs, 8, ListingMode.RANGES)

    async def close() -> None:
        for s in (aws, weed, az, fs):
            await s.close()

    run(close())


# ------------------------------------------------------------------------------ moto: every key


def test_every_legal_key_once_by_ranges_and_by_prefixes_on_moto(moto_server: MotoServer) -> None:
    """moto lists in binary order as AWS does and keeps ``..``, ``//``, NUL and 1,024-byte
    keys: both ways of sharding give exactly the single listing, under a prefix too."""
    n = next(_n)
    store = open_store(_cfg(s3_store_config(moto_server, f"moto-shard{n}", f"moto-shard{n}")))
    # Pages of 50 keys (moto answers slowly): many pages per shard with few objects.
    store.raw.list_page = 50  # type: ignore[attr-defined]
    keys = [
        *HOSTILE_KEYS,
        *(f"p{i % 13:02d}/{'deep/' * (i % 3)}o{i:05d}" for i in range(600)),
        *(f"flat{i:05d}" for i in range(600)),
    ]

    async def go() -> None:
        sem = asyncio.Semaphore(32)

        async def put(key: str) -> None:
            async with sem:
                await store.put(key, b"x")

        await asyncio.gather(*(put(k) for k in keys))
        single = await _single(store)
        assert sorted(single) == sorted(keys)
        for mode in (ListingMode.RANGES, ListingMode.PREFIXES):
            for shards in (2, 8):
                got, stats = await _sharded(store, shards=shards, mode=mode)
                _assert_exact(got, single)
                assert stats.mode is mode
            if mode is ListingMode.RANGES:
                assert stats.shards > 1 and stats.splits > 0  # the work was really shared
            for prefix in ("a/", "p07/", "flat0", "nothing-here/"):
                got, _ = await _sharded(store, prefix, shards=8, mode=mode)
                _assert_exact(got, await _single(store, prefix))
        await store.close()

    run(go())


# ------------------------------------------------------------------------------ SeaweedFS


def _fill(server: S3Server, bucket: str, keys: list[str], concurrency: int = 96) -> None:
    """Empty objects, fast: obstore straight at the server (portable keys only)."""
    import obstore
    from obstore.store import S3Store

    async def go() -> None:
        store = S3Store(
            bucket,
            config={
                "endpoint": server.endpoint,
                "region": server.region,
                "access_key_id": server.access_key_id,
                "secret_access_key": server.secret_access_key,
                "virtual_hosted_style_request": False,
            },
            client_options={"allow_http": True},
        )
        todo = iter(keys)

        async def worker() -> None:
            for key in todo:
                await obstore.put_async(store, key, b"")

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    asyncio.run(go())


def _bookkeeping(key: str) -> bool:
    return key.startswith(".daulat/")


def _seaweed_keys(n: int) -> list[str]:
    # Three shapes at once: 100 "directories", a flat run at the root, and a deep chain.
    nested = n * 6 // 10
    flat = n * 3 // 10
    deep = n - nested - flat
    return [
        *(f"d{i % 100:02d}/obj{i:06d}" for i in range(nested)),
        *(f"f{i:06d}" for i in range(flat)),
        *(f"deep/a/b/c/{i % 7}/obj{i:06d}" for i in range(deep)),
    ]


@pytest.mark.timeout(900)
def test_100k_objects_and_hostile_keys_listed_exactly_on_seaweedfs(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """100,000 objects and the hostile keys SeaweedFS keeps: the sharded listing (by
    prefixes, as daulat lists a server of unknown make) equals one listing, with 8 and 64
    shards; a sharded scan records exactly what the single listing reported."""
    bucket = f"shard100k{os.getpid() % 1000}"
    raw = s3_store_config(s3_server, "weed", bucket)
    keys = _seaweed_keys(100_000)
    started = time.monotonic()
    _fill(s3_server, bucket, keys)
    store = open_store(_cfg(raw))

    async def go() -> None:
        for key in SEAWEEDFS_HOSTILE:
            await store.put(key, b"hostile")
        # Putting a key S3 clients cannot address probes the server under .daulat/, and
        # SeaweedFS removes the probe's emptied "directories" in its own time: those come
        # and go between listings, and a scan leaves .daulat/ out anyway.
        single = [o async for batch in store.list() for o in batch if not _bookkeeping(o.key)]
        single_keys = [o.key for o in single]
        assert sorted(single_keys) == sorted([*keys, *SEAWEEDFS_HOSTILE])
        for shards in (8, 64):
            got, stats = await _sharded(store, shards=shards)
            assert stats.mode is ListingMode.PREFIXES and stats.level_tasks > 1
            _assert_exact([k for k in got if not _bookkeeping(k)], single_keys)
        # Forcing key ranges on a server that lists in tree order fails loudly, never loses
        # keys silently ("d07-sibling" sorts before "d07/..." in binary order only).
        with pytest.raises(StoreError, match="not in binary key order"):
            await _sharded(store, shards=8, mode=ListingMode.RANGES)
        # A sharded scan into the manifest records what the single listing reported.
        with Manifest(tmp_path / "m.sqlite") as manifest:
            summary = await scan_store(store, manifest, shards=8)
            assert summary.objects == len(single) == summary.added
            rows = [(r.key, r.size, r.etag) for r in manifest.objects(store.name)]
        assert rows == sorted((o.key, o.size, o.etag) for o in single)
        await store.close()

    run(go())
    print(f"100k test: {time.monotonic() - started:.0f} s")


def test_key_ranges_exact_where_seaweedfs_order_is_binary(s3_server: S3Server) -> None:
    """Within one level (no '/'), SeaweedFS lists in binary order: key ranges with work
    stealing, forced, list exactly what one listing does, Unicode at the top of the range
    included."""
    bucket = f"shardflat{os.getpid() % 1000}"
    raw = s3_store_config(s3_server, "flat", bucket)
    keys = [f"k{i:05d}" for i in range(6000)] + ["x\uffff", "x\U0001f600", "zé", "é", "~"]
    _fill(s3_server, bucket, keys)
    store = open_store(_cfg(raw))

    async def go() -> None:
        single = await _single(store)
        assert sorted(single) == sorted(keys)
        got, stats = await _sharded(store, shards=8, mode=ListingMode.RANGES)
        _assert_exact(got, single)
        assert stats.splits > 0
        await store.close()

    run(go())


def test_sharded_scan_stops_cleanly_when_the_store_fails(s3_server: S3Server) -> None:
    """A listing that fails part-way fails the sharded listing (no partial success): the
    error reaches the caller and no shard is left running."""
    bucket = f"shardfail{os.getpid() % 1000}"
    raw = s3_store_config(s3_server, "fail", bucket)
    _fill(s3_server, bucket, [f"d{i % 10}/o{i}" for i in range(300)])
    store = open_store(_cfg(raw))
    calls = 0
    original = store.list  # type: ignore[attr-defined]

    def failing(prefix: str = "") -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise StoreError("store 'fail': list refused (injected)", store="fail")
        return original(prefix)

    store.list = failing  # type: ignore[method-assign]

    async def go() -> None:
        with pytest.raises(StoreError, match="injected"):
            await _sharded(store, shards=2, mode=ListingMode.PREFIXES)
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert pending == []
        await store.close()

    run(go())


# ------------------------------------------------------------------------------ Azurite


def test_prefix_shards_on_azurite(azurite_server: AzuriteServer) -> None:
    n = next(_n)
    store = open_store(_cfg(azure_store_config(azurite_server, f"az{n}", f"shard{n}")))
    keys = [
        *(f"c{i % 9}/{'x/' * (i % 2)}b{i:04d}" for i in range(600)),
        *(f"top{i:03d}" for i in range(150)),
        "c1-sibling",
        "emoji/🗳️ ballot 😀",
        "sp ace+plus&amp=eq?q#frag~tilde",
    ]

    async def go() -> None:
        sem = asyncio.Semaphore(16)

        async def put(key: str) -> None:
            async with sem:
                await store.put(key, b"x")

        await asyncio.gather(*(put(k) for k in keys))
        single = await _single(store)
        assert sorted(single) == sorted(keys)
        got, stats = await _sharded(store, shards=8)
        assert stats.mode is ListingMode.PREFIXES
        _assert_exact(got, single)
        await store.close()

    run(go())


def test_batches_are_object_infos(moto_server: MotoServer) -> None:
    n = next(_n)
    store = open_store(_cfg(s3_store_config(moto_server, f"moto-i{n}", f"moto-i{n}")))

    async def go() -> None:
        await store.put("a/b", b"123")
        got = [o async for b in sharded_list(store, shards=4) for o in b]
        assert len(got) == 1 and isinstance(got[0], ObjectInfo) and got[0].size == 3
        await store.close()

    run(go())


def test_scan_shards_option_records_the_same_scan(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`daulat scan --shards 1` and `--shards 16` record the same objects; the second,
    a re-scan, finds nothing added, changed or removed."""
    from daulat.cli import run as cli

    bucket = f"shardcli{os.getpid() % 1000}"
    raw = s3_store_config(s3_server, "weed", bucket)
    _fill(s3_server, bucket, [f"d{i % 17}/{'x/' * (i % 3)}o{i:04d}" for i in range(1500)])
    creds = raw["credentials"]
    (tmp_path / "daulat.toml").write_text(
        f'[stores.weed]\nurl = "{raw["url"]}"\nprovider = "self-hosted"\ncountry = "ID"\n'
        f'endpoint = "{raw["endpoint"]}"\n'
        f'credentials = {{ access_key_id = "{creds["access_key_id"]}", '
        f'secret_access_key = "{creds["secret_access_key"]}" }}\n'
    )
    monkeypatch.chdir(tmp_path)
    assert cli(["scan", "weed", "--shards", "1", "--json", "--quiet"]) == 0
    with Manifest(tmp_path / ".daulat" / "manifest.sqlite") as m:
        first = [(r.key, r.size, r.etag) for r in m.objects("weed")]
    assert len(first) == 1500
    assert cli(["scan", "weed", "--shards", "16", "--quiet"]) == 0
    with Manifest(tmp_path / ".daulat" / "manifest.sqlite") as m:
        assert [(r.key, r.size, r.etag) for r in m.objects("weed")] == first
        last = m.last_scan("weed")
    assert last is not None and (last.added, last.changed, last.removed) == (0, 0, 0)
    assert cli(["scan", "weed", "--shards", "0"]) == 2
