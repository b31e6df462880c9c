"""``STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`` bodies through ``daulat serve``: every chunk
signed, and the checksum trailer signed too (``x-amz-trailer-signature``). botocore does not
send this form (it sends the unsigned trailer over TLS), so the bodies are built here by the
SigV4 streaming rules, and sent over plain HTTP to a writable bucket of two directories."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Callable
from pathlib import Path

import google_crc32c
import pytest
from conftest import fs_store_config
from pydantic import SecretStr
from test_gateway import SECRET, _sha, client, gateway
from test_gateway_writes import _chunked, _config, _rows, _send, _signed_request

from daulat.gateway import payload
from daulat.gateway.auth import signing_key

pytestmark = pytest.mark.timeout(300)


class _Signer:
    """The chunk signatures of one request, chained from its own, then its trailer's."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.previous = headers["Authorization"].rpartition("Signature=")[2]
        self.stamp = headers["X-Amz-Date"]
        self.key = signing_key(SecretStr(SECRET), self.stamp[:8], "us-east-1")
        self.scope = f"{self.stamp[:8]}/us-east-1/s3/aws4_request"

    def _hmac(self, *lines: str) -> str:
        text = "\n".join([lines[0], self.stamp, self.scope, *lines[1:]])
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()

    def chunk(self, piece: bytes) -> str:
        self.previous = self._hmac(
            "AWS4-HMAC-SHA256-PAYLOAD", self.previous, _sha(b""), _sha(piece)
        )
        return self.previous

    def trailer(self, lines: str) -> str:
        return self._hmac("AWS4-HMAC-SHA256-TRAILER", self.previous, _sha(lines.encode()))


def _crlf(lines: str) -> str:
    return lines.replace("\n", "\r\n")


def _body(
    data: bytes, headers: dict[str, str], checksum: str, edit: Callable[[str, str], str] | None
) -> bytes:
    """``data`` as signed chunks and a signed ``x-amz-checksum-crc32c`` trailer; ``edit``
    (lines, signature) → the trailer as sent, to make it lie."""
    signer = _Signer(headers)
    chunks = _chunked(data, 64 * 1024, signer.chunk).removesuffix(b"\r\n")
    lines = f"x-amz-checksum-crc32c:{checksum}\n"
    trailer = _crlf(lines) + f"x-amz-trailer-signature:{signer.trailer(lines)}\r\n"
    if edit is not None:
        trailer = edit(lines, signer.trailer(lines))
    return chunks + trailer.encode() + b"\r\n"


def test_signed_chunks_with_a_signed_trailer_are_taken_and_lies_refused(tmp_path: Path) -> None:
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep")]
    config = _config(tmp_path, stores, {"pemilu": 'replicas = ["prim", "rep"]\nwritable = true'})
    data = os.urandom(150 * 1024 + 7)
    crc = base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()
    wrong = base64.b64encode(bytes(4)).decode()
    base = {
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(data)),
        "x-amz-trailer": "x-amz-checksum-crc32c",
    }
    cases: list[tuple[str, str, Callable[[str, str], str] | None, int, bytes]] = [
        ("good", crc, None, 200, b""),
        # The trailer's signature altered, or missing: 403 as for any signature.
        ("bad-sig", crc, lambda ln, sig: f"{_crlf(ln)}x-amz-trailer-signature:{'0' * 64}\r\n", 403,
         b"SignatureDoesNotMatch"),
        ("no-sig", crc, lambda ln, sig: _crlf(ln), 403, b"SignatureDoesNotMatch"),
        # The checksum altered after signing: the signature no longer covers it.
        ("swapped", crc,
         lambda ln, sig: f"x-amz-checksum-crc32c:{wrong}\r\nx-amz-trailer-signature:{sig}\r\n",
         403, b"SignatureDoesNotMatch"),
        # A line slipped in after the signature: never taken as covered by it.
        ("appended", crc,
         lambda ln, sig: f"{_crlf(ln)}x-amz-trailer-signature:{sig}\r\nx-amz-meta-a:b\r\n", 400,
         b"InvalidRequest"),
        # Signed, yet not the body's checksum: the client's own lie, 400 as S3 answers.
        ("lying", wrong, None, 400, b"BadDigest"),
    ]  # fmt: skip
    with gateway(config) as endpoint:
        for key, checksum, edit, status, code in cases:
            h = _signed_request(endpoint, key, base, payload.SIGNED_TRAILER)
            got = _send(endpoint, key, h, _body(data, h, checksum, edit))
            assert got[0] == status and code in got[1], (key, got)
        # The same body without x-amz-trailer: refused, nothing to sign the trailer against.
        undeclared = {k: v for k, v in base.items() if k != "x-amz-trailer"}
        h = _signed_request(endpoint, "undeclared", undeclared, payload.SIGNED_TRAILER)
        got = _send(endpoint, "undeclared", h, _body(data, h, crc, None))
        assert got[0] == 400 and b"InvalidRequest" in got[1], got
        s3 = client(endpoint)
        assert s3.get_object(Bucket="pemilu", Key="good")["Body"].read() == data
    assert _rows(config, "good") == {"rep:": ("done", _sha(data), None)}
    for key, *_ in cases[1:]:
        assert not (tmp_path / "prim" / key).exists() and _rows(config, key) == {}, key
