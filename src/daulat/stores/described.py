"""How an object is described to HTTP clients: its Content-Type and its user metadata
(S3's ``x-amz-meta-*``), as a store holds them.

Two places hold a description:

- **daulat's field** ``s3`` among the object's daulat metadata (``x-amz-meta-daulat_s3`` on
  S3, ``daulat_s3`` on Azure and GCS, the ``user.daulat.s3`` extended attribute of a file):
  the pairs ``content-type=...&x-amz-meta-NAME=...``, percent-encoded. One field, so that
  names S3 allows and Azure does not (hyphens) fit every store, and kept apart from daulat's
  own fields (``daulat_sha256``, ``daulat_proof``, ``daulat_encryption`` at a provider): a
  client's ``x-amz-meta-proof`` never touches the proof. Names with daulat's prefix
  (``daulat_*``, ``daulat-*``) are daulat's alone, refused in a write and never answered
  whatever holds them. Written by the gateway's writes and, for the Content-Type, by the copy
  engine.
- **the store's own attributes**, for objects other applications wrote: the Content-Type and
  the metadata that an S3 or Azure reader reports (``attributes`` of the readers over obstore
  and botocore), daulat's ``daulat_*`` names left out.

daulat's field wins when both are there (the store's own Content-Type of an object daulat
wrote is whatever its client defaulted to). The provider is the adversary: a description read
from a store is cut to what an HTTP header can carry safely (no control characters, names that
are HTTP tokens), so a planted value can never add headers to a response, and to what a write
could have given it (a Content-Type of at most 1,024 bytes, user metadata of at most 2 KiB:
past that, it is dropped). Within those bounds a description is the provider's word: unlike
the bytes, nothing (no journal row, no signed manifest) binds it.

User metadata values are Unicode text, as S3 keeps them. HTTP carries header values as bytes,
so S3 takes RFC 2047 encoded words in a written value (``=?UTF-8?B?w6k=?=``: how clients
such as boto3, which refuse non-ASCII metadata, send it) as the text they encode
(:func:`from_header`), and answers a value that is not ASCII as one encoded word
(:func:`header_value`); ASCII values go as they are. Control characters are no metadata:
never written, never answered, so no value can end a header or add one.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

#: What an object nothing describes is served as, and what a write without a Content-Type
#: records (so that every replica answers alike: S3 servers store a type of their own
#: choosing, SeaweedFS one sniffed from the bytes).
DEFAULT_CONTENT_TYPE = "application/octet-stream"
#: The name of daulat's field (stores add their prefix: ``daulat_s3``).
FIELD = "s3"
#: S3's limit on an object's user metadata: names (without ``x-amz-meta-``) and values, in
#: UTF-8 bytes.
MAX_USER_METADATA = 2048
#: The longest Content-Type a gateway write keeps or a read answers, in bytes (S3 sets no
#: lower bound of its own; past this a value is no media type a client chose but a payload).
MAX_WRITTEN_CONTENT_TYPE = 1024
#: A Content-Type longer than this is not carried by a copy (it would take room from the
#: metadata limits of the destination, where daulat's proof must fit).
MAX_CONTENT_TYPE = 256
#: The store attributes that describe content rather than name user metadata (obstore's).
_STANDARD = {
    "content-type",
    "content-disposition",
    "content-encoding",
    "content-language",
    "cache-control",
}
_META = "x-amz-meta-"
#: A field longer than this is no description daulat wrote (2 KiB of metadata and a 1 KiB
#: Content-Type, every byte percent-encoded, and the names' prefixes): not even parsed.
_MAX_FIELD = 64 * 1024
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9a-z-]+$")
#: What a Content-Type may hold: printable ASCII and the Latin-1 bytes HTTP allows in a field.
_VALUE = re.compile(r"^[\x20-\x7e\x80-\xff]*$")
#: What user metadata may not hold: control characters (C0, DEL, C1) and lone surrogates.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
#: An RFC 2047 encoded word: =?charset?B|Q?text?=
_WORD = re.compile(r"=\?([^?\s]+)\?([BbQq])\?([^?\s]*)\?=")


@dataclass(frozen=True)
class Described:
    """An object's Content-Type (None: not known) and user metadata (names lower-case,
    without ``x-amz-meta-``)."""

    content_type: str | None = None
    user: Mapping[str, str] = field(default_factory=dict)

    def field(self) -> dict[str, str]:
        """daulat's metadata holding this description (empty when there is nothing to hold)."""
        pairs = [] if self.content_type is None else [("content-type", self.content_type)]
        pairs += [(_META + name, value) for name, value in sorted(self.user.items())]
        return {FIELD: urlencode(pairs)} if pairs else {}

    def user_size(self) -> int:
        """The user metadata's size as S3 counts it against :data:`MAX_USER_METADATA`."""
        return sum(len(n.encode()) + len(v.encode()) for n, v in self.user.items())


def from_field(value: str) -> Described:
    """The description held in daulat's field (what is not safe as a header is dropped)."""
    if len(value) > _MAX_FIELD:
        return Described()
    content_type: str | None = None
    user: dict[str, str] = {}
    for name, text in parse_qsl(value, keep_blank_values=True):
        if name == "content-type" and _safe_value(text):
            content_type = text
        elif name.startswith(_META) and _allowed(name[len(_META) :]) and safe_text(text):
            user[name[len(_META) :]] = text
    return _within_limits(Described(content_type, user))


def of_reader(reader: object) -> Described:
    """The description a reader of a store reports: daulat's field in its ``metadata`` if
    there, else its store's own ``attributes`` (readers that report none: nothing)."""
    metadata: Mapping[str, str] = getattr(reader, "metadata", None) or {}
    held = metadata.get(FIELD)
    if held is not None:
        return from_field(held)
    attributes: Mapping[str, str] = getattr(reader, "attributes", None) or {}
    content_type: str | None = None
    user: dict[str, str] = {}
    for name, value in attributes.items():
        lower = str(name).lower()
        if not isinstance(value, str):
            continue
        if lower == "content-type" and _safe_value(value):
            content_type = value
        elif lower not in _STANDARD and _allowed(lower) and safe_text(value):
            user[lower] = value
    return _within_limits(Described(content_type, user))


def carried(reader: object) -> dict[str, str]:
    """daulat's field for a copy of what ``reader`` reads: its Content-Type only (user
    metadata could pass the destination's limits, where daulat's own fields must fit)."""
    content_type = _content_type(reader)
    if content_type is None or len(content_type) > MAX_CONTENT_TYPE:
        return {}
    return {FIELD: _content_type_field(content_type)}


def _content_type(reader: object) -> str | None:
    """``of_reader(reader).content_type``, without building the user metadata a copy never
    carries (this runs once per object copied). At most :data:`MAX_CONTENT_TYPE` characters
    are ever carried, at most 1,024 UTF-8 bytes: within :func:`_within_limits` whatever the
    user metadata's size."""
    metadata: Mapping[str, str] = getattr(reader, "metadata", None) or {}
    held = metadata.get(FIELD)
    if held is not None:
        return from_field(held).content_type
    attributes: Mapping[str, str] = getattr(reader, "attributes", None) or {}
    found: str | None = None
    for name, value in attributes.items():
        if isinstance(value, str) and str(name).lower() == "content-type" and _safe_value(value):
            found = value  # the last, as of_reader keeps it
    return found


@functools.lru_cache(maxsize=64)
def _content_type_field(content_type: str) -> str:
    """The field's value for a Content-Type alone (a run's objects share a few types)."""
    return urlencode([("content-type", content_type)])


def _within_limits(desc: Described) -> Described:
    """``desc`` less what no write through the gateway could have given it: a Content-Type
    past :data:`MAX_WRITTEN_CONTENT_TYPE`, user metadata past S3's 2 KiB (all of it: a
    part of it would be a description nobody wrote)."""
    content_type = desc.content_type
    if content_type is not None and len(content_type.encode()) > MAX_WRITTEN_CONTENT_TYPE:
        content_type = None
    user = desc.user if desc.user_size() <= MAX_USER_METADATA else {}
    return Described(content_type, user)


def reserved(name: str) -> bool:
    """Whether ``name`` (user metadata, lower-case, without ``x-amz-meta-``) bears the prefix
    stores give daulat's own fields (``daulat_proof``...): never a client's. A client's
    ``sha256`` or ``proof`` is its own: daulat's field keeps it apart from daulat's."""
    return name.startswith(("daulat_", "daulat-"))


def _allowed(name: str) -> bool:
    """Whether ``name`` may be answered as a client's metadata."""
    return _safe_name(name) and not reserved(name)


def _safe_name(name: str) -> bool:
    return bool(name) and _TOKEN.match(name) is not None


def _safe_value(value: str) -> bool:
    return _VALUE.match(value) is not None


def safe_text(value: str) -> bool:
    """Whether ``value`` may be user metadata: any text without control characters."""
    return _CONTROL.search(value) is None


def header_value(value: str) -> str:
    """``value`` as S3 answers it in an ``x-amz-meta-*`` header: as it is when ASCII, else
    one RFC 2047 encoded word of its UTF-8 (``é`` → ``=?UTF-8?B?w6k=?=``). A control
    character, which no value read from a store holds (they are dropped), would be encoded
    too: whatever reaches here, CR, LF or NUL never reach the response's header block."""
    if value.isascii() and safe_text(value):
        return value
    return "=?UTF-8?B?" + base64.b64encode(value.encode("utf-8")).decode("ascii") + "?="


def from_header(value: str) -> str:
    """The text of a written ``x-amz-meta-*`` value: its RFC 2047 encoded words decoded (the
    white space between two adjacent words dropped, as RFC 2047 says). A word that does not
    decode (an unknown charset, bad base64) stays as written."""
    out: list[str] = []
    pos = 0
    after_word = False
    for m in _WORD.finditer(value):
        between = value[pos : m.start()]
        if not (after_word and between.strip(" \t") == ""):
            out.append(between)
        decoded = _decode_word(m.group(1), m.group(2), m.group(3))
        out.append(m.group(0) if decoded is None else decoded)
        after_word = decoded is not None
        pos = m.end()
    out.append(value[pos:])
    return "".join(out)


def _decode_word(charset: str, encoding: str, text: str) -> str | None:
    charset = charset.partition("*")[0]  # RFC 2231's language suffix
    try:
        if encoding in "Bb":
            raw = base64.b64decode(text, validate=True)
        else:
            raw = binascii.a2b_qp(text, header=True)  # "_" is a space
        return raw.decode(charset)
    except (binascii.Error, LookupError, UnicodeDecodeError, ValueError):
        return None
