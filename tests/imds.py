"""A fake EC2 instance-metadata service (IMDSv2) on 127.0.0.1, serving one role's credentials.

    with fake_imds(("AKROLE...", "secret", "token")) as imds:
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = imds.endpoint

It speaks what botocore's instance-role provider asks for, and refuses IMDSv1: every metadata
GET must carry the session token from ``PUT /latest/api/token``.

* ``PUT /latest/api/token`` (``X-aws-ec2-metadata-token-ttl-seconds``) → a session token;
* ``GET /latest/meta-data/iam/security-credentials/`` → the role name;
* ``GET /latest/meta-data/iam/security-credentials/ROLE`` → the role's keys, with an
  ``Expiration`` ``lifetime`` from now.

``hits`` counts the credential fetches, so a test can tell how often the chain went back.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ROLE = "daulat-exit-role"
_CREDS = "/latest/meta-data/iam/security-credentials/"


@dataclass
class FakeImds:
    endpoint: str
    keys: tuple[str, str, str]  # access key id, secret, session token
    lifetime: dt.timedelta
    hits: Counter[str] = field(default_factory=Counter)
    tokens: set[str] = field(default_factory=set)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes, kind: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        imds: FakeImds = self.server.imds
        if self.path != "/latest/api/token" or not self.headers.get(
            "X-aws-ec2-metadata-token-ttl-seconds"
        ):
            self._reply(400, b"bad request")
            return
        token = secrets.token_urlsafe(24)
        imds.tokens.add(token)
        imds.hits["token"] += 1
        self._reply(200, token.encode())

    def do_GET(self) -> None:
        imds: FakeImds = self.server.imds
        if self.headers.get("X-aws-ec2-metadata-token") not in imds.tokens:
            self._reply(401, b"IMDSv2 token required")
            return
        if self.path == _CREDS:
            imds.hits["role"] += 1
            self._reply(200, ROLE.encode())
        elif self.path == _CREDS + ROLE:
            imds.hits["credentials"] += 1
            now = dt.datetime.now(dt.UTC)
            key, secret, token = imds.keys
            body = {
                "Code": "Success",
                "LastUpdated": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "Type": "AWS-HMAC",
                "AccessKeyId": key,
                "SecretAccessKey": secret,
                "Token": token,
                "Expiration": (now + imds.lifetime).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            self._reply(200, json.dumps(body).encode(), "application/json")
        else:
            self._reply(404, b"not found")


@contextmanager
def fake_imds(
    keys: tuple[str, str, str], *, lifetime: dt.timedelta = dt.timedelta(hours=6)
) -> Iterator[FakeImds]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    imds = FakeImds(f"http://127.0.0.1:{server.server_address[1]}/", keys, lifetime)
    server.imds = imds  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield imds
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
