"""S3's XML bodies: errors and listings.

Keys and prefixes in a listing with ``encoding-type=url`` are percent-encoded (so that keys
XML 1.0 cannot carry, such as control characters, still arrive); without it they are escaped
XML text, and a character XML 1.0 cannot hold is written as a character reference
(``&#x1;``), as S3 itself does: strict parsers refuse it (clients that list with
``encoding-type=url``, as boto3, the AWS CLI and ``rclone --s3-list-url-encode`` do, never
see it), lenient ones go on, and no key ever makes a whole listing fail, which would let
whoever can write one key hide every other key of its prefix. A carriage return is written
as ``&#xD;`` too: parsers turn a literal one into a line feed, another key.
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.utils import format_datetime
from urllib.parse import quote
from xml.sax.saxutils import escape

from daulat.errors import DaulatError

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
# Characters XML 1.0 cannot represent at all, and CR (a parser would read it as LF).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0d\x0e-\x1f\ufffe\uffff]")


class S3Failure(DaulatError):
    """A request answered with S3's error: status, code, message (and extra headers)."""

    def __init__(
        self, status: int, code: str, message: str, headers: Iterable[tuple[str, str]] = ()
    ):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = list(headers)


class NotXmlSafe(DaulatError, ValueError):
    """A key cannot be written into XML without encoding-type=url."""


@dataclass(frozen=True)
class S3Error:
    status: int
    code: str
    message: str


def text(value: str, url: bool = False) -> str:
    if url:
        return quote(value, safe="/")
    return _NOT_XML.sub(lambda m: f"&#x{ord(m.group()):X};", escape(value))


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def http_date(when: dt.datetime) -> str:
    return format_datetime(when.astimezone(dt.UTC), usegmt=True)


def error_body(code: str, message: str, resource: str = "", request_id: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"<Resource>{escape(resource)}</Resource><RequestId>{escape(request_id)}</RequestId>"
        "</Error>"
    ).encode()


def list_buckets(names: Sequence[str], created: dt.datetime) -> bytes:
    buckets = "".join(
        f"<Bucket><Name>{escape(n)}</Name><CreationDate>{iso(created)}</CreationDate></Bucket>"
        for n in names
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ListAllMyBucketsResult xmlns="{NS}">'
        "<Owner><ID>daulat</ID><DisplayName>daulat</DisplayName></Owner>"
        f"<Buckets>{buckets}</Buckets></ListAllMyBucketsResult>"
    ).encode()


def location(region: str) -> bytes:
    # us-east-1 is spelled as an empty constraint, as S3 does.
    value = "" if region == "us-east-1" else escape(region)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint xmlns="{NS}">{value}'
        "</LocationConstraint>"
    ).encode()


@dataclass(frozen=True)
class Listed:
    key: str
    size: int
    modified: dt.datetime
    etag: str


def list_objects(
    *,
    v2: bool,
    bucket: str,
    prefix: str,
    delimiter: str,
    max_keys: int,
    url: bool,
    contents: Sequence[Listed],
    prefixes: Sequence[str],
    truncated: bool,
    start_after: str = "",
    token: str = "",
    next_token: str = "",
    marker: str = "",
    next_marker: str = "",
) -> bytes:
    parts = [
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="{NS}">',
        f"<Name>{escape(bucket)}</Name><Prefix>{text(prefix, url)}</Prefix>",
        f"<MaxKeys>{max_keys}</MaxKeys>",
    ]
    if delimiter:
        parts.append(f"<Delimiter>{text(delimiter, url)}</Delimiter>")
    if url:
        parts.append("<EncodingType>url</EncodingType>")
    parts.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
    if v2:
        parts.append(f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount>")
        if token:
            parts.append(f"<ContinuationToken>{escape(token)}</ContinuationToken>")
        if next_token:
            parts.append(f"<NextContinuationToken>{escape(next_token)}</NextContinuationToken>")
        if start_after:
            parts.append(f"<StartAfter>{text(start_after, url)}</StartAfter>")
    else:
        parts.append(f"<Marker>{text(marker, url)}</Marker>")
        if next_marker:
            parts.append(f"<NextMarker>{text(next_marker, url)}</NextMarker>")
    for c in contents:
        parts.append(
            f"<Contents><Key>{text(c.key, url)}</Key><LastModified>{iso(c.modified)}"
            f"</LastModified><ETag>{escape(c.etag)}</ETag><Size>{c.size}</Size>"
            "<StorageClass>STANDARD</StorageClass></Contents>"
        )
    for p in prefixes:
        parts.append(f"<CommonPrefixes><Prefix>{text(p, url)}</Prefix></CommonPrefixes>")
    parts.append("</ListBucketResult>")
    return "".join(parts).encode()


def initiated(bucket: str, key: str, upload_id: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<InitiateMultipartUploadResult xmlns="{NS}">'
        f"<Bucket>{escape(bucket)}</Bucket><Key>{text(key)}</Key>"
        f"<UploadId>{escape(upload_id)}</UploadId></InitiateMultipartUploadResult>"
    ).encode()


def completed(bucket: str, key: str, etag: str, location: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<CompleteMultipartUploadResult xmlns="{NS}">'
        f"<Location>{escape(location)}</Location><Bucket>{escape(bucket)}</Bucket>"
        f"<Key>{text(key)}</Key><ETag>{escape(etag)}</ETag></CompleteMultipartUploadResult>"
    ).encode()


def list_parts(
    bucket: str,
    key: str,
    upload_id: str,
    parts: Sequence[tuple[int, str, int, dt.datetime]],
    *,
    marker: int = 0,
    max_parts: int = 1000,
    truncated: bool = False,
) -> bytes:
    """``parts``: (number, ETag, size, when) in order, those of this page."""
    following = (
        f"<NextPartNumberMarker>{parts[-1][0]}</NextPartNumberMarker>"
        if (truncated and parts)
        else ""
    )
    items = "".join(
        f"<Part><PartNumber>{n}</PartNumber><LastModified>{iso(when)}</LastModified>"
        f"<ETag>{escape(etag)}</ETag><Size>{size}</Size></Part>"
        for n, etag, size, when in parts
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ListPartsResult xmlns="{NS}">'
        f"<Bucket>{escape(bucket)}</Bucket><Key>{text(key)}</Key>"
        f"<UploadId>{escape(upload_id)}</UploadId><PartNumberMarker>{marker}</PartNumberMarker>"
        f"{following}<MaxParts>{max_parts}</MaxParts>"
        f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>{items}</ListPartsResult>"
    ).encode()


@dataclass(frozen=True)
class InProgress:
    """A multipart upload in progress, as ListMultipartUploads lists it."""

    key: str
    upload_id: str
    initiated: dt.datetime


def list_uploads(
    *,
    bucket: str,
    prefix: str,
    delimiter: str,
    max_uploads: int,
    url: bool,
    key_marker: str,
    upload_id_marker: str,
    uploads: Sequence[InProgress],
    prefixes: Sequence[str],
    truncated: bool,
    next_key_marker: str = "",
    next_upload_id_marker: str = "",
) -> bytes:
    """A ListMultipartUploadsResult. With ``url``, keys, prefixes, the delimiter and the key
    markers are percent-encoded, as S3 does for ``encoding-type=url``."""
    parts = [
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ListMultipartUploadsResult xmlns="{NS}">',
        f"<Bucket>{escape(bucket)}</Bucket><KeyMarker>{text(key_marker, url)}</KeyMarker>",
        f"<UploadIdMarker>{escape(upload_id_marker)}</UploadIdMarker>",
    ]
    if truncated:
        parts.append(f"<NextKeyMarker>{text(next_key_marker, url)}</NextKeyMarker>")
        parts.append(f"<NextUploadIdMarker>{escape(next_upload_id_marker)}</NextUploadIdMarker>")
    if url:
        parts.append("<EncodingType>url</EncodingType>")
    if delimiter:
        parts.append(f"<Delimiter>{text(delimiter, url)}</Delimiter>")
    parts.append(f"<Prefix>{text(prefix, url)}</Prefix><MaxUploads>{max_uploads}</MaxUploads>")
    parts.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
    owner = "<ID>daulat</ID><DisplayName>daulat</DisplayName>"
    for u in uploads:
        parts.append(
            f"<Upload><Key>{text(u.key, url)}</Key><UploadId>{escape(u.upload_id)}</UploadId>"
            f"<Initiator>{owner}</Initiator><Owner>{owner}</Owner>"
            f"<StorageClass>STANDARD</StorageClass><Initiated>{iso(u.initiated)}</Initiated>"
            "</Upload>"
        )
    for p in prefixes:
        parts.append(f"<CommonPrefixes><Prefix>{text(p, url)}</Prefix></CommonPrefixes>")
    parts.append("</ListMultipartUploadsResult>")
    return "".join(parts).encode()


def completion_parts(body: bytes) -> list[tuple[int, str]]:
    """(part number, ETag without quotes) of a CompleteMultipartUpload body, in its order.
    :class:`S3Failure` 400 MalformedXML for anything else (a DTD is refused outright: no
    entity of a client's is ever expanded)."""
    malformed = S3Failure(400, "MalformedXML", "The XML you provided was not well-formed")
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise malformed
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise malformed from None
    out = []
    for part in root:
        if part.tag.rpartition("}")[2] != "Part":
            continue
        fields = {child.tag.rpartition("}")[2]: (child.text or "").strip() for child in part}
        number, etag = fields.get("PartNumber", ""), fields.get("ETag", "")
        if not number.isdigit() or not etag:
            raise malformed
        out.append((int(number), etag.replace("&quot;", "").strip('"')))
    if not out or root.tag.rpartition("}")[2] != "CompleteMultipartUpload":
        raise malformed
    return out
