"""The botocore S3 client of :class:`~daulat.stores.s3raw.S3Raw`: its configuration (addressing,
timeouts, checksums, no retries of its own, no region redirects) and the event handlers that
make its answers faithful and cheap to parse (keys echoed raw, ListObjectsV2 contents,
timestamps).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree

from daulat.stores.s3creds import paused_gc

if TYPE_CHECKING:
    from daulat.stores.s3base import S3Base

#: A timeout of None means: no limit of daulat's own (botocore needs a number).
NO_TIMEOUT = 24 * 3600.0
_KEY_ELEMENT = re.compile(rb"<Key>.*?</Key>", re.DOTALL)
_CONTENTS_ELEMENT = re.compile(rb"<Contents>.*?</Contents>", re.DOTALL)
# Operations whose answers carry keys URL-encoded (listings); every other answer that echoes a
# key does so raw, which XML 1.0 cannot carry when the key holds a control character.
_LISTINGS = frozenset({"ListObjectsV2", "ListObjects", "ListMultipartUploads"})


def _make_client(raw: S3Base) -> Any:
    """A botocore S3 client for ``raw``: its addressing, region, timeouts and credentials.

    - Path-style addressing (or virtual-hosted where the provider needs it): botocore keeps
      every key as it is, ``a//b``, ``../x`` and ``/abs`` included.
    - No retries of botocore's own: daulat retries per object within a time budget and
      lowers its concurrency on throttling, which botocore's retries would hide.
    - ``read_timeout`` is a timeout *without progress*: it bounds every socket operation
      (each send of a part's bytes, each wait for an answer, each read of a body), never a
      whole transfer, so a slow 8 MiB part goes through while a silent server fails in
      ``timeout`` seconds.
    - Checksums only when daulat sends them (``x-amz-checksum-sha256`` or ``Content-MD5``,
      which every upload carries); the payload itself is not hashed a second time for the
      signature (UNSIGNED-PAYLOAD): the checksum already binds the body, and the server
      verifies it.
    - Parameter validation off: botocore refuses a memoryview body, and each part would
      otherwise be copied once more (8 MiB per part) only to be accepted.
    """
    from botocore.config import Config

    timeout = raw.timeout or NO_TIMEOUT
    config = Config(
        region_name=raw.region,
        signature_version="s3v4",
        s3={
            "addressing_style": "virtual" if raw.virtual_hosted else "path",
            "payload_signing_enabled": False,
        },
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=min(timeout, 10.0),
        read_timeout=timeout,
        max_pool_connections=raw._max_connections,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        parameter_validation=False,
        user_agent_appid="daulat",
        tcp_keepalive=True,
    )
    session = raw.credentials.botocore_session()
    # botocore parses every timestamp with dateutil, ~0.1-0.9 ms each: a listing of 1,000
    # objects spent more CPU on LastModified than on anything else. ISO 8601 (listings) goes
    # through datetime.fromisoformat; anything else (HTTP dates of HEAD) to botocore's own.
    session.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=_parse_timestamp
    )
    with paused_gc():  # the service model and endpoint rules: long-lived, no garbage
        client = session.create_client("s3", endpoint_url=raw.endpoint_url, config=config)
    events = client.meta.events
    events.register("before-call.s3", _no_region_redirect)
    # Before botocore's own check, which takes a 200 answer it cannot parse for a failure.
    from botocore import handlers

    # No "Expect: 100-continue" before each part: a round trip per part, and a wait
    # without progress, for a refusal the checksum and the signature give anyway.
    expect = getattr(handlers, "add_expect_header", None)
    if expect is not None:
        events.unregister("before-call.s3", expect)
    check_200 = getattr(handlers, "_handle_200_error", None)
    if check_200 is not None:
        events.unregister("before-parse.s3.*", check_200)
    events.register_first("before-parse.s3.*", _drop_raw_keys)
    # Before that check too: it parses the whole answer only to see whether its root is
    # <Error>, which for a listing page was a second full parse of every listed object.
    events.register_first("before-parse.s3.*", _parse_listing)
    if check_200 is not None:
        events.register_first("before-parse.s3.*", check_200)
    return client


def _no_region_redirect(context: dict[str, Any], **_: Any) -> None:
    """Tell botocore's region redirector this request was redirected already, so it never
    follows one: a store's region is part of what daulat reports (see the module doc)."""
    context.setdefault("s3_redirect", {})["redirected"] = True


def _drop_raw_keys(operation_model: Any, response_dict: dict[str, Any], **_: Any) -> None:
    """Answers other than listings echo the key raw (CreateMultipartUpload, errors); a key
    with a control character is not well-formed XML 1.0 there, so ``Key`` is dropped unread
    (daulat never needs it back)."""
    body = response_dict.get("body")
    if isinstance(body, bytes) and operation_model.name not in _LISTINGS and b"<Key>" in body:
        response_dict["body"] = _KEY_ELEMENT.sub(b"", body)


def _parse_listing(
    operation_model: Any,
    response_dict: dict[str, Any],
    customized_response_dict: dict[str, Any],
    **_: Any,
) -> None:
    """:func:`_parse_contents` for ListObjectsV2 answers (registered for every operation, to
    run before botocore's check of 200 answers, see :func:`_make_client`)."""
    if operation_model.name == "ListObjectsV2":
        _parse_contents(response_dict, customized_response_dict)


def _parse_contents(
    response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any
) -> None:
    """The objects of a ListObjectsV2 page, read here rather than by botocore's model-driven
    parser, which took ~0.1 ms of CPU per listed object (five times this; a copy lists each
    object twice). Same XML parser (expat, UTF-8), same values: ``Key``, ``ETag`` and
    ``StorageClass`` as text (empty when the element is), ``Size`` an int, ``LastModified``
    as :func:`_parse_timestamp`. The ``Contents`` elements are then cut out of the body, and
    botocore parses the rest (truncation, tokens, common prefixes) and URL-decodes the keys as
    ever. Anything unexpected (not a 200, not well-formed, a field that does not parse, a count
    that differs) leaves the answer to botocore untouched."""
    body = response_dict.get("body")
    if response_dict.get("status_code") != 200 or not isinstance(body, bytes):
        return
    if b"<Contents>" not in body:
        return
    try:
        parser = ElementTree.XMLParser(target=ElementTree.TreeBuilder(), encoding="utf-8")
        parser.feed(body)
        root = parser.close()
        ns, _brace, name = root.tag.rpartition("}")
        if name != "ListBucketResult":
            return  # an <Error> (S3 may answer 200 and fail) or anything else: botocore's
        ns = ns + "}" if ns else ""
        # findtext looks a child up in C; a Python loop over every child cost twice as much.
        texts = [(f, ns + f) for f in ("Key", "ETag", "StorageClass")]
        size_tag, modified_tag = ns + "Size", ns + "LastModified"
        contents: list[dict[str, Any]] = []
        contents_tag = ns + "Contents"
        first = last = -1
        for index, node in enumerate(root):
            if node.tag != contents_tag:
                continue
            if first < 0:
                first = index
            last = index
            item: dict[str, Any] = {}
            for field, tag in texts:
                text = node.findtext(tag)
                if text is not None:
                    item[field] = text
            size = node.findtext(size_tag)
            if size is not None:
                item["Size"] = int(size)
            modified = node.findtext(modified_tag)
            if modified is not None:
                item["LastModified"] = _parse_timestamp(modified)
            contents.append(item)
    except Exception:
        return  # botocore's parser then reports it as it always did
    rest = b""
    if last - first + 1 == len(contents) == body.count(b"<Contents>"):
        # One run of Contents elements, as S3 answers: cut from the first to the last (a
        # regular expression over the whole page cost a third of this function).
        start, end = body.find(b"<Contents>"), body.rfind(b"</Contents>")
        if 0 <= start < end:
            rest = body[:start] + body[end + len(b"</Contents>") :]
    if not rest:
        rest, cut = _CONTENTS_ELEMENT.subn(b"", body)
        if cut != len(contents):
            return
    response_dict["body"] = rest
    customized_response_dict["Contents"] = contents


def _parse_timestamp(value: Any) -> dt.datetime:
    """A timestamp of an S3 answer, as botocore's parser would give it (timezone-aware)."""
    if isinstance(value, str):
        try:  # (not contextlib.suppress: this runs for every listed object)
            return dt.datetime.fromisoformat(value)
        except ValueError:
            pass
    from botocore.utils import parse_timestamp

    parsed: dt.datetime = parse_timestamp(value)
    return parsed
