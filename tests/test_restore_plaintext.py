"""A restore of an encrypted replica after the user replaced part of it in the clear.

``daulat sync --allow-plaintext SRC vault:sub`` replaces encrypted copies under ``vault``'s
``sub/`` with plaintext on purpose, and signs a manifest of its own there. A later restore of
``vault`` must say so, not accuse the provider of forgery; but only where that signed record
proves it: the provider can plant, move and put back what it likes (daulat.transfer.replaced).
"""

from __future__ import annotations

import calendar
import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import fs_store_config, s3_store_config
from servers import S3Server
from test_signed_manifests import (
    MARKER,
    _age_encrypt,
    _manifests,
    _setup,
    _store_put,
    _tool,
)
from test_transfer import cli, fill_config, read_config, unique

from daulat.signing import MANIFEST_NAMESPACE, load_signing_key, sign_bytes

FILES = {
    "atas/a.json": MARKER + b" a",
    "atas/b.json": MARKER + b" b",
    "sub/x.json": MARKER + b" x, encrypted first",
}
CLEAR = MARKER + b" x, replaced in the clear on purpose"


def _after_second_of(manifest: str) -> None:
    """Wait (at most a second) until the clock has passed the second in ``manifest``'s name:
    a later run is later only by its signed time, whose unit is the second."""
    stamp = manifest.rsplit("manifest-", 1)[1][:16]
    written = calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))
    while time.time() < written + 1:
        time.sleep(0.05)


def _encrypted_then_plaintext(
    tmp: Path, capsys: pytest.CaptureFixture[str], stores: list[dict[str, Any]]
) -> tuple[Path, str]:
    """``sync src vault`` encrypted, then ``sync src:sub vault:sub --allow-plaintext`` after
    ``sub/x.json`` changed at the source. Returns the identity file and its recipient."""
    src, vault = stores[0], stores[1]
    fill_config(src, FILES)
    _, identity, recipient = _setup(tmp, capsys, stores)
    done = cli(["sync", "src", "vault", "--encrypt-to", recipient], capsys)
    assert done.code == 0, done.explain()
    _after_second_of(_manifests(vault)[-1])
    fill_config(src, {"sub/x.json": CLEAR})
    refused = cli(["sync", "src:sub", "vault:sub"], capsys)
    assert refused.code == 2 and "--allow-plaintext" in refused.err, refused.explain()
    done = cli(["sync", "src:sub", "vault:sub", "--allow-plaintext"], capsys)
    assert done.code == 0, done.explain()
    assert read_config(vault)["sub/x.json"] == CLEAR
    return identity, recipient


@pytest.mark.parametrize("kind", ["fs", "seaweedfs"])
def test_a_plaintext_copy_made_on_purpose_is_named_so_and_not_restored(
    kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    """Before: "cannot decrypt" and "forged, damaged or withheld at the source" (exit 1). Now
    the reason names the signed run that replaced it and the restore that restores it; the
    object is still not restored from the encrypted replica's manifest (exit 1), and a rerun
    is not suggested. That restore of the sub-prefix then restores it, checked. On SeaweedFS
    the replica's listing gives ETags as S3 does, compared with those the record holds."""
    monkeypatch.chdir(tmp_path)
    stores = [fs_store_config(tmp_path / n, n) for n in ("src", "vault", "back")]
    if kind == "seaweedfs":
        server: S3Server = request.getfixturevalue("s3_server")
        stores[1] = s3_store_config(server, "vault", unique("replaced-vault"))
    identity, recipient = _encrypted_then_plaintext(tmp_path, capsys, stores)
    (sub_manifest,) = _manifests(stores[1], "sub/")

    restore = ["restore", "vault", "back", "--identity", str(identity)]
    res = cli([*restore, "--json"], capsys)
    assert res.code == 1, res.explain()
    assert not res.json["ok"]
    ((key, reason),) = [(f["key"], f["reason"]) for f in res.json["failed"]]
    assert key == "sub/x.json"
    assert reason.startswith("replaced by a plaintext copy by a signed run on 20"), reason
    assert f"vault:sub/{sub_manifest}" in reason, reason
    assert "`daulat restore vault:sub back:sub`" in reason, reason
    assert "cannot decrypt" not in reason
    back = read_config(stores[2])
    assert back == {k: v for k, v in FILES.items() if k.startswith("atas/")}, sorted(back)

    human = cli(restore, capsys)
    assert human.code == 1, human.explain()
    assert "failed: 'sub/x.json': replaced by a plaintext copy" in human.out, human.out
    assert "1 object failed above was replaced by a plaintext copy" in human.err, human.err
    assert "forged" not in human.err, human.err
    assert "will not change that" in human.err, human.err
    assert "run the same command again" not in human.err, human.err

    sub = cli(["restore", "vault:sub", "back:sub", "--json"], capsys)
    assert sub.code == 0, sub.explain()
    assert read_config(stores[2], "sub/") == {"x.json": CLEAR}

    # An object forged beside it keeps the old words, for it alone.
    _store_put(stores[1], "atas/a.json", _age_encrypt(recipient, MARKER + b" forged"))
    again = cli(["restore", "vault", "back:lagi", "--identity", str(identity)], capsys)
    assert again.code == 1, again.explain()
    assert "1 object failed above was replaced by a plaintext copy" in again.err, again.err
    assert (
        "the other objects failed above are not what the signed manifest says (forged" in again.err
    ), again.err


def _plant_record(
    vault: Mapping[str, Any], entries: list[dict[str, Any]], signer: Path | None
) -> None:
    """A manifest of ``sub/`` the provider makes: newest by name and time, listing ``entries``
    unencrypted, unsigned or signed by a key of its own."""
    name = "manifest-20991231T000000Z.jsonl"
    header = {
        "daulat": "manifest",
        "format": 2,
        "seq": 7,
        "prev": None,
        "signer": load_signing_key(signer).public.line if signer else "",
        "time": "2099-12-31T00:00:00+00:00",
        "audit_head": None,
        "prefix": "sub/",
        "store": "vault",
        "name": name,
        "keys": "relative",
    }
    body = "".join(json.dumps(x) + "\n" for x in [header, *entries]).encode()
    _store_put(vault, f"sub/.daulat/{name}", body)
    if signer is not None:
        sig = sign_bytes(load_signing_key(signer), body, MANIFEST_NAMESPACE)
        _store_put(vault, f"sub/.daulat/{name}.sig", sig.encode())


@pytest.mark.parametrize("signed_by", ["nobody", "a stranger"])
def test_an_unsigned_explanation_changes_nothing(
    signed_by: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The provider puts plaintext where the ciphertext was and plants, beside it, a record
    of ``sub/`` that lists it unencrypted with its right size and hash, unsigned or signed by
    a key no one pinned: the restore still says the object may be forged."""
    monkeypatch.chdir(tmp_path)
    stores = [fs_store_config(tmp_path / n, n) for n in ("src", "vault", "back")]
    fill_config(stores[0], FILES)
    _, identity, recipient = _setup(tmp_path, capsys, stores)
    assert cli(["sync", "src", "vault", "--encrypt-to", recipient], capsys).code == 0
    _store_put(stores[1], "sub/x.json", CLEAR)
    stranger = None
    if signed_by == "a stranger":
        stranger = tmp_path / "stranger"
        subprocess.run(
            [_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(stranger)],
            check=True,
        )
    entry = {"key": "x.json", "size": len(CLEAR), "sha256": hashlib.sha256(CLEAR).hexdigest()}
    _plant_record(stores[1], [entry], stranger)

    res = cli(["restore", "vault", "back", "--identity", str(identity), "--json"], capsys)
    assert res.code == 1, res.explain()
    ((key, reason),) = [(f["key"], f["reason"]) for f in res.json["failed"]]
    assert key == "sub/x.json" and reason.startswith("cannot decrypt"), reason
    human = cli(["restore", "vault", "back", "--identity", str(identity)], capsys)
    assert "forged, damaged or withheld at the source" in human.err, human.err
    assert "replaced by a plaintext copy" not in human.out + human.err


def test_an_older_plaintext_record_does_not_explain_a_later_encrypted_copy(
    tmp_path: Path,
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``sub/`` was copied in the clear first, then the encrypted sync of the whole replica
    wrote ``sub/x.json`` encrypted. The provider, which kept the plaintext, puts it back (same
    bytes: same size and ETag on S3). The genuine signed record of ``sub/`` is older than the
    manifest the restore believes: it explains nothing, and the old reason stays."""
    monkeypatch.chdir(tmp_path)
    src = fs_store_config(tmp_path / "src", "src")
    vault = s3_store_config(s3_server, "vault", unique("replay-vault"))
    back = fs_store_config(tmp_path / "back", "back")
    fill_config(src, {**FILES, "sub/x.json": CLEAR})
    _, identity, recipient = _setup(tmp_path, capsys, [src, vault, back])
    done = cli(["sync", "src:sub", "vault:sub"], capsys)
    assert done.code == 0, done.explain()
    kept = read_config(vault)["sub/x.json"]
    assert kept == CLEAR
    _after_second_of(_manifests(vault, "sub/")[-1])
    done = cli(["sync", "src", "vault", "--encrypt-to", recipient], capsys)
    assert done.code == 0, done.explain()
    assert read_config(vault)["sub/x.json"] != CLEAR  # encrypted now

    _store_put(vault, "sub/x.json", kept)  # the provider's replay
    res = cli(["restore", "vault", "back", "--identity", str(identity), "--json"], capsys)
    assert res.code == 1, res.explain()
    ((key, reason),) = [(f["key"], f["reason"]) for f in res.json["failed"]]
    assert key == "sub/x.json" and reason.startswith("cannot decrypt"), reason
    shutil.rmtree(tmp_path / "back")
    human = cli(["restore", "vault", "back", "--identity", str(identity)], capsys)
    assert "forged, damaged or withheld at the source" in human.err, human.err
