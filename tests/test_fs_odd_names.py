"""A filesystem source hands over every name a file can have; only a store that cannot hold a
name refuses it, and the message names that store.

A POSIX name holds anything but ``/`` and NUL: newlines, tabs, escapes, backslashes, bidi
overrides. The filesystem store lists, reads, heads and deletes such files (reading is not
writing) and keeps refusing to *write* them (its portable-key rule). Against the real SeaweedFS,
which holds them, an exit copies them and verify passes; into a name-protected directory (keys
are keyed hashes) too; into a plain directory each is refused by the *destination*, by name.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import fs_store_config, run, s3_store_config
from servers import S3Server
from test_transfer import cli, write_config

from daulat.errors import InvalidKey
from daulat.stores.fs import FsStore

ODD = {
    "new\nline.txt": b"a newline in the name",
    "tab\there.txt": b"a tab",
    "esc\x1b[31mred.txt": b"an escape sequence",
    "back\\slash.txt": b"a backslash",
    "bidi/\u202egpj.exe": b"a right-to-left override",
    "cr\rreturn/del\x7f.bin": b"a carriage return directory, a DEL file",
}
PLAIN = {"plain/ok.txt": b"an ordinary name"}
BIDI = "bidi/\u202egpj.exe"  # an ordinary character to a filesystem: it holds it
BACKSLASH = "back\\slash.txt"  # SeaweedFS rewrites '\\' to '/': it refuses it (a probe finds out)


def _fill(root: Path) -> None:
    for key, data in {**ODD, **PLAIN}.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_the_filesystem_store_reads_what_it_holds_and_writes_only_what_it_can(
    tmp_path: Path,
) -> None:
    root = tmp_path / "src"
    _fill(root)
    store = FsStore("hfs", root)

    async def go() -> None:
        listed = {o.key: o.size async for batch in store.list() for o in batch}
        assert listed == {k: len(v) for k, v in {**ODD, **PLAIN}.items()}
        for key, data in ODD.items():
            assert (await store.head(key)).size == len(data)
            assert await (await store.get(key)).read_all() == data
            assert await (await store.get(key, start=1, end=4)).read_all() == data[1:4]
            if key == BIDI:
                continue
            with pytest.raises(InvalidKey, match="store 'hfs' cannot hold key"):
                await store.put(key, b"overwrite?")
            assert (root / key).read_bytes() == data  # the refused put wrote nothing
        for key in ODD:
            await store.delete(key)
            assert not (root / key).exists()
        assert [o.key async for b in store.list() for o in b] == list(PLAIN)

    run(go())


def test_exit_of_odd_names_to_seaweedfs_copies_them_and_verifies(
    s3_server: S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    _fill(src)
    (src / BACKSLASH).unlink()
    held = {k: v for k, v in {**ODD, **PLAIN}.items() if k != BACKSLASH}
    config = write_config(
        tmp_path,
        [fs_store_config(src, "hfs"), s3_store_config(s3_server, "sw", "oddnames")],
    )
    res = cli(["exit", "hfs", "sw", "--json", "--config", str(config)], capsys)
    assert res.code == 0, res.explain()
    assert res.json["refused"] == [] and res.json["failed"] == []
    assert res.json["verified_objects"] == len(held)
    listed = cli(["ls", "sw", "-R", "--json", "--config", str(config)], capsys)
    keys = sorted(e["key"] for e in listed.json if not e["key"].startswith(".daulat/"))
    assert keys == sorted(held)
    res = cli(["verify", "hfs", "sw", "--full", "--json", "--config", str(config)], capsys)
    assert res.code == 0, res.explain()
    # A name SeaweedFS cannot hold is refused by SeaweedFS, which the message names.
    (src / BACKSLASH).write_bytes(ODD[BACKSLASH])
    res = cli(["exit", "hfs", "sw", "--json", "--config", str(config)], capsys)
    assert res.code == 1
    assert [r["key"] for r in res.json["refused"]] == [BACKSLASH], res.explain()
    assert res.json["refused"][0]["reason"].startswith("store 'sw' cannot hold key")
    # Back again: the names come home exact; the filesystem refuses to write the ones it
    # cannot hold safely, naming itself.
    back = tmp_path / "back"
    back.mkdir()
    with config.open("a", encoding="utf-8") as f:
        f.write(f'[stores.back]\nurl = "{back.as_uri()}"\nprovider = "local"\ncountry = "ID"\n')
    res = cli(["copy", "sw", "back", "--json", "--config", str(config)], capsys)
    refused = {r["key"]: r["reason"] for r in res.json["refused"]}
    assert set(refused) == set(ODD) - {BIDI, BACKSLASH}, res.explain()
    assert all(reason.startswith("store 'back' cannot hold key") for reason in refused.values())
    assert (back / BIDI).read_bytes() == ODD[BIDI]


def test_a_plain_directory_destination_refuses_them_by_its_own_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _fill(src)
    dst.mkdir()
    config = write_config(tmp_path, [fs_store_config(src, "hfs"), fs_store_config(dst, "plain")])
    res = cli(["exit", "hfs", "plain", "--json", "--config", str(config)], capsys)
    assert res.code == 1
    refused = {r["key"]: r["reason"] for r in res.json["refused"]}
    assert set(refused) == set(ODD) - {BIDI}, res.explain()
    for reason in refused.values():
        assert reason.startswith("store 'plain' cannot hold key"), reason
        assert "'hfs'" not in reason
    text = cli(["exit", "hfs", "plain", "--config", str(config)], capsys)
    assert "store 'hfs'" not in text.out + text.err
    # The real reason, not a signed manifest that a plain copy does not have.
    assert "plain cannot hold the names refused above" in text.err, text.err
    assert "--encrypt-names" in text.err and "will not change that" in text.err
    assert "signed manifest" not in text.err and "forged" not in text.err, text.err


def test_into_a_name_protected_directory_they_are_carried_and_verified(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, vault = tmp_path / "src", tmp_path / "vault"
    _fill(src)
    vault.mkdir()
    config = write_config(tmp_path, [fs_store_config(src, "hfs"), fs_store_config(vault, "vault")])
    assert cli(["keys", "new", "--out", str(tmp_path / "id.txt")], capsys).code == 0
    recipient = (tmp_path / "id.txt").read_text().split("public key: ")[1].split()[0]
    res = cli(
        [
            "exit", "hfs", "vault", "--encrypt-to", recipient, "--encrypt-names",
            "--json", "--config", str(config),
        ],
        capsys,
    )  # fmt: skip
    assert res.code == 0, res.explain()
    assert res.json["verified_objects"] == len(ODD) + len(PLAIN)
    ident = ["--identity", str(tmp_path / "id.txt")]
    res = cli(["verify", "hfs", "vault", "--full", *ident, "--config", str(config)], capsys)
    assert res.code == 0, res.explain()


def test_sync_delete_removes_odd_names_at_a_directory_destination(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Files the destination holds and the source does not, whatever their names, are deleted."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "keep.txt").write_bytes(b"kept")
    _fill(dst)
    config = write_config(tmp_path, [fs_store_config(src, "src"), fs_store_config(dst, "dst")])
    res = cli(
        ["sync", "src", "dst", "--delete", "--max-delete", "100%", "--json", "--config",
         str(config)],
        capsys,
    )  # fmt: skip
    assert res.code == 0, res.explain()
    assert sorted(res.json["deleted"]["keys"]) == sorted({**ODD, **PLAIN})
    left = sorted(
        str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file() and ".daulat" not in p.parts
    )
    assert left == ["keep.txt"]


def test_every_name_that_is_not_utf8_is_named_in_one_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Several such files in several directories: the one error names them all (and counts
    those beyond the first 20), so one rename pass fixes the store; nothing is copied."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _fill(src)
    dst.mkdir()
    raw = os.fsencode(src)
    os.mkdir(raw + b"/sub")
    names = [b"/a-\xe9.txt", b"/sub/b-\xfe.txt", b"/zz-\xff"]
    for name in names:
        with open(raw + name, "wb") as f:
            f.write(b"x")
    config = write_config(tmp_path, [fs_store_config(src, "hfs"), fs_store_config(dst, "dst")])
    res = cli(["exit", "hfs", "dst", "--config", str(config)], capsys)
    assert res.code == 1, (res.out, res.err)
    assert "3 files have names that are not UTF-8" in res.err, res.err
    for shown in ("b'a-\\xe9.txt'", "b'sub/b-\\xfe.txt'", "b'zz-\\xff'"):
        assert shown in res.err, (shown, res.err)
    assert not [p for p in dst.rglob("*") if p.is_file() and ".daulat" not in p.parts]
    for i in range(25):
        with open(raw + f"/many-{i:02d}-".encode() + b"\xe9", "wb") as f:
            f.write(b"x")
    res = cli(["ls", "hfs", "-R", "--config", str(config)], capsys)
    assert res.code == 1 and "28 files have names that are not UTF-8" in res.err, res.err
    assert "and 8 more" in res.err, res.err


def test_a_name_that_is_not_utf8_stops_the_run_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Keys are UTF-8 everywhere: a file named with other bytes cannot be carried, and leaving
    it out silently would lose it. The run stops (exit 1) naming the file; no traceback."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _fill(src)
    dst.mkdir()
    with open(os.fsencode(src) + b"/latin1-caf\xe9.txt", "wb") as f:
        f.write(b"named in Latin-1")
    config = write_config(tmp_path, [fs_store_config(src, "hfs"), fs_store_config(dst, "dst")])
    for argv in (["ls", "hfs", "-R"], ["copy", "hfs", "dst"], ["exit", "hfs", "dst"]):
        res = cli([*argv, "--config", str(config)], capsys)
        assert res.code == 1, (argv, res.out, res.err)
        assert "Traceback" not in res.out + res.err
        assert "b'latin1-caf\\xe9.txt'" in res.err and "not UTF-8" in res.err, res.err
