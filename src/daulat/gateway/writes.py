"""Writes through the gateway (``writable = true``): one body to every replica that answers.

The primary must take the write: while it answers it is the authority the read path asks,
and a write it does not hold would vanish from reads. So a write streams to the primary and
to every other replica whose circuit is not open, at once (:mod:`.fanout`); if the primary
fails, the write fails (503) whatever the others did, and happened nowhere: the journal rows
of the key are put back as they were and a replica that took the bytes has them removed
(the primary holds what it held before, and nothing may claim otherwise). With the primary
cut off the gateway is read-only; promote a survivor by reordering ``replicas`` and
restarting.

A store holds the write *verified* when its put completed and reports the very size and
SHA-256 the gateway computed while streaming the body (each store also proves the bytes to
its server as the copy engine does: checksums on every PUT and part). The write is
acknowledged (200, the ETag of the plaintext's SHA-256) once ``quorum`` stores, the primary
among them, hold it verified; else 503, the stores that failed named in the log.

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
from daulat.errors import DaulatError, InvalidKey, StoreError
from daulat.gateway import ledger
from daulat.gateway.bucket import Bucket
from daulat.gateway.fanout import Fanout
from daulat.gateway.reading import describe
from daulat.gateway.replicas import Replica, etag_of, unverified_etag
from daulat.stores.base import ObjectInfo, PutResult, Store, portable_key_problem
from daulat.stores.chunkhash import ChunkHasher
from daulat.stores.cleanup import cleanup_temp
from daulat.stores.crypt import AGE_BUFFER, CryptPutResult, CryptStore
from daulat.stores.described import Described
from daulat.stores.keys import write_problem
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


async def then(
    source: AsyncIterable[bytes], at_end: Callable[[], Awaitable[None]]
) -> AsyncIterator[bytes]:
    """``source``'s pieces, with ``at_end()`` awaited after it ended without error and before
    its last piece is handed on (so before any store can complete the object)."""
    held: bytes | None = None
    async for piece in source:
        if held is not None:
            yield held
        held = piece
    await at_end()
    if held is not None:
        yield held


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
        hold it in the clear. Raises :class:`InvalidKey` (400), :class:`WriteFailed` (503),
        or what the body's source raised when the body broke a promise."""
        refused = self.refusal(bucket, key)
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
        live = [t for t in others if health.usable(t.replica.name)]
        # Each store is asked whether it is there (one small listing): a directory store
        # whose root vanished would otherwise be re-created by the put, and a primary holding
        # only this object would then answer "no such key" for every other one.
        there = await asyncio.gather(*(bucket.present(t.replica) for t in [primary, *live]))
        if not there[0]:
            raise _primary_down(bucket)
        live = [t for t, ok in zip(live, there[1:], strict=True) if ok]
        lagging: dict[str, str] = {
            t.replica.name: f"down at write time ({health.circuit(t.replica.name).last_error})"
            for t in others
            if t not in live
        }

        before: dict[str, ledger.Prior | None] | None = None

        async def under_way() -> None:
            # Whatever the replicas held of the key is no longer vouched for: the write may
            # replace it. Only once the body has proved itself (a broken one changes nothing).
            nonlocal before
            rows = [
                self._row(bucket, t, Outcome(key, 0, None, State.FAILED, error=ledger.UNDER_WAY))
                for t in others
            ]
            before = await self.ledger.replace(rows)
            bucket.journal.refresh()

        fan = Fanout(then(body, under_way))
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
        for t, res in zip(writing, results, strict=True):
            if isinstance(res, BaseException):
                why = describe(res)
                if isinstance(res, (StoreError, OSError)) and (t is primary or not abandoned):
                    bucket.note_failure(t.replica, res)
            elif res.size != hasher.size or res.sha256 != hasher.hexdigest():
                why = "the store reports other bytes than were sent"
            else:
                verified.append((t, res))
                continue
            lagging[t.replica.name] = why
            log.warning("write of %r to %s failed: %s", key, t.replica.name, why)
        if abandoned:
            raise await self._refused(bucket, key, writing, results, before or {}, lagging)
        ok = {t.replica.name for t, _ in verified}
        info: ObjectInfo | None = None
        if primary.replica.name in ok:
            put = next(r for t, r in verified if t is primary)
            info = await self._primary_now(bucket, key, hasher.size, put, lagging)
        if info is None or len(ok) < quorum:
            p = primary.replica.name
            holding = ", ".join(t.replica.name for t, _ in verified)
            why = (
                f"the primary {p} did not take it ({lagging.get(p)})"
                if info is None
                else f"{len(ok)} store(s) hold it verified ({holding}), quorum is {quorum}; "
                f"the primary {p} now serves the new bytes"
            )
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
            # The primary serves the new bytes all the same: an audit entry must say so.
            taken = None
            if primary.replica.name in ok:
                holders = [t.replica.name for t, _ in verified]
                taken = Written(
                    key, hasher.size, hasher.hexdigest(), "", holders, dict(lagging), False
                )
            raise WriteFailed(f"write of {shown(key)} not acknowledged: {why} ({failed})", taken)
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
                    error=f"{ledger.LAGS}{lagging[t.replica.name]}",
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
        return Written(key, hasher.size, sha, etag, holders, lag)

    async def _refused(
        self,
        bucket: Bucket,
        key: str,
        writing: list[Target],
        results: list[PutResult | BaseException],
        before: dict[str, ledger.Prior | None],
        lagging: dict[str, str],
    ) -> WriteFailed:
        """The primary's put failed: it holds what it held before, so the write happened
        nowhere. A replica that took it nonetheless holds an object that is no version of
        the primary's: it is removed. Every replica's row is put back as it was, except that
        a replica whose earlier copy the refused write replaced lags behind the primary (its
        copy is gone)."""
        primary = writing[0]
        p = primary.replica.name
        for t, res in zip(writing[1:], results[1:], strict=True):
            if isinstance(res, BaseException):
                continue
            try:
                await t.store.delete(t.replica.address.prefix + key)
            except (StoreError, OSError) as exc:
                log.warning(
                    "%s holds %r, a write the primary %s refused, and it cannot be removed "
                    "there (%s): it is no object of the primary's",
                    t.replica.name, key, p, describe(exc),
                )  # fmt: skip
            if before.get(t.pair) is not None:
                gone = Outcome(
                    key,
                    0,
                    None,
                    State.FAILED,
                    error=f"{ledger.LAGS}its copy was replaced by a write the primary {p} refused",
                )
                await self.ledger.record([self._row(bucket, t, gone)])
                before.pop(t.pair)
        await self.ledger.restore(key, before)
        bucket.journal.refresh()
        return WriteFailed(
            f"write of {shown(key)} not acknowledged: the primary {p} did not take it "
            f"({lagging.get(p)}); no replica keeps it"
        )

    def _put_to(
        self, t: Target, key: str, described: Described
    ) -> Callable[[AsyncIterator[bytes]], Awaitable[PutResult]]:
        # Not beside ciphertext: an age replica's provider would read what the object is.
        metadata = None if t.encrypted else described.field() or None

        async def put(stream: AsyncIterator[bytes]) -> PutResult:
            return await t.store.put(t.replica.address.prefix + key, stream, metadata=metadata)

        return put

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
