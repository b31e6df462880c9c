"""``daulat serve`` against a hostile new user's review: exposure, false successes, silent
rollbacks and evidence that must not be lost. Real parts as in test_gateway.py: the gateway runs
as ``python -m daulat serve``, replicas are directories (one age-encrypted), the client is
boto3 (and raw HTTP where a cut response must be seen)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import fs_store_config
from test_gateway import (
    KEY_ID,
    SECRET,
    MiB,
    _audit,
    _copy,
    _fill,
    _free_port,
    _sha,
    _status,
    _toml,
    client,
    gateway,
)
from test_gateway_integrity import _presign, _raw_get

from daulat.cli import run as cli
from daulat.crypto import new_identity

pytestmark = pytest.mark.timeout(300)

OBJECTS = {
    "top.txt": b"x3\n",
    "a/b/c.txt": b"hello\n",
    "docs/two.txt": b"two\n",
    "big.bin": os.urandom(20 * MiB + 321),  # three chunks
}


def _serve(config: Path, listen: str | None) -> subprocess.CompletedProcess[str]:
    """``daulat serve`` run to its end (for runs that must not start)."""
    where = ["--listen", listen] if listen else []
    return subprocess.run(
        [sys.executable, "-m", "daulat", "serve", "--config", str(config), *where],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "GW_KEY": KEY_ID, "GW_SECRET": SECRET},
    )


def _operations(config: Path, operation: str) -> list[dict[str, Any]]:
    return [e for e in _audit(config) if e["operation"] == operation]


def _wait_audit(config: Path, operation: str, count: int = 1) -> list[dict[str, Any]]:
    """The audit entries of ``operation`` once ``count`` are there (written off the loop)."""
    deadline = time.monotonic() + 10
    while len(found := _operations(config, operation)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def _get_once_back(s3: Any, key: str) -> bytes:
    """``key``'s bytes once the circuits' probes (after a cool-down that doubles per failed
    probe) found the stores back."""
    deadline = time.monotonic() + 20
    while True:
        try:
            body: bytes = s3.get_object(Bucket="pemilu", Key=key)["Body"].read()
            return body
        except ClientError as exc:
            if _status(exc) != 503 or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _standing(config: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    cli(["stores", "--json", "--config", str(config)])
    return {r["name"]: r["gateway"] for r in json.loads(capsys.readouterr().out)}


def _stores_text(config: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    cli(["stores", "--config", str(config)])
    return " ".join(capsys.readouterr().out.split())


@pytest.fixture
def three(tmp_path: Path) -> Path:
    """Bucket ``pemilu`` over ``prim`` > ``rep1`` > ``rep2`` (directories), OBJECTS copied to
    both replicas."""
    _fill(tmp_path / "prim", OBJECTS)
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep1", "rep2")]
    config = tmp_path / "daulat.toml"
    config.write_text(_toml(stores, {"pemilu": ["prim", "rep1", "rep2"]}))
    _copy(config, "prim", "rep1")
    _copy(config, "prim", "rep2")
    return config


def _off(config: Path, *names: str) -> None:
    for n in names:
        (config.parent / n).rename(config.parent / f"{n}.off")


def _on(config: Path, *names: str) -> None:
    for n in names:
        (config.parent / f"{n}.off").rename(config.parent / n)


# ------------------------------------------------------------------------------------ D9, D8


def test_non_loopback_listen_needs_tls_or_an_explicit_opt_in(tmp_path: Path) -> None:
    """Plain HTTP on an address other machines reach is refused (exit 2, one line naming the
    fix), from the config's ``listen`` and from ``--listen``; ``allow_plain_http = true``
    starts it, with a warning under the banner."""
    (tmp_path / "prim").mkdir()
    config = tmp_path / "daulat.toml"
    port = _free_port()
    base = _toml([fs_store_config(tmp_path / "prim", "prim")], {"pemilu": ["prim"]})
    config.write_text(base.replace("[gateway]\n", f'[gateway]\nlisten = "0.0.0.0:{port}"\n', 1))
    for listen in (f"0.0.0.0:{port}", f"[::]:{port}", None):  # None: the config's listen
        done = _serve(config, listen)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, done.stderr
        assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
        assert "tls_cert and tls_key" in lines[0] and "allow_plain_http = true" in lines[0]
        assert "daulat gateway on" not in done.stderr

    config.write_text(base.replace("[gateway]\n", "[gateway]\nallow_plain_http = true\n", 1))
    log = tmp_path / "open.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daulat", "serve", "--config", str(config),
             "--listen", f"0.0.0.0:{port}"],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "GW_KEY": KEY_ID, "GW_SECRET": SECRET},
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        s3 = client(f"http://127.0.0.1:{port}")
        assert s3.list_objects_v2(Bucket="pemilu").get("KeyCount") == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    text = log.read_text()
    assert f"daulat gateway on http://0.0.0.0:{port}" in text
    assert "warning: plain HTTP on an address other machines can reach" in text


def test_port_in_use_is_one_error_line_and_no_banner(tmp_path: Path) -> None:
    (tmp_path / "prim").mkdir()
    config = tmp_path / "daulat.toml"
    config.write_text(_toml([fs_store_config(tmp_path / "prim", "prim")], {"pemilu": ["prim"]}))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = _serve(config, f"127.0.0.1:{port}")
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert done.stderr == (
        f"error: [gateway] listen 127.0.0.1:{port}: address already in use "
        "(another daulat serve?)\n"
    ), done.stderr
    assert done.stdout == ""


# ---------------------------------------------------------------------------------------- D1


def test_object_subresources_are_not_implemented_never_the_bytes(three: Path) -> None:
    with gateway(three) as endpoint:
        s3 = client(endpoint)
        calls = {
            "acl": lambda: s3.get_object_acl(Bucket="pemilu", Key="top.txt"),
            "tagging": lambda: s3.get_object_tagging(Bucket="pemilu", Key="top.txt"),
            "attributes": lambda: s3.get_object_attributes(
                Bucket="pemilu", Key="top.txt", ObjectAttributes=["ETag"]
            ),
            "torrent": lambda: s3.get_object_torrent(Bucket="pemilu", Key="top.txt"),
            "retention": lambda: s3.get_object_retention(Bucket="pemilu", Key="top.txt"),
            "legal-hold": lambda: s3.get_object_legal_hold(Bucket="pemilu", Key="top.txt"),
        }
        for name, call in calls.items():
            with pytest.raises(ClientError) as info:
                call()
            assert _status(info.value) == 501, name
            assert info.value.response["Error"]["Code"] == "NotImplemented", name
            assert name in info.value.response["Error"]["Message"], name
        # A sub-resource no SDK call here knows (signed with it) is 501 too.
        def unknown(request: Any, **kwargs: Any) -> None:
            request.url += ("&" if "?" in request.url else "?") + "fancy-new-thing"

        s3.meta.events.register("before-sign.s3.GetObject", unknown)
        with pytest.raises(ClientError) as info:
            s3.get_object(Bucket="pemilu", Key="top.txt")
        assert _status(info.value) == 501
        assert "fancy-new-thing" in info.value.response["Error"]["Message"]
        s3.meta.events.unregister("before-sign.s3.GetObject", unknown)
        # The object itself is still served, presigned or not.
        assert s3.get_object(Bucket="pemilu", Key="top.txt")["Body"].read() == b"x3\n"
        assert _raw_get(_presign(s3, "top.txt"))[:2] == (200, b"x3\n")
