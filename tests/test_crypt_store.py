"""CryptStore beyond the conformance suite: what it stores is what today's exits store.

The conformance suite (``tests/conformance``) runs over the wrapper; these tests check the
stored side: standard age files the ``age`` CLI decrypts, stored names that are the name key's
hashes, plaintext sizes computed for objects someone else encrypted, abilities that would go
around the encryption hidden, and the explicit API the engine uses (ciphertext size and hash,
``on_stored``, ``stored_sha256``).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import run, s3_store_config
from servers import S3Server

from daulat.config import StoreConfig
from daulat.crypto import DecryptError, EncryptError, load_identities, new_identity
from daulat.errors import NotFound
from daulat.stores import open_store
from daulat.stores.abilities import server_side_copy, unwrap_resumable, upload_cleanup
from daulat.stores.cleanup import temp_cleaner
from daulat.stores.crypt import CryptPutResult, CryptStore, NotAge, StoredMismatch, stored_info
from daulat.stores.fs import FsStore
from daulat.transfer.names import NameKey

MiB = 1024 * 1024


def _age() -> str:
    path = shutil.which("age")
    if path is None:
        pytest.fail("the age CLI is missing: apt-get install age (scripts/test installs it)")
    return path


def _keys(tmp_path: Path) -> tuple[Path, str]:
    key = tmp_path / "id.key"
    recipient = new_identity(key)
    return key, recipient


async def _chunks(total: int) -> AsyncIterator[bytes]:
    block = hashlib.sha256(b"crypt").digest() * (MiB // 32)
    sent = 0
    while sent < total:
        n = min(MiB, total - sent)
        yield block[:n]
        sent += n


def _plain(total: int) -> bytes:
    block = hashlib.sha256(b"crypt").digest() * (MiB // 32)
    return (block * (total // MiB + 1))[:total]


def test_stored_objects_are_age_files_under_the_name_keys_hashes(tmp_path: Path) -> None:
    key, _ = _keys(tmp_path)
    ids = load_identities(key)
    names = NameKey.generate()
    root = tmp_path / "vault"
    root.mkdir()
    big = 9 * MiB + 17

    async def go() -> None:
        store = CryptStore(
            FsStore("vault", root),
            recipients=[ids[0].recipient],
            identities=ids,
            names=names,
            prefix="arsip/",
        )
        small = await store.put("arsip/c1/tps 001.json", b'{"suara": 17}', metadata={"k": "v"})
        large = await store.put("arsip/c1/besar.bin", _chunks(big))
        assert isinstance(small, CryptPutResult) and isinstance(large, CryptPutResult)
        assert small.stored_key == "arsip/" + names.stored_name("c1/tps 001.json")
        assert large.stored_key == "arsip/" + names.stored_name("c1/besar.bin")
        assert (small.size, large.size) == (13, big)
        assert large.sha256 == hashlib.sha256(_plain(big)).hexdigest()
        for res in (small, large):
            stored = root / res.stored_key
            assert stored.stat().st_size == res.stored_size
            assert hashlib.sha256(stored.read_bytes()).hexdigest() == res.stored_sha256
        reader = await store.get("arsip/c1/tps 001.json")
        assert reader.metadata["encryption"] == "age" and reader.metadata["k"] == "v"
        assert stored_info(reader).size == small.stored_size
        assert sorted([o.key async for b in store.list("arsip/c1/") for o in b]) == [
            "arsip/c1/besar.bin",
            "arsip/c1/tps 001.json",
        ]
        await store.close()
        return None

    run(go())
    # Only hashes at the destination, and the age CLI alone reads them.
    stored = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert stored == sorted(
        "arsip/" + names.stored_name(k) for k in ("c1/tps 001.json", "c1/besar.bin")
    )
    out = subprocess.run(
        [_age(), "-d", "-i", str(key), str(root / "arsip" / names.stored_name("c1/besar.bin"))],
        capture_output=True,
        check=True,
    )
    assert out.stdout == _plain(big)


def test_sizes_of_objects_encrypted_elsewhere_are_computed_from_their_header(
    tmp_path: Path,
) -> None:
    """Objects the age CLI wrote (chunk boundaries included) list and head with their plaintext
    size; a file that is not age is left out of listings and refused by head and get."""
    key, recipient = _keys(tmp_path)
    ids = load_identities(key)
    root = tmp_path / "vault"
    root.mkdir()
    sizes = {"a": 0, "b": 1, "c": 65536, "d": 65537, "e": 3 * 65536 + 100}
    for name, size in sizes.items():
        plain = tmp_path / f"{name}.plain"
        plain.write_bytes(_plain(size))
        subprocess.run([_age(), "-r", recipient, "-o", str(root / name), str(plain)], check=True)
    (root / "not-age").write_bytes(b"plain text, not an age file")

    async def go() -> None:
        store = CryptStore(FsStore("vault", root), identities=ids)
        listed = {o.key: o.size async for b in store.list() for o in b}
        assert listed == sizes
        for name, size in sizes.items():
            assert (await store.head(name)).size == size
            reader = await store.get(name, start=0, end=0)
            assert reader.info.size == size and await reader.read_all() == b""
            assert await (await store.get(name)).read_all() == _plain(size)
            assert (
                await (await store.get(name, start=65530, end=65540)).read_all()
                == (_plain(size)[65530:65540])
            )
        with pytest.raises(NotAge):
            await store.head("not-age")
        with pytest.raises(DecryptError):
            await store.get("not-age")

    run(go())


def test_protected_names_list_only_names_known_or_written(tmp_path: Path) -> None:
    key, _ = _keys(tmp_path)
    ids = load_identities(key)
    names = NameKey.generate()
    root = tmp_path / "vault"
    root.mkdir()

    async def go() -> None:
        writer = CryptStore(FsStore("vault", root), recipients=[ids[0].recipient], names=names)
        for k in ("x/1", "x/2", "y/3"):
            await writer.put(k, k.encode())
        # Another process knows one name (as from a manifest): only it is listed.
        known = {names.stored_name("x/2"): "x/2"}
        reader = CryptStore(FsStore("vault", root), identities=ids, names=names, known=known)
        assert [o.key async for b in reader.list() for o in b] == ["x/2"]
        assert reader.unnamed == 2
        # Reads need no map: the name key gives the stored name.
        assert await (await reader.get("y/3")).read_all() == b"y/3"
        await reader.delete("x/1")
        with pytest.raises(NotFound):
            await reader.head("x/1")

    run(go())


def test_keys_missing_for_a_direction_are_refused_before_any_write(tmp_path: Path) -> None:
    key, _ = _keys(tmp_path)
    ids = load_identities(key)
    root = tmp_path / "vault"
    root.mkdir()

    async def go() -> None:
        read_only = CryptStore(FsStore("vault", root), identities=ids)
        with pytest.raises(EncryptError, match="no age recipient"):
            await read_only.put("k", b"data")
        assert list(root.iterdir()) == []
        write_only = CryptStore(FsStore("vault", root), recipients=[ids[0].recipient])
        await write_only.put("k", b"data")
        with pytest.raises(DecryptError, match="no identity"):
            await write_only.get("k")
        assert (await write_only.head("k")).size == 4  # describing needs no secret

    run(go())


def test_the_engines_api_ciphertext_size_sealed_and_checked(tmp_path: Path) -> None:
    """``on_stored`` sees the ciphertext's size before the put completes (a bytes put stores
    what it added to the metadata there); ``stored_sha256`` refuses another ciphertext."""
    key, _ = _keys(tmp_path)
    ids = load_identities(key)
    root = tmp_path / "vault"
    root.mkdir()

    async def go() -> None:
        store = CryptStore(FsStore("vault", root), recipients=[ids[0].recipient], identities=ids)
        for data in (b"small body", _chunks(3 * MiB)):
            meta: dict[str, str] = {}
            seen: list[int] = []

            def seal(n: int, meta: dict[str, str] = meta, seen: list[int] = seen) -> None:
                seen.append(n)
                meta["proof"] = f"sealed-{n}"

            res = await store.put("obj", data, metadata=meta, on_stored=seal)
            assert seen == [res.stored_size]
            reader = await store.get("obj", start=0, end=0)
            assert reader.metadata["proof"] == f"sealed-{res.stored_size}"
            assert reader.metadata["encryption"] == "age"
            ok = await store.get("obj", stored_sha256=res.stored_sha256)
            assert hashlib.sha256(await ok.read_all()).hexdigest() == res.sha256
            with pytest.raises(StoredMismatch):
                bad = await store.get("obj", stored_sha256="0" * 64)
                await bad.read_all()

    run(go())


def test_abilities_that_would_bypass_encryption_are_hidden(
    s3_server: S3Server, tmp_path: Path
) -> None:
    raw = open_store(StoreConfig.model_validate(s3_store_config(s3_server, "s3c", "cryptab")))
    assert server_side_copy(raw) is not None and upload_cleanup(raw) is not None
    assert unwrap_resumable(raw) is not None
    wrapped = CryptStore(raw, recipients=[])
    assert server_side_copy(wrapped) is None
    assert upload_cleanup(wrapped) is None
    assert unwrap_resumable(wrapped) is None
    assert not wrapped.capabilities.server_side_copy
    # The directory's own temp files are no bypass: still found through the wrapper.
    (tmp_path / "d").mkdir()
    fs = FsStore("d", tmp_path / "d")
    assert temp_cleaner(CryptStore(fs)) is fs
