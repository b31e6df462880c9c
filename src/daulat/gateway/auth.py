"""AWS Signature Version 4 checks for the gateway's clients: the ``Authorization`` header and
presigned URLs (``X-Amz-Signature`` in the query, with ``X-Amz-Expires``).

The expected signature is computed by botocore's own signer (:class:`botocore.auth.S3SigV4Auth`:
string to sign, key derivation, HMAC) over a canonical request built from the request *as it
arrived*: the raw path exactly as sent (S3 never normalises it: ``..``, ``//`` and ``%2F`` stay
what they are), the query re-encoded per the SigV4 rules, and exactly the headers the client
says it signed. Only the comparison is ours, in constant time.

Anything wrong (no signature, an unknown key, a date too far from now, an expired URL, a
signature that does not match, an ``x-amz-meta-*`` header the signature does not cover) is an :class:`AuthError` carrying the S3 error code; the caller
answers 403 and nothing else.

A request that passes is described by a :class:`Signed`: what its ``x-amz-content-sha256``
promised about the body (a SHA-256, ``UNSIGNED-PAYLOAD``, or one of the ``aws-chunked``
forms) and, for a body signed chunk by chunk, the signing key and seed signature the chunks
chain from (checked as they arrive: :mod:`daulat.gateway.payload`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from botocore.auth import UNSIGNED_PAYLOAD, S3SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials
from pydantic import SecretStr

from daulat.errors import DaulatError

ALGORITHM = "AWS4-HMAC-SHA256"
# How far a header-signed request's X-Amz-Date may be from now (AWS allows 15 minutes).
MAX_SKEW = dt.timedelta(minutes=15)
MAX_EXPIRES = 7 * 24 * 3600
_AUTH_FIELD = re.compile(r"(\w+)=([^,\s]*)")
_META = "x-amz-meta-"


class AuthError(DaulatError):
    """The request is not signed by the gateway's key pair; ``code`` is S3's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Request:
    """What the check needs of an HTTP request, as received."""

    method: str
    raw_path: str  # percent-encoded, exactly as sent (latin-1 decoded bytes)
    query: str  # raw query string, without '?'
    headers: Mapping[str, Sequence[str]]  # lower-case names → every value sent

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[0] if values else None


def _encode(value: str) -> str:
    return quote(value, safe="-_.~")


def query_pairs(query: str) -> list[tuple[str, str]]:
    """Decoded (name, value) pairs of a raw query string, in order ('+' is a literal '+': S3
    clients encode spaces as %20)."""
    pairs = []
    for part in query.split("&") if query else []:
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((unquote(name, errors="strict"), unquote(value, errors="strict")))
    return pairs


def canonical_query(pairs: Sequence[tuple[str, str]]) -> str:
    encoded = sorted((_encode(k), _encode(v)) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


class _Signer(S3SigV4Auth):  # type: ignore[misc]
    """botocore's S3 signer, fed the client's signed headers and canonical query verbatim."""

    def __init__(
        self,
        credentials: Credentials,
        region: str,
        signed: Sequence[str],
        headers: Mapping[str, Sequence[str]],
        query: str,
        payload: str,
    ) -> None:
        super().__init__(credentials, "s3", region)
        self._signed = signed
        self._values = headers
        self._query = query
        self._payload = payload

    def headers_to_sign(self, request: Any) -> HTTPHeaders:
        out = HTTPHeaders()
        for name in self._signed:
            for value in self._values.get(name, ()):
                out[name] = value
        return out

    def canonical_query_string(self, request: Any) -> str:
        return self._query

    def payload(self, request: Any) -> str:
        return self._payload


@dataclass(frozen=True)
class Signed:
    """What a verified request's signature covers of its body."""

    payload: str  # x-amz-content-sha256 as signed (UNSIGNED-PAYLOAD for a presigned URL)
    timestamp: str  # X-Amz-Date
    scope: str  # DATE/REGION/s3/aws4_request
    signature: str  # the request's own: the seed of a chunk-signed body
    key: bytes = field(repr=False, default=b"")  # the derived signing key


def signing_key(secret: SecretStr, date: str, region: str) -> bytes:
    """SigV4's derived key for ``date`` (YYYYMMDD) and ``region`` (service s3)."""
    key = ("AWS4" + secret.get_secret_value()).encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _scope(credential: str) -> tuple[str, str, str]:
    """``AKID/20260101/us-east-1/s3/aws4_request`` → (key id, date, region)."""
    parts = credential.split("/")
    if len(parts) != 5 or parts[3] != "s3" or parts[4] != "aws4_request":
        raise AuthError("AuthorizationQueryParametersError", "malformed credential scope")
    return parts[0], parts[1], parts[2]


def _parse_time(value: str | None) -> dt.datetime:
    try:
        return dt.datetime.strptime(value or "", "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise AuthError("AccessDenied", "missing or malformed X-Amz-Date") from None


def verify(
    req: Request, access_key_id: str, secret: SecretStr, now: dt.datetime | None = None
) -> Signed:
    """Raise :class:`AuthError` unless ``req`` carries a valid SigV4 signature by the key pair;
    say what the signature covers of the body."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        pairs = query_pairs(req.query)
    except UnicodeDecodeError:
        raise AuthError("AccessDenied", "malformed query string") from None
    params = dict(pairs)
    authorization = req.header("authorization")
    if "X-Amz-Signature" in params:
        if params.get("X-Amz-Algorithm") != ALGORITHM:
            raise AuthError("AuthorizationQueryParametersError", "only AWS4-HMAC-SHA256")
        key_id, date, region = _scope(params.get("X-Amz-Credential", ""))
        stamp = params.get("X-Amz-Date")
        signed = params.get("X-Amz-SignedHeaders", "").split(";")
        given = params["X-Amz-Signature"]
        try:
            expires = int(params.get("X-Amz-Expires", ""))
        except ValueError:
            raise AuthError("AuthorizationQueryParametersError", "X-Amz-Expires missing") from None
        if not 0 < expires <= MAX_EXPIRES:
            raise AuthError("AuthorizationQueryParametersError", "X-Amz-Expires out of range")
        when = _parse_time(stamp)
        if now > when + dt.timedelta(seconds=expires):
            raise AuthError("AccessDenied", "Request has expired")
        if when - now > MAX_SKEW:
            raise AuthError("AccessDenied", "Request is not valid yet")
        query = canonical_query([(k, v) for k, v in pairs if k != "X-Amz-Signature"])
        payload = UNSIGNED_PAYLOAD
    elif authorization is not None:
        algorithm, _, rest = authorization.strip().partition(" ")
        if algorithm != ALGORITHM:
            raise AuthError("AccessDenied", "only AWS4-HMAC-SHA256 signatures are accepted")
        fields = dict(_AUTH_FIELD.findall(rest))
        key_id, date, region = _scope(fields.get("Credential", ""))
        signed = fields.get("SignedHeaders", "").split(";")
        given = fields.get("Signature", "")
        stamp = req.header("x-amz-date")
        when = _parse_time(stamp)
        if abs(now - when) > MAX_SKEW:
            raise AuthError("RequestTimeTooSkewed", "the request time is too far from now")
        query = canonical_query(pairs)
        payload = req.header("x-amz-content-sha256") or UNSIGNED_PAYLOAD
    else:
        raise AuthError("AccessDenied", "the request is not signed")
    if not hmac.compare_digest(key_id.encode(), access_key_id.encode()):
        raise AuthError("InvalidAccessKeyId", "unknown access key id")
    if "host" not in signed or stamp is None or stamp[:8] != date:
        raise AuthError("AccessDenied", "the signature must cover host and the date")
    signer = _Signer(
        Credentials(access_key_id, secret.get_secret_value()),
        region,
        signed,
        req.headers,
        query,
        payload,
    )
    aws = AWSRequest(method=req.method, url="http://gateway" + req.raw_path, headers={})
    aws.context["timestamp"] = stamp
    canonical = signer.canonical_request(aws)
    expected = signer.signature(signer.string_to_sign(aws, canonical), aws)
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise AuthError(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided",
        )
    # User metadata is kept with the object and answered to every reader: a header anyone on
    # the way could add after signing (or to a presigned URL they were handed) must not be.
    # AWS refuses every unsigned x-amz-* header so; clients sign all they send of them.
    covered = {n.lower() for n in signed}
    unsigned = sorted(n for n in req.headers if n.startswith(_META) and n not in covered)
    if unsigned:
        raise AuthError(
            "AccessDenied",
            "There were headers present in the request which were not signed: "
            + ", ".join(unsigned)[:200],
        )
    return Signed(
        payload=payload,
        timestamp=stamp,
        scope=f"{date}/{region}/s3/aws4_request",
        signature=expected,
        key=signing_key(secret, date, region),
    )
