"""Never plaintext over ciphertext, judged by real location: a store defined at a sub-path of an
encrypted (or name-protected) directory or bucket refuses a plain copy (see
:mod:`daulat.transfer.above`). Real directories and SeaweedFS; every refusal leaves the
destination untouched."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import fs_store_config, s3_store_config
from servers import S3Server
from test_transfer import CliResult, cli, fill_config, read_config, unique, write_config

FILES = {"docs/a.txt": b"alpha", "docs/b.txt": b"beta", "c.bin": b"\x00\x01"}


def _fs(root: Path, name: str, **extra: Any) -> dict[str, Any]:
    return {**fs_store_config(root, name), **extra}


def _recipient(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    made = cli(["keys", "new", "--out", str(tmp_path / "id.txt"), "--no-config"], capsys)
    assert made.code == 0, made.err
    return made.out.strip()


def _refused(res: CliResult, *words: str) -> None:
    assert res.code == 2, f"expected a refusal: {res.code} {res.out} {res.err}"
    assert "Traceback" not in res.out + res.err
    for w in words:
        assert w in res.err, res.err


def _fresh_machine(tmp_path: Path, name: str, stores: list[dict[str, Any]]) -> Path:
    """A directory with a daulat.toml and no state: another machine."""
    where = tmp_path / name
    write_config(where, stores)
    return where


def test_store_at_a_subdirectory_of_an_encrypted_directory_refuses_plaintext(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src, vault = tmp_path / "src", tmp_path / "vault"
    fill_config(_fs(src, "src"), FILES)
    monkeypatch.chdir(tmp_path)
    recipient = _recipient(tmp_path, capsys)
    write_config(tmp_path, [_fs(src, "src"), _fs(vault, "vault")])
    assert cli(["exit", "src", "vault", "--encrypt-to", recipient], capsys).code == 0
    # A store defined later at a new sub-path of the encrypted directory (same machine).
    config = write_config(
        tmp_path, [_fs(src, "src"), _fs(vault, "vault"), _fs(vault / "newsub", "vsub")]
    )
    _refused(cli(["copy", "src:docs", "vsub"], capsys), "vsub", "plaintext")
    assert not (vault / "newsub").exists()
    # An encrypted copy there is fine.
    assert cli(["copy", "src:docs", "vsub", "--encrypt-to", recipient], capsys).code == 0

    # Another machine: no journal, no store at the vault's root; the signed manifest above the
    # store's root says it.
    other = _fresh_machine(tmp_path, "m2", [_fs(src, "src"), _fs(vault / "sub2", "alias")])
    monkeypatch.chdir(other)
    _refused(cli(["copy", "src", "alias"], capsys), "age-encrypted")
    assert not (vault / "sub2").exists()
    assert config.is_file()


def test_store_inside_a_store_declaring_encrypt_to_refuses_plaintext(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing written yet: the configuration alone says the enclosing directory is encrypted."""
    src, vault = tmp_path / "src", tmp_path / "vault"
    fill_config(_fs(src, "src"), FILES)
    monkeypatch.chdir(tmp_path)
    recipient = _recipient(tmp_path, capsys)
    write_config(
        tmp_path,
        [
            _fs(src, "src"),
            _fs(vault, "vault", encrypt_to=[recipient]),
            _fs(vault / "inner", "inner"),
        ],
    )
    _refused(cli(["copy", "src", "inner"], capsys), "encrypt_to", "'vault'")
    assert not vault.exists()


def test_store_below_a_name_protected_directory_refuses_real_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src, vault = tmp_path / "src", tmp_path / "vault"
    fill_config(_fs(src, "src"), FILES)
    monkeypatch.chdir(tmp_path)
    recipient = _recipient(tmp_path, capsys)
    write_config(tmp_path, [_fs(src, "src"), _fs(vault, "vault")])
    made = cli(["exit", "src", "vault", "--encrypt-to", recipient, "--encrypt-names"], capsys)
    assert made.code == 0, made.explain()
    other = _fresh_machine(tmp_path, "m2", [_fs(src, "src"), _fs(vault / "s", "alias")])
    monkeypatch.chdir(other)
    res = cli(["copy", "src", "alias", "--encrypt-to", recipient], capsys)
    _refused(res, "names.key.age")
    assert not (vault / "s").exists()


def test_seaweedfs_store_at_a_prefix_of_an_encrypted_bucket_refuses_plaintext(
    tmp_path: Path,
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = unique("above-enc")
    src = _fs(tmp_path / "src", "hfs")
    fill_config(src, FILES)
    encb = s3_store_config(s3_server, "encb", bucket)
    sub4 = s3_store_config(s3_server, "sub4", bucket, "sub4")
    monkeypatch.chdir(tmp_path)
    recipient = _recipient(tmp_path, capsys)
    write_config(tmp_path, [src, encb])
    made = cli(["exit", "hfs", "encb", "--encrypt-to", recipient, "--encrypt-names"], capsys)
    assert made.code == 0, made.explain()
    write_config(tmp_path, [src, encb, sub4])
    _refused(cli(["copy", "hfs", "sub4"], capsys), "sub4")
    assert read_config(sub4, skip_manifests=False) == {}

    # Another machine, only the sub-path store, same endpoint: the bucket root's manifest.
    other = _fresh_machine(tmp_path, "m3", [src, {**sub4, "name": "alias"}])
    monkeypatch.chdir(other)
    _refused(cli(["copy", "hfs", "alias"], capsys), "age-encrypted")
    assert read_config(sub4, skip_manifests=False) == {}
    shutil.rmtree(other)


def test_drill_into_a_subdirectory_of_an_encrypted_directory_refuses_plaintext(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A drill's scratch copy goes into the destination's store: below an encrypted directory
    it is refused as a plain copy there is (same machine, by the journal and the
    configuration; another machine, by the signed manifest above the store's root)."""
    src, vault = tmp_path / "src", tmp_path / "vault"
    fill_config(_fs(src, "src"), FILES)
    monkeypatch.chdir(tmp_path)
    recipient = _recipient(tmp_path, capsys)
    write_config(tmp_path, [_fs(src, "src"), _fs(vault, "vault")])
    assert cli(["exit", "src", "vault", "--encrypt-to", recipient], capsys).code == 0
    write_config(tmp_path, [_fs(src, "src"), _fs(vault, "vault"), _fs(vault / "newsub", "vsub")])
    assert cli(["scan", "src"], capsys).code == 0
    _refused(cli(["drill", "src", "vsub", "--sample", "2"], capsys), "vsub", "plaintext")
    assert not (vault / "newsub").exists()

    other = _fresh_machine(tmp_path, "m2", [_fs(src, "src"), _fs(vault / "sub2", "alias")])
    monkeypatch.chdir(other)
    assert cli(["scan", "src"], capsys).code == 0
    _refused(cli(["drill", "src", "alias", "--sample", "2"], capsys), "age-encrypted")
    assert not (vault / "sub2").exists()
    # Encrypted, the drill is what an encrypted exit there would be: allowed.
    made = cli(["drill", "src", "alias", "--sample", "2", "--encrypt-to", recipient], capsys)
    assert made.code == 0, made.explain()
