"""``daulat serve`` against what a hostile new user found (issue 13's review, D10-D14), with
real parts: the gateway as ``python -m daulat serve``, boto3, directory replicas and the
SeaweedFS the suite starts (behind a proxy that can hang, for a primary that stops answering)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from xml.sax.saxutils import unescape

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from conftest import fs_store_config, s3_store_config
from servers import MotoServer, S3Server
from test_gateway import KEY_ID, SECRET, _audit, _copy, _fill, _status, _toml, client, gateway

from daulat.crypto import new_identity

pytestmark = pytest.mark.timeout(300)

OBJECTS = {"a.txt": b"alpha\n", "docs/two.txt": b"two\n", "docs/three.txt": b"three\n"}


def test_listing_nobody_can_vouch_for_is_503_not_empty(tmp_path: Path) -> None:
    """D13: the primary is down and a replica holds no verified copy of anything from it (a
    typo'd address): an empty 200 would make `aws s3 sync --delete` delete every local file."""
    _fill(tmp_path / "prim", OBJECTS)
    (tmp_path / "rep1").mkdir()
    stores = [
        fs_store_config(tmp_path / "prim", "prim"),
        fs_store_config(tmp_path / "rep1", "rep1"),
    ]
    config = tmp_path / "daulat.toml"
    config.write_text(_toml(stores, {"mis": ["prim", "rep1:arsip"], "pemilu": ["prim", "rep1"]}))
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


def _direct(server: S3Server) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key,
        region_name="us-east-1",
        config=BotoConfig(s3={"addressing_style": "path"}),
    )


def test_invalid_keys_never_knock_the_primary_down(tmp_path: Path, s3_server: S3Server) -> None:
    """D11: a key the primary refuses as invalid (SeaweedFS: 400 for ``../x``) is an answer
    about that key, not a failure of the primary: however often a client asks, the primary
    stays up and objects only it holds keep being served. ``a//one.txt`` is never served as
    ``a/one.txt`` (SeaweedFS collapses ``//``), nor ``../c2/secret.txt`` from outside the
    primary's prefix."""
    direct = _direct(s3_server)
    stores = [
        s3_store_config(s3_server, "sprim", "gw5-keys", "c1"),
        fs_store_config(tmp_path / "rep1", "rep1"),
    ]
    for key, data in {**OBJECTS, "a/one.txt": b"one\n"}.items():
        direct.put_object(Bucket="gw5-keys", Key=f"c1/{key}", Body=data)
    direct.put_object(Bucket="gw5-keys", Key="c2/secret.txt", Body=b"secret\n")
    config = tmp_path / "daulat.toml"
    config.write_text(_toml(stores, {"s3b": ["sprim", "rep1"]}))
    _copy(config, "sprim", "rep1")
    direct.put_object(Bucket="gw5-keys", Key="c1/only/prim.txt", Body=b"only at the primary\n")
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        for _ in range(5):
            for key in ("../c2/secret.txt", "a/../../c2/secret.txt", "a//one.txt", "./a.txt"):
                with pytest.raises(ClientError) as caught:
                    body = s3.get_object(Bucket="s3b", Key=key)["Body"].read()
                    pytest.fail(f"{key!r} served: {body!r}")
                assert _status(caught.value) in (400, 404), (key, caught.value.response)
                with pytest.raises(ClientError) as caught:
                    s3.head_object(Bucket="s3b", Key=key)
                assert _status(caught.value) in (400, 404), (key, caught.value.response)
        # The primary was never taken for down: what only it holds is served, at once.
        got = s3.get_object(Bucket="s3b", Key="only/prim.txt")
        assert got["Body"].read() == b"only at the primary\n"
        assert s3.get_object(Bucket="s3b", Key="a/one.txt")["Body"].read() == b"one\n"
    # Findings only: every gateway audits its start (gateway.started).
    entries = [e for e in _audit(config) if e["operation"].startswith("gateway.")]
    assert [e["operation"] for e in entries] == ["gateway.started"], entries


class HangingProxy:
    """A TCP relay in front of an endpoint that can *hang*: it keeps every connection open
    and accepts new ones, but passes no byte either way (a stopped process, a black-holed
    network), as SeaweedFS under SIGSTOP does."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").rstrip("/").partition(":")
        self.upstream = (host, int(port))
        self.hung = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client_sock, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            self.sockets += [client_sock, upstream]
            for a, b in ((client_sock, upstream), (upstream, client_sock)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                while self.hung.is_set():
                    time.sleep(0.05)
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.hung.clear()
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()


def test_hung_primary_costs_one_timeout_and_probes_in_the_background(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """D10: a primary that hangs costs the first request at most its ``request_timeout`` (not
    that times the store's retries), the next ones nothing (the circuit opens at once), and
    the half-open probe runs in the background: no client waits for it while a verified
    replica answers. ``gateway.recovered`` does not carry the old error as current."""
    direct = _direct(s3_server)
    proxy = HangingProxy(s3_server.endpoint)
    try:
        sprim = s3_store_config(s3_server, "sprim", "gw5-hang", "c1")
        sprim["endpoint"] = proxy.endpoint
        sprim["request_timeout"] = 4
        stores = [sprim, fs_store_config(tmp_path / "rep1", "rep1")]
        keys = {f"k{i}.txt": f"object {i}\n".encode() for i in range(6)}
        for key, data in keys.items():
            direct.put_object(Bucket="gw5-hang", Key=f"c1/{key}", Body=data)
        config = tmp_path / "daulat.toml"
        config.write_text(_toml(stores, {"s3b": ["sprim", "rep1"]}))
        _copy(config, "sprim", "rep1")
        with gateway(config) as endpoint:
            s3 = client(endpoint)
            assert s3.get_object(Bucket="s3b", Key="k0.txt")["Body"].read() == keys["k0.txt"]
            proxy.hung.set()

            def timed(key: str) -> float:
                t0 = time.monotonic()
                assert s3.get_object(Bucket="s3b", Key=key)["Body"].read() == keys[key]
                return time.monotonic() - t0

            first = timed("k1.txt")
            assert 3.5 < first < 8, first  # one request_timeout (4 s), not three (12 s)
            assert timed("k2.txt") < 2.5  # the circuit is open: the replica answers at once
            time.sleep(2.5)  # past the cool-down: the circuit is half-open
            for key in ("k3.txt", "k4.txt"):
                assert timed(key) < 2.5, key  # the probe runs without any client waiting
            proxy.hung.clear()
            deadline = time.monotonic() + 30
            while not any(e["operation"] == "gateway.recovered" for e in _audit(config)):
                assert time.monotonic() < deadline, _audit(config)
                time.sleep(0.5)
                s3.get_object(Bucket="s3b", Key="k5.txt")["Body"].read()
    finally:
        proxy.close()
    found = [e for e in _audit(config) if e["operation"].startswith("gateway.")]
    assert found[0]["operation"] == "gateway.started", found  # every gateway audits its start
    found = found[1:]
    assert [e["operation"] for e in found] == ["gateway.down", "gateway.recovered"], found
    down, recovered = found[0]["details"], found[1]["details"]
    assert "no answer within 4 s (request_timeout)" in down["error"], down
    assert recovered["error"] is None, recovered
    assert recovered["recovered_from"], recovered


def test_identity_that_cannot_decrypt_a_replica_is_refused_at_start(tmp_path: Path) -> None:
    """D14: an ``identity`` that cannot decrypt an age-encrypted replica is found at start-up
    (exit 2, one line), not during the outage the replica was meant to cover."""
    _fill(tmp_path / "prim", OBJECTS)
    (tmp_path / "rep2").mkdir()
    recipient = new_identity(tmp_path / "id.txt")
    new_identity(tmp_path / "other.txt")
    stores = [
        fs_store_config(tmp_path / "prim", "prim"),
        fs_store_config(tmp_path / "rep2", "rep2"),
    ]
    config = tmp_path / "daulat.toml"
    buckets = {"pemilu": ["prim", "rep2"]}
    config.write_text(_toml(stores, buckets, f'identity = "{tmp_path / "other.txt"}"'))
    _copy(config, "prim", "rep2", "--encrypt-to", recipient)
    env = {**os.environ, "GW_KEY": KEY_ID, "GW_SECRET": SECRET}
    run = subprocess.run(
        [sys.executable, "-m", "daulat", "serve", "--config", str(config),
         "--listen", "127.0.0.1:1"],
        capture_output=True, text=True, env=env, timeout=90,
    )  # fmt: skip
    assert run.returncode == 2, (run.returncode, run.stderr)
    errors = [line for line in run.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, run.stderr
    assert "identity cannot decrypt replica rep2" in errors[0], run.stderr
    assert "Traceback" not in run.stderr and "daulat gateway on" not in run.stderr
    # The right identity starts, and serves from the replica.
    config.write_text(_toml(stores, buckets, f'identity = "{tmp_path / "id.txt"}"'))
    with gateway(config) as endpoint:
        shutil.move(tmp_path / "prim", tmp_path / "prim.off")
        got = client(endpoint).get_object(Bucket="pemilu", Key="docs/two.txt")
        assert got["Body"].read() == OBJECTS["docs/two.txt"]


def _signed_get(endpoint: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` signed with SigV4 as sent, with no parameter added (boto3 adds
    ``encoding-type=url`` to every listing)."""
    request = AWSRequest(method="GET", url=endpoint + path)
    S3SigV4Auth(Credentials(KEY_ID, SECRET), "s3", "us-east-1").add_auth(request)
    try:
        with urllib.request.urlopen(
            urllib.request.Request(request.url, headers=dict(request.headers.items()))
        ) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_control_character_key_does_not_fail_the_listing(
    tmp_path: Path, moto_server: MotoServer
) -> None:
    """D12: a key XML 1.0 cannot carry (U+0001) is written as a character reference, as S3
    does, for clients that list without ``encoding-type=url``: one planted key never makes
    the whole listing fail. A carriage return is a reference too (a parser would read a
    literal one as a line feed: another key)."""
    direct = _direct(moto_server)
    stores = [s3_store_config(moto_server, "prim", "gw5-ctl")]
    keys = ["ctl/a\x01x.txt", "ctl/b\rx.txt", "ctl/c&<>.txt", "ctl/d\tx.txt"]
    for key in keys:
        direct.put_object(Bucket="gw5-ctl", Key=key, Body=key.encode())
    config = tmp_path / "daulat.toml"
    config.write_text(_toml(stores, {"ctl": ["prim"]}))
    with gateway(config) as endpoint:
        for query in ("list-type=2&prefix=ctl%2F", "prefix=ctl%2F", "list-type=2"):
            status, body = _signed_get(endpoint, f"/ctl?{query}")
            assert status == 200, (query, body)
            found = re.findall(rb"<Key>(.*?)</Key>", body)
            assert found == [
                b"ctl/a&#x1;x.txt",
                b"ctl/b&#xD;x.txt",
                b"ctl/c&amp;&lt;&gt;.txt",
                b"ctl/d\tx.txt",
            ], (query, body)
            # What a reader of such references gets back: the keys exactly.
            text = [
                unescape(re.sub(r"&#x([0-9A-F]+);", lambda m: chr(int(m[1], 16)), k.decode()))
                for k in found
            ]
            assert text == keys
        s3 = client(endpoint)  # boto3 lists with encoding-type=url: the keys exactly
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="ctl")["Contents"]] == keys
        for key in keys:
            assert s3.get_object(Bucket="ctl", Key=key)["Body"].read() == key.encode()
