"""`daulat verify` (cheap form): each listed object gets the verdict that fits what happened.

An exit between two filesystem stores, then each kind of damage once — an object changed at
the source, one rewritten at the destination, one deleted there, one added at the source and
never copied — and one verify: every damaged key is named with its reason, every other object
is verified, and the journal's ``verified`` times follow (set for the good, cleared for the bad).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from conftest import fs_store_config, run
from test_transfer import endpoint, exit_lib, small_dataset

from daulat.stores.fs import FsStore
from daulat.transfer.journal import JOURNAL_NAME, Journal
from daulat.verify import VerifyReport, verify


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

    run(fill_both())

    async def check() -> VerifyReport:
        with Journal(tmp_path / JOURNAL_NAME) as journal:
            return await verify(endpoint(src_raw), endpoint(dst_raw), journal)

    report = run(check())
    assert report.problems == [
        ("same.txt", "no recorded hash (not copied by daulat): run verify --full")
    ]


async def _fill(store: FsStore, data: dict[str, bytes]) -> None:
    await asyncio.gather(*(store.put(k, v) for k, v in data.items()))
