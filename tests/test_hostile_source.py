"""A hostile source provider (``tests/s3fake.py`` in its hostile modes): a listing that never
ends, and objects that stream more bytes than they were listed with. daulat stops or fails the
object with a clear reason, never loops forever, never writes past what was listed, and never
reports a negative remainder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import fs_store_config
from s3fake import FakeS3, s3fake
from test_transfer import cli, write_config


def _s3(fake: FakeS3, name: str, bucket: str) -> dict[str, Any]:
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


@pytest.mark.timeout(60)
def test_a_listing_that_never_ends_stops_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hostile review 2, finding 19: every ListObjectsV2 answered the same page, truncated, with
    the same continuation token; the exit listed forever. Now the repeated token stops the
    listing with an error naming the store, the run stops (exit 1) and says how much it had
    listed; nothing claims that nothing remains."""
    monkeypatch.chdir(tmp_path)
    with s3fake(buckets=("evil",)) as fake:
        for i in range(13):
            fake.put_object("evil", f"k{i:02d}.txt", b"data")
        fake.stuck_listing = True
        write_config(tmp_path, [_s3(fake, "evil", "evil"), fs_store_config(tmp_path / "d", "d")])
        res = cli(["exit", "evil", "d", "--json"], capsys)
        lists = sum(1 for r in fake.requests if r.method == "GET" and "list-type=2" in r.target)
    assert res.code == 1, res.explain()
    d = res.json
    assert "store 'evil'" in d["stopped"] and "inconsistent listing" in d["stopped"], d
    assert d["remaining_known"] is False and d["left_objects"] is None, d
    assert d["copied_objects"] == 0 and d["ok"] is False
    assert lists <= 3, lists
    assert "Traceback" not in res.err


def test_listing_guard_catches_what_does_not_progress() -> None:
    """The checks one by one: a token followed twice, keys out of order where the provider
    promises order, a key listed twice in a page or again in the next page."""
    from daulat.stores.listguard import InconsistentListing, ListingGuard

    ordered = ListingGuard("s", ordered=True)
    ordered.page(["a", "b"])
    ordered.follow(("ContinuationToken", "t1"))
    ordered.page(["c"])
    ordered.follow(("ContinuationToken", "t2"))
    with pytest.raises(InconsistentListing, match=r"store 's'.*already given"):
        ordered.follow(("ContinuationToken", "t1"))
    with pytest.raises(InconsistentListing, match="must increase"):
        ordered.page(["b2"])
    loose = ListingGuard("s", ordered=False)
    loose.page(["b", "a"])  # no order promised
    loose.page(["c"])
    with pytest.raises(InconsistentListing, match="twice"):
        loose.page(["d", "c"])
    with pytest.raises(InconsistentListing, match="twice"):
        ListingGuard("s", ordered=False).page(["x", "y", "x"])


def test_a_source_serving_more_than_it_listed_fails_that_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hostile review 2, finding 20: an object listed with 5 bytes was served with 500; daulat
    wrote all 500 and said "left 0 (-493 B)". Now that object fails with a reason, nothing is
    written under its key, and what is left is never negative."""
    monkeypatch.chdir(tmp_path)
    with s3fake(buckets=("evil",)) as fake:
        fake.put_object("evil", "liar.txt", b"short")
        fake.put_object("evil", "ok.txt", b"fine")
        fake.served["liar.txt"] = b"L" * 500
        dst = tmp_path / "d"
        write_config(tmp_path, [_s3(fake, "evil", "evil"), fs_store_config(dst, "d")])
        res = cli(["exit", "evil", "d", "--json"], capsys)
        human = cli(["exit", "evil", "d"], capsys)
    assert res.code == 1, res.explain()
    d = res.json
    [(key, reason)] = [(f["key"], f["reason"]) for f in d["failed"]]
    assert key == "liar.txt" and "5" in reason and "500" in reason, reason
    assert d["copied_objects"] == 1 and d["copied_bytes"] == 4
    assert d["left_objects"] == 1 and d["left_bytes"] == 5, d
    assert not (dst / "liar.txt").exists()
    assert (dst / "ok.txt").read_bytes() == b"fine"
    assert human.code == 1
    assert "left 1 (5 B)" in human.out and "-" not in human.out.split("left", 1)[1][:12]


def test_a_stream_longer_than_listed_is_cut_off_before_it_is_written() -> None:
    """The engine reads at most the listed size: a body that goes on past it fails with a
    reason instead of filling the destination."""
    import asyncio

    from daulat.transfer.listed import NotAsListed, capped

    async def body() -> Any:
        for _ in range(10):
            yield b"x" * 100

    async def read(limit: int) -> int:
        n = 0
        async for chunk in capped(body(), limit, store="s", key="k"):
            n += len(chunk)
        return n

    assert asyncio.run(read(1000)) == 1000
    with pytest.raises(NotAsListed, match="more than the 999 bytes"):
        asyncio.run(read(999))
