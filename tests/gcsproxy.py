"""A recording (and, on request, corrupting) reverse proxy in front of fake-gcs-server.

    with gcs_proxy(gcs_server.endpoint) as proxy:
        # configure the store with endpoint = proxy.endpoint
        proxy.flip_uploads = True   # one byte of every upload's content flipped on the way
        proxy.flip_chunks = True    # the same, for the chunks of resumable sessions only
        proxy.flip_downloads = True # one byte of every downloaded body flipped
        proxy.pad_downloads = True  # every downloaded body comes with 100 bytes more
        proxy.fail_chunks = {2}     # the 2nd upload chunk (PUT) is answered 503, not forwarded
        proxy.seen                  # every request: method, path, headers, body (its start)

Resumable upload sessions live at the URI the server answers in ``Location``; the proxy rewrites
that URI to point at itself, so a session's chunks pass through it too (as they pass through
whatever sits between a client and Google). Bodies are read whole before they are forwarded
(test objects are small enough), and a body cut short (its sender killed) is not forwarded.

Two parts of Google's resumable-session protocol that fake-gcs-server (1.54) lacks are answered
here, from what the server itself acknowledged:

* the status query (an empty ``PUT`` with ``Content-Range: bytes */*``): fake-gcs-server takes
  it for the end of a streamed upload and commits the bytes it holds as the object. The proxy
  answers it as Google does, never forwarding it: ``308`` with ``Range: bytes=0-N`` for the
  bytes the server acknowledged (``Range`` of its last ``308``), or the finished object's
  resource (``200``), or ``404`` for a session cancelled or unknown;
* cancelling (``DELETE`` on the session URI): fake-gcs-server answers ``499`` but keeps taking
  chunks. The proxy forwards it, and then answers ``404`` for that session, as Google does.

    proxy.cancel_sessions()   # every session seen so far is cancelled (behind the client's back)
    proxy.status_queries      # how many status queries were answered
"""

from __future__ import annotations

import contextlib
import http.client
import re
import threading
import urllib.parse
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
    flip_chunks: bool = False
    flip_downloads: bool = False
    pad_downloads: bool = False
    fail_chunks: set[int] = field(default_factory=set)
    chunks: int = 0
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # upload_id -> bytes acknowledged, or the finished object's resource (JSON)
    sessions: dict[str, int | bytes] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)
    status_queries: int = 0
    in_flight: int = 0  # requests forwarded and not yet answered by the server

    def cancel_sessions(self) -> None:
        """Cancel every open session seen so far (as a DELETE to Google would)."""
        with self.lock:
            self.cancelled.update(k for k, v in self.sessions.items() if isinstance(v, int))

    def acknowledged(self) -> int:
        """Bytes the server acknowledged in its open sessions."""
        with self.lock:
            return sum(v for k, v in self.sessions.items() if isinstance(v, int))

    def sent(self) -> int:
        """Bytes of every upload request body so far."""
        with self.lock:
            return sum(s.size for s in self.seen if s.path.startswith("/upload/"))

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

        def _reply(self, status: int, reason: str, headers: dict[str, str], data: bytes) -> None:
            self.send_response(status, reason)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = bytearray(self.rfile.read(length) if length else b"")
            if len(body) < length:
                self.close_connection = True  # the sender is gone: nothing is forwarded
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            session = _upload_id(self.path)
            with state.lock:
                state.seen.append(
                    Seen(self.command, self.path, headers, bytes(body[:KEEP]), len(body))
                )
                held = state.sessions.get(session) if session else None
                cancelled = session in state.cancelled
            if session and (cancelled or (self.command == "PUT" and held is None)):
                gone = b'{"error": {"code": 404, "message": "Not Found"}}'
                self._reply(404, "Not Found", {"Content-Type": "application/json"}, gone)
                return
            if session and self.command == "PUT" and headers.get("content-range") == "bytes */*":
                with state.lock:
                    state.status_queries += 1
                if isinstance(held, bytes):
                    self._reply(200, "OK", {"Content-Type": "application/json"}, held)
                elif held:
                    self._reply(308, "Permanent Redirect", {"Range": f"bytes=0-{held - 1}"}, b"")
                else:
                    self._reply(308, "Permanent Redirect", {}, b"")
                return
            with state.lock:
                flip = state.flip_uploads or (state.flip_chunks and session is not None)
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
            # The emulator takes longer for each chunk of a session than for the one before:
            # minutes, for the chunks of a gigabyte-sized one on a busy machine.
            upstream_conn = http.client.HTTPConnection(up_host, int(up_port), timeout=600)
            with state.lock:
                state.in_flight += 1
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
            except BaseException:
                with state.lock:
                    state.in_flight -= 1
                raise
            finally:
                upstream_conn.close()
            # What the server acknowledged is noted before the client is answered: a client
            # killed meanwhile never reads the answer, yet the server holds the chunk.
            self._note_session(session, response, data)
            with state.lock:
                state.in_flight -= 1
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

        def _note_session(self, session: str | None, response: Any, data: bytes) -> None:
            """Keep what the server acknowledged of a resumable session."""
            location = response.getheader("Location")
            with state.lock:
                if location and "upload_id=" in location:
                    state.sessions[_upload_id(location) or ""] = 0
                if not session or session not in state.sessions:
                    return
                if self.command == "DELETE" and response.status == 499:
                    state.cancelled.add(session)
                elif self.command == "PUT" and response.status == 308:
                    match = re.fullmatch(r"bytes=0-(\d+)", response.getheader("Range") or "")
                    state.sessions[session] = int(match.group(1)) + 1 if match else 0
                elif self.command == "PUT" and response.status in (200, 201):
                    state.sessions[session] = data

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


def _upload_id(path_or_url: str) -> str | None:
    """The ``upload_id`` of a resumable session's URI, or None."""
    query = urllib.parse.urlsplit(path_or_url).query
    found = urllib.parse.parse_qs(query).get("upload_id")
    return found[0] if found else None
