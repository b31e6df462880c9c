"""One gateway bucket: its replicas, what version of a key is current, and its listing.

Why this module is long: which replica may serve a key and which keys a listing may show are
one judgement (the primary's answers, the journal, the signed manifests, what the primary
was last seen holding), made on the state one :class:`Bucket` keeps; split in two, each half
would have to reach into the other's state. The replicas' records, reads and health are in
:mod:`.replicas`, :mod:`.reading` and :mod:`.health`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from daulat.crypto import Identity
from daulat.errors import InvalidKey, MissingRoot, NotFound, StoreError
from daulat.gateway.config import BucketConfig
from daulat.gateway.health import Health, answered, refused_access
from daulat.gateway.reading import Unavailable, describe
from daulat.gateway.replicas import (
    JournalView,
    ManifestIndex,
    Record,
    Replica,
    Source,
    Version,
    etag_of,
    unverified_etag,
)
from daulat.gateway.s3xml import Listed
from daulat.stores.base import ObjectInfo, Store
from daulat.stores.s3raw import FallbackS3Store
from daulat.transfer.manifests import DST_MANIFEST_PREFIX

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _when(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return EPOCH
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def hidden(key: str) -> bool:
    """daulat's own files beside the data are never served or listed."""
    return key.startswith(DST_MANIFEST_PREFIX)


def _odd(key: str) -> bool:
    """Whether ``key`` has an empty, ``.`` or ``..`` segment (a trailing ``/`` aside): a key
    some servers normalise into another one."""
    return any(s in ("", ".", "..") for s in key.removesuffix("/").split("/"))


def _normalised(key: str) -> str:
    """``key`` as a path-normalising server takes it (``a//b`` → ``a/b``, ``a/./b`` and
    ``x/../a/b`` → ``a/b``, climbing no higher than the root)."""
    out: list[str] = []
    for segment in key.removesuffix("/").split("/"):
        if segment == "..":
            if out:
                out.pop()
        elif segment not in ("", "."):
            out.append(segment)
    return "/".join(out) + ("/" if key.endswith("/") and out else "")


def _climbs(key: str) -> bool:
    """Whether a ``..`` of ``key`` climbs above its root."""
    depth = 0
    for segment in key.split("/"):
        depth += -1 if segment == ".." else (0 if segment in ("", ".") else 1)
        if depth < 0:
            return True
    return False


async def _first_page(replica: Replica) -> None:
    """List one page of ``replica``'s address (raises what listing raises)."""
    store, base = replica.store, replica.address.prefix
    batches: AsyncIterator[list[ObjectInfo]]
    if isinstance(store, FallbackS3Store):
        batches = store.list_after(base, "", first_page=1)
    else:
        batches = store.list(base)
    async with contextlib.aclosing(batches) as pages:  # type: ignore[type-var]
        async for _ in pages:
            return


def _raw(store: Store) -> object:
    """The botocore client of an S3 store (its ``prefix`` is the store's own), else None."""
    return store.raw if isinstance(store, FallbackS3Store) else None


class Findings(Protocol):
    """Where the bucket reports what it finds about replicas (the audit log)."""

    def withheld(self, version: Version, source: Source) -> None: ...

    def stale(self, key: str, primary: str, etag: str) -> None: ...


@dataclass
class Page:
    contents: list[Listed]
    prefixes: list[str]
    truncated: bool
    last: str  # the last key or common prefix returned ('' when none)
    last_is_prefix: bool = False


class Bucket:
    def __init__(
        self,
        cfg: BucketConfig,
        stores: dict[str, Store],
        journal: JournalView,
        manifests: ManifestIndex,
        health: Health,
        identities: Sequence[Identity],
        quarantined: set[tuple[str, str, str]],
        findings: Findings,
    ) -> None:
        self.name = cfg.name
        self.replicas = [
            Replica(a, stores[a.store], primary=i == 0) for i, a in enumerate(cfg.replicas)
        ]
        self.journal, self.manifests, self.health = journal, manifests, health
        self.identities = identities
        # (replica, key, sha256) found holding other bytes than recorded: never read again.
        self.quarantined = quarantined
        self.findings = findings
        # Keys the primary was seen holding in a version no replica holds verified (changed
        # since the last copy) → the primary's ETag then: while the primary is down these get
        # 503, never the older copies (a silent rollback). At most one entry per key of the
        # primary that changed since its copy; dropped when the primary's version is copied.
        self.changed: dict[str, str] = {}

    def is_quarantined(self, source: Source, version: Version) -> bool:
        return (source.replica.name, source.key, version.sha256 or "") in self.quarantined

    @property
    def primary(self) -> Replica:
        return self.replicas[0]

    @property
    def others(self) -> list[Replica]:
        return self.replicas[1:]

    def _usable(self, r: Record) -> bool:
        if r.encrypted and not self.identities:
            return False
        return (r.replica.name, r.stored_key, r.sha256) not in self.quarantined

    async def primary_head(self, key: str) -> ObjectInfo | None:
        """The primary's description of ``key``, or None when it does not answer.
        :class:`NotFound` when it answers that the key is not there."""
        p = self.primary
        if not self.health.usable(p.name):
            return None
        odd = _odd(key)
        if odd and _climbs(key) and (p.address.prefix or getattr(_raw(p.store), "prefix", "")):
            # Normalised, it would name a key outside the primary's prefix.
            raise InvalidKey(f"key {key!r} climbs out of the bucket with '..': refused", key=key)
        try:
            info = await self.health.within(p.name, p.store.head(p.address.prefix + key))
            if odd and await self._aliased(key, info):
                self.health.succeeded(p.name)
                raise InvalidKey(
                    f"the primary {p.name} answers for key {key!r} with the object of "
                    f"{_normalised(key)!r} (its server normalises such keys): refused",
                    key=key,
                )
        except InvalidKey:  # an answer about this key, never about the primary
            self.health.succeeded(p.name)
            raise
        except NotFound:
            # A store that is gone answers "not found" for every key (a directory store whose
            # root vanished; an S3 HEAD cannot tell a deleted bucket from a missing key): it is
            # down, never a reason to tell clients that their data does not exist.
            if not await self._primary_present():
                return None
            self.health.succeeded(p.name)
            raise NotFound(f"no such key {key!r}", key=key) from None
        except TimeoutError:
            self.health.timed_out(p.name, f"head {key!r}")
            return None
        except Exception as exc:
            if answered(exc):  # a 400 for this key: an answer, not a failure of the primary
                self.health.succeeded(p.name)
                raise InvalidKey(
                    f"the primary {p.name} refused key {key!r} as invalid", key=key
                ) from None
            self._primary_failed(exc)
            return None
        self.health.succeeded(p.name)
        return info

    async def probe(self, replica: Replica) -> None:
        """The background probe of a half-open replica (see :mod:`.health`): is the primary
        there (as :meth:`_primary_present` judges it), does another replica list a page?
        Within the store's ``request_timeout``; the outcome goes to the replica's circuit."""
        if replica.primary:
            if await self._primary_present():
                self.health.succeeded(replica.name)
            return
        try:
            await self.health.within(replica.name, _first_page(replica))
        except TimeoutError:
            self.health.timed_out(replica.name, "listing")
        except (StoreError, OSError) as exc:
            self.health.failed(
                replica.name,
                describe(exc),
                revoked=refused_access(exc),
                gone=isinstance(exc, MissingRoot),
            )
        else:
            self.health.succeeded(replica.name)

    async def _aliased(self, key: str, info: ObjectInfo) -> bool:
        """Whether the primary answered for ``key`` (which has an empty, ``.`` or ``..``
        segment) with the object of its normalised form: SeaweedFS serves ``a//b`` as ``a/b``
        (and lists it so, when asked with that prefix). A server that keeps such keys, as
        AWS does, holds them apart: the normalised key is missing or another object."""
        normal = _normalised(key)
        if not normal or normal == key:
            return False
        try:
            other = await self.primary.store.head(self.primary.address.prefix + normal)
        except StoreError:
            return False
        return (other.size, other.etag, other.modified) == (info.size, info.etag, info.modified)

    async def _primary_present(self) -> bool:
        """Whether the primary is there to ask (False: it is marked down, audited)."""
        return await self.present(self.primary)

    async def present(self, replica: Replica) -> bool:
        """Whether ``replica`` is there to ask (False: it is marked down, audited).

        It is not when listing its address fails: a directory store's root or an S3 bucket
        gone (marked down at once), or no answer. Nor when its address holds no object at all
        while copies of objects are recorded as verified (for the primary: copies of its
        objects; for a replica: copies in it; this machine's journal, the replicas' signed
        manifests): see :meth:`_holds_nothing`."""
        try:
            if not await self.health.within(replica.name, self._holds_nothing(replica)):
                return True
        except (StoreError, OSError) as exc:
            self._failed(replica, exc)
            return False
        if not self._copies_recorded(replica):
            return True
        self.health.failed(
            replica.name,
            f"{replica.name} holds no object, yet verified copies of "
            f"{'its objects' if replica.primary else 'objects in it'} are recorded: "
            "taken to be gone (a vanished directory or prefix), not emptied",
            gone=True,
        )
        return False

    async def answering(self) -> list[Replica]:
        """The replicas other than the primary that are there to ask now (each is listed: a
        vanished one is marked down, audited); :class:`Unavailable` when none is, so that a
        listing nobody could serve is a 503, not a listing from memory."""
        out: list[Replica] = []
        errors: list[str] = []
        for r in self.others:
            if not self.health.usable(r.name):
                last = self.health.circuit(r.name).last_error
                errors.append(f"{r.name}: down" + (f" ({last})" if last else ""))
            elif await self.present(r):
                self.health.succeeded(r.name)
                out.append(r)
            else:
                errors.append(f"{r.name}: down ({self.health.circuit(r.name).last_error})")
        if not out:
            raise Unavailable(
                f"the primary {self.primary.name} does not answer and no replica does: "
                + "; ".join(errors)
            )
        return out

    def unavailable(self, version: Version, exc: Unavailable) -> Unavailable:
        """A read no source could serve, its message naming the primary too where the read
        never asked it (it was down when the version was resolved): the 503 names each
        replica and why."""
        p = self.primary
        if any(s.replica.name == p.name for s in version.sources):
            return exc
        last = self.health.circuit(p.name).last_error
        head = "no replica could serve the object: "
        rest = str(exc).removeprefix(head)
        return Unavailable(f"{head}{p.name}: down" + (f" ({last})" if last else "") + f"; {rest}")

    async def missing(self, source: Source, version: Version) -> str:
        """``source`` answered that it does not hold the object: say why, for the 503's
        message. A replica that is gone is marked down; one that is there yet lacks an object
        it is recorded to hold verified withholds it (audited, not asked for it again)."""
        replica = source.replica
        if not await self.present(replica):
            return f"down ({self.health.circuit(replica.name).last_error})"
        self.health.succeeded(replica.name)
        if replica.primary:
            return "the primary no longer holds it"
        self.findings.withheld(version, source)
        return "withholds it: the object is missing, yet a verified copy of it is recorded"

    async def _holds_nothing(self, replica: Replica) -> bool:
        """Whether the replica's address holds no object (daulat's own files aside); raises
        what listing it raises.

        Why "holds nothing" with recorded copies counts as gone: a directory store's root is
        checked by the store itself (MissingRoot), but a prefix below it is a directory that
        may vanish while the root stays (a volume unmounted from ``root/sub``; an unmounted
        volume at the root itself leaves its mount point, an empty directory), and an S3
        prefix never "exists" at all: a bucket whose prefix was wiped, or a provider that
        answers empty listings, looks exactly like a prefix that holds nothing. Served as
        such, every client would be told that its data does not exist (NoSuchKey, empty
        listings), the very outage the gateway is there to prevent. The cost of the other
        mistake is small and visible: an address its owner emptied on purpose keeps being
        served from the replicas' verified copies, with the primary shown down in the audit
        log, ``daulat stores`` and the report, until the bucket's replicas are changed. A
        primary that still holds any object is believed when it says one key is missing."""
        store, base = replica.store, replica.address.prefix
        batches: AsyncIterator[list[ObjectInfo]]
        if isinstance(store, FallbackS3Store):
            # A page of two keys: a small request (the first keys may be daulat's own).
            batches = store.list_after(base, "", first_page=2)
        else:
            batches = store.list(base)
        try:
            async for batch in batches:
                if any(not hidden(o.key[len(base) :]) for o in batch):
                    return False
        finally:
            close = getattr(batches, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        return True

    def _copies_recorded(self, replica: Replica) -> bool:
        """Whether a verified copy of any object is recorded: of the primary's objects (in any
        replica) for the primary, else in ``replica``."""
        targets = self.others if replica.primary else [replica]
        journal = self.journal.keys(self.primary.address, targets, "")
        if next(journal, None) is not None:
            return True
        return next(self.manifests.keys(targets, ""), None) is not None

    def _failed(self, replica: Replica, exc: BaseException) -> None:
        if answered(exc):
            return
        if isinstance(exc, TimeoutError):
            self.health.timed_out(replica.name, "listing")
            return
        self.health.failed(
            replica.name,
            describe(exc),
            revoked=refused_access(exc),
            gone=isinstance(exc, MissingRoot),
        )

    def note_failure(self, replica: Replica, exc: BaseException) -> None:
        """A request to ``replica`` failed (a write, say): its health hears of it as of any."""
        self._failed(replica, exc)

    def _primary_failed(self, exc: BaseException) -> None:
        self._failed(self.primary, exc)

    async def resolve(self, key: str) -> Version:
        """The current version of ``key`` and the replicas that hold it verified, in order.
        :class:`NotFound` (404) or :class:`Unavailable` (503)."""
        if hidden(key):
            raise NotFound(f"no such key {key!r}", key=key)
        info = await self.primary_head(key)
        if info is not None:
            return self._current(key, info)
        return self._remembered(key)

    def _current(self, key: str, info: ObjectInfo) -> Version:
        p = self.primary
        known = [
            r for replica in self.others for r in self.journal.records(p.address, replica, key)
        ]
        records = [
            r
            for r in known
            if r.src_size == info.size and r.src_etag == info.etag and r.size == info.size
        ]
        primary = Source(p, p.address.prefix + key)
        self._note_primary(key, info.etag, info.size, bool(records), bool(known))
        if not records:
            return Version(
                key, info.size, info.modified, unverified_etag(info), None, sources=[primary]
            )
        ref = records[0]
        agree = [r for r in records if r.sha256 == ref.sha256 and r.chunks == ref.chunks]
        return Version(
            key,
            ref.size,
            info.modified,
            etag_of(ref.sha256),
            ref.sha256,
            ref.chunk_size,
            ref.chunks,
            [primary, *self._sources(agree)],
        )

    def _note_primary(
        self, key: str, etag: str | None, size: int, copied: bool, journaled: bool
    ) -> None:
        """Remember whether the primary holds a version of ``key`` no replica holds verified:
        copies of it are recorded (journal), none of this version; or a signed manifest's copy
        has another size. (Without either, the primary's version may well be the copy's.)"""
        if copied:
            self.changed.pop(key, None)
            return
        differs = journaled or any(
            rec is not None and rec.size != size
            for rec in (self.manifests.record(r, key) for r in self.others)
        )
        if differs:
            self.changed[key] = etag or ""

    def _sources(self, records: Sequence[Record]) -> list[Source]:
        seen: set[str] = set()
        out = []
        for r in records:
            if r.replica.name in seen or not self._usable(r):
                continue
            seen.add(r.replica.name)
            out.append(Source(r.replica, r.stored_key, r.encrypted))
        return out

    def _remembered(self, key: str) -> Version:
        """The primary does not answer: the newest content the journal recorded for the key,
        else what the replicas' signed manifests say, in preference order. :class:`Unavailable`
        when this gateway saw the primary hold a newer version than the copies."""
        p = self.primary
        if key in self.changed:
            self.findings.stale(key, p.name, self.changed[key])
            raise Unavailable(
                f"the primary {p.name} does not answer, and it held a newer version of {key!r} "
                "than any replica holds verified: older copies are not served in its place"
            )
        journal = [
            r for replica in self.others for r in self.journal.records(p.address, replica, key)
        ]
        signed = [
            rec
            for replica in self.others
            if (rec := self.manifests.record(replica, key)) is not None
        ]
        if journal:
            ref = max(journal, key=lambda r: r.updated)
        elif signed:
            ref = signed[0]
        else:
            raise Unavailable(
                f"the primary {p.name} does not answer and no replica is known to hold {key!r}"
            )
        # Per replica, its journal row if any, else its manifest entry.
        by_replica: dict[str, Record] = {}
        for r in journal + signed:
            by_replica.setdefault(r.replica.name, r)
        agree = [
            by_replica[r.name]
            for r in self.others
            if r.name in by_replica
            and by_replica[r.name].sha256 == ref.sha256
            and by_replica[r.name].chunks == ref.chunks
        ]
        sources = self._sources(agree)
        if not sources:
            found = [
                f"{r.replica.name}: its copy was found altered or missing, not read again"
                for r in agree
                if (r.replica.name, r.stored_key, r.sha256) in self.quarantined
            ]
            raise Unavailable(
                f"no replica that answers holds a verified copy of {key!r}"
                + (": " + "; ".join(found) if found else "")
            )
        return Version(
            key,
            ref.size,
            _when(ref.updated),
            etag_of(ref.sha256),
            ref.sha256,
            ref.chunk_size,
            ref.chunks,
            sources,
        )

    # ------------------------------------------------------------------ listing

    async def _fill(self, db: sqlite3.Connection, prefix: str) -> bool:
        """Everything under ``prefix`` into ``db``: from the primary while it answers (True),
        else from the journal and the signed manifests (False)."""
        p = self.primary
        if self.health.usable(p.name):
            listed = 0
            try:
                async for batch in p.store.list(p.address.prefix + prefix):
                    rows = []
                    for o in batch:
                        key = o.key[len(p.address.prefix) :]
                        if hidden(key) or not key.startswith(prefix):
                            continue
                        rows.append(
                            (key, o.size, o.modified.isoformat(), o.etag, unverified_etag(o))
                        )
                    db.executemany("INSERT OR REPLACE INTO listed VALUES (?, ?, ?, ?, ?)", rows)
                    listed += len(rows)
            except (StoreError, OSError) as exc:  # MissingRoot too: gone, not empty
                self._primary_failed(exc)
                db.execute("DELETE FROM listed")
            else:
                # Nothing under the prefix asked for: is the primary itself still there?
                if listed or await self._primary_present():
                    self.health.succeeded(p.name)
                    return True
        replicas = await self.answering()
        if not self.vouched(replicas):
            raise Unavailable(
                f"the primary {p.name} does not answer and no replica holds a verified copy of "
                "any of its objects (journal, signed manifests): a listing would be a guess"
            )
        unvouched = sorted(k for k in self.changed if k.startswith(prefix))
        failed, first = self.journal.unvouched(p.address, replicas, prefix)
        if failed and not unvouched:
            unvouched = [first or ""]
        if unvouched:
            # The records would list these keys as they were copied, or not at all; a mirroring
            # client (aws s3 sync --delete) would then delete what only the primary holds.
            raise Unavailable(
                f"the primary {p.name} does not answer, and it was seen holding "
                f"{max(len(unvouched), failed):,} object(s) here that no replica holds "
                f"verified (first: {unvouched[0]!r}): a listing without them would be wrong"
            )
        newest: dict[str, tuple[str, int, str]] = {}
        for key, size, sha, updated in self.journal.keys(p.address, replicas, prefix):
            if not hidden(key) and (key not in newest or updated > newest[key][0]):
                newest[key] = (updated, size, sha)
            if len(newest) >= 10000:
                self._flush(db, newest)
        self._flush(db, newest)
        for key, size, sha, copied in self.manifests.keys(replicas, prefix):
            if not hidden(key):
                db.execute(
                    "INSERT OR IGNORE INTO listed VALUES (?, ?, ?, NULL, ?)",
                    (key, size, _when(copied).isoformat(), etag_of(sha)),
                )
        return False

    def vouched(self, replicas: Sequence[Replica]) -> bool:
        """Whether any of ``replicas`` holds a verified copy of any object of the primary
        (journal or signed manifest), anywhere in the bucket. Without one, a listing made
        without the primary would be empty by ignorance, and an empty 200 tells mirroring
        clients (``aws s3 sync --delete``) that the bucket is empty: they delete their copies.
        With one, an empty prefix is what the records say."""
        journal = self.journal.keys(self.primary.address, replicas, "")
        if next(journal, None) is not None:
            return True
        return next(self.manifests.keys(replicas, ""), None) is not None

    @staticmethod
    def _flush(db: sqlite3.Connection, newest: dict[str, tuple[str, int, str]]) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO listed VALUES (?, ?, ?, NULL, ?)",
            [(k, s, _when(u).isoformat(), etag_of(h)) for k, (u, s, h) in newest.items()],
        )
        newest.clear()

    async def page(
        self, prefix: str, delimiter: str, after: str, after_prefix: bool, max_keys: int
    ) -> Page:
        """One page of the sorted listing: keys (and common prefixes) after ``after``
        (``after_prefix``: ``after`` is a common prefix, so none of its keys)."""
        page = await self._page_from_primary(prefix, delimiter, after, after_prefix, max_keys)
        if page is not None:
            return page
        db = sqlite3.connect("")  # a private temporary database: spills to disk when large
        try:
            db.execute(
                "CREATE TABLE listed (key TEXT PRIMARY KEY, size INTEGER, modified TEXT, "
                "src_etag TEXT, etag TEXT)"
            )
            from_primary = await self._fill(db, prefix)
            return self._select(db, prefix, delimiter, after, after_prefix, max_keys, from_primary)
        finally:
            db.close()

    async def _page_from_primary(
        self, prefix: str, delimiter: str, after: str, after_prefix: bool, max_keys: int
    ) -> Page | None:
        """The page straight from the primary's sorted listing, started after ``after`` (S3's
        start-after), so that a page costs about a page of listing however deep it is. None
        when the primary cannot list that way or does not answer (then the caller lists the
        prefix into a temporary table, from the journal and manifests if need be)."""
        p = self.primary
        store = p.store
        if not isinstance(store, FallbackS3Store) or not self.health.usable(p.name):
            return None
        base = p.address.prefix
        contents: list[Listed] = []
        prefixes: list[str] = []
        last, last_is_prefix = "", False
        start = after if after > prefix else ""
        # Keys under a common prefix already listed (or the token's) are passed over; when a
        # request's keys end inside it, the listing starts again past it (S3 rolls such keys
        # up itself only when asked with a delimiter, which daulat's S3 listing does not use).
        skipping = after if after_prefix and after else None
        try:
            # One page is about one request: the store's request_timeout bounds it.
            async with asyncio.timeout(self.health.limit(p.name)):
                while True:
                    restart = False
                    if skipping is not None:
                        start = max(start, skipping + _PAST)
                    room = max_keys - len(contents) - len(prefixes)
                    listing = contextlib.aclosing(
                        store.list_after(
                            base + prefix,
                            base + start if start else "",
                            first_page=min(1000, room + 1),
                        )
                    )
                    async with listing as pages:
                        async for batch in pages:
                            for o in batch:
                                key = o.key[len(base) :]
                                if (start and key <= start) or not key.startswith(prefix):
                                    continue
                                if hidden(key) or (
                                    skipping is not None and key.startswith(skipping)
                                ):
                                    continue
                                if len(contents) + len(prefixes) >= max_keys:
                                    self.health.succeeded(p.name)
                                    return Page(contents, prefixes, True, last, last_is_prefix)
                                cut = key.find(delimiter, len(prefix)) if delimiter else -1
                                if cut >= 0:
                                    common = key[: cut + len(delimiter)]
                                    prefixes.append(common)
                                    last, last_is_prefix, skipping = common, True, common
                                    continue
                                etag = self._listed_etag(key, o.size, o.etag, unverified_etag(o))
                                contents.append(Listed(key, o.size, o.modified, etag))
                                last, last_is_prefix = key, False
                            tail = batch[-1].key[len(base) :] if batch else ""
                            if skipping is not None and tail.startswith(skipping):
                                restart = True
                                break
                    if not restart:
                        break
        except (StoreError, OSError) as exc:
            self._primary_failed(exc)
            return None
        # An empty first page: is the primary itself still there (else the caller lists what
        # the journal and the manifests record)?
        if not (contents or prefixes or after) and not await self._primary_present():
            return None
        self.health.succeeded(p.name)
        return Page(contents, prefixes, False, last, last_is_prefix)

    def _select(
        self,
        db: sqlite3.Connection,
        prefix: str,
        delimiter: str,
        after: str,
        after_prefix: bool,
        max_keys: int,
        from_primary: bool,
    ) -> Page:
        contents: list[Listed] = []
        prefixes: list[str] = []
        low, inclusive = (after, False) if after else (prefix, True)
        if after_prefix and after:
            low, inclusive = _successor(after), True
        last, last_is_prefix = "", False
        while True:
            op = ">=" if inclusive else ">"
            row = db.execute(
                f"SELECT key, size, modified, src_etag, etag FROM listed WHERE key {op} ? "
                "ORDER BY key LIMIT 1",
                (low,),
            ).fetchone()
            if row is None or not row[0].startswith(prefix):
                return Page(contents, prefixes, False, last, last_is_prefix)
            if len(contents) + len(prefixes) >= max_keys:
                return Page(contents, prefixes, True, last, last_is_prefix)
            key, size, modified, src_etag, etag = row
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                common = key[: cut + len(delimiter)]
                prefixes.append(common)
                last, low, inclusive = common, _successor(common), True
                last_is_prefix = True
                continue
            if from_primary:
                etag = self._listed_etag(key, size, src_etag, etag)
            contents.append(Listed(key, size, _when(modified), etag))
            last, low, inclusive = key, key, False
            last_is_prefix = False

    def _listed_etag(self, key: str, size: int, src_etag: str | None, fallback: str) -> str:
        p = self.primary
        journaled = False
        for replica in self.others:
            for r in self.journal.records(p.address, replica, key):
                journaled = True
                if r.src_size == size and r.src_etag == src_etag and r.size == size:
                    self.changed.pop(key, None)
                    return etag_of(r.sha256)
        if journaled:  # copied once, changed since: see _note_primary
            self.changed[key] = src_etag or ""
        elif not any(self.manifests.record(r, key) is not None for r in self.others):
            self.changed[key] = src_etag or ""  # never copied: only the primary holds it
        return fallback


# Past every key under a common prefix for a listing that starts *after* a key: S3 compares
# keys by their UTF-8 bytes, where U+10FFFF is the largest character. Keys under the prefix
# that sort later still (a run of such characters) are passed over by the filter.
_PAST = "\U0010ffff" * 4


def _successor(prefix: str) -> str:
    """The smallest string greater than every string that starts with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def encode_token(last: str, is_prefix: bool) -> str:
    return base64.urlsafe_b64encode((("p" if is_prefix else "k") + last).encode()).decode()


def decode_token(token: str) -> tuple[str, bool]:
    try:
        raw = base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise ValueError("invalid continuation token") from None
    if not raw or raw[0] not in "pk":
        raise ValueError("invalid continuation token")
    return raw[1:], raw[0] == "p"
