"""A minimal S3-speaking test server that accepts *any* key.

Real servers refuse or rewrite the keys daulat must still carry faithfully (SeaweedFS refuses
``..`` segments, collapses ``//`` and a leading ``/``, turns ``\\`` into ``/``), and AWS itself is
not available to the suite. This server keeps objects in a dict keyed by the exact decoded key,
so a test can prove that a client sends, lists and reads back every legal S3 key byte for byte.

What it speaks (path-style, and virtual-hosted when the Host header is ``bucket.<host>``):

* ListBuckets, CreateBucket, DeleteBucket, HeadBucket;
* ListObjectsV2 with ``prefix``, ``start-after``, ``continuation-token``, ``max-keys``,
  ``delimiter`` and ``encoding-type=url`` (keys URL-encoded AWS-style: space as ``+``);
  without ``encoding-type`` keys are written raw, control characters and all, as AWS does;
* GetObject (with ``Range``), HeadObject, PutObject (checking ``Content-MD5`` and
  ``x-amz-checksum-sha256`` when sent: 400 BadDigest), DeleteObject, CopyObject (with
  ``x-amz-metadata-directive`` and ``x-amz-checksum-algorithm: SHA256``);
* multipart: CreateMultipartUpload, UploadPart, UploadPartCopy, CompleteMultipartUpload,
  AbortMultipartUpload, ListMultipartUploads (with markers and ``encoding-type=url``), ListParts.

Every request must carry a valid AWS Signature Version 4 (header form): the server rebuilds
the canonical request from the *decoded* key and query, so a client that encodes a key in any
non-canonical way fails with 403 SignatureDoesNotMatch, as it would at AWS. A wrong access key
gets 403 InvalidAccessKeyId; a payload that does not match ``x-amz-content-sha256`` gets 400
XAmzContentSHA256Mismatch. With ``session_token`` set, ``x-amz-security-token`` is required.

    with s3fake() as s3:
        s3.create_bucket("b")
        ... S3Raw(endpoint=s3.endpoint, access_key_id=s3.access_key_id, ...) ...
        s3.objects("b")  # {key: bytes}

``requests`` records (method, raw target, headers) of every request for assertions.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email.utils
import hashlib
import hmac
import itertools
import secrets
import threading
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
REGION = "us-east-1"
MAX_KEY_BYTES = 1024


@dataclass
class FakeObject:
    data: bytes
    metadata: dict[str, str]
    content_type: str
    etag: str  # quoted, as S3 reports it
    modified: dt.datetime
    checksum_sha256: str | None = None


@dataclass
class FakeUpload:
    bucket: str
    key: str
    upload_id: str
    metadata: dict[str, str]
    content_type: str
    initiated: dt.datetime
    parts: dict[int, tuple[bytes, str]] = field(default_factory=dict)


@dataclass
class RecordedRequest:
    method: str
    target: str  # the raw request-target, exactly as sent
    headers: dict[str, str]


class S3Error(Exception):
    def __init__(
        self, status: int, code: str, message: str = "", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.message = message or code
        self.headers = headers or {}


class FakeS3:
    """State and configuration of one fake server (see the module docstring)."""

    def __init__(
        self,
        *,
        access_key_id: str,
        secret_access_key: str,
        session_token: str | None = None,
        region: str = REGION,
        min_part_size: int = 5 * 1024 * 1024,
    ) -> None:
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.session_token = session_token
        self.region = region
        self.min_part_size = min_part_size
        self.buckets: dict[str, dict[str, FakeObject]] = {}
        self.uploads: dict[str, FakeUpload] = {}
        self.requests: list[RecordedRequest] = []
        self.injected: list[S3Error] = []
        self.ignore_range = False  # answer ranged GETs with the whole object, as some servers do
        # A hostile provider: every listing answers its first page again, truncated, with the
        # same continuation token (a listing that never ends) ...
        self.stuck_listing = False
        # ... and GETs that serve other bytes than the object listed (key → body).
        self.served: dict[str, bytes] = {}
        self.lock = threading.RLock()
        self.endpoint = ""
        self.host = ""

    # ---------------------------------------------------------------- test helpers

    def create_bucket(self, name: str) -> None:
        with self.lock:
            self.buckets.setdefault(name, {})

    def objects(self, bucket: str) -> dict[str, bytes]:
        """Every stored key of ``bucket`` with its content."""
        with self.lock:
            return {k: o.data for k, o in self.buckets[bucket].items()}

    def put_object(self, bucket: str, key: str, data: bytes, **metadata: str) -> None:
        """Store an object directly, bypassing HTTP (to seed a source with hostile keys)."""
        with self.lock:
            self.buckets[bucket][key] = _object(data, dict(metadata), "binary/octet-stream")

    def inject(
        self, status: int, code: str, count: int = 1, headers: dict[str, str] | None = None
    ) -> None:
        """Answer the next ``count`` requests with this error (after reading their body),
        with ``headers`` (say ``x-amz-bucket-region``)."""
        with self.lock:
            self.injected.extend(S3Error(status, code, headers=headers) for _ in range(count))

    def open_uploads(self, bucket: str) -> list[FakeUpload]:
        with self.lock:
            return [u for u in self.uploads.values() if u.bucket == bucket]

    # ---------------------------------------------------------------- signature check

    def authenticate(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        body: bytes,
    ) -> None:
        auth = headers.get("authorization")
        if not auth:
            raise S3Error(403, "AccessDenied", "anonymous access is not allowed")
        algorithm, _, rest = auth.partition(" ")
        if algorithm != "AWS4-HMAC-SHA256":
            raise S3Error(400, "InvalidArgument", "unsupported authorization type")
        fields = dict(item.strip().split("=", 1) for item in rest.split(",") if "=" in item)
        try:
            credential = fields["Credential"]
            signed_headers = fields["SignedHeaders"]
            signature = fields["Signature"]
            key_id, date, region, service, terminal = credential.split("/")
        except (KeyError, ValueError):
            raise S3Error(400, "AuthorizationHeaderMalformed") from None
        if key_id != self.access_key_id:
            raise S3Error(403, "InvalidAccessKeyId")
        if region != self.region or service != "s3" or terminal != "aws4_request":
            raise S3Error(400, "AuthorizationHeaderMalformed")
        names = signed_headers.split(";")
        if "host" not in names or "x-amz-date" not in names:
            raise S3Error(403, "AccessDenied", "host and x-amz-date must be signed")
        if names != sorted(names):
            raise S3Error(403, "SignatureDoesNotMatch")
        if self.session_token is not None and (
            headers.get("x-amz-security-token") != self.session_token
            or "x-amz-security-token" not in names
        ):
            raise S3Error(403, "InvalidToken")
        amz_date = headers.get("x-amz-date", "")
        if amz_date[:8] != date:
            raise S3Error(403, "SignatureDoesNotMatch")
        try:
            when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        except ValueError:
            raise S3Error(403, "AccessDenied", "bad x-amz-date") from None
        if abs((dt.datetime.now(dt.UTC) - when).total_seconds()) > 900:
            raise S3Error(403, "RequestTimeTooSkewed")
        payload = headers.get("x-amz-content-sha256")
        if payload is None:
            raise S3Error(400, "InvalidRequest", "missing x-amz-content-sha256")
        if payload != "UNSIGNED-PAYLOAD" and payload != hashlib.sha256(body).hexdigest():
            raise S3Error(400, "XAmzContentSHA256Mismatch")
        canonical_headers = "".join(f"{n}:{' '.join(headers.get(n, '').split())}\n" for n in names)
        # Sorted by encoded name, then value (not as joined strings: "a" sorts before "a-b").
        canonical_query = "&".join(
            f"{k}={v}" for k, v in sorted((_enc(k), _enc(v)) for k, v in query)
        )
        canonical = "\n".join(
            [
                method,
                _enc(path, safe="/"),
                canonical_query,
                canonical_headers,
                signed_headers,
                payload,
            ]
        )
        scope = f"{date}/{region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        k = ("AWS4" + self.secret_access_key).encode()
        for part in (date, region, "s3", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise S3Error(403, "SignatureDoesNotMatch")


def _enc(value: str, safe: str = "") -> str:
    """SigV4 URI encoding: every byte except unreserved characters (and ``safe``)."""
    return urllib.parse.quote(value.encode("utf-8", "surrogatepass"), safe=safe)


def _url_key(key: str) -> str:
    """AWS's ``encoding-type=url`` form: space as ``+``, everything else reserved as %XX."""
    return urllib.parse.quote_plus(key.encode("utf-8", "surrogatepass"), safe="")


def _object(data: bytes, metadata: dict[str, str], content_type: str, **kw: Any) -> FakeObject:
    return FakeObject(
        data=data,
        metadata=metadata,
        content_type=content_type,
        etag='"' + hashlib.md5(data).hexdigest() + '"',
        modified=dt.datetime.now(dt.UTC).replace(microsecond=0),
        **kw,
    )


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _xml(root: str, body: str) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{NS}">{body}</{root}>'.encode(
        "utf-8", "surrogatepass"
    )


def _text(value: str) -> str:
    return escape(value, {'"': "&quot;"})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK add ~40 ms to every small answer.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # ------------------------------------------------------------------ plumbing

    def _handle(self, method: str) -> None:
        fake = self.server.fake
        # The raw request-target: http.server collapses a leading '//' in self.path.
        target = self.requestline.split(" ")[1]
        headers = {k.lower(): v for k, v in self.headers.items()}
        with fake.lock:
            fake.requests.append(RecordedRequest(method, target, headers))
        if headers.get("transfer-encoding"):
            self._error(S3Error(501, "NotImplemented", "chunked bodies are not supported"))
            self.close_connection = True
            return
        length = int(headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if len(body) != length:  # the client went away mid-body: store nothing
            self.close_connection = True
            return
        raw_path, _, raw_query = target.partition("?")
        try:
            path = urllib.parse.unquote(raw_path, errors="strict")
            query = [
                (urllib.parse.unquote(k, errors="strict"), urllib.parse.unquote(v, errors="strict"))
                for k, _, v in (p.partition("=") for p in raw_query.split("&") if p)
            ]
        except UnicodeDecodeError:
            self._error(S3Error(400, "InvalidURI"))
            return
        with fake.lock:
            injected = fake.injected.pop(0) if fake.injected else None
        if injected is not None:
            self._error(injected, head=method == "HEAD")
            return
        try:
            fake.authenticate(method, path, query, headers, body)
            bucket, key = self._address(path, headers.get("host", ""))
            self._dispatch(method, bucket, key, dict(query), headers, body)
        except S3Error as exc:
            self._error(exc, head=method == "HEAD")

    def _address(self, path: str, host: str) -> tuple[str, str | None]:
        fake = self.server.fake
        if host != fake.host and host.endswith("." + fake.host):
            bucket = host[: -len(fake.host) - 1]
            return bucket, path[1:] if path != "/" else None
        if path == "/":
            return "", None
        bucket, sep, key = path[1:].partition("/")
        return bucket, (key if sep else None)

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        *,
        head: bool = False,
        length: int | None = None,
    ) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, exc: S3Error, *, head: bool = False) -> None:
        body = (
            b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>'
            + exc.code.encode()
            + b"</Code><Message>"
            + _text(exc.message).encode()
            + b"</Message></Error>"
        )
        self._send(
            exc.status,
            b"" if head else body,
            {"Content-Type": "application/xml", **exc.headers},
            head=head,
        )

    def _bucket(self, name: str) -> dict[str, FakeObject]:
        try:
            return self.server.fake.buckets[name]
        except KeyError:
            raise S3Error(404, "NoSuchBucket") from None

    # ------------------------------------------------------------------ operations

    def _dispatch(
        self,
        method: str,
        bucket: str,
        key: str | None,
        query: dict[str, str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> None:
        fake = self.server.fake
        with fake.lock:
            if not bucket:
                if method == "GET":
                    items = "".join(
                        f"<Bucket><Name>{_text(b)}</Name><CreationDate>2026-01-01T00:00:00.000Z"
                        "</CreationDate></Bucket>"
                        for b in sorted(fake.buckets)
                    )
                    self._send(200, _xml("ListAllMyBucketsResult", f"<Buckets>{items}</Buckets>"))
                    return
                raise S3Error(405, "MethodNotAllowed")
            if key is None:
                self._bucket_op(method, bucket, query, body)
                return
            if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
                raise S3Error(400, "KeyTooLongError")
            if "uploads" in query and method == "POST":
                self._create_upload(bucket, key, headers)
            elif "uploadId" in query:
                self._upload_op(method, bucket, key, query, headers, body)
            elif method in ("GET", "HEAD"):
                self._get(bucket, key, headers, head=method == "HEAD")
            elif method == "PUT":
                if "x-amz-copy-source" in headers:
                    self._copy(bucket, key, headers)
                else:
                    self._put(bucket, key, headers, body)
            elif method == "DELETE":
                self._bucket(bucket).pop(key, None)
                self._send(204)
            else:
                raise S3Error(405, "MethodNotAllowed")

    def _bucket_op(self, method: str, bucket: str, query: dict[str, str], body: bytes) -> None:
        fake = self.server.fake
        if method == "POST" and "delete" in query:  # DeleteObjects (obstore's delete)
            objects = self._bucket(bucket)
            try:
                root = ET.fromstring(body)
            except ET.ParseError:
                raise S3Error(400, "MalformedXML") from None
            deleted = []
            for el in root.iter():
                if el.tag.rsplit("}", 1)[-1] == "Key":
                    objects.pop(el.text or "", None)
                    deleted.append(f"<Deleted><Key>{_text(el.text or '')}</Key></Deleted>")
            self._send(200, _xml("DeleteResult", "".join(deleted)))
        elif method == "PUT":
            if bucket in fake.buckets:
                raise S3Error(409, "BucketAlreadyOwnedByYou")
            fake.buckets[bucket] = {}
            self._send(200)
        elif method == "DELETE":
            if self._bucket(bucket):
                raise S3Error(409, "BucketNotEmpty")
            del fake.buckets[bucket]
            self._send(204)
        elif method == "HEAD":
            self._bucket(bucket)
            self._send(200, head=True)
        elif method == "GET" and "uploads" in query:
            self._list_uploads(bucket, query)
        elif method == "GET" and query.get("list-type") == "2":
            self._list(bucket, query)
        else:
            raise S3Error(501, "NotImplemented")

    def _list(self, bucket: str, query: dict[str, str]) -> None:
        objects = self._bucket(bucket)
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        url = query.get("encoding-type") == "url"
        max_keys = min(int(query.get("max-keys", "1000")), 1000)
        after = query.get("start-after", "")
        token = query.get("continuation-token")
        if self.server.fake.stuck_listing:
            token, after = None, ""  # always the first page again
        if token is not None:
            try:
                after = base64.urlsafe_b64decode(token.encode()).decode("utf-8", "surrogatepass")
            except (ValueError, UnicodeDecodeError):
                raise S3Error(400, "InvalidArgument", "bad continuation token") from None
        keys = sorted(
            (k for k in objects if k.startswith(prefix)),
            key=lambda k: k.encode("utf-8", "surrogatepass"),
        )
        bafter = after.encode("utf-8", "surrogatepass")
        keys = [k for k in keys if k.encode("utf-8", "surrogatepass") > bafter]
        contents: list[str] = []
        common: list[str] = []
        last = ""
        truncated = False
        for k in keys:
            if delimiter:
                cut = k.find(delimiter, len(prefix))
                if cut >= 0:
                    cp = k[: cut + len(delimiter)]
                    if common and common[-1] == cp:
                        last = k
                        continue
                    if len(contents) + len(common) >= max_keys:
                        truncated = True
                        break
                    common.append(cp)
                    last = k
                    continue
            if len(contents) + len(common) >= max_keys:
                truncated = True
                break
            contents.append(k)
            last = k

        def enc(value: str) -> str:
            return _url_key(value) if url else _text(value)

        truncated = truncated or self.server.fake.stuck_listing
        parts = [
            f"<Name>{_text(bucket)}</Name><Prefix>{enc(prefix)}</Prefix>",
            f"<KeyCount>{len(contents) + len(common)}</KeyCount><MaxKeys>{max_keys}</MaxKeys>",
            f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>",
        ]
        if url:
            parts.append("<EncodingType>url</EncodingType>")
        if delimiter:
            parts.append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
        if token is not None:
            parts.append(f"<ContinuationToken>{_text(token)}</ContinuationToken>")
        if truncated:
            nxt = base64.urlsafe_b64encode(last.encode("utf-8", "surrogatepass")).decode()
            if self.server.fake.stuck_listing:
                nxt = "t"
            parts.append(f"<NextContinuationToken>{nxt}</NextContinuationToken>")
        for k in contents:
            o = objects[k]
            parts.append(
                f"<Contents><Key>{enc(k)}</Key><LastModified>{_iso(o.modified)}</LastModified>"
                f"<ETag>{_text(o.etag)}</ETag><Size>{len(o.data)}</Size>"
                "<StorageClass>STANDARD</StorageClass></Contents>"
            )
        for cp in common:
            parts.append(f"<CommonPrefixes><Prefix>{enc(cp)}</Prefix></CommonPrefixes>")
        self._send(
            200, _xml("ListBucketResult", "".join(parts)), {"Content-Type": "application/xml"}
        )

    def _get(self, bucket: str, key: str, headers: Mapping[str, str], *, head: bool) -> None:
        o = self._bucket(bucket).get(key)
        if o is None:
            raise S3Error(404, "NoSuchKey")
        size = len(o.data)
        out = {
            "ETag": o.etag,
            "Last-Modified": email.utils.format_datetime(o.modified, usegmt=True),
            "Content-Type": o.content_type,
            "Accept-Ranges": "bytes",
        }
        out.update({f"x-amz-meta-{k}": v for k, v in o.metadata.items()})
        if o.checksum_sha256 and headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
            out["x-amz-checksum-sha256"] = o.checksum_sha256
        rng = None if self.server.fake.ignore_range else headers.get("range")
        if rng and rng.startswith("bytes=") and "," not in rng:
            first, _, last = rng[6:].partition("-")
            try:
                if first:
                    start = int(first)
                    end = min(int(last), size - 1) if last else size - 1
                else:  # suffix range
                    start, end = max(0, size - int(last)), size - 1
            except ValueError:
                start, end = 0, size - 1
            else:
                if start >= size:
                    out["Content-Range"] = f"bytes */{size}"
                    raise S3Error(416, "InvalidRange")
                out["Content-Range"] = f"bytes {start}-{end}/{size}"
                data = o.data[start : end + 1]
                self._send(206, b"" if head else data, out, head=head, length=len(data))
                return
        body = self.server.fake.served.get(key, o.data)
        if not head and body is not o.data:
            self._send(200, body, out, length=len(body))
            return
        self._send(200, b"" if head else o.data, out, head=head, length=size)

    def _put(self, bucket: str, key: str, headers: Mapping[str, str], body: bytes) -> None:
        objects = self._bucket(bucket)
        checksum = _check_digests(headers, body)
        o = _object(body, _metadata(headers), _ctype(headers), checksum_sha256=checksum)
        objects[key] = o
        out = {"ETag": o.etag}
        if checksum:
            out["x-amz-checksum-sha256"] = checksum
        self._send(200, b"", out)

    def _copy_source(self, headers: Mapping[str, str]) -> FakeObject:
        raw = headers["x-amz-copy-source"]
        source = urllib.parse.unquote(raw.partition("?")[0], errors="strict")
        src_bucket, _, src_key = source.removeprefix("/").partition("/")
        src = self._bucket(src_bucket).get(src_key)
        if src is None:
            raise S3Error(404, "NoSuchKey")
        match = headers.get("x-amz-copy-source-if-match")
        if match is not None and match.strip('"') != src.etag.strip('"'):
            raise S3Error(412, "PreconditionFailed")
        return src

    def _copy(self, bucket: str, key: str, headers: Mapping[str, str]) -> None:
        objects = self._bucket(bucket)
        src = self._copy_source(headers)
        if len(src.data) > 5 * 1024**3:
            raise S3Error(400, "InvalidRequest", "use UploadPartCopy above 5 GiB")
        replace = headers.get("x-amz-metadata-directive", "COPY").upper() == "REPLACE"
        meta = _metadata(headers) if replace else dict(src.metadata)
        ctype = _ctype(headers) if replace else src.content_type
        checksum = None
        if headers.get("x-amz-checksum-algorithm", "").upper() == "SHA256":
            checksum = base64.b64encode(hashlib.sha256(src.data).digest()).decode()
        o = _object(src.data, meta, ctype, checksum_sha256=checksum)
        objects[key] = o
        extra = f"<ChecksumSHA256>{checksum}</ChecksumSHA256>" if checksum else ""
        self._send(
            200,
            _xml(
                "CopyObjectResult",
                f"<LastModified>{_iso(o.modified)}</LastModified><ETag>{_text(o.etag)}</ETag>"
                + extra,
            ),
            {"Content-Type": "application/xml"},
        )

    # ------------------------------------------------------------------ multipart

    def _create_upload(self, bucket: str, key: str, headers: Mapping[str, str]) -> None:
        self._bucket(bucket)
        fake = self.server.fake
        upload_id = secrets.token_urlsafe(18)
        fake.uploads[upload_id] = FakeUpload(
            bucket, key, upload_id, _metadata(headers), _ctype(headers), dt.datetime.now(dt.UTC)
        )
        enc = _text(key)
        self._send(
            200,
            _xml(
                "InitiateMultipartUploadResult",
                f"<Bucket>{_text(bucket)}</Bucket><Key>{enc}</Key><UploadId>{upload_id}</UploadId>",
            ),
        )

    def _upload(self, bucket: str, key: str, upload_id: str) -> FakeUpload:
        up = self.server.fake.uploads.get(upload_id)
        if up is None or up.bucket != bucket or up.key != key:
            raise S3Error(404, "NoSuchUpload")
        return up

    def _upload_op(
        self,
        method: str,
        bucket: str,
        key: str,
        query: dict[str, str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> None:
        fake = self.server.fake
        up = self._upload(bucket, key, query["uploadId"])
        if method == "PUT":
            number = int(query.get("partNumber", "0"))
            if not 1 <= number <= 10_000:
                raise S3Error(400, "InvalidArgument", "part number")
            if "x-amz-copy-source" in headers:
                data = self._copy_source(headers).data
                rng = headers.get("x-amz-copy-source-range")
                if rng:
                    first, _, last = rng.removeprefix("bytes=").partition("-")
                    start, end = int(first), int(last)
                    if end >= len(data) or start > end:
                        raise S3Error(400, "InvalidArgument", "copy source range")
                    data = data[start : end + 1]
                etag = '"' + hashlib.md5(data).hexdigest() + '"'
                up.parts[number] = (data, etag)
                self._send(
                    200,
                    _xml(
                        "CopyPartResult",
                        f"<LastModified>{_iso(dt.datetime.now(dt.UTC))}</LastModified>"
                        f"<ETag>{_text(etag)}</ETag>",
                    ),
                )
                return
            _check_digests(headers, body)
            etag = '"' + hashlib.md5(body).hexdigest() + '"'
            up.parts[number] = (body, etag)
            self._send(200, b"", {"ETag": etag})
        elif method == "POST":
            try:
                root = ET.fromstring(body)
            except ET.ParseError:
                raise S3Error(400, "MalformedXML") from None
            chosen: list[tuple[int, str]] = []
            for part in root.iter():
                if part.tag.rsplit("}", 1)[-1] != "Part":
                    continue
                fields = {c.tag.rsplit("}", 1)[-1]: (c.text or "") for c in part}
                chosen.append((int(fields["PartNumber"]), fields["ETag"]))
            if not chosen:
                raise S3Error(400, "MalformedXML")
            numbers = [n for n, _ in chosen]
            if numbers != sorted(set(numbers)):
                raise S3Error(400, "InvalidPartOrder")
            datas: list[bytes] = []
            for i, (n, etag) in enumerate(chosen):
                if n not in up.parts or up.parts[n][1].strip('"') != etag.strip('"'):
                    raise S3Error(400, "InvalidPart")
                data = up.parts[n][0]
                if i < len(chosen) - 1 and len(data) < fake.min_part_size:
                    raise S3Error(400, "EntityTooSmall")
                datas.append(data)
            md5s = b"".join(hashlib.md5(d).digest() for d in datas)
            etag = f'"{hashlib.md5(md5s).hexdigest()}-{len(datas)}"'
            o = _object(b"".join(datas), up.metadata, up.content_type)
            o.etag = etag
            self._bucket(bucket)[key] = o
            del fake.uploads[up.upload_id]
            self._send(
                200,
                _xml(
                    "CompleteMultipartUploadResult",
                    f"<Bucket>{_text(bucket)}</Bucket><Key>{_text(key)}</Key>"
                    f"<ETag>{_text(etag)}</ETag>",
                ),
            )
        elif method == "DELETE":
            del fake.uploads[up.upload_id]
            self._send(204)
        elif method == "GET":
            parts = "".join(
                f"<Part><PartNumber>{n}</PartNumber><ETag>{_text(e)}</ETag>"
                f"<Size>{len(d)}</Size></Part>"
                for n, (d, e) in sorted(up.parts.items())
            )
            self._send(200, _xml("ListPartsResult", f"<UploadId>{up.upload_id}</UploadId>{parts}"))
        else:
            raise S3Error(405, "MethodNotAllowed")

    def _list_uploads(self, bucket: str, query: dict[str, str]) -> None:
        self._bucket(bucket)
        fake = self.server.fake
        prefix = query.get("prefix", "")
        url = query.get("encoding-type") == "url"
        max_uploads = min(int(query.get("max-uploads", "1000")), 1000)
        key_marker = query.get("key-marker", "")
        id_marker = query.get("upload-id-marker", "")

        def order(u: FakeUpload) -> tuple[bytes, str, str]:
            return (u.key.encode("utf-8", "surrogatepass"), _iso(u.initiated), u.upload_id)

        ups = sorted(
            (u for u in fake.uploads.values() if u.bucket == bucket and u.key.startswith(prefix)),
            key=order,
        )
        if key_marker:
            marker = (key_marker.encode("utf-8", "surrogatepass"), id_marker)
            ups = [
                u
                for u in ups
                if (u.key.encode("utf-8", "surrogatepass"), u.upload_id) > marker
                and (id_marker or u.key != key_marker)
            ]
        page, rest = ups[:max_uploads], ups[max_uploads:]

        def enc(value: str) -> str:
            return _url_key(value) if url else _text(value)

        parts = [f"<Bucket>{_text(bucket)}</Bucket><Prefix>{enc(prefix)}</Prefix>"]
        if url:
            parts.append("<EncodingType>url</EncodingType>")
        parts.append(f"<IsTruncated>{'true' if rest else 'false'}</IsTruncated>")
        if rest:
            parts.append(
                f"<NextKeyMarker>{enc(page[-1].key)}</NextKeyMarker>"
                f"<NextUploadIdMarker>{page[-1].upload_id}</NextUploadIdMarker>"
            )
        for u in page:
            parts.append(
                f"<Upload><Key>{enc(u.key)}</Key><UploadId>{u.upload_id}</UploadId>"
                f"<Initiated>{_iso(u.initiated)}</Initiated></Upload>"
            )
        self._send(200, _xml("ListMultipartUploadsResult", "".join(parts)))


def _metadata(headers: Mapping[str, str]) -> dict[str, str]:
    return {k[len("x-amz-meta-") :]: v for k, v in headers.items() if k.startswith("x-amz-meta-")}


def _ctype(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "binary/octet-stream")


def _check_digests(headers: Mapping[str, str], body: bytes) -> str | None:
    md5 = headers.get("content-md5")
    if md5 is not None and md5 != base64.b64encode(hashlib.md5(body).digest()).decode():
        raise S3Error(400, "BadDigest", "Content-MD5 does not match")
    sha = headers.get("x-amz-checksum-sha256")
    if sha is not None and sha != base64.b64encode(hashlib.sha256(body).digest()).decode():
        raise S3Error(400, "BadDigest", "x-amz-checksum-sha256 does not match")
    return sha


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeS3


_ids = itertools.count()


@contextlib.contextmanager
def s3fake(
    *,
    session_token: str | None = None,
    min_part_size: int = 5 * 1024 * 1024,
    buckets: tuple[str, ...] = (),
) -> Iterator[FakeS3]:
    """Run a fake S3 server on a free 127.0.0.1 port for the duration of the block."""
    fake = FakeS3(
        access_key_id=f"FAKEKEY{next(_ids):04d}",
        secret_access_key=secrets.token_urlsafe(24),
        session_token=session_token,
        min_part_size=min_part_size,
    )
    for b in buckets:
        fake.create_bucket(b)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.fake = fake
    port = server.server_address[1]
    fake.host = f"127.0.0.1:{port}"
    fake.endpoint = f"http://{fake.host}"
    thread = threading.Thread(target=server.serve_forever, name="s3fake", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
