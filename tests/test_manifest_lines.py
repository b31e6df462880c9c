"""A destination manifest's object lines, built without a ``json.dumps`` per entry, are the very
bytes ``json.dumps(entry, ensure_ascii=False)`` wrote: readers (and the content hash that tells
whether a run changed anything) see no difference."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from types import SimpleNamespace
from typing import Any

import pytest
from test_hostile_names import HOSTILE_KEYS

from daulat.transfer.manifests import entry_line
from daulat.transfer.provenance import _content_digest

SOURCES: list[dict[str, Any]] = [
    {"store": "a", "prefix": "", "provider": "self-hosted", "region": None, "country": "ID"},
    {"store": 'kpu "primary"', "prefix": "c1/\u202e/", "jurisdictions": ["ID", "US"]},
]
KEYS = [*HOSTILE_KEYS, "plain/key.bin", 'quote"back\\slash', "\ud800 lone surrogate", "\x00nul"]


def entry(key: str, source: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An entry as the manifest writer built it before: this order, these fields."""
    e: dict[str, Any] = {
        "key": key,
        "size": extra.pop("size", 65536),
        "sha256": "014bfa9a1f0dfe305942c8675ea09082f51175da44bd9ff335913ea5c78e555a",
        "source": source,
        "copied": extra.pop("copied", "2026-12-05T15:57:34+00:00"),
        "stored_size": extra.pop("stored_size", 65536),
        "etag": extra.pop("etag", "9f9428544229d61d8aba85dd98e5444a"),
    }
    e.update(extra)
    return e


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("source", SOURCES)
def test_an_entry_line_is_the_json_of_its_entry(key: str, source: dict[str, Any]) -> None:
    text = json.dumps(source, ensure_ascii=False)
    want = json.dumps(entry(key, source), ensure_ascii=False)
    got = entry_line(
        key,
        size=65536,
        sha256="014bfa9a1f0dfe305942c8675ea09082f51175da44bd9ff335913ea5c78e555a",
        source=text,
        copied="2026-12-05T15:57:34+00:00",
        stored_size=65536,
        etag="9f9428544229d61d8aba85dd98e5444a",
    )
    assert got == want
    assert json.loads(got)["key"] == key


def test_optional_fields_and_odd_values_keep_their_order_and_form() -> None:
    source = SOURCES[1]
    chunks = {"size": 8388608, "sha256": ["ab" * 32, "cd" * 32]}
    want = json.dumps(
        entry(
            "real/name",
            source,
            size=2**63 - 1,
            copied=None,
            stored_size=None,
            etag=None,
            stored_as="0" * 64,
            encryption="age",
            chunks=chunks,
        ),
        ensure_ascii=False,
    )
    got = entry_line(
        "real/name",
        size=2**63 - 1,
        sha256="014bfa9a1f0dfe305942c8675ea09082f51175da44bd9ff335913ea5c78e555a",
        source=json.dumps(source, ensure_ascii=False),
        copied=None,
        stored_size=None,
        etag=None,
        stored_as="0" * 64,
        encrypted=True,
        chunks=chunks,
    )
    assert got == want


@pytest.mark.parametrize("count", [0, 1, 999, 1000, 2500])
def test_the_content_hash_is_the_lines_hashed_one_by_one(count: int) -> None:
    """The hash that tells whether a run changed anything, now one update per page of lines,
    is what hashing each line and its newline gave (a head recorded before still matches)."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TEMP TABLE mf (key TEXT PRIMARY KEY, line TEXT)")
    keys = [k for k in KEYS if "\ud800" not in k]  # not encodable: no manifest holds it
    lines = {}
    for i in range(count):
        name = f"{i:05d}/{keys[i % len(keys)]}"
        source = json.dumps(SOURCES[i % 2], ensure_ascii=False)
        lines[name] = entry_line(
            name,
            size=i,
            sha256="0" * 64,
            source=source,
            copied="2026-12-05T15:57:34+00:00",
            stored_size=i,
            etag=None,
        )
    db.executemany("INSERT INTO mf VALUES (?, ?)", lines.items())
    dst = SimpleNamespace(prefix="c1/é/")
    key = SimpleNamespace(public=SimpleNamespace(line="ssh-ed25519 AAAA kpu"))
    want = hashlib.sha256(json.dumps(["c1/é/", "ssh-ed25519 AAAA kpu", []]).encode())
    for k in sorted(lines):
        want.update(lines[k].encode() + b"\n")
    assert _content_digest(db, dst, key, ()) == want.hexdigest()  # type: ignore[arg-type]
