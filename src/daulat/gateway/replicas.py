"""Which replicas hold a verified copy of the current version of an object.

The first store of a bucket's ``replicas`` is the *primary* (usually the original); the others
serve an object only where daulat's own records say they hold a verified copy of its current
version:

- the **journal** (``.daulat/transfers.sqlite``, read-only here): a ``done`` row of a copy from
  the primary's address to the replica's address (plain or ``age``-encrypted), whose source
  size and ETag are the primary's *now*. An object changed at the primary since the copy
  matches no row and is served from the primary only;
- the replicas' newest **signed manifests** (signed by a pinned signer or this machine's own
  key, read once at start): used when the primary does not answer, so its current version
  cannot be asked. Then the journal's newest record of the key says which content is current,
  or, without one, the manifests in preference order.

Every verified version carries the SHA-256 of each 8 MiB chunk of its plaintext (journal
``chunks`` table or the manifest's ``chunks`` field; one chunk: the whole-object hash), and the
reader (:mod:`daulat.gateway.reading`) checks every byte against them, from whichever replica.

A copy is matched to a replica by the exact addresses: ``daulat exit kpu vault:arsip`` is the
copy behind ``replicas = ["kpu", "vault:arsip"]``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from daulat.address import Address
from daulat.crypto import Identity
from daulat.errors import DaulatError, MissingRoot, StoreError
from daulat.signing import PublicKey
from daulat.stores.base import ObjectInfo, Store
from daulat.stores.chunkhash import CHUNK_SIZE, chunk_count, from_hex_list, split_digests
from daulat.transfer.journal import JOURNAL_NAME

log = logging.getLogger("daulat.gateway")

PAIRS_TTL = 5.0
_CODEC = re.compile(r"^(?: \[(age:[0-9a-f]{16}(?:\+names)?)\])?$")


@dataclass(frozen=True)
class Replica:
    """One store of a bucket, at its prefix."""

    address: Address
    store: Store
    primary: bool = False

    @property
    def name(self) -> str:
        return self.address.label


@dataclass(frozen=True)
class Source:
    """Where one replica holds the object: the key in its store, and whether it is age data."""

    replica: Replica
    key: str
    encrypted: bool = False


@dataclass
class Version:
    """The object to serve: its plaintext size, identity and where it may be read."""

    key: str
    size: int
    modified: dt.datetime
    etag: str  # the gateway's ETag: from the plaintext SHA-256, whichever replica serves
    sha256: str | None  # None: never copied (or changed since), served from the primary only
    chunk_size: int = CHUNK_SIZE
    chunks: list[bytes] | None = None
    sources: list[Source] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return self.chunks is not None


def etag_of(sha256: str) -> str:
    """A quoted ETag from the plaintext hash: 64 hex digits, never mistaken for an MD5."""
    return f'"{sha256}"'


def unverified_etag(info: ObjectInfo) -> str:
    """An ETag for an object only the primary holds: derived from its own, never 32 hex digits
    (clients check those as MD5), and changing whenever the primary's does."""
    seed = f"{info.etag}\0{info.size}\0{info.modified.isoformat()}".encode()
    return f'"{hashlib.sha256(seed).hexdigest()[:40]}-primary"'


def _chunks(
    size: int, sha256: str, chunk_size: int | None, blob: bytes | None
) -> list[bytes] | None:
    """The chunk digests of a version, or None when the record does not fit its size."""
    if blob is None or not chunk_size:
        if size > CHUNK_SIZE:
            return None  # a large object copied before chunk hashes existed: not checkable
        try:
            return [bytes.fromhex(sha256)]
        except ValueError:
            return None
    digests = split_digests(blob)
    return digests if len(digests) == chunk_count(size, chunk_size) else None


@dataclass(frozen=True)
class Record:
    """One replica's record of one key: journal row or manifest entry."""

    replica: Replica
    stored_key: str  # in the replica's store
    encrypted: bool
    size: int  # plaintext
    sha256: str
    chunk_size: int
    chunks: list[bytes]
    src_size: int | None = None  # journal only: the primary's size and ETag when copied
    src_etag: str | None = None
    updated: str = ""


class JournalView:
    """Read-only queries on the transfer journal (never locks out a running copy)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / JOURNAL_NAME
        self._db: sqlite3.Connection | None = None
        self._pairs: list[str] = []
        self._pairs_at = 0.0

    def _conn(self) -> sqlite3.Connection | None:
        if self._db is None:
            if not self.path.exists():
                return None
            self._db = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, check_same_thread=False, timeout=5.0
            )
        return self._db

    def pairs(self) -> list[str]:
        now = time.monotonic()
        if now - self._pairs_at > PAIRS_TTL:
            db = self._conn()
            try:
                rows = db.execute("SELECT DISTINCT pair FROM runs").fetchall() if db else []
            except sqlite3.Error:
                rows = []
            self._pairs, self._pairs_at = [r[0] for r in rows], now
        return self._pairs

    def refresh(self) -> None:
        """Forget the pairs read: the gateway has just written rows (perhaps of a new pair)."""
        self._pairs_at = 0.0

    def records(self, primary: Address, replica: Replica, key: str) -> list[Record]:
        db = self._conn()
        if db is None:
            return []
        head = (
            f"{primary.store}:{primary.prefix} -> {replica.address.store}:{replica.address.prefix}"
        )
        out: list[Record] = []
        for pair in self.pairs():
            if not pair.startswith(head):
                continue
            codec = _CODEC.match(pair[len(head) :])
            if codec is None:
                continue
            try:
                row = db.execute(
                    "SELECT size, src_etag, sha256, coalesce(plain_size, size), stored_as, updated "
                    "FROM journal WHERE pair = ? AND key = ? AND state = 'done' "
                    "AND sha256 IS NOT NULL",
                    (pair, key),
                ).fetchone()
                chunk = (
                    db.execute(
                        "SELECT chunk_size, sha256 FROM chunks WHERE pair = ? AND key = ?",
                        (pair, key),
                    ).fetchone()
                    if row
                    else None
                )
            except sqlite3.Error as exc:
                log.warning("cannot read the journal %s: %s", self.path, exc)
                continue
            if row is None:
                continue
            src_size, src_etag, sha, plain, stored_as, updated = row
            csize, blob = (int(chunk[0]), bytes(chunk[1])) if chunk else (None, None)
            digests = _chunks(int(plain), sha, csize, blob)
            if digests is None:
                continue
            out.append(
                Record(
                    replica=replica,
                    stored_key=replica.address.prefix
                    + (stored_as if stored_as is not None else key),
                    encrypted=codec.group(1) is not None,
                    size=int(plain),
                    sha256=sha,
                    chunk_size=csize or CHUNK_SIZE,
                    chunks=digests,
                    src_size=int(src_size),
                    src_etag=src_etag,
                    updated=str(updated),
                )
            )
        return out

    def _copy_pairs(self, primary: Address, replicas: Sequence[Replica]) -> list[str]:
        """The journal's pairs of copies from ``primary`` to one of ``replicas``."""
        heads = [
            f"{primary.store}:{primary.prefix} -> {r.address.store}:{r.address.prefix}"
            for r in replicas
        ]
        return [
            pair
            for pair in self.pairs()
            if any(pair.startswith(h) and _CODEC.match(pair[len(h) :]) for h in heads)
        ]

    def unvouched(
        self, primary: Address, replicas: Sequence[Replica], prefix: str
    ) -> tuple[int, str | None]:
        """(How many, the first) keys under ``prefix`` that the journal knows the primary holds
        (a copy of them failed, a gateway write of them lags or was not acknowledged) while
        none of ``replicas`` holds them verified: a listing made from the replicas would leave
        them out."""
        db = self._conn()
        pairs = self._copy_pairs(primary, replicas) if db is not None else []
        if db is None or not pairs:
            return 0, None
        marks = ",".join("?" * len(pairs))
        try:
            count, first = db.execute(
                "SELECT count(*), min(key) FROM (SELECT key FROM journal "
                f"WHERE pair IN ({marks}) AND key >= ? AND substr(key, 1, ?) = ? "
                "GROUP BY key HAVING max(state = 'done') = 0)",
                (*pairs, prefix, len(prefix), prefix),
            ).fetchone()
        except sqlite3.Error as exc:
            log.warning("cannot read the journal %s: %s", self.path, exc)
            return 0, None
        return int(count), first

    def keys(
        self, primary: Address, replicas: Sequence[Replica], prefix: str
    ) -> Iterator[tuple[str, int, str, str]]:
        """(key, plaintext size, sha256, updated) of every done row under ``prefix`` of any copy
        from the primary to one of ``replicas`` (unsorted, duplicates possible)."""
        db = self._conn()
        if db is None:
            return
        for pair in self._copy_pairs(primary, replicas):
            try:
                cursor = db.execute(
                    "SELECT key, coalesce(plain_size, size), sha256, updated FROM journal "
                    "WHERE pair = ? AND state = 'done' AND sha256 IS NOT NULL AND key >= ? "
                    "AND substr(key, 1, ?) = ?",
                    (pair, prefix, len(prefix), prefix),
                )
                while page := cursor.fetchmany(1000):
                    for k, size, sha, updated in page:
                        yield str(k), int(size), str(sha), str(updated)
            except sqlite3.Error as exc:
                log.warning("cannot read the journal %s: %s", self.path, exc)

    def encrypted_key(self, primary: Address, replica: Replica) -> str | None:
        """The key in ``replica``'s store of one object copied there age-encrypted, if any."""
        db = self._conn()
        head = f"{primary.store}:{primary.prefix} -> {replica.address.store}:"
        head += replica.address.prefix
        for pair in self.pairs() if db is not None else []:
            codec = _CODEC.match(pair[len(head) :]) if pair.startswith(head) else None
            if db is None or codec is None or codec.group(1) is None:
                continue
            row = db.execute(
                "SELECT coalesce(stored_as, key) FROM journal WHERE pair = ? AND state = 'done' "
                "LIMIT 1",
                (pair,),
            ).fetchone()
            if row is not None:
                return replica.address.prefix + str(row[0])
        return None

    def destinations(self, primary: Address) -> list[str]:
        """The addresses (STORE[:PREFIX]) copies from ``primary`` went to, per the journal."""
        head = f"{primary.store}:{primary.prefix} -> "
        out = []
        for pair in self.pairs():
            if pair.startswith(head):
                dst = pair[len(head) :].partition(" [")[0]
                store, _, prefix = dst.partition(":")
                out.append(Address(store, prefix).label)
        return out

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class ManifestIndex:
    """The entries of each replica's newest believed signed manifest, in memory (SQLite)."""

    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        self.db.execute(
            "CREATE TABLE entries (replica TEXT, key TEXT, size INTEGER, sha256 TEXT, "
            "chunk_size INTEGER, chunks BLOB, stored_key TEXT, encrypted INTEGER, copied TEXT, "
            "PRIMARY KEY (replica, key))"
        )
        self.believed: dict[str, str] = {}  # replica name → manifest key
        self.problems: dict[str, str] = {}

    async def load(
        self, replica: Replica, trusted: Sequence[PublicKey], identities: Sequence[Identity]
    ) -> None:
        from daulat.transfer.engine import Endpoint
        from daulat.transfer.manifests import Entry, list_manifests, read_manifest

        ep = Endpoint(replica.store, replica.address.prefix, label=replica.name)
        try:
            names = await list_manifests(ep)
        except (StoreError, MissingRoot) as exc:
            self.problems[replica.name] = f"cannot list its manifests: {exc}"
            return
        rows: list[tuple[object, ...]] = []

        def sink(entries: list[Entry]) -> None:
            for e in entries:
                key, sha, size = e.get("key"), e.get("sha256"), e.get("size")
                if (
                    not isinstance(key, str)
                    or not isinstance(sha, str)
                    or not isinstance(size, int)
                ):
                    continue  # onward entries: plaintext unknown here
                chunks = e.get("chunks")
                csize, blob = None, None
                if isinstance(chunks, dict) and isinstance(chunks.get("size"), int):
                    csize = chunks["size"]
                    blob = from_hex_list(chunks.get("sha256"), size, csize)
                    if blob is None:
                        continue
                stored = e.get("stored_as")
                rows.append(
                    (
                        replica.name,
                        key,
                        size,
                        sha,
                        csize,
                        blob,
                        replica.address.prefix + (stored if isinstance(stored, str) else key),
                        int(e.get("encryption") == "age"),
                        str(e.get("copied", "")),
                    )
                )

        for name in names:
            rows.clear()
            try:
                result = await read_manifest(ep, name, trusted, identities, sink)
            except DaulatError as exc:
                self.problems[replica.name] = f"{name}: {exc}"
                continue
            if result.problem is None and result.read:
                self.believed[replica.name] = name
                self.db.execute("DELETE FROM entries WHERE replica = ?", (replica.name,))
                self.db.executemany(
                    "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
                )
                self.db.commit()
                return
            self.problems.setdefault(replica.name, f"{name}: {result.problem or 'not read'}")

    def record(self, replica: Replica, key: str) -> Record | None:
        row = self.db.execute(
            "SELECT size, sha256, chunk_size, chunks, stored_key, encrypted, copied FROM entries "
            "WHERE replica = ? AND key = ?",
            (replica.name, key),
        ).fetchone()
        if row is None:
            return None
        size, sha, csize, blob, stored, enc, copied = row
        digests = _chunks(int(size), sha, csize, blob)
        if digests is None:
            return None
        return Record(
            replica, stored, bool(enc), int(size), sha, csize or CHUNK_SIZE, digests, updated=copied
        )

    def encrypted_key(self, replica: Replica) -> str | None:
        """The key in ``replica``'s store of one age-encrypted object its manifest lists."""
        row = self.db.execute(
            "SELECT stored_key FROM entries WHERE replica = ? AND encrypted = 1 LIMIT 1",
            (replica.name,),
        ).fetchone()
        return None if row is None else str(row[0])

    def count(self, replica: Replica) -> int:
        """The entries of ``replica``'s believed manifest."""
        row = self.db.execute(
            "SELECT count(*) FROM entries WHERE replica = ?", (replica.name,)
        ).fetchone()
        return int(row[0])

    def keys(self, replicas: Sequence[Replica], prefix: str) -> Iterator[tuple[str, int, str, str]]:
        names = [r.name for r in replicas]
        marks = ",".join("?" * len(names))
        cursor = self.db.execute(
            f"SELECT key, size, sha256, copied FROM entries WHERE replica IN ({marks}) "
            "AND substr(key, 1, ?) = ?",
            (*names, len(prefix), prefix),
        )
        while page := cursor.fetchmany(1000):
            yield from ((str(k), int(s), str(h), str(c)) for k, s, h, c in page)
