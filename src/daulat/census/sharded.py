"""List a store in parallel shards, with exactly the result of one listing.

One listing of an object store is a chain of round trips (S3 and Azure answer 1,000 and 5,000
keys a page), so its speed is one page per round trip however fast the link is. Shards list
disjoint parts of the key space at the same time. :func:`sharded_list` yields the same objects
a single :meth:`~daulat.stores.base.Store.list` yields (in another order), each exactly once:

By key ranges, where the store lists in binary key order (:class:`~daulat.stores.ranges.RangeListing`)
    The key space is cut into ranges ``(lo, hi]`` that together cover every string. Each shard
    lists from ``start-after = lo`` and stops at its first key past ``hi``. The first cuts come
    from one delimiter page (the first level's names, when the level fits in a page); then
    whenever a worker is idle, the busy shard with the most key space left is split at the
    midpoint between the last key it listed and its ``hi`` (work stealing): ``(lo, hi]``
    becomes ``(lo, m]`` and ``(m, hi]``, and the first shard has listed nothing past ``m``
    yet, so no key is listed twice or lost at the cut. A shard checks that its keys arrive
    in strictly ascending order inside its range, so a server that breaks the order promise
    fails the listing instead of silently dropping keys.
By prefixes, elsewhere (:class:`~daulat.stores.ranges.LevelListing`)
    A walk of the key hierarchy: a delimiter listing of a prefix gives the objects directly
    under it and the prefixes one level down, each of which becomes a task of its own. Once
    enough tasks are queued to keep every worker busy, a task lists its prefix flat (every
    key below it) instead of walking further. Every key is under exactly one task, whatever
    order the server lists in; this is what S3-compatible servers of unknown make get
    (SeaweedFS lists in directory-tree order, where ``start-after`` is not exact), and what
    Azure gets (its continuation marker is opaque: no listing starts at a key).
Neither
    One plain listing (the filesystem: a local walk is bounded by the disk, not by round trips).

Memory stays flat: shards hand their pages to the caller through a queue of a few pages; the
prefix walk keeps the prefixes still to list (the "directories" of the top levels it walked,
not the objects).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from daulat.defaults import DEFAULT_SHARDS as DEFAULT_SHARDS
from daulat.errors import StoreError
from daulat.stores.base import ObjectInfo, Store
from daulat.stores.ranges import LevelListing, RangeListing, ordered_ranges

__all__ = [
    "DEFAULT_SHARDS",
    "ListingMode",
    "ListingStats",
    "list_sharded",
    "midpoint",
    "sharded_list",
]

# Work stealing stops splitting after this many shards per worker: each split costs at least
# one request, and an empty split (a cut past the last key) costs one for nothing.
_MAX_SHARDS_PER_WORKER = 64
# The prefix walk queues this many tasks per worker before it lists prefixes flat.
_TASKS_PER_WORKER = 4
# ... and never walks deeper than this below the listed prefix.
_MAX_DEPTH = 8
# A level whose first page holds fewer entries than this was seen whole (seeds for ranges).
_PAGE = 1000

Emit = Callable[[list[ObjectInfo]], Awaitable[None]]


class ListingMode(StrEnum):
    AUTO = "auto"
    RANGES = "ranges"
    PREFIXES = "prefixes"
    SINGLE = "single"


@dataclass
class ListingStats:
    """How a sharded listing went: the mode used, shards (or prefix tasks) listed, splits."""

    mode: ListingMode = ListingMode.SINGLE
    shards: int = 0
    splits: int = 0
    flat_tasks: int = 0
    level_tasks: int = 0
    objects: int = 0
    notes: list[str] = field(default_factory=list)


def resolve_mode(store: Store, shards: int, mode: ListingMode = ListingMode.AUTO) -> ListingMode:
    """The mode :func:`sharded_list` will use for ``store``."""
    if shards <= 1 or mode is ListingMode.SINGLE:
        return ListingMode.SINGLE
    if mode is ListingMode.RANGES:
        if not isinstance(store, RangeListing):
            raise StoreError(f"store {store.name!r} cannot list key ranges", store=store.name)
        return mode
    if mode is ListingMode.PREFIXES:
        if not isinstance(store, LevelListing):
            raise StoreError(f"store {store.name!r} cannot list by prefixes", store=store.name)
        return mode
    if ordered_ranges(store) is not None:
        return ListingMode.RANGES
    if isinstance(store, LevelListing):
        return ListingMode.PREFIXES
    return ListingMode.SINGLE


async def sharded_list(
    store: Store,
    prefix: str = "",
    *,
    shards: int = DEFAULT_SHARDS,
    mode: ListingMode = ListingMode.AUTO,
    stats: ListingStats | None = None,
) -> AsyncGenerator[list[ObjectInfo], None]:
    """Yield batches of every object under ``prefix`` exactly once, listed by up to
    ``shards`` listings at a time (see the module docstring). ``mode`` forces ranges or
    prefixes (ranges on a store whose order is not documented is for tests and benchmarks
    only); ``stats`` (if given) is filled in as the listing goes. Raises what the store's
    listings raise, and :class:`~daulat.errors.StoreError` when a server answers out of its
    own contract (keys out of order or outside the range asked for)."""
    stats = stats if stats is not None else ListingStats()
    chosen = resolve_mode(store, shards, mode)
    stats.mode = chosen
    if chosen is ListingMode.SINGLE:
        stats.shards = 1
        async for batch in store.list(prefix):
            stats.objects += len(batch)
            yield batch
        return

    queue: asyncio.Queue[list[ObjectInfo] | BaseException | None] = asyncio.Queue(2 * shards)

    async def emit(batch: list[ObjectInfo]) -> None:
        if batch:
            stats.objects += len(batch)
            await queue.put(batch)

    async def produce() -> None:
        try:
            if chosen is ListingMode.RANGES:
                assert isinstance(store, RangeListing)
                await _Ranges(store, prefix, shards, stats, emit).run()
            else:
                assert isinstance(store, LevelListing)
                await _Prefixes(store, prefix, shards, stats, emit).run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await queue.put(exc)
            return
        await queue.put(None)

    producer = asyncio.ensure_future(produce())
    try:
        while True:
            item = await queue.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
        await producer
    finally:
        if not producer.done():
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer


#: The same function under the name other modules were told to expect.
list_sharded = sharded_list


# ----------------------------------------------------------------------------- by prefixes


class _Prefixes:
    """The prefix walk (see the module docstring)."""

    def __init__(
        self, store: LevelListing, prefix: str, workers: int, stats: ListingStats, emit: Emit
    ) -> None:
        self.store = store
        self.name = getattr(store, "name", "?")
        self.workers = workers
        self.stats = stats
        self.emit = emit
        self.pending: deque[tuple[str, int]] = deque([(prefix, 0)])
        self.active = 0
        self.ready = asyncio.Condition()

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(self.workers):
                    tg.create_task(self.worker())
        except BaseExceptionGroup as group:
            # The first failure stops every worker; the caller gets it as the store raised it
            # (the others are the same outage, or cancellations it caused).
            raise _first(group) from None

    async def worker(self) -> None:
        while True:
            async with self.ready:
                while not self.pending and self.active:
                    await self.ready.wait()
                if not self.pending:
                    self.ready.notify_all()
                    return
                prefix, depth = self.pending.popleft()
                self.active += 1
                walk = (
                    len(self.pending) + self.active < self.workers * _TASKS_PER_WORKER
                    and depth < _MAX_DEPTH
                )
            try:
                if walk:
                    self.stats.level_tasks += 1
                    await self.level(prefix, depth)
                else:
                    self.stats.flat_tasks += 1
                    pages = self.flat(prefix)
                    try:
                        async for batch in pages:
                            await self.emit(batch)
                    finally:
                        # A store's listing may fetch ahead: stop it with the walk.
                        close = getattr(pages, "aclose", None)
                        if close is not None:
                            await close()
            finally:
                async with self.ready:
                    self.active -= 1
                    self.ready.notify_all()

    def flat(self, prefix: str) -> AsyncIterator[list[ObjectInfo]]:
        store: Store = self.store  # type: ignore[assignment]  # a LevelListing is a Store too
        return store.list(prefix)

    async def level(self, prefix: str, depth: int) -> None:
        seen: set[str] = set()
        async with contextlib.aclosing(self.store.list_level(prefix)) as pages:
            async for objects, prefixes in pages:
                for o in objects:
                    rest = o.key[len(prefix) :]
                    # The key equal to the prefix ("dir/", a folder marker) is this level's.
                    if not o.key.startswith(prefix) or "/" in rest or not o.key:
                        raise self.broken(
                            f"listed {o.key!r} as an object directly under {prefix!r}"
                        )
                fresh: list[tuple[str, int]] = []
                for p in prefixes:
                    name = p[len(prefix) : -1]
                    # Exactly one level down, each once: a server answering its own prefix
                    # back, or a deeper one, would loop or list keys twice.
                    if not p.startswith(prefix) or not p.endswith("/") or len(p) <= len(prefix):
                        raise self.broken(f"answered prefix {p!r} under {prefix!r}")
                    if "/" in name or p in seen:
                        raise self.broken(f"answered prefix {p!r} under {prefix!r} twice or deeper")
                    seen.add(p)
                    fresh.append((p, depth + 1))
                if fresh:
                    async with self.ready:
                        self.pending.extend(fresh)
                        self.ready.notify_all()
                await self.emit(objects)

    def broken(self, what: str) -> StoreError:
        return StoreError(
            f"store {self.name!r}: a delimiter listing {what}; it cannot be listed in shards "
            "(scan it with --shards 1)",
            store=self.name,
        )


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        return _first(exc) if isinstance(exc, BaseExceptionGroup) else exc
    return group


# ----------------------------------------------------------------------------- by key ranges


@dataclass(eq=False)
class _Shard:
    """Keys in ``(lo, hi]`` (None: unbounded); ``pos`` is the last key handed on."""

    lo: str | None
    hi: str | None
    pos: str | None = None
    splittable: bool = True
    # A shard is cut once before it lists anything (the first cuts know nothing of where the
    # keys are), and again only after it has listed half a page or more since its last cut:
    # evidence that its range is dense. Cutting a shard again and again while it waits for
    # its page would spawn shard after shard over space it is about to list, most of them
    # empty, each costing a request.
    was_cut: bool = False
    since_cut: int = 0

    @property
    def may_split(self) -> bool:
        return self.splittable and (not self.was_cut or self.since_cut >= _PAGE // 2)

    @property
    def start(self) -> str:
        return self.pos if self.pos is not None else (self.lo or "")


class _Ranges:
    """The key-range listing with work stealing (see the module docstring)."""

    def __init__(
        self, store: RangeListing, prefix: str, workers: int, stats: ListingStats, emit: Emit
    ) -> None:
        self.store = store
        self.name = getattr(store, "name", "?")
        self.prefix = prefix
        self.workers = workers
        self.stats = stats
        self.emit = emit

    async def run(self) -> None:
        cuts = await self.seeds()
        bounds: list[str | None] = [None, *cuts, None]
        todo = deque(_Shard(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1))
        running: dict[asyncio.Future[None], _Shard] = {}
        limit = self.workers * _MAX_SHARDS_PER_WORKER
        try:
            while todo or running:
                while todo and len(running) < self.workers:
                    self.start(todo.popleft(), running)
                while len(running) < self.workers and self.stats.shards < limit:
                    if not self.split(running):
                        break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    running.pop(task)
                    task.result()  # a failed shard fails the listing
        finally:
            for task in running:
                task.cancel()
            for task in running:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def start(self, shard: _Shard, running: dict[asyncio.Future[None], _Shard]) -> None:
        self.stats.shards += 1
        running[asyncio.ensure_future(self.list_shard(shard))] = shard

    def split(self, running: dict[asyncio.Future[None], _Shard]) -> bool:
        """Split the running shard with the most key space left; False when none can be."""
        candidates = [s for s in running.values() if s.may_split]
        if not candidates:
            return False
        victim = max(candidates, key=lambda s: _span(s.start, s.hi))
        cut = midpoint(victim.start, victim.hi)
        if cut is None:
            victim.splittable = False
            return True  # try the next one
        new = _Shard(cut, victim.hi)
        victim.hi = cut
        victim.was_cut, victim.since_cut = True, 0
        self.stats.splits += 1
        self.start(new, running)
        return True

    async def seeds(self) -> list[str]:
        """First cuts: evenly spaced names of the first level, when one delimiter page holds
        it whole (a level seen only in part would crowd every cut into its first page)."""
        if not isinstance(self.store, LevelListing):
            return []
        names: list[str] = []
        async with contextlib.aclosing(self.store.list_level(self.prefix)) as pages:
            async for objects, prefixes in pages:
                names = sorted({*(o.key for o in objects), *prefixes})
                break
        if not names or len(names) >= _PAGE:
            return []
        step = len(names) / self.workers
        cuts = sorted({names[int(step * i)] for i in range(1, self.workers) if int(step * i)})
        return [c for c in cuts if c > self.prefix]

    async def list_shard(self, shard: _Shard) -> None:
        end = None if shard.hi is None else shard.hi + "\x00"  # the first string past hi
        last = shard.lo
        async with contextlib.aclosing(
            self.store.list_range(self.prefix, start_after=shard.lo, end_before=end)
        ) as pages:
            async for batch in pages:
                out: list[ObjectInfo] = []
                stop = False
                for o in batch:
                    key = o.key
                    if not key.startswith(self.prefix) or (last is not None and key <= last):
                        raise StoreError(
                            f"store {self.name!r} listed {key!r} after {last!r}: its listing "
                            "is not in binary key order, so it cannot be listed in key ranges "
                            "(scan it with --shards 1)",
                            store=self.name,
                        )
                    if shard.hi is not None and key > shard.hi:
                        stop = True
                        break
                    out.append(o)
                    last = key
                # Before handing the page on (which may wait): a split from now on cuts
                # after these keys.
                shard.pos = last
                shard.since_cut += len(out)
                await self.emit(out)
                if stop or (shard.hi is not None and last is not None and last >= shard.hi):
                    return


def _span(start: str, hi: str | None) -> int:
    """The key space left between ``start`` and ``hi``, as a number (first 64 UTF-8 bytes,
    which order like the strings)."""

    def value(text: str) -> int:
        raw = text.encode("utf-8", "surrogatepass")[:64]
        return int.from_bytes(raw.ljust(64, b"\x00"), "big")

    top = 1 << (64 * 8) if hi is None else value(hi)
    return max(0, top - value(start))


def midpoint(lo: str, hi: str | None) -> str | None:
    """A short string ``m`` with ``lo < m < hi`` (``hi`` None: above every key), or None when
    no string lies between them. ``m`` is ``lo``'s common prefix with ``hi`` and one character
    half-way between theirs: printable ASCII where the two allow it, since a cut is sent to
    the server as ``start-after`` and some servers choke on control characters there. Work
    stealing refines a coarse cut by cutting again."""
    i = 0
    if hi is not None:
        while i < len(lo) and i < len(hi) and lo[i] == hi[i]:
            i += 1
        if i == len(hi):
            return None  # hi is lo or a prefix of it: nothing lies between
    low = ord(lo[i]) if i < len(lo) else -1
    high = 0x110000 if hi is None else ord(hi[i])
    c = _between(low, high)
    if c is not None:
        return lo[:i] + c
    if i == len(lo):  # lo is a prefix of hi, and hi's next character is NUL
        return lo + "\x00" if hi is not None and len(hi) > i + 1 else None
    # Adjacent characters: keep lo's, then anything above the rest of lo stays below hi.
    rest = midpoint(lo[i + 1 :], None)
    return None if rest is None else lo[: i + 1] + rest


def _between(low: int, high: int) -> str | None:
    """A character strictly between code points ``low`` and ``high``, near their middle:
    printable ASCII when that range overlaps theirs, never a surrogate."""
    a, b = max(low + 1, 0x21), min(high - 1, 0x7E)
    if a <= b:
        return chr((a + b) // 2)
    a, b = low + 1, high - 1
    if a > b:
        return None
    c = (a + b) // 2
    if 0xD800 <= c <= 0xDFFF:
        c = 0xE000 if b >= 0xE000 else (0xD7FF if a <= 0xD7FF else -1)
    return chr(c) if c >= 0 else None
