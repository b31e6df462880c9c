"""A recording (and, on request, corrupting) reverse proxy in front of fake-gcs-server.

    with gcs_proxy(gcs_server.endpoint) as proxy:
        # configure the store with endpoint = proxy.endpoint
        proxy.flip_uploads = True   # one byte of every upload's content flipped on the way
        proxy.flip_downloads = True # one byte of every downloaded body flipped
        proxy.pad_downloads = True  # every downloaded body comes with 100 bytes more
        proxy.fail_chunks = {2}     # the 2nd upload chunk (PUT) is answered 503, not forwarded
        proxy.seen                  # every request: method, path, headers, body (its start)

Resumable upload sessions live at the URI the server answers in ``Location``; the proxy rewrites
that URI to point at itself, so a session's chunks pass through it too (as they pass through
whatever sits between a client and Google). Bodies are read whole before they are forwarded:
test objects are small enough.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOST = "127.0.0.1"
#: Bodies longer than this are recorded by their first bytes only.
KEEP = 256 * 1024


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes  # the first KEEP bytes
    size: int


@dataclass
class GcsProxy:
    endpoint: str
    upstream: str
    flip_uploads: bool = False
    flip_downloads: bool = False
    pad_downloads: bool = False
    fail_chunks: set[int] = field(default_factory=set)
    chunks: int = 0
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def requests(self, method: str | None = None, path_start: str = "") -> list[Seen]:
        with self.lock:
            return [
                s
                for s in self.seen
                if (method is None or s.method == method) and s.path.startswith(path_start)
            ]


@contextlib.contextmanager
def gcs_proxy(upstream: str) -> Iterator[GcsProxy]:
    up_host, _, up_port = upstream.removeprefix("http://").rstrip("/").partition(":")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = bytearray(self.rfile.read(length) if length else b"")
            headers = {k.lower(): v for k, v in self.headers.items()}
            with state.lock:
                state.seen.append(
                    Seen(self.command, self.path, headers, bytes(body[:KEEP]), len(body))
                )
                flip = state.flip_uploads
                refuse = False
                if self.command == "PUT" and self.path.startswith("/upload/"):
                    state.chunks += 1
                    refuse = state.chunks in state.fail_chunks
            if refuse:
                error = b'{"error": {"code": 503, "message": "Service Unavailable"}}'
                self.send_response(503, "Service Unavailable")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(error)))
                self.end_headers()
                self.wfile.write(error)
                return
            content = self.command == "PUT" or "uploadType=multipart" in self.path
            if flip and body and content and self.path.startswith("/upload/"):
                body[len(body) // 2] ^= 0x01
            upstream_conn = http.client.HTTPConnection(up_host, int(up_port), timeout=60)
            try:
                upstream_conn.putrequest(
                    self.command, self.path, skip_host=True, skip_accept_encoding=True
                )
                for name, value in self.headers.items():
                    upstream_conn.putheader(name, value)
                upstream_conn.endheaders(bytes(body) if body else None)
                response = upstream_conn.getresponse()
                data = response.read()
                if state.flip_downloads and data and self.path.startswith("/download/"):
                    altered = bytearray(data)
                    altered[len(altered) // 2] ^= 0x01
                    data = bytes(altered)
                if state.pad_downloads and self.path.startswith("/download/"):
                    data += b"P" * 100
            finally:
                upstream_conn.close()
            self.send_response(response.status, response.reason)
            for name, value in response.getheaders():
                low = name.lower()
                if low in ("transfer-encoding", "content-length", "connection"):
                    continue
                if low == "location":
                    value = value.replace(upstream.rstrip("/"), state.endpoint)
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _any

    server = ThreadingHTTPServer((HOST, 0), Handler)
    server.daemon_threads = True
    state = GcsProxy(f"http://{HOST}:{server.server_address[1]}", upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
