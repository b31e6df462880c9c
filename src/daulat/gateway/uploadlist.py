"""ListMultipartUploads: the multipart uploads in progress of a bucket, one page of them.

The uploads are this gateway's own, from its spool (:mod:`.spool`: those it began and those it
took over from a gateway that stopped); a read-only bucket has none. Ordered as S3 orders
them: by key, then by when each began (the upload id breaking ties). ``prefix`` and
``delimiter`` group keys into common prefixes as a listing of objects does, each counting as
one entry against ``max-uploads``; ``key-marker`` starts after that key (or common prefix),
``upload-id-marker`` with it after that upload of the marker's key (an id this gateway does
not know: after the ids that sort before it, as S3 compares them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from daulat.gateway import s3xml
from daulat.gateway.s3xml import InProgress, S3Failure

MAX_UPLOADS = 1000
#: The query parameters of a ListMultipartUploads.
PARAMS = {
    "uploads",
    "prefix",
    "delimiter",
    "max-uploads",
    "key-marker",
    "upload-id-marker",
    "encoding-type",
    "x-id",  # botocore's operation hint
}


@dataclass(frozen=True)
class UploadsPage:
    uploads: list[InProgress]
    prefixes: list[str]
    truncated: bool
    next_key_marker: str = ""
    next_upload_id_marker: str = ""


def page(
    uploads: Iterable[InProgress],
    *,
    prefix: str = "",
    delimiter: str = "",
    key_marker: str = "",
    upload_id_marker: str = "",
    max_uploads: int = MAX_UPLOADS,
) -> UploadsPage:
    """One page of ``uploads`` (see the module docstring)."""
    ordered = sorted(
        (u for u in uploads if u.key.startswith(prefix)),
        key=lambda u: (u.key, u.initiated, u.upload_id),
    )
    # The uploads of the marker's key already listed: all of them without an id marker.
    ids = [u.upload_id for u in ordered if u.key == key_marker]
    if not upload_id_marker:
        skip = set(ids)
    elif upload_id_marker in ids:
        skip = set(ids[: ids.index(upload_id_marker) + 1])
    else:
        skip = {i for i in ids if i <= upload_id_marker}
    chosen: list[InProgress] = []
    prefixes: list[str] = []
    last: tuple[str, str] = ("", "")
    truncated = False
    for u in ordered:
        rest = u.key[len(prefix) :]
        common = None
        if delimiter and delimiter in rest:
            common = prefix + rest[: rest.index(delimiter) + len(delimiter)]
        if common is not None:
            if common <= key_marker or (prefixes and prefixes[-1] == common):
                continue
        elif u.key < key_marker or (u.key == key_marker and u.upload_id in skip):
            continue
        if len(chosen) + len(prefixes) >= max_uploads:
            # max-uploads=0 asks for no entry: not a page a client could go on from.
            truncated = max_uploads > 0
            break
        if common is not None:
            prefixes.append(common)
            last = (common, "")
        else:
            chosen.append(u)
            last = (u.key, u.upload_id)
    if not truncated:
        return UploadsPage(chosen, prefixes, False)
    return UploadsPage(chosen, prefixes, True, *last)


def answer(bucket: str, uploads: Iterable[InProgress], params: dict[str, str]) -> bytes:
    """The ListMultipartUploadsResult for a request's ``params``; :class:`S3Failure` 400 for
    a ``max-uploads`` or ``encoding-type`` S3 would refuse."""
    url = params.get("encoding-type") == "url"
    if "encoding-type" in params and not url:
        raise S3Failure(400, "InvalidArgument", "Invalid Encoding Method specified in Request")
    raw = params.get("max-uploads", str(MAX_UPLOADS))
    if not raw.isdigit() or not raw.isascii():
        raise S3Failure(400, "InvalidArgument", "max-uploads must be a non-negative integer")
    max_uploads = min(MAX_UPLOADS, int(raw))
    prefix, delimiter = params.get("prefix", ""), params.get("delimiter", "")
    key_marker = params.get("key-marker", "")
    # Without a key marker S3 ignores the upload id marker (and does not echo it).
    id_marker = params.get("upload-id-marker", "") if key_marker else ""
    found = page(
        uploads,
        prefix=prefix,
        delimiter=delimiter,
        key_marker=key_marker,
        upload_id_marker=id_marker,
        max_uploads=max_uploads,
    )
    return s3xml.list_uploads(
        bucket=bucket,
        prefix=prefix,
        delimiter=delimiter,
        max_uploads=max_uploads,
        url=url,
        key_marker=key_marker,
        upload_id_marker=id_marker,
        uploads=found.uploads,
        prefixes=found.prefixes,
        truncated=found.truncated,
        next_key_marker=found.next_key_marker,
        next_upload_id_marker=found.next_upload_id_marker,
    )
