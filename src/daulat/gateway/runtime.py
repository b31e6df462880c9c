"""What a running gateway holds: its stores, buckets, replica health and audit trail."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Mapping

from daulat.audit import record
from daulat.config import Config
from daulat.crypto import NO_MATCHING_IDENTITY, DecryptError, decrypt_bytes
from daulat.errors import ConfigError, StoreError
from daulat.gateway.bucket import Bucket
from daulat.gateway.budget import ByteBudget
from daulat.gateway.config import GatewayConfig
from daulat.gateway.health import Circuit, Health
from daulat.gateway.reading import describe
from daulat.gateway.replicas import JournalView, ManifestIndex, Source, Version
from daulat.gateway.spool import Spool
from daulat.gateway.standing import STARTED, STOPPED
from daulat.gateway.writes import Writer, Written
from daulat.signing import existing_local_key, signers_line
from daulat.stores import Store, open_store
from daulat.stores.abilities import upload_cleanup
from daulat.stores.cleanup import cleanup_temp

log = logging.getLogger("daulat.gateway")

#: A failover of the same replica for the same key is audited at most once in this many
#: seconds: a client retrying in a loop (or fetching ranges) must not grow the hash-chained
#: audit log with every request.
FAILOVER_QUIET = 300.0
#: The most (replica, key) pairs remembered for that; past it the oldest are forgotten.
FAILOVER_MEMORY = 10_000


class AuditEvents:
    """Revocations, failovers and altered replicas, written to the audit log (off the event
    loop: an append is fsynced) and logged."""

    def __init__(self, cfg: Config, quarantined: set[tuple[str, str, str]]) -> None:
        self.state_dir = cfg.state_dir
        self.quarantined = quarantined
        self._pending: set[asyncio.Future[None]] = set()
        self._failovers: dict[tuple[str, str], float] = {}
        self._stale: set[tuple[str, str]] = set()
        # Store → whether this gateway's latest health entry of it was down or revoked.
        self._refused: dict[str, bool] = {}

    def _write(self, operation: str, details: Mapping[str, object]) -> None:
        log.warning("%s: %s", operation, dict(details))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._append(operation, details)
            return
        future = loop.run_in_executor(None, self._append, operation, details)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    def _append(self, operation: str, details: Mapping[str, object]) -> None:
        try:
            record(self.state_dir, operation, details)
        except Exception as exc:  # the gateway keeps serving; the log line says what was lost
            log.error("cannot write the audit log: %s", exc)

    def failover(self, version: Version, failed: Source, offset: int, error: str) -> None:
        now = time.monotonic()
        pair = (failed.replica.name, version.key)
        if now - self._failovers.get(pair, -FAILOVER_QUIET) < FAILOVER_QUIET:
            return
        self._failovers.pop(pair, None)
        self._failovers[pair] = now
        while len(self._failovers) > FAILOVER_MEMORY:
            del self._failovers[next(iter(self._failovers))]
        self._write(
            "gateway.failover",
            {
                "key": version.key,
                "replica": failed.replica.name,
                "store": _store(failed.replica.name),
                "offset": offset,
                "error": error,
            },
        )

    def mismatch(self, version: Version, source: Source, chunk: int, why: str = "") -> None:
        """``source`` holds other bytes than were copied for this version: quarantined (one
        audit entry per finding: a quarantined copy is never read again)."""
        found = (source.replica.name, source.key, version.sha256 or "")
        if found in self.quarantined:
            return
        self.quarantined.add(found)
        name = source.replica.name
        details: dict[str, object] = {
            "key": version.key,
            "replica": name,
            "store": _store(name),
            "chunk": chunk,
            "sha256": version.sha256,
            "error": why or f"chunk {chunk} does not match its recorded SHA-256",
            "action": f"this version is not read from {name} again; its other objects still are",
        }
        self._write("gateway.mismatch", details)

    def withheld(self, version: Version, source: Source) -> None:
        """``source`` answers that it does not hold an object it is recorded to hold verified."""
        found = (source.replica.name, source.key, version.sha256 or "")
        if found in self.quarantined:
            return
        self.quarantined.add(found)
        name = source.replica.name
        self._write(
            "gateway.withheld",
            {
                "key": version.key,
                "replica": name,
                "store": _store(name),
                "sha256": version.sha256,
                "error": f"{version.key!r} is missing, yet a verified copy of it is recorded",
                "action": f"this version is not read from {name} again; its other objects still are",
            },
        )

    async def written(self, bucket: str, w: Written) -> None:
        """A write the primary took: one entry, appended (and fsynced) before the client
        hears of it, ``acknowledged`` false when the quorum was missed (the client got 503,
        yet the primary, and so every read, has the new bytes)."""
        details: dict[str, object] = {
            "bucket": bucket,
            "key": w.key,
            "size": w.size,
            "sha256": w.sha256,
            "replicas": w.holders,
            "lagging": w.lagging,
            "acknowledged": w.acknowledged,
        }
        if w.lagging:
            log.warning("gateway.write: %s", details)
        await asyncio.to_thread(self._append, "gateway.write", details)

    def stale(self, key: str, primary: str, etag: str) -> None:
        """The primary, now down, was seen holding a version no replica holds verified."""
        if (key, etag) in self._stale:
            return
        self._stale.add((key, etag))
        self._write(
            "gateway.stale",
            {
                "key": key,
                "replica": primary,
                "store": _store(primary),
                "primary_etag": etag,
                "action": "503 for this key until the primary answers or the replicas are "
                "copied again: older copies are not served in its place",
            },
        )

    def circuit(self, c: Circuit, what: str) -> None:
        # The store is named apart from the replica (STORE[:PREFIX]) for daulat stores and
        # the report (daulat.gateway.standing).
        details: dict[str, object] = {"replica": c.name, "store": _store(c.name)}
        self._refused[_store(c.name)] = what != "recovered"
        if what == "recovered":  # the error is past: named as such, never as current
            details.update(error=None, recovered_from=c.last_error)
        else:
            details["error"] = c.last_error
        self._write(f"gateway.{what}", details)

    async def stopped(self) -> None:
        """This gateway stops: the stores it last found down or refusing are no longer
        watched (:mod:`.standing` shows them as of this moment). Written only when there are
        such stores; not logged: a stop is no news."""
        stores = sorted(name for name, refused in self._refused.items() if refused)
        if stores:
            await asyncio.to_thread(self._append, STOPPED, {"stores": stores})

    async def started(self, writable: list[str], stores: list[str]) -> None:
        """A gateway starts watching ``stores``, taking writes for the ``writable`` buckets.
        Written by every gateway, read-only ones too: a store an earlier gateway stopped with
        down is watched again from here (:mod:`.standing`). A writable one writes it before
        it records anything in the journal (a run there is evidence the audit log existed; a
        gateway killed during its first write must leave a log ``daulat clean`` accepts)."""
        details = {"writable": writable, "stores": stores}
        await asyncio.to_thread(self._append, STARTED, details)

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


def _store(replica: str) -> str:
    """The store of a replica named STORE[:PREFIX]."""
    return replica.partition(":")[0]


class Runtime:
    def __init__(self, cfg: Config, gw: GatewayConfig) -> None:
        self.cfg, self.gw = cfg, gw
        self.quarantined: set[tuple[str, str, str]] = set()
        self.events = AuditEvents(cfg, self.quarantined)
        self.health = Health(self.events.circuit)
        self.journal = JournalView(cfg.state_dir)
        self.manifests = ManifestIndex()
        self.stores: dict[str, Store] = {}
        self.buckets: dict[str, Bucket] = {}
        self.budget = ByteBudget(gw.read_buffers)
        self.writer = Writer(cfg, cfg.state_dir)
        self.spool = Spool(cfg.state_dir, gw.write_spool)

    async def start(self) -> None:
        """Open the stores (no I/O) and read the replicas' newest signed manifests."""
        for b in self.gw.buckets.values():
            for a in b.replicas:
                if a.store not in self.stores:
                    self.stores[a.store] = open_store(self.cfg.store(a.store))
            self.buckets[b.name] = bucket = Bucket(
                b,
                self.stores,
                self.journal,
                self.manifests,
                self.health,
                self.gw.identities,
                self.quarantined,
                self.events,
            )
            for r in bucket.replicas:
                timeout = self.cfg.store(r.address.store).request_timeout
                self.health.register(r.name, functools.partial(bucket.probe, r), timeout)
        # As restore and verify: only pinned signers are believed. The state directory's own
        # key is not: whoever can write that directory (or a replica it once copied to) could
        # then vouch for planted objects. This machine's own copies are proven by its journal.
        trusted = list(self.cfg.signers)
        if not trusted and any(b.others for b in self.buckets.values()):
            own = existing_local_key(self.cfg.state_dir)
            log.warning(
                "no pinned signer: replicas serve only what this machine's journal records "
                "(their signed manifests are believed only from keys in `signers`%s)",
                f"; this machine's own key would be: {signers_line([own])}" if own else "",
            )
        seen: set[str] = set()
        for bucket in self.buckets.values():
            for replica in bucket.others:
                if replica.name in seen:
                    continue
                seen.add(replica.name)
                try:
                    await asyncio.wait_for(
                        self.manifests.load(replica, trusted, self.gw.identities), 60
                    )
                except (TimeoutError, Exception) as exc:
                    self.manifests.problems[replica.name] = f"cannot read manifests: {exc}"
        for name, problem in self.manifests.problems.items():
            if name not in self.manifests.believed:
                log.warning("replica %s: no believed manifest (%s)", name, problem)
        for bucket in self.buckets.values():
            for line in coverage(bucket, self.journal):
                log.warning("%s", line)
        await self._check_identity()
        writable = [name for name, b in self.gw.buckets.items() if b.writable]
        if writable:
            self._check_writable()
            for gone in self.spool.start(writable):
                log.warning("removed a multipart upload a stopped gateway left: %s", gone)
            await self._tidy_stores(writable)
            if self.spool.uploads:
                log.warning(
                    "took over %d multipart upload(s) a stopped gateway left in progress",
                    len(self.spool.uploads),
                )
        await self.events.started(writable, sorted(self.stores))
        if writable:
            await self.writer.ledger.hold_uploads()
            await self._abort_left_uploads()

    async def _abort_left_uploads(self) -> None:
        """Abort the multipart uploads a killed gateway's puts left at the writable buckets'
        stores: exactly those it recorded (:mod:`.ledger`), never another writer's."""
        ledger = self.writer.ledger
        seen: set[str] = set()
        for b in self.gw.buckets.values():
            if not b.writable:
                continue
            for r in self.buckets[b.name].replicas:
                store = upload_cleanup(r.store)
                if store is None or store.location in seen:
                    continue
                seen.add(store.location)
                aborted = 0
                for key, upload_id in await ledger.left_uploads(store.location):
                    try:
                        await asyncio.wait_for(store.abort_multipart_upload(key, upload_id), 60)
                    except (TimeoutError, StoreError, OSError) as exc:
                        log.warning(
                            "%s: cannot abort the upload of %r a stopped gateway left (%s); "
                            "the next start or daulat clean tries again",
                            r.address.store,
                            key,
                            describe(exc),
                        )
                        continue
                    await ledger.upload_ended(store.location, key, upload_id)
                    aborted += 1
                if aborted:
                    log.warning(
                        "%s: aborted %d multipart upload(s) a stopped gateway left",
                        r.address.store,
                        aborted,
                    )

    async def _tidy_stores(self, writable: list[str]) -> None:
        """Remove what a gateway killed mid-write left in the writable buckets' directory
        stores: temp files no live writer holds, an emptied ``.daulat-tmp/``, and the key
        directories those puts made while they are empty (:mod:`daulat.stores.fstemp`).
        A store that cannot be tidied now (down, or slower than 30 s: a hung mount must not
        hold the start) is left for the next start."""
        stores = {id(r.store): r.store for n in writable for r in self.buckets[n].replicas}
        await asyncio.gather(
            *(asyncio.wait_for(cleanup_temp(store), 30) for store in stores.values()),
            return_exceptions=True,
        )

    def _check_writable(self) -> None:
        """A writable bucket's replica that holds age-encrypted copies must be written
        encrypted: its store must declare ``encrypt_to`` (else the gateway would put
        plaintext beside the ciphertext)."""
        for b in self.gw.buckets.values():
            if not b.writable:
                continue
            bucket = self.buckets[b.name]
            for r in bucket.others:
                if self.cfg.store(r.address.store).encrypt_to:
                    continue
                key = self.journal.encrypted_key(bucket.primary.address, r)
                if key or self.manifests.encrypted_key(r):
                    raise ConfigError(
                        f"{self.cfg.path}: [gateway] bucket {b.name!r}: writable = true, and "
                        f"replica {r.name} holds age-encrypted copies while store "
                        f"{r.address.store!r} declares no encrypt_to: writes would put "
                        "plaintext beside them (set encrypt_to on the store)"
                    )

    async def _check_identity(self) -> None:
        """Whether ``identity`` decrypts each age-encrypted replica (the first 64 KiB of one
        of its objects: the header names the recipients). A replica it cannot decrypt could
        never serve, which would otherwise be found during the outage it was meant to cover:
        :class:`ConfigError` (exit 2). A replica that cannot be read now is only warned
        about (it may be down for a while; its health is then found as any other's)."""
        seen: set[str] = set()
        where = f"{self.cfg.path}: [gateway] identity"
        for bucket in self.buckets.values():
            for r in bucket.others:
                if r.name in seen:
                    continue
                seen.add(r.name)
                problem = self.manifests.problems.get(r.name, "")
                if NO_MATCHING_IDENTITY in problem and self.gw.identities:
                    raise ConfigError(
                        f"{where} cannot decrypt the manifest of replica {r.name}: "
                        "it could never serve (is it the identity of the copy's recipient?)"
                    )
                key = self.journal.encrypted_key(bucket.primary.address, r)
                key = key or self.manifests.encrypted_key(r)
                if key is None:
                    continue
                if not self.gw.identities:
                    log.warning(
                        "replica %s holds age-encrypted copies and [gateway] has no identity: "
                        "it can never serve them",
                        r.name,
                    )
                    continue
                try:
                    head = await asyncio.wait_for(_head_bytes(r.store, key), 60)
                    decrypt_bytes(head, self.gw.identities)
                except DecryptError as exc:
                    if str(exc) == NO_MATCHING_IDENTITY:
                        raise ConfigError(
                            f"{where} cannot decrypt replica {r.name} (its copy {key!r} is for "
                            "other recipients): it could never serve"
                        ) from None
                except (TimeoutError, StoreError, OSError) as exc:
                    log.warning(
                        "replica %s: cannot check that identity decrypts it now (%s)",
                        r.name,
                        describe(exc),
                    )

    async def close(self) -> None:
        self.spool.close()
        self.writer.close()
        await self.health.close()
        await self.events.drain()
        await self.events.stopped()
        for store in self.stores.values():
            with contextlib.suppress(Exception):
                await store.close()
        self.journal.close()


def coverage(bucket: Bucket, journal: JournalView) -> list[str]:
    """One line per replica of ``bucket`` but the primary: how many objects this machine's
    journal and the replica's signed manifest record as verified there. A replica with none
    can never serve (a typo in its address is the usual cause: the copy went elsewhere), which
    must be seen at start-up, not during the outage it was meant to cover."""
    p = bucket.primary
    lines = []
    for r in bucket.others:
        copied = sum(1 for _ in journal.keys(p.address, [r], ""))
        signed = bucket.manifests.count(r)
        if copied or signed:
            lines.append(
                f"bucket {bucket.name}: replica {r.name} holds verified copies of {copied} "
                f"object(s) of {p.name} (journal) and {signed} (its signed manifest)"
            )
            continue
        others = sorted({d for d in journal.destinations(p.address) if d != r.name})
        hint = f" (did you mean {' or '.join(others)}?)" if others else ""
        lines.append(
            f"bucket {bucket.name}: replica {r.name} holds no verified copy of any object of "
            f"{p.name} (journal, signed manifests): it can never serve{hint}"
        )
    return lines


async def _head_bytes(store: Store, key: str, size: int = 64 * 1024) -> bytes:
    """The first ``size`` bytes of an object (an age header is far shorter)."""
    reader = await store.get(key, start=0, end=size)
    parts = [bytes(piece) async for piece in reader]
    return b"".join(parts)
