"""Leaving a store that was itself an exit's destination: daulat's own `.daulat/` manifests there
are not data to carry on, and must not block verification."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import fs_store_config, s3_store_config
from servers import S3Server
from test_encryption import MARKER, _readme_snippet
from test_signed_manifests import _age_encrypt, _setup, _store_put, _tool
from test_transfer import cli, fill_config, read_config, unique, write_config


def test_exit_from_an_earlier_destination_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stores = "".join(
        f'[stores.{n}]\nurl = "file://{tmp_path}/{n}"\nprovider = "local"\ncountry = "ID"\n'
        for n in ("a", "b", "c")
    )
    (tmp_path / "daulat.toml").write_text(stores)
    for i in range(10):
        p = tmp_path / "a" / f"k{i}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(str(i))
    monkeypatch.chdir(tmp_path)
    assert cli(["exit", "a", "b"], capsys).code == 0
    done = cli(["exit", "b", "c", "--json"], capsys)
    assert done.code == 0
    summary = done.json
    assert summary["source_objects"] == 10 and summary["verified_objects"] == 10
    assert cli(["verify", "b", "c", "--full"], capsys).code == 0
    copied = sorted(p.name for p in (tmp_path / "c").iterdir() if p.is_file())
    assert copied == [f"k{i}.txt" for i in range(10)]


# --------------------------------------------------------------------------------------------
# Onward copies of encrypted replicas: the replica's signed manifest travels with its ciphertext.


def _replica(
    tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stores: list[dict[str, Any]],
    files: dict[str, bytes],
    *,
    names: bool,
    vault: str = "vault:arsip",
) -> tuple[Path, str]:
    """daulat.toml with ``stores`` (the first is the data), a pinned signer and an identity,
    and an encrypted exit of the data to ``vault``. Returns the identity file and recipient."""
    monkeypatch.chdir(tmp)
    _, identity, recipient = _setup(tmp, capsys, stores)
    fill_config(stores[0], files)
    argv = ["exit", stores[0]["name"], vault, "--encrypt-to", recipient, "--json"]
    done = cli([*argv, "--encrypt-names"] if names else argv, capsys)
    assert done.code == 0, done.explain()
    return identity, recipient


def _onward_files(token: str) -> dict[str, bytes]:
    files = {f"c1/tps-{i:03d}.json": MARKER + f" {token} {i} ".encode() * (i + 1) for i in range(8)}
    files["c1/kosong.txt"] = b""
    files["c2/besar.bin"] = MARKER + os.urandom(9 * 1024 * 1024)  # streamed, not read whole
    return files


@pytest.mark.parametrize("names", [False, True], ids=["names", "protected-names"])
def test_onward_exit_of_an_encrypted_replica_restores_and_verifies(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    names: bool,
) -> None:
    """exit data vault:arsip --encrypt-to R; exit vault:arsip chain (no identity anywhere);
    restore chain back -i: every object, checked against the replica's own manifest."""
    stores = [fs_store_config(tmp_path / n, n) for n in ("data", "vault", "chain", "chain2")]
    stores += [fs_store_config(tmp_path / n, n) for n in ("back", "back2")]
    files = _onward_files("onward")
    identity, _ = _replica(tmp_path, monkeypatch, capsys, stores, files, names=names)

    done = cli(["exit", "vault:arsip", "chain", "--json"], capsys)
    assert done.code == 0, done.explain()
    assert done.json["verified_objects"] == len(files) and done.json["copied_objects"] == len(files)
    assert any(".daulat/origin/" in n for n in done.json["notes"])
    chain = tmp_path / "chain"
    # The onward manifest is plain and tells nothing the ciphertext does not: no plaintext
    # hashes, under protected names no real names; the replica's manifest is carried beside it.
    (onward,) = chain.glob(".daulat/manifest-*.jsonl")
    text = onward.read_text()
    assert not any(hashlib.sha256(v).hexdigest() in text for v in files.values())
    assert ("tps-000" in text) is not names
    header, *entries = [json.loads(line) for line in text.splitlines()]
    assert header["daulat"] == "manifest" and header["store"] == "chain"
    stored = {
        p.relative_to(chain).as_posix(): p.read_bytes() for p in chain.rglob("*") if p.is_file()
    }
    for e in entries:
        assert e["encryption"] == "age" and "sha256" not in e
        assert e["stored_sha256"] == hashlib.sha256(stored[e["key"]]).hexdigest()
    (origin,) = {e["origin"]["carried_as"] for e in entries}
    (replica_manifest,) = (tmp_path / "vault" / "arsip" / ".daulat").glob("manifest-*.jsonl.age")
    assert stored[origin] == replica_manifest.read_bytes()
    assert stored[origin + ".sig"] == Path(f"{replica_manifest}.sig").read_bytes()
    assert (".daulat/names.key.age" in stored) is names

    done = cli(["restore", "chain", "back", "-i", str(identity), "--json"], capsys)
    assert done.code == 0, done.explain()
    assert done.json["verified_objects"] == len(files)
    assert "carried in .daulat/origin/" in done.json["provenance"]
    assert read_config(stores[4]) == files

    # verify: the onward copy against the replica (as stored) and against the data (decrypted).
    for argv in (
        ["verify", "vault:arsip", "chain"],
        ["verify", "vault:arsip", "chain", "--full"],
        ["verify", "vault:arsip", "chain", "--full", "-i", str(identity)],
        ["verify", "data", "chain", "--full", "-i", str(identity)],
    ):
        done = cli([*argv, "--json"], capsys)
        assert done.code == 0, f"{argv}: {done.explain()}"
        assert done.json["verified"] == len(files)
    # Without the identity it cannot compare plaintext with ciphertext, and says so (under
    # protected names the name key recovered above already says the copy is encrypted).
    done = cli(["verify", "data", "chain", "--full", "--json"], capsys)
    assert done.code in (1, 2) and "--identity" in done.out + done.err

    # Again: nothing to copy, nothing refused; and a copy of the copy carries the same proof.
    done = cli(["exit", "vault:arsip", "chain", "--json"], capsys)
    assert done.code == 0 and done.json["copied_objects"] == 0, done.explain()
    done = cli(["exit", "chain", "chain2", "--json"], capsys)
    assert done.code == 0, done.explain()
    assert (tmp_path / "chain2" / origin).read_bytes() == stored[origin]
    done = cli(["restore", "chain2", "back2", "-i", str(identity), "--json"], capsys)
    assert done.code == 0, done.explain()
    assert read_config(stores[5]) == files


def test_onward_copy_of_part_of_a_replica_restores_that_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stores = [fs_store_config(tmp_path / n, n) for n in ("data", "vault", "part", "back")]
    files = _onward_files("part")
    identity, _ = _replica(tmp_path, monkeypatch, capsys, stores, files, names=False)
    done = cli(["exit", "vault:arsip/c1", "part", "--json"], capsys)
    assert done.code == 0, done.explain()
    done = cli(["restore", "part", "back", "-i", str(identity), "--json"], capsys)
    assert done.code == 0, done.explain()
    assert read_config(stores[3]) == {
        k.removeprefix("c1/"): v for k, v in files.items() if k.startswith("c1/")
    }


@pytest.mark.parametrize("names", [False, True], ids=["names", "protected-names"])
def test_onward_copy_restores_neither_planted_nor_tampered_objects(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    names: bool,
) -> None:
    stores = [fs_store_config(tmp_path / n, n) for n in ("data", "vault", "chain", "back")]
    files = _onward_files("tamper")
    identity, recipient = _replica(tmp_path, monkeypatch, capsys, stores, files, names=names)
    assert cli(["exit", "vault:arsip", "chain"], capsys).code == 0
    chain = tmp_path / "chain"
    objects = sorted(
        p for p in chain.rglob("*") if p.is_file() and ".daulat" not in p.relative_to(chain).parts
    )
    # The provider of the onward copy swaps one object for a valid age file of its own, and
    # plants another (under a stored name, where names are protected).
    victim = objects[0]
    victim.write_bytes(_age_encrypt(recipient, b"forged"))
    planted = chain / ("f" * 64 if names else "c1/planted.json")
    planted.write_bytes(_age_encrypt(recipient, MARKER + b" planted"))

    done = cli(["restore", "chain", "back", "-i", str(identity), "--json"], capsys)
    assert done.code == 1, done.explain()
    summary = done.json
    # Reported by the real name, the stored one beside it when names are protected.
    failed = {f.get("stored_as", f["key"]): f for f in summary["failed"]}
    victim_key = victim.relative_to(chain).as_posix()
    assert "not the ciphertext the onward copy's manifest lists" in failed[victim_key]["reason"]
    assert failed[victim_key]["key"] in files
    planted_key = planted.relative_to(chain).as_posix()
    # Planted: unproven, with or without protected names (then its real name is unknown too).
    assert [u["key"] for u in summary["unproven"]] == [planted_key]
    restored = read_config(stores[3])
    assert b"forged" not in restored.values() and MARKER + b" planted" not in restored.values()
    assert len(restored) == len(files) - 1
    assert all(files[k] == v for k, v in restored.items())


def test_carried_manifest_is_believed_only_through_its_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stores = [fs_store_config(tmp_path / n, n) for n in ("data", "vault", "chain", "back")]
    files = _onward_files("ref")
    identity, recipient = _replica(tmp_path, monkeypatch, capsys, stores, files, names=False)
    # Another replica of the same customer, whose signed manifest the provider can move about.
    assert (
        cli(["exit", "data:c1", "vault:lain", "--encrypt-to", recipient, "--json"], capsys).code
        == 0
    )
    assert cli(["exit", "vault:arsip", "chain"], capsys).code == 0
    (carried,) = (tmp_path / "chain" / ".daulat" / "origin").glob("*.jsonl.age")
    good, good_sig = carried.read_bytes(), Path(f"{carried}.sig").read_bytes()

    def restore() -> str:
        done = cli(["restore", "chain", "back", "-i", str(identity), "--json"], capsys)
        assert done.code == 2, done.explain()
        assert not (tmp_path / "back").exists()
        return done.err

    # Withheld.
    carried.unlink()
    assert "missing there: withheld or deleted" in restore()
    # Replaced by another manifest the customer signed (it is not the one referenced).
    (other,) = (tmp_path / "vault" / "lain" / ".daulat").glob("manifest-*.jsonl.age")
    carried.write_bytes(other.read_bytes())
    shutil.copy(f"{other}.sig", f"{carried}.sig")
    assert "not the file the onward manifest names" in restore()
    carried.write_bytes(good)
    Path(f"{carried}.sig").write_bytes(good_sig)
    assert cli(["restore", "chain", "back", "-i", str(identity)], capsys).code == 0


def test_replica_manifest_moved_or_renamed_by_its_provider_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The replica's provider passes off another signed manifest (another replica's, or an older
    one of its own) as the replica's newest. This machine, which saw the replica's newest,
    refuses the onward run; a machine that never saw it copies and carries it (it holds no
    identity to read its header), and the restore, which has the identity, refuses it."""
    names = ("data", "vault", "moved", "renamed", "back")
    stores = [fs_store_config(tmp_path / n, n) for n in names]
    files = _onward_files("moved")
    identity, recipient = _replica(tmp_path, monkeypatch, capsys, stores, files, names=False)
    assert cli(["exit", "data:c1", "vault:lain", "--encrypt-to", recipient], capsys).code == 0
    # A second run makes the replica's first manifest an older one.
    fill_config(stores[0], {"c3/baru.txt": b"new"})
    assert cli(["exit", "data", "vault:arsip", "--encrypt-to", recipient], capsys).code == 0
    files["c3/baru.txt"] = b"new"
    arsip = tmp_path / "vault" / "arsip" / ".daulat"
    older, _newest = sorted(arsip.glob("manifest-*.jsonl.age"))
    (other,) = (tmp_path / "vault" / "lain" / ".daulat").glob("manifest-*.jsonl.age")
    for case, planted in (("moved", other), ("renamed", older)):
        for p in arsip.glob("manifest-29*"):
            p.unlink()
        fake = arsip / "manifest-29991231T235959Z.jsonl.age"  # newest by name
        shutil.copy(planted, fake)
        shutil.copy(f"{planted}.sig", f"{fake}.sig")

        done = cli(["exit", "vault:arsip", case], capsys)
        assert done.code == 2, f"{case}: {done.explain()}"
        assert "Nothing was copied" in done.err
        assert not (tmp_path / case).exists()

        # Another machine: the same daulat.toml and signing key, no local state.
        elsewhere = tmp_path / f"elsewhere-{case}"
        elsewhere.mkdir()
        shutil.copy(tmp_path / "daulat.toml", elsewhere)
        shutil.copy(tmp_path / "id.txt.sign", elsewhere)
        monkeypatch.chdir(elsewhere)
        done = cli(["exit", "vault:arsip", case], capsys)
        assert done.code == 0, f"{case}: {done.explain()}"
        monkeypatch.chdir(tmp_path)
        done = cli(["restore", case, "back", "-i", str(identity)], capsys)
        assert done.code == 2, f"{case}: {done.explain()}"
        why = "written for prefix 'lain/'" if case == "moved" else "renamed (replayed)"
        assert why in done.err, done.err
        assert not (tmp_path / "back").exists()


def test_onward_exit_refuses_a_replica_whose_manifest_no_pinned_signer_signed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stores = [fs_store_config(tmp_path / n, n) for n in ("data", "vault", "chain")]
    _replica(tmp_path, monkeypatch, capsys, stores, _onward_files("unpinned"), names=False)
    # A machine with the stores but without the signer pinned (and its own key only).
    elsewhere = tmp_path / "elsewhere"
    write_config(elsewhere, stores)
    monkeypatch.chdir(elsewhere)
    done = cli(["exit", "vault:arsip", "chain"], capsys)
    assert done.code == 2, done.explain()
    assert "pin the key that signed it" in done.err and "Nothing was copied" in done.err
    assert not (tmp_path / "chain").exists()


def test_readme_restore_of_an_onward_copy_without_daulat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's recipe for onward copies, run verbatim with ssh-keygen, age, jq and
    sha256sum; the original replica's own recipe still works too."""
    for tool in ("age", "jq", "ssh-keygen", "sha256sum"):
        _tool(tool)
    stores = [fs_store_config(tmp_path / n, n) for n in ("data", "vault", "elsewhere")]
    files = _onward_files("resep")
    identity, _ = _replica(tmp_path, monkeypatch, capsys, stores, files, names=True, vault="vault")
    identity.rename(tmp_path / "kpu-identity.txt")
    assert cli(["exit", "vault", "elsewhere"], capsys).code == 0
    for heading in ("#### Onward copies", "#### Name-protected copies"):
        script = _readme_snippet(heading)
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{heading}: {done.stderr}"
        assert read_config(fs_store_config(tmp_path / "restored", "r")) == files
        shutil.rmtree(tmp_path / "restored")
    # The recipe's checks really check: a carried manifest that is not the one named fails.
    (carried,) = (tmp_path / "elsewhere" / ".daulat" / "origin").glob("*.jsonl.age")
    carried.write_bytes(carried.read_bytes() + b"x")
    script = _readme_snippet("#### Onward copies")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode != 0 and not (tmp_path / "restored").exists()


@pytest.mark.parametrize("names", [False, True], ids=["names", "protected-names"])
def test_onward_exit_between_seaweedfs_buckets_restores_and_catches_tampering(
    tmp_path: Path,
    s3_server: S3Server,
    s3_server_b: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    names: bool,
) -> None:
    """The replica in one SeaweedFS bucket, the onward copy in another server's bucket (the
    ciphertext streams through, large objects included) and in a bucket beside it (the server
    copies); a tampered large object there is caught by its ciphertext hash."""
    vault = s3_store_config(s3_server, "vault", unique("onward-vault"))
    chain = s3_store_config(s3_server_b, "chain", unique("onward-chain"))
    near = s3_store_config(s3_server, "near", unique("onward-near"))
    stores = [fs_store_config(tmp_path / "data", "data"), vault, chain, near]
    stores += [fs_store_config(tmp_path / n, n) for n in ("back", "back2")]
    files = _onward_files("s3")
    identity, recipient = _replica(tmp_path, monkeypatch, capsys, stores, files, names=names)
    for dst in ("chain", "near"):
        done = cli(["exit", "vault:arsip", dst, "--json"], capsys)
        assert done.code == 0, done.explain()
        assert done.json["verified_objects"] == len(files)
        assert done.json["server_side_copy"] is (dst == "near")
    assert cli(["exit", "vault:arsip", "near", "--json"], capsys).json["copied_objects"] == 0
    at_chain = read_config(chain, skip_manifests=False)
    assert any(k.startswith(".daulat/origin/") for k in at_chain)
    for dst, back in (("chain", stores[4]), ("near", stores[5])):
        done = cli(["restore", dst, back["name"], "-i", str(identity), "--json"], capsys)
        assert done.code == 0, done.explain()
        assert read_config(back) == files
        done = cli(["verify", "data", dst, "--full", "-i", str(identity), "--json"], capsys)
        assert done.code == 0 and done.json["verified"] == len(files), done.explain()

    # The provider of the onward copy replaces the large object with other ciphertext.
    big = max((k for k in at_chain if not k.startswith(".daulat/")), key=lambda k: len(at_chain[k]))
    _store_put(chain, big, _age_encrypt(recipient, MARKER + os.urandom(9 * 1024 * 1024)))
    shutil.rmtree(tmp_path / "back")
    done = cli(["restore", "chain", "back", "-i", str(identity), "--json"], capsys)
    assert done.code == 1, done.explain()
    # Named by its real name; where names are protected, the stored one beside it.
    assert [f["key"] for f in done.json["failed"]] == ["c2/besar.bin"]
    assert done.json["failed"][0].get("stored_as", "c2/besar.bin") == big
    assert "does not match its expected SHA-256" in done.json["failed"][0]["reason"]
    restored = read_config(stores[4])
    assert restored == {k: v for k, v in files.items() if k != "c2/besar.bin"}
