"""Customer-held encryption end to end: encrypted exits, restore, and interoperability with the
real ``age`` command-line program (no lock-in to daulat)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import fs_store_config, run, s3_store_config
from servers import S3Server

from daulat.cli import run as cli
from daulat.config import StoreConfig
from daulat.pinning import pin_signer
from daulat.signing import public_key_of
from daulat.stores import open_store

MARKER = b"RAHASIA-NEGARA-PEMILU-2024"


def _age() -> str:
    path = shutil.which("age")
    if path is None:
        pytest.fail("the age CLI is missing: apt-get install age (scripts/test installs it)")
    return path


def _toml(stores: list[dict[str, Any]]) -> str:
    out = []
    for raw in stores:
        out.append(f"[stores.{raw['name']}]")
        for k, v in raw.items():
            if k not in ("name", "credentials"):
                out.append(f"{k} = {json.dumps(v)}")
        if "credentials" in raw:
            out.append(f"[stores.{raw['name']}.credentials]")
            out += [f"{k} = {json.dumps(v)}" for k, v in raw["credentials"].items()]
        out.append("")
    return "\n".join(out)


def _write_config(tmp: Path, stores: list[dict[str, Any]]) -> Path:
    """Write daulat.toml and pin the signing keys made so far in ``tmp`` (as ``keys new``
    does when the config already exists)."""
    config = tmp / "daulat.toml"
    config.write_text(_toml(stores))
    for sign in sorted(tmp.glob("*.sign")):
        pin_signer(config, public_key_of(sign), sign)
    return config


def _ssh_keygen() -> str:
    path = shutil.which("ssh-keygen")
    if path is None:
        pytest.fail("ssh-keygen is missing: apt-get install openssh-client")
    return path


def _fill(root: Path, n_small: int = 40, big: int = 12 * 1024 * 1024) -> dict[str, bytes]:
    """Source files, each containing the marker; one large enough to stream."""
    files: dict[str, bytes] = {}
    for i in range(n_small):
        files[f"forms/tps-{i:03d}.json"] = MARKER + f" tps {i} ".encode() * (i + 1)
    files["forms/empty.txt"] = b""
    files["archive/big.bin"] = (MARKER + os.urandom(4096)) * (big // (4096 + len(MARKER)))
    for key, data in files.items():
        p = root / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


def _keys(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[Path, str]:
    key = tmp / "id.txt"
    monkeypatch.chdir(tmp)
    assert cli(["keys", "new", "--out", str(key)]) == 0
    recipient = capsys.readouterr().out.strip()
    assert recipient.startswith("age1")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    return key, recipient


async def _read_all(raw: dict[str, Any]) -> dict[str, bytes]:
    store = open_store(StoreConfig.model_validate(raw))
    out = {}
    async for batch in store.list():
        for o in batch:
            out[o.key] = await (await store.get(o.key)).read_all()
    await store.close()
    return out


def test_encrypted_exit_is_readable_with_the_age_cli_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    age = _age()
    files = _fill(tmp_path / "src")
    key, recipient = _keys(tmp_path, monkeypatch, capsys)
    _write_config(
        tmp_path,
        [fs_store_config(tmp_path / "src", "src"), fs_store_config(tmp_path / "dst", "dst")],
    )
    assert cli(["exit", "src", "dst", "--encrypt-to", recipient, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] and summary["encrypted"] and summary["verified_objects"] == len(files)

    dst = tmp_path / "dst"
    for key_name, data in files.items():
        blob = (dst / key_name).read_bytes()
        assert blob.startswith(b"age-encryption.org/v1\n")
        assert MARKER not in blob
        plain = subprocess.run(
            [age, "-d", "-i", str(key), str(dst / key_name)], capture_output=True, check=True
        ).stdout
        assert plain == data
    # The manifest is encrypted too, and it lets anyone check the copy with ordinary tools.
    manifests = list((dst / ".daulat").glob("manifest-*.jsonl.age"))
    assert len(manifests) == 1
    assert MARKER not in manifests[0].read_bytes() and b"forms/" not in manifests[0].read_bytes()
    text = subprocess.run(
        [age, "-d", "-i", str(key), str(manifests[0])], capture_output=True, check=True
    ).stdout
    header, *entries = [json.loads(line) for line in text.splitlines()]
    assert header["daulat"] == "manifest" and header["seq"] == 1 and header["prev"] is None
    assert header["signer"] == public_key_of(tmp_path / "id.txt.sign").line
    # Signed over the ciphertext: ssh-keygen checks it without the identity.
    (tmp_path / "allowed").write_text(f"daulat {header['signer']}\n")
    with manifests[0].open("rb") as stdin:
        checked = subprocess.run(
            [
                *(_ssh_keygen(), "-Y", "verify", "-f", str(tmp_path / "allowed")),
                *("-I", "daulat", "-n", "daulat-manifest@daulat", "-s", f"{manifests[0]}.sig"),
            ],
            stdin=stdin,
            capture_output=True,
        )
    assert checked.returncode == 0, checked.stderr
    assert {e["key"] for e in entries} == set(files)
    for e in entries:
        assert e["sha256"] == hashlib.sha256(files[e["key"]]).hexdigest()
        assert e["size"] == len(files[e["key"]]) and e["encryption"] == "age"
    # No plaintext hash is stored in the clear beside ciphertext (it would confirm guesses).
    for key_name in files:
        attrs = os.listxattr(dst / key_name)
        assert not any("sha256" in a for a in attrs)

    # verify: by records without a key; --full needs the identity and then decrypts.
    assert cli(["verify", "src", "dst"]) == 0
    assert cli(["verify", "src", "dst", "--full"]) == 2
    assert "--identity" in capsys.readouterr().err
    assert cli(["verify", "src", "dst", "--full", "--identity", str(key), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verified"] == len(files) and report["full"]


def test_restore_decrypts_and_checks_against_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    age = _age()
    files = _fill(tmp_path / "src", n_small=10)
    key, recipient = _keys(tmp_path, monkeypatch, capsys)
    stores = [fs_store_config(tmp_path / d, d) for d in ("src", "vault", "back", "back2")]
    _write_config(tmp_path, stores)
    assert cli(["exit", "src", "vault", "--encrypt-to", recipient]) == 0
    capsys.readouterr()

    # A wrong identity: clear error, exit 1, nothing written.
    other = tmp_path / "other.txt"
    assert cli(["keys", "new", "--out", str(other), "--no-config"]) == 0
    capsys.readouterr()
    assert cli(["restore", "vault", "back", "--identity", str(other)]) == 1
    err = capsys.readouterr().err
    assert "none of the given identities" in err and "AGE-SECRET-KEY" not in err
    assert not (tmp_path / "back").exists() or not any(
        p.is_file() for p in (tmp_path / "back").rglob("*")
    )

    # Swap one ciphertext for a valid age file of other content: age alone cannot tell, the
    # manifest can.
    forged = subprocess.run(
        [age, "-r", recipient], input=b"forged content", capture_output=True, check=True
    ).stdout
    (tmp_path / "vault" / "forms/tps-003.json").write_bytes(forged)
    assert cli(["restore", "vault", "back", "--identity", str(key), "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert [f["key"] for f in summary["failed"]] == ["forms/tps-003.json"]
    assert "manifest" in summary["failed"][0]["reason"]
    assert not (tmp_path / "back" / "forms/tps-003.json").exists()
    for name, data in files.items():
        if name != "forms/tps-003.json":
            assert (tmp_path / "back" / name).read_bytes() == data

    # With the original ciphertext back, a resumed restore completes and copies only that one.
    assert cli(["exit", "src", "vault", "--encrypt-to", recipient]) == 0
    capsys.readouterr()
    assert cli(["restore", "vault", "back", "--identity", str(key), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["copied_objects"] == 1 and summary["ok"]
    assert summary["checked_against_manifest"].endswith(".jsonl.age")
    assert (tmp_path / "back" / "forms/tps-003.json").read_bytes() == files["forms/tps-003.json"]


def test_restore_objects_encrypted_by_the_age_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    age = _age()
    key, recipient = _keys(tmp_path, monkeypatch, capsys)
    plain = {"a.txt": b"hello from age", "dir/b.bin": os.urandom(3 * 1024 * 1024), "c": b""}
    for name, data in plain.items():
        p = tmp_path / "sealed" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([age, "-r", recipient, "-o", str(p)], input=data, check=True)
    _write_config(
        tmp_path,
        [fs_store_config(tmp_path / "sealed", "sealed"), fs_store_config(tmp_path / "out", "out")],
    )
    # Nothing signed says where these come from: refused unless the user accepts that.
    assert cli(["restore", "sealed", "out", "--identity", str(key)]) == 2
    err = capsys.readouterr().err
    assert "no daulat manifest at sealed" in err and "--allow-unsigned" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))
    restore = ["restore", "sealed", "out", "--identity", str(key), "--allow-unsigned"]
    assert cli([*restore, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["checked_against_manifest"] is None and summary["verified_objects"] == 3
    assert summary["provenance"].startswith("origin not proven")
    for name, data in plain.items():
        assert (tmp_path / "out" / name).read_bytes() == data


def _exit_subprocess(config: Path, recipient: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["daulat", "exit", "src", "dst", "--encrypt-to", recipient, "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_encrypted_exit_seaweedfs_survives_kill_and_leaves_no_plaintext(
    tmp_path: Path,
    s3_server: S3Server,
    s3_server_b: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    age = _age()
    key, recipient = _keys(tmp_path, monkeypatch, capsys)
    src = s3_store_config(s3_server, "src", "enc-src")
    dst = s3_store_config(s3_server_b, "dst", "enc-dst")
    config = tmp_path / "daulat.toml"
    config.write_text(_toml([src, dst]))

    async def fill() -> dict[str, bytes]:
        store = open_store(StoreConfig.model_validate(src))
        files = {}
        for i in range(300):
            files[f"c1/{i:04d}.json"] = MARKER + os.urandom(2048)
        for i in range(3):
            files[f"scans/{i}.bin"] = MARKER + os.urandom(10 * 1024 * 1024)
        for k, v in files.items():
            await store.put(k, v)
        await store.close()
        return files

    files = run(fill())
    # Kill the exit part-way, twice, then let it finish.
    for delay in (0.8, 1.5):
        proc = _exit_subprocess(config, recipient)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    done = subprocess.run(
        [
            "daulat",
            "exit",
            "src",
            "dst",
            "--encrypt-to",
            recipient,
            "--config",
            str(config),
            "--json",
        ],
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()
    summary = json.loads(done.stdout)
    assert summary["verified_objects"] == len(files)

    stored = run(_read_all(dst))
    data_keys = {k for k in stored if not k.startswith(".daulat/")}
    assert data_keys == set(files)
    for name, blob in stored.items():
        assert MARKER not in blob, f"plaintext marker found in {name}"
    for name in data_keys:
        plain = subprocess.run(
            [age, "-d", "-i", str(key)], input=stored[name], capture_output=True, check=True
        ).stdout
        assert plain == files[name]
    # Nothing plaintext on the destination server's disk either.
    for path in s3_server_b.data_dir.rglob("*"):
        if path.is_file():
            assert MARKER not in path.read_bytes(), f"plaintext marker on disk in {path}"
    verify = subprocess.run(
        [
            "daulat",
            "verify",
            "src",
            "dst",
            "--full",
            "--identity",
            str(key),
            "--config",
            str(config),
        ],
        capture_output=True,
        timeout=300,
    )
    assert verify.returncode == 0, verify.stdout.decode() + verify.stderr.decode()


def test_key_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, recipient = _keys(tmp_path, monkeypatch, capsys)
    assert cli(["keys", "show", str(key)]) == 0
    assert capsys.readouterr().out.strip() == recipient
    before = key.read_bytes()
    assert cli(["keys", "new", "--out", str(key)]) == 2
    err = capsys.readouterr().err
    assert "overwrite" in err and "AGE-SECRET-KEY" not in err
    assert key.read_bytes() == before
    # A malformed recipient is a clear usage error, never a traceback.
    (tmp_path / "daulat.toml").write_text(
        _toml([fs_store_config(tmp_path / "a", "a"), fs_store_config(tmp_path / "b", "b")])
    )
    assert cli(["exit", "a", "b", "--encrypt-to", "age1notakey"]) == 2
    assert "age1notakey" in capsys.readouterr().err
    # A secret key pasted where a recipient belongs is refused without echoing it.
    secret = next(
        line for line in key.read_text().splitlines() if line.startswith("AGE-SECRET-KEY")
    )
    assert cli(["exit", "a", "b", "--encrypt-to", secret]) == 2
    assert secret not in capsys.readouterr().err


def _readme_snippet(heading: str) -> str:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split(heading, 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_readme_restore_without_daulat_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's recipe, run verbatim with only age, jq and sha256sum."""
    _age()
    if shutil.which("jq") is None:
        pytest.fail("jq is missing: apt-get install jq (scripts/test installs it)")
    files = _fill(tmp_path / "src", n_small=15)
    _ssh_keygen()
    key, recipient = _keys(tmp_path, monkeypatch, capsys)
    key.rename(tmp_path / "kpu-identity.txt")
    _write_config(
        tmp_path,
        [fs_store_config(tmp_path / "src", "src"), fs_store_config(tmp_path / "vault", "vault")],
    )
    assert cli(["exit", "src", "vault", "--encrypt-to", recipient]) == 0
    script = _readme_snippet("### Restoring without daulat")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert 'Good "daulat-manifest@daulat" signature' in done.stdout
    for name, data in files.items():
        assert (tmp_path / "restored" / name).read_bytes() == data
    # The check in the recipe really checks: corrupt one restored file and it fails.
    (tmp_path / "restored" / "forms/tps-001.json").write_bytes(b"tampered")
    check = script.split("# check every object against the manifest\n", 1)[1]
    again = subprocess.run(
        ["bash", "-c", "top=$PWD; cd vault && " + check],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert again.returncode != 0

    # A manifest whose signature does not hold stops the recipe before anything is decrypted.
    shutil.rmtree(tmp_path / "restored")
    (tmp_path / "manifest.jsonl").unlink()
    sig = next((tmp_path / "vault" / ".daulat").glob("manifest-*.jsonl.age.sig"))
    blob = next((tmp_path / "vault" / ".daulat").glob("manifest-*.jsonl.age"))
    blob.write_bytes(blob.read_bytes() + b"x")
    forged = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True
    )
    assert forged.returncode != 0 and sig.exists()
    assert not (tmp_path / "manifest.jsonl").exists() and not (tmp_path / "restored").exists()


def test_readme_restore_without_daulat_works_at_a_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same recipe for a copy made to ``vault:arsip``, started where the README says: in the
    directory that holds that copy's ``.daulat/`` (keys there are relative to it)."""
    _age()
    _ssh_keygen()
    files = _fill(tmp_path / "src", n_small=6, big=2 * 1024 * 1024)
    key, recipient = _keys(tmp_path, monkeypatch, capsys)
    key.rename(tmp_path / "kpu-identity.txt")
    _write_config(
        tmp_path,
        [fs_store_config(tmp_path / "src", "src"), fs_store_config(tmp_path / "vault", "vault")],
    )
    assert cli(["exit", "src", "vault:arsip", "--encrypt-to", recipient]) == 0
    script = _readme_snippet("### Restoring without daulat")
    assert "cd vault  " in script
    at_prefix = script.replace("cd vault  ", "cd vault/arsip  ", 1)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", at_prefix], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    for name, data in files.items():
        assert (tmp_path / "restored" / name).read_bytes() == data


@pytest.mark.parametrize("kind", ["fs", "s3"])
def test_a_truncated_object_fails_alone_and_the_restore_goes_on(
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Hostile review: one truncated object at an encrypted source aborted the whole restore
    ("error: cannot decrypt: the data is not an intact age file", 6 of 12 written, no summary,
    no JSON with --json). A damaged object now fails on its own, listed in the summary, while
    the others are restored; no identity matching stays a run-stopping error."""
    files = _fill(tmp_path / "src", n_small=10, big=10 * 1024 * 1024)
    key, recipient = _keys(tmp_path, monkeypatch, capsys)
    vault = fs_store_config(tmp_path / "vault", "vault")
    if kind == "fs":
        back = fs_store_config(tmp_path / "back", "back")
    else:
        back = s3_store_config(request.getfixturevalue("s3_server"), "back", _unique("trunc"))
    back2 = fs_store_config(tmp_path / "back2", "back2")
    _write_config(tmp_path, [fs_store_config(tmp_path / "src", "src"), vault, back, back2])
    assert cli(["exit", "src", "vault", "--encrypt-to", recipient]) == 0
    capsys.readouterr()
    damaged = ["forms/tps-004.json", "archive/big.bin"]  # one small, one streamed
    for name in damaged:
        path = tmp_path / "vault" / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    assert cli(["restore", "vault", "back", "--identity", str(key), "--json"]) == 1
    out = capsys.readouterr()
    summary = json.loads(out.out)
    assert sorted(f["key"] for f in summary["failed"]) == sorted(damaged), summary["failed"]
    assert all("cannot decrypt" in f["reason"] for f in summary["failed"])
    assert summary["copied_objects"] == len(files) - len(damaged)
    assert summary["stopped"] is None and "Traceback" not in out.err
    restored = run(_read_all(back))
    assert {k: v for k, v in restored.items() if not k.startswith(".daulat/")} == {
        k: v for k, v in files.items() if k not in damaged
    }
    # Human output: the summary, with the failures named.
    assert cli(["restore", "vault", "back", "--identity", str(key)]) == 1
    out = capsys.readouterr()
    assert "failed: 'forms/tps-004.json': cannot decrypt" in out.out, out.out
    assert "incomplete" in out.err and "Traceback" not in out.err

    # No identity matches: the run stops (nothing is written with the wrong key).
    other = tmp_path / "other.txt"
    assert cli(["keys", "new", "--out", str(other), "--no-config"]) == 0
    capsys.readouterr()
    assert cli(["restore", "vault", "back2", "--identity", str(other), "--json"]) in (1, 2)
    out = capsys.readouterr()
    assert "none of the given identities" in out.out + out.err
    assert not (tmp_path / "back2").exists()


def _unique(tag: str) -> str:
    import uuid

    return f"{tag}-{uuid.uuid4().hex[:10]}"


def test_restore_of_a_plain_replica_restores_it_and_writes_no_manifest_when_nothing_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A replica its signed manifest calls plain is restored as stored (checked against the
    manifest's SHA-256s), not failed object by object as "cannot decrypt"; and a restore that
    restores nothing leaves no manifest in its destination."""
    files = _fill(tmp_path / "src", n_small=6, big=64 * 1024)
    key, _ = _keys(tmp_path, monkeypatch, capsys)
    stores = [fs_store_config(tmp_path / d, d) for d in ("src", "plain", "back", "back2")]
    _write_config(tmp_path, stores)
    assert cli(["exit", "src", "plain"]) == 0
    capsys.readouterr()

    assert cli(["restore", "plain", "back", "--identity", str(key), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["copied_objects"] == len(files) and not out["failed"]
    assert any("signed manifest lists no encrypted object" in n for n in out["notes"]), out["notes"]
    for name, data in files.items():
        assert (tmp_path / "back" / name).read_bytes() == data

    # Every stored object replaced: each fails against the manifest, nothing is restored, and
    # the destination is left without a manifest.
    for name in files:
        (tmp_path / "plain" / name).write_bytes(b"replaced by the provider")
    assert cli(["restore", "plain", "back2", "--identity", str(key), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["copied_objects"] == 0 and len(out["failed"]) == len(files)
    assert all("SHA-256" in f["reason"] for f in out["failed"]), out["failed"]
    assert out["manifest_key"] is None
    back2 = tmp_path / "back2"
    assert not back2.exists() or not [p for p in back2.rglob("*") if p.is_file()]
