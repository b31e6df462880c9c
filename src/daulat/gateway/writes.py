"""Writes through the gateway (``writable = true``): one body to every replica that answers.

The primary must take the write: while it answers it is the authority the read path asks,
and a write it does not hold would vanish from reads. So a write streams to the primary and
to every other replica whose circuit is not open, at once (:mod:`.fanout`), but only the
primary is handed the end of the body at first: the others' puts complete only once the
primary's has returned (a store commits an object when its body ends). If the primary
fails, the others are abandoned before they could commit, and the write happened nowhere:
every store holds what it held before, every journal row stays as it was, nothing lags.

Why the primary failed decides the answer. A refusal of this object alone, which sending it
again will not change, is a 4xx no SDK retries (:class:`WriteRefused`): a key or a
description its store cannot hold (400), access to the object refused while the store
still answers a listing (403: a file it may not replace, a bucket policy denying a prefix);
it says nothing of the store's health. Anything else (the store down, not answering, access
to the whole store refused) is a 503 and is the health's business. With the primary cut off
the gateway is read-only; promote a survivor by reordering ``replicas`` and restarting.

A store holds the write *verified* when its put completed and reports the very size and
SHA-256 the gateway computed while streaming the body (each store also proves the bytes to
its server as the copy engine does: checksums on every PUT and part). The write is
acknowledged (200, the ETag of the plaintext's SHA-256) once ``quorum`` stores, the primary
among them, hold it verified; else 503, the stores that failed named in the log, or, when
every replica that failed refused this object for good while it still answers (as the primary
may, above), that refusal's 4xx: sending it again cannot reach the quorum.

The journal (:mod:`.ledger`) then vouches for each replica holding it and records the others
as lagging; one audit entry per write the primary took names both (``acknowledged`` false
when the quorum was missed: the client got 503, the primary serves the new bytes). Writes of
one key through one gateway are serialised; a write racing another writer at the primary
itself is caught when the primary describes the key afterwards (its size must be the
write's, its ETag the one its put returned) and answered 503, vouched for nowhere.
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from daulat.config import Config
from daulat.crypto import parse_recipients
from daulat.errors import DaulatError, InvalidKey, MetadataTooLarge, NameConflict, StoreError
from daulat.gateway import ledger
from daulat.gateway.bucket import Bucket
from daulat.gateway.fanout import Fanout
from daulat.gateway.health import answered, refused_access
from daulat.gateway.reading import describe
from daulat.gateway.replicas import Replica, etag_of, unverified_etag
from daulat.stores.abilities import UploadCleanup, upload_cleanup
from daulat.stores.base import ObjectInfo, PutResult, Store, portable_key_problem
from daulat.stores.chunkhash import ChunkHasher
from daulat.stores.cleanup import cleanup_temp
from daulat.stores.crypt import AGE_BUFFER, CryptPutResult, CryptStore
from daulat.stores.described import Described
from daulat.stores.keys import has_name_conflicts, name_conflict, write_problem
from daulat.stores.objectstore import METADATA_PREFIX
from daulat.transfer.journal import Outcome, State
from daulat.transfer.model import Options

log = logging.getLogger("daulat.gateway")

#: Characters no key written here may hold, by Unicode category: format characters
#: (right-to-left overrides, zero-width joiners, BOMs: a key that reads as another), line and
#: paragraph separators, private use, surrogates and unassigned code points.
_ODD = {"Cf", "Zl", "Zp", "Co", "Cs", "Cn"}


class WriteFailed(DaulatError):
    """The write was not acknowledged (S3 503): the message says which stores failed.
    ``unacknowledged`` is the write when the primary nonetheless took it (quorum missed)."""

    def __init__(self, message: str, unacknowledged: Written | None = None) -> None:
        super().__init__(message)
        self.unacknowledged = unacknowledged


class WriteRefused(WriteFailed):
    """The write was refused for a reason of this object's own, which sending it again will
    not change (an S3 4xx, never a 503 SDKs retry): ``cause`` is the refusing store's error;
    ``taken``, the write when the primary took it and only such refusals missed the quorum."""

    def __init__(self, message: str, cause: StoreError, taken: Written | None = None) -> None:
        super().__init__(message, taken)
        self.cause = cause


class KeyTooLong(InvalidKey):
    """A key refused for its length, or a segment's (S3 400 ``KeyTooLongError``)."""


def shown(key: str) -> str:
    """``key`` as messages show it: a long one cut (it is in the request's path already)."""
    if len(key) <= 64:
        return repr(key)
    return f"{key[:48]!r}... ({len(key.encode('utf-8', 'surrogatepass'))} bytes)"


def write_key_problem(key: str) -> str | None:
    """Why ``key`` is refused for a write, or None. Beyond the portable-key rules every store
    keeps (no empty, ``.`` or ``..`` segment, no control character, at most 1,024 bytes):
    nothing under daulat's own ``.daulat/`` (in any case: a case-insensitive filesystem holds
    ``.DAULAT/`` there too), only NFC (a filesystem may store another spelling of the name),
    no invisible, unassigned or private-use character."""
    problem = portable_key_problem(key)
    if problem is not None:
        return problem
    if any(s.casefold() == ".daulat" for s in key.split("/")):
        return "daulat's own .daulat/ directory is never written as data"
    if any(unicodedata.category(c) == "Cc" for c in key):
        # C1 controls (U+0080-U+009F: NEL, CSI) beyond the C0 and DEL the portable rules
        # refuse; those rules stay as they are, since copies must still take a source's keys.
        return "a control character"
    if unicodedata.normalize("NFC", key) != key:
        return "not in Unicode NFC (some stores would hold it under another spelling)"
    if any(unicodedata.category(c) in _ODD for c in key):
        return "an invisible, unassigned or private-use character"
    return None


@dataclass(frozen=True)
class Target:
    """A replica as writes see it: the store written (age-encrypting where the replica's
    store declares ``encrypt_to``) and the journal pair of a copy primary → replica."""

    replica: Replica
    store: Store
    pair: str

    @property
    def encrypted(self) -> bool:
        return isinstance(self.store, CryptStore)


@dataclass
class Written:
    """An acknowledged write."""

    key: str
    size: int
    sha256: str
    etag: str  # the gateway's, as a HEAD will answer
    holders: list[str]
    lagging: dict[str, str] = field(default_factory=dict)
    acknowledged: bool = True  # False: the primary took it, too few others did


def targets(cfg: Config, bucket: Bucket) -> list[Target]:
    """The bucket's replicas as write targets, the primary first."""
    p = bucket.primary.address
    out = []
    for r in bucket.replicas:
        store_cfg = cfg.store(r.address.store)
        store = r.store
        tag = ""
        if store_cfg.encrypt_to and not r.primary:
            recipients = parse_recipients(store_cfg.encrypt_to)
            store = CryptStore(
                r.store, recipients=recipients, max_buffer=AGE_BUFFER, remember=False
            )
            tag = Options(encrypt_to=recipients).codec_tag
        pair = f"{p.store}:{p.prefix} -> {r.address.store}:{r.address.prefix}{tag}"
        out.append(Target(r, store, pair))
    return out


class Writer:
    """The writes of one gateway: per-bucket targets, per-key serialisation."""

    def __init__(self, cfg: Config, state_dir: Path) -> None:
        self.cfg = cfg
        self.ledger = ledger.Ledger(state_dir)
        self._targets: dict[str, list[Target]] = {}
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def close(self) -> None:
        self.ledger.close()

    def targets(self, bucket: Bucket) -> list[Target]:
        if bucket.name not in self._targets:
            self._targets[bucket.name] = targets(self.cfg, bucket)
        return self._targets[bucket.name]

    def lock(self, bucket: Bucket, key: str) -> asyncio.Lock:
        lock = self._locks.get((bucket.name, key))
        if lock is None:
            lock = asyncio.Lock()
            self._locks[(bucket.name, key)] = lock
        return lock

    def refusal(self, bucket: Bucket, key: str) -> InvalidKey | None:
        """Why ``key`` can never be written to ``bucket``, or None: the gateway's own rules,
        then each replica's store's (a directory refuses a backslash or a segment over 255
        bytes). Permanent, so asked before anything is sent: a 503 would be retried, and
        every attempt would record replicas lagging behind an object that exists nowhere."""
        problem = write_key_problem(key)
        if problem is None:
            for t in self.targets(bucket):
                reason = write_problem(t.store, t.replica.address.prefix + key)
                if reason is not None:
                    problem = f"store {t.replica.name} cannot hold it: {reason}"
                    break
        if problem is None:
            return None
        # The stores' rules word every length limit "longer than N bytes".
        kind = KeyTooLong if "longer than" in problem else InvalidKey
        return kind(f"key {shown(key)} is refused for writes: {problem}", key=key)

    async def conflict(self, bucket: Bucket, key: str) -> NameConflict | None:
        """Why ``key`` cannot be written beside what a directory replica holds ('a' is a
        file there and ``key`` is 'a/b', or the reverse), or None. Asked before anything is
        sent, as :meth:`refusal`: written anyway, the replica would lag for ever, since no
        sync can copy it there while the other object exists."""
        for t in self.targets(bucket):
            if not has_name_conflicts(t.store):
                continue
            full = t.replica.address.prefix + key
            reason = await asyncio.to_thread(name_conflict, t.store, full)
            if reason is not None:
                return NameConflict(
                    f"key {shown(key)} is refused for writes: store {t.replica.name} cannot "
                    f"hold it: {reason}",
                    key=key,
                )
        return None

    def too_large(
        self, bucket: Bucket, key: str, described: Described | None
    ) -> MetadataTooLarge | None:
        """Why ``described`` can never be kept with ``key`` in ``bucket``, or None: daulat's
        field as the stores write it (percent-encoded: a ``%`` takes three bytes) against the
        smallest ``max_metadata`` of the replicas that keep it (not the age-encrypted ones).
        Asked before any byte is sent: the store would refuse it only at the end, and a
        503 would be retried for ever."""
        fields = described.field() if described is not None else {}
        size = sum(len((METADATA_PREFIX + n).encode()) + len(v.encode()) for n, v in fields.items())
        for t in self.targets(bucket):
            limit = None if t.encrypted else t.store.capabilities.max_metadata
            if limit is not None and size > limit:
                return MetadataTooLarge(
                    f"the description of {shown(key)} (Content-Type and x-amz-meta-*) takes "
                    f"{size:,} bytes as daulat keeps it, percent-encoded; store "
                    f"{t.replica.name} keeps at most {limit:,} beside an object",
                    key=key,
                )
        return None

    async def put(
        self,
        bucket: Bucket,
        key: str,
        body: AsyncIterable[bytes],
        hasher: ChunkHasher,
        quorum: int,
        described: Described | None = None,
    ) -> Written:
        """Stream ``body`` (whose pieces feed ``hasher``, checked by its source before it
        ends) to the replicas, ``described`` (Content-Type, user metadata) kept by those that
        hold it in the clear. Raises :class:`InvalidKey` (400), :class:`WriteRefused` (4xx),
        :class:`WriteFailed` (503), or what the body's source raised when the body broke a
        promise."""
        refused = (
            self.refusal(bucket, key)
            or self.too_large(bucket, key, described)
            or await self.conflict(bucket, key)
        )
        if refused is not None:
            raise refused
        async with self.lock(bucket, key):
            return await self._put(bucket, key, body, hasher, quorum, described or Described())

    async def _put(
        self,
        bucket: Bucket,
        key: str,
        body: AsyncIterable[bytes],
        hasher: ChunkHasher,
        quorum: int,
        described: Described,
    ) -> Written:
        health = bucket.health
        all_targets = self.targets(bucket)
        primary, others = all_targets[0], all_targets[1:]
        if not health.usable(primary.replica.name):
            raise _primary_down(bucket)
        # Why each replica skipped is down, read now: asking whether it is usable may start
        # its probe, whose success clears the reason before this write is recorded.
        down: dict[str, str] = {}
        live = []
        for t in others:
            if health.usable(t.replica.name):
                live.append(t)
            else:
                down[t.replica.name] = health.circuit(t.replica.name).last_error
        # Each store is asked whether it is there (one small listing): a directory store
        # whose root vanished would otherwise be re-created by the put, and a primary holding
        # only this object would then answer "no such key" for every other one.
        there = await asyncio.gather(*(bucket.present(t.replica) for t in [primary, *live]))
        if not there[0]:
            raise _primary_down(bucket)
        live = [t for t, ok in zip(live, there[1:], strict=True) if ok]
        lagging: dict[str, str] = {
            t.replica.name: "down at write time ("
            + (down.get(t.replica.name) or health.circuit(t.replica.name).last_error or "down")
            + ")"
            for t in others
            if t not in live
        }

        async def under_way() -> None:
            # The primary holds the write: what the replicas held of the key is no longer
            # vouched for, as they are about to be given its end. Not before: a body that
            # broke a promise, or a write the primary refused, changes nothing anywhere.
            rows = [
                self._row(bucket, t, Outcome(key, 0, None, State.FAILED, error=ledger.UNDER_WAY))
                for t in others
            ]
            await self.ledger.record(rows)
            bucket.journal.refresh()

        fan = Fanout(body, committed=under_way)
        writing = [primary, *live]
        results = await fan.run([self._put_to(t, key, described) for t in writing])
        # A directory stages each put in its .daulat-tmp/: left empty, it goes (the stores stay
        # open as long as the gateway runs, and their close is when they would tidy it).
        await asyncio.gather(*(cleanup_temp(t.store) for t in writing), return_exceptions=True)
        if fan.error is not None:
            raise fan.error
        verified: list[tuple[Target, PutResult]] = []
        # Once the primary failed the others were given up (fanout.Abandoned), whatever a store
        # makes of that: only the primary's own failure says anything about a store's health.
        abandoned = isinstance(results[0], BaseException)
        own = False  # the primary's failure concerns this object alone
        # Replica → its failure, where it concerns this object alone (a refusal for good).
        for_good: dict[str, StoreError] = {}
        for t, res in zip(writing, results, strict=True):
            if isinstance(res, BaseException):
                why = describe(res)
                if isinstance(res, NameConflict):
                    # A race past conflict(): no sync mends it while the other object exists.
                    why = f"{ledger.CONFLICT}{why}"
                if t is primary or not abandoned:
                    alone = await _heard(bucket, t, res)
                    own = own or (alone and t is primary)
                    if alone and isinstance(res, StoreError):
                        for_good[t.replica.name] = res
            elif res.size != hasher.size or res.sha256 != hasher.hexdigest():
                why = "the store reports other bytes than were sent"
            else:
                verified.append((t, res))
                continue
            lagging[t.replica.name] = why
            log.warning("write of %r to %s failed: %s", key, t.replica.name, why)
        if abandoned:
            raise await self._refused(bucket, key, writing, results, lagging, own)
        ok = {t.replica.name for t, _ in verified}
        info: ObjectInfo | None = None
        if primary.replica.name in ok:
            put = next(r for t, r in verified if t is primary)
            info = await self._primary_now(bucket, key, hasher.size, put, lagging)
        p = primary.replica.name
        if info is None:
            why = f"the primary {p} did not take it ({lagging.get(p)})"
            rows = [
                self._row(
                    bucket,
                    t,
                    Outcome(
                        key,
                        hasher.size,
                        None,
                        State.FAILED,
                        error=f"{ledger.NOT_ACKNOWLEDGED}{why}",
                    ),
                )
                for t in others
            ]
            await self.ledger.record(rows)
            bucket.journal.refresh()
            failed = "; ".join(f"{n}: {w}" for n, w in lagging.items())
            # The primary may hold the new bytes all the same: an audit entry must say so.
            taken = None
            if p in ok:
                holders = [t.replica.name for t, _ in verified]
                taken = Written(
                    key, hasher.size, hasher.hexdigest(), "", holders, dict(lagging), False
                )
            raise WriteFailed(f"write of {shown(key)} not acknowledged: {why} ({failed})", taken)
        # The primary holds this write, quorum met or not: each replica holding it verified is
        # vouched for, so that the answer, the audit entry and the journal name the same
        # holders (and a read after the primary is lost serves what the primary served).
        acknowledged = len(ok) >= quorum
        lags = ledger.LAGS if acknowledged else ledger.NOT_ACKNOWLEDGED
        sha = hasher.hexdigest()
        chunks = hasher.chunks if hasher.size > hasher.chunk_size else None
        rows = []
        for t in others:
            held = next((r for v, r in verified if v is t), None)
            if held is None:
                outcome = Outcome(
                    key,
                    info.size,
                    info.etag,
                    State.FAILED,
                    error=f"{lags}{lagging[t.replica.name]}",
                )
            else:
                outcome = Outcome(
                    key,
                    info.size,
                    info.etag,
                    State.DONE,
                    sha256=sha,
                    dst_size=held.stored_size if isinstance(held, CryptPutResult) else held.size,
                    dst_etag=held.etag if held.etag is not None else await _etag(t, key),
                    plain_size=hasher.size,
                    chunks=chunks,
                    chunk_size=hasher.chunk_size if chunks else None,
                )
            rows.append(self._row(bucket, t, outcome))
        await self.ledger.record(rows)
        bucket.journal.refresh()
        holders = [t.replica.name for t, _ in verified]
        etag = etag_of(sha) if len(holders) > 1 else unverified_etag(info)
        lag = {t.replica.name: lagging[t.replica.name] for t in others if t.replica.name in lagging}
        written = Written(key, hasher.size, sha, etag, holders, lag, acknowledged)
        if not acknowledged:
            # Refusals for good alone kept the quorum out of reach: a retry meets them again,
            # so the client is told the refusal, as the primary's. Else one may answer: 503.
            refused = bool(lag) and all(n in for_good for n in lag)
            why = (
                f"{len(ok)} store(s) hold it verified ({', '.join(holders)}), quorum is "
                f"{quorum}"
                + ("; the others refused it for good" if refused else "")
                + f"; the primary {p} now serves the new bytes"
            )
            failed = "; ".join(f"{n}: {w}" for n, w in lagging.items())
            message = f"write of {shown(key)} not acknowledged: {why} ({failed})"
            if refused:
                raise WriteRefused(message, for_good[next(iter(lag))], written)
            raise WriteFailed(message, written)
        return written

    async def _refused(
        self,
        bucket: Bucket,
        key: str,
        writing: list[Target],
        results: list[PutResult | BaseException],
        lagging: dict[str, str],
        own: bool,
    ) -> WriteFailed:
        """The primary's put failed: it holds what it held before, and the others, abandoned
        before their end, too; no journal row was touched. ``own``: the failure concerns this
        object alone (:class:`WriteRefused`)."""
        primary = writing[0]
        p = primary.replica.name
        kept = "every store holds what it held before"
        for t, res in zip(writing[1:], results[1:], strict=True):
            if isinstance(res, BaseException):
                continue
            kept = f"{t.replica.name} completed it all the same: removed there, it lags"
            # A store that completed an object whose body never ended broke the Store
            # contract (the conformance suite holds every kind to it). What it holds is no
            # version of the primary's, and its earlier copy is gone: removed, and it lags.
            log.error(
                "%s completed %r although the write was abandoned before its end",
                t.replica.name,
                key,
            )
            try:
                await t.store.delete(t.replica.address.prefix + key)
            except (StoreError, OSError) as exc:
                log.warning("%s: %r cannot be removed (%s)", t.replica.name, key, describe(exc))
            gone = Outcome(
                key,
                0,
                None,
                State.FAILED,
                error=f"{ledger.LAGS}its copy was replaced by a write the primary {p} refused",
            )
            await self.ledger.record([self._row(bucket, t, gone)])
            bucket.journal.refresh()
        cause = results[0]
        message = (
            f"write of {shown(key)} not acknowledged: the primary {p} did not take it "
            f"({lagging.get(p)}); {kept}"
        )
        if own and isinstance(cause, StoreError):
            return WriteRefused(message, cause)
        return WriteFailed(message)

    def _put_to(
        self, t: Target, key: str, described: Described
    ) -> Callable[[AsyncIterator[bytes]], Awaitable[PutResult]]:
        # Not beside ciphertext: an age replica's provider would read what the object is.
        metadata = None if t.encrypted else described.field() or None

        cleanup = upload_cleanup(t.replica.store) if self.ledger.records_uploads else None
        if cleanup is None:

            async def put(stream: AsyncIterator[bytes]) -> PutResult:
                return await t.store.put(t.replica.address.prefix + key, stream, metadata=metadata)

            return put
        where, part_size = cleanup.location, cleanup.part_size

        async def recorded_put(stream: AsyncIterator[bytes]) -> PutResult:
            # The multipart upload the put begins is recorded before its first part (a
            # gateway killed mid-write leaves it to the next serve: ledger), and forgotten
            # once the put has completed or aborted it.
            begun: list[tuple[str, str]] = []

            def started(stored: str, upload_id: str) -> None:
                self.ledger.upload_started(where, stored, upload_id, part_size)
                begun.append((stored, upload_id))

            completed = False
            try:
                result = await t.store.put(
                    t.replica.address.prefix + key, stream, metadata=metadata, on_upload=started
                )
                completed = True
                return result
            finally:
                if begun:
                    await asyncio.shield(self._ended(cleanup, begun, completed))

        return recorded_put

    async def _ended(
        self, store: UploadCleanup, begun: list[tuple[str, str]], completed: bool
    ) -> None:
        """Forget the uploads a put began, once gone: completed, or aborted by the failed put
        (made sure of here; a failed abort stays recorded for the next serve or ``daulat
        clean``)."""
        for stored, upload_id in begun:
            if not completed:
                try:
                    await store.abort_multipart_upload(stored, upload_id)  # gone: a no-op
                except (StoreError, OSError) as exc:
                    log.warning("upload of %r left at %s: %s", stored, store.location, exc)
                    continue
            await self.ledger.upload_ended(store.location, stored, upload_id)

    async def _primary_now(
        self, bucket: Bucket, key: str, size: int, put: PutResult, lagging: dict[str, str]
    ) -> ObjectInfo | None:
        """How the primary describes the key now, when it is this write's object."""
        p = bucket.primary
        try:
            info = await p.store.head(p.address.prefix + key)
        except (StoreError, OSError) as exc:
            lagging[p.name] = f"cannot describe it after the write: {describe(exc)}"
            return None
        if info.size != size or (put.etag is not None and info.etag != put.etag):
            lagging[p.name] = "another writer changed the key at the primary during the write"
            return None
        return info

    def _row(self, bucket: Bucket, t: Target, outcome: Outcome) -> ledger.Row:
        return ledger.Row(t.pair, bucket.primary.name, t.replica.name, outcome)


async def _heard(bucket: Bucket, t: Target, exc: BaseException) -> bool:
    """Tell the replica's health of its failed put, unless the failure concerns this object
    alone; whether it does. Access refused is asked about once more: the same refusal comes
    for one object (a file the filesystem may not replace, a bucket policy denying a prefix)
    and for the whole store (credentials revoked, the root unreadable); the store is listed,
    and if it answers, only the object was refused (else the listing's failure is heard)."""
    if not isinstance(exc, (StoreError, OSError)):
        return False
    if refused_access(exc):
        return await bucket.present(t.replica)
    bucket.note_failure(t.replica, exc)
    return answered(exc)


def _primary_down(bucket: Bucket) -> WriteFailed:
    p = bucket.primary.name
    last = bucket.health.circuit(p).last_error
    return WriteFailed(
        f"the primary {p} is down ({last}): the gateway is read-only until it answers "
        "(or another replica is made the primary)"
    )


async def _etag(t: Target, key: str) -> str | None:
    inner = t.store.inner if isinstance(t.store, CryptStore) else t.store
    try:
        return (await inner.head(t.replica.address.prefix + key)).etag
    except (StoreError, OSError):
        return None
