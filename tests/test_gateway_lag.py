"""``daulat stores`` on what a directory replica lacks of the gateway's writes, as a hostile
review found it: a key it lags by that it cannot hold beside a file it holds now (it was down
when the write came, so the write's up-front check could not see the file), and a key a sync
refused; and a replica found down that is back, caught up by a sync, shown so. Real parts as
in test_gateway_writes_conflicts.py: ``python -m daulat serve``, directories, boto3 and the
CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import fs_store_config
from test_gateway import client, gateway
from test_gateway_writes import _config, _rows

from daulat.cli import run as cli

pytestmark = pytest.mark.timeout(300)

# How the reason of an object a sync refused begins (daulat.gateway.lag.REFUSED_BY_SYNC).
REFUSED_BY_SYNC = "a sync refused it: "
WRITABLE = 'replicas = ["prim", "d2"]\nwritable = true\nquorum = 1'


def _stores(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], str]:
    """``daulat stores``: d2's row of --json, and the text."""
    capsys.readouterr()
    assert cli(["stores", "--json", "--config", str(config)]) in (0, 1)
    d2 = {r["name"]: r for r in json.loads(capsys.readouterr().out)}["d2"]
    assert cli(["stores", "--config", str(config)]) in (0, 1)
    return d2, capsys.readouterr().out


def _sync(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    cli(["sync", "prim", "d2", "--config", str(config)])  # refuses one object: not 0
    capsys.readouterr()


def test_a_key_lagging_behind_a_file_the_replica_holds_is_not_sent_to_a_sync(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "d2")]
    config = _config(tmp_path, stores, {"pemilu": WRITABLE})
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        s3.put_object(Bucket="pemilu", Key="qq", Body=b"qq everywhere\n")
        # Not the primary's only object: an empty primary is taken to have vanished.
        s3.put_object(Bucket="pemilu", Key="keep.txt", Body=b"kept\n")
        (tmp_path / "prim" / "qq").unlink()  # the primary can now hold qq/x; d2 cannot
        (tmp_path / "d2").rename(tmp_path / "d2.off")
        s3.put_object(Bucket="pemilu", Key="qq/x", Body=b"never at d2\n")
        s3.put_object(Bucket="pemilu", Key="fits.txt", Body=b"a sync copies it\n")
    (tmp_path / "d2.off").rename(tmp_path / "d2")
    assert _rows(config, "qq/x")["d2:"][0] == "failed"
    d2, text = _stores(config, capsys)
    # Before: 2 lagging, 0 conflicting, and the sync recommended for both.
    assert (d2["gateway_lagging"], d2["gateway_conflicting"]) == (1, 1), d2
    assert "'qq/x'" in d2["gateway_conflict"] and "'qq' is an object here" in d2["gateway_conflict"]
    assert "d2: 1 object(s) written through the gateway are not held verified here yet" in text
    assert "`daulat sync prim d2` copies them" in text, text
    assert "d2: 1 object(s) written through the gateway cannot be held here" in text, text
    # The sync copies what fits and refuses the other: it stays in view, with the reason.
    _sync(config, capsys)
    assert (tmp_path / "d2" / "fits.txt").read_bytes() == b"a sync copies it\n"
    assert _rows(config, "qq/x")["d2:"][0] == "refused"
    d2, text = _stores(config, capsys)
    # Before: 0 and 0 (the refused row no longer said it lags).
    assert (d2["gateway_lagging"], d2["gateway_conflicting"]) == (0, 1), d2
    assert d2["gateway_conflict"].startswith(REFUSED_BY_SYNC), d2
    assert "'qq/x'" in d2["gateway_conflict"], d2
    assert "d2: 1 object(s) written through the gateway cannot be held here" in text, text
    assert "daulat sync" not in text, text
    # Once the file is out of the way, a sync copies it and nothing lags.
    (tmp_path / "d2" / "qq").unlink()
    _sync(config, capsys)
    assert (tmp_path / "d2" / "qq" / "x").read_bytes() == b"never at d2\n"
    d2, text = _stores(config, capsys)
    assert (d2["gateway_lagging"], d2["gateway_conflicting"]) == (0, 0), d2
    assert "written through the gateway" not in text, text


def test_a_key_a_sync_refused_stays_in_view_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "d2")]
    config = _config(tmp_path, stores, {"pemilu": WRITABLE})
    with gateway(config) as endpoint:
        (tmp_path / "d2").rename(tmp_path / "d2.off")
        client(endpoint).put_object(Bucket="pemilu", Key="g/h", Body=b"h\n")
    (tmp_path / "d2.off").rename(tmp_path / "d2")
    (tmp_path / "d2" / "g").write_text("x\n")  # someone else's file
    d2, text = _stores(config, capsys)
    # Before: the sync recommended, though it refuses the object.
    assert (d2["gateway_lagging"], d2["gateway_conflicting"]) == (0, 1), d2
    assert "'g' is an object here" in d2["gateway_conflict"], d2
    assert "daulat sync" not in text, text
    _sync(config, capsys)
    assert _rows(config, "g/h")["d2:"][0] == "refused"
    assert (tmp_path / "d2" / "g").read_text() == "x\n"
    d2, text = _stores(config, capsys)
    # Before: lagging 0 and conflicting 0, the object missing at d2 shown nowhere.
    assert (d2["gateway_lagging"], d2["gateway_conflicting"]) == (0, 1), d2
    assert d2["gateway_conflict"].startswith(REFUSED_BY_SYNC), d2
    assert "'g/h'" in d2["gateway_conflict"], d2
    assert "d2: 1 object(s) written through the gateway cannot be held here" in text, text
    assert REFUSED_BY_SYNC in text and "daulat sync" not in text, text


def test_a_replica_back_and_caught_up_by_a_sync_is_no_longer_shown_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """d2 vanished while the gateway wrote (it found it down, audited), came back, and a
    sync copied what it lacked: nothing lags, so "did not answer (down)" is no longer its
    state, while the gateway runs and after it stopped; when it was last down is said in the
    past tense. Until the sync it is still shown down: nothing but the gateway had seen it."""
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "d2")]
    config = _config(tmp_path, stores, {"pemilu": WRITABLE})
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        s3.put_object(Bucket="pemilu", Key="keep.txt", Body=b"kept\n")
        (tmp_path / "d2").rename(tmp_path / "d2.off")
        s3.put_object(Bucket="pemilu", Key="a.txt", Body=b"d2 was down\n")
        (tmp_path / "d2.off").rename(tmp_path / "d2")
        d2, text = _stores(config, capsys)
        assert d2["gateway"]["state"] == "down" and d2["gateway_lagging"] == 1, d2
        assert "d2: the gateway last found it did not answer (down)" in text, text
        capsys.readouterr()
        assert cli(["sync", "prim", "d2", "--config", str(config)]) == 0
        assert (tmp_path / "d2" / "a.txt").read_bytes() == b"d2 was down\n"
        running = _stores(config, capsys)
    for d2, text in (running, _stores(config, capsys)):
        # Before: state "down", and "did not answer (down)" shown as the current state.
        found = d2["gateway"]
        assert found["state"] == "recovered", found
        assert (found["seen_by"], found["was"]) == ("sync", "down"), found
        assert found["error"] is None and "does not exist" in found["was_error"], found
        assert found["since"] >= found["was_since"], found
        assert d2["gateway_lagging"] == 0, d2
        text = " ".join(text.split())
        assert "did not answer" not in text, text
        assert re.search(
            r"d2: it answered again \(recovered\): `daulat sync` to d2 ended ok at \S+ \(\d+ s "
            r"ago\) and nothing of the gateway's writes lags there; it was last found down at "
            r"\S+ \(\d+ s ago\): store 'd2': directory \S+ does not exist",
            text,
        ), text
