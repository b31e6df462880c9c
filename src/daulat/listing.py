"""Listing a store: what ``daulat ls`` and ``daulat size`` show, as a library.

:func:`list_entries` streams the objects under a prefix (every one, or one level like
``rclone lsf``: objects directly under the prefix and each "directory" once, as a common prefix
ending in ``/``); :func:`measure` counts them. Filters (:mod:`daulat.filters`) see each key
relative to the prefix; a directory is shown when at least one object below it passes them,
since on an object store a directory exists only through its objects.

daulat's own ``.daulat/`` objects (a replica's manifests and signatures, a restore's, a local
state directory inside a store) are hidden at any depth unless ``reserved=True`` (``--all``), as
``ls`` hides dotfiles: they are not the user's data, and every copy, verify and restore already
treats them as reserved. :func:`measure` counts what it hid, so a total never hides bytes.

Memory stays flat: entries are yielded batch by batch as the store lists them, in the store's
order (S3 and Azure list in key order; the filesystem does not). The one-level view keeps the
set of directory names already shown, which is bounded by the number of distinct first-level
names, not by the number of objects.

:func:`ls` and :func:`size` take a configuration and a ``STORE[:PREFIX]`` address, open the store
and close it again; they are what the commands call. When ``PREFIX`` names an object
(``kpu:c1/a.jpg``), they show and count that object as well as anything under ``c1/a.jpg/``,
as ``rclone lsl`` and ``aws s3 ls`` do: a script asking ``daulat size STORE:KEY`` whether an
object is there gets one object, not "0 objects". A trailing slash (``kpu:c1/a.jpg/``) says
"directory": then only what is under it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from daulat.address import parse_address as address_of
from daulat.config import STATE_DIR, Config
from daulat.errors import InvalidKey, NotFound
from daulat.filters import EVERYTHING, Filter
from daulat.stores import Store, open_store

__all__ = [
    "Entry",
    "SizeTotals",
    "is_reserved",
    "list_entries",
    "ls",
    "measure",
    "named_object",
    "parse_address",
    "size",
]


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of a listing: an object, or (one-level view) a directory.

    ``key`` is the exact key in the store (for a directory, the common prefix ending in ``/``);
    ``path`` is the same relative to the listed prefix, which is what filters match.
    """

    key: str
    path: str
    size: int | None
    modified: datetime | None
    etag: str | None
    is_dir: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "path": self.path,
            "size": self.size,
            "modified": iso_utc(self.modified) if self.modified else None,
            "etag": self.etag,
            "is_dir": self.is_dir,
        }


@dataclass(frozen=True, slots=True)
class SizeTotals:
    """Objects and bytes under a prefix that pass the filter, and what the filter left out."""

    store: str
    prefix: str
    objects: int = 0
    bytes: int = 0
    excluded_objects: int = 0
    excluded_bytes: int = 0
    #: daulat's own ``.daulat/`` objects left out (0 when they were counted, ``reserved=True``).
    reserved_objects: int = 0
    reserved_bytes: int = 0
    #: The object the address named and that was counted too (``kpu:c1/a.jpg``), else None.
    object: str | None = None

    def to_json(self) -> dict[str, Any]:
        named = {} if self.object is None else {"object": self.object}
        return {
            "store": self.store,
            "prefix": self.prefix,
            **named,
            "objects": self.objects,
            "bytes": self.bytes,
            "excluded_objects": self.excluded_objects,
            "excluded_bytes": self.excluded_bytes,
            "reserved_objects": self.reserved_objects,
            "reserved_bytes": self.reserved_bytes,
        }


_RESERVED = STATE_DIR + "/"
_RESERVED_BELOW = "/" + _RESERVED


def is_reserved(path: str) -> bool:
    """Whether ``path`` (a key relative to the listed prefix) lies in a ``.daulat/`` directory
    at any depth: daulat's reserved namespace at a replica, or a local state directory."""
    return path.startswith(_RESERVED) or _RESERVED_BELOW in path


def iso_utc(moment: datetime, *, timespec: str = "auto") -> str:
    """``moment`` in UTC as ISO 8601 with a ``Z`` (a naive time is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_address(spec: str) -> tuple[str, str]:
    """``STORE`` or ``STORE:PREFIX`` → (store name, prefix empty or ending in ``/``).

    The prefix is a directory, as for copy and sync: ``kpu:c1`` and ``kpu:/c1/`` both list the
    keys under ``c1/``. Parsed by :func:`daulat.address.parse_address`, which refuses prefixes
    such as ``../etc`` (:class:`ConfigError`).
    """
    address = address_of(spec)
    return address.store, address.prefix


async def list_entries(
    store: Store,
    prefix: str = "",
    *,
    recursive: bool = False,
    filter: Filter = EVERYTHING,
    reserved: bool = False,
) -> AsyncGenerator[Entry, None]:
    """Stream the objects under ``prefix`` that pass ``filter``, without daulat's ``.daulat/``
    objects unless ``reserved`` (see the module docstring)."""
    cut = len(prefix)
    seen_dirs: set[str] = set()
    active = filter.active
    async for batch in store.list(prefix):
        for info in batch:
            path = info.key[cut:]
            if not path:
                continue  # the prefix's own directory marker ("c1/" listing c1/): no name to show
            if not reserved and is_reserved(path):
                continue
            if active and not filter.matches(path):
                continue
            slash = -1 if recursive else path.find("/")
            if slash < 0:
                yield Entry(info.key, path, info.size, info.modified, info.etag)
                continue
            name = path[: slash + 1]
            if name not in seen_dirs:
                seen_dirs.add(name)
                yield Entry(prefix + name, name, None, None, None, is_dir=True)


async def measure(
    store: Store, prefix: str = "", *, filter: Filter = EVERYTHING, reserved: bool = False
) -> SizeTotals:
    """Count the objects and bytes under ``prefix`` that pass ``filter``; daulat's ``.daulat/``
    objects are counted apart (``reserved_*``) unless ``reserved``."""
    cut = len(prefix)
    objects = total = excluded = excluded_bytes = hidden = hidden_bytes = 0
    active = filter.active
    async for batch in store.list(prefix):
        for info in batch:
            if not reserved and is_reserved(info.key[cut:]):
                hidden += 1
                hidden_bytes += info.size
            elif active and not filter.matches(info.key[cut:]):
                excluded += 1
                excluded_bytes += info.size
            else:
                objects += 1
                total += info.size
    return SizeTotals(
        store.name, prefix, objects, total, excluded, excluded_bytes, hidden, hidden_bytes
    )


async def named_object(store: Store, prefix: str, *, reserved: bool = False) -> Entry | None:
    """The object an address's ``PREFIX`` names, when there is one: ``kpu:c1/a.jpg`` is parsed
    as the directory ``c1/a.jpg/``, but names the object ``c1/a.jpg`` too, which ``ls`` and
    ``size`` then show as rclone and ``aws s3 ls`` do. Its ``path`` is its own name (what
    filters match, as for an object listed in its directory). None when no such object exists,
    or it is daulat's own and ``reserved`` is false."""
    key = prefix[:-1]
    if not key or (not reserved and is_reserved(key)):
        return None
    try:
        info = await store.head(key)
    except (NotFound, InvalidKey):
        return None
    return Entry(info.key, key.rsplit("/", 1)[-1], info.size, info.modified, info.etag)


def _bare(spec: str) -> bool:
    """Whether an address may name an object: ``kpu:c1/a.jpg`` may, ``kpu:c1/a.jpg/`` (a
    directory, said so by its trailing slash) does not."""
    return not spec.endswith("/")


async def ls(
    config: Config,
    spec: str,
    *,
    recursive: bool = False,
    filter: Filter = EVERYTHING,
    reserved: bool = False,
) -> AsyncGenerator[Entry, None]:
    """:func:`list_entries` of the configured store ``STORE[:PREFIX]``, led by the object that
    ``PREFIX`` names when there is one (:func:`named_object`; a directory of that name is
    listed too); closes the store when the iteration ends (consume it fully, or close it with
    ``contextlib.aclosing``)."""
    name, prefix = parse_address(spec)
    store = open_store(config.store(name))
    try:
        named = await named_object(store, prefix, reserved=reserved) if _bare(spec) else None
        if named is not None and (not filter.active or filter.matches(named.path)):
            yield named
        entries = list_entries(store, prefix, recursive=recursive, filter=filter, reserved=reserved)
        async for entry in entries:
            yield entry
    finally:
        await store.close()


async def size(
    config: Config, spec: str, *, filter: Filter = EVERYTHING, reserved: bool = False
) -> SizeTotals:
    """:func:`measure` of the configured store ``STORE[:PREFIX]``, counting the object that
    ``PREFIX`` names too when there is one (:func:`named_object`)."""
    name, prefix = parse_address(spec)
    store = open_store(config.store(name))
    try:
        totals = await measure(store, prefix, filter=filter, reserved=reserved)
        named = await named_object(store, prefix, reserved=reserved) if _bare(spec) else None
    finally:
        await store.close()
    if named is None or named.size is None:
        return totals
    if filter.active and not filter.matches(named.path):
        return replace(
            totals,
            excluded_objects=totals.excluded_objects + 1,
            excluded_bytes=totals.excluded_bytes + named.size,
        )
    return replace(
        totals, objects=totals.objects + 1, bytes=totals.bytes + named.size, object=named.key
    )
