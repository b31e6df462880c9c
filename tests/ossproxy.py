"""A recording HTTP proxy that stands in for Alibaba OSS's S3-compatible endpoint, in front of
SeaweedFS.

The client under test is pointed at ``http://s3.oss-REGION.aliyuncs.com`` with ``HTTP_PROXY``
naming this proxy, so it sends every request here in absolute form, exactly as it would send
it to Alibaba: virtual-hosted (``Host: BUCKET.s3.oss-REGION.aliyuncs.com``, path ``/KEY``),
signed for the region it chose. The proxy records what arrived (method, host, path, headers,
body size) and forwards it to SeaweedFS in path style (``/BUCKET/KEY``), signed again for
SeaweedFS with the test server's keys: SigV4 covers the host and the path, which the mapping
changes. Bodies are read whole (test objects are small); ``Transfer-Encoding: chunked`` bodies
are decoded and recorded as such.

    with oss_proxy(s3_server, "s3.oss-cn-hangzhou.aliyuncs.com") as proxy:
        ...  # HTTP_PROXY=proxy.url, endpoint http://s3.oss-cn-hangzhou.aliyuncs.com
        proxy.seen  # every request as the client sent it
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOST = "127.0.0.1"
#: Request headers the proxy does not pass on: hop-by-hop, or remade by the new signature.
_DROP = {
    "host",
    "authorization",
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-security-token",
    "content-length",
    "transfer-encoding",
    "connection",
    "proxy-connection",
    "proxy-authorization",
    "keep-alive",
    "expect",
}


@dataclass(frozen=True)
class Sent:
    method: str
    host: str
    path: str  # with its query
    headers: dict[str, str]  # lower-case names
    size: int
    chunked: bool  # the body came with Transfer-Encoding: chunked


@dataclass
class OssProxy:
    url: str
    domain: str
    seen: list[Sent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _read_chunked(rfile: Any) -> bytes:
    body = bytearray()
    while True:
        size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return bytes(body)
        body += rfile.read(size)
        rfile.readline()


@contextlib.contextmanager
def oss_proxy(server: Any, domain: str) -> Iterator[OssProxy]:
    """Proxy for ``BUCKET.DOMAIN`` onto ``server`` (an S3Server: endpoint, keys, region)."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    upstream = urllib.parse.urlsplit(server.endpoint)
    credentials = Credentials(server.access_key_id, server.secret_access_key)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _any(self) -> None:
            chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
            if chunked:
                body = _read_chunked(self.rfile)
            else:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
            target = urllib.parse.urlsplit(self.path)
            host = target.netloc or self.headers.get("Host", "")
            path = target.path + (f"?{target.query}" if target.query else "")
            headers = {k.lower(): v for k, v in self.headers.items()}
            with state.lock:
                state.seen.append(Sent(self.command, host, path, headers, len(body), chunked))
            bucket = host.split(":")[0].removesuffix("." + domain)
            if bucket == host.split(":")[0]:
                # Not virtual-hosted: passed on as it came (the test then sees it in ``seen``).
                mapped = path
            else:
                mapped = f"/{bucket}{target.path}" + (f"?{target.query}" if target.query else "")
            forward = {k: v for k, v in self.headers.items() if k.lower() not in _DROP}
            request = AWSRequest(
                method=self.command,
                url=f"{server.endpoint.rstrip('/')}{mapped}",
                headers=forward,
                data=body,
            )
            S3SigV4Auth(credentials, "s3", server.region).add_auth(request)
            prepared = request.prepare()
            conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
            try:
                conn.putrequest(self.command, mapped, skip_host=True, skip_accept_encoding=True)
                if "host" not in {k.lower() for k in prepared.headers}:
                    conn.putheader("Host", upstream.netloc)
                for name, value in prepared.headers.items():
                    conn.putheader(name, value)
                conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body or None)
                response = conn.getresponse()
                data = response.read()
            finally:
                conn.close()
            self.send_response(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() in ("transfer-encoding", "content-length", "connection"):
                    continue
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

    proxy_server = ThreadingHTTPServer((HOST, 0), Handler)
    proxy_server.daemon_threads = True
    state = OssProxy(f"http://{HOST}:{proxy_server.server_address[1]}", domain)
    thread = threading.Thread(target=proxy_server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        proxy_server.shutdown()
        proxy_server.server_close()
        thread.join(5)
