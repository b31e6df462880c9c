"""Writes through ``daulat serve`` that a replica could never take, as a hostile review found
them: a key too long for a prefixed S3 replica, a file/directory conflict at a directory
replica; and ``daulat stores`` after a gateway stopped with a store down and a later one used
it. Real parts as in test_gateway_writes.py: ``python -m daulat serve``, directories and
SeaweedFS, boto3 and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import fs_store_config, s3_store_config
from servers import S3Server
from test_gateway import _audit, _status, client, gateway
from test_gateway_writes import _config, _direct, _rows, _writes
from test_gateway_writes_review import _start_put

from daulat.cli import run as cli
from daulat.stores.azure import azure_key_problem

pytestmark = pytest.mark.timeout(300)


def _error(exc: ClientError) -> tuple[int, str, str]:
    error = exc.response["Error"]
    return _status(exc), error["Code"], error["Message"]


def test_a_key_too_long_for_a_prefixed_s3_replica_is_400_before_any_byte_and_written_nowhere(
    tmp_path: Path, s3_server: S3Server
) -> None:
    stores = [
        fs_store_config(tmp_path / "pfs", "pfs"),
        s3_store_config(s3_server, "rep", "gw-long"),
        fs_store_config(tmp_path / "loc2", "loc2"),
    ]
    config = _config(
        tmp_path,
        stores,
        {"fsb": 'replicas = ["pfs", "rep:fsb", "loc2"]\nwritable = true\nquorum = 3'},
    )
    # 1,021 bytes: every directory holds it (no segment over 255), S3 would with no prefix,
    # but with "fsb/" it is 1,025 bytes, over S3's 1,024.
    long = "/".join(["s" * 200] * 5) + "/" + "t" * 16
    fits = long[:-1]  # 1,024 bytes with "fsb/"
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket="fsb", Key=long, Body=b"never anywhere")
        status, code, message = _error(exc.value)
        assert (status, code) == (400, "KeyTooLongError"), message
        assert "rep" in message and "1024 bytes" in message, message
        # One request: a 400 is not retried (a 503 was, three more times).
        assert exc.value.response["ResponseMetadata"]["RetryAttempts"] == 0
        with pytest.raises(ClientError) as exc:
            s3.create_multipart_upload(Bucket="fsb", Key=long)
        assert _error(exc.value)[:2] == (400, "KeyTooLongError")
        s3.put_object(Bucket="fsb", Key=fits, Body=b"fits everywhere")
        assert s3.get_object(Bucket="fsb", Key=fits)["Body"].read() == b"fits everywhere"
    assert _rows(config, long) == {}
    assert not (tmp_path / "pfs" / long).exists() and not (tmp_path / "loc2" / long).exists()
    held = _direct(s3_server).list_objects_v2(Bucket="gw-long")
    assert [o["Key"] for o in held.get("Contents", [])] == ["fsb/" + fits]
    assert [w["key"] for w in _writes(config)] == [fits]


def test_azure_counts_its_prefix_in_the_1024_characters_of_a_blob_name() -> None:
    # Azure's limit is 1,024 characters for the whole blob name, the store's prefix included;
    # the portable rule alone (1,024 bytes of key) let a prefixed key through.
    key = "k" * 1000
    assert azure_key_problem(key) is None
    assert azure_key_problem(key, prefix="p" * 23) is None  # 23 + "/" + 1000 = 1,024
    problem = azure_key_problem(key, prefix="p" * 24 + "/")
    assert problem is not None and problem.startswith("longer than 1024 characters"), problem
    # Characters, not bytes: 1,000 two-byte characters fit where the prefix leaves room.
    assert azure_key_problem("é" * 500, prefix="p" * 23) is None


def test_a_file_directory_conflict_at_a_directory_replica_is_refused_up_front(
    tmp_path: Path, s3_server: S3Server
) -> None:
    stores = [
        s3_store_config(s3_server, "prim", "gw-conflict"),
        fs_store_config(tmp_path / "loc", "loc"),
    ]
    config = _config(tmp_path, stores, {"fsb": 'replicas = ["prim", "loc"]\nwritable = true'})
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        s3.put_object(Bucket="fsb", Key="a/one.bin", Body=b"one")
        conflicts = {
            "a": "'a' is a directory of other objects here",
            "a/one.bin/child": "'a/one.bin' is an object here",
        }
        for key, why in conflicts.items():
            with pytest.raises(ClientError) as exc:
                s3.put_object(Bucket="fsb", Key=key, Body=b"never anywhere")
            status, code, message = _error(exc.value)
            assert (status, code) == (400, "InvalidArgument"), message
            assert "store loc cannot hold it" in message and why in message, message
            assert exc.value.response["ResponseMetadata"]["RetryAttempts"] == 0
            with pytest.raises(ClientError) as exc:
                s3.create_multipart_upload(Bucket="fsb", Key=key)
            assert _error(exc.value)[:2] == (400, "InvalidArgument")
        # Names that merely start alike are no conflict.
        s3.put_object(Bucket="fsb", Key="a/one.binary", Body=b"fine")
    for key in conflicts:
        assert _rows(config, key) == {}, key
    held = _direct(s3_server).list_objects_v2(Bucket="gw-conflict")
    assert sorted(o["Key"] for o in held.get("Contents", [])) == ["a/one.bin", "a/one.binary"]
    assert [w["key"] for w in _writes(config)] == ["a/one.bin", "a/one.binary"]


def test_a_conflict_that_races_past_the_check_is_named_and_no_sync_is_recommended(
    tmp_path: Path, s3_server: S3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    stores = [
        s3_store_config(s3_server, "prim", "gw-race"),
        fs_store_config(tmp_path / "loc", "loc"),
    ]
    config = _config(
        tmp_path, stores, {"pemilu": 'replicas = ["prim", "loc"]\nwritable = true\nquorum = 1'}
    )
    with gateway(config) as endpoint:
        # 'a' is checked (nothing at loc yet) and under way; 'a/b' is checked and written
        # meanwhile; when 'a' ends, loc holds a directory 'a'.
        racing = _start_put(endpoint, "a", 10, 5)
        client(endpoint).put_object(Bucket="pemilu", Key="a/b", Body=b"b")
        racing.send(b"12345")
        reply = racing.getresponse()
        assert reply.status == 200, reply.read()
        racing.close()
    row = _rows(config, "a")["loc:"]
    assert row[0] == "failed" and "name conflict" in (row[2] or ""), row
    capsys.readouterr()
    cli(["stores", "--config", str(config)])
    text = capsys.readouterr().out
    assert "loc: 1 object(s) written through the gateway cannot be held here" in text, text
    assert "directory of other objects" in text, text
    assert "daulat sync" not in text, text
    cli(["stores", "--json", "--config", str(config)])
    loc = {r["name"]: r for r in json.loads(capsys.readouterr().out)}["loc"]
    assert (loc["gateway_lagging"], loc["gateway_conflicting"]) == (0, 1)
    assert "directory of other objects" in loc["gateway_conflict"], loc


def _stores(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], str]:
    """``daulat stores``: each store's gateway standing (--json), and the text."""
    capsys.readouterr()
    assert cli(["stores", "--json", "--config", str(config)]) in (0, 1)
    standing = {r["name"]: r["gateway"] for r in json.loads(capsys.readouterr().out)}
    assert cli(["stores", "--config", str(config)]) in (0, 1)
    return standing, capsys.readouterr().out


def test_a_down_an_earlier_gateway_stopped_with_is_not_current_once_a_later_one_watches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "loc")]
    writable = 'replicas = ["prim", "loc"]\nwritable = true\nquorum = 1'
    config = _config(tmp_path, stores, {"pemilu": writable})
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        s3.put_object(Bucket="pemilu", Key="a.txt", Body=b"both\n")
        (tmp_path / "loc").rename(tmp_path / "loc.off")
        s3.put_object(Bucket="pemilu", Key="b.txt", Body=b"loc is down\n")
    ops = [(e["operation"], e["details"]) for e in _audit(config)]
    assert any(op == "gateway.down" and d.get("store") == "loc" for op, d in ops), ops
    assert ("gateway.stopped", {"stores": ["loc"]}) in ops, ops
    standing, text = _stores(config, capsys)
    assert standing["loc"]["state"] == "down" and standing["loc"].get("watched") is None
    assert "nothing has checked the store since" in text, text
    # loc answers again; a new gateway watches it, never finds it down, writes to it.
    (tmp_path / "loc.off").rename(tmp_path / "loc")
    with gateway(config) as endpoint:
        standing, text = _stores(config, capsys)
        assert "nothing has checked the store since" not in text, text
        started = [e["details"] for e in _audit(config) if e["operation"] == "gateway.started"]
        assert started[-1] == {"writable": ["pemilu"], "stores": ["loc", "prim"]}
        loc = standing["loc"]
        assert loc["state"] == "down" and loc["watched"] is not None, loc
        assert "a later gateway, started at" in text and "has not found it down" in text, text
        client(endpoint).put_object(Bucket="pemilu", Key="c.txt", Body=b"both again\n")
        assert (tmp_path / "loc" / "c.txt").read_bytes() == b"both again\n"
        standing, text = _stores(config, capsys)
    # The write reached loc: it answers, and its "down" is history, said so.
    loc = standing["loc"]
    assert loc["state"] == "recovered", loc
    assert (loc["seen_by"], loc["was"]) == ("write", "down"), loc
    text = " ".join(text.split())
    assert "loc: it answered again (recovered): a write through the gateway reached it" in text
    assert "; it was last found down at" in text and "did not answer" not in text, text
    # A read-only gateway starts a watch too, and says so in the audit log.
    config.write_text(config.read_text().replace("writable = true\nquorum = 1", ""))
    with gateway(config) as endpoint:
        client(endpoint).head_object(Bucket="pemilu", Key="c.txt")
    last = [e["details"] for e in _audit(config) if e["operation"] == "gateway.started"][-1]
    assert last == {"writable": [], "stores": ["loc", "prim"]}
