"""A request timeout without progress: an endpoint that accepts connections and never answers
fails a run with a clear message in well under a minute, instead of hanging for minutes; so does
one that refuses every connection (nothing listens there), on IPv4 and on an IPv6 literal, and an
IPv6 literal endpoint that does answer works."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from conftest import s3_store_config
from servers import S3Server, silent_server

import daulat
from daulat.stores import timeouts


def _daulat(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    return subprocess.run(
        [sys.executable, "-c", "from daulat.cli import main; main()", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _slack(cwd: Path) -> float:
    """Twice the wall time of a command that only starts: the bounds below are about how long
    daulat waits for an endpoint, not how long Python and daulat take to start on a busy
    machine (over 30 s at a load of 30)."""
    started = time.monotonic()
    _daulat(["stores", "--help"], cwd)
    return 2 * (time.monotonic() - started)


def _config(tmp: Path, endpoint: str, kind: str) -> None:
    src = tmp / "src"
    src.mkdir()
    (src / "a.txt").write_text("some data")
    if kind == "s3":
        dst = f"""
            [stores.dst]
            url = "s3://silent-bucket"
            provider = "self-hosted"
            country = "ID"
            endpoint = "{endpoint}"
            [stores.dst.credentials]
            access_key_id = "AK"
            secret_access_key = "SK"
            """
    else:
        dst = f"""
            [stores.dst]
            url = "az://silent"
            provider = "azure"
            region = "indonesiacentral"
            endpoint = "{endpoint}/devstoreaccount1"
            [stores.dst.credentials]
            account_name = "devstoreaccount1"
            account_key = "{azure_key()}"
            """
    (tmp / "daulat.toml").write_text(
        textwrap.dedent(
            f"""
            [stores.src]
            url = "file://{src}"
            provider = "local"
            country = "ID"
            """
        )
        + textwrap.dedent(dst)
    )


def azure_key() -> str:
    from servers import AZURITE_ACCOUNT_KEY

    return AZURITE_ACCOUNT_KEY


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_a_silent_endpoint_fails_a_copy_within_the_default_timeout(
    tmp_path: Path, kind: str
) -> None:
    with silent_server() as endpoint:
        _config(tmp_path, endpoint, kind)
        started = time.monotonic()
        proc = _daulat(["copy", "src", "dst"], tmp_path)
        took = time.monotonic() - started
    assert proc.returncode == 1, proc.stdout + proc.stderr
    text = proc.stdout + proc.stderr
    assert "no answer within 30 s" in text and "request_timeout" in text
    assert "Traceback" not in text
    assert took < 60 + _slack(tmp_path), f"took {took:.0f} s"


def test_request_timeout_option_overrides_the_config(tmp_path: Path) -> None:
    with silent_server() as endpoint:
        _config(tmp_path, endpoint, "s3")
        started = time.monotonic()
        proc = _daulat(["copy", "src", "dst", "--request-timeout", "2"], tmp_path)
        took = time.monotonic() - started
        scan = _daulat(["scan", "dst", "--request-timeout", "1.5"], tmp_path)
    assert proc.returncode == 1 and "no answer within 2 s" in proc.stdout + proc.stderr
    assert took < 20 + _slack(tmp_path), f"took {took:.0f} s"
    assert scan.returncode != 0 and "no answer within 1.5 s" in scan.stdout + scan.stderr


def test_while_a_silent_destination_is_listed_progress_says_so(tmp_path: Path) -> None:
    """Until the run has a plan its counts are 0: progress says what it waits for (the display
    showed "0 of 0 objects" for as long as the destination took to time out)."""
    events: list[daulat.TransferProgress] = []
    with silent_server() as endpoint:
        _config(tmp_path, endpoint, "s3")
        summary = daulat.copy(
            tmp_path / "daulat.toml", "src", "dst", request_timeout=1, progress=events.append
        )
    assert summary.stopped and "cannot list the destination dst" in summary.stopped
    assert [e.waiting_for for e in events] == ["listing src", "listing dst"]
    assert all(e.planned_objects == e.done_objects == 0 for e in events)


def test_a_destination_that_cannot_be_listed_leaves_the_source_listing_counted(
    tmp_path: Path,
) -> None:
    """The source was listed whole (1 object, 9 B); the destination could not be: the summary
    counted that as 0 objects listed, as if the source were empty."""
    _config(tmp_path, _closed_port("127.0.0.1"), "s3")
    proc = _daulat(["copy", "src", "dst", "--json", "--request-timeout", "1"], tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    d = json.loads(proc.stdout)
    assert "cannot list the destination dst" in d["stopped"]
    assert (d["listed_objects"], d["listed_bytes"]) == (1, 9)
    assert (d["source_objects"], d["left_objects"], d["remaining_known"]) == (1, 1, True)


def test_a_slow_but_moving_transfer_is_not_cut(s3_server: S3Server, tmp_path: Path) -> None:
    """The limit is on progress, not on a whole request: a 20 MiB object that takes ~10 s
    through --bwlimit goes through with a 2 s request timeout."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(20 * 1024 * 1024))
    raw = s3_store_config(s3_server, "dst", "slow-moving", "t")
    (tmp_path / "daulat.toml").write_text(
        textwrap.dedent(
            f"""
            [stores.src]
            url = "file://{src}"
            provider = "local"
            country = "ID"

            [stores.dst]
            url = "{raw["url"]}"
            provider = "self-hosted"
            country = "ID"
            endpoint = "{raw["endpoint"]}"
            [stores.dst.credentials]
            access_key_id = "{s3_server.access_key_id}"
            secret_access_key = "{s3_server.secret_access_key}"
            """
        )
    )
    started = time.monotonic()
    proc = _daulat(["exit", "src", "dst", "--bwlimit", "2M", "--request-timeout", "2"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - started > 8  # it really was slow


# --------------------------------------------------------------------------------------------
# Refused connections and IPv6 literal endpoints


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


IPV6 = pytest.param(
    "::1",
    marks=pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine"),
)


def _closed_port(host: str) -> str:
    """``http://HOST:PORT`` where nothing listens: every connection is refused at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@pytest.mark.parametrize("host", ["127.0.0.1", IPV6])
@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_a_refused_connection_stops_the_run_within_the_request_timeout(
    tmp_path: Path, kind: str, host: str
) -> None:
    """Nothing listens at the endpoint: the run stops after refusals for request_timeout
    (3 s here), saying it cannot connect, instead of retrying for five minutes (and an IPv6
    literal is an endpoint like any other, not "list failed (ValueError)")."""
    _config(tmp_path, _closed_port(host), kind)
    started = time.monotonic()
    proc = _daulat(["exit", "src", "dst", "--request-timeout", "3"], tmp_path)
    took = time.monotonic() - started
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "cannot connect" in text and "is the endpoint right and up?" in text, text
    assert "ValueError" not in text and "Traceback" not in text
    assert "1 object (9 B) remain" in text, text
    assert took < 25 + _slack(tmp_path), f"took {took:.0f} s"
    ls = _daulat(["ls", "dst"], tmp_path)
    assert ls.returncode == 1 and "cannot connect" in ls.stderr, ls.stderr
    assert "ValueError" not in ls.stderr


def test_a_refused_connection_stops_the_run_within_the_default_timeout(tmp_path: Path) -> None:
    _config(tmp_path, _closed_port("127.0.0.1"), "s3")
    started = time.monotonic()
    proc = _daulat(["copy", "src", "dst"], tmp_path)
    took = time.monotonic() - started
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "refused or unreachable for 30 s" in proc.stdout + proc.stderr
    assert took < 75 + _slack(tmp_path), f"took {took:.0f} s"


class _Forwarder(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """Plain TCP from [::1]:PORT to an IPv4 server: SeaweedFS reached by an IPv6 literal."""

    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        super().__init__(("::1", 0), _Pipe)


class _Pipe(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: Any = self.server
        up = socket.create_connection(server.upstream)

        def pump(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    b.shutdown(socket.SHUT_WR)

        back = threading.Thread(target=pump, args=(up, self.request), daemon=True)
        back.start()
        pump(self.request, up)
        back.join(60)
        up.close()


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_an_ipv6_literal_endpoint_works(s3_server: S3Server, tmp_path: Path) -> None:
    raw = s3_store_config(s3_server, "dst", "over-ipv6")
    upstream = urllib.parse.urlsplit(s3_server.endpoint)
    forwarder = _Forwarder((upstream.hostname or "127.0.0.1", upstream.port or 80))
    thread = threading.Thread(target=forwarder.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://[::1]:{forwarder.server_address[1]}"
        _config(tmp_path, endpoint, "s3")
        text = (tmp_path / "daulat.toml").read_text()
        text = text.replace('url = "s3://silent-bucket"', 'url = "s3://over-ipv6"')
        text = text.replace(
            'access_key_id = "AK"', f'access_key_id = "{raw["credentials"]["access_key_id"]}"'
        )
        text = text.replace(
            'secret_access_key = "SK"',
            f'secret_access_key = "{raw["credentials"]["secret_access_key"]}"',
        )
        (tmp_path / "daulat.toml").write_text(text)
        proc = _daulat(["exit", "src", "dst"], tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        proc = _daulat(["verify", "src", "dst", "--full"], tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        ls = _daulat(["ls", "dst"], tmp_path)
        assert "a.txt" in ls.stdout.split(), ls.stdout + ls.stderr
    finally:
        forwarder.shutdown()
        forwarder.server_close()


def test_an_endpoint_that_answered_is_given_the_outage_limit_counted_from_its_last_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once an endpoint has answered, refusals and silence make it Unresponsive only after
    the outage limit (four times request_timeout, at least 120 s) of nothing else; one answer in
    between (a server that restarted) starts the count again. Before any answer, a refusal
    counts for request_timeout and a silence at once."""
    now = [1000.0]
    monkeypatch.setattr(timeouts.time, "monotonic", lambda: now[0])
    assert timeouts.outage_limit(30) == 120 and timeouts.outage_limit(60) == 240
    assert timeouts.outage_limit(None) is None

    fresh = timeouts.Liveness(30)
    assert fresh.gone(refused=True) is None
    now[0] += 30
    assert "refused or unreachable for 30 s" in (fresh.gone(refused=True) or "")
    assert "no answer within 30 s" in (timeouts.Liveness(30).gone(refused=False) or "")

    live = timeouts.Liveness(30)
    live.answer()
    assert live.gone(refused=False) is None
    now[0] += 119
    assert live.gone(refused=True) is None
    live.answer()  # it came back: the outage starts again at the next fault
    now[0] += 5
    assert live.gone(refused=True) is None
    now[0] += 119
    assert live.gone(refused=False) is None
    now[0] += 1
    assert "stopped answering" in (live.gone(refused=True) or "")

    unlimited = timeouts.Liveness(None)
    unlimited.answer()
    unlimited.gone(refused=True)
    now[0] += 10**6
    assert unlimited.gone(refused=True) is None
