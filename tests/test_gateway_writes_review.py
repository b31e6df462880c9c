"""Writes through ``daulat serve`` as a hostile review found them: keys with C1 control
characters, writes to a bucket the gateway does not have, CreateBucket of one it has (rclone
with its defaults), the 503 of a missed quorum, uploads left at a store by a gateway stopped
mid-write. Real parts as in test_gateway_writes.py: ``python -m daulat serve``, directories
and SeaweedFS, boto3 and rclone."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import fs_store_config, s3_store_config
from faultproxy import fault_proxy
from servers import S3Server
from test_gateway import KEY_ID, SECRET, MiB, _audit, _free_port, _status, client, gateway
from test_gateway_clients import _clean_env, _rclone_env, _run, _s5cmd, _tool
from test_gateway_writes import _config, _direct, _signed_request

from daulat.cli import run as cli

pytestmark = pytest.mark.timeout(300)


def _error(exc: ClientError) -> tuple[int, str]:
    return _status(exc), exc.response["Error"]["Code"]


def test_keys_with_c1_control_characters_are_refused_and_written_nowhere(tmp_path: Path) -> None:
    """U+0085 (NEL: a line break to some tools) and U+009B (CSI: a terminal escape) are
    control characters as much as U+001B is: 400, as README says of every control character."""
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep")]
    config = _config(tmp_path, stores, {"pemilu": 'replicas = ["prim", "rep"]\nwritable = true'})
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        for key in ("line\u0085break.txt", "csi\u009b31m.txt", "\u0080first"):
            with pytest.raises(ClientError) as exc:
                s3.put_object(Bucket="pemilu", Key=key, Body=b"x")
            assert _error(exc.value) == (400, "InvalidArgument"), key
            assert "control character" in exc.value.response["Error"]["Message"]
            with pytest.raises(ClientError) as exc:
                s3.create_multipart_upload(Bucket="pemilu", Key=key)
            assert _error(exc.value) == (400, "InvalidArgument"), key
        # Printable characters past U+009F are still taken.
        s3.put_object(Bucket="pemilu", Key="caf\u00e9 \u00a0nbsp.txt", Body=b"ok")
    for root in ("prim", "rep"):
        names = [p.name for p in (tmp_path / root).iterdir() if p.name != ".daulat-tmp"]
        assert names == ["caf\u00e9 \u00a0nbsp.txt"], (root, names)


def test_a_write_to_a_bucket_the_gateway_lacks_is_404_and_create_bucket_of_its_own_is_409(
    tmp_path: Path,
) -> None:
    """The gateway answers a write to an unknown bucket as it answers a read of it (404
    NoSuchBucket), not 405 "read-only"; CreateBucket of a configured bucket, writable or not,
    gets S3's 409 BucketAlreadyOwnedByYou; deleting one is still 405."""
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep", "ro")]
    config = _config(
        tmp_path,
        stores,
        {"pemilu": 'replicas = ["prim", "rep"]\nwritable = true', "arsip": 'replicas = ["ro"]'},
    )
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        for call in (
            lambda: s3.put_object(Bucket="newb", Key="a.txt", Body=b"x"),
            lambda: s3.create_multipart_upload(Bucket="newb", Key="a.txt"),
            lambda: s3.create_bucket(Bucket="newb"),
            lambda: s3.delete_bucket(Bucket="newb"),
        ):
            with pytest.raises(ClientError) as exc:
                call()
            assert _error(exc.value) == (404, "NoSuchBucket"), exc.value.response
        for name in ("pemilu", "arsip"):
            with pytest.raises(ClientError) as exc:
                s3.create_bucket(Bucket=name)
            assert _error(exc.value) == (409, "BucketAlreadyOwnedByYou"), name
        with pytest.raises(ClientError) as exc:
            s3.delete_bucket(Bucket="arsip")
        assert _error(exc.value) == (405, "MethodNotAllowed")
        assert not (tmp_path / "newb").exists()


def test_rclone_and_s5cmd_upload_with_their_defaults(tmp_path: Path) -> None:
    """rclone sends CreateBucket before its first upload (no ``--s3-no-check-bucket``) and
    goes on when told the bucket is already the caller's. s5cmd uploads as it is, a large
    file as a multipart upload."""
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep")]
    config = _config(tmp_path, stores, {"pemilu": 'replicas = ["prim", "rep"]\nwritable = true'})
    local = tmp_path / "up.txt"
    local.write_bytes(b"uploaded by rclone\n")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 * 1024 * 1024))  # three parts of 5 MiB
    with gateway(config) as endpoint:
        env = _rclone_env(tmp_path, endpoint)
        rclone = [_tool("rclone"), "--retries", "1", "--low-level-retries", "1"]
        _run([*rclone, "copyto", str(local), "gw:pemilu/dir/up.txt"], env)
        got = client(endpoint).get_object(Bucket="pemilu", Key="dir/up.txt")
        assert got["Body"].read() == b"uploaded by rclone\n"
        env = _clean_env(tmp_path)
        env.update(AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_REGION="us-east-1")
        s5 = [_s5cmd(), "--endpoint-url", endpoint, "--retry-count", "1"]
        _run([*s5, "cp", "--part-size", "5", str(big), "s3://pemilu/big.bin"], env)
        got = client(endpoint).get_object(Bucket="pemilu", Key="big.bin")
        assert got["Body"].read() == big.read_bytes()
    for root in ("prim", "rep"):
        assert (tmp_path / root / "dir" / "up.txt").read_bytes() == b"uploaded by rclone\n"
        assert (tmp_path / root / "big.bin").read_bytes() == big.read_bytes()


# ------------------------------------------------------------- a gateway stopped mid-write


@contextlib.contextmanager
def _serving(
    config: Path, port: int, wrap: list[str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``daulat serve`` on ``port`` (run by ``wrap``, such as ``timeout``, when given), its
    output in serve-PORT.log; the caller stops it (it is killed here only if still running)."""
    env = {**os.environ, "GW_KEY": KEY_ID, "GW_SECRET": SECRET}
    with open(config.parent / f"serve-{port}.log", "ab") as out:
        proc = subprocess.Popen(
            [*(wrap or []), sys.executable, "-m", "daulat", "serve", "--config", str(config),
             "--listen", f"127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def _start_put(endpoint: str, key: str, size: int, sent: int) -> http.client.HTTPConnection:
    """A PUT of ``size`` bytes (unsigned body, from this machine) of which only ``sent`` are
    sent: the rest never comes."""
    headers = {"content-length": str(size)}
    headers = _signed_request(endpoint, key, headers, "UNSIGNED-PAYLOAD")
    host = urllib.parse.urlsplit(endpoint)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
    conn.putrequest("PUT", f"/pemilu/{urllib.parse.quote(key)}", skip_accept_encoding=True)
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.endheaders()
    conn.send(os.urandom(sent))
    return conn


@contextlib.contextmanager
def _trickling(conn: http.client.HTTPConnection) -> Iterator[None]:
    """The PUT's body goes on trickling in (16 bytes every 0.1 s) while the block runs: a slow
    client, whose request outlives any graceful time."""
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.1):
            try:
                conn.send(b"\0" * 16)
            except OSError:
                return  # the gateway is gone

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def _uploads(server: S3Server, bucket: str) -> list[tuple[str, str]]:
    listed = _direct(server).list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return sorted((u["Key"], u["UploadId"]) for u in listed)


def _stop_mid_put(tmp_path: Path, s3_server: S3Server, name: str) -> tuple[Path, list[str], str]:
    """A writable bucket of three SeaweedFS buckets (quorum 2), another client's unfinished
    upload in each: the config, the buckets, that upload's key."""
    buckets = [f"gw-stop-{name}-{n}" for n in ("a", "b", "c")]
    stores = [s3_store_config(s3_server, f"s{n}", b) for n, b in enumerate(buckets)]
    config = _config(
        tmp_path, stores, {"pemilu": 'replicas = ["s0", "s1", "s2"]\nwritable = true\nquorum = 2'}
    )
    direct = _direct(s3_server)
    foreign = "theirs/in-progress.bin"
    for b in buckets:
        up = direct.create_multipart_upload(Bucket=b, Key=foreign)
        direct.upload_part(
            Bucket=b, Key=foreign, UploadId=up["UploadId"], PartNumber=1, Body=b"theirs"
        )
    return config, buckets, foreign


def _next_serve_leaves_only(
    config: Path, s3_server: S3Server, buckets: list[str], foreign: str
) -> None:
    """The next ``daulat serve`` aborts the uploads a stopped gateway recorded: once it answers,
    only the other client's upload is left in each bucket and none is recorded."""
    port = _free_port()
    with _serving(config, port) as proc:
        # Done before the gateway serves: once it answers, the uploads are gone.
        client(f"http://127.0.0.1:{port}").list_objects_v2(Bucket="pemilu")
        for b in buckets:
            assert [k for k, _ in _uploads(s3_server, b)] == [foreign], b
        assert _recorded(config) == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 143


def _wait_for_uploads(server: S3Server, buckets: list[str], n: int) -> None:
    deadline = time.monotonic() + 60
    while any(len(_uploads(server, b)) < n for b in buckets):
        assert time.monotonic() < deadline, [_uploads(server, b) for b in buckets]
        time.sleep(0.2)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_gateway_stopped_mid_put_aborts_its_uploads_and_no_one_elses(
    tmp_path: Path, s3_server: S3Server, sig: signal.Signals
) -> None:
    """SIGINT or SIGTERM while a 64 MiB PUT has sent 20 MiB: once the graceful time is past
    the request is cancelled, and each store's put aborts its multipart upload before the
    gateway exits, with no traceback in its output. Another client's unfinished upload in
    the same buckets is left as it was."""
    config, buckets, foreign = _stop_mid_put(tmp_path, s3_server, sig.name.lower())
    port = _free_port()
    with _serving(config, port) as proc:
        endpoint = f"http://127.0.0.1:{port}"
        conn = _start_put(endpoint, "big/cut.bin", 64 * MiB, 20 * MiB)
        _wait_for_uploads(s3_server, buckets, 2)  # the gateway's, beside the foreign one
        proc.send_signal(sig)
        code = proc.wait(60)
        conn.close()
    log = "".join(p.read_text() for p in tmp_path.glob("serve-*.log"))
    assert code == 128 + sig, (code, log)
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log
    # One message, daulat's: uvicorn's own line about the cancelled request is not printed.
    assert "graceful shutdown exceeded" not in log and "ERROR:" not in log, log
    assert "1 request still running after 5 s was cut off" in log, log
    for b in buckets:
        assert [k for k, _ in _uploads(s3_server, b)] == [foreign], b
    assert _recorded(config) == []  # each recorded upload forgotten once aborted


def test_a_second_sigint_during_the_drain_ends_the_gateway_at_once(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """Ctrl-C while a PUT trickles in, and Ctrl-C again a second later (the drain would take
    5 s, then the aborts): the gateway ends within moments of the second, exit 130, with
    "SIGINT again" and no traceback. Nothing is lost: the uploads it had recorded are aborted
    by the next ``daulat serve`` (as after ``kill -9``); another client's upload stays."""
    config, buckets, foreign = _stop_mid_put(tmp_path, s3_server, "again")
    port = _free_port()
    with _serving(config, port) as proc:
        conn = _start_put(f"http://127.0.0.1:{port}", "big/again.bin", 64 * MiB, 20 * MiB)
        _wait_for_uploads(s3_server, buckets, 2)
        with _trickling(conn):
            proc.send_signal(signal.SIGINT)
            time.sleep(1.0)
            second = time.monotonic()
            proc.send_signal(signal.SIGINT)
            code = proc.wait(60)
            took = time.monotonic() - second
        conn.close()
    log = "".join(p.read_text() for p in tmp_path.glob("serve-*.log"))
    assert code == 130, (code, log)
    assert took < 2.0, (took, log)  # the drain alone would take 4 s more
    assert "SIGINT again: stopping now" in log, log
    assert "Traceback" not in log and "graceful shutdown exceeded" not in log, log
    assert [k for _, k in _recorded(config)] == ["big/again.bin"] * 3
    _next_serve_leaves_only(config, s3_server, buckets, foreign)


def test_timeout_s_int_drains_a_gateway_once(tmp_path: Path, s3_server: S3Server) -> None:
    """``timeout -s INT`` signals the gateway and then its own process group, the gateway
    included: the same SIGINT twice within moments. It is one Ctrl-C: the drain runs, the
    request still running after it is cut off and its uploads aborted, exit 130, never
    "SIGINT again"."""
    timeout_bin = shutil.which("timeout")
    assert timeout_bin, "GNU timeout (coreutils) is needed"
    config, buckets, foreign = _stop_mid_put(tmp_path, s3_server, "timeout")
    port = _free_port()
    with _serving(config, port, wrap=[timeout_bin, "--preserve-status", "-s", "INT", "20"]) as proc:
        started = time.monotonic()
        conn = _start_put(f"http://127.0.0.1:{port}", "big/timeout.bin", 64 * MiB, 20 * MiB)
        _wait_for_uploads(s3_server, buckets, 2)
        assert time.monotonic() - started < 15, "too slow to start the PUT before timeout's"
        with _trickling(conn):
            code = proc.wait(90)
        conn.close()
    log = "".join(p.read_text() for p in tmp_path.glob("serve-*.log"))
    assert code == 130, (code, log)
    assert "again" not in log and "Traceback" not in log, log
    assert "stopped by SIGINT" in log, log
    for b in buckets:
        assert [k for k, _ in _uploads(s3_server, b)] == [foreign], b
    assert _recorded(config) == []


def _recorded(config: Path) -> list[tuple[str, str]]:
    """(location, key) of the multipart uploads the journal records as daulat's."""
    db = sqlite3.connect(config.parent / ".daulat" / "transfers.sqlite")
    try:
        return sorted(db.execute("SELECT location, key FROM uploads").fetchall())
    finally:
        db.close()


def test_uploads_a_killed_gateway_left_are_aborted_by_clean_and_the_next_serve(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """``kill -9`` mid-PUT: nothing aborts the uploads then, but each was recorded before its
    first part was sent. ``daulat clean STORE`` aborts the one at that store; the next
    ``daulat serve`` aborts the rest before it serves. Another client's unfinished upload in
    the same buckets survives both."""
    config, buckets, foreign = _stop_mid_put(tmp_path, s3_server, "kill")
    port = _free_port()
    with _serving(config, port) as proc:
        conn = _start_put(f"http://127.0.0.1:{port}", "big/killed.bin", 64 * MiB, 20 * MiB)
        _wait_for_uploads(s3_server, buckets, 2)
        proc.kill()
        proc.wait(30)
        conn.close()
    for b in buckets:
        assert [k for k, _ in _uploads(s3_server, b)] == ["big/killed.bin", foreign], b
    assert [k for _, k in _recorded(config)] == ["big/killed.bin"] * 3
    assert cli(["clean", "s1", "--config", str(config)]) == 0
    assert [k for k, _ in _uploads(s3_server, buckets[1])] == [foreign]
    assert len(_recorded(config)) == 2
    _next_serve_leaves_only(config, s3_server, buckets, foreign)
    log = "".join(p.read_text() for p in tmp_path.glob("serve-*.log"))
    assert "aborted 1 multipart upload(s) a stopped gateway left" in log, log


# ------------------------------------------------------------------------ what is recorded


def _writes_audited(config: Path) -> list[dict[str, Any]]:
    return [e["details"] for e in _audit(config) if e["operation"] == "gateway.write"]


def test_a_replica_down_at_write_time_is_recorded_with_the_reason_seen_then(
    tmp_path: Path,
) -> None:
    """A replica whose circuit is open when a write comes is skipped; asking whether it is
    usable starts its probe, which may find it back before the write is recorded. The
    lagging reason is the one the gateway had when it skipped it, never empty."""
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep")]
    config = _config(
        tmp_path, stores, {"pemilu": 'replicas = ["prim", "rep"]\nwritable = true\nquorum = 1'}
    )
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        s3.put_object(Bucket="pemilu", Key="both.txt", Body=b"both\n")
        (tmp_path / "rep").rename(tmp_path / "rep.off")
        s3.put_object(Bucket="pemilu", Key="gone.txt", Body=b"rep gone\n")
        (tmp_path / "rep.off").rename(tmp_path / "rep")
        time.sleep(2.5)  # past the circuit's cool-down: the next request probes it
        s3.put_object(Bucket="pemilu", Key="probed.txt", Body=b"rep probed\n")
    entries = {e["key"]: e for e in _writes_audited(config)}
    first = entries["gone.txt"]["lagging"]["rep"]
    assert "down at write time ()" not in first and first, first
    reason = entries["probed.txt"]["lagging"].get("rep")
    assert reason is not None, entries["probed.txt"]
    assert reason.startswith("down at write time (") and reason != "down at write time ()"
    assert reason.removeprefix("down at write time (").rstrip(")"), reason


def test_a_get_nothing_can_serve_names_the_primary_and_each_replica(tmp_path: Path) -> None:
    """Every replica gone: the GET's 503 names each one and why, the primary too (it was not
    asked by the read: found down while the version was resolved)."""
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep")]
    config = _config(tmp_path, stores, {"pemilu": 'replicas = ["prim", "rep"]\nwritable = true'})
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        s3.put_object(Bucket="pemilu", Key="a.txt", Body=b"both hold it\n")
        for n in ("prim", "rep"):
            (tmp_path / n).rename(tmp_path / f"{n}.off")
        with pytest.raises(ClientError) as exc:
            s3.get_object(Bucket="pemilu", Key="a.txt")
        assert _status(exc.value) == 503
        message = exc.value.response["Error"]["Message"]
        assert "prim: down (" in message and "rep: " in message, message


def _standing(config: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """Store name → its gateway standing per ``daulat stores --json`` (exit 1 when a store
    does not answer it)."""
    assert cli(["stores", "--json", "--config", str(config)]) in (0, 1)
    return {r["name"]: r["gateway"] for r in json.loads(capsys.readouterr().out)}


def test_a_replica_killed_mid_get_is_down_in_the_audit_and_in_stores(
    tmp_path: Path, s3_server: S3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    """The primary's endpoint dies while it serves a GET (after it had been down and was
    found back): the response continues from the replica, and the primary is down at once
    (``gateway.down`` beside the failover), so ``daulat stores`` says down, not the earlier
    "recovered"."""
    big = os.urandom(12 * MiB)
    with fault_proxy(s3_server.endpoint) as proxy:
        prim = s3_store_config(s3_server, "prim", "gw-killed-mid-get")
        prim["endpoint"] = proxy.endpoint
        prim["request_timeout"] = 5
        stores = [prim, fs_store_config(tmp_path / "rep", "rep")]
        config = _config(
            tmp_path, stores, {"pemilu": 'replicas = ["prim", "rep"]\nwritable = true'}
        )
        with gateway(config) as endpoint:
            s3 = client(endpoint)
            s3.put_object(Bucket="pemilu", Key="big.bin", Body=big)
            proxy.mode = "deny"  # refused: revoked, then found back
            assert s3.get_object(Bucket="pemilu", Key="big.bin")["Body"].read() == big
            proxy.mode = "pass"
            deadline = time.monotonic() + 30
            while _standing(config, capsys)["prim"]["state"] != "recovered":
                assert time.monotonic() < deadline, _standing(config, capsys)
                s3.head_object(Bucket="pemilu", Key="big.bin")
                time.sleep(0.5)
            proxy.response_rate = 4 * MiB  # three seconds for the whole object
            body = s3.get_object(Bucket="pemilu", Key="big.bin")["Body"]
            first = body.read(2 * MiB)
            threading.Thread(target=proxy.stop, daemon=True).start()  # the endpoint dies
            assert first + body.read() == big
            ops = [
                (e["operation"], e["details"].get("replica"))
                for e in _audit(config)
                if e["operation"].startswith("gateway.") and e["operation"] != "gateway.write"
            ]
            after = ops[ops.index(("gateway.recovered", "prim")) + 1 :]
            assert ("gateway.down", "prim") in after and ("gateway.failover", "prim") in after
            assert _standing(config, capsys)["prim"]["state"] == "down"
