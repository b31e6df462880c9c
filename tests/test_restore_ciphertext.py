"""A restore never writes age ciphertext as restored data.

``daulat sync src vault --encrypt-to R``, then ``daulat sync src vault --allow-plaintext
--include 'sub/**'``: the second, filtered run copies ``sub/`` in the clear and signs the
newest manifest of the same chain, which (as every plaintext manifest) lists no encrypted
object. Before, a restore called the encrypted ``atas/*`` unproven, said the vault "holds no
encrypted objects", and with ``--allow-unproven`` wrote their age ciphertext as the restored
files and said "complete" (daulat.transfer.unproven).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import fs_store_config, run, s3_store_config
from servers import S3Server
from test_restore_plaintext import _after_second_of
from test_signed_manifests import MARKER, _manifests, _setup, _store_put, _tool
from test_transfer import cli, fill_config, read_config, unique

from daulat.crypto import AGE_MAGIC
from daulat.errors import IntegrityError
from daulat.stores.base import ObjectInfo
from daulat.stores.fs import FsStore
from daulat.transfer.executor import SMALL_OBJECT
from daulat.transfer.unproven import ARMOR_BEGIN, NotAgeStore, Unproven, _NotAgeReader

FILES = {
    "atas/a.json": MARKER + b" a",
    "atas/b.json": MARKER + b" b",
    "sub/x.json": MARKER + b" x",
}
# Streamed, not read whole (over the engine's SMALL_OBJECT).
BIG = MARKER + os.urandom(SMALL_OBJECT + 4096)


def _encrypted_then_filtered_plaintext(
    tmp: Path, capsys: pytest.CaptureFixture[str], stores: list[dict[str, Any]]
) -> tuple[Path, str]:
    """The two syncs of the module docstring; returns the identity file and its recipient."""
    vault = stores[1]
    fill_config(stores[0], {**FILES, "atas/besar.bin": BIG})
    _, identity, recipient = _setup(tmp, capsys, stores)
    done = cli(["sync", "src", "vault", "--encrypt-to", recipient], capsys)
    assert done.code == 0, done.explain()
    _after_second_of(_manifests(vault)[-1])
    done = cli(["sync", "src", "vault", "--allow-plaintext", "--include", "sub/**"], capsys)
    assert done.code == 0, done.explain()
    held = read_config(vault)
    assert held["sub/x.json"] == FILES["sub/x.json"]
    assert all(held[k].startswith(AGE_MAGIC) for k in held if k.startswith("atas/"))
    return identity, recipient


def _no_ciphertext(back: dict[str, bytes]) -> None:
    written = [k for k, v in back.items() if v.startswith(AGE_MAGIC)]
    assert not written, f"age ciphertext written as restored data: {written}"


@pytest.mark.parametrize("kind", ["fs", "seaweedfs"])
def test_unproven_age_objects_are_decrypted_never_written_as_ciphertext(
    kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    """Without --allow-unproven the encrypted objects stay unrestored, with a note that says
    why a plaintext run's manifest does not list them; with it they are decrypted (and still
    reported unproven, never counted as verified), the small and the streamed alike."""
    monkeypatch.chdir(tmp_path)
    stores = [fs_store_config(tmp_path / n, n) for n in ("src", "vault", "back")]
    if kind == "seaweedfs":
        server: S3Server = request.getfixturevalue("s3_server")
        stores[1] = s3_store_config(server, "vault", unique("cipher-vault"))
    identity, _ = _encrypted_then_filtered_plaintext(tmp_path, capsys, stores)
    atas = ["atas/a.json", "atas/b.json", "atas/besar.bin"]

    restore = ["restore", "vault", "back", "--identity", str(identity), "--json"]
    res = cli(restore, capsys)
    assert res.code == 1, res.explain()
    assert sorted(u["key"] for u in res.json["unproven"]) == atas
    notes = " | ".join(res.json["notes"])
    assert "holds no encrypted objects" not in notes, notes
    assert "--allow-unproven with --identity FILE restores them decrypted" in notes, notes
    back = read_config(stores[2])
    assert back == {"sub/x.json": FILES["sub/x.json"]}

    res = cli([*restore, "--allow-unproven"], capsys)
    assert res.code == 0, res.explain()
    assert sorted(res.json["unproven_restored"]) == atas
    assert res.json["verified_objects"] == 1  # sub/x.json alone is proven
    back = read_config(stores[2])
    _no_ciphertext(back)
    assert back == {**FILES, "atas/besar.bin": BIG}


def test_unproven_age_objects_no_identity_opens_fail_and_are_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No identity, or one the objects are not encrypted to: each unproven age file fails on
    its own with its reason (the run goes on and restores what the manifest proves), nothing
    of it is written, and the run is never "complete"."""
    monkeypatch.chdir(tmp_path)
    stores = [fs_store_config(tmp_path / n, n) for n in ("src", "vault", "back", "lagi")]
    _encrypted_then_filtered_plaintext(tmp_path, capsys, stores)
    atas = ["atas/a.json", "atas/b.json", "atas/besar.bin"]

    res = cli(["restore", "vault", "back", "--allow-unproven", "--json"], capsys)
    assert res.code == 1, res.explain()
    failed = {f["key"]: f["reason"] for f in res.json["failed"]}
    assert sorted(failed) == atas, res.explain()
    for reason in failed.values():
        assert "age-encrypted" in reason and "no identity was given" in reason, reason
        assert "not written" in reason, reason
    assert res.json["unproven_restored"] == []
    assert read_config(stores[2]) == {"sub/x.json": FILES["sub/x.json"]}
    human = cli(["restore", "vault", "back", "--allow-unproven"], capsys)
    assert human.code == 1 and "complete" not in human.out, human.explain()
    assert "3 objects failed above were age-encrypted and not listed" in human.err, human.err
    assert "will not change that" in human.err and "forged" not in human.err, human.err

    other = tmp_path / "other.txt"
    subprocess.run([_tool("age-keygen"), "-o", str(other)], check=True, capture_output=True)
    wrong = ["restore", "vault", "lagi", "--identity", str(other), "--allow-unproven", "--json"]
    res = cli(wrong, capsys)
    assert res.code == 1, res.explain()
    assert not res.json["stopped"], res.explain()
    failed = {f["key"]: f["reason"] for f in res.json["failed"]}
    assert sorted(failed) == atas, res.explain()
    assert all("none of the given identities" in r for r in failed.values()), failed
    assert read_config(stores[3]) == {"sub/x.json": FILES["sub/x.json"]}


@pytest.mark.parametrize("size", [100, SMALL_OBJECT + 4096])
def test_bytes_swapped_to_ciphertext_after_the_first_look_are_refused(
    size: int, tmp_path: Path
) -> None:
    """The first look decides how an unproven object is read; a provider that serves other
    bytes to the read (an age file now) is refused before they are given out, read whole or
    streamed."""
    ciphertext = AGE_MAGIC + b"-> X25519 ..." + b"\0" * size

    async def go() -> None:
        store = FsStore("vault", tmp_path / "vault")
        try:
            (tmp_path / "vault").mkdir()
            await store.put("atas/a.json", MARKER + b"\0" * size)
            reading = await Unproven().reading(store, "atas/a.json", size)
            assert isinstance(reading, NotAgeStore)
            assert await (await reading.get("atas/a.json")).read_all() == MARKER + b"\0" * size
            await store.put("atas/a.json", ciphertext)  # the provider's swap
            with pytest.raises(IntegrityError, match="not written"):
                await (await reading.get("atas/a.json")).read_all()
            with pytest.raises(IntegrityError, match="served as age ciphertext"):
                async for _ in await reading.get("atas/a.json"):
                    pass
        finally:
            await store.close()

    run(go())


class _Pieces:
    """A served object in pieces of ``n`` bytes (a slow link's chunks)."""

    def __init__(self, data: bytes, n: int) -> None:
        self.info = ObjectInfo("k", len(data), datetime.now(UTC))
        self.metadata: dict[str, str] = {}
        self._chunks = [data[i : i + n] for i in range(0, len(data), n)]

    async def read_all(self) -> bytes:
        return b"".join(self._chunks)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for c in self._chunks:
            yield c


@pytest.mark.parametrize("n", [1, 5, 21, 22, 23])
def test_age_header_in_pieces_is_refused_and_plain_bytes_pass_whole(n: int) -> None:
    """The check holds back the first bytes until there are enough to tell: an age header in
    pieces shorter than itself is refused, and plain bytes come out whole and in order (also
    one shorter than the header that begins like it)."""

    async def streamed(data: bytes) -> bytes:
        reader = _NotAgeReader(_Pieces(data, n), "vault", "k")
        return b"".join([c async for c in reader])

    with pytest.raises(IntegrityError):
        run(streamed(AGE_MAGIC + b"rest of an age file"))
    for plain in (MARKER * 9, AGE_MAGIC[:10], b"", AGE_MAGIC[:-1] + b"x" + MARKER):
        assert run(streamed(plain)) == plain


def test_an_object_a_later_plaintext_run_deleted_stays_unproven_when_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Why an earlier encrypted manifest of the chain proves nothing a later plaintext one
    leaves out: that one never lists encrypted objects, so it cannot say whether its run
    deleted one. ``sync --delete --allow-plaintext`` deletes ``atas/a.json``; the provider puts
    its old ciphertext back. The restore never counts it as proven (the earlier manifest would
    "prove" a deleted file), and decrypts it only as unproven."""
    monkeypatch.chdir(tmp_path)
    stores = [fs_store_config(tmp_path / n, n) for n in ("src", "vault", "back")]
    fill_config(stores[0], FILES)
    _, identity, recipient = _setup(tmp_path, capsys, stores)
    done = cli(["sync", "src", "vault", "--encrypt-to", recipient], capsys)
    assert done.code == 0, done.explain()
    kept = read_config(stores[1])["atas/a.json"]
    _after_second_of(_manifests(stores[1])[-1])
    (tmp_path / "src" / "atas" / "a.json").unlink()
    done = cli(["sync", "src", "vault", "--allow-plaintext", "--delete"], capsys)
    assert done.code == 0, done.explain()
    assert "atas/a.json" not in read_config(stores[1])
    _store_put(stores[1], "atas/a.json", kept)  # the provider's replay

    restore = ["restore", "vault", "back", "--identity", str(identity), "--json"]
    res = cli(restore, capsys)
    assert res.code == 1, res.explain()
    assert [u["key"] for u in res.json["unproven"]] == ["atas/a.json"]
    assert read_config(stores[2]) == {k: v for k, v in FILES.items() if k != "atas/a.json"}
    res = cli([*restore, "--allow-unproven"], capsys)
    assert res.code == 0, res.explain()
    assert res.json["unproven_restored"] == ["atas/a.json"]
    assert res.json["verified_objects"] == 2
    assert read_config(stores[2]) == FILES  # decrypted, never ciphertext


def test_an_armored_age_file_is_never_written_as_restored_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An age file in ASCII armor (`age -a`) among the unproven objects, encrypted to the very
    recipient whose identity the restore holds: before, it was written as it was (armored
    ciphertext) and reported "restored anyway". It fails on its own, with its reason, and the
    binary age files beside it are still decrypted."""
    monkeypatch.chdir(tmp_path)
    stores = [fs_store_config(tmp_path / n, n) for n in ("src", "vault", "back")]
    identity, recipient = _encrypted_then_filtered_plaintext(tmp_path, capsys, stores)
    armored = subprocess.run(
        [_tool("age"), "-a", "-r", recipient],
        input=MARKER + b" armored",
        capture_output=True,
        check=True,
    ).stdout
    assert armored.startswith(ARMOR_BEGIN)
    vault = tmp_path / "vault"
    (vault / "atas" / "armored.txt").write_bytes(armored)
    (vault / "atas" / "spaced.txt").write_bytes(b"\n  " + armored)

    res = cli(
        ["restore", "vault", "back", "--identity", str(identity), "--allow-unproven", "--json"],
        capsys,
    )
    assert res.code == 1, res.explain()
    failed = {f["key"]: f["reason"] for f in res.json["failed"]}
    assert sorted(failed) == ["atas/armored.txt", "atas/spaced.txt"], res.explain()
    assert all("ASCII armor" in r and "not written" in r for r in failed.values()), failed
    human = cli(
        ["restore", "vault", "back", "--identity", str(identity), "--allow-unproven"], capsys
    )
    assert "2 objects failed above were ASCII-armored age files" in human.err, human.err
    assert "age-encrypted and not listed" not in human.err, human.err
    assert "--allow-unproven restores them anyway" not in human.err, human.err
    back = read_config(stores[2])
    assert "atas/armored.txt" not in back and "atas/spaced.txt" not in back
    _no_ciphertext(back)
    assert back == {**FILES, "atas/besar.bin": BIG}


@pytest.mark.parametrize("n", [1, 7, 40, 64, 65])
def test_an_armored_header_in_pieces_is_refused_and_look_alikes_pass(n: int) -> None:
    """The same hold-back for armor, after blank space too; text that only begins like it
    passes whole."""

    async def streamed(data: bytes) -> bytes:
        reader = _NotAgeReader(_Pieces(data, n), "vault", "k")
        return b"".join([c async for c in reader])

    for age_file in (ARMOR_BEGIN + b"\nYWdl", b"\r\n \t" + ARMOR_BEGIN + b"\n", ARMOR_BEGIN):
        with pytest.raises(IntegrityError):
            run(streamed(age_file))
    for plain in (b"-----BEGIN PGP MESSAGE-----\n" + MARKER * 4, ARMOR_BEGIN[:-1], b"  x"):
        assert run(streamed(plain)) == plain
