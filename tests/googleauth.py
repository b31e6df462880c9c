"""Google's credential endpoints, faked on 127.0.0.1: an OAuth token endpoint and a metadata
server. google-auth asks them exactly as it asks Google's own.

    with fake_token_endpoint() as tokens:
        key = service_account_file(tmp / "sa.json", tokens.url)   # token_uri points here
        ...
        tokens.grants    # the forms google-auth posted (JWT assertion or refresh token)
        tokens.issued    # the access tokens handed out, in order

The token endpoint checks what it is sent: a service account's JWT assertion must be signed by
the key in the file it made last (a forged or mangled one gets 400, as from Google). google-auth
sends an ``authorized_user``'s refresh token only to Google's own endpoint, whatever the file
says, so gcloud's user credentials cannot be refreshed here.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

HOST = "127.0.0.1"
CLIENT_EMAIL = "daulat-exit@daulat-test.iam.gserviceaccount.com"
SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
#: The audience google-auth signs a service account's assertion for, wherever it sends it.
AUDIENCE = "https://oauth2.googleapis.com/token"


@dataclass
class TokenEndpoint:
    url: str
    public_pem: bytes = b""
    grants: list[dict[str, str]] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _private_key() -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@contextmanager
def fake_token_endpoint() -> Iterator[TokenEndpoint]:
    from google.auth import jwt

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            with state.lock:
                state.grants.append(form)
            if form.get("grant_type") == "urn:ietf:params:oauth:grant-type:jwt-bearer":
                try:
                    claims = jwt.decode(
                        form["assertion"], certs=state.public_pem, audience=AUDIENCE
                    )
                except Exception:
                    self._answer(400, {"error": "invalid_grant"})
                    return
                if claims.get("iss") != CLIENT_EMAIL:
                    self._answer(400, {"error": "invalid_grant"})
                    return
            elif form.get("grant_type") != "refresh_token":
                self._answer(400, {"error": "unsupported_grant_type"})
                return
            with state.lock:
                token = f"ya29.fake-{len(state.issued) + 1}"
                state.issued.append(token)
            self._answer(200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer((HOST, 0), Handler)
    server.daemon_threads = True
    state = TokenEndpoint(f"http://{HOST}:{server.server_address[1]}/token")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def service_account_file(path: Path, tokens: TokenEndpoint) -> Path:
    """Write a service account key whose ``token_uri`` is ``tokens``; the endpoint learns its
    public key so that it checks the assertions signed with it."""
    private, public = _private_key()
    tokens.public_pem = public
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "daulat-test",
                "private_key_id": "k1",
                "private_key": private,
                "client_email": CLIENT_EMAIL,
                "client_id": "1234567890",
                "token_uri": tokens.url,
            }
        )
    )
    path.chmod(0o600)
    return path


def authorized_user_file(path: Path, tokens: TokenEndpoint) -> Path:
    """gcloud's application default credentials file (``gcloud auth application-default
    login``), refreshing at ``tokens``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "daulat-test.apps.googleusercontent.com",
                "client_secret": "not-a-secret",
                "refresh_token": "1//refresh-daulat",
                "token_uri": tokens.url,
            }
        )
    )
    path.chmod(0o600)
    return path


@dataclass
class MetadataServer:
    host: str  # host:port, as GCE_METADATA_HOST takes it
    hits: list[str] = field(default_factory=list)


@contextmanager
def fake_metadata_server() -> Iterator[MetadataServer]:
    """The Compute Engine metadata server's answers that google-auth needs: the ping, the
    default service account, its token."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            state.hits.append(path)
            if self.headers.get("Metadata-Flavor") != "Google":
                self._answer(403, "text/plain", b"missing Metadata-Flavor")
                return
            account = "/computeMetadata/v1/instance/service-accounts/default/"
            if path == "/":
                self._answer(200, "text/plain", b"")
            elif path == account:
                body = {"email": CLIENT_EMAIL, "scopes": [SCOPE], "aliases": ["default"]}
                self._answer(200, "application/json", json.dumps(body).encode())
            elif path == account + "token":
                body = {"access_token": "ya29.metadata", "expires_in": 3600, "token_type": "Bearer"}
                self._answer(200, "application/json", json.dumps(body).encode())
            elif path == account + "email":
                self._answer(200, "text/plain", CLIENT_EMAIL.encode())
            else:
                self._answer(404, "text/plain", b"not found")

        def _answer(self, status: int, kind: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Metadata-Flavor", "Google")
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer((HOST, 0), Handler)
    server.daemon_threads = True
    state = MetadataServer(f"{HOST}:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
