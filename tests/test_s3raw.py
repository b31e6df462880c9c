"""S3Raw and FallbackS3Store: every legal S3 key, copied faithfully.

Two servers, for two reasons:

* ``tests/s3fake.py`` keeps *any* key as sent and checks every SigV4 signature, so it proves
  that hostile keys (``../escape``, ``a//b``, ``/abs.txt``, NUL, NFC/NFD twins, 1,024 bytes ...)
  are sent, listed and read back byte for byte, and that the signing of such keys is right;
* SeaweedFS (the session's ``s3_server``), a real server, proves that the signer works outside
  our own fake and shows what a real server does with such keys: it refuses some and silently
  rewrites others, which daulat must turn into a per-object refusal, never a rename.

The Store contracts: the shared conformance suite's test functions are imported below and run
here against a FallbackS3Store over SeaweedFS (the ``store`` fixture of this module overrides
the shared, parametrised one), unchanged, and over the fake server too. moto (server mode) is a
third server: it keeps every legal key as AWS does, so the keys SeaweedFS refuses are proven
to round-trip there.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, ClassVar

import pytest
from conformance import test_store_contract as contract
from conformance.test_store_contract import (
    test_delete_is_idempotent,
    test_missing_key_is_not_found,
    test_non_portable_keys_are_refused_or_kept_exactly,
    test_odd_keys_round_trip_exactly,
    test_overwrite_replaces_content,
    test_prefix_listing_is_a_string_prefix,
    test_ranged_reads,
    test_round_trip,
    test_wrong_hash_fails_and_leaves_nothing,
    test_zero_length_object,
)
from conftest import run, s3_store_config
from s3fake import FakeS3, s3fake
from servers import MotoServer, S3Server

from daulat.config import StoreConfig
from daulat.errors import (
    AccessDenied,
    IntegrityError,
    InvalidKey,
    NotFound,
    StoreError,
    Transient,
    Unsupported,
)
from daulat.stores import s3multipart
from daulat.stores import s3raw as s3raw_module
from daulat.stores.base import PutResult, Store
from daulat.stores.hashing import StreamHasher, hashed, hashed_by
from daulat.stores.resumable import ResumeStats
from daulat.stores.s3 import open_s3
from daulat.stores.s3raw import (
    FallbackS3Store,
    S3Credentials,
    S3Raw,
    _parse_contents,
    _parse_timestamp,
    open_fallback_s3,
    unwrap_fallback,
)

# The contract functions run here against FallbackS3Store over SeaweedFS (see the docstring).
__all__ = [
    "test_delete_is_idempotent",
    "test_missing_key_is_not_found",
    "test_non_portable_keys_are_refused_or_kept_exactly",
    "test_odd_keys_round_trip_exactly",
    "test_overwrite_replaces_content",
    "test_prefix_listing_is_a_string_prefix",
    "test_ranged_reads",
    "test_round_trip",
    "test_wrong_hash_fails_and_leaves_nothing",
    "test_zero_length_object",
]

MiB = 1024 * 1024
_n = itertools.count()

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
    "new\nline\rreturn\ttab",
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
]


def _creds(fake: FakeS3) -> S3Credentials:
    return S3Credentials(fake.access_key_id, fake.secret_access_key, fake.session_token)


def _raw(fake: FakeS3, bucket: str = "src", **kw: Any) -> S3Raw:
    return S3Raw(
        name=kw.pop("name", bucket),
        endpoint=kw.pop("endpoint", fake.endpoint),
        bucket=bucket,
        credentials=kw.pop("credentials", _creds(fake)),
        **kw,
    )


# SeaweedFS `weed mini` holds about 64 buckets with data (then every PUT to a new one fails
# with 500 InternalError: "No writable volumes and no free volumes left"), and the session's
# server is shared by the whole suite. So these tests use three buckets, one prefix per test.
WEED_BUCKET = "s3raw-tests"
WEED_BUCKET_B = "s3raw-tests-b"  # a second bucket, for copies between buckets
WEED_ROOT = "s3raw-root"  # keys at the bucket root (a leading '/'), one test at a time


def _weed_prefix() -> str:
    return f"t{next(_n)}-{os.getpid()}"


def _weed_raw(
    server: S3Server, bucket: str = WEED_BUCKET, prefix: str | None = None, **kw: Any
) -> S3Raw:
    server.create_bucket(bucket)
    return S3Raw(
        name=kw.pop("name", bucket),
        endpoint=server.endpoint,
        bucket=bucket,
        prefix=_weed_prefix() if prefix is None else prefix,
        region=server.region,
        credentials=kw.pop(
            "credentials", S3Credentials(server.access_key_id, server.secret_access_key)
        ),
        **kw,
    )


def _config(endpoint: str, key: str, secret: str, bucket: str, prefix: str = "") -> StoreConfig:
    url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    return StoreConfig.model_validate(
        {
            "name": f"s3-{bucket}",
            "url": url,
            "provider": "self-hosted",
            "country": "ID",
            "endpoint": endpoint,
            "credentials": {"access_key_id": key, "secret_access_key": secret},
        }
    )


def _fake_config(fake: FakeS3, bucket: str, prefix: str = "") -> StoreConfig:
    fake.create_bucket(bucket)
    return _config(fake.endpoint, fake.access_key_id, fake.secret_access_key, bucket, prefix)


def _fallback(cfg: StoreConfig) -> FallbackS3Store:
    """The FallbackS3Store for ``cfg``, whether or not ``open_s3`` returns one already."""
    store: Any = open_s3(cfg)
    return store if isinstance(store, FallbackS3Store) else open_fallback_s3(cfg, store)


def _plain(cfg: StoreConfig) -> Any:
    """The plain obstore-backed store for ``cfg`` (the fast path alone)."""
    store: Any = open_s3(cfg)
    return store.fast if isinstance(store, FallbackS3Store) else store


async def _keys(lister: AsyncIterator[list[Any]]) -> list[str]:
    return sorted([o.key async for batch in lister for o in batch])


async def _stream(total: int, chunk: int = MiB, seed: bytes = b"s") -> AsyncIterator[bytes]:
    block = hashlib.sha256(seed).digest() * (chunk // 32)
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        yield block[:n]
        sent += n


def _stream_bytes(total: int, chunk: int = MiB, seed: bytes = b"s") -> bytes:
    block = hashlib.sha256(seed).digest() * (chunk // 32)
    return b"".join(block[: min(chunk, total - i)] for i in range(0, total, chunk))


@pytest.fixture
def fake() -> Iterator[FakeS3]:
    with s3fake(buckets=("src", "dst")) as server:
        yield server


@pytest.fixture
def store(s3_server: S3Server) -> Store:
    """A fresh FallbackS3Store over its own SeaweedFS bucket (for the imported contracts)."""
    raw = s3_store_config(s3_server, f"fb-{next(_n)}", WEED_BUCKET, _weed_prefix())
    return _fallback(StoreConfig.model_validate(raw))


# ------------------------------------------------------------------------------ signing
#
# Requests are signed by botocore. ``tests/s3fake.py`` rebuilds every canonical request from
# the *decoded* key and checks the signature, so each hostile-key test below is also a test
# that botocore signs such keys as AWS expects.


def test_wrong_secret_is_access_denied_and_the_message_has_no_secret(fake: FakeS3) -> None:
    wrong = S3Credentials(fake.access_key_id, "not-the-secret-" + fake.secret_access_key[:6])
    raw = _raw(fake, credentials=wrong)

    async def go() -> None:
        for call in (
            lambda: _keys(raw.list_all()),
            lambda: raw.put("../odd", b"x"),
            lambda: raw.put("plain", b"x"),
            lambda: raw.head("plain"),
        ):
            with pytest.raises(AccessDenied) as err:
                await call()
            text = str(err.value)
            assert "SignatureDoesNotMatch" in text or "HTTP 403" in text  # HEAD has no body
            assert wrong.secret_access_key not in text and fake.secret_access_key not in text
        assert wrong.secret_access_key not in repr(raw.credentials.static)
        await raw.close()

    run(go())
    assert fake.objects("src") == {}


def test_session_token_is_sent_and_signed() -> None:
    with s3fake(session_token="TOKEN-" + "t" * 40, buckets=("src",)) as fake:
        good = _raw(fake)
        bare = _raw(fake, credentials=S3Credentials(fake.access_key_id, fake.secret_access_key))

        async def go() -> None:
            await good.put("a//b", b"with token")
            assert await (await good.get("a//b")).read_all() == b"with token"
            with pytest.raises(AccessDenied, match="InvalidToken"):
                await bare.put("x", b"no token")
            await good.close()
            await bare.close()

        run(go())
        signed = next(r for r in fake.requests if r.target == "/src/a//b").headers
        assert "x-amz-security-token" in signed["authorization"]


def test_virtual_hosted_addressing_puts_the_bucket_in_the_host(fake: FakeS3) -> None:
    """botocore builds ``bucket.host`` URLs and keeps a leading '/' of the key; the request
    is caught before it leaves (no name resolves to the fake in virtual-hosted form)."""
    raw = _raw(
        fake,
        endpoint="https://oss-ap-southeast-5.aliyuncs.com",
        virtual_hosted=True,
        verify_keys=False,
    )
    sent: list[str] = []

    def capture(request: Any, **_: Any) -> Any:
        sent.append(request.url)
        raise RuntimeError("not sent")

    async def go() -> None:
        raw.client().meta.events.register_first("before-send.s3", capture)
        with pytest.raises(StoreError):
            await raw.put("/abs.txt", b"leading slash, virtual host")
        await raw.close()

    run(go())
    assert sent == ["https://src.oss-ap-southeast-5.aliyuncs.com//abs.txt"]


# ------------------------------------------------------------------------------ hostile keys


def test_hostile_keys_round_trip_byte_exact(fake: FakeS3) -> None:
    raw = _raw(fake, list_page=7)  # several pages, so continuation tokens carry odd keys too

    async def go() -> None:
        for i, key in enumerate(HOSTILE_KEYS):
            res = await raw.put(key, f"content {i}".encode(), metadata={"daulat_sha256": "ab"})
            assert res.sha256 == hashlib.sha256(f"content {i}".encode()).hexdigest()
        assert sorted(fake.objects("src")) == sorted(HOSTILE_KEYS)  # the server's own view
        assert await _keys(raw.list_all()) == sorted(HOSTILE_KEYS)
        for i, key in enumerate(HOSTILE_KEYS):
            reader = await raw.get(key)
            assert reader.info.key == key and reader.info.size == len(f"content {i}")
            assert await reader.read_all() == f"content {i}".encode()
            assert reader.metadata == {"daulat_sha256": "ab"}
            assert await (await raw.get(key, start=8, end=100)).read_all() == str(i).encode()
            assert (await raw.head(key)).size == len(f"content {i}")
        # String prefixes are string prefixes, whatever the key holds.
        assert await _keys(raw.list_all("norm/caf")) == sorted(HOSTILE_KEYS[13:15])
        assert await _keys(raw.list_all("/")) == ["//double-leading", "/abs.txt"]
        assert await _keys(raw.list_all("..")) == ["..", "../escape"]
        for key in HOSTILE_KEYS:
            await raw.delete(key)
            await raw.delete(key)
        await raw.close()

    run(go())
    assert fake.objects("src") == {}
    lists = [r.target for r in fake.requests if "list-type=2" in r.target]
    assert lists and all("encoding-type=url" in t for t in lists)


def test_keys_s3_cannot_hold_at_all_are_refused(fake: FakeS3) -> None:
    raw = _raw(fake)
    prefixed = _raw(fake, prefix="p")

    async def go() -> None:
        for bad in ("", "k" * 1025, "lone \ud800 surrogate"):
            with pytest.raises(InvalidKey):
                await raw.put(bad, b"x")
        with pytest.raises(InvalidKey, match="prefix"):
            await prefixed.put("k" * 1023, b"x")  # 1,025 bytes with "p/"
        await raw.close()
        await prefixed.close()

    run(go())
    assert fake.objects("src") == {}


def test_plain_obstore_listing_fails_or_renames_where_fallback_lists_exactly(
    fake: FakeS3,
) -> None:
    """The trap this module exists for, documented: one key with a '..' segment makes an
    obstore listing fail as a whole; '/abs.txt' and a folder marker 'dir/' are listed under
    other names, without an error."""
    cfg = _fake_config(fake, "trap")
    plain = _plain(cfg)
    fallback = _fallback(cfg)

    async def go() -> None:
        fake.put_object("trap", "ok.txt", b"1")
        fake.put_object("trap", "/abs.txt", b"2")
        fake.put_object("trap", "dir/", b"")
        assert await _keys(plain.list()) == ["abs.txt", "dir", "ok.txt"]  # renamed, no error
        with pytest.raises(NotFound):
            await plain.head("abs.txt")
        assert await _keys(fallback.list()) == ["/abs.txt", "dir/", "ok.txt"]
        for key in HOSTILE_KEYS:
            fake.put_object("trap", key, key.encode("utf-8", "surrogatepass"))
        with pytest.raises(StoreError):
            await _keys(plain.list())
        assert await _keys(fallback.list()) == sorted({*HOSTILE_KEYS, "ok.txt", "dir/"})
        for key in HOSTILE_KEYS:
            assert await (await fallback.get(key)).read_all() == key.encode()
        await fallback.close()
        await plain.close()

    run(go())


def test_hostile_keys_through_the_store(fake: FakeS3) -> None:
    """FallbackS3Store holds hostile keys where the server does: put, head, get, list,
    delete, with metadata named as obstore names it (either path reads the other's)."""
    store = _fallback(_fake_config(fake, "hostile"))

    async def go() -> None:
        for key in HOSTILE_KEYS:
            await store.put(key, key.encode(), metadata={"sha256": "cafe"})
        await store.put("plain/key.txt", b"fast path", metadata={"sha256": "beef"})
        assert sorted(fake.objects("hostile")) == sorted([*HOSTILE_KEYS, "plain/key.txt"])
        assert await _keys(store.list()) == sorted([*HOSTILE_KEYS, "plain/key.txt"])
        for key in [*HOSTILE_KEYS, "plain/key.txt"]:
            reader = await store.get(key)
            body = await reader.read_all()
            assert body == (b"fast path" if key == "plain/key.txt" else key.encode())
            assert reader.metadata == {"sha256": "beef" if key == "plain/key.txt" else "cafe"}
            etag = (await store.head(key)).etag  # obstore's for plain keys, S3Raw's for others
            assert etag == fake.buckets["hostile"][key].etag.strip('"')
        listed = {o.key: o.etag for batch in [b async for b in store.list()] for o in batch}
        assert listed == {k: o.etag.strip('"') for k, o in fake.buckets["hostile"].items()}
        stored = fake.buckets["hostile"]
        assert stored["../escape"].metadata == {"daulat_sha256": "cafe"}
        assert stored["plain/key.txt"].metadata == {"daulat_sha256": "beef"}
        for key in HOSTILE_KEYS:
            await store.delete(key)
        assert await _keys(store.list()) == ["plain/key.txt"]
        await store.close()

    run(go())
    # Portable keys took obstore; only the others (and listings) took S3Raw.
    ours = [r for r in fake.requests if "Botocore" in r.headers.get("user-agent", "")]
    assert not any(r.target.startswith("/hostile/plain/") for r in ours)


@pytest.mark.parametrize(
    "check",
    [
        test_round_trip,
        test_overwrite_replaces_content,
        test_zero_length_object,
        test_ranged_reads,
        test_prefix_listing_is_a_string_prefix,
        test_odd_keys_round_trip_exactly,
        test_missing_key_is_not_found,
        test_delete_is_idempotent,
        contract.test_listing_paginates_over_5000_keys,
    ],
    ids=lambda f: f.__name__.removeprefix("test_"),
)
def test_contracts_over_the_fake_server(fake: FakeS3, check: Callable[[Store], None]) -> None:
    check(_fallback(_fake_config(fake, f"contract{next(_n)}")))


def test_store_prefix_is_applied_like_obstore(fake: FakeS3) -> None:
    store = _fallback(_fake_config(fake, "pre", prefix="exit/2026"))

    async def go() -> None:
        await store.put("a//b", b"1")
        await store.put("plain", b"2")
        fake.put_object("pre", "exit/2026x", b"outside")
        assert await _keys(store.list()) == ["a//b", "plain"]
        assert await (await store.get("a//b")).read_all() == b"1"
        await store.close()

    run(go())
    assert sorted(fake.objects("pre")) == ["exit/2026/a//b", "exit/2026/plain", "exit/2026x"]


def test_ranged_reads_even_where_the_server_ignores_range(fake: FakeS3) -> None:
    raw = _raw(fake)
    data = bytes(range(256)) * 4096  # 1 MiB: several read chunks

    async def go() -> None:
        await raw.put("../r", data)
        for ignore in (False, True):
            fake.ignore_range = ignore
            for start, end in [(0, 10), (100, 1100), (5000, None), (1_000_000, 2_000_000)]:
                got = await (await raw.get("../r", start=start, end=end)).read_all()
                assert got == data[start:end], (ignore, start, end)
            reader = await raw.get("../r", start=3 * MiB // 4 + 1, end=MiB - 1)
            assert reader.info.size == len(data)
            assert await reader.read_all() == data[3 * MiB // 4 + 1 : MiB - 1]
        fake.ignore_range = False
        assert await (await raw.get("../r", start=len(data))).read_all() == b""
        assert await (await raw.get("../r", start=7, end=7)).read_all() == b""
        with pytest.raises(ValueError):
            await raw.get("../r", start=5, end=4)
        await raw.close()

    run(go())


# ------------------------------------------------------------------------------ uploads


def test_single_put_carries_its_checksum_and_a_bad_one_stores_nothing(fake: FakeS3) -> None:
    raw = _raw(fake)
    md5 = _raw(fake, checksum="md5")

    async def go() -> None:
        await raw.put("../a", b"payload")
        sent = [r for r in fake.requests if r.method == "PUT" and r.target.endswith("/../a")]
        assert (
            sent[-1].headers["x-amz-checksum-sha256"]
            == base64.b64encode(hashlib.sha256(b"payload").digest()).decode()
        )
        await md5.put("../b", b"payload")
        sent = [r for r in fake.requests if r.target.endswith("/../b")]
        assert (
            sent[-1].headers["content-md5"]
            == base64.b64encode(hashlib.md5(b"payload").digest()).decode()
        )
        # What a body changed in transit looks like: refused, nothing stored, worth a retry.
        raw._checksum_params = lambda body, sha: {  # type: ignore[method-assign]
            "ChecksumSHA256": base64.b64encode(hashlib.sha256(b"other").digest()).decode()
        }
        with pytest.raises(Transient, match="BadDigest"):
            await raw.put("../c", b"payload")
        await raw.close()
        await md5.close()

    run(go())
    assert sorted(fake.objects("src")) == ["../a", "../b"]


def test_large_stream_goes_multipart_and_a_bad_hash_leaves_nothing(fake: FakeS3) -> None:
    raw = _raw(fake, part_size=5 * MiB, single_put_max=5 * MiB)
    size = 23 * MiB + 123

    async def go() -> None:
        expected = hashlib.sha256(_stream_bytes(size)).hexdigest()
        res = await raw.put("../big.bin", _stream(size), sha256=expected)
        assert res.size == size and res.sha256 == expected
        assert res.etag is not None and res.etag.endswith("-5")
        assert hashlib.sha256(await (await raw.get("../big.bin")).read_all()).hexdigest() == (
            expected
        )
        with pytest.raises(IntegrityError):
            await raw.put("../bad.bin", _stream(size), sha256="0" * 64)

        async def broken() -> AsyncIterator[bytes]:
            async for chunk in _stream(12 * MiB):
                yield chunk
            raise OSError("source went away")

        with pytest.raises(OSError):
            await raw.put("../broken.bin", broken())
        # A stream that ends exactly on a part boundary has no empty last part.
        exact = await raw.put("exact.bin", _stream(15 * MiB))
        assert exact.etag is not None and exact.etag.endswith("-3")
        await raw.close()

    run(go())
    assert sorted(fake.objects("src")) == ["../big.bin", "exact.bin"]
    assert fake.open_uploads("src") == []  # failed uploads were aborted


_CRASH_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys
    from daulat.stores.s3raw import S3Credentials, S3Raw

    async def body():
        block = b"x" * (1024 * 1024)
        for _ in range(12):
            yield block
        await asyncio.sleep(3600)  # hang mid-stream until killed

    async def main():
        raw = S3Raw(
            name="crash", endpoint=sys.argv[1], bucket=sys.argv[2],
            credentials=S3Credentials(os.environ["KEY"], os.environ["SECRET"]),
            part_size=5 * 1024 * 1024, single_put_max=5 * 1024 * 1024,
        )
        await raw.put(sys.argv[3], body())

    asyncio.run(main())
    """
)


def _kill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    try:
        while not ready():
            assert proc.poll() is None, f"uploader exited early: {proc.stderr.read()!r}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


def test_a_killed_upload_is_listed_and_can_be_aborted(fake: FakeS3) -> None:
    """kill -9 in the middle of a multipart upload: the parts stay, invisible; the upload is
    found under its exact key and aborted by id, and no object appears under the key."""
    key = "../crash/big.bin"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASH_SCRIPT, fake.endpoint, "src", key],
        env={**os.environ, "KEY": fake.access_key_id, "SECRET": fake.secret_access_key},
        stderr=subprocess.PIPE,
    )
    _kill_when(
        proc,
        lambda: any(len(u.parts) >= 2 for u in fake.open_uploads("src")),
        "two uploaded parts",
    )
    raw = _raw(fake)

    async def go() -> None:
        uploads = [u async for batch in raw.list_multipart_uploads("../crash/") for u in batch]
        assert [u.key for u in uploads] == [key]
        assert dt.datetime.now(dt.UTC) - uploads[0].initiated < dt.timedelta(minutes=5)
        await raw.abort_multipart_upload(key, uploads[0].upload_id)
        assert [u async for batch in raw.list_multipart_uploads() for u in batch] == []
        await raw.abort_multipart_upload(key, uploads[0].upload_id)  # already gone: fine
        await raw.close()

    run(go())
    assert fake.open_uploads("src") == [] and fake.objects("src") == {}


def test_multipart_uploads_list_in_pages_with_odd_keys(fake: FakeS3) -> None:
    raw = _raw(fake)
    keys = ["a//b", "/abs", "sp ace+plus", "nul\x00", *[f"many/{i:04d}" for i in range(1005)]]

    async def go() -> None:
        for key in keys:
            await raw._create_upload(key, key, {})
        listed = [u async for batch in raw.list_multipart_uploads() for u in batch]
        assert sorted(u.key for u in listed) == sorted(keys)
        for upload in listed:
            await raw.abort_multipart_upload(upload.key, upload.upload_id)
        await raw.close()

    run(go())
    assert fake.open_uploads("src") == []


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import asyncio, hashlib, json, os, resource, sys
    from daulat.stores.s3raw import S3Credentials, S3Raw

    SIZE = int(sys.argv[3])

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
        raw = S3Raw(name="mem", endpoint=sys.argv[1], bucket=sys.argv[2],
                    credentials=S3Credentials(os.environ["KEY"], os.environ["SECRET"]))
        await raw.put("../tiny", b"warm up")
        await (await raw.get("../tiny")).read_all()
        base = rss()
        put = await raw.put("../big.bin", body())
        h = hashlib.sha256()
        got = 0
        async for chunk in await raw.get("../big.bin"):
            h.update(chunk)
            got += len(chunk)
        await raw.close()
        print(json.dumps({"base": base, "peak": rss(), "put": put.sha256,
                          "get": h.hexdigest(), "size": got}))

    asyncio.run(main())
    """
)


def test_large_object_streams_in_bounded_memory(fake: FakeS3) -> None:
    size = 96 * MiB
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, fake.endpoint, "src", str(size)],
        env={**os.environ, "KEY": fake.access_key_id, "SECRET": fake.secret_access_key},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["size"] == size and out["put"] == out["get"]
    growth = out["peak"] - out["base"]
    assert growth < size // 3, f"peak RSS grew by {growth / MiB:.0f} MiB for a 96 MiB object"


# ------------------------------------------------------------------------------ copy


def test_copy_object_between_buckets_keeps_content_and_metadata(fake: FakeS3) -> None:
    src = _raw(fake, "src")
    dst = _raw(fake, "dst", copy_single_max=5 * MiB, copy_part_size=5 * MiB)
    stranger = _raw(fake, "dst", credentials=S3Credentials(fake.access_key_id, "other"))
    big = _stream_bytes(12 * MiB + 7)

    async def go() -> None:
        await src.put("../from", b"small", metadata={"daulat_sha256": "aa"})
        res = await dst.copy_object("../from", "a//to", source=src)
        assert res.size == 5 and res.sha256 == hashlib.sha256(b"small").hexdigest()
        reader = await dst.get("a//to")
        assert await reader.read_all() == b"small"
        assert reader.metadata == {"daulat_sha256": "aa"}
        replaced = await dst.copy_object("../from", "b", source=src, metadata={"x": "1"})
        assert replaced.etag is not None
        assert (await dst.get("b")).metadata == {"x": "1"}
        # Above copy_single_max: UploadPartCopy in three parts, metadata carried over.
        await src.put("big", big, metadata={"daulat_sha256": "bb"})
        res = await dst.copy_object("big", "/big-copy", source=src)
        assert res.size == len(big) and res.etag is not None and res.etag.endswith("-3")
        reader = await dst.get("/big-copy")
        assert await reader.read_all() == big and reader.metadata == {"daulat_sha256": "bb"}
        with pytest.raises(StoreError, match="PreconditionFailed"):
            await dst.copy_object("big", "c", source=src, size=len(big), if_match='"stale"')
        with pytest.raises(Unsupported):
            await stranger.copy_object("big", "d", source=src)
        with pytest.raises(NotFound):
            await dst.copy_object("missing", "e", source=src)
        for raw in (src, dst, stranger):
            await raw.close()

    run(go())
    assert sorted(fake.objects("dst")) == ["/big-copy", "a//to", "b"]
    assert fake.open_uploads("dst") == []


def test_fallback_copy_from_reports_the_content_hash(fake: FakeS3) -> None:
    src = _fallback(_fake_config(fake, "csrc"))
    dst = _fallback(_fake_config(fake, "cdst"))
    other = _fallback(
        _config(fake.endpoint, fake.access_key_id, "wrong-secret", "cdst")  # same bucket
    )

    async def go() -> None:
        await src.put("../k", b"copied server-side")
        assert dst.can_copy_from(src) and not other.can_copy_from(src)
        assert unwrap_fallback(dst) is dst
        before = len(fake.requests)
        res = await dst.copy_from(src, "../k", "../k")
        assert res.sha256 == hashlib.sha256(b"copied server-side").hexdigest()
        # The fake computes SHA-256 on request (as AWS does): no read-back was needed.
        assert not [
            r for r in fake.requests[before:] if r.method == "GET" and r.target == "/cdst/../k"
        ]
        assert await (await dst.get("../k")).read_all() == b"copied server-side"
        for s in (src, dst, other):
            await s.close()

    run(go())


# ------------------------------------------------------------------------------ errors


def test_server_errors_map_to_daulat_errors(fake: FakeS3) -> None:
    raw = _raw(fake)
    missing_bucket = _raw(fake, "no-such-bucket")

    async def go() -> None:
        fake.inject(503, "SlowDown")
        with pytest.raises(Transient, match="SlowDown"):
            await raw.put("a", b"1")
        fake.inject(500, "InternalError")
        with pytest.raises(Transient):
            await _keys(raw.list_all())
        with pytest.raises(AccessDenied, match="NoSuchBucket"):
            await _keys(missing_bucket.list_all())
        with pytest.raises(AccessDenied):
            await missing_bucket.delete("x")  # a missing bucket is not a missing key
        with pytest.raises(NotFound):
            await raw.get("nope")
        with pytest.raises(NotFound):
            await raw.head("../nope")
        await raw.close()
        await missing_bucket.close()
        gone = S3Raw(
            name="gone", endpoint="http://127.0.0.1:9", bucket="b", credentials=_creds(fake)
        )
        with pytest.raises(Transient, match="cannot connect"):
            await gone.head("x")
        await gone.close()
        with pytest.raises(StoreError, match="closed"):
            await gone.head("x")

    run(go())


def test_a_bucket_in_another_region_is_named_not_followed(fake: FakeS3) -> None:
    """The region is what daulat reports as the data's country: a redirect to another region
    is an error naming the bucket's real region, on every kind of request, never followed."""
    raw = _raw(fake)

    async def go() -> None:
        for call in (lambda: _keys(raw.list_all()), lambda: raw.head("k")):
            fake.inject(301, "PermanentRedirect", headers={"x-amz-bucket-region": "eu-central-1"})
            with pytest.raises(AccessDenied) as err:
                await call()
            text = str(err.value)
            assert "'eu-central-1'" in text and "'us-east-1'" in text and "region" in text
        await raw.close()

    run(go())
    assert len([r for r in fake.requests if "list-type" in r.target]) == 1  # not retried


def test_from_config_resolves_like_open_s3() -> None:
    base = {"name": "s", "credentials": {"access_key_id": "AK", "secret_access_key": "SK"}}
    aws = S3Raw.from_config(
        StoreConfig.model_validate(
            {**base, "url": "s3://bkt/pre/fix/", "provider": "aws", "region": "eu-west-1"}
        ),
        env={},
    )
    assert aws.endpoint == "https://s3.eu-west-1.amazonaws.com" and aws.virtual_hosted
    assert aws.endpoint_url is None  # botocore resolves AWS's own endpoint
    assert aws.prefix == "pre/fix" and aws.checksum == "sha256" and aws.timeout == 30
    assert aws.credentials.static == S3Credentials("AK", "SK")
    oss = S3Raw.from_config(
        StoreConfig.model_validate(
            {
                "name": "o",
                "url": "s3://b1",
                "provider": "alibaba",
                "region": "ap-southeast-5",
                "request_timeout": 7,
            }
        ),
        env={"OSS_ACCESS_KEY_ID": "id", "OSS_ACCESS_KEY_SECRET": "secret"},
    )
    assert oss.endpoint == "https://s3.oss-ap-southeast-5.aliyuncs.com" and oss.virtual_hosted
    assert oss.checksum == "md5" and oss.credentials.static == S3Credentials("id", "secret")
    assert oss.timeout == 7
    assert "secret" not in repr(oss.credentials.static)
    path = S3Raw.from_config(
        StoreConfig.model_validate(
            {
                "name": "p",
                "url": "s3://bkt",
                "provider": "self-hosted",
                "country": "ID",
                "endpoint": "http://127.0.0.1:1234",
                "profile": "exit-role",
            }
        ),
        env={},
    )
    assert not path.virtual_hosted and path.endpoint_url == "http://127.0.0.1:1234"
    # No keys of its own: botocore's chain, with the configured profile.
    assert path.credentials.static is None and path.credentials.profile == "exit-role"


# ------------------------------------------------------------------------------ SeaweedFS


def test_seaweedfs_sigv4_with_portable_odd_keys(s3_server: S3Server) -> None:
    raw = _weed_raw(s3_server, list_page=3)

    async def go() -> None:
        for i, key in enumerate(contract.ODD_KEYS):
            await raw.put(key, f"v{i}".encode(), metadata={"daulat_sha256": str(i)})
        assert await _keys(raw.list_all()) == sorted(contract.ODD_KEYS)
        for i, key in enumerate(contract.ODD_KEYS):
            reader = await raw.get(key)
            assert await reader.read_all() == f"v{i}".encode()
            assert reader.metadata == {"daulat_sha256": str(i)}
            assert await (await raw.get(key, start=1)).read_all() == str(i).encode()
        big = await raw.put("multi part/ü", _stream(20 * MiB))
        assert big.size == 20 * MiB
        assert (await raw.head("multi part/ü")).size == 20 * MiB
        for key in [*contract.ODD_KEYS, "multi part/ü"]:
            await raw.delete(key)
        assert await _keys(raw.list_all()) == []
        await raw.close()

    run(go())


def test_seaweedfs_wrong_secret_is_access_denied(s3_server: S3Server) -> None:
    wrong = S3Credentials(s3_server.access_key_id, "definitely-wrong-secret-value")
    raw = _weed_raw(s3_server, credentials=wrong)

    async def go() -> None:
        with pytest.raises(AccessDenied) as err:
            await raw.put("k", b"x")
        assert wrong.secret_access_key not in str(err.value)
        assert s3_server.secret_access_key not in str(err.value)
        with pytest.raises(AccessDenied):
            await _keys(raw.list_all())
        await raw.close()

    run(go())


def test_seaweedfs_bad_checksum_stores_nothing(s3_server: S3Server) -> None:
    """SeaweedFS checks x-amz-checksum-sha256: a body that does not match is refused, which
    is what keeps a PUT cut short from leaving an object."""
    raw = _weed_raw(s3_server)

    async def go() -> None:
        raw._checksum_params = lambda body, sha: {  # type: ignore[method-assign]
            "ChecksumSHA256": base64.b64encode(hashlib.sha256(b"other").digest()).decode()
        }
        with pytest.raises(StoreError):
            await raw.put("k", b"payload")
        assert await _keys(raw.list_all()) == []
        await raw.close()

    run(go())


# What SeaweedFS 4.48 does with each kind of key (measured; see test below).
SEAWEEDFS_KEEPS = {
    "ctl\x01\x1f\x7f-chars",
    "new\nline\rreturn\ttab",
    unicodedata.normalize("NFC", "norm/café"),
    unicodedata.normalize("NFD", "norm/café"),
    "emoji/🗳️ ballot 😀",
    "percent%2Fliteral%00%zz",
    "sp ace+plus&amp=eq?q#frag~tilde",
    "<xml>&amp;\"quote'",
}


def test_seaweedfs_refuses_odd_keys_per_object_and_never_renames(s3_server: S3Server) -> None:
    """Each hostile key is either listed exactly as written or its put raised InvalidKey;
    nothing else appears in the bucket (no renamed object, no probe left behind)."""
    raw = _weed_raw(s3_server, WEED_ROOT, prefix="")
    outcome: dict[str, str] = {}

    async def go() -> None:
        for key in HOSTILE_KEYS:
            try:
                await raw.put(key, b"payload")
                outcome[key] = "kept"
            except InvalidKey:
                outcome[key] = "refused"
        listed = await _keys(raw.list_all())
        assert listed == sorted(k for k, v in outcome.items() if v == "kept")
        for key in listed:
            assert await (await raw.get(key)).read_all() == b"payload"
        kinds = await raw.key_kinds()
        assert kinds == {
            "leading": False,  # '/x' is stored as 'x'
            "double": False,  # 'a//b' as 'a/b'
            "dotdot": False,  # refused (400 InvalidRequest)
            "dot": False,  # refused
            "backslash": False,  # 'a\\b' as 'a/b'
            "nul": False,  # refused
            "control": True,
        }
        # A folder marker (empty 'dir/') is kept; a non-empty 'dir/' is not (SeaweedFS keeps
        # an empty directory), so that put is refused and the marker it left is removed.
        await raw.put("marker/", b"")
        assert await _keys(raw.list_all("marker")) == ["marker/"]
        for key in [*listed, "marker/"]:
            await raw.delete(key)
        await raw.close()

    run(go())
    assert {k for k, v in outcome.items() if v == "kept"} == SEAWEEDFS_KEEPS
    assert outcome["trailing/"] == "refused" and outcome["k" * 1024] == "refused"


def test_seaweedfs_rewrites_keys_when_not_probed(s3_server: S3Server) -> None:
    """Why the probe exists: without it, SeaweedFS answers 200 and stores another key."""
    raw = _weed_raw(s3_server, WEED_ROOT, prefix="", verify_keys=False)
    token = _weed_prefix()

    async def go() -> None:
        await raw.put(f"{token}/a//b", b"1")
        await raw.put(f"/{token}/abs", b"2")
        await raw.put(f"{token}/back\\slash", b"3")
        assert await _keys(raw.list_all(token)) == [
            f"{token}/{k}" for k in ("a/b", "abs", "back/slash")
        ]
        assert await _keys(raw.list_all("/")) == []
        for key in ("a/b", "abs", "back/slash"):
            await raw.delete(f"{token}/{key}")
        await raw.close()

    run(go())


def test_seaweedfs_copy_between_buckets(s3_server: S3Server) -> None:
    src = _weed_raw(s3_server)
    dst = _weed_raw(s3_server, WEED_BUCKET_B, copy_single_max=5 * MiB, copy_part_size=5 * MiB)
    big = _stream_bytes(11 * MiB)

    async def go() -> None:
        await src.put("with space/é", b"small", metadata={"daulat_sha256": "aa"})
        tag = (await src.head("with space/é")).etag
        res = await dst.copy_object("with space/é", "copied/é", source=src, size=5, if_match=tag)
        assert res.size == 5
        with pytest.raises(StoreError, match="PreconditionFailed"):
            await dst.copy_object("with space/é", "x", source=src, size=5, if_match="0" * 32)
        reader = await dst.get("copied/é")
        assert await reader.read_all() == b"small" and reader.metadata == {"daulat_sha256": "aa"}
        await src.put("big", big)
        res = await dst.copy_object("big", "big", source=src)  # UploadPartCopy, 3 parts
        assert await (await dst.get("big")).read_all() == big
        assert await _keys(dst.list_all()) == ["big", "copied/é"]
        assert [u async for b in dst.list_multipart_uploads() for u in b] == []
        for raw in (src, dst):
            await raw.close()

    run(go())


def test_seaweedfs_fallback_copy_from_and_listing_etags(s3_server: S3Server) -> None:
    prefix = _weed_prefix()
    src = _fallback(
        StoreConfig.model_validate(s3_store_config(s3_server, "a", WEED_BUCKET, prefix))
    )
    dst = _fallback(
        StoreConfig.model_validate(s3_store_config(s3_server, "b", WEED_BUCKET_B, prefix))
    )

    async def go() -> None:
        await src.put("obj", b"server-side")
        assert dst.can_copy_from(src)
        res = await dst.copy_from(src, "obj", "obj")
        assert res.sha256 == hashlib.sha256(b"server-side").hexdigest()  # read back
        # obstore's HEAD and S3Raw's listing spell ETags alike (the journal compares them).
        listed = [o async for batch in dst.list() for o in batch]
        assert [o.etag for o in listed] == [(await dst.head("obj")).etag] == [res.etag]
        for s in (src, dst):
            await s.close()

    run(go())


_OBSTORE_CRASH_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys
    from daulat.config import StoreConfig
    from daulat.stores.s3 import open_s3

    async def body():
        block = b"y" * (1024 * 1024)
        for _ in range(40):
            yield block
        await asyncio.sleep(3600)

    async def main():
        cfg = StoreConfig.model_validate({
            "name": "crash", "url": "s3://" + sys.argv[2], "provider": "self-hosted",
            "country": "ID", "endpoint": sys.argv[1],
            "credentials": {"access_key_id": os.environ["KEY"],
                            "secret_access_key": os.environ["SECRET"]},
        })
        await open_s3(cfg).put("stream.bin", body())

    asyncio.run(main())
    """
)


def test_seaweedfs_a_killed_streamed_put_leaves_an_upload_to_abort(s3_server: S3Server) -> None:
    """A streamed put through the store (multipart through S3Raw) killed mid-way: its upload
    is listed by key and id on a real server and aborted."""
    bucket, prefix = WEED_BUCKET, _weed_prefix()
    raw = _weed_raw(s3_server, bucket, prefix)

    async def uploads() -> list[str]:
        return [u.key async for batch in raw.list_multipart_uploads() for u in batch]

    proc = subprocess.Popen(
        [sys.executable, "-c", _OBSTORE_CRASH_SCRIPT, s3_server.endpoint, f"{bucket}/{prefix}"],
        env={**os.environ, "KEY": s3_server.access_key_id, "SECRET": s3_server.secret_access_key},
        stderr=subprocess.PIPE,
    )

    def started() -> bool:
        return asyncio.run(uploads()) == ["stream.bin"]

    _kill_when(proc, started, "an open multipart upload")

    async def go() -> None:
        found = [u async for batch in raw.list_multipart_uploads() for u in batch]
        assert len(found) == 1
        await raw.abort_multipart_upload(found[0].key, found[0].upload_id)
        assert await uploads() == []
        assert await _keys(raw.list_all()) == []
        await raw.close()

    run(go())


# ------------------------------------------------------------------------------ moto


@pytest.mark.parametrize(
    "check",
    [
        test_overwrite_replaces_content,
        test_zero_length_object,
        test_ranged_reads,
        test_prefix_listing_is_a_string_prefix,
        test_odd_keys_round_trip_exactly,
        test_missing_key_is_not_found,
        test_delete_is_idempotent,
        contract.test_listing_paginates_over_5000_keys,
    ],
    ids=lambda f: f.__name__.removeprefix("test_"),
)
def test_contracts_over_moto(moto_server: MotoServer, check: Callable[[Store], None]) -> None:
    """The conformance suite over moto (moto's WSGI server drops metadata headers with '_',
    so the tests that read metadata back run over SeaweedFS and the fake only)."""
    n = next(_n)
    check(_fallback(StoreConfig.model_validate(s3_store_config(moto_server, f"m{n}", f"moto{n}"))))


@pytest.mark.parametrize(
    "key",
    ["../escape", "a/../../b", "/absolute", "a//b", "trailing/", "nul\x00byte", ".", "a/./b"],
)
def test_non_portable_keys_are_kept_exactly_on_moto(moto_server: MotoServer, key: str) -> None:
    n = next(_n)
    test_non_portable_keys_are_refused_or_kept_exactly(
        _fallback(StoreConfig.model_validate(s3_store_config(moto_server, f"k{n}", f"motok{n}"))),
        key,
    )


def test_keys_seaweedfs_refuses_round_trip_on_moto(moto_server: MotoServer) -> None:
    """What SeaweedFS refuses or rewrites (see SEAWEEDFS_KEEPS) is legal S3: moto, which keeps
    keys as AWS does, gets every such key through the store exactly, multipart included."""
    refused_by_seaweedfs = [k for k in HOSTILE_KEYS if k not in SEAWEEDFS_KEEPS]
    store = _fallback(
        StoreConfig.model_validate(s3_store_config(moto_server, "moto-keys", "moto-keys"))
    )
    big = _stream_bytes(9 * MiB)

    async def go() -> None:
        assert all((await store.raw.key_kinds()).values())  # moto keeps every kind
        for i, key in enumerate(refused_by_seaweedfs):
            await store.put(key, f"v{i}".encode())
        await store.put("../multi//part", _stream(9 * MiB))
        assert await _keys(store.list()) == sorted([*refused_by_seaweedfs, "../multi//part"])
        for i, key in enumerate(refused_by_seaweedfs):
            assert await (await store.get(key)).read_all() == f"v{i}".encode()
            assert (await store.head(key)).size == len(f"v{i}")
        assert await (await store.get("../multi//part")).read_all() == big
        for key in [*refused_by_seaweedfs, "../multi//part"]:
            await store.delete(key)
        assert await _keys(store.list()) == []
        await store.close()

    run(go())


def test_part_by_part_copies_report_their_upload_before_the_first_part(fake: FakeS3) -> None:
    src = _raw(fake, "src")
    dst = _raw(fake, "dst", copy_single_max=5 * MiB, copy_part_size=5 * MiB)
    seen: list[tuple[str, str, int]] = []

    def on_upload(key: str, upload_id: str) -> None:
        (upload,) = [u for u in fake.open_uploads("dst") if u.upload_id == upload_id]
        seen.append((key, upload_id, len(upload.parts)))

    async def go() -> None:
        await src.put("big", _stream_bytes(11 * MiB))
        await dst.copy_object("big", "../copy", source=src, on_upload=on_upload)
        await src.close()
        await dst.close()

    run(go())
    assert [(k, parts) for k, _, parts in seen] == [("../copy", 0)]
    assert fake.open_uploads("dst") == []


# ------------------------------------------------------------------ CPU: hashing once, timestamps


class _CountingHasher(StreamHasher):
    """A StreamHasher that counts the bytes it was given (every instance, in ``fed``)."""

    fed: ClassVar[list[int]] = []

    async def update(self, chunk: bytes | memoryview) -> None:
        _CountingHasher.fed.append(len(chunk))
        await super().update(chunk)


async def _chunks_of(data: bytes, size: int = MiB + 17) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("resumable", [False, True])
@pytest.mark.parametrize("size", [3 * MiB + 5, 12 * MiB + 7])
def test_a_stream_hashed_on_the_way_is_hashed_once(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, size: int, resumable: bool
) -> None:
    """A body the caller hashes while it streams (the copy engine's ``hashed``) gives the
    store its digest: the store does not hash the same bytes again, and still returns the
    object's true SHA-256 and checks the expected one."""
    # Every module of the client that builds a hasher of its own (put; put_resumable).
    for module in (s3raw_module, s3multipart):
        monkeypatch.setattr(module, "StreamHasher", _CountingHasher)
    raw = _weed_raw(s3_server, part_size=5 * MiB, single_put_max=5 * MiB)
    data = os.urandom(size)  # parts differ: a part sent twice or out of order would show
    digest = hashlib.sha256(data).hexdigest()

    async def put(key: str, expected: str | None) -> PutResult:
        body = hashed(_chunks_of(data), _CountingHasher(), expected=expected, store="t", key=key)
        if resumable:
            return await raw.put_resumable(
                key,
                body,
                metadata=None,
                session=None,
                on_session=lambda s: None,
                stats=ResumeStats(),
            )
        return await raw.put(key, body)

    async def go() -> None:
        _CountingHasher.fed.clear()
        res = await put("once.bin", digest)
        assert res.sha256 == digest and res.size == size
        assert sum(_CountingHasher.fed) == size  # fed once, not once more by the store
        assert await (await raw.get("once.bin")).read_all() == data
        with pytest.raises(IntegrityError):
            await put("wrong.bin", "0" * 64)
        with pytest.raises(NotFound):
            await raw.head("wrong.bin")
        await raw.close()

    run(go())


def test_hashed_by_only_an_unread_hashed_stream() -> None:
    async def go() -> None:
        body = hashed(_chunks_of(b"x" * 10, 4), StreamHasher(), expected=None, store="t", key="k")
        assert hashed_by(body) is body.hasher
        assert await anext(body) == b"xxxx"
        assert hashed_by(body) is None  # the store would not see every byte any more
        assert hashed_by(_chunks_of(b"x")) is None and hashed_by(b"x") is None
        ends: list[int] = []
        assert [c async for c in body.then(ends.append)] == [b"xxxx", b"xx"]
        assert ends == [10] and body.hasher.hexdigest() == hashlib.sha256(b"x" * 10).hexdigest()

    run(go())


def test_listing_timestamps_are_botocores(s3_server: S3Server) -> None:
    """Listings' LastModified go through a fast ISO 8601 parser: same instant as HEAD's
    Last-Modified (an HTTP date, whole seconds), timezone-aware, and the same value
    botocore's own parser gives for every form S3 answers use."""
    from botocore.utils import parse_timestamp

    for text in (
        "2026-12-05T00:47:50.123Z",
        "2026-12-05T00:47:50Z",
        "2026-12-05T00:47:50.123456+00:00",
        "Sat, 05 Dec 2026 00:47:50 GMT",
        "1764895670",
    ):
        assert _parse_timestamp(text) == parse_timestamp(text)
    raw = _weed_raw(s3_server)

    async def go() -> None:
        await raw.put("t.bin", b"t")
        time.sleep(1.2)  # a fallback to "now" would be more than a second off
        listed = [o async for batch in raw.list_all("") for o in batch]
        head = await raw.head("t.bin")
        await raw.close()
        assert len(listed) == 1 and listed[0].modified.tzinfo is not None
        assert abs((listed[0].modified - head.modified).total_seconds()) < 1

    run(go())


def test_listing_contents_read_as_botocore_reads_them() -> None:
    """The fast reading of a ListObjectsV2 page gives what botocore's own parser gives for
    every object (keys with XML escapes and URL-encoded control characters, empty ETags,
    both timestamp forms), and leaves an answer it cannot read to botocore."""
    import botocore.session
    from botocore import parsers

    op = botocore.session.get_session().get_service_model("s3").operation_model("ListObjectsV2")
    items = [
        ("a%2F%2Fb", "2026-12-05T00:47:50.123Z", "&quot;abc&quot;", "7", "STANDARD"),
        ("ctl%01%1F%7F", "2026-12-05T00:47:50Z", "", "0", ""),
        ("&lt;xml&gt;&amp;%22quote%27", "2026-01-01T00:00:00.000Z", "&quot;d-2&quot;", "123", "X"),
        ("emoji%F0%9F%98%80+sp", "2026-12-05T00:47:50.999999+00:00", "e", "5368709120", "S"),
    ]
    contents = "".join(
        f"<Contents><Key>{k}</Key><LastModified>{t}</LastModified><ETag>{e}</ETag>"
        f"<Size>{n}</Size><Owner><ID>o</ID></Owner><StorageClass>{c}</StorageClass></Contents>"
        for k, t, e, n, c in items
    )
    body = (
        '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.'
        'com/doc/2006-03-01/"><Name>b</Name><Prefix>p</Prefix><KeyCount>4</KeyCount>'
        f"<IsTruncated>true</IsTruncated>{contents}<NextContinuationToken>tok"
        "</NextContinuationToken><EncodingType>url</EncodingType></ListBucketResult>"
    ).encode()

    def parse(fast: bool, data: bytes) -> dict[str, Any]:
        response = {"body": data, "headers": {}, "status_code": 200}
        custom: dict[str, Any] = {}
        if fast:
            _parse_contents(response, custom)
        parsed: dict[str, Any] = parsers.create_parser("rest-xml").parse(response, op.output_shape)
        parsed.update(custom)
        parsed.pop("ResponseMetadata", None)
        return parsed

    slow, fast = parse(False, body), parse(True, body)
    assert [o["Key"] for o in fast["Contents"]] == [
        i[0].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") for i in items
    ]
    fields = ("Key", "LastModified", "ETag", "Size", "StorageClass")
    assert [{f: o[f] for f in fields} for o in fast["Contents"]] == [
        {f: o[f] for f in fields} for o in slow["Contents"]
    ]
    assert {k: v for k, v in fast.items() if k != "Contents"} == {
        k: v for k, v in slow.items() if k != "Contents"
    }
    # Common prefixes between the objects (S3 puts them after; another server may not): the
    # objects are cut out one by one, the prefixes stay for botocore.
    mixed = body.replace(
        b"</Contents><Contents><Key>&lt;",
        b"</Contents><CommonPrefixes><Prefix>d/</Prefix></CommonPrefixes><Contents><Key>&lt;",
    )
    assert mixed != body
    slow, fast = parse(False, mixed), parse(True, mixed)
    assert fast["CommonPrefixes"] == slow["CommonPrefixes"] == [{"Prefix": "d/"}]
    assert [{f: o[f] for f in fields} for o in fast["Contents"]] == [
        {f: o[f] for f in fields} for o in slow["Contents"]
    ]
    # A 200 answer that is an error (S3 may answer so): left to botocore, body untouched.
    error = b"<Error><Code>InternalError</Code><Contents>x</Contents></Error>"
    response = {"body": error, "headers": {}, "status_code": 200}
    custom: dict[str, Any] = {}
    _parse_contents(response, custom)
    assert response["body"] is error and custom == {}
    # Not well-formed (a raw control character): left to botocore, body untouched.
    bad = body.replace(b"ctl%01", b"ctl\x01")
    response = {"body": bad, "headers": {}, "status_code": 200}
    custom = {}
    _parse_contents(response, custom)
    assert response["body"] is bad and custom == {}
