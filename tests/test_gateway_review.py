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
from daulat.gateway.config import is_loopback

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


def _serve_and_list(config: Path, listen: str, port: int, log: Path) -> str:
    """``daulat serve --listen LISTEN`` until it answers on 127.0.0.1:PORT; bucket pemilu lists
    empty through it; then SIGTERM. Returns what it printed."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daulat", "serve", "--config", str(config),
             "--listen", listen],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "GW_KEY": KEY_ID, "GW_SECRET": SECRET},
        )  # fmt: skip
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
    return log.read_text()


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
    text = _serve_and_list(config, f"0.0.0.0:{port}", port, tmp_path / "open.log")
    assert f"daulat gateway on http://0.0.0.0:{port}" in text
    assert "warning: plain HTTP on an address other machines can reach" in text


def test_loopback_is_judged_by_address_including_ipv4_mapped_ipv6() -> None:
    """``::ffff:127.0.0.1`` is this machine's loopback written as IPv6: plain HTTP there needs
    no opt-in; a mapped address of another machine, or the wildcard, is not loopback."""
    assert is_loopback("::ffff:127.0.0.1") and is_loopback("127.0.0.9") and is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("::ffff:10.1.2.3") and not is_loopback("0.0.0.0")
    assert not is_loopback("::") and not is_loopback("no-such-host.invalid")


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

    # An address no interface of this machine has is a mistake in the config: exit 2.
    text = config.read_text().replace("[gateway]\n", "[gateway]\nallow_plain_http = true\n", 1)
    config.write_text(text)
    done = _serve(config, "192.0.2.1:9000")  # TEST-NET-1: never this machine's
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr == (
        "error: [gateway] listen 192.0.2.1:9000: no interface of this machine has that address\n"
    ), done.stderr
    done = _serve(config, "[fe80::1]:9000")  # link-local without its interface
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "no interface of this machine has that address (Invalid argument)" in done.stderr
    done = _serve(config, "no-such-host.invalid:9000")
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "listen no-such-host.invalid:9000: the name does not resolve" in done.stderr


def test_an_ipv4_loopback_written_as_ipv6_is_served_on_ipv4(tmp_path: Path) -> None:
    """``--listen [::ffff:127.0.0.1]:PORT`` listens on 127.0.0.1 (an IPv6-only socket could not
    bind it) without any plain-HTTP opt-in."""
    (tmp_path / "prim").mkdir()
    config = tmp_path / "daulat.toml"
    config.write_text(_toml([fs_store_config(tmp_path / "prim", "prim")], {"pemilu": ["prim"]}))
    port = _free_port()
    text = _serve_and_list(config, f"[::ffff:127.0.0.1]:{port}", port, tmp_path / "serve.log")
    assert f"daulat gateway on http://127.0.0.1:{port}" in text


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


# ---------------------------------------------------------------------------------- D7, D6


def test_every_replica_gone_lists_503_and_says_they_are_down(three: Path) -> None:
    """With the primary gone the listing comes from the replicas that answer; with every
    replica gone it is 503 (not a listing from memory), and a GET's 503 says the replicas are
    down (each vanished replica is audited ``gateway.down``), not that the key does not exist."""
    with gateway(three) as endpoint:
        s3 = client(endpoint)
        _off(three, "prim")
        listed = s3.list_objects_v2(Bucket="pemilu")
        assert sorted(o["Key"] for o in listed["Contents"]) == sorted(OBJECTS)
        _off(three, "rep1", "rep2")
        with pytest.raises(ClientError) as info:
            s3.list_objects_v2(Bucket="pemilu")
        assert _status(info.value) == 503
        with pytest.raises(ClientError) as info:
            s3.list_objects(Bucket="pemilu", Prefix="a/")
        assert _status(info.value) == 503
        with pytest.raises(ClientError) as info:
            s3.get_object(Bucket="pemilu", Key="top.txt")
        assert _status(info.value) == 503
        message = info.value.response["Error"]["Message"]
        assert "'top.txt' does not exist" not in message, message
        assert "rep1: down" in message and "rep2: down" in message, message
        down = {e["details"]["replica"] for e in _wait_audit(three, "gateway.down", 3)}
        assert down == {"prim", "rep1", "rep2"}
        _on(three, "prim", "rep1", "rep2")
        assert _get_once_back(s3, "top.txt") == b"x3\n"


def test_replica_withholding_an_object_is_a_finding(
    three: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The primary is down and rep1 lacks an object the journal says it holds verified: the
    client gets it from rep2, and rep1 withholding it is audited once (not per request) and
    shown by ``daulat stores``."""
    _off(three, "prim")
    (three.parent / "rep1" / "docs" / "two.txt").unlink()
    with gateway(three) as endpoint:
        s3 = client(endpoint)
        for _ in range(3):
            assert s3.get_object(Bucket="pemilu", Key="docs/two.txt")["Body"].read() == b"two\n"
        assert s3.get_object(Bucket="pemilu", Key="top.txt")["Body"].read() == b"x3\n"
        found = _wait_audit(three, "gateway.withheld")
        time.sleep(0.5)
        found = _operations(three, "gateway.withheld")
        assert [(e["details"]["replica"], e["details"]["key"]) for e in found] == [
            ("rep1", "docs/two.txt")
        ]
        assert not [e for e in _operations(three, "gateway.down") if e["details"]["replica"] == "rep1"]
    standing = _standing(three, capsys)
    assert standing["rep1"]["state"] == "withheld" and standing["rep1"]["key"] == "docs/two.txt"
    assert "rep1: the gateway last found it lacked 'docs/two.txt'" in _stores_text(three, capsys)


# ---------------------------------------------------------------------------------------- D4


def test_primary_seen_newer_then_down_is_503_not_a_rollback(three: Path) -> None:
    """The gateway served a version changed at the primary since the copy; the primary goes
    down: that key is 503 (audited once as ``gateway.stale``), never the older copy; keys not
    changed are still served from the replicas."""
    with gateway(three) as endpoint:
        s3 = client(endpoint)
        (three.parent / "prim" / "top.txt").write_bytes(b"x3-CHANGED\n")
        assert s3.get_object(Bucket="pemilu", Key="top.txt")["Body"].read() == b"x3-CHANGED\n"
        _off(three, "prim")
        for _ in range(3):
            with pytest.raises(ClientError) as info:
                s3.get_object(Bucket="pemilu", Key="top.txt")
            assert _status(info.value) == 503
            with pytest.raises(ClientError) as info:
                s3.head_object(Bucket="pemilu", Key="top.txt")
            assert _status(info.value) == 503
        assert s3.get_object(Bucket="pemilu", Key="a/b/c.txt")["Body"].read() == b"hello\n"
        _wait_audit(three, "gateway.stale")
        time.sleep(0.5)
        stale = _operations(three, "gateway.stale")
        assert [e["details"]["key"] for e in stale] == ["top.txt"]
        _on(three, "prim")
        assert _get_once_back(s3, "top.txt") == b"x3-CHANGED\n"


def test_primary_changed_since_copy_seen_in_a_listing_is_503_when_down(tmp_path: Path) -> None:
    """Knowing of the change from the primary's listing alone (never read) is enough."""
    _fill(tmp_path / "prim", {"top.txt": b"x3\n", "other.txt": b"o\n"})
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep")]
    config = tmp_path / "daulat.toml"
    config.write_text(_toml(stores, {"pemilu": ["prim", "rep"]}))
    _copy(config, "prim", "rep")
    (tmp_path / "prim" / "top.txt").write_bytes(b"x3-CHANGED\n")
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        sizes = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket="pemilu")["Contents"]}
        assert sizes == {"top.txt": 11, "other.txt": 2}
        _off(config, "prim")
        with pytest.raises(ClientError) as info:
            s3.get_object(Bucket="pemilu", Key="top.txt")
        assert _status(info.value) == 503
        assert s3.get_object(Bucket="pemilu", Key="other.txt")["Body"].read() == b"o\n"


def test_a_key_only_the_primary_holds_makes_the_listing_503_when_it_is_down(
    tmp_path: Path,
) -> None:
    """A key added at the primary after the last copy, seen in its listing: with the primary
    down, a listing from the copies would leave it out, and a mirroring client would delete its
    own copy of it. So the listing under its prefix is 503; another prefix still lists."""
    _fill(tmp_path / "prim", {"docs/old.txt": b"o\n", "other/a.txt": b"a\n"})
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep")]
    config = tmp_path / "daulat.toml"
    config.write_text(_toml(stores, {"pemilu": ["prim", "rep"]}))
    _copy(config, "prim", "rep")
    (tmp_path / "prim" / "docs" / "new.txt").write_bytes(b"new\n")
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="pemilu")["Contents"]]
        assert keys == ["docs/new.txt", "docs/old.txt", "other/a.txt"]
        _off(config, "prim")
        for prefix in ("", "docs/"):
            with pytest.raises(ClientError) as info:
                s3.list_objects_v2(Bucket="pemilu", Prefix=prefix)
            assert _status(info.value) == 503
        listed = s3.list_objects_v2(Bucket="pemilu", Prefix="other/")["Contents"]
        assert [o["Key"] for o in listed] == ["other/a.txt"]
        assert s3.get_object(Bucket="pemilu", Key="docs/old.txt")["Body"].read() == b"o\n"


# ---------------------------------------------------------------------------------- D2, D3, D5


def test_altered_plain_replica_stays_visible_in_stores(
    three: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """rep1 serves other bytes (same size): the client gets rep2's right ones; the finding is
    ``gateway.mismatch`` (its action says what happens), once however often the client asks,
    shown by ``daulat stores`` for rep1 and still shown after rep1 went down and recovered."""
    _off(three, "prim")
    (three.parent / "rep1" / "a" / "b" / "c.txt").write_bytes(b"HELLO\n")
    with gateway(three) as endpoint:
        s3 = client(endpoint)
        for _ in range(3):
            assert s3.get_object(Bucket="pemilu", Key="a/b/c.txt")["Body"].read() == b"hello\n"
        found = _wait_audit(three, "gateway.mismatch")
        time.sleep(0.5)
        found = _operations(three, "gateway.mismatch")
        assert [(e["details"]["replica"], e["details"]["key"]) for e in found] == [
            ("rep1", "a/b/c.txt")
        ]
        assert found[0]["details"]["action"] == (
            "this version is not read from rep1 again; its other objects still are"
        )
        # rep1 is still used for its other objects: not marked down.
        assert s3.get_object(Bucket="pemilu", Key="top.txt")["Body"].read() == b"x3\n"
        assert not _operations(three, "gateway.down")[1:]  # only the primary
        assert _standing(three, capsys)["rep1"]["state"] == "altered"
        _off(three, "rep1")  # rep1 goes down, then answers again
        assert s3.get_object(Bucket="pemilu", Key="top.txt")["Body"].read() == b"x3\n"
        assert [e["details"]["replica"] for e in _wait_audit(three, "gateway.down", 2)] == [
            "prim", "rep1"
        ]
        _on(three, "rep1")
        deadline = time.monotonic() + 20  # until a probe (after the cool-down) finds it back
        while not _operations(three, "gateway.recovered") and time.monotonic() < deadline:
            assert s3.get_object(Bucket="pemilu", Key="top.txt")["Body"].read() == b"x3\n"
            time.sleep(0.5)
        assert [e["details"]["replica"] for e in _operations(three, "gateway.recovered")] == ["rep1"]
    standing = _standing(three, capsys)
    assert standing["rep1"]["state"] == "altered" and standing["rep1"]["key"] == "a/b/c.txt"
    text = _stores_text(three, capsys)
    assert "rep1: the gateway last found it held other bytes than were copied for 'a/b/c.txt'" in text


def test_tampered_age_replica_is_a_mismatch_for_that_object_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An age replica whose ciphertext no longer authenticates (one byte flipped deep in
    big.bin): the response is cut (no wrong byte), the finding is one ``gateway.mismatch``
    (not ``gateway.down``/``recovered``, not one failover per client retry), later requests
    for that object are 503 at once, and the replica still serves its other objects."""
    identity = tmp_path / "id.txt"
    recipient = new_identity(identity)
    _fill(tmp_path / "prim", OBJECTS)
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "vault")]
    config = tmp_path / "daulat.toml"
    config.write_text(_toml(stores, {"pemilu": ["prim", "vault"]}, f'identity = "{identity}"'))
    _copy(config, "prim", "vault", "--encrypt-to", recipient)
    shutil.move(tmp_path / "prim", tmp_path / "prim.off")
    with open(tmp_path / "vault" / "big.bin", "r+b") as f:
        f.seek(12_000_000)
        b = f.read(4)
        f.seek(12_000_000)
        f.write(bytes(x ^ 0xFF for x in b))
    big = OBJECTS["big.bin"]
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        status, got, complete = _raw_get(_presign(s3, "big.bin"))
        assert status == 200 and not complete
        assert got == big[: len(got)] and len(got) <= 8 * MiB
        for _ in range(5):  # a client retrying, whole and ranged
            status, got, complete = _raw_get(
                _presign(s3, "big.bin"), {"Range": f"bytes={9 * MiB}-{9 * MiB + 99}"}
            )
            assert status == 503 and b"altered" in got, got
        assert s3.get_object(Bucket="pemilu", Key="a/b/c.txt")["Body"].read() == b"hello\n"
        assert _sha(s3.get_object(Bucket="pemilu", Key="top.txt")["Body"].read()) == _sha(b"x3\n")
        found = _wait_audit(config, "gateway.mismatch")
        time.sleep(0.5)
        found = _operations(config, "gateway.mismatch")
        assert [(e["details"]["replica"], e["details"]["key"]) for e in found] == [
            ("vault", "big.bin")
        ]
        assert "not an intact age file" in found[0]["details"]["error"]
        assert [e["details"]["replica"] for e in _operations(config, "gateway.down")] == ["prim"]
        assert not _operations(config, "gateway.recovered")
        assert len(_operations(config, "gateway.failover")) <= 1
    assert _standing(config, capsys)["vault"]["state"] == "altered"


def test_tls_key_not_matching_its_certificate_is_a_config_error(tmp_path: Path) -> None:
    """Found before anything listens (exit 2, one line naming both files), not after the
    banner as uvicorn's failure (exit 1)."""
    for name in ("a", "b"):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(tmp_path / f"{name}.key"), "-out", str(tmp_path / f"{name}.crt"),
             "-days", "2", "-subj", "/CN=localhost"],
            check=True, capture_output=True,
        )
    (tmp_path / "prim").mkdir()
    config = tmp_path / "daulat.toml"
    stores = [fs_store_config(tmp_path / "prim", "prim")]
    for key, why in (("b.key", "key values mismatch"), ("a.crt", "not a PEM certificate")):
        tls = f'tls_cert = "{tmp_path / "a.crt"}"\ntls_key = "{tmp_path / key}"'
        config.write_text(_toml(stores, {"pemilu": ["prim"]}, tls))
        done = _serve(config, f"127.0.0.1:{_free_port()}")
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and why in lines[0] and "a.crt" in lines[0], done.stderr
        assert "daulat gateway on" not in done.stderr
