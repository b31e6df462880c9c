"""Where a destination shows daulat's ciphertext or protected names: the evidence that
:func:`daulat.transfer.safety.plaintext_over_ciphertext` and
:func:`~daulat.transfer.safety.plaintext_into` weigh before a plaintext write.

"There" is the whole store (its bucket or directory), not only the prefix written. Each finder
returns a sentence naming what it found (for the refusal's message), or None:

- the journal: age-encrypted objects daulat wrote, under any store name that reaches the same
  key space, that the plan's listing of the destination still shows as written
  (:func:`journal_ciphertext`), or that the store still holds elsewhere, a few rows of each
  such run looked up one by one (:func:`journal_ciphertext_kept`);
- the newest manifest at the destination or a prefix above it (:func:`manifest_ciphertext`),
  and manifests or name keys below it in the plan's listing (:func:`listed_below`);
- the ``encryption: age`` metadata of a few objects (:func:`metadata_ciphertext`,
  :func:`first_objects_ciphertext`, :func:`root_metadata_ciphertext`);
- a name key at the destination or above it, or ciphertext under stored names
  (:func:`names_protected`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from daulat.errors import StoreError
from daulat.transfer.journal import Journal
from daulat.transfer.manifests import DST_MANIFEST_PREFIX, latest_manifest
from daulat.transfer.model import Endpoint, Options
from daulat.transfer.names import (
    NAME_KEY_OBJECT,
    has_protected_names,
    local_key_path,
    stored_names_evidence,
)

# How many destination objects have their metadata read for an ``encryption: age`` mark.
METADATA_SAMPLE = 4

# A journal pair id: "SRC:PREFIX -> DST:PREFIX[ [TAG]]" (see engine.pair_id).
_PAIR = re.compile(
    r"^(?P<src>[A-Za-z0-9][A-Za-z0-9._-]*):(?P<sp>.*?) -> "
    r"(?P<dst>[A-Za-z0-9][A-Za-z0-9._-]*):(?P<dp>.*?)(?: \[(?P<tag>[^\]]*)\])?$"
)


def journal_ciphertext(journal: Journal, dst: Endpoint, paths: Mapping[str, str]) -> str | None:
    """An age-encrypted object that daulat wrote into this destination (under any store name
    that reaches it) and that the destination still lists as written."""
    paths = paths or {dst.store.name: ""}
    here = paths.get(dst.store.name, "") + dst.prefix
    for pair, m in _age_pairs(journal, paths):
        there = paths[m["dst"]] + m["dp"]
        # CROSS JOIN: walk the pair's journal rows, one primary-key lookup in the listing each.
        if there.startswith(here):
            sql = (
                "SELECT 1 FROM journal j CROSS JOIN dst d ON d.key = ? || coalesce(j.stored_as, "
                "j.key) WHERE j.pair = ? AND j.state = 'done' AND d.size IS j.dst_size "
                "AND d.etag IS j.dst_etag LIMIT 1"
            )
            params: Sequence[object] = (there[len(here) :], pair)
        elif here.startswith(there):
            cut = here[len(there) :]
            sql = (
                "SELECT 1 FROM journal j CROSS JOIN dst d "
                "ON d.key = substr(coalesce(j.stored_as, j.key), ?) "
                "WHERE j.pair = ? AND j.state = 'done' "
                "AND substr(coalesce(j.stored_as, j.key), 1, ?) = ? "
                "AND d.size IS j.dst_size AND d.etag IS j.dst_etag LIMIT 1"
            )
            params = (len(cut) + 1, pair, len(cut), cut)
        else:
            continue
        if journal.db.execute(sql, params).fetchone() is not None:
            return _journal_evidence(m)
    return None


# Journal rows of one encrypted pair looked up at the destination, from each end of its keys.
JOURNAL_SAMPLE = 4


async def journal_ciphertext_kept(
    journal: Journal, dst: Endpoint, opts: Options, *, planned: bool
) -> str | None:
    """An age-encrypted object that daulat wrote anywhere in the destination's store (another
    prefix of its bucket or directory, under any store name that reaches it) and that the
    store still holds with the size and ETag written: a few rows of each such pair, looked up
    one by one. ``planned``: the plan's listing already covered the pairs below ``dst``."""
    paths = opts.store_paths or {dst.store.name: ""}
    root = paths.get(dst.store.name, "")
    here = root + dst.prefix
    for pair, m in _age_pairs(journal, paths):
        there = paths[m["dst"]] + m["dp"]
        if planned and there.startswith(here):
            continue
        if there.startswith(root):
            cut = ""
        elif root.startswith(there):
            cut = root[len(there) :]  # only rows below this store's root can be looked up
        else:
            continue  # another part of the bucket, beyond this store's reach
        for stored, size, etag in _sample_rows(journal, pair, cut):
            if await _still_there(dst, (there + stored)[len(root) :], size, etag, opts):
                return _journal_evidence(m)
    return None


async def _still_there(
    dst: Endpoint, key: str, size: int | None, etag: str | None, opts: Options
) -> bool:
    """Whether the store holds ``key`` (full key in it) with this size and ETag."""
    try:
        info = await opts.retry.call(lambda: dst.store.head(key))
    except StoreError:
        return False
    return info.size == size and info.etag == etag


def _sample_rows(journal: Journal, pair: str, cut: str) -> list[tuple[str, int | None, str | None]]:
    """(stored key, size, ETag) of the first and last few done rows of ``pair`` whose stored
    key starts with ``cut``; both ends by key, so each is a seek in the primary key."""
    found: list[tuple[str, int | None, str | None]] = []
    where = "pair = ? AND state = 'done'"
    params: list[object] = [pair]
    if cut:
        # Names below a prefix are plain (stored names sit directly under the pair's prefix).
        where += " AND stored_as IS NULL AND key >= ? AND key < ?"
        params += [cut, cut[:-1] + chr(ord(cut[-1]) + 1)]
    for order in ("ASC", "DESC"):
        rows = journal.db.execute(
            f"SELECT coalesce(stored_as, key), dst_size, dst_etag FROM journal WHERE {where} "
            f"ORDER BY key {order} LIMIT ?",
            (*params, JOURNAL_SAMPLE),
        ).fetchall()
        found += [(str(k), s, e) for k, s, e in rows if (str(k), s, e) not in found]
    return found


def _age_pairs(journal: Journal, paths: Mapping[str, str]) -> Iterator[tuple[str, re.Match[str]]]:
    """The journal's encrypted pairs into a store that shares the destination's key space."""
    rows = journal.db.execute(
        "SELECT DISTINCT pair FROM runs WHERE kind != 'verify' AND pair LIKE '% [age:%'"
    ).fetchall()
    for (pair,) in rows:
        m = _PAIR.match(pair)
        if m is None or m["dst"] not in paths or not (m["tag"] or "").startswith("age:"):
            continue
        yield pair, m


def _journal_evidence(m: re.Match[str]) -> str:
    src = f"{m['src']}:{m['sp']}".rstrip(":")
    where = f"{m['dst']}:{m['dp']}".rstrip(":")
    return f"the journal records age-encrypted copies from {src} to {where} that are still there"


def _above(dst: Endpoint) -> list[Endpoint]:
    """``dst`` and every prefix above it up to its store's root, nearest first."""
    parts = dst.prefix.rstrip("/").split("/") if dst.prefix else []
    return [dst] + [
        Endpoint(dst.store, "".join(f"{p}/" for p in parts[:n]), label=dst.store.name)
        for n in range(len(parts) - 1, -1, -1)
    ]


def _where(dst: Endpoint, at: Endpoint) -> str:
    """How evidence found at ``at`` (``dst`` or a prefix above it) is named."""
    if at.prefix == dst.prefix:
        return ""
    return f" at {dst.store.name}:{at.prefix}" if at.prefix else f" at the root of {dst.store.name}"


async def manifest_ciphertext(dst: Endpoint) -> str | None:
    """The newest manifest at the destination, or at a prefix above it, is encrypted: the last
    recorded copy there was."""
    for at in _above(dst):
        try:
            newest = await latest_manifest(at)
        except StoreError:
            continue
        if newest is not None and newest.endswith(".age"):
            name = newest[len(at.prefix) :]
            return f"its newest manifest{_where(dst, at)} {name} is age-encrypted"
    return None


# Manifests and name keys of copies below the destination prefix, in the plan's listing (keys
# relative to the destination prefix; its own `.daulat/` is not listed).
NESTED_MANIFEST = "*/.daulat/manifest-*.jsonl.age"
NESTED_NAME_KEY = f"*/{NAME_KEY_OBJECT}"


def listed_below(journal: Journal, pattern: str, what: str) -> str | None:
    """``what`` of a copy below the destination prefix, in the plan's ``dst`` listing, that the
    source does not bring along (a source may hold an earlier copy's files as data)."""
    journal.db.execute(
        "CREATE INDEX IF NOT EXISTS temp.src_dkey ON src (dkey) WHERE dkey IS NOT NULL"
    )
    row = journal.db.execute(
        "SELECT d.key FROM dst d WHERE d.key GLOB ? "
        "AND NOT EXISTS (SELECT 1 FROM src s WHERE s.key = d.key AND s.dkey IS NULL) "
        "AND NOT EXISTS (SELECT 1 FROM src s WHERE s.dkey = d.key) LIMIT 1",
        (pattern,),
    ).fetchone()
    if row is None:
        return None
    return f"{what} below it: {row[0]!r}"


async def metadata_ciphertext(dst: Endpoint, journal: Journal) -> str | None:
    """A few destination objects (the first by key, and the first the plan would replace)
    marked ``encryption: age`` by the daulat that wrote them."""
    first = journal.db.execute("SELECT key FROM dst ORDER BY key LIMIT ?", (METADATA_SAMPLE,))
    # Among the first planned objects only: a large plan into an unrelated destination must
    # not cost a lookup per object.
    replaced = journal.db.execute(
        "SELECT coalesce(w.dkey, w.key) FROM (SELECT * FROM work ORDER BY id LIMIT 10000) w "
        "WHERE EXISTS (SELECT 1 FROM dst d WHERE d.key = coalesce(w.dkey, w.key)) "
        "ORDER BY w.id LIMIT ?",
        (METADATA_SAMPLE,),
    )
    keys = dict.fromkeys(str(k) for (k,) in [*first.fetchall(), *replaced.fetchall()])
    return await _marked_age(dst, [dst.prefix + k for k in keys])


async def _marked_age(dst: Endpoint, keys: Sequence[str]) -> str | None:
    """The first of ``keys`` (full keys in the store) marked ``encryption: age``."""
    for key in keys:
        try:
            reader = await dst.store.get(key, start=0, end=1)
            await reader.read_all()
        except StoreError:
            continue
        if reader.metadata.get("encryption") == "age":
            shown = key[len(dst.prefix) :] if key.startswith(dst.prefix) else key
            return f"{shown!r} there is marked encryption: age"
    return None


# Listing pages read, at most, to find a few objects to sample (daulat's own files come first).
SAMPLE_PAGES = 3


async def _first_objects(dst: Endpoint, prefix: str) -> list[str]:
    """The first few keys under ``prefix`` that are not daulat's own files, from the first
    pages of a listing (never the whole of it)."""
    keys: list[str] = []
    pages = dst.store.list(prefix)
    try:
        for _ in range(SAMPLE_PAGES):
            batch = await anext(pages, None)
            if batch is None:
                break
            keys += [
                o.key
                for o in batch
                if DST_MANIFEST_PREFIX[:-1] not in o.key[len(prefix) :].split("/")
            ]
            if len(keys) >= METADATA_SAMPLE:
                break
    except StoreError:
        pass
    finally:
        close = getattr(pages, "aclose", None)
        if close is not None:
            with contextlib.suppress(StoreError):
                await close()
    return keys[:METADATA_SAMPLE]


async def first_objects_ciphertext(dst: Endpoint, prefix: str) -> str | None:
    return await _marked_age(dst, await _first_objects(dst, prefix))


async def root_metadata_ciphertext(dst: Endpoint) -> str | None:
    """The first objects of the destination's store (when the destination is a prefix of it)
    marked ``encryption: age``."""
    if not dst.prefix:
        return None
    found = await first_objects_ciphertext(dst, "")
    return f"{found} (at the root of {dst.store.name})" if found else None


async def names_protected(dst: Endpoint) -> str | None:
    """The destination, or a prefix above it, holds a name key; or the destination holds
    age ciphertext under stored names (its name key withheld)."""
    for at in _above(dst):
        try:
            if await has_protected_names(at):
                return f"it holds {NAME_KEY_OBJECT}{_where(dst, at)}"
        except StoreError:
            pass
    try:
        return await stored_names_evidence(dst)
    except StoreError:
        return None


def local_name_keys(state_dir: Path, dst: Endpoint) -> bool:
    """Whether this machine holds the name key of ``dst`` or of a prefix above it."""
    return any(local_key_path(state_dir, at).is_file() for at in _above(dst))
