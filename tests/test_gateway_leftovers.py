"""What ``daulat serve`` must not leave behind: an empty ``.daulat-tmp/`` in a directory
replica after a write, a replica shown "down" as if current long after the gateway that saw
it down has stopped, a read-only bucket whose replicas are one place. Real parts as in
test_gateway.py."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import fs_store_config, s3_store_config
from faultproxy import fault_proxy
from servers import S3Server
from test_gateway import KEY_ID, SECRET, MiB, _copy, _fill, _toml, client, gateway
from test_gateway_writes import _config

from daulat.cli import run as cli
from daulat.config import load_config
from daulat.errors import ConfigError
from daulat.gateway.app import _range as byte_range
from daulat.gateway.config import gateway_config
from daulat.gateway.standing import Standing, describe

pytestmark = pytest.mark.timeout(300)


def test_a_write_leaves_no_temp_dir_in_directory_replicas(tmp_path: Path) -> None:
    stores = [fs_store_config(tmp_path / "prim", "prim"), fs_store_config(tmp_path / "rep", "rep")]
    config = _config(tmp_path, stores, {"pemilu": 'replicas = ["prim", "rep"]\nwritable = true'})
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        s3.put_object(Bucket="pemilu", Key="small.txt", Body=b"hello")
        s3.put_object(Bucket="pemilu", Key="c1/big.bin", Body=os.urandom(9 * MiB))
        # While the gateway runs, not only once it has closed its stores.
        for root in ("prim", "rep"):
            assert (tmp_path / root / "small.txt").read_bytes() == b"hello"
            assert not (tmp_path / root / ".daulat-tmp").exists(), root


def test_health_a_stopped_gateway_found_says_its_age_and_that_nothing_watches_it(
    tmp_path: Path, s3_server: S3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    with fault_proxy(s3_server.endpoint) as proxy:
        prim = s3_store_config(s3_server, "prim", "gw-leftover-health")
        prim["endpoint"] = proxy.endpoint
        prim["request_timeout"] = 5
        stores = [prim, fs_store_config(tmp_path / "rep", "rep")]
        stores.append(fs_store_config(tmp_path / "seed", "seed"))
        _fill(tmp_path / "seed", {"a.txt": b"hello world\n"})
        config = tmp_path / "daulat.toml"
        config.write_text(_toml(stores, {"pemilu": ["prim", "rep"]}))
        _copy(config, "seed", "prim")
        _copy(config, "prim", "rep")

        def standing() -> dict[str, Any]:
            capsys.readouterr()
            cli(["stores", "--json", "--config", str(config)])
            return {r["name"]: r["gateway"] for r in json.loads(capsys.readouterr().out)}

        proxy.mode = "deny"
        with gateway(config) as endpoint:
            s3 = client(endpoint)
            assert s3.get_object(Bucket="pemilu", Key="a.txt")["Body"].read() == b"hello world\n"
            deadline = time.monotonic() + 10
            while (now := standing())["prim"] is None and time.monotonic() < deadline:
                time.sleep(0.2)  # the audit entry is written off the gateway's event loop
            assert now["prim"]["state"] == "revoked" and now["prim"]["stopped"] is None
        after = standing()["prim"]
        assert after["state"] == "revoked" and after["stopped"] >= after["since"]
        capsys.readouterr()
        cli(["stores", "--config", str(config)])
        text = " ".join(capsys.readouterr().out.split())
        assert re.search(
            r"prim: the gateway last found it refused access \(revoked\) at \S+ \(\d+ s ago\); "
            r"that gateway stopped at \S+ \(\d+ s ago\) and nothing has checked the store since",
            text,
        ), text


def test_a_states_age_reads_in_the_unit_people_use() -> None:
    found = Standing("down", "2026-12-01T10:00:00+00:00", "prim", "connection refused")
    at = dt.datetime(2026, 12, 5, 10, 30, tzinfo=dt.UTC)
    assert "at 2026-12-01T10:00:00+00:00 (4 days ago): connection refused" in describe(
        "prim", found, at
    )
    assert "(30 min ago)" in describe(
        "prim", found, dt.datetime(2026, 12, 1, 10, 30, tzinfo=dt.UTC)
    )
    assert "(5 h ago)" in describe("prim", found, dt.datetime(2026, 12, 1, 15, 0, tzinfo=dt.UTC))


@pytest.mark.parametrize(
    "replicas, message",
    [
        ('["prim", "prim:sub"]', "lie one inside the other"),
        ('["prim", "alias"]', "are the same place"),
    ],
)
def test_a_read_only_bucket_with_overlapping_replicas_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, replicas: str, message: str
) -> None:
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep")]
    stores.append(fs_store_config(tmp_path / "prim", "alias"))
    config = _config(tmp_path, stores, {"pemilu": f"replicas = {replicas}"})
    monkeypatch.setenv("GW_KEY", KEY_ID)
    monkeypatch.setenv("GW_SECRET", SECRET)
    with pytest.raises(ConfigError) as err:
        gateway_config(load_config(config))
    assert message in str(err.value) and "no copy apart from the other" in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_serve_help_says_writable_buckets_take_writes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    assert cli(["serve", "--help"]) == 0
    shown = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out).split())
    assert "(read-only)" not in shown, shown
    assert "Read-only, except buckets with writable = true" in shown, shown


@pytest.mark.parametrize(
    ("header", "size", "want"),
    [
        ("bytes=-1", 0, (0, 0, None)),  # an empty object has no last byte: 416, as bytes=0-0
        ("bytes=-5", 0, (0, 0, None)),
        ("bytes=0-0", 0, (0, 0, None)),
        ("bytes=-5", 3, (0, 3, True)),
        ("bytes=-2", 10, (8, 10, True)),
        ("bytes=2-", 10, (2, 10, True)),
    ],
)
def test_ranges_never_make_a_malformed_content_range(
    header: str, size: int, want: tuple[int, int, bool | None]
) -> None:
    assert byte_range(header, size) == want
