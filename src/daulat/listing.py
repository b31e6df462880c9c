"""Listing a store: what ``daulat ls`` and ``daulat size`` show, as a library.

:func:`list_entries` streams the objects under a prefix (every one, or one level like
``rclone lsf``: objects directly under the prefix and each "directory" once, as a common prefix
ending in ``/``); :func:`measure` counts them. Filters (:mod:`daulat.filters`) see each key
relative to the prefix; a directory is shown when at least one object below it passes them,
since on an object store a directory exists only through its objects.

daulat's own ``.daulat/`` objects are hidden unless ``reserved=True`` (``--all``), as ``ls``
hides dotfiles: they are not the user's data. daulat's own are those where daulat writes them:
``.daulat/`` at the store's root and at the listed prefix (a replica's manifests and
signatures, a drill's scratch copy), and the local state directory where it lies inside a
directory store (:func:`own_places`). A ``.daulat/`` directory deeper down
(``photos/.daulat/x.jpg``) is the user's, listed and counted like any other object, as copy
copies it. :func:`measure` counts what it hid, so a total never hides bytes.

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
from daulat.config import STATE_DIR, Config, StoreConfig
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
    "own_places",
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
    """Whether ``path`` lies in a ``.daulat/`` directory at any depth: where a copy into that
    prefix keeps its manifests. An opened store never writes there; listings hide only
    daulat's own places (:func:`own_places`), not every such directory."""
    return path.startswith(_RESERVED) or _RESERVED_BELOW in path


def own_places(config: Config | None, cfg: StoreConfig) -> tuple[str, ...]:
    """Key prefixes (from the store's root) that are daulat's own: ``.daulat/`` at the root,
    and, for a directory store that holds ``config``'s state directory, that directory."""
    places = [_RESERVED]
    if config is not None and cfg.scheme == "file":
        try:
            inside = config.state_dir.resolve().relative_to(cfg.path.resolve())
        except (ValueError, OSError):
            inside = None
        if inside is not None and inside.parts:
            places.append(inside.as_posix() + "/")
    return tuple(dict.fromkeys(places))


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
    own: tuple[str, ...] = (_RESERVED,),
) -> AsyncGenerator[Entry, None]:
    """Stream the objects under ``prefix`` that pass ``filter``, without daulat's own
    objects (``.daulat/`` at ``prefix``, and under ``own``: key prefixes from the store's root,
    see :func:`own_places`) unless ``reserved`` (see the module docstring)."""
    cut = len(prefix)
    seen_dirs: set[str] = set()
    active = filter.active
    async for batch in store.list(prefix):
        for info in batch:
            path = info.key[cut:]
            if not path:
                continue  # the prefix's own directory marker ("c1/" listing c1/): no name to show
            if not reserved and _is_own(info.key, path, own):
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


def _is_own(key: str, path: str, own: tuple[str, ...]) -> bool:
    """Whether object ``key`` (``path`` under the listed prefix) is daulat's own."""
    return path.startswith(_RESERVED) or key.startswith(own)


async def measure(
    store: Store,
    prefix: str = "",
    *,
    filter: Filter = EVERYTHING,
    reserved: bool = False,
    own: tuple[str, ...] = (_RESERVED,),
) -> SizeTotals:
    """Count the objects and bytes under ``prefix`` that pass ``filter``; daulat's own objects
    (see :func:`list_entries`) are counted apart (``reserved_*``) unless ``reserved``."""
    cut = len(prefix)
    objects = total = excluded = excluded_bytes = hidden = hidden_bytes = 0
    active = filter.active
    async for batch in store.list(prefix):
        for info in batch:
            if not reserved and _is_own(info.key, info.key[cut:], own):
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


async def named_object(
    store: Store, prefix: str, *, reserved: bool = False, own: tuple[str, ...] = (_RESERVED,)
) -> Entry | None:
    """The object an address's ``PREFIX`` names, when there is one: ``kpu:c1/a.jpg`` is parsed
    as the directory ``c1/a.jpg/``, but names the object ``c1/a.jpg`` too, which ``ls`` and
    ``size`` then show as rclone and ``aws s3 ls`` do. Its ``path`` is its own name (what
    filters match, as for an object listed in its directory). None when no such object exists,
    or it is daulat's own and ``reserved`` is false."""
    key = prefix[:-1]
    if not key or (not reserved and key.startswith(own)):
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
    cfg = config.store(name)
    own = own_places(config, cfg)
    store = open_store(cfg)
    try:
        named = (
            await named_object(store, prefix, reserved=reserved, own=own) if _bare(spec) else None
        )
        if named is not None and (not filter.active or filter.matches(named.path)):
            yield named
        entries = list_entries(
            store, prefix, recursive=recursive, filter=filter, reserved=reserved, own=own
        )
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
    cfg = config.store(name)
    own = own_places(config, cfg)
    store = open_store(cfg)
    try:
        totals = await measure(store, prefix, filter=filter, reserved=reserved, own=own)
        named = (
            await named_object(store, prefix, reserved=reserved, own=own) if _bare(spec) else None
        )
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
