"""`daulat verify` (cheap form): each listed object gets the verdict that fits what happened.

An exit between two filesystem stores, then each kind of damage once — an object changed at
the source, one rewritten at the destination, one deleted there, one added at the source and
never copied — and one verify: every damaged key is named with its reason, every other object
is verified, and the journal's ``verified`` times follow (set for the good, cleared for the bad).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest
from conftest import fs_store_config, run, s3_store_config
from servers import S3Server
from test_safety import put_files
from test_transfer import cli, endpoint, exit_lib, small_dataset, unique, write_config

from daulat.config import StoreConfig
from daulat.crypto import (
    decrypt_bytes,
    load_identities,
    new_identity,
)
from daulat.stores import open_store
from daulat.stores.fs import FsStore
from daulat.transfer.adoption import PROOF_FIELD
from daulat.transfer.engine import VERIFIED_BY_CONTENT, VERIFIED_BY_LISTING
from daulat.transfer.journal import JOURNAL_NAME, REPLACED, Journal
from daulat.transfer.model import VERIFIED_BY_LISTING_ADOPTED
from daulat.transfer.verify import VerifyReport, verify


def test_verdicts_name_each_kind_of_damage(tmp_path: Path) -> None:
    src_raw = fs_store_config(tmp_path / "src", "src")
    dst_raw = fs_store_config(tmp_path / "dst", "dst")
    data = small_dataset(40).objects
    run(_fill(FsStore("src", tmp_path / "src"), data))
    jfile = tmp_path / "state" / JOURNAL_NAME
    first = exit_lib(endpoint(src_raw), endpoint(dst_raw), jfile)
    assert first.ok and first.verified_objects == 40

    keys = sorted(data)
    changed_src, rewritten_dst, deleted_dst, new_src = keys[3], keys[7], keys[11], "obj/new.bin"

    async def damage() -> None:
        src, dst = FsStore("src", tmp_path / "src"), FsStore("dst", tmp_path / "dst")
        await src.put(changed_src, data[changed_src] + b"more")
        await dst.put(rewritten_dst, bytes(b ^ 0x55 for b in data[rewritten_dst]))
        await dst.delete(deleted_dst)
        await src.put(new_src, b"never copied")

    run(damage())

    async def check() -> VerifyReport:
        with Journal(jfile) as journal:
            return await verify(endpoint(src_raw), endpoint(dst_raw), journal)

    report = run(check())
    assert dict(report.problems) == {
        changed_src: "changed at the source since it was copied",
        rewritten_dst: "different at the destination from what was written",
        deleted_dst: "missing at the destination",
        new_src: "missing at the destination",
    }
    assert report.objects == 41 and report.verified == 37
    assert not report.ok

    db = sqlite3.connect(jfile)
    rows = dict(db.execute("SELECT key, verified FROM journal"))
    bad = {changed_src, rewritten_dst, deleted_dst}
    assert all(rows[k] is None for k in bad)
    assert all(rows[k] is not None for k in keys if k not in bad)
    recorded = db.execute(
        "SELECT objects, verified, problems FROM verifications ORDER BY rowid DESC LIMIT 1"
    ).fetchone()
    assert recorded == (41, 37, 4)


def test_an_uncopied_destination_object_has_no_recorded_hash(tmp_path: Path) -> None:
    """An object that is at both sides but was never copied by daulat cannot be vouched for
    cheaply: the verdict says to run verify --full."""
    src_raw = fs_store_config(tmp_path / "src", "src")
    dst_raw = fs_store_config(tmp_path / "dst", "dst")

    async def fill_both() -> None:
        await FsStore("src", tmp_path / "src").put("same.txt", b"same")
        await FsStore("dst", tmp_path / "dst").put("same.txt", b"same")
        await FsStore("src", tmp_path / "src").put("c.txt", b"c.txt\n")
        await FsStore("dst", tmp_path / "dst").put("c.txt", b"old-c.txt\n")

    run(fill_both())

    async def check() -> VerifyReport:
        with Journal(tmp_path / JOURNAL_NAME) as journal:
            return await verify(endpoint(src_raw), endpoint(dst_raw), journal)

    report = run(check())
    assert sorted(report.problems) == [
        # Sizes that differ prove a difference from the listing alone: said as such.
        (
            "c.txt",
            "size differs: 6 bytes at the source, 10 at the destination (not copied by daulat)",
        ),
        ("same.txt", "no recorded hash (not copied by daulat): run verify --full"),
    ]


async def _fill(store: FsStore, data: dict[str, bytes]) -> None:
    await asyncio.gather(*(store.put(k, v) for k, v in data.items()))


# --------------------------------------------------------------------------------------------
# A replaced object: what the listing cannot see, --full finds, and the journal then forgets


def _replace_in_place(path: Path, data: bytes) -> None:
    """The provider's trick: other bytes of the same size, written into the same file (same
    inode, metadata kept), its times put back, so that the listing shows what daulat wrote."""
    st = path.stat()
    assert len(data) == st.st_size
    with path.open("r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_replaced_object_found_by_full_verify_is_sent_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hostile review: an object replaced by same-size age ciphertext (metadata kept, mtime
    restored) passed ``verify``; ``verify --full`` caught it, but the next ``exit`` skipped it
    ("every object verified") and ``check`` passed again after a plain ``verify``. Now --full
    makes the journal forget it: plain verify reports it, the policy stops counting it, the
    next exit sends it again. Every summary says what "verified" meant."""
    identity = tmp_path / "id.txt"
    recipient = new_identity(identity)
    data = small_dataset(12).objects
    put_files(tmp_path / "src", data)
    stores = [
        fs_store_config(tmp_path / "src", "src"),
        fs_store_config(tmp_path / "vault", "vault"),
    ]
    config = write_config(tmp_path, stores)
    config.write_text(
        config.read_text()
        + '\n[[policies]]\nname = "two copies"\nstores = ["src", "vault"]\nmin_replicas = 2\n'
    )
    c = ["-c", str(config)]

    def replicas() -> str:
        res = cli(["check", "--json", *c], capsys)
        found = [
            f["status"]
            for p in res.json["policies"]
            for f in p["findings"]
            if f["rule"] == "min_replicas"
        ]
        assert len(found) == 1, res.out
        return str(found[0])

    assert cli(["scan", "src", *c], capsys).code == 0
    enc = ["--encrypt-to", recipient]
    res = cli(["exit", "src", "vault", *enc, "--json", *c], capsys)
    assert res.code == 0, res.explain()
    assert res.json["verified_by"] == VERIFIED_BY_LISTING
    key = sorted(data)[5]
    target = tmp_path / "vault" / key
    # age garbage: the header kept, the payload's last bytes changed.
    stored = target.read_bytes()
    _replace_in_place(target, stored[:-64] + bytes(64))

    # The listing cannot see it, and says what it checked.
    res = cli(["verify", "src", "vault", "--json", *c], capsys)
    assert res.code == 0 and res.json["verified_by"] == VERIFIED_BY_LISTING
    res = cli(["verify", "src", "vault", *c], capsys)
    assert VERIFIED_BY_LISTING in res.out and "verify --full" in res.out
    assert replicas() == "pass"

    full = ["verify", "src", "vault", "--full", "-i", str(identity), *c]
    res = cli([*full, "--json"], capsys)
    assert res.code == 1
    assert res.json["verified_by"] == VERIFIED_BY_CONTENT
    assert [p["key"] for p in res.json["problems"]] == [key]
    assert res.json["problems"][0]["reason"].startswith("cannot decrypt")

    # A later listing-only verify no longer calls it verified; neither do the policies.
    res = cli(["verify", "src", "vault", "--json", *c], capsys)
    assert res.code == 1
    assert res.json["problems"] == [{"key": key, "reason": REPLACED}]
    assert res.json["verified"] == len(data) - 1
    assert replicas() == "fail"

    # The next exit sends it again (its proof, still in the metadata, is not believed).
    res = cli(["exit", "src", "vault", *enc, "--json", *c], capsys)
    assert res.code == 0, res.explain()
    assert res.json["copied_objects"] == 1 and res.json["adopted_objects"] == 0
    ids = load_identities(identity)
    assert decrypt_bytes(target.read_bytes(), ids) == data[key]
    assert cli([*full, "--json"], capsys).code == 0
    assert replicas() == "pass"
    res = cli(["exit", "src", "vault", *enc, *c], capsys)
    assert res.code == 0, res.explain()
    assert f"verified by: {VERIFIED_BY_LISTING}" in res.out


def test_a_replaced_plain_object_is_sent_again_after_full_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same without encryption, for copy: --full finds the replaced bytes, and the next
    copy sends the object again."""
    data = small_dataset(6).objects
    put_files(tmp_path / "src", data)
    stores = [fs_store_config(tmp_path / "src", "src"), fs_store_config(tmp_path / "dst", "dst")]
    c = ["-c", str(write_config(tmp_path, stores))]
    res = cli(["copy", "src", "dst", "--json", *c], capsys)
    assert res.code == 0 and res.json["verified_by"] == VERIFIED_BY_LISTING
    key = sorted(data)[2]
    _replace_in_place(tmp_path / "dst" / key, bytes(len(data[key])))
    assert cli(["verify", "src", "dst", *c], capsys).code == 0
    assert cli(["verify", "src", "dst", "--full", *c], capsys).code == 1
    res = cli(["copy", "src", "dst", "--json", *c], capsys)
    assert res.code == 0 and res.json["copied_objects"] == 1, res.explain()
    assert (tmp_path / "dst" / key).read_bytes() == data[key]
    assert cli(["verify", "src", "dst", "--full", *c], capsys).code == 0


def _audit_last(config: Path) -> dict[str, object]:
    import json

    lines = (config.parent / ".daulat" / "audit.jsonl").read_text().splitlines()
    entry: dict[str, object] = json.loads(lines[-1])
    return entry


def test_a_stopped_verify_says_what_it_did_not_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], s3_server: S3Server
) -> None:
    """Hostile review 2, finding 11: ``verify --full`` with an identity that opens nothing, and
    a verify whose destination cannot be listed, printed "0 objects, 0 B; verified 0, problems
    0" (JSON objects 0) and audited "differences". Now they count the source, say that the
    verification stopped and how many objects it did not check, and audit "stopped"."""
    identity, other = tmp_path / "id.txt", tmp_path / "other.txt"
    recipient = new_identity(identity)
    new_identity(other)
    data = small_dataset(12).objects
    put_files(tmp_path / "src", data)
    broken = {**s3_store_config(s3_server, "broken", "stopped-verify")}
    broken["credentials"] = {"access_key_id": "nobody", "secret_access_key": "wrong" * 8}
    stores = [
        fs_store_config(tmp_path / "src", "src"),
        fs_store_config(tmp_path / "vault", "vault"),
        broken,
    ]
    config = write_config(tmp_path, stores)
    c = ["-c", str(config)]
    res = cli(["exit", "src", "vault", "--encrypt-to", recipient, "--json", *c], capsys)
    assert res.code == 0, res.explain()

    for argv in (
        ["verify", "src", "vault", "--full", "-i", str(other)],
        ["verify", "src", "broken"],
    ):
        res = cli([*argv, "--json", *c], capsys)
        assert res.code == 1, res.explain()
        d = res.json
        assert d["stopped"], d
        assert d["objects"] == len(data), d
        assert d["unchecked_objects"] == len(data) - d["verified"] - len(d["problems"]), d
        assert d["unchecked_objects"] > 0, d
        entry = _audit_last(config)
        details = entry["details"]
        assert isinstance(details, dict)
        assert details["outcome"] == "stopped" and details["unchecked"] == d["unchecked_objects"]
        res = cli([*argv, *c], capsys)
        assert res.code == 1
        assert "STOPPED before it finished" in res.out, res.out
        assert f"{len(data):,} objects" in res.out and "not checked" in res.out, res.out
        assert "stopped:" in res.err


def _flip_keeping_metadata(direct: dict[str, object], key: str) -> None:
    """The provider flips one byte of ``key`` and keeps its metadata (the proof with it)."""

    async def flip() -> None:
        store = open_store(StoreConfig.model_validate(direct))
        try:
            reader = await store.get(key)
            body, meta = bytearray(await reader.read_all()), dict(reader.metadata)
            assert PROOF_FIELD in meta
            body[0] ^= 1
            await store.put(key, bytes(body), metadata=meta)
        finally:
            await store.close()

    run(flip())


@pytest.mark.parametrize(("kind", "lost_rows"), [("s3", False), ("s3", True), ("fs", False)])
def test_an_object_full_verify_found_different_is_adopted_by_no_pair(
    kind: str,
    lost_rows: bool,
    tmp_path: Path,
    s3_server: S3Server,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Hostile review: after ``verify --full`` found an altered ``o/a`` (proof kept), ``copy
    fsrc:o rdst:o`` adopted it by its proof, sending nothing. The distrust belongs to the
    destination object, not the pair: another pair (a sub-prefix) sends it again, and so does
    the same pair when its journal rows were lost before the verification."""
    put_files(tmp_path / "src", {"o/a": b"alpha" * 10, "o/b": b"bravo" * 10})
    if kind == "s3":
        rdst = s3_store_config(s3_server, "rdst", unique("distrust"), "p/")
        whole = {**rdst, "url": rdst["url"].removesuffix("p/")}
    else:
        rdst = {**fs_store_config(tmp_path / "dst" / "p", "rdst")}
        whole = fs_store_config(tmp_path / "dst", "whole")
    config = write_config(tmp_path, [fs_store_config(tmp_path / "src", "fsrc"), rdst])
    c = ["-c", str(config)]
    res = cli(["copy", "fsrc", "rdst", "--json", *c], capsys)
    assert res.code == 0 and res.json["copied_objects"] == 2, res.explain()
    _flip_keeping_metadata(whole, "p/o/a")
    if lost_rows:
        with sqlite3.connect(tmp_path / ".daulat" / JOURNAL_NAME) as db:
            db.execute("DELETE FROM journal")
        db.close()
    res = cli(["verify", "fsrc", "rdst", "--full", "--json", *c], capsys)
    assert res.code == 1 and [p["key"] for p in res.json["problems"]] == ["o/a"], res.explain()
    again = ["copy", "fsrc", "rdst"] if lost_rows else ["copy", "fsrc:o", "rdst:o"]
    res = cli([*again, "--json", *c], capsys)
    assert res.code == 0, res.explain()
    assert res.json["copied_objects"] == 1 and res.json.get("adopted_objects", 0) <= 1, res.out
    # The parent pair catches up (its own row still says replaced); the manifests the
    # sub-prefix copy left in o/.daulat/ are daulat's, not unproven objects.
    assert cli(["copy", "fsrc", "rdst", *c], capsys).code == 0
    for full in ([], ["--full"]):
        res = cli(["verify", "fsrc", "rdst", *full, "--json", *c], capsys)
        assert res.code == 0 and res.json["problems"] == [], res.json["problems"]


def test_listing_verify_of_adopted_objects_claims_no_upload_checksum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hostile review: after a lost journal the objects were adopted by proof (nothing sent),
    yet ``verify`` said "listing size + provider-checked upload checksum". Now it says what
    was checked for adopted objects."""
    put_files(tmp_path / "src", {"o/a": b"alpha" * 10, "o/b": b"bravo" * 10})
    stores = [fs_store_config(tmp_path / "src", "fsrc"), fs_store_config(tmp_path / "d", "d")]
    c = ["-c", str(write_config(tmp_path, stores))]
    assert cli(["copy", "fsrc", "d", *c], capsys).code == 0
    res = cli(["verify", "fsrc", "d", "--json", *c], capsys)
    assert res.json["verified_by"] == VERIFIED_BY_LISTING
    with sqlite3.connect(tmp_path / ".daulat" / JOURNAL_NAME) as db:
        db.execute("DELETE FROM journal")
    db.close()
    res = cli(["copy", "fsrc", "d", "--json", *c], capsys)
    assert res.code == 0 and res.json["adopted_objects"] == 2, res.explain()
    res = cli(["verify", "fsrc", "d", "--json", *c], capsys)
    assert res.code == 0 and res.json["verified_by"] == VERIFIED_BY_LISTING_ADOPTED
    assert "content not re-read" in cli(["verify", "fsrc", "d", *c], capsys).out
