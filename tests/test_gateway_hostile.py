"""``daulat serve`` against what a hostile new user found (issue 13's review, D10-D14), with
real parts: the gateway as ``python -m daulat serve``, boto3, directory replicas and the
SeaweedFS the suite starts (behind a proxy that can hang, for a primary that stops answering)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from conftest import fs_store_config
from test_gateway import _copy, _fill, _status, _toml, client, gateway

pytestmark = pytest.mark.timeout(300)

OBJECTS = {"a.txt": b"alpha\n", "docs/two.txt": b"two\n", "docs/three.txt": b"three\n"}


def test_listing_nobody_can_vouch_for_is_503_not_empty(tmp_path: Path) -> None:
    """D13: the primary is down and a replica holds no verified copy of anything from it (a
    typo'd address): an empty 200 would make `aws s3 sync --delete` delete every local file."""
    _fill(tmp_path / "prim", OBJECTS)
    (tmp_path / "rep1").mkdir()
    stores = [fs_store_config(tmp_path / "prim", "prim"), fs_store_config(tmp_path / "rep1", "rep1")]
    config = tmp_path / "daulat.toml"
    config.write_text(
        _toml(stores, {"mis": ["prim", "rep1:arsip"], "pemilu": ["prim", "rep1"]})
    )
    _copy(config, "prim", "rep1")
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        listed = s3.list_objects_v2(Bucket="mis")["Contents"]
        assert sorted(o["Key"] for o in listed) == sorted(OBJECTS)
        shutil.move(tmp_path / "prim", tmp_path / "prim.off")  # the primary goes down
        for kwargs in ({}, {"Prefix": "docs/"}, {"Delimiter": "/"}):
            with pytest.raises(ClientError) as caught:
                s3.list_objects_v2(Bucket="mis", **kwargs)
            assert _status(caught.value) == 503, kwargs
            assert caught.value.response["Error"]["Code"] == "ServiceUnavailable"
            assert "no replica holds a verified copy" in str(caught.value)
        # A replica that does hold the copies still lists them, and an empty prefix of it is
        # an honest empty listing.
        listed = s3.list_objects_v2(Bucket="pemilu")["Contents"]
        assert sorted(o["Key"] for o in listed) == sorted(OBJECTS)
        assert "Contents" not in s3.list_objects_v2(Bucket="pemilu", Prefix="nothing/")
    log = next(tmp_path.glob("serve-*.log")).read_text()
    assert (
        "bucket mis: replica rep1:arsip/ holds no verified copy of any object of prim "
        "(journal, signed manifests): it can never serve (did you mean rep1?)"
    ) in log, log
    assert "bucket pemilu: replica rep1 holds verified copies of 3 object(s) of prim" in log, log
