"""A refused run into a name-protected destination writes nothing there, not even its name key.

Every refusal of a writing run (``sync --delete`` over ``--max-delete``, an empty source, filters
with ``--delete``, other recipients than the replica's) says that nothing was copied or deleted.
With ``--encrypt-names`` the run finds (or makes) the destination's name key before it plans,
since the plan compares stored names; the key and its signature were written to the destination
then too, before the refusals were decided. Now they are written only once the run goes ahead,
so the destination after a refused run is byte for byte what it was (empty if it was empty),
and a fresh key that a refused run made is kept nowhere.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import fs_store_config, s3_store_config
from servers import S3Server
from test_encrypt_names import _age, _decrypt, _identity, _local_key, write_config
from test_safety import refused
from test_transfer import cli, fill_config, read_config, unique

NAME_KEY = ".daulat/names.key.age"
PROTECT = ["--encrypt-names", "--json"]


def _names_dir(tmp: Path) -> Path:
    return tmp / ".daulat" / "names"


def _local_keys(tmp: Path) -> list[Path]:
    return sorted(_names_dir(tmp).glob("*.key")) if _names_dir(tmp).exists() else []


def _everything(raw: Mapping[str, Any], root: Path | None) -> dict[str, bytes]:
    """The destination's whole content: every file under a directory store's root (daulat's
    own and temporary ones too), or every object of a bucket, by key."""
    if root is not None:
        if not root.exists():
            return {}
        return {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }
    return read_config(raw, skip_manifests=False)


def _destination(
    kind: str, tmp: Path, request: pytest.FixtureRequest
) -> tuple[dict[str, Any], Path | None]:
    if kind == "fs":
        return fs_store_config(tmp / "vault", "vault"), tmp / "vault"
    server: S3Server = request.getfixturevalue("s3_server")
    return s3_store_config(server, "vault", unique("names-refused")), None


@pytest.mark.parametrize("kind", ["fs", "seaweedfs"])
def test_sync_delete_over_the_limit_writes_no_name_key(
    kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    """The hostile review's case: a first protected sync --delete into a destination holding
    other objects, refused by --max-delete, left .daulat/names.key.age and its .sig there."""
    monkeypatch.chdir(tmp_path)
    identity, recipient = _identity(tmp_path, capsys)
    src = fs_store_config(tmp_path / "src", "src")
    vault, root = _destination(kind, tmp_path, request)
    fill_config(src, {"baru/1.txt": b"satu", "baru/2.txt": b"dua"})
    fill_config(vault, {f"lama/{i}.txt": b"lama" for i in range(4)})
    write_config(tmp_path, [src, vault])
    before = _everything(vault, root)
    sync = ["sync", "src", "vault", "--delete", "--encrypt-to", recipient, *PROTECT]

    res = cli(sync, capsys)
    refused(res, "4", "--max-delete", "nothing was copied or deleted")
    assert _everything(vault, root) == before
    assert _local_keys(tmp_path) == [], "a refused run kept the name key it made"

    # Allowed, the same run goes ahead and keeps its key in both places.
    res = cli([*sync, "--max-delete", "100%"], capsys)
    assert res.code == 0, res.explain()
    assert res.json["deleted_objects"] == 4 and res.json["copied_objects"] == 2
    at_vault = _everything(vault, root)
    key = _local_key(tmp_path)
    assert _decrypt(_age(), identity, at_vault[NAME_KEY]).strip() == key.hex().encode()
    assert NAME_KEY + ".sig" in at_vault


def test_refused_sync_delete_leaves_a_protected_replica_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A destination that already has its name key: a refused run does not rewrite it (nor
    its signature), and the key stays the one the replica's objects are stored under."""
    monkeypatch.chdir(tmp_path)
    identity, recipient = _identity(tmp_path, capsys)
    src = fs_store_config(tmp_path / "src", "src")
    vault = {**fs_store_config(tmp_path / "vault", "vault"), "encrypt_to": [recipient]}
    vault["encrypt_names"] = True
    fill_config(src, {f"tps/{i}.json": b"%d suara" % i for i in range(6)})
    write_config(tmp_path, [src, vault])
    first = cli(["sync", "src", "vault", "--json"], capsys)
    assert first.code == 0, first.explain()
    before = _everything(vault, tmp_path / "vault")
    key = _local_key(tmp_path)
    for i in range(5):
        (tmp_path / "src" / "tps" / f"{i}.json").unlink()

    res = cli(["sync", "src", "vault", "--delete", "--json"], capsys)
    refused(res, "5", "--max-delete", "nothing was copied or deleted")
    assert _everything(vault, tmp_path / "vault") == before
    # A second run reads the same key, and a resumed or repeated run still goes ahead.
    again = cli(["sync", "src", "vault", "--json"], capsys)
    assert again.code == 0, again.explain()
    assert again.json["copied_objects"] == 0
    assert _local_key(tmp_path) == key
    at_vault = _everything(vault, tmp_path / "vault")
    assert _decrypt(_age(), identity, at_vault[NAME_KEY]).strip() == key.hex().encode()


def test_other_refusals_of_a_protected_run_write_no_name_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty source with --delete, filters with --delete, and (by exit) an empty source:
    each refused before anything is written, into an empty destination that stays empty."""
    monkeypatch.chdir(tmp_path)
    _, recipient = _identity(tmp_path, capsys)
    (tmp_path / "kosong").mkdir()
    src = fs_store_config(tmp_path / "src", "src")
    empty = fs_store_config(tmp_path / "kosong", "kosong")
    vault = fs_store_config(tmp_path / "vault", "vault")
    fill_config(src, {"a/1.txt": b"1", "b/2.txt": b"2"})
    write_config(tmp_path, [src, empty, vault])
    enc = ["--encrypt-to", recipient, *PROTECT]

    res = cli(["sync", "kosong", "vault", "--delete", *enc], capsys)
    refused(res, "kosong", "--allow-empty-source")
    assert _everything(vault, tmp_path / "vault") == {}
    res = cli(["exit", "kosong", "vault", *enc], capsys)
    refused(res, "kosong", "--allow-empty-source")
    assert _everything(vault, tmp_path / "vault") == {}
    res = cli(["sync", "src", "vault", "--delete", "--include", "a/**", *enc], capsys)
    refused(res, "vault", "filters")
    assert _everything(vault, tmp_path / "vault") == {}
    assert _local_keys(tmp_path) == []


def test_another_recipient_refused_leaves_the_name_key_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exit to another recipient is refused unless --reencrypt; it used to rewrite
    names.key.age encrypted to that recipient first, so that the replica's own identity could
    no longer recover the name key from the destination."""
    monkeypatch.chdir(tmp_path)
    mine, me = _identity(tmp_path, capsys)
    _, them = _identity(tmp_path, capsys, "theirs.txt")
    src = fs_store_config(tmp_path / "src", "src")
    vault = fs_store_config(tmp_path / "vault", "vault")
    fill_config(src, {f"c1/{i}.pdf": b"formulir %d" % i for i in range(3)})
    write_config(tmp_path, [src, vault])
    assert cli(["exit", "src", "vault", "--encrypt-to", me, *PROTECT], capsys).code == 0
    before = _everything(vault, tmp_path / "vault")

    res = cli(["exit", "src", "vault", "--encrypt-to", them, *PROTECT], capsys)
    refused(res, "other recipients", "--reencrypt")
    after = _everything(vault, tmp_path / "vault")
    assert after == before
    assert _decrypt(_age(), mine, after[NAME_KEY]).strip() == _local_key(tmp_path).hex().encode()


def test_a_newer_manifest_it_cannot_read_stops_another_machine_before_the_key_is_rewritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another machine with the replica's name key file (copied over, as the key's message
    advises) but no identity meets the replica's newer encrypted manifest: refused before
    writing (its manifest could not carry that one's entries). It used to re-sign
    names.key.age with its own key first."""
    from test_safety import pin_signer_of

    from daulat.crypto import new_identity

    recipient = new_identity(tmp_path / "id.txt")
    src = fs_store_config(tmp_path / "src", "src")
    vault = fs_store_config(tmp_path / "vault", "vault")
    fill_config(src, {f"rekap/{i}.csv": b"%d" % i for i in range(3)})
    a = write_config(tmp_path / "a", [src, vault])
    b = write_config(tmp_path / "b", [src, vault])
    args = ["exit", "src", "vault", "--encrypt-to", recipient, *PROTECT]
    first = cli([*args, "-c", str(a)], capsys)
    assert first.code == 0, first.explain()
    pin_signer_of(b, signer_config=a)
    (tmp_path / "b" / ".daulat" / "names").mkdir(parents=True)
    key_file = _local_keys(tmp_path / "a")[0]
    shutil.copy(key_file, tmp_path / "b" / ".daulat" / "names" / key_file.name)
    before = _everything(vault, tmp_path / "vault")

    res = cli([*args, "-c", str(b)], capsys)
    assert res.code == 2, res.explain()
    assert "newer manifest" in res.err and "--identity" in res.err, res.err
    assert "Traceback" not in res.err
    assert _everything(vault, tmp_path / "vault") == before


def test_a_key_made_meanwhile_by_another_run_stops_this_one_before_it_writes(
    tmp_path: Path,
) -> None:
    """The key is kept only after planning; should another run have put a different key in
    this machine's state in between, this run planned with a key that is not the
    destination's: it stops (exit 2's error) and writes nothing, and the other key stays."""
    from conftest import run

    from daulat.config import StoreConfig
    from daulat.crypto import new_identity, parse_recipients
    from daulat.stores import open_store
    from daulat.transfer.model import Endpoint
    from daulat.transfer.names import NameKey, NameKeyError, local_key_path, name_key_for_run

    recipients = parse_recipients([new_identity(tmp_path / "id.txt")])
    vault = fs_store_config(tmp_path / "vault", "vault")
    state = tmp_path / "state"

    async def go() -> None:
        store = open_store(StoreConfig.model_validate(vault))
        try:
            dst = Endpoint(store, "arsip/", label="vault:arsip/")
            found = await name_key_for_run(state, dst, recipients)
            other = NameKey.generate()
            path = local_key_path(state, dst)
            path.parent.mkdir(parents=True)
            path.write_bytes(other._file_content())
            with pytest.raises(NameKeyError, match="another run made the name key of vault:arsip/"):
                await found.keep()
            assert path.read_bytes() == other._file_content()
        finally:
            await store.close()

    run(go())
    assert _everything(vault, tmp_path / "vault") == {}


@pytest.mark.parametrize("kind", ["fs", "seaweedfs"])
def test_turning_on_protected_names_over_real_named_copies_needs_delete(
    kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    """A replica written without name protection, then synced with --encrypt-names to a new
    recipient (--reencrypt): the earlier copies under the files' real names stayed next to the
    new hashed ones, readable with the old key, listed in the signed manifest, and the new
    identity could not restore them. Without --delete that run is refused (dry run too),
    writing nothing; with --delete the old copies go and the new identity restores it all."""
    monkeypatch.chdir(tmp_path)
    old, old_recipient = _identity(tmp_path, capsys, "old.txt")
    new, new_recipient = _identity(tmp_path, capsys, "new.txt")
    files = {"a.txt": b"one\n", "b.txt": b"two\n"}
    src = fs_store_config(tmp_path / "src", "src")
    vault, root = _destination(kind, tmp_path, request)
    back = fs_store_config(tmp_path / "back", "back")
    fill_config(src, files)
    write_config(tmp_path, [src, vault, back])
    first = cli(["sync", "src", "vault", "--encrypt-to", old_recipient, "--json"], capsys)
    assert first.code == 0, first.explain()
    before = _everything(vault, root)
    switch = ["sync", "src", "vault", "--encrypt-to", new_recipient, "--reencrypt", *PROTECT]

    for dry in ([], ["--dry-run"]):
        res = cli([*switch, *dry], capsys)
        refused(res, "2 objects", "real names", "--delete", "new prefix")
        assert _everything(vault, root) == before
        assert _local_keys(tmp_path) == [], "a refused run kept the name key it made"

    res = cli([*switch, "--delete", "--max-delete", "100%"], capsys)
    assert res.code == 0, res.explain()
    assert res.json["deleted_objects"] == 2 and res.json["copied_objects"] == 2
    at_vault = _everything(vault, root)
    assert not set(files) & set(at_vault), "copies under real names are left"
    # Every object the replica now holds; the first run's own manifest (under .daulat/, kept
    # as the replica's signed history) stays encrypted to the old key.
    objects = {k: v for k, v in at_vault.items() if not k.startswith(".daulat/")}
    assert len(objects) == 2
    for name, blob in objects.items():
        opened = subprocess.run(
            [_age(), "-d", "-i", str(old)], input=blob, capture_output=True, check=False
        )
        assert opened.returncode != 0, f"the old identity still opens {name}"
    res = cli(["restore", "vault", "back", "--identity", str(new), "--json"], capsys)
    assert res.code == 0, res.explain()
    restored = _everything(back, tmp_path / "back")
    assert {k: v for k, v in restored.items() if not k.startswith(".daulat/")} == files
