"""Signed, chained destination manifests against a hostile provider (issue 10 item 2).

age proves who can read a copy, not who wrote it: anyone who knows the recipient can encrypt
bytes to it. These tests play the provider — planting objects encrypted to the recipient,
forging and replaying manifests, withholding the newest one, swapping the name key — against
real stores (the filesystem and SeaweedFS), with the real ``age`` and ``ssh-keygen`` programs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import fs_store_config, run, s3_store_config
from servers import S3Server
from test_transfer import assert_exact_copy, cli, fill_config, read_config, unique, write_config

from daulat.config import StoreConfig, load_config
from daulat.signing import (
    MANIFEST_NAMESPACE,
    SignatureError,
    load_signing_key,
    parse_public_key,
    public_key_of,
    sign_bytes,
    verify_bytes,
)
from daulat.stores import open_store
from daulat.transfer import Summary
from daulat.transfer.proof import retry_would_help

MARKER = b"SURAT-SUARA-ASLI"
NAMESPACE = "daulat-manifest@daulat"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"the {name} program is missing (apt-get install age openssh-client)")
    return path


def _age_encrypt(recipient: str, data: bytes) -> bytes:
    return subprocess.run(
        [_tool("age"), "-r", recipient], input=data, capture_output=True, check=True
    ).stdout


def _age_decrypt(identity: Path, data: bytes) -> bytes:
    return subprocess.run(
        [_tool("age"), "-d", "-i", str(identity)], input=data, capture_output=True, check=True
    ).stdout


def _files(token: str, n: int = 12) -> dict[str, bytes]:
    files = {f"{token}/tps-{i:03d}.json": MARKER + os.urandom(32) * (i + 1) for i in range(n)}
    files[f"{token}/kosong.txt"] = b""
    files[f"{token}/besar.bin"] = MARKER + os.urandom(9 * 1024 * 1024)
    return files


def _setup(
    tmp: Path, capsys: pytest.CaptureFixture[str], stores: list[dict[str, Any]]
) -> tuple[Path, Path, str]:
    """daulat.toml with ``stores``, then ``keys new`` (which pins its signing key there)."""
    config = write_config(tmp, stores)
    done = cli(["keys", "new", "--out", str(tmp / "id.txt"), "--config", str(config)], capsys)
    assert done.code == 0, done.explain()
    return config, tmp / "id.txt", done.out.strip()


def _store_put(raw: Mapping[str, Any], key: str, data: bytes) -> None:
    async def go() -> None:
        store = open_store(StoreConfig.model_validate(raw))
        try:
            await store.put(key, data)
        finally:
            await store.close()

    run(go())


def _store_delete(raw: Mapping[str, Any], key: str) -> None:
    async def go() -> None:
        store = open_store(StoreConfig.model_validate(raw))
        try:
            await store.delete(key)
        finally:
            await store.close()

    run(go())


def _manifests(raw: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Manifest keys at the destination (relative to ``prefix``), oldest first."""
    at = read_config(raw, prefix, skip_manifests=False)
    return sorted(k for k in at if k.startswith(".daulat/manifest-") and not k.endswith(".sig"))


def _header_and_entries(
    raw: Mapping[str, Any], key: str, identity: Path | None, prefix: str = ""
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    blob = read_config(raw, prefix, skip_manifests=False)[key]
    text = _age_decrypt(identity, blob) if key.endswith(".age") and identity else blob
    header, *entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    return header, entries


# ------------------------------------------------------------------------ the signature format


def test_signatures_interoperate_with_ssh_keygen(tmp_path: Path) -> None:
    """daulat's signatures pass ``ssh-keygen -Y verify`` and ``-Y check-novalidate``; keys and
    signatures ssh-keygen makes work in daulat; a wrong namespace, key or byte fails."""
    keygen = _tool("ssh-keygen")
    # A key ssh-keygen makes: daulat signs with it, ssh-keygen checks.
    subprocess.run(
        [keygen, "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(tmp_path / "theirs")],
        check=True,
    )
    theirs = load_signing_key(tmp_path / "theirs")
    public_line = (tmp_path / "theirs.pub").read_text().split()[:2]
    assert theirs.public.line.split() == public_line
    data = b"manifest bytes \x00\xff" * 1000
    (tmp_path / "data").write_bytes(data)
    (tmp_path / "data.sig").write_text(sign_bytes(theirs, data, MANIFEST_NAMESPACE))
    (tmp_path / "allowed").write_text(f"daulat {theirs.public.line}\n")
    with (tmp_path / "data").open("rb") as stdin:
        ok = subprocess.run(
            [
                *(keygen, "-Y", "verify", "-f", str(tmp_path / "allowed"), "-I", "daulat"),
                *("-n", NAMESPACE, "-s", str(tmp_path / "data.sig")),
            ],
            stdin=stdin,
            capture_output=True,
            text=True,
        )
    assert ok.returncode == 0 and "Good" in ok.stdout, ok.stderr
    with (tmp_path / "data").open("rb") as stdin:
        novalidate = subprocess.run(
            [keygen, "-Y", "check-novalidate", "-n", NAMESPACE, "-s", str(tmp_path / "data.sig")],
            stdin=stdin,
            capture_output=True,
            text=True,
        )
    assert novalidate.returncode == 0, novalidate.stderr
    with (tmp_path / "data").open("rb") as stdin:
        wrong_ns = subprocess.run(
            [keygen, "-Y", "check-novalidate", "-n", "file", "-s", str(tmp_path / "data.sig")],
            stdin=stdin,
            capture_output=True,
        )
    assert wrong_ns.returncode != 0

    # ssh-keygen signs: daulat verifies, and refuses the wrong data, namespace or key.
    (tmp_path / "other").write_bytes(data)
    subprocess.run(
        [keygen, "-Y", "sign", "-f", str(tmp_path / "theirs"), "-n", NAMESPACE, "other"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    made = (tmp_path / "other.sig").read_text()
    pinned = parse_public_key((tmp_path / "theirs.pub").read_text())
    assert verify_bytes(made, data, MANIFEST_NAMESPACE, [pinned]) == pinned
    with pytest.raises(SignatureError, match="does not match"):
        verify_bytes(made, data + b"x", MANIFEST_NAMESPACE, [pinned])
    with pytest.raises(SignatureError, match="signed for"):
        verify_bytes(made, data, "daulat-names-key@daulat", [pinned])
    subprocess.run(
        [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True
    )
    with pytest.raises(SignatureError, match="not a pinned signer"):
        verify_bytes(made, data, MANIFEST_NAMESPACE, [public_key_of(tmp_path / "stranger")])
    with pytest.raises(SignatureError):
        verify_bytes(made.replace("A", "B", 3), data, MANIFEST_NAMESPACE, [pinned])
    # The private key never shows itself.
    assert "PRIVATE" not in repr(theirs) and str(theirs).startswith("SigningKey(SHA256:")


# ----------------------------------------------------------------------------------- keys new


def test_keys_new_pins_the_signer_in_the_config_and_keeps_comments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "daulat.toml"
    config.write_text(
        "# Komisi Pemilihan Umum: where the election data lives\n"
        "\n"
        "[stores.vault]   # our own server\n"
        f'url = "file://{tmp_path}/vault"\n'
        'provider = "local"\n'
        'country = "ID"   # Jakarta\n'
    )
    first = cli(["keys", "new", "--out", "id.txt"], capsys)
    assert first.code == 0, first.explain()
    recipient = first.out.strip()
    assert recipient.startswith("age1") and "\n" not in recipient  # stdout: the recipient only
    sign = tmp_path / "id.txt.sign"
    assert stat.S_IMODE(sign.stat().st_mode) == 0o600
    public = subprocess.run(
        [_tool("ssh-keygen"), "-y", "-f", str(sign)], capture_output=True, text=True, check=True
    ).stdout.split()[:2]
    assert " ".join(public) in first.err and "PRIVATE" not in first.err + first.out
    text = config.read_text()
    for comment in ("# Komisi Pemilihan Umum", "# our own server", "# Jakarta"):
        assert comment in text
    loaded = load_config(config)
    assert [k.line for k in loaded.signers] == [" ".join(public)]
    assert loaded.signing_key == sign.resolve()
    assert 'signing_key = "id.txt.sign"' in text  # relative to the config
    shown = cli(["keys", "show", "id.txt.sign"], capsys)
    assert shown.code == 0 and shown.out.strip() == " ".join(public)
    assert cli(["keys", "show", "id.txt"], capsys).out.strip() == recipient

    # A second key: appended, the signing key switches to it, the first stays pinned.
    (tmp_path / "keys").mkdir()
    second = cli(["keys", "new", "--out", "keys/two.txt", "--config", str(config)], capsys)
    assert second.code == 0, second.explain()
    loaded = load_config(config)
    assert len(loaded.signers) == 2 and loaded.signers[0].line == " ".join(public)
    assert 'signing_key = "keys/two.txt.sign"' in config.read_text()
    assert "# our own server" in config.read_text()

    # --no-config leaves the file alone.
    before = config.read_bytes()
    third = cli(["keys", "new", "--out", "three.txt", "--no-config"], capsys)
    assert third.code == 0 and config.read_bytes() == before
    assert (tmp_path / "three.txt.sign").exists() and "signers = [" in third.err

    # An existing .sign is never overwritten, and nothing new is written then.
    (tmp_path / "four.txt.sign").write_text("keep me")
    refused = cli(["keys", "new", "--out", "four.txt"], capsys)
    assert refused.code == 2 and "overwrite" in refused.err
    assert not (tmp_path / "four.txt").exists()
    assert (tmp_path / "four.txt.sign").read_text() == "keep me"


def test_keys_new_without_a_config_and_bad_signers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    done = cli(["keys", "new", "--out", "solo.txt"], capsys)
    assert done.code == 0, done.explain()
    assert not (tmp_path / "daulat.toml").exists()
    assert "no daulat.toml updated" in done.err and 'signers = ["ssh-ed25519 ' in done.err
    missing = cli(["keys", "new", "--out", "x.txt", "--config", "nowhere.toml"], capsys)
    assert missing.code == 2 and not (tmp_path / "x.txt").exists()

    # A malformed signer is a config error naming the field (exit 2, no traceback).
    config = write_config(tmp_path, [fs_store_config(tmp_path / "a", "a")])
    config.write_text('signers = ["ssh-rsa AAAAB3NzaC1yc2E", "nonsense"]\n' + config.read_text())
    bad = cli(["stores", "--config", str(config)], capsys)
    assert bad.code == 2 and "field 'signers'" in bad.err and "Traceback" not in bad.err
    assert "entry 1" in bad.err and "entry 2" in bad.err


# -------------------------------------------------------------------- planted objects, forged


@pytest.mark.parametrize("kind", ["fs", "seaweedfs"])
def test_planted_object_is_unproven_and_not_restored(
    kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    monkeypatch.chdir(tmp_path)
    files = _files("tanam")
    if kind == "seaweedfs":
        server: S3Server = request.getfixturevalue("s3_server")
        src = s3_store_config(server, "src", unique("plant-src"))
        vault = s3_store_config(server, "vault", unique("plant-vault"))
        back = s3_store_config(server, "back", unique("plant-back"))
    else:
        src, vault, back = (fs_store_config(tmp_path / n, n) for n in ("src", "vault", "back"))
    fill_config(src, files)
    _, identity, recipient = _setup(tmp_path, capsys, [src, vault, back])
    done = cli(["exit", "src", "vault", "--encrypt-to", recipient], capsys)
    assert done.code == 0, done.explain()

    # The provider knows the recipient: it encrypts what it likes to it.
    planted = "tanam/tps-999.json"
    _store_put(vault, planted, _age_encrypt(recipient, MARKER + b" forged votes"))
    restore = ["restore", "vault", "back", "--identity", str(identity)]
    refused = cli([*restore, "--json"], capsys)
    assert refused.code == 1, refused.explain()
    summary = refused.json
    assert [u["key"] for u in summary["unproven"]] == [planted]
    assert "not listed in the manifest" in summary["unproven"][0]["reason"]
    assert summary["verified_objects"] == len(files) and not summary["ok"]
    assert "signed by the pinned key SHA256:" in summary["provenance"]
    assert_exact_copy(files, read_config(back))  # everything else, and not the planted one

    human = cli(restore, capsys)
    assert human.code == 1 and f"unproven: '{planted}'" in human.out
    assert "--allow-unproven" in human.err

    checked = cli(["verify", "src", "vault", "--json"], capsys)
    assert checked.code == 1
    assert {p["key"]: p["reason"] for p in checked.json["problems"]} == {
        planted: "unproven: at the destination but not listed in its signed manifest"
    }

    allowed = cli([*restore, "--allow-unproven", "--json"], capsys)
    assert allowed.code == 0, allowed.explain()
    assert allowed.json["unproven_restored"] == [planted]
    assert allowed.json["verified_objects"] == len(files)  # never counted as verified
    assert any("--allow-unproven" in n for n in allowed.json["notes"])
    assert read_config(back)[planted] == MARKER + b" forged votes"
    said = cli([*restore, "--allow-unproven"], capsys)
    assert "unproven object(s) restored anyway" in said.out


def _forge_manifest(
    vault: Mapping[str, Any],
    recipient: str,
    entries: list[dict[str, Any]],
    name: str,
    signer_key: Path | None,
    tmp: Path,
) -> None:
    """A manifest the provider could make: validly encrypted to the recipient, newest by name,
    unsigned or signed by a key of its own."""
    header = {
        "daulat": "manifest",
        "format": 2,
        "seq": 99,
        "prev": None,
        "signer": "",
        "time": "2099-01-01T00:00:00+00:00",
        "audit_head": None,
        "prefix": "",
        "keys": "relative",
    }
    if signer_key is not None:
        header["signer"] = load_signing_key(signer_key).public.line
    body = "".join(json.dumps(x) + "\n" for x in [header, *entries]).encode()
    blob = _age_encrypt(recipient, body)
    _store_put(vault, f".daulat/{name}", blob)
    if signer_key is not None:
        sig = sign_bytes(load_signing_key(signer_key), blob, MANIFEST_NAMESPACE)
        _store_put(vault, f".daulat/{name}.sig", sig.encode())


@pytest.mark.parametrize("signed_by", ["nobody", "a stranger"])
def test_forged_newest_manifest_is_ignored(
    signed_by: str,
    tmp_path: Path,
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A newer-named manifest, validly encrypted, listing a planted object: not believed, on
    this machine or a new one; the planted object stays unproven."""
    monkeypatch.chdir(tmp_path)
    files = _files("palsu", n=6)
    src = s3_store_config(s3_server, "src", unique("forge-src"))
    vault = s3_store_config(s3_server, "vault", unique("forge-vault"))
    back = fs_store_config(tmp_path / "back", "back")
    fill_config(src, files)
    config, identity, recipient = _setup(tmp_path, capsys, [src, vault, back])
    assert cli(["exit", "src", "vault", "--encrypt-to", recipient], capsys).code == 0
    (real_manifest,) = _manifests(vault)
    _, entries = _header_and_entries(vault, real_manifest, identity)

    planted, content = "palsu/tps-666.json", MARKER + b" forged"
    _store_put(vault, planted, _age_encrypt(recipient, content))
    forged_entry = {"key": planted, "size": len(content)}
    forged_entry["sha256"] = hashlib.sha256(content).hexdigest()
    stranger = None
    if signed_by == "a stranger":
        stranger = tmp_path / "stranger"
        subprocess.run(
            [_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True
        )
    _forge_manifest(
        vault,
        recipient,
        [*entries, forged_entry],
        "manifest-20990101T000000Z.jsonl.age",
        stranger,
        tmp_path,
    )

    for where in ("this machine", "a new machine"):
        if where == "a new machine":
            fresh = tmp_path / "fresh"
            fresh.mkdir()
            shutil.copy(config, fresh / "daulat.toml")
            shutil.copy(identity, fresh / "id.txt")
            monkeypatch.chdir(fresh)
        restored = cli(["restore", "vault", "back", "--identity", "id.txt", "--json"], capsys)
        assert restored.code == 1, (where, restored.explain())
        summary = restored.json
        assert summary["checked_against_manifest"] == real_manifest, where
        assert [u["key"] for u in summary["unproven"]] == [planted], where
        assert any("manifest-20990101T000000Z" in n for n in summary["notes"]), where
        assert planted not in read_config(back)
    monkeypatch.chdir(tmp_path)
    checked = cli(["verify", "src", "vault", "--json"], capsys)
    assert checked.code == 1
    reasons = {p["key"]: p["reason"] for p in checked.json["problems"]}
    assert reasons[".daulat/manifest-20990101T000000Z.jsonl.age"].startswith(
        "manifest not believed"
    )
    assert reasons[planted].startswith("unproven")


# ------------------------------------------------------------------- replayed and withheld


def test_replayed_or_withheld_manifest_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    files = _files("ulang", n=4)
    stores = [fs_store_config(tmp_path / n, n) for n in ("src", "vault", "back")]
    fill_config(stores[0], files)
    _, identity, recipient = _setup(tmp_path, capsys, stores)
    assert cli(["exit", "src", "vault", "--encrypt-to", recipient], capsys).code == 0
    changed = "ulang/tps-001.json"
    (tmp_path / "src" / changed).write_bytes(MARKER + b" the corrected count")
    assert cli(["exit", "src", "vault", "--encrypt-to", recipient], capsys).code == 0
    old, new = _manifests(stores[1])
    h1, _ = _header_and_entries(stores[1], old, identity)
    h2, _ = _header_and_entries(stores[1], new, identity)
    # The chain: seq 2 names the hash of seq 1's file as stored.
    assert (h1["seq"], h2["seq"]) == (1, 2)
    assert h2["prev"] == hashlib.sha256((tmp_path / "vault" / old).read_bytes()).hexdigest()
    audit = (tmp_path / ".daulat" / "audit.jsonl").read_text().splitlines()
    # Anchored: the local audit log's head when it was written (before this run's own entry).
    assert h2["audit_head"] == json.loads(audit[-2])["hash"]

    restore = ["restore", "vault", "back", "--identity", str(identity)]
    assert cli(restore, capsys).code == 0
    vault_dir = tmp_path / "vault" / ".daulat"
    hidden = tmp_path / "hidden"
    hidden.mkdir()

    # Withheld: the provider deletes the newest manifest.
    for suffix in ("", ".sig"):
        (vault_dir / Path(new).name).with_name(Path(new).name + suffix).rename(
            hidden / (Path(new).name + suffix)
        )
    shutil.rmtree(tmp_path / "back")
    withheld = cli(restore, capsys)
    assert withheld.code == 2, withheld.explain()
    assert Path(new).name in withheld.err and "seq 2" in withheld.err
    assert not (tmp_path / "back").exists() or not any((tmp_path / "back").rglob("*"))
    assert cli(["verify", "src", "vault"], capsys).code == 1

    # Replayed: the older manifest under a newer name (its signature is genuine).
    for suffix in ("", ".sig"):
        shutil.copy(
            vault_dir / (Path(old).name + suffix),
            vault_dir / f"manifest-20990101T000000Z.jsonl.age{suffix}",
        )
    replayed = cli(restore, capsys)
    assert replayed.code == 2, replayed.explain()
    assert "seq 2" in replayed.err and Path(new).name in replayed.err
    checked = cli(["verify", "src", "vault", "--json"], capsys)
    assert checked.code == 1
    # (Without the identity verify cannot read the offered manifest's seq: it knows the file
    # is not the newest one seen here.)
    assert any(f"not {new} (seq 2) seen here" in p["reason"] for p in checked.json["problems"])
    with_id = cli(["verify", "src", "vault", "--identity", str(identity), "--json"], capsys)
    assert with_id.code == 1
    reasons = {p["key"]: p["reason"] for p in with_id.json["problems"]}
    # Its header names the file it was written as: a renamed manifest is not believed...
    assert "renamed (replayed)" in reasons[".daulat/manifest-20990101T000000Z.jsonl.age"]
    # ... and the one left (seq 1) is older than the newest seen here.
    assert any("passed off as the newest" in r for r in reasons.values())

    # Even a machine that never saw seq 2 is not fooled by the renamed replay once seq 2 is
    # back: the renamed file is refused, seq 2 is the newest valid one.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(tmp_path / "daulat.toml", fresh / "daulat.toml")
    for name in hidden.iterdir():
        name.rename(vault_dir / name.name)
    monkeypatch.chdir(fresh)
    elsewhere = cli([*restore, "--json"], capsys)
    assert elsewhere.code == 0, elsewhere.explain()
    assert elsewhere.json["checked_against_manifest"] == new
    assert any("renamed" in n for n in elsewhere.json["notes"])
    monkeypatch.chdir(tmp_path)
    back_again = cli([*restore, "--json"], capsys)
    assert back_again.code == 0, back_again.explain()
    assert back_again.json["checked_against_manifest"] == new


def test_a_manifest_replaced_under_its_own_name_is_not_named_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The provider copies seq 1 (file and genuine signature) over seq 2's name and deletes
    seq 1: verify without the identity says the file under that name was replaced, instead of
    "offers X as its newest manifest, not X (seq 2)"."""
    monkeypatch.chdir(tmp_path)
    files = _files("ganti", n=3)
    stores = [fs_store_config(tmp_path / n, n) for n in ("src", "vault")]
    fill_config(stores[0], files)
    _, _, recipient = _setup(tmp_path, capsys, stores)
    assert cli(["exit", "src", "vault", "--encrypt-to", recipient], capsys).code == 0
    (tmp_path / "src" / "ganti/tps-001.json").write_bytes(MARKER + b" changed")
    assert cli(["exit", "src", "vault", "--encrypt-to", recipient], capsys).code == 0
    old, new = _manifests(stores[1])
    for suffix in ("", ".sig"):
        older = tmp_path / "vault" / (old + suffix)
        shutil.copy(older, tmp_path / "vault" / (new + suffix))
        older.unlink()
    checked = cli(["verify", "src", "vault", "--json"], capsys)
    assert checked.code == 1
    (reason,) = [p["reason"] for p in checked.json["problems"] if new in p["reason"]]
    assert reason.count(Path(new).name) == 1, reason
    assert "replaced" in reason and "seq 2" in reason, reason


# -------------------------------------------------------------------------------- name keys


def test_forged_name_key_is_never_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    files = _files("nama", n=4)
    src, vault = (fs_store_config(tmp_path / n, n) for n in ("src", "vault"))
    fill_config(src, files)
    config, identity, recipient = _setup(tmp_path, capsys, [src, vault])
    enc = ["--encrypt-to", recipient, "--encrypt-names"]
    done = cli(["exit", "src", "vault", *enc], capsys)
    assert done.code == 0, done.explain()
    key_obj = tmp_path / "vault" / ".daulat" / "names.key.age"
    sig = key_obj.with_name("names.key.age.sig")
    assert sig.exists()
    (tmp_path / "allowed").write_text(f"daulat {load_config(config).signers[0].line}\n")
    with key_obj.open("rb") as stdin:
        checked = subprocess.run(
            [
                *(_tool("ssh-keygen"), "-Y", "verify", "-f", str(tmp_path / "allowed")),
                *("-I", "daulat", "-n", "daulat-names-key@daulat", "-s", str(sig)),
            ],
            stdin=stdin,
            capture_output=True,
        )
    assert checked.returncode == 0, checked.stderr

    # A new machine: the config, the identity and the signing key it names (an exit signs).
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(config, fresh / "daulat.toml")
    shutil.copy(identity, fresh / "id.txt")
    signing_key = load_config(config).signing_key
    assert signing_key is not None
    shutil.copy(signing_key, fresh / signing_key.relative_to(config.parent.resolve()))
    monkeypatch.chdir(fresh)
    # The provider swaps in a name key it chose (it knows the recipient), unsigned...
    genuine = key_obj.read_bytes(), sig.read_bytes()
    key_obj.write_bytes(_age_encrypt(recipient, b"ab" * 32 + b"\n"))
    sig.unlink()
    for argv in (
        ["exit", "src", "vault", *enc, "--identity", "id.txt"],
        ["verify", "src", "vault", "--identity", "id.txt"],
    ):
        refused = cli(argv, capsys)
        assert refused.code == 2, (argv, refused.explain())
        assert "names.key.age is not used" in refused.err
    # ... or signed by a key of its own.
    subprocess.run(
        [_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")],
        check=True,
    )
    sig.write_text(
        sign_bytes(
            load_signing_key(tmp_path / "stranger"), key_obj.read_bytes(), "daulat-names-key@daulat"
        )
    )
    refused = cli(["exit", "src", "vault", *enc, "--identity", "id.txt"], capsys)
    assert refused.code == 2 and "not a pinned signer" in refused.err
    assert not (fresh / ".daulat" / "names").exists() or not any(
        (fresh / ".daulat" / "names").iterdir()
    )

    # The genuine one is recovered: the same stored names, nothing stored twice.
    key_obj.write_bytes(genuine[0])
    sig.write_bytes(genuine[1])
    before = {p.name for p in (tmp_path / "vault").iterdir() if p.is_file()}
    again = cli(["exit", "src", "vault", *enc, "--identity", "id.txt", "--json"], capsys)
    assert again.code == 0, again.explain()
    assert {p.name for p in (tmp_path / "vault").iterdir() if p.is_file()} == before


# ------------------------------------------------------------------------------ a new machine


def test_new_machine_restores_everything_with_config_and_identity(
    tmp_path: Path,
    s3_server: S3Server,
    s3_server_b: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two sources exited into one encrypted SeaweedFS prefix; on a new machine, a directory with
    only daulat.toml (holding the signer) and the identity restores every object of both."""
    monkeypatch.chdir(tmp_path)
    one, two = _files("satu", n=5), _files("dua", n=3)
    src1 = s3_store_config(s3_server, "src1", unique("nm-src1"))
    src2 = fs_store_config(tmp_path / "src2", "src2")
    vault = s3_store_config(s3_server_b, "vault", unique("nm-vault"))
    back = s3_store_config(s3_server, "back", unique("nm-back"))
    fill_config(src1, one)
    fill_config(src2, two)
    config, identity, recipient = _setup(tmp_path, capsys, [src1, src2, vault, back])
    assert cli(["exit", "src1", "vault:arsip", "--encrypt-to", recipient], capsys).code == 0
    assert cli(["copy", "src2", "vault:arsip", "--encrypt-to", recipient], capsys).code == 0
    # The newest manifest alone lists both sources' objects, keys relative to arsip/.
    newest = _manifests(vault, "arsip/")[-1]
    header, entries = _header_and_entries(vault, newest, identity, "arsip/")
    assert header["seq"] == 2 and header["prefix"] == "arsip/"
    assert {e["key"] for e in entries} == set(one) | set(two)

    fresh = tmp_path / "new-machine"
    fresh.mkdir()
    shutil.copy(config, fresh / "daulat.toml")
    shutil.copy(identity, fresh / "kpu-identity.txt")
    monkeypatch.chdir(fresh)
    restored = cli(["restore", "vault:arsip", "back", "-i", "kpu-identity.txt", "--json"], capsys)
    assert restored.code == 0, restored.explain()
    summary = restored.json
    assert summary["verified_objects"] == len(one) + len(two) and summary["unproven"] == []
    assert summary["checked_against_manifest"] == "arsip/" + newest
    assert "signed by the pinned key" in summary["provenance"]
    # This machine has no signing key file of the config: it signs with its own, and says so.
    assert any("is not on this machine" in n for n in summary["notes"])
    assert_exact_copy({**one, **two}, read_config(back))
    assert set(os.listdir(fresh)) == {"daulat.toml", "kpu-identity.txt", ".daulat"}


def test_no_pinned_signer_refuses_and_says_how_to_pin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    files = _files("pin", n=3)
    stores = [fs_store_config(tmp_path / n, n) for n in ("src", "vault", "back")]
    fill_config(stores[0], files)
    config = write_config(tmp_path, stores)
    made = cli(["keys", "new", "--out", "id.txt", "--no-config"], capsys)
    recipient = made.out.strip()
    exited = cli(["exit", "src", "vault", "--encrypt-to", recipient], capsys)
    assert exited.code == 0, exited.explain()
    # No signing_key configured: the state directory's own key, created 0600, and a notice.
    local = tmp_path / ".daulat" / "keys" / "signing"
    assert stat.S_IMODE(local.stat().st_mode) == 0o600
    line = f'signers = ["{public_key_of(local).line}"]'
    assert line in exited.err

    refused = cli(["restore", "vault", "back", "--identity", "id.txt"], capsys)
    assert refused.code == 2
    assert "no pinned signer" in refused.err and line in refused.err
    assert "Traceback" not in refused.err and not (tmp_path / "back").exists()
    config.write_text(line + "\n" + config.read_text())
    ok = cli(["restore", "vault", "back", "--identity", "id.txt"], capsys)
    assert ok.code == 0, ok.explain()
    assert "note:" not in ok.err  # the key is pinned now: no notice
    assert_exact_copy(files, read_config(stores[2]))


def test_manifest_of_an_earlier_version_still_restores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A copy made before signatures (no header, keys with the destination prefix in front,
    no .sig) restores with --allow-unsigned, which says its origin is not proven."""
    monkeypatch.chdir(tmp_path)
    files = _files("lama", n=4)
    stores = [fs_store_config(tmp_path / n, n) for n in ("src", "vault", "back")]
    fill_config(stores[0], files)
    _, identity, recipient = _setup(tmp_path, capsys, stores)
    assert cli(["exit", "src", "vault:arsip", "--encrypt-to", recipient], capsys).code == 0
    daulat_dir = tmp_path / "vault" / "arsip" / ".daulat"
    (manifest,) = daulat_dir.glob("manifest-*.jsonl.age")
    _, entries = _header_and_entries(
        stores[1], manifest.name and f".daulat/{manifest.name}", identity, "arsip/"
    )
    legacy = "".join(
        json.dumps({"key": "arsip/" + e["key"], "size": e["size"], "sha256": e["sha256"]}) + "\n"
        for e in entries
    )
    for p in daulat_dir.iterdir():
        p.unlink()
    (daulat_dir / "manifest-20240101T000000Z.jsonl.age").write_bytes(
        _age_encrypt(recipient, legacy.encode())
    )
    shutil.rmtree(tmp_path / ".daulat")  # and this machine never saw it
    restore = ["restore", "vault:arsip", "back", "--identity", str(identity)]
    refused = cli(restore, capsys)
    assert refused.code == 2 and "--allow-unsigned" in refused.err
    done = cli([*restore, "--allow-unsigned", "--json"], capsys)
    assert done.code == 0, done.explain()
    assert done.json["provenance"].startswith("origin not proven")
    assert (
        done.json["checked_against_manifest"] == "arsip/.daulat/manifest-20240101T000000Z.jsonl.age"
    )
    assert done.json["verified_objects"] == len(files) and done.json["unproven"] == []
    assert_exact_copy(files, read_config(stores[2]))


def test_every_writing_run_leaves_one_complete_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Plain copies of two sources into one prefix: each run that changed the destination adds
    a manifest listing the whole prefix (the other source's entries carried forward, objects
    gone from the destination dropped); a run that changed nothing adds none."""
    monkeypatch.chdir(tmp_path)
    one, two = _files("satu", n=3), _files("dua", n=3)
    stores = [fs_store_config(tmp_path / n, n) for n in ("a", "b", "vault")]
    fill_config(stores[0], one)
    fill_config(stores[1], two)
    _setup(tmp_path, capsys, stores)
    assert cli(["copy", "a", "vault:pool"], capsys).code == 0
    assert cli(["copy", "b", "vault:pool"], capsys).code == 0
    first, second = _manifests(stores[2], "pool/")
    _, entries = _header_and_entries(stores[2], second, None, "pool/")
    assert {e["key"] for e in entries} == set(one) | set(two)
    by_key = {e["key"]: e for e in entries}
    assert by_key["satu/kosong.txt"]["source"]["store"] == "a"
    assert by_key["dua/kosong.txt"]["source"]["store"] == "b"
    assert all(e["sha256"] == hashlib.sha256((one | two)[e["key"]]).hexdigest() for e in entries)

    again = cli(["copy", "b", "vault:pool", "--json"], capsys)
    assert again.code == 0 and again.json["copied_objects"] == 0
    assert again.json["manifest_key"] == "pool/" + second
    assert _manifests(stores[2], "pool/") == [first, second]

    gone = "dua/tps-000.json"
    (tmp_path / "vault" / "pool" / gone).unlink()  # removed at the destination by someone
    (tmp_path / "a" / "satu/tps-001.json").write_bytes(b"changed")
    assert cli(["copy", "a", "vault:pool"], capsys).code == 0
    *_, third = _manifests(stores[2], "pool/")
    header, entries = _header_and_entries(stores[2], third, None, "pool/")
    assert header["seq"] == 3
    assert {e["key"] for e in entries} == (set(one) | set(two)) - {gone}
    ssh = subprocess.run(
        [
            _tool("ssh-keygen"),
            "-Y",
            "check-novalidate",
            "-n",
            NAMESPACE,
            "-s",
            str(tmp_path / "vault" / "pool" / (third + ".sig")),
        ],
        input=(tmp_path / "vault" / "pool" / third).read_bytes(),
        capture_output=True,
    )
    assert ssh.returncode == 0, ssh.stderr


# ------------------------------------------------------------- the README's key flow, messages


def test_keys_new_after_runs_signed_by_the_local_key_keeps_them_believed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``exit`` (signed with the state directory's own key), then ``keys new`` (pins a new
    signer): the earlier manifest is the customer's too, so its key is pinned as well and
    ``verify`` stays clean (it used to call the manifest "withheld or deleted by the
    provider"). Unpinning that key makes verify say what is true: the manifest is there,
    signed by a key that is not pinned, named by its fingerprint."""
    monkeypatch.chdir(tmp_path)
    files = _files("alur", n=3)
    stores = [fs_store_config(tmp_path / n, n) for n in ("src", "vault")]
    fill_config(stores[0], files)
    config = write_config(tmp_path, stores)
    assert cli(["exit", "src", "vault"], capsys).code == 0
    local = public_key_of(tmp_path / ".daulat" / "keys" / "signing")
    made = cli(["keys", "new", "--out", "k.txt"], capsys)
    assert made.code == 0, made.explain()
    new = public_key_of(tmp_path / "k.txt.sign")
    assert f"also pinned this state directory's own signing key {local.fingerprint}" in made.err
    assert list(load_config(config).signers) == [new, local]
    checked = cli(["verify", "src", "vault", "--json"], capsys)
    assert checked.code == 0, checked.explain()
    assert checked.json["problems"] == []
    # The next exit signs with the new key and chains to the earlier manifest.
    assert cli(["exit", "src", "vault"], capsys).code == 0
    assert cli(["verify", "src", "vault"], capsys).code == 0
    # A second `keys new` adds nothing more of the local key (it is pinned already).
    again = cli(["keys", "new", "--out", "k2.txt"], capsys)
    assert again.code == 0 and "also pinned" not in again.err
    assert list(load_config(config).signers[:2]) == [new, local]

    # Only the new keys pinned: the newest manifest (signed by the new key) is believed; the
    # older one, by the local key, is reported as not believed, not as withheld.
    text = config.read_text()
    config.write_text(text.replace(f', "{local.line}"', ""))
    assert local not in load_config(config).signers
    unpinned = cli(["verify", "src", "vault", "--json"], capsys)
    reasons = [p["reason"] for p in unpinned.json["problems"]]
    assert not any("withheld" in r for r in reasons), reasons


def test_a_present_manifest_by_an_unpinned_signer_is_not_called_withheld(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The newest manifest seen here is at the destination but signed by a key that is no
    longer pinned: verify says exactly that and names the signer's fingerprint; only when the
    file is gone does it speak of withholding."""
    monkeypatch.chdir(tmp_path)
    stores = [fs_store_config(tmp_path / n, n) for n in ("src", "vault")]
    fill_config(stores[0], _files("pin2", n=2))
    config, _, _ = _setup(tmp_path, capsys, stores)
    assert cli(["exit", "src", "vault"], capsys).code == 0
    signer = public_key_of(tmp_path / "id.txt.sign")
    # Another key replaces it in the config (by hand, without keeping the first one).
    other = cli(["keys", "new", "--out", "other.txt", "--no-config"], capsys)
    assert other.code == 0
    replacement = public_key_of(tmp_path / "other.txt.sign")
    config.write_text(
        config.read_text()
        .replace(signer.line, replacement.line)
        .replace('"id.txt.sign"', '"other.txt.sign"')
    )
    [newest] = _manifests(stores[1])
    present = cli(["verify", "src", "vault", "--json"], capsys)
    assert present.code == 1
    reasons = [p["reason"] for p in present.json["problems"]]
    [about] = [r for r in reasons if "newest manifest seen here" in r]
    assert f"{newest} (seq 1), is there but not signed by a pinned signer" in about, about
    assert signer.fingerprint in about and "withheld" not in about, about

    for suffix in ("", ".sig"):
        (tmp_path / "vault" / (newest + suffix)).unlink()
    gone = cli(["verify", "src", "vault", "--json"], capsys)
    reasons = [p["reason"] for p in gone.json["problems"]]
    assert any("is missing there: withheld or deleted by the provider" in r for r in reasons)


def test_no_pinned_signer_on_a_new_machine_names_the_manifests_signer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A machine that never signed anything (a config without signers, an identity): the
    refusal does not offer this machine's own signing key (made for this very run, it signed
    nothing); it names the signer the destination's newest manifest shows, and how to check a
    key file."""
    monkeypatch.chdir(tmp_path)
    stores = [fs_store_config(tmp_path / n, n) for n in ("src", "vault", "back")]
    fill_config(stores[0], _files("baru", n=2))
    _, identity, recipient = _setup(tmp_path, capsys, stores)
    assert cli(["exit", "src", "vault", "--encrypt-to", recipient], capsys).code == 0
    signer = public_key_of(tmp_path / "id.txt.sign")

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    write_config(fresh, stores)  # the stores only: no signers, no signing_key
    shutil.copy(identity, fresh / "id.txt")
    monkeypatch.chdir(fresh)
    refused = cli(["restore", "vault", "back", "--identity", "id.txt"], capsys)
    assert refused.code == 2, refused.explain()
    err = " ".join(refused.err.split())
    assert "no pinned signer" in err and "this machine's own signing key" not in err, err
    assert signer.fingerprint in err and f'signers = ["{signer.line}"]' in err, err
    assert "daulat keys show FILE.sign" in err
    assert not (tmp_path / "back").exists()
    # Nothing at all to go by: a placeholder, never this machine's key.
    shutil.rmtree(tmp_path / "vault" / ".daulat")
    bare = cli(["restore", "vault", "back", "--identity", "id.txt"], capsys)
    assert bare.code == 2
    own = public_key_of(fresh / ".daulat" / "keys" / "signing")
    assert own.line not in bare.err and "this machine's own" not in bare.err


def test_restore_leaves_out_nested_manifests_and_says_when_a_rerun_cannot_help(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``vault`` holds an exit at its root and another into ``vault:sub``: restoring the root
    neither restores nor calls "planted" the sub-prefix's own manifest files (daulat's
    bookkeeping); an object forged at the source (age-encrypted to the recipient, so it
    decrypts) fails against the signed manifest, and the summary does not suggest running
    the same command again, which would only repeat that."""
    monkeypatch.chdir(tmp_path)
    top, nested = _files("atas", n=2), {"bawah/x.json": MARKER + b" nested"}
    # A user's own file in a nested .daulat/ is data: exited and restored like any other.
    top["foto/.daulat/x.json"] = MARKER + b" the user's"
    stores = [fs_store_config(tmp_path / n, n) for n in ("src", "src2", "vault", "back")]
    fill_config(stores[0], top)
    fill_config(stores[1], nested)
    _, identity, recipient = _setup(tmp_path, capsys, stores)
    assert cli(["exit", "src", "vault", "--encrypt-to", recipient], capsys).code == 0
    assert cli(["exit", "src2", "vault:sub", "--encrypt-to", recipient], capsys).code == 0
    assert _manifests(stores[2], "sub/")  # sub/.daulat/manifest-... and its .sig

    restored = cli(["restore", "vault", "back", "--identity", str(identity), "--json"], capsys)
    assert restored.code == 1, restored.explain()  # sub/bawah/x.json: unproven at the root
    unproven = [u["key"] for u in restored.json["unproven"]]
    assert unproven == ["sub/bawah/x.json"], unproven
    back = read_config(stores[3], skip_manifests=False)
    assert not any(k.startswith("sub/") for k in back), sorted(back)
    assert back["foto/.daulat/x.json"] == top["foto/.daulat/x.json"]
    assert any("sub-prefixes" in n for n in restored.json["notes"])
    # Restoring the sub-prefix itself proves its objects with its own manifest.
    sub = cli(["restore", "vault:sub", "back:sub", "--identity", str(identity)], capsys)
    assert sub.code == 0, sub.explain()

    forged = "atas/tps-000.json"
    (tmp_path / "vault" / forged).write_bytes(_age_encrypt(recipient, MARKER + b" forged"))
    shutil.rmtree(tmp_path / "back")
    again = cli(["restore", "vault", "back", "--identity", str(identity)], capsys)
    assert again.code == 1
    assert "does not match the source manifest's SHA-256" in again.out
    assert "run the same command again" not in again.err, again.err
    assert "will not change that" in again.err and "--allow-unproven" in again.err, again.err


def _records(raw: Mapping[str, Any], prefix: str = "") -> dict[str, bytes]:
    """The files under a sub-prefix's ``.daulat/`` at a store (keys relative to its root)."""
    at = read_config(raw, prefix, skip_manifests=False)
    return {prefix + k: v for k, v in at.items() if "/.daulat/" in prefix + k}


def test_sync_delete_of_the_parent_never_deletes_a_sub_prefixs_manifests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hostile review: after ``copy fsrc:sub rdst:sub``, ``sync fsrc rdst --delete`` listed
    (dry run) and deleted every ``sub/.daulat/manifest-*``, and the restore of ``rdst:sub``
    then accused the provider of withholding its newest manifest. The sub-prefix's signed
    records are daulat's: never planned for deletion, still believed by verify and restore."""
    monkeypatch.chdir(tmp_path)
    stores = [fs_store_config(tmp_path / n, n) for n in ("fsrc", "rdst", "rest")]
    sub = {"sub/bawah/x.json": MARKER + b" sub", "sub/bawah/y.json": MARKER + b" later"}
    fill_config(stores[0], _files("atas", n=2))
    _setup(tmp_path, capsys, stores)
    for key, data in sub.items():  # two runs that change something: two manifests
        fill_config(stores[0], {key: data})
        res = cli(["copy", "fsrc:sub", "rdst:sub"], capsys)
        assert res.code == 0, res.explain()
    records = _records(stores[1], "sub/")
    assert len(records) == 4, sorted(records)
    fill_config(stores[1], {"sisa.txt": b"not at the source"})  # extraneous: deleted

    sync = ["sync", "fsrc", "rdst", "--delete", "--max-delete", "100%", "--json"]
    dry = cli([*sync, "--dry-run"], capsys)
    assert dry.code == 0, dry.explain()
    assert [d["key"] for d in dry.json["would_delete"]] == ["sisa.txt"], dry.json["would_delete"]
    done = cli(sync, capsys)
    assert done.code == 0, done.explain()
    assert done.json["deleted"]["keys"] == ["sisa.txt"], done.json["deleted"]
    assert _records(stores[1], "sub/") == records
    assert any("never deletes them" in n for n in done.json["notes"]), done.json["notes"]

    res = cli(["verify", "fsrc", "rdst", "--json"], capsys)
    assert res.code == 0 and res.json["problems"] == [], res.json["problems"]
    restored = cli(["restore", "rdst:sub", "rest:r3", "--json"], capsys)
    assert restored.code == 0, restored.explain()
    assert read_config(stores[2], "r3/") == {k.removeprefix("sub/"): v for k, v in sub.items()}


def test_a_users_files_named_like_daulat_manifests_are_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hostile review: a user's own ``x/.daulat/manifest-20200101T000000Z.jsonl`` and ``.sig``
    were copied, listed and verified, then left out of the restore, which failed "listed in
    the manifest but missing at the source". What the parent's manifest lists is data, named
    so or not, even a daulat destination's genuinely signed manifest kept as a file; and
    ``sync --delete`` deletes such files when the user deletes them."""
    monkeypatch.chdir(tmp_path)
    stores = [fs_store_config(tmp_path / n, n) for n in ("fsrc", "rdst", "rest", "lama", "arsip")]
    fill_config(stores[3], {"a.txt": b"old archive"})
    _setup(tmp_path, capsys, stores)
    assert cli(["copy", "lama", "arsip"], capsys).code == 0
    (genuine,) = _manifests(stores[4])  # signed by the pinned key: a daulat record, kept as data
    at_arsip = read_config(stores[4], skip_manifests=False)
    users = {
        "x/.daulat/manifest-20200101T000000Z.jsonl": b'{"my": "own notes"}\n',
        "x/.daulat/manifest-20200101T000000Z.jsonl.sig": b"my own signature file\n",
        f"y/{genuine}": at_arsip[genuine],
        f"y/{genuine}.sig": at_arsip[genuine + ".sig"],
    }
    fill_config(stores[0], {**_files("atas", n=2), **users})

    res = cli(["copy", "fsrc", "rdst", "--json"], capsys)
    assert res.code == 0 and res.json["copied_objects"] == 8, res.explain()
    res = cli(["verify", "fsrc", "rdst", "--json"], capsys)
    assert res.code == 0 and res.json["problems"] == [], res.json["problems"]
    restored = cli(["restore", "rdst", "rest", "--json"], capsys)
    assert restored.code == 0, restored.explain()
    assert _records(stores[2]) == users

    for key in users:
        (tmp_path / "fsrc" / key).unlink()
    sync = ["sync", "fsrc", "rdst", "--delete", "--max-delete", "100%", "--json"]
    done = cli(sync, capsys)
    assert done.code == 0, done.explain()
    assert sorted(done.json["deleted"]["keys"]) == sorted(users), done.json["deleted"]
    assert _records(stores[1]) == {}


def test_files_planted_as_nested_manifests_are_unproven_and_never_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The provider plants ``zz/.daulat/manifest-…`` files, one beside a genuine signature
    copied from the sub-prefix's records (valid, but over other bytes), one beside a
    signature that is not one, and a real manifest copied whole with its signature (valid,
    but written for ``sub/``). Named like daulat's records, listed by no manifest, none a
    record of ``zz/``: verify reports them unproven, a restore does not restore them; the
    sub-prefix's real records are neither."""
    monkeypatch.chdir(tmp_path)
    stores = [fs_store_config(tmp_path / n, n) for n in ("fsrc", "rdst", "rest")]
    fill_config(stores[0], {**_files("atas", n=2), "sub/bawah/x.json": MARKER + b" sub"})
    _setup(tmp_path, capsys, stores)
    assert cli(["copy", "fsrc:sub", "rdst:sub"], capsys).code == 0
    assert cli(["copy", "fsrc", "rdst"], capsys).code == 0  # after: its records are current
    records = _records(stores[1], "sub/")
    real_sig = next(v for k, v in records.items() if k.endswith(".sig"))
    planted = {
        "zz/.daulat/manifest-20200101T000000Z.jsonl": b'{"daulat": "manifest", "seq": 1}\n',
        "zz/.daulat/manifest-20200101T000000Z.jsonl.sig": real_sig,
        "zz/.daulat/manifest-20200102T000000Z.jsonl.age": b"age-encryption.org/v1\n",
        "zz/.daulat/manifest-20200102T000000Z.jsonl.age.sig": b"not a signature\n",
    }
    # A real manifest and its valid signature, copied whole: signed, but written for sub/.
    real = next(k for k in records if k.endswith(".jsonl"))
    for k in (real, real + ".sig"):
        planted["zz/" + k.removeprefix("sub/")] = records[k]
    fill_config(stores[1], planted)

    res = cli(["verify", "fsrc", "rdst", "--json"], capsys)
    assert res.code == 1, res.explain()
    problems = {p["key"]: p["reason"] for p in res.json["problems"]}
    assert sorted(problems) == sorted(planted), problems
    assert all(r.startswith("unproven") for r in problems.values()), problems

    restored = cli(["restore", "rdst", "rest", "--json"], capsys)
    assert restored.code == 1, restored.explain()  # the planted files: unproven
    assert sorted(u["key"] for u in restored.json["unproven"]) == sorted(planted)
    assert _records(stores[2]) == {}
    assert any("sub-prefixes" in n for n in restored.json["notes"]), restored.json["notes"]
    assert read_config(stores[2]) == read_config(stores[0])


def test_a_rerun_is_suggested_only_when_it_can_help() -> None:
    """What the summary's last line rests on: objects that failed for a reason a rerun can
    change (a timeout), or were never tried, can be done by running again; objects refused,
    forged, damaged or withheld at the source cannot."""

    def _summary(**fields: Any) -> Summary:
        return Summary("restore", "vault", "back", 1, **fields)

    forged = "'a' does not match the source manifest's SHA-256; not written"
    cases = [
        (_summary(failed=[("a", "request timed out")], left_objects=1), True),
        (_summary(left_objects=3, stopped="cannot list the destination"), True),
        (
            _summary(
                failed=[("a", forged)],
                left_objects=1,
                unverified=[("a", "missing at the destination")],
            ),
            False,
        ),
        (_summary(failed=[("a", forged), ("b", "request timed out")], left_objects=2), True),
        (_summary(failed=[("a", forged)], left_objects=2), True),  # one never tried
        (_summary(refused=[("a", "store 'back' cannot hold key 'a'")]), False),
        (_summary(failed=[("a", "cannot decrypt: the data is not an intact age file")]), False),
        (
            _summary(
                failed=[("gone", "listed in the manifest but missing at the source: withheld")]
            ),
            False,
        ),
        (_summary(unverified=[("c", "content differs")]), True),
    ]
    for summary, expected in cases:
        assert retry_would_help(summary) is expected, summary


def test_restore_takes_bwlimit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``restore --bwlimit`` (listed among the common flags) caps the rate: 9 MiB at 3 MiB/s
    takes about three seconds."""
    monkeypatch.chdir(tmp_path)
    files = _files("lambat", n=1)
    stores = [fs_store_config(tmp_path / n, n) for n in ("src", "vault", "back")]
    fill_config(stores[0], files)
    _, identity, recipient = _setup(tmp_path, capsys, stores)
    assert cli(["exit", "src", "vault", "--encrypt-to", recipient], capsys).code == 0
    slow = cli(
        ["restore", "vault", "back", "--identity", str(identity), "--bwlimit", "3M", "--json"],
        capsys,
    )
    assert slow.code == 0, slow.explain()
    assert slow.json["duration_s"] >= 2.0, slow.json["duration_s"]
    assert_exact_copy(files, read_config(stores[2]))


def test_decrypt_failures_are_named_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A damaged encrypted object (``verify --full``) and a damaged encrypted manifest say
    "cannot decrypt: ..." once, not "cannot decrypt: cannot decrypt: ..."."""
    monkeypatch.chdir(tmp_path)
    files = _files("rusak", n=2)
    stores = [fs_store_config(tmp_path / n, n) for n in ("src", "vault")]
    fill_config(stores[0], files)
    _, identity, recipient = _setup(tmp_path, capsys, stores)
    assert cli(["exit", "src", "vault", "--encrypt-to", recipient], capsys).code == 0
    damaged = tmp_path / "vault" / "rusak" / "besar.bin"
    damaged.write_bytes(damaged.read_bytes()[: 5 * 1024 * 1024])
    [manifest] = _manifests(stores[1])
    stored = tmp_path / "vault" / manifest
    stored.write_bytes(stored.read_bytes()[:-40])
    checked = cli(["verify", "src", "vault", "--full", "-i", str(identity), "--json"], capsys)
    assert checked.code == 1
    reasons = {p["key"]: p["reason"] for p in checked.json["problems"]}
    assert reasons["rusak/besar.bin"].startswith("cannot decrypt: "), reasons
    assert all(r.count("cannot decrypt") <= 1 for r in reasons.values()), reasons
    assert any("cannot decrypt" in r for k, r in reasons.items() if k == manifest), reasons
