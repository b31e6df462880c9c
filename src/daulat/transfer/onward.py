"""Onward copies of encrypted replicas: leaving the provider that holds your encrypted copy.

``daulat exit vault:arsip elsewhere`` copies what ``vault:arsip`` holds byte for byte. When that
is a daulat-encrypted replica, the bytes are age ciphertext: the run (which needs no identity)
can prove only that it copied them faithfully, not what they decrypt to. What proves the
content is the replica's own signed, encrypted manifest (plaintext SHA-256 and real names),
which lives in ``arsip/.daulat/`` and is not data to copy. So an onward run

* finds the source's newest manifest that a trusted key signed (:func:`find_origin`); when it
  is encrypted (``.jsonl.age``) the source is an encrypted replica, and when it is a plain
  manifest whose entries name an origin the source is itself an onward copy (the origin
  travels on, unchanged);
* carries that manifest and its signature into the destination, at
  ``.daulat/origin/<its SHA-256>.jsonl.age`` (:func:`carry_origin`), checking while it copies
  that the bytes hash as expected and that a trusted key signed them; the source's signed
  ``names.key.age`` goes along to ``.daulat/names.key.age`` when the destination has none;
* records per object what it can prove, in its own signed (plain) manifest: the stored name,
  the SHA-256 and size of the ciphertext as stored, ``encryption: age`` and a reference to the
  origin manifest (:func:`onward_entry`; see :mod:`daulat.transfer.manifests`).

A restore from the onward copy (:func:`expect_from_origins`) believes the onward manifest as
any other (signature by a pinned key, chain, local record), then each origin it references
only through that reference: the carried file must hash to the referenced SHA-256, carry a
valid signature by a pinned key, and say in its header that it was written for the referenced
prefix and under the referenced name. Each object's ciphertext must then match the onward
manifest, and its plaintext the origin manifest; objects neither lists are not restored.

An onward run that encrypts again (``--encrypt-to``) treats the ciphertext as data and carries
nothing: restoring such a copy gives back the replica's ciphertext.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from daulat.crypto import Identity
from daulat.errors import IntegrityError, NotFound, StoreError
from daulat.signing import (
    MANIFEST_NAMESPACE,
    NAME_KEY_NAMESPACE,
    PublicKey,
    Signature,
    SignatureError,
    verify_bytes,
)
from daulat.transfer.journal import Journal
from daulat.transfer.manifests import (
    DST_MANIFEST_PREFIX,
    SIG_SUFFIX,
    Entry,
    ProvenanceError,
    WrongIdentity,
    fetch_signature,
    is_onward_entry,
    list_manifests,
    read_manifest,
)
from daulat.transfer.names import NAME_KEY_OBJECT, NAME_KEY_SIGNATURE
from daulat.transfer.provenance import choose_manifest, get_head, location
from daulat.transfer.retry import RetryPolicy

if TYPE_CHECKING:
    from daulat.transfer.model import Endpoint, Summary

#: Where an onward copy keeps the manifests it carries, relative to its prefix.
ORIGIN_DIR = DST_MANIFEST_PREFIX + "origin/"


@dataclass(frozen=True)
class Origin:
    """The signed manifest that proves what an onward copy's ciphertext decrypts to."""

    sha256: str  # of the manifest file as stored (as signed)
    name: str  # its file name where it was written
    prefix: str  # the prefix it was written for (its header says the same)
    store: str  # the store it was found in, as named where the onward copy was made
    carried_as: str  # where an onward copy holds it, relative to the copy's prefix
    # The part of the replica the copy holds ("" all of it; "c1/" when the onward run copied
    # ``prefix + "c1/"``): keys relative to the replica start with it, relative to the copy not.
    within: str = ""

    @property
    def ident(self) -> str:
        """One origin as a copy uses it (one file can be the origin of several parts)."""
        return f"{self.sha256}:{self.within}"

    def to_json(self) -> Entry:
        d: Entry = {
            "sha256": self.sha256,
            "name": self.name,
            "prefix": self.prefix,
            "store": self.store,
            "carried_as": self.carried_as,
        }
        if self.within:
            d["within"] = self.within
        return d

    @classmethod
    def from_json(cls, d: object) -> Origin | None:
        """The reference in an entry's ``origin`` field, or None if it is not one."""
        if not isinstance(d, dict):
            return None
        fields = [d.get(k) for k in ("sha256", "name", "prefix", "store", "carried_as")]
        within = d.get("within", "")
        if not all(isinstance(f, str) for f in fields) or not isinstance(within, str):
            return None
        sha, name, prefix, store, carried = (str(f) for f in fields)
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            return None
        if carried != carried_name(sha):
            return None  # only where daulat puts them: a reference cannot point elsewhere
        if within and not within.endswith("/"):
            return None
        return cls(sha, name, prefix, store, carried, within)


def carried_name(sha256: str) -> str:
    return f"{ORIGIN_DIR}{sha256}.jsonl.age"


@dataclass(frozen=True)
class Carry:
    """What an onward run carries from its source: the origin and where it is there."""

    origin: Origin
    source_key: str  # the origin manifest's key at the source
    name_key: str | None = None  # the source's names.key.age (its names are protected), if any

    @property
    def protected_names(self) -> bool:
        return self.name_key is not None


# ------------------------------------------------------------------------ the onward run


def _refuse(where: str, why: str) -> ProvenanceError:
    return ProvenanceError(
        f"{where} holds a daulat-encrypted replica, but {why}. Nothing was copied: without the "
        "replica's signed manifest a copy of its ciphertext could never be restored with proof"
    )


async def find_origin(
    src: Endpoint,
    journal: Journal,
    trusted: Sequence[PublicKey],
    identities: Sequence[Identity],
    retry: RetryPolicy,
) -> Carry | None:
    """What an onward run from ``src`` must carry, or None when ``src`` holds no
    daulat-encrypted replica (plain data, or a plain daulat copy: nothing to carry).

    The manifests of ``src``'s prefix decide, else those of the nearest enclosing prefix that
    has any (``src`` is then part of a replica): the newest one signed by one of ``trusted``,
    and the local record of the newest one seen there (see
    :func:`~daulat.transfer.provenance.choose_manifest`). Raises :class:`ProvenanceError` when
    an encrypted replica's manifests cannot be believed, or the believed one cannot be shown to
    be the newest.
    """
    prefix = src.prefix
    while True:
        probe = src if prefix == src.prefix else replace(src, prefix=prefix, label="")
        try:
            seen, carry = await _origin_at(
                probe, src.prefix[len(prefix) :], journal, trusted, identities, retry
            )
        except StoreError:
            if probe is src:
                raise
            # Credentials may reach only the part being copied: above it, nothing is seen.
            return None
        if seen:
            return carry
        if not prefix:
            return None
        prefix = prefix[:-1].rpartition("/")[0]
        prefix = f"{prefix}/" if prefix else ""


async def _origin_at(
    src: Endpoint,
    within: str,
    journal: Journal,
    trusted: Sequence[PublicKey],
    identities: Sequence[Identity],
    retry: RetryPolicy,
) -> tuple[bool, Carry | None]:
    """:func:`find_origin` for the manifests directly at ``src``'s prefix, of which the part
    ``within`` is copied, and whether there are any."""
    refs: dict[str, Origin] = {}
    onward_entries = [0]

    def reset() -> None:
        refs.clear()
        onward_entries[0] = 0

    def sink(entries: list[Entry]) -> None:
        for e in entries:
            if is_onward_entry(e):
                onward_entries[0] += 1
                ref = Origin.from_json(e.get("origin"))
                if ref is not None:
                    refs.setdefault(ref.ident, ref)

    try:
        choice = await retry.call(
            lambda: choose_manifest(src, journal, trusted, identities, reset, sink)
        )
    except WrongIdentity:
        # The identities given are for the destination, not this replica: judge it unread.
        choice = await retry.call(lambda: choose_manifest(src, journal, trusted, (), reset, sink))
    where = f"{src.store.name}:{src.prefix}"
    if choice.key is None:
        encrypted = [(k, why) for k, why in choice.ignored if k.endswith(".age")]
        if encrypted:
            key, why = encrypted[0]
            raise _refuse(
                where,
                f"no manifest there can be believed ({key[len(src.prefix) :]}: {why}); pin the "
                "key that signed it in `signers`",
            )
        head = get_head(journal, location(src))
        if choice.problems and head is not None and head.key.endswith(".age"):
            raise _refuse(where, "; ".join(choice.problems))
        return bool(choice.ignored or choice.problems), None
    encrypted_source = choice.key.endswith(".age")
    if not encrypted_source and not onward_entries[0]:
        return True, None  # a plain copy: its objects are the content
    if choice.problems:
        raise _refuse(where, "; ".join(choice.problems))
    name_key = src.prefix + NAME_KEY_OBJECT if await _has(src, NAME_KEY_OBJECT, retry) else None
    if encrypted_source:
        assert choice.sha256 is not None
        name = choice.key.rsplit("/", 1)[-1]
        head = get_head(journal, location(src))
        if head is not None and head.sha256 == choice.sha256:
            # The very file this machine saw as the newest, under whatever name it is offered.
            name = head.key.rsplit("/", 1)[-1]
        ref = Origin(
            choice.sha256, name, src.prefix, src.store.name, carried_name(choice.sha256), within
        )
        return True, Carry(ref, choice.key, name_key)
    if len(refs) != 1:
        why = (
            "its manifest names no usable origin"
            if not refs
            else f"its manifest names {len(refs)} origins (copies of several replicas)"
        )
        raise _refuse(where, f"{choice.key[len(src.prefix) :]} is an onward copy and {why}")
    (ref,) = refs.values()
    carry = Carry(replace(ref, within=ref.within + within), src.prefix + ref.carried_as, name_key)
    return True, carry


async def _has(ep: Endpoint, rel: str, retry: RetryPolicy) -> bool:
    try:
        await retry.call(lambda: ep.store.head(ep.prefix + rel))
    except NotFound:
        return False
    return True


async def _read(ep: Endpoint, key: str, retry: RetryPolicy) -> bytes | None:
    async def get() -> bytes:
        return await (await ep.store.get(key)).read_all()

    try:
        return await retry.call(get)
    except NotFound:
        return None


async def carry_origin(
    src: Endpoint,
    dst: Endpoint,
    carry: Carry,
    trusted: Sequence[PublicKey],
    retry: RetryPolicy,
) -> list[str]:
    """Copy the origin manifest (and its signature, and a signed name key) from ``src`` into
    ``dst``'s ``.daulat/``, before any object is written. Returns notes for the summary.

    The copy is refused by the store unless its bytes hash to the origin's SHA-256, and fails
    unless one of ``trusted`` signed them: a destination never holds a carried manifest that
    was not the one believed. Raises :class:`ProvenanceError` when it cannot be carried.
    """
    origin = carry.origin
    where = src.label or f"{src.store.name}:{src.prefix}"
    target = dst.prefix + origin.carried_as
    armored = await _read(src, carry.source_key + SIG_SUFFIX, retry)
    if armored is None:
        raise _refuse(where, f"the signature of {carry.source_key} disappeared")
    if not await _already_carried(dst, target, armored, retry):
        sig = await fetch_signature(src, carry.source_key)
        if isinstance(sig, str):
            raise _refuse(where, f"{carry.source_key}: {sig}")

        async def put() -> None:
            reader = await src.store.get(carry.source_key)
            await dst.store.put(target, _signed(reader, sig, trusted), sha256=origin.sha256)

        try:
            await retry.call(put)
        except (IntegrityError, SignatureError) as exc:
            raise _refuse(
                where, f"its manifest {carry.source_key} changed or is not signed: {exc}"
            ) from None
        except NotFound:
            raise _refuse(where, f"its manifest {carry.source_key} disappeared") from None
        await retry.call(lambda: dst.store.put(target + SIG_SUFFIX, armored))
    if carry.name_key is None:
        return []
    return await _carry_name_key(src, carry.name_key, dst, trusted, retry)


async def _already_carried(dst: Endpoint, target: str, armored: bytes, retry: RetryPolicy) -> bool:
    """The carried file and the same signature are at ``dst`` (a re-run): the file's content is
    checked by its SHA-256 whenever a restore reads it, so it is not copied again."""
    there = await _read(dst, target + SIG_SUFFIX, retry)
    return there == armored and await _has(dst, target[len(dst.prefix) :], retry)


async def _signed(
    chunks: AsyncIterable[bytes], sig: Signature, trusted: Sequence[PublicKey]
) -> AsyncIterator[bytes]:
    """Pass the manifest's bytes through; before the last one is handed over, check that one
    of ``trusted`` signed them (raising makes the put fail: nothing is written)."""
    h = sig.hasher()
    pending: bytes | None = None
    async for chunk in chunks:
        if pending is not None:
            yield pending
        h.update(chunk)
        pending = chunk
    sig.check(h.digest(), MANIFEST_NAMESPACE, trusted)
    if pending is not None:
        yield pending


async def _carry_name_key(
    src: Endpoint, key: str, dst: Endpoint, trusted: Sequence[PublicKey], retry: RetryPolicy
) -> list[str]:
    """Carry the replica's name key (only if a trusted key signed it), so that the onward copy
    can be verified against the data by name; the restore does not need it (the carried
    manifest maps stored names to real ones)."""
    if await _has(dst, NAME_KEY_OBJECT, retry):
        return []  # never replace a destination's name key
    sealed = await _read(src, key, retry)
    armored = await _read(src, key.removesuffix(NAME_KEY_OBJECT) + NAME_KEY_SIGNATURE, retry)
    if sealed is None or armored is None:
        return [f"{key} is missing or unsigned: the name key was not carried"]
    try:
        verify_bytes(armored, sealed, NAME_KEY_NAMESPACE, trusted)
    except SignatureError as exc:
        return [f"{key} was not carried: {exc}"]
    await retry.call(
        lambda: dst.store.put(dst.prefix + NAME_KEY_OBJECT, sealed, metadata={"encryption": "age"})
    )
    await retry.call(lambda: dst.store.put(dst.prefix + NAME_KEY_SIGNATURE, armored))
    return []


# ------------------------------------------------------------------------ restoring from one


class OnwardEntries:
    """During a restore, sets apart the entries of the believed manifest that are onward
    entries (temp table ``onward``), and lets the others through to ``sink``."""

    def __init__(self, journal: Journal, sink: Callable[[list[Entry]], None]) -> None:
        self._db = journal.db
        self._sink = sink
        self.reset()

    def reset(self) -> None:
        self._db.execute("DROP TABLE IF EXISTS temp.onward")
        self._db.execute(
            "CREATE TEMP TABLE onward (stored TEXT PRIMARY KEY, origin TEXT, ref TEXT, "
            "stored_sha256 TEXT, stored_size INTEGER) WITHOUT ROWID"
        )
        self.count = 0

    def __call__(self, entries: list[Entry]) -> None:
        rows: list[tuple[Any, ...]] = []
        rest: list[Entry] = []
        for e in entries:
            if not is_onward_entry(e):
                rest.append(e)
                continue
            ref = Origin.from_json(e.get("origin"))
            sha, size = e.get("stored_sha256"), e.get("stored_size")
            rows.append(
                (
                    e["key"],
                    ref.ident if ref else None,
                    json.dumps(ref.to_json()) if ref else None,
                    sha if isinstance(sha, str) else None,
                    size if isinstance(size, int) else None,
                )
            )
        if rows:
            self.count += len(rows)
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO onward VALUES (?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        if rest:
            self._sink(rest)


def _new_stored_expectations(journal: Journal) -> None:
    journal.db.execute("DROP TABLE IF EXISTS temp.expected_stored")
    journal.db.execute(
        "CREATE TEMP TABLE expected_stored (stored TEXT PRIMARY KEY, sha256 TEXT, size INTEGER) "
        "WITHOUT ROWID"
    )


def forget_stored_expectations(journal: Journal) -> None:
    """No ciphertext expectations (a restore from anything but an onward copy)."""
    journal.db.execute("DROP TABLE IF EXISTS temp.expected_stored")


def expects_stored(journal: Journal) -> bool:
    row = journal.db.execute(
        "SELECT 1 FROM temp.sqlite_master WHERE type = 'table' AND name = 'expected_stored'"
    ).fetchone()
    return row is not None


def expected_stored_sha256(journal: Journal, stored: str) -> str | None:
    """The SHA-256 the onward copy recorded for the object stored at ``stored`` (with the
    source prefix), as stored: ciphertext."""
    row = journal.db.execute(
        "SELECT sha256 FROM expected_stored WHERE stored = ?", (stored,)
    ).fetchone()
    return str(row[0]) if row and row[0] else None


async def expect_from_origins(
    src: Endpoint,
    journal: Journal,
    trusted: Sequence[PublicKey],
    identities: Sequence[Identity],
    summary: Summary,
    *,
    allow_unsigned: bool,
) -> None:
    """Turn the onward entries set apart by :class:`OnwardEntries` into the restore's
    expectations: each object's plaintext from its origin manifest (table ``expected``), its
    ciphertext from the onward manifest (table ``expected_stored``).

    Raises :class:`ProvenanceError` when an origin cannot be believed, unless
    ``allow_unsigned``: then those objects are restored under their stored names, checked
    only against the onward manifest's ciphertext hashes, and the summary says so.
    """
    db = journal.db
    _new_stored_expectations(journal)
    db.execute("DROP TABLE IF EXISTS temp.origin_entries")
    db.execute(
        "CREATE TEMP TABLE origin_entries (origin TEXT, stored TEXT, key TEXT, size INTEGER, "
        "sha256 TEXT, PRIMARY KEY (origin, stored)) WITHOUT ROWID"
    )
    refs = [
        Origin.from_json(json.loads(r))
        for (r,) in db.execute("SELECT DISTINCT ref FROM onward WHERE ref IS NOT NULL")
    ]
    problems: list[str] = []
    believed: list[str] = []
    if db.execute("SELECT 1 FROM onward WHERE ref IS NULL LIMIT 1").fetchone():
        problems.append("some of its entries name no usable origin manifest")
    for ref in refs:
        assert ref is not None
        problem = await _load_origin(src, journal, ref, trusted, identities)
        if problem is None:
            believed.append(f"{ref.name} of {ref.store}:{ref.prefix}")
        else:
            problems.append(problem)
    p = src.prefix
    db.execute("BEGIN")
    # Everything an origin lists is expected (so what the onward copy lacks is reported); each
    # object the onward copy holds is checked against the origin its own entry names.
    db.execute(
        "INSERT OR IGNORE INTO expected SELECT ? || stored, ? || key, size, sha256 "
        "FROM origin_entries",
        (p, p),
    )
    db.execute(
        "INSERT OR REPLACE INTO expected SELECT ? || w.stored, ? || o.key, o.size, o.sha256 "
        "FROM onward w JOIN origin_entries o ON o.origin = w.origin AND o.stored = w.stored",
        (p, p),
    )
    db.execute(
        "INSERT OR REPLACE INTO expected_stored SELECT ? || stored, stored_sha256, stored_size "
        "FROM onward",
        (p,),
    )
    if problems and allow_unsigned:
        db.execute(
            "INSERT OR IGNORE INTO expected SELECT ? || stored, ? || stored, NULL, NULL "
            "FROM onward",
            (p, p),
        )
    db.execute("COMMIT")
    if problems:
        reason = "; ".join(problems)
        if not allow_unsigned:
            label = src.label or location(src)
            raise ProvenanceError(
                f"{label} is an onward copy of an encrypted replica, and {reason}. Nothing was "
                "restored: what its objects decrypt to is not proven (--allow-unsigned "
                "restores them anyway, without that proof)"
            )
        summary.provenance = f"origin not proven: {reason}"
        return
    summary.provenance = (
        f"{summary.provenance or summary.checked_against_manifest}; contents checked against "
        f"the original manifest {', '.join(believed)}, carried in {ORIGIN_DIR}"
    )


async def _load_origin(
    src: Endpoint,
    journal: Journal,
    ref: Origin,
    trusted: Sequence[PublicKey],
    identities: Sequence[Identity],
) -> str | None:
    """Read the carried origin ``ref`` into ``origin_entries``; why not, if it cannot be."""
    db = journal.db

    within = ref.within

    def sink(entries: list[Entry]) -> None:
        rows = []
        for e in entries:
            key = str(e["key"])
            stored = e["stored_as"] if isinstance(e.get("stored_as"), str) else key
            if within:
                # Only the part of the replica the copy holds, keys relative to that part.
                if not (stored.startswith(within) and key.startswith(within)):
                    continue
                stored, key = stored[len(within) :], key[len(within) :]
            size, sha = e.get("size"), e.get("sha256")
            rows.append(
                (
                    ref.ident,
                    stored,
                    key,
                    size if isinstance(size, int) else None,
                    sha if isinstance(sha, str) else None,
                )
            )
        db.execute("BEGIN")
        db.executemany("INSERT OR REPLACE INTO origin_entries VALUES (?, ?, ?, ?, ?)", rows)
        db.execute("COMMIT")

    key = src.prefix + ref.carried_as
    what = f"the replica's manifest {ref.name} ({ref.store}:{ref.prefix}, carried in {ORIGIN_DIR})"
    try:
        await src.store.head(key)
    except NotFound:
        return f"{what} is missing there: withheld or deleted by the provider"
    except StoreError as exc:
        return f"{what} cannot be read: {exc}"
    r = await read_manifest(src, key, trusted, identities, sink, written_for=(ref.prefix, ref.name))
    if r.sha256 is not None and r.sha256 != ref.sha256:
        r.problem = "it is not the file the onward manifest names (another SHA-256)"
    if r.problem is not None or not r.read:
        db.execute("DELETE FROM origin_entries WHERE origin = ?", (ref.ident,))
        return f"{what} is not believed: {r.problem or 'it could not be read'}"
    return None


# ------------------------------------------------------------------------ verify


async def holds_onward_copies(
    ep: Endpoint, trusted: Sequence[PublicKey], identities: Sequence[Identity]
) -> bool:
    """Whether the newest manifest at ``ep`` that ``trusted`` signed lists onward entries
    (ciphertext copied as it was stored)."""
    found = [False]

    def sink(entries: list[Entry]) -> None:
        found[0] = found[0] or any(is_onward_entry(e) for e in entries)

    for key in await list_manifests(ep):
        found[0] = False
        r = await read_manifest(ep, key, trusted, identities, sink)
        if r.problem is None:
            return found[0]
    return False
