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
