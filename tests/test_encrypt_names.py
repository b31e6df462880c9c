"""Protected names (``encrypt_names``) end to end, against real stores.

With names protected, the destination must hold nothing that tells what the objects are called:
only 64-hex stored names beside ``.daulat/`` (the encrypted manifest and the encrypted name key).
Everything else an encrypted copy promises still holds: verification, resumption after
``kill -9``, restore with the exact names and bytes, and restoring with ordinary tools only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import fs_store_config, run, s3_store_config
from s3fake import s3fake
from servers import S3Server
from test_encryption import _readme_snippet
from test_transfer import (
    assert_exact_copy,
    cli,
    fill_config,
    journal_path,
    read_config,
    unique,
)
from test_transfer import write_config as _write_config
from test_transfer_crash import _files, crash_dataset, kill_and_resume
from test_transfer_faults import count_keys

from daulat.pinning import pin_signer
from daulat.signing import public_key_of
from daulat.stores.fs import FsStore
from daulat.transfer.names import NameKey

MARKER = b"NAMA-TERLINDUNG-RAHASIA"
STORED = re.compile(r"[0-9a-f]{64}")
MiB = 1024 * 1024


def _age() -> str:
    path = shutil.which("age")
    if path is None:
        pytest.fail("the age CLI is missing: apt-get install age (scripts/test installs it)")
    return path


def _identity(
    tmp: Path, capsys: pytest.CaptureFixture[str], name: str = "id.txt"
) -> tuple[Path, str]:
    key = tmp / name
    result = cli(["keys", "new", "--out", str(key)], capsys)
    assert result.code == 0, result.err
    return key, result.out.strip()


def write_config(directory: Path, stores: Any) -> Path:
    """daulat.toml with the stores, pinning the signing keys ``keys new`` made in
    ``directory`` before the config existed (as it does itself when the config exists)."""
    config = _write_config(directory, stores)
    for sign in sorted(directory.glob("*.sign")):
        pin_signer(config, public_key_of(sign), sign)
    return config


def _dataset(token: str, n: int = 30) -> dict[str, bytes]:
    """Objects whose names are worth protecting (a unique token in each), with the marker in
    every content; one large enough to be streamed as a multipart upload."""
    files = {
        f"{token}/jawa-barat/kabupaten-bogor/tps-{i:03d}.json": MARKER + os.urandom(64) * (i + 1)
        for i in range(n)
    }
    files[f"{token}/kosong.txt"] = b""
    files[f"{token}/pindaian/formulir-c1-besar.bin"] = MARKER + os.urandom(12 * MiB)
    return files


def _fragments(keys: Mapping[str, bytes] | list[str]) -> set[str]:
    """Pieces of source names that a stored name must not reveal (those that 64 hex
    characters could not contain by chance)."""
    out = set()
    for key in keys:
        out.add(key)
        for piece in re.split(r"[/._-]", key):
            if len(piece) >= 3 and not re.fullmatch(r"[0-9a-f]+", piece):
                out.add(piece)
    return out


def _listing(raw: Mapping[str, Any], prefix: str = "") -> dict[str, bytes]:
    return read_config(raw, prefix, skip_manifests=False)


def _local_key(tmp: Path) -> bytes:
    files = list((tmp / ".daulat" / "names").glob("*.key"))
    assert len(files) == 1, files
    return bytes.fromhex(files[0].read_text().strip())


def _stored(key: bytes, rel: str) -> str:
    return hmac.new(key, rel.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def _decrypt(age: str, identity: Path, blob: bytes) -> bytes:
    return subprocess.run(
        [age, "-d", "-i", str(identity)], input=blob, capture_output=True, check=True
    ).stdout


def _manifest(age: str, identity: Path, at_dst: Mapping[str, bytes]) -> list[dict[str, Any]]:
    names = sorted(
        k for k in at_dst if k.startswith(".daulat/manifest-") and not k.endswith(".sig")
    )
    assert names and names[-1].endswith(".jsonl.age"), names
    text = _decrypt(age, identity, at_dst[names[-1]]).decode()
    header, *entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert header["daulat"] == "manifest"
    return entries


def _assert_names_hidden(at_dst: Mapping[str, bytes], files: Mapping[str, bytes]) -> None:
    data_keys = [k for k in at_dst if not k.startswith(".daulat/")]
    assert len(data_keys) == len(files)
    assert all(STORED.fullmatch(k) for k in data_keys), sorted(data_keys)[:5]
    assert {k for k in at_dst if k.startswith(".daulat/")} <= {
        ".daulat/names.key.age",
        ".daulat/names.key.age.sig",
        *(
            k
            for k in at_dst
            if re.fullmatch(r"\.daulat/manifest-\d{8}T\d{6}Z\.jsonl\.age(\.sig)?", k)
        ),
    }
    fragments = _fragments(list(files))
    for key, blob in at_dst.items():
        # (.daulat/ names are fixed, checked above.)
        leaked = [f for f in fragments if f in key and not key.startswith(".daulat/")]
        assert not leaked, f"{key!r} reveals {leaked[:3]}"
        assert MARKER not in blob, f"plaintext in {key!r}"
        # Short pieces turn up in random bytes by chance; long ones cannot.
        for f in fragments:
            assert len(f) < 8 or f.encode() not in blob, f"{f!r} in the clear in {key!r}"


@pytest.mark.parametrize("kind", ["seaweedfs", "fs"])
def test_protected_exit_hides_names_and_restores_exactly(
    kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    age = _age()
    monkeypatch.chdir(tmp_path)
    identity, recipient = _identity(tmp_path, capsys)
    token = f"desa{uuid.uuid4().hex[:8]}"
    files = _dataset(token)
    if kind == "seaweedfs":
        server_a: S3Server = request.getfixturevalue("s3_server")
        server_b: S3Server = request.getfixturevalue("s3_server_b")
        src = s3_store_config(server_a, "src", unique("names-src"))
        dst = s3_store_config(server_b, "dst", unique("names-dst"))
        back = s3_store_config(server_a, "back", unique("names-back"))
    else:
        src, dst, back = (fs_store_config(tmp_path / n, n) for n in ("src", "dst", "back"))
    fill_config(src, files)
    write_config(tmp_path, [src, dst, back])

    done = cli(
        ["exit", "src", "dst:arsip", "--encrypt-to", recipient, "--encrypt-names", "--json"],
        capsys,
    )
    assert done.code == 0, done.explain()
    summary = done.json
    assert summary["names_protected"] and summary["encrypted"]
    assert summary["verified_objects"] == len(files)

    at_dst = _listing(dst, "arsip/")
    _assert_names_hidden(at_dst, files)
    if kind == "seaweedfs":
        # Nor on the destination server's disk.
        for path in server_b.data_dir.rglob("*"):
            if path.is_file():
                assert MARKER not in path.read_bytes(), f"plaintext on disk in {path}"

    # The stored name is HMAC-SHA256 of the name under this destination's key, and the age CLI
    # alone reads the manifest (where the real names are) and the objects.
    name_key = _local_key(tmp_path)
    entries = _manifest(age, identity, at_dst)
    # Keys are relative to the prefix that holds the manifest (arsip/).
    assert {e["key"] for e in entries} == set(files)
    for e in entries:
        assert e["stored_as"] == _stored(name_key, e["key"])
        assert e["sha256"] == hashlib.sha256(files[e["key"]]).hexdigest()
    big = next(e for e in entries if e["key"].endswith("formulir-c1-besar.bin"))
    assert _decrypt(age, identity, at_dst[big["stored_as"]]) == files[big["key"]]

    assert cli(["verify", "src", "dst:arsip"], capsys).code == 0
    full = cli(
        ["verify", "src", "dst:arsip", "--full", "--identity", str(identity), "--json"], capsys
    )
    assert full.code == 0, full.explain()
    assert full.json["verified"] == len(files)

    restored = cli(["restore", "dst:arsip", "back", "--identity", str(identity), "--json"], capsys)
    assert restored.code == 0, restored.explain()
    assert restored.json["verified_objects"] == len(files)
    assert_exact_copy(files, read_config(back))


def test_rerun_change_and_sync_delete_keep_stored_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Declared on the store: a re-run copies nothing, a changed object is recopied under the
    same stored name, and sync --delete removes the stored object of a deleted source key."""
    age = _age()
    monkeypatch.chdir(tmp_path)
    identity, recipient = _identity(tmp_path, capsys)
    files = _dataset("ulang", n=12)
    src = fs_store_config(tmp_path / "src", "src")
    vault = {**fs_store_config(tmp_path / "vault", "vault"), "encrypt_to": [recipient]}
    vault["encrypt_names"] = True
    back = fs_store_config(tmp_path / "back", "back")
    fill_config(src, files)
    write_config(tmp_path, [src, vault, back])

    first = cli(["sync", "src", "vault", "--json"], capsys)
    assert first.code == 0, first.explain()
    assert first.json["copied_objects"] == len(files) and first.json["names_protected"]
    names_before = {k for k in _listing(vault) if STORED.fullmatch(k)}
    assert len(names_before) == len(files)

    again = cli(["sync", "src", "vault", "--json"], capsys)
    assert again.code == 0, again.explain()
    assert again.json["copied_objects"] == 0 and again.json["skipped_objects"] == len(files)

    changed = "ulang/jawa-barat/kabupaten-bogor/tps-003.json"
    files[changed] = MARKER + b" corrected count"
    (tmp_path / "src" / changed).write_bytes(files[changed])
    third = cli(["sync", "src", "vault", "--json"], capsys)
    assert third.code == 0, third.explain()
    assert third.json["copied_objects"] == 1
    at_vault = _listing(vault)
    assert {k for k in at_vault if STORED.fullmatch(k)} == names_before
    stored = _stored(_local_key(tmp_path), changed)
    assert _decrypt(age, identity, at_vault[stored]) == files[changed]

    gone = "ulang/kosong.txt"
    (tmp_path / "src" / gone).unlink()
    del files[gone]
    deleted = cli(["sync", "src", "vault", "--delete", "--json"], capsys)
    assert deleted.code == 0, deleted.explain()
    assert deleted.json["deleted_objects"] == 1
    at_vault = _listing(vault)
    assert {k for k in at_vault if STORED.fullmatch(k)} == names_before - {
        _stored(_local_key(tmp_path), gone)
    }
    # The newest manifest (written by every protected sync) no longer lists the deleted key.
    assert {e["key"] for e in _manifest(age, identity, at_vault)} == set(files)
    assert cli(["verify", "src", "vault"], capsys).code == 0
    restored = cli(["restore", "vault", "back", "--identity", str(identity), "--json"], capsys)
    assert restored.code == 0, restored.explain()
    assert_exact_copy(files, read_config(back))


HOSTILE = {
    "../x": b"dot-dot",
    "a/../../b": b"climbs",
    "a//b": b"double slash",
    "/abs.txt": b"absolute",
    "trailing/": b"trailing slash",
    "k" * 1024: b"the longest key S3 allows",
    "seg/" + "s" * 300 + "/f": b"a segment no filesystem holds",
    "normal/ok.txt": b"plain",
}


def test_hostile_keys_land_safely_and_restore_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Keys a filesystem cannot hold become fixed-length stored names there, and come back
    exactly when restored into an object store."""
    monkeypatch.chdir(tmp_path)
    identity, recipient = _identity(tmp_path, capsys)
    with s3fake(buckets=("hsrc", "hback")) as fake:
        for key, data in HOSTILE.items():
            fake.put_object("hsrc", key, data)

        def s3(name: str, bucket: str) -> dict[str, Any]:
            return {
                "name": name,
                "url": f"s3://{bucket}",
                "provider": "self-hosted",
                "country": "ID",
                "endpoint": fake.endpoint,
                "credentials": {
                    "access_key_id": fake.access_key_id,
                    "secret_access_key": fake.secret_access_key,
                },
            }

        vault_root = tmp_path / "vault"
        write_config(
            tmp_path, [s3("src", "hsrc"), fs_store_config(vault_root, "vault"), s3("back", "hback")]
        )
        done = cli(
            ["exit", "src", "vault", "--encrypt-to", recipient, "--encrypt-names", "--json"], capsys
        )
        assert done.code == 0, done.explain()
        assert done.json["refused"] == [] and done.json["verified_objects"] == len(HOSTILE)
        # Only stored names on disk, all inside the vault.
        assert not (tmp_path / "x").exists() and not (tmp_path / "b").exists()
        on_disk = {
            str(p.relative_to(vault_root))
            for p in vault_root.rglob("*")
            if p.is_file() and p.relative_to(vault_root).parts[0] not in (".daulat", ".daulat-tmp")
        }
        assert len(on_disk) == len(HOSTILE) and all(STORED.fullmatch(n) for n in on_disk)
        assert (
            cli(["verify", "src", "vault", "--full", "--identity", str(identity)], capsys).code == 0
        )

        restored = cli(["restore", "vault", "back", "--identity", str(identity), "--json"], capsys)
        assert restored.code == 0, restored.explain()
        back = {k: v for k, v in fake.objects("hback").items() if not k.startswith(".daulat/")}
        assert back == HOSTILE


def test_lost_state_needs_the_identity_and_reuses_the_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    identity, recipient = _identity(tmp_path, capsys)
    files = _dataset("hilang", n=10)
    src = fs_store_config(tmp_path / "src", "src")
    vault = {**fs_store_config(tmp_path / "vault", "vault"), "encrypt_to": [recipient]}
    vault["encrypt_names"] = True
    fill_config(src, files)
    write_config(tmp_path, [src, vault])
    assert cli(["exit", "src", "vault"], capsys).code == 0
    before = _listing(vault)
    key_hex = _local_key(tmp_path).hex()

    # Only the name key lost: refused, clearly, with nothing written.
    shutil.rmtree(tmp_path / ".daulat" / "names")
    refused = cli(["exit", "src", "vault"], capsys)
    assert refused.code == 2
    assert refused.err.strip().splitlines() == [
        "error: vault already holds objects under protected names; its name key is not in "
        "this machine's state: pass --identity FILE to recover it"
    ]
    assert _listing(vault) == before
    assert not (tmp_path / ".daulat" / "names").exists() or not any(
        (tmp_path / ".daulat" / "names").iterdir()
    )
    # verify needs it too.
    assert cli(["verify", "src", "vault"], capsys).code == 2

    # Recovered with the identity: same key, nothing copied again.
    recovered = cli(["exit", "src", "vault", "--identity", str(identity), "--json"], capsys)
    assert recovered.code == 0, recovered.explain()
    assert recovered.json["copied_objects"] == 0
    assert _local_key(tmp_path).hex() == key_hex
    key_file = next((tmp_path / ".daulat" / "names").glob("*.key"))
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    # All local state lost (journal too): recovered, everything rewritten under the same names.
    shutil.rmtree(tmp_path / ".daulat")
    assert cli(["verify", "src", "vault", "--full"], capsys).code == 2
    full = cli(["verify", "src", "vault", "--full", "--identity", str(identity), "--json"], capsys)
    assert full.code == 0, full.explain()
    assert full.json["verified"] == len(files)
    again = cli(["exit", "src", "vault", "--json"], capsys)
    assert again.code == 0, again.explain()
    assert {k for k in _listing(vault) if STORED.fullmatch(k)} == {
        k for k in before if STORED.fullmatch(k)
    }
    rerun = cli(["exit", "src", "vault", "--json"], capsys)
    assert rerun.code == 0 and rerun.json["copied_objects"] == 0


def test_name_key_is_private_and_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    age = _age()
    monkeypatch.chdir(tmp_path)
    identity, recipient = _identity(tmp_path, capsys)
    files = _dataset("rahasia", n=5)
    src = fs_store_config(tmp_path / "src", "src")
    vault = fs_store_config(tmp_path / "vault", "vault")
    back = fs_store_config(tmp_path / "back", "back")
    fill_config(src, files)
    write_config(tmp_path, [src, vault, back])
    args = ["--encrypt-to", recipient, "--encrypt-names"]
    outputs = [
        cli(["exit", "src", "vault", *args], capsys),
        cli(["exit", "src", "vault", *args, "--json"], capsys),
        cli(["copy", "src", "vault", *args, "--dry-run"], capsys),
        cli(["verify", "src", "vault", "--full", "--identity", str(identity)], capsys),
        cli(["restore", "vault", "back", "--identity", str(identity)], capsys),
    ]
    assert [r.code for r in outputs] == [0, 0, 0, 0, 0], [r.explain() for r in outputs]

    names_dir = tmp_path / ".daulat" / "names"
    key_file = next(names_dir.glob("*.key"))
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(names_dir.stat().st_mode) == 0o700
    raw = _local_key(tmp_path)
    secrets = [raw, raw.hex().encode(), raw.hex().upper().encode()]
    assert repr(NameKey(raw)) == str(NameKey(raw)) == "NameKey(<secret>)"

    printed = "".join(r.out + r.err for r in outputs).encode()
    db = sqlite3.connect(journal_path(tmp_path / "daulat.toml"))
    summaries = "".join(s for (s,) in db.execute("SELECT coalesce(summary, '') FROM runs"))
    journal_text = "\n".join(db.iterdump()).encode()
    db.close()
    audit = (tmp_path / ".daulat" / "audit.jsonl").read_bytes()
    at_vault = _listing(vault)
    manifest = json.dumps(_manifest(age, identity, at_vault)).encode()
    for where, blob in {
        "output": printed,
        "run summaries": summaries.encode(),
        "journal": journal_text,
        "audit log": audit,
        "manifest": manifest,
        **{f"vault:{k}": v for k, v in at_vault.items()},
    }.items():
        for s in secrets:
            assert s not in blob, f"the name key appears in the {where}"
    # The copy at the destination is the same key, readable with the identity.
    assert _decrypt(age, identity, at_vault[".daulat/names.key.age"]).strip() == raw.hex().encode()


def test_encrypt_names_needs_encrypt_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    src = fs_store_config(tmp_path / "src", "src")
    vault = {**fs_store_config(tmp_path / "vault", "vault"), "encrypt_names": True}
    config = write_config(tmp_path, [src, vault])
    result = cli(["exit", "src", "vault"], capsys)
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, lines
    assert str(config.resolve()) in lines[0] or str(config) in lines[0]
    assert "'vault'" in lines[0] and "encrypt_names" in lines[0] and "encrypt_to" in lines[0]
    assert "Traceback" not in result.err

    write_config(tmp_path, [src, fs_store_config(tmp_path / "vault", "vault")])
    flag = cli(["copy", "src", "vault", "--encrypt-names"], capsys)
    assert flag.code == 2 and "--encrypt-to" in flag.err and "Traceback" not in flag.err
    assert not (tmp_path / "vault").exists() or not any((tmp_path / "vault").rglob("*"))


def test_kill_9_mid_run_resumes_to_a_verified_protected_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """fs → fs with names protected, killed twice or more mid-copy, then run to the end."""
    monkeypatch.chdir(tmp_path)
    identity, recipient = _identity(tmp_path, capsys)
    data = crash_dataset(400, 1, 24 * MiB, seed=41)
    src = fs_store_config(tmp_path / "src", "srcfs")
    dst_root = tmp_path / "dst"
    dst = {**fs_store_config(dst_root, "dstfs"), "encrypt_to": [recipient], "encrypt_names": True}
    back = fs_store_config(tmp_path / "back", "back")
    fill_config(src, data.objects)
    config = write_config(tmp_path, [src, dst, back])
    _, log, final = kill_and_resume(
        config,
        tmp_path,
        "srcfs",
        "dstfs",
        total=len(data.objects),
        kills=2,
        delays=(0.3, 2.5),
        # The token bucket starts full (one second's worth): slow enough that a copy outlasts
        # the longest delay.
        bwlimit="4M",
        seed=int(os.environ.get("DAULAT_CRASH_SEED") or 7),
        landed=lambda: _files(dst_root),
    )
    result = json.loads(final.out)
    assert result["ok"] and result["verified_objects"] == len(data.objects), log
    at_dst = _listing(dst)
    data_keys = [k for k in at_dst if not k.startswith(".daulat/")]
    assert len(data_keys) == len(data.objects) and all(STORED.fullmatch(k) for k in data_keys), log
    assert (
        cli(["verify", "srcfs", "dstfs", "--full", "--identity", str(identity)], capsys).code == 0
    )
    restored = cli(["restore", "dstfs", "back", "--identity", str(identity)], capsys)
    assert restored.code == 0, restored.explain()
    assert_exact_copy(data.objects, read_config(back))


def test_readme_restore_protected_names_without_daulat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's recipe for name-protected copies, run verbatim with age, jq and sha256sum."""
    _age()
    if shutil.which("jq") is None:
        pytest.fail("jq is missing: apt-get install jq (scripts/test installs it)")
    monkeypatch.chdir(tmp_path)
    _, recipient = _identity(tmp_path, capsys, "kpu-identity.txt")
    files = _dataset("resep", n=8)
    files["resep/dengan spasi & 'kutip'.txt"] = MARKER + b" odd name"
    write_config(tmp_path, [fs_store_config(tmp_path / n, n) for n in ("src", "vault")])
    fill_config(fs_store_config(tmp_path / "src", "src"), files)
    assert (
        cli(["exit", "src", "vault", "--encrypt-to", recipient, "--encrypt-names"], capsys).code
        == 0
    )
    script = _readme_snippet("#### Name-protected copies")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    for name, data in files.items():
        assert (tmp_path / "restored" / name).read_bytes() == data
    # Its last line really checks: a tampered file fails it.
    (tmp_path / "restored" / "resep/kosong.txt").write_bytes(b"tampered")
    last = script.strip().splitlines()[-1]
    again = subprocess.run(
        ["bash", "-c", "cd vault && " + last], cwd=tmp_path, capture_output=True, text=True
    )
    assert again.returncode != 0


def test_seaweedfs_destination_lists_only_stored_names(
    tmp_path: Path,
    s3_server: S3Server,
    s3_server_b: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Asked of the server directly (not through daulat): the bucket holds the stored names,
    the manifest and the name key, and nothing else."""
    monkeypatch.chdir(tmp_path)
    _, recipient = _identity(tmp_path, capsys)
    files = _dataset("langsung", n=6)
    bucket = unique("names-raw")
    src = s3_store_config(s3_server, "src", unique("names-raw-src"))
    dst = s3_store_config(s3_server_b, "dst", bucket)
    fill_config(src, files)
    write_config(tmp_path, [src, dst])
    assert (
        cli(["exit", "src", "dst", "--encrypt-to", recipient, "--encrypt-names"], capsys).code == 0
    )
    # + the manifest, the name key and their signatures
    assert count_keys(s3_server_b, bucket) == len(files) + 4
    status, body = s3_server_b.request("GET", f"/{bucket}?list-type=2&max-keys=1000")
    assert status == 200
    keys = re.findall(rb"<Key>([^<]+)</Key>", body)
    data_keys = [k.decode() for k in keys if not k.startswith(b".daulat/")]
    assert len(data_keys) == len(files) and all(STORED.fullmatch(k) for k in data_keys)
    for f in _fragments(list(files)):
        assert len(f) < 8 or f.encode() not in body


def test_restore_refuses_a_stored_name_the_manifest_does_not_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    age = _age()
    monkeypatch.chdir(tmp_path)
    identity, recipient = _identity(tmp_path, capsys)
    files = _dataset("asing", n=4)
    stores = [fs_store_config(tmp_path / n, n) for n in ("src", "vault", "back")]
    fill_config(stores[0], files)
    write_config(tmp_path, stores)
    args = ["--encrypt-to", recipient, "--encrypt-names"]
    assert cli(["exit", "src", "vault", *args], capsys).code == 0
    # A valid age file under a stored-looking name that no manifest lists.
    stranger = "ab" * 32
    (tmp_path / "vault" / stranger).write_bytes(
        subprocess.run(
            [age, "-r", recipient], input=b"who am I", capture_output=True, check=True
        ).stdout
    )
    restored = cli(["restore", "vault", "back", "--identity", str(identity), "--json"], capsys)
    assert restored.code == 1
    # Planted, as verify and a restore of plain names call it: unproven, not failed.
    assert restored.json["failed"] == []
    assert [u["key"] for u in restored.json["unproven"]] == [stranger]
    assert "real name unknown" in restored.json["unproven"][0]["reason"]
    assert not (tmp_path / "back" / stranger).exists()
    assert_exact_copy(files, read_config(fs_store_config(tmp_path / "back", "back")))

    # The provider swaps two stored bodies: the restore names them by their real names (the
    # stored name beside), in JSON and in its human output, as verify does.
    (tmp_path / "vault" / stranger).unlink()
    one, two = sorted(files)[:2]
    first, second = (tmp_path / "vault" / _stored(_local_key(tmp_path), k) for k in (one, two))
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b)
    second.write_bytes(a)
    back2 = fs_store_config(tmp_path / "back2", "back2")
    write_config(tmp_path, [*stores, back2])
    restored = cli(["restore", "vault", "back2", "--identity", str(identity), "--json"], capsys)
    assert restored.code == 1
    failed = restored.json["failed"]
    assert sorted(f["key"] for f in failed) == [one, two], failed
    assert {f["stored_as"] for f in failed} == {first.name, second.name}
    assert all(repr(f["key"]) in f["reason"] and f["stored_as"] not in f["reason"] for f in failed)
    assert all(u["key"] in (one, two) for u in restored.json["unverified"]), restored.json
    human = cli(["restore", "vault", "back2", "--identity", str(identity)], capsys)
    assert human.code == 1 and one in human.out + human.err and two in human.out + human.err
    assert first.name not in human.out + human.err


def test_drill_to_a_protected_destination_never_writes_real_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The drill's scratch copy uses a throwaway name key: not even the sample's names reach
    the destination, and no key is kept."""
    monkeypatch.chdir(tmp_path)
    _, recipient = _identity(tmp_path, capsys)
    files = _dataset("latihan", n=20)
    src = fs_store_config(tmp_path / "src", "src")
    vault = {**fs_store_config(tmp_path / "vault", "vault"), "encrypt_to": [recipient]}
    vault["encrypt_names"] = True
    fill_config(src, files)
    write_config(tmp_path, [src, vault])
    written: list[str] = []
    original = FsStore.put

    async def recording_put(self: FsStore, key: str, *args: Any, **kw: Any) -> Any:
        written.append(key)
        return await original(self, key, *args, **kw)

    monkeypatch.setattr(FsStore, "put", recording_put)
    assert cli(["scan", "src"], capsys).code == 0
    drill = cli(["drill", "src", "vault", "--sample", "10", "--json"], capsys)
    assert drill.code == 0, drill.explain()
    data = [k.rsplit("/", 1)[-1] for k in written if "/.daulat/manifest-" not in k]
    assert len(data) >= 10 and all(STORED.fullmatch(k) for k in data), written[:5]
    assert not (tmp_path / ".daulat" / "names").exists()
    assert not [p for p in (tmp_path / "vault").rglob("*") if p.is_file()]


@pytest.mark.parametrize("kind", ["fs", "s3"])
def test_a_withheld_name_key_stops_instead_of_making_a_second_one(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hostile review: when the provider withholds names.key.age, a second machine with
    --identity made a second name key and stored everything twice. The objects under stored
    names (and the newest signed manifest's stored_as entries) show that the destination
    protects names: the run is refused (exit 2), nothing is written, no key is made."""
    from test_safety import pin_signer_of

    from daulat.config import StoreConfig
    from daulat.crypto import load_identities, new_identity
    from daulat.signing import LOCAL_KEY, public_key_of
    from daulat.stores import open_store
    from daulat.transfer.engine import Endpoint
    from daulat.transfer.names import manifest_names_evidence

    identity = tmp_path / "id.txt"
    recipient = new_identity(identity)
    files = _dataset("ditahan", n=6)
    src = fs_store_config(tmp_path / "src", "src")
    if kind == "fs":
        vault = fs_store_config(tmp_path / "vault", "vault")
    else:
        vault = s3_store_config(request.getfixturevalue("s3_server"), "vault", unique("withheld"))
    fill_config(src, files)
    a = _write_config(tmp_path / "a", [src, vault])
    b = _write_config(tmp_path / "b", [src, vault])
    args = ["--encrypt-to", recipient, "--encrypt-names"]
    res = cli(["exit", "src", "vault", *args, "-c", str(a)], capsys)
    assert res.code == 0, res.explain()
    pin_signer_of(b, signer_config=a)

    async def withhold() -> None:
        store = open_store(StoreConfig.model_validate(vault))
        try:
            for name in (".daulat/names.key.age", ".daulat/names.key.age.sig"):
                await store.delete(name)
        finally:
            await store.close()

    run(withhold())
    before = read_config(vault, skip_manifests=False)
    ident = ["-i", str(identity)]
    for argv in (
        ["exit", "src", "vault", *args, *ident],
        ["exit", "src", "vault", *args],
        ["copy", "src", "vault", *args, *ident, "--dry-run"],
        ["verify", "src", "vault", *ident],
    ):
        res = cli([*argv, "-c", str(b)], capsys)
        assert res.code == 2, f"{argv}: {res.explain()}"
        assert "protected names" in res.err and "second name key" in res.err, res.err
        assert "Traceback" not in res.err
    # Real names into it are refused too (names.key.age no longer tells).
    res = cli(["copy", "src", "vault", "--encrypt-to", recipient, "-c", str(b)], capsys)
    assert res.code == 2 and "--encrypt-names" in res.err, res.explain()
    assert read_config(vault, skip_manifests=False) == before
    assert not list((tmp_path / "b" / ".daulat").glob("names/*.key"))

    # The newest signed manifest tells it too, for whoever can read it.
    async def evidence() -> str | None:
        store = open_store(StoreConfig.model_validate(vault))
        try:
            signer = public_key_of(tmp_path / "a" / ".daulat" / LOCAL_KEY)
            return await manifest_names_evidence(
                Endpoint(store, ""), load_identities(identity), [signer]
            )
        finally:
            await store.close()

    found = run(evidence())
    assert found is not None and "stored names" in found
    # The machine that holds the key goes on, and puts the key back.
    res = cli(["exit", "src", "vault", *args, "-c", str(a)], capsys)
    assert res.code == 0, res.explain()
    res = cli(["exit", "src", "vault", *args, *ident, "-c", str(b)], capsys)
    assert res.code == 0, res.explain()
    assert read_config(vault).keys() == before.keys() - {
        k for k in before if k.startswith(".daulat/")
    }
