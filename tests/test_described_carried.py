"""What a copy carries of the source's description: the Content-Type alone, found the way
``of_reader`` finds it (daulat's field first, else the store's attributes, unsafe values
dropped), by a shorter path that runs once per object copied."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from daulat.stores.described import MAX_CONTENT_TYPE, Described, carried, of_reader


@dataclass
class Reader:
    metadata: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)


LONG = "text/" + "x" * MAX_CONTENT_TYPE
READERS = [
    Reader(),
    Reader(attributes={"Content-Type": "image/png", "x-owner": "kpu"}),
    Reader(attributes={"content-type": "text/plain; charset=utf-8"}),
    Reader(attributes={"Content-Type": "bad\x01type"}),
    Reader(attributes={"Content-Type": LONG}),
    Reader(attributes={"Content-Type": "text/é"}),
    Reader(attributes={"content-type": "a/b", "Content-Type": "bad\nvalue"}),
    Reader(attributes={"content-type": "bad\nvalue", "Content-Type": "c/d"}),
    Reader(attributes={"content-type": "a/b", "Content-Type": "c/d"}),
    Reader(
        metadata={"s3": "content-type=video%2Fmp4&x-amz-meta-a=b"},
        attributes={"Content-Type": "x/y"},
    ),
    Reader(metadata={"s3": "x-amz-meta-a=b"}, attributes={"Content-Type": "x/y"}),
    Reader(metadata={"s3": "content-type=bad%0Avalue"}),
    Reader(metadata={"s3": "content-type=" + "y" * 1100}),
    Reader(attributes={"Content-Type": "a/b", "x-big": "v" * 3000}),
]


def _as_described(reader: object) -> dict[str, str]:
    """What carried() gave before its shorter path: the whole description, cut to the type."""
    content_type = of_reader(reader).content_type
    if content_type is None or len(content_type) > MAX_CONTENT_TYPE:
        return {}
    return Described(content_type).field()


@pytest.mark.parametrize("reader", READERS, ids=range(len(READERS)))
def test_carried_is_the_content_type_of_reader_finds(reader: Reader) -> None:
    assert carried(reader) == _as_described(reader)


def test_carried_values() -> None:
    """The field itself, and that a copy's dict is its own (callers update theirs)."""
    png = Reader(attributes={"Content-Type": "image/png", "x-owner": "kpu"})
    first = carried(png)
    assert first == {"s3": "content-type=image%2Fpng"}
    first["s3"] = "changed"
    assert carried(png) == {"s3": "content-type=image%2Fpng"}
    assert carried(Reader()) == {}
    assert carried(Reader(attributes={"Content-Type": LONG})) == {}  # longer than carried
    held = "content-type=video%2Fmp4&x-amz-meta-a=b"
    both = Reader(metadata={"s3": held}, attributes={"Content-Type": "x/y"})
    assert carried(both) == {"s3": "content-type=video%2Fmp4"}  # daulat's field wins
    untyped = Reader(metadata={"s3": "x-amz-meta-a=b"}, attributes={"Content-Type": "x/y"})
    assert carried(untyped) == {}  # daulat's field without a type: the store's is not used
