"""A small fault-injecting HTTP proxy (stdlib only) in front of an S3 endpoint, on 127.0.0.1.

    with fault_proxy(server.endpoint) as proxy:
        # configure the client with proxy.endpoint, not the server's
        proxy.mode = "deny"          # every request: 403 AccessDenied
        proxy.mode = "deny-write"    # PUT/POST/DELETE: 403 AccessDenied; reads and lists pass
        proxy.mode = "slowdown:0.3"  # 30 % of requests: 503 SlowDown
        proxy.mode = "reset:0.2"     # 20 % of requests: the connection is reset (RST)
        proxy.mode = "flip"          # PUTs with a body: one byte of the body flipped
        proxy.mode = "truncate"      # PUTs with a body: only its first half sent, with a
                                     #   Content-Length to match (a consistent, shorter body)
        proxy.mode = "pass"          # forward everything
        proxy.response_rate = 2**20  # response bodies sent back at most this fast (bytes/s),
                                     #   whatever the mode; None: as fast as they come

It is a *reverse* proxy: the client talks to it as if it were the S3 server. Requests and
responses are streamed through in both directions (64 KiB at a time), with their headers
unchanged, including ``Host``. That matters: SigV4 signs the Host header, so the client must sign
for the proxy's address (configure it with ``proxy.endpoint``) and the proxy must pass that Host
value through untouched; SeaweedFS verifies the signature against the Host header it receives,
not against its own address, so the signature checks out.

Modes are read per request, so a test can flip them while a transfer runs. ``reset`` closes the
client connection with SO_LINGER 0 (a TCP RST, as a crashed load balancer does), at a random
point: before the request is forwarded, or after the upstream answered, half-way through sending
the response back. ``stats`` counts what the proxy did.

Uploads are counted per object, as ``bucket/key`` (path-style requests): ``uploads`` counts the
times an object's content began to be sent (a single PUT or the start of a multipart upload),
``parts`` the part PUTs and ``completions`` the multipart completions; ``stats["request_bytes"]``
the request body bytes forwarded (what a client actually uploaded through the proxy). :meth:`Proxy.wait_idle`
waits until no forwarded request is in flight (after a client was killed, so that what it had
sent has landed before the test looks at the server).
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import socketserver
import struct
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

HOST = "127.0.0.1"
CHUNK = 64 * 1024
UPSTREAM_TIMEOUT = 120.0
IDLE_TIMEOUT = 120.0
MODES = ("pass", "deny", "deny-write", "slowdown", "reset", "flip", "truncate")
#: Modes that alter the body of a PUT (object or part) on its way to the server.
BODY_MODES = frozenset({"flip", "truncate"})
WRITES = frozenset({"PUT", "POST", "DELETE"})


def parse_mode(mode: str) -> tuple[str, float]:
    """``"slowdown:0.3"`` → ``("slowdown", 0.3)``; other modes carry probability 1."""
    name, _, prob = mode.partition(":")
    if name not in MODES:
        raise ValueError(f"unknown proxy mode {mode!r} (expected one of {MODES})")
    p = float(prob) if prob else 1.0
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability in {mode!r} must be within [0, 1]")
    return name, p


def _s3_error(code: str, message: str, resource: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{resource}</Resource><RequestId>{uuid.uuid4().hex}</RequestId></Error>"
    ).encode()


class _Reset(Exception):
    """Abort this exchange with a TCP reset."""


class Proxy:
    """A running proxy; see the module docstring. Set :attr:`mode` at any time."""

    def __init__(self, upstream_endpoint: str, *, seed: int = 0) -> None:
        scheme, _, rest = upstream_endpoint.partition("://")
        if scheme != "http":
            raise ValueError(f"only http:// upstreams are supported, not {upstream_endpoint!r}")
        host, _, port = rest.rstrip("/").partition(":")
        self.upstream = (host, int(port or 80))
        self._mode = "pass"
        self._parsed = ("pass", 1.0)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self.uploads: Counter[str] = Counter()
        self.parts: Counter[str] = Counter()
        self.completions: Counter[str] = Counter()
        self.response_rate: float | None = None
        self._active = 0
        self._idle = threading.Condition(self._lock)
        self._server = _Server((HOST, 0), _Handler)
        self._server.proxy = self
        port_ = self._server.server_address[1]
        self.endpoint = f"http://{HOST}:{port_}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fault-proxy",
            daemon=True,
        )

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        parsed = parse_mode(value)
        with self._lock:
            self._mode, self._parsed = value, parsed

    def decide(self, method: str) -> str:
        """What to do with the next request: pass, deny, slowdown, reset-early, reset-late."""
        with self._lock:
            name, p = self._parsed
            if name == "deny-write":
                action = "deny" if method in WRITES else "pass"
            elif name in BODY_MODES:
                action = name if method == "PUT" and self._random.random() < p else "pass"
            elif name == "pass" or (name != "deny" and self._random.random() >= p):
                action = "pass"
            elif name == "reset":
                action = self._random.choice(("reset-early", "reset-late"))
            else:
                action = name
            self.stats[action] += 1
            self.stats["requests"] += 1
            return action

    def count(self, what: str) -> None:
        with self._lock:
            self.stats[what] += 1

    def count_bytes(self, n: int) -> None:
        """Response body bytes sent back to the client (``stats["response_bytes"]``)."""
        with self._lock:
            self.stats["response_bytes"] += n

    def count_sent(self, n: int) -> None:
        """Request body bytes forwarded to the server (``stats["request_bytes"]``)."""
        with self._lock:
            self.stats["request_bytes"] += n

    def forwarding(self, method: str, target: str) -> None:
        """Note a request about to be forwarded, and count it if it sends an object."""
        path, _, query = target.partition("?")
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        key = urllib.parse.unquote(path.lstrip("/"))
        with self._lock:
            self._active += 1
            if method == "PUT" and "partNumber" in params:
                self.parts[key] += 1
            elif method == "PUT" or (method == "POST" and "uploads" in params):
                self.uploads[key] += 1
            elif method == "POST" and "uploadId" in params:
                self.completions[key] += 1

    def forwarded(self) -> None:
        with self._lock:
            self._active -= 1
            self.stats["forwarded"] += 1  # requests answered (or cut) so far
            self._idle.notify_all()

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait until no forwarded request is in flight; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._active:
                left = deadline - time.monotonic()
                assert left > 0, f"{self._active} requests still in flight after {timeout} s"
                self._idle.wait(left)

    def sends(self) -> Counter[str]:
        """A copy of :attr:`uploads`."""
        with self._lock:
            return Counter(self.uploads)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.close_all()
        self._server.server_close()
        self._thread.join(10)


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256
    proxy: Proxy

    def __init__(self, address: tuple[str, int], handler: Any) -> None:
        super().__init__(address, handler)
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-request (the crash tests' kill -9) is routine, not worth a trace.
        self.proxy.count("broken")

    def close_all(self) -> None:
        """Close the client connections still open (idle keep-alive ones block a thread)."""
        with self._conns_lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: tests read stats, not logs

    def _any(self) -> None:
        proxy = self.server.proxy
        action = proxy.decide(self.command)
        try:
            if action == "reset-early":
                raise _Reset
            if action in ("deny", "slowdown"):
                self._discard_body()
                if action == "deny":
                    self._answer(403, "Forbidden", "AccessDenied", "Access Denied")
                else:
                    self._answer(503, "Slow Down", "SlowDown", "Please reduce your request rate.")
                return
            if action in BODY_MODES:
                self._forward_altered(action)
                return
            self._forward(late_reset=action == "reset-late")
        except _Reset:
            self._reset()
        except (OSError, http.client.HTTPException):
            # The client or the upstream went away: drop this connection, as a proxy would.
            proxy.count("broken")
            self.close_connection = True

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

    def _reset(self) -> None:
        self.server.proxy.count("resets")
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # Close now, so the client gets the RST (a later shutdown() would send a FIN first);
        # nothing more may be written, and finish() would try to flush.
        with contextlib.suppress(OSError):
            self.connection.close()
        self.wfile = _NullWriter()

    # --- request bodies -------------------------------------------------------------------------

    def _body_chunks(self) -> Iterator[bytes]:
        """The request body as it arrives, framing kept (chunked bodies stay chunked)."""
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise OSError("client closed during a chunked body")
                yield line
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers, up to the blank line
                        trailer = self.rfile.readline(8192)
                        if not trailer:
                            raise OSError("client closed during trailers")
                        yield trailer
                        if trailer in (b"\r\n", b"\n"):
                            return
                remaining = size + 2  # data and its CRLF
                while remaining:
                    piece = self.rfile.read(min(CHUNK, remaining))
                    if not piece:
                        raise OSError("client closed during a chunk")
                    remaining -= len(piece)
                    yield piece
        length = int(self.headers.get("Content-Length") or 0)
        while length:
            piece = self.rfile.read(min(CHUNK, length))
            if not piece:
                raise OSError("client closed during the body")
            length -= len(piece)
            yield piece

    def _discard_body(self) -> None:
        for _ in self._body_chunks():
            pass

    # --- answers --------------------------------------------------------------------------------

    def _answer(self, status: int, reason: str, code: str, message: str) -> None:
        body = _s3_error(code, message, self.path.split("?", 1)[0])
        self.send_response(status, reason)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amz-request-id", uuid.uuid4().hex[:16].upper())
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _forward(self, *, late_reset: bool) -> None:
        proxy = self.server.proxy
        upstream = http.client.HTTPConnection(*proxy.upstream, timeout=UPSTREAM_TIMEOUT)
        proxy.forwarding(self.command, self.path)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                upstream.putheader(name, value)  # Host included, unchanged: it is signed
            upstream.endheaders()
            for piece in self._body_chunks():
                upstream.send(piece)
                proxy.count_sent(len(piece))
            response = upstream.getresponse()
            # With late_reset the upstream did the work (a PUT is stored) but the client gets
            # only part of the answer.
            self._relay(response, cut=late_reset)
        finally:
            upstream.close()
            proxy.forwarded()

    def _forward_altered(self, action: str) -> None:
        """Forward a PUT whose body is changed on the way: one byte flipped, or cut to half
        with a Content-Length to match. Headers (checksums included) stay as the client sent
        them, so only a server that checks the body against its checksum can tell."""
        proxy = self.server.proxy
        body = bytearray(b"".join(self._body_chunks()))
        if body and "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            if action == "flip":
                body[len(body) // 2] ^= 0x01
            else:
                del body[len(body) // 2 :]
            proxy.count("flipped" if action == "flip" else "truncated")
        upstream = http.client.HTTPConnection(*proxy.upstream, timeout=UPSTREAM_TIMEOUT)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() == "content-length":
                    value = str(len(body))
                upstream.putheader(name, value)
            upstream.endheaders(bytes(body))
            self._relay(upstream.getresponse())
        finally:
            upstream.close()

    def _relay(self, response: http.client.HTTPResponse, *, cut: bool = False) -> None:
        """Send the upstream's response back; with ``cut``, stop half-way and reset."""
        chunked = "chunked" in (response.getheader("Transfer-Encoding") or "").lower()
        head = [f"HTTP/1.1 {response.status} {response.reason}\r\n"]
        for name, value in response.getheaders():
            head.append(f"{name}: {value}\r\n")
        head.append("\r\n")
        length = int(response.getheader("Content-Length") or 0)
        if cut and (self.command == "HEAD" or (not chunked and length == 0)):
            raise _Reset  # no body to cut: reset before the status line
        self.wfile.write("".join(head).encode("latin-1"))
        budget = max(1, length // 2) if cut else -1
        rate = self.server.proxy.response_rate
        started, sent = time.monotonic(), 0
        while True:
            piece = response.read(CHUNK)
            if not piece:
                break
            sent += len(piece)
            if rate:
                time.sleep(max(0.0, started + sent / rate - time.monotonic()))
            self.server.proxy.count_bytes(len(piece))
            if budget >= 0:
                piece = piece[:budget]
                budget -= len(piece)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if budget == 0:
                self.wfile.flush()
                raise _Reset
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        if (response.getheader("Connection") or "").lower() == "close":
            self.close_connection = True


class _NullWriter:
    closed = False

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


@contextlib.contextmanager
def fault_proxy(upstream_endpoint: str, *, seed: int = 0) -> Iterator[Proxy]:
    """Run a :class:`Proxy` in front of ``upstream_endpoint`` for the duration of the block."""
    proxy = Proxy(upstream_endpoint, seed=seed)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
