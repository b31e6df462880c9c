"""Which manifest of a destination to believe, and what this machine remembers about each.

The provider can plant, replace, replay, delete and withhold files, manifests included. So:

* a manifest is believed only with a valid signature by a trusted key (:mod:`daulat.signing`);
* the newest valid manifest is the one with the highest ``seq`` reachable from the newest name,
  and the local state (tables in the journal database) remembers, per destination location, the
  newest ``seq`` and file hash seen: an older manifest passed off as the newest, or the newest
  withheld, is refused rather than believed;
* objects a believed manifest does not list are *unproven*.

Writers (:func:`prepare_chain`, :func:`write_manifest`) chain each new manifest to the newest
valid one (``seq + 1``, ``prev`` = its hash) and carry forward the entries of manifests written
elsewhere, so that the newest manifest alone describes the whole prefix.

Local tables (created on first use, in the journal database):

``manifest_heads``
    per location (``store:prefix``): newest seq, hash and key seen or written, and the manifest
    being written now (``pending_*``), so that a crash between writing it and recording it is
    recognised on the next run.
``manifest_carried``
    per location: entries of manifests written elsewhere that this journal has no row for.
``pair_sources``
    the source description (store, prefix, provider, region, country) of each pair, for the
    entries of other pairs into the same location.

Why this module is long: choosing the manifest to believe and writing the next one are two
halves of one chain (``seq``, ``prev``, the local head), and each must see exactly what the
other records; kept together, the rules that make a replay or a withheld manifest visible are
read in one place.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daulat.crypto import Identity, Recipient
from daulat.errors import DaulatError
from daulat.signing import PublicKey, Signature, SigningKey, signers_line
from daulat.stores.chunkhash import to_hex_list
from daulat.transfer.journal import Journal, now
from daulat.transfer.manifests import (
    Entry,
    Header,
    ProvenanceError,
    ReadResult,
    Written,
    entry_line,
    entry_lines,
    fetch_signature,
    list_manifests,
    next_manifest_key,
    onward_entry,
    put_signed_manifest,
    read_manifest,
)

if TYPE_CHECKING:
    from daulat.transfer.model import Endpoint

_SCHEMA = """
CREATE TABLE IF NOT EXISTS manifest_heads (
    location TEXT PRIMARY KEY,     -- store:prefix
    seq INTEGER,                   -- newest manifest seen or written there
    sha256 TEXT,                   -- of that manifest's file as stored
    key TEXT,
    seen TEXT,
    pending_key TEXT,              -- a manifest being written now, and its seq
    pending_seq INTEGER,
    content TEXT                   -- hash of what the newest manifest this machine wrote says
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS manifest_carried (
    location TEXT NOT NULL,
    stored TEXT NOT NULL,          -- key as stored, relative to the prefix
    key TEXT NOT NULL,             -- real key, relative to the prefix
    line TEXT NOT NULL,            -- the manifest line
    stored_size INTEGER,
    etag TEXT,
    encrypted INTEGER NOT NULL,
    PRIMARY KEY (location, stored)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pair_sources (
    pair TEXT PRIMARY KEY,
    source TEXT NOT NULL
) WITHOUT ROWID;
"""

# A pair id ends with the codec tag of engine.Options.codec_tag, if any.
_CODEC = re.compile(r" \[(?:age:[0-9a-f]{16}(?:\+names)?|decrypt)\]$")
_WRITING_KINDS = ("copy", "sync", "exit", "restore")


def location(ep: Endpoint) -> str:
    return f"{ep.store.name}:{ep.prefix}"


def _db(journal: Journal) -> sqlite3.Connection:
    journal.db.executescript(_SCHEMA)
    return journal.db


@dataclass(frozen=True)
class Head:
    seq: int
    sha256: str
    key: str


def get_head(journal: Journal, loc: str) -> Head | None:
    row = (
        _db(journal)
        .execute("SELECT seq, sha256, key FROM manifest_heads WHERE location = ?", (loc,))
        .fetchone()
    )
    if row is None or row[0] is None:
        return None
    return Head(int(row[0]), str(row[1]), str(row[2]))


def _pending(journal: Journal, loc: str) -> tuple[str, int] | None:
    row = (
        _db(journal)
        .execute("SELECT pending_key, pending_seq FROM manifest_heads WHERE location = ?", (loc,))
        .fetchone()
    )
    return (str(row[0]), int(row[1])) if row and row[0] is not None else None


def _set_head(journal: Journal, loc: str, head: Head, content: str | None = None) -> None:
    _db(journal).execute(
        "INSERT INTO manifest_heads (location, seq, sha256, key, seen, content) "
        "VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (location) DO UPDATE SET seq = excluded.seq, sha256 = excluded.sha256, "
        "key = excluded.key, seen = excluded.seen, pending_key = NULL, pending_seq = NULL, "
        "content = excluded.content",
        (loc, head.seq, head.sha256, head.key, now(), content),
    )


def _head_content(journal: Journal, loc: str) -> str | None:
    row = (
        _db(journal)
        .execute("SELECT content FROM manifest_heads WHERE location = ?", (loc,))
        .fetchone()
    )
    return str(row[0]) if row and row[0] is not None else None


def _set_pending(journal: Journal, loc: str, key: str, seq: int) -> None:
    _db(journal).execute(
        "INSERT INTO manifest_heads (location, pending_key, pending_seq) VALUES (?, ?, ?) "
        "ON CONFLICT (location) DO UPDATE SET pending_key = excluded.pending_key, "
        "pending_seq = excluded.pending_seq",
        (loc, key, seq),
    )


# --------------------------------------------------------------------------------- the writer


@dataclass(frozen=True)
class Tip:
    """The newest valid manifest a new one chains to (seq 0: none)."""

    seq: int = 0
    sha256: str | None = None
    key: str | None = None
    present: bool = False  # the destination lists it


def _carry_sink(journal: Journal) -> Callable[[list[Entry]], None]:
    db = _db(journal)
    db.execute("DROP TABLE IF EXISTS temp.carry_in")
    db.execute(
        "CREATE TEMP TABLE carry_in (stored TEXT PRIMARY KEY, key TEXT, line TEXT, "
        "stored_size INTEGER, etag TEXT, encrypted INTEGER) WITHOUT ROWID"
    )

    def add(entries: list[Entry]) -> None:
        rows = []
        for e in entries:
            stored = e.get("stored_as") if isinstance(e.get("stored_as"), str) else e["key"]
            size = e.get("stored_size")
            etag = e.get("etag")
            rows.append(
                (
                    stored,
                    e["key"],
                    json.dumps(e, ensure_ascii=False),
                    size if isinstance(size, int) else None,
                    etag if isinstance(etag, str) else None,
                    # An onward entry holds ciphertext hashes and stored names: no secret.
                    int(e.get("encryption") is not None and "origin" not in e),
                )
            )
        db.execute("BEGIN")
        db.executemany("INSERT OR REPLACE INTO carry_in VALUES (?, ?, ?, ?, ?, ?)", rows)
        db.execute("COMMIT")

    return add


async def prepare_chain(
    dst: Endpoint,
    journal: Journal,
    trusted: Sequence[PublicKey],
    identities: Sequence[Identity],
    own: PublicKey,
) -> Tip:
    """The newest valid manifest at ``dst`` that a new manifest must follow.

    This machine's record, unless the destination holds a newer valid manifest (written
    elsewhere): that one is read and its entries are kept to be carried forward. Manifests that
    are not validly signed by a ``trusted`` key are ignored. Raises :class:`ProvenanceError` when
    such a newer manifest is encrypted and no identity to read it was given: a manifest written
    now without its entries would tell restores that they are not the customer's.
    """
    loc = location(dst)
    head = get_head(journal, loc)
    pending = _pending(journal, loc)
    names = await list_manifests(dst)
    for key in names:
        if head is not None and key <= head.key:
            break
        if pending is not None and key == pending[0]:
            # Written by this machine, which died before recording it.
            r = await read_manifest(dst, key, [own])
            if r.problem is None and r.sha256 is not None:
                head = Head(pending[1], r.sha256, key)
                _set_head(journal, loc, head)
                break
            continue
        r = await read_manifest(dst, key, trusted, identities, _carry_sink(journal))
        if r.problem is not None:
            continue
        if not r.read:
            assert r.signer is not None
            raise ProvenanceError(
                f"{dst.label or loc} holds a newer manifest {key}, signed by "
                f"{r.signer.fingerprint}, that this machine has not seen; it is encrypted: pass "
                "--identity FILE so that this run's manifest carries its entries forward"
            )
        if r.header is None or r.sha256 is None or (head and r.header.seq <= head.seq):
            continue
        db = _db(journal)
        db.execute("BEGIN")
        db.execute("DELETE FROM manifest_carried WHERE location = ?", (loc,))
        db.execute(
            "INSERT INTO manifest_carried SELECT ?, stored, key, line, stored_size, etag, "
            "encrypted FROM carry_in",
            (loc,),
        )
        db.execute("COMMIT")
        head = Head(r.header.seq, r.sha256, key)
        _set_head(journal, loc, head)
        break
    if head is None:
        return Tip()
    return Tip(head.seq, head.sha256, head.key, present=head.key in names)


def pairs_into(journal: Journal, loc: str) -> list[str]:
    """Pairs whose destination is ``loc``, the most recently run last."""
    rows = journal.db.execute(
        "SELECT pair, max(id) AS last FROM runs WHERE kind IN (?, ?, ?, ?) "
        "GROUP BY pair ORDER BY last",
        _WRITING_KINDS,
    )
    tail = " -> " + loc
    return [p for p, _ in rows if _CODEC.sub("", p).endswith(tail)]


def _default_source(pair: str, loc: str) -> dict[str, Any]:
    src = _CODEC.sub("", pair)[: -len(" -> " + loc)]
    store, _, prefix = src.partition(":")
    return {"store": store, "prefix": prefix}


def fill_entries(journal: Journal, loc: str, encrypted: bool) -> None:
    """Fill temp table ``mf`` with what the destination (temp table ``dst``, a fresh listing)
    holds as daulat wrote it: carried entries, then the journal rows of every pair into it
    (the newest pair last, so it wins). Plaintext manifests never carry encrypted entries:
    their names and hashes are as secret as the data."""
    db = _db(journal)
    db.execute("DROP TABLE IF EXISTS temp.mf")
    db.execute(
        "CREATE TEMP TABLE mf (stored TEXT PRIMARY KEY, key TEXT, line TEXT, carried INTEGER, "
        "stored_size INTEGER, etag TEXT, encrypted INTEGER) WITHOUT ROWID"
    )
    db.execute("BEGIN")
    db.execute(
        "INSERT OR REPLACE INTO mf SELECT c.stored, c.key, c.line, 1, c.stored_size, c.etag, "
        "c.encrypted FROM manifest_carried c JOIN dst d ON d.key = c.stored "
        "WHERE c.location = ? AND (c.stored_size IS NULL OR d.size = c.stored_size) "
        "AND (c.etag IS NULL OR d.etag IS c.etag) AND (? OR c.encrypted = 0)",
        (loc, int(encrypted)),
    )
    db.execute("COMMIT")
    for p in pairs_into(journal, loc):
        enc = "[age:" in p
        if enc and not encrypted:
            continue
        names = p.endswith("+names]")
        row = db.execute("SELECT source FROM pair_sources WHERE pair = ?", (p,)).fetchone()
        src = json.loads(row[0]) if row else _default_source(p, loc)
        # An onward copy of an encrypted replica (see daulat.transfer.onward).
        origin = src.pop("origin", None)
        source = json.dumps(src, ensure_ascii=False)  # once per pair, not per entry
        cursor = db.execute(
            "SELECT j.key, coalesce(j.plain_size, j.size), j.sha256, j.updated, j.stored_as, "
            "j.dst_size, j.dst_etag, c.chunk_size, c.sha256 FROM journal j "
            "JOIN dst d ON d.key = coalesce(j.stored_as, j.key) "
            "LEFT JOIN chunks c ON c.pair = j.pair AND c.key = j.key "
            "WHERE j.pair = ? AND j.state = 'done' AND j.sha256 IS NOT NULL "
            "AND d.size IS j.dst_size AND d.etag IS j.dst_etag",
            (p,),
        )
        while page := cursor.fetchmany(1000):
            rows = []
            for key, size, sha, updated, stored_as, dst_size, dst_etag, csize, cblob in page:
                stored = stored_as if stored_as is not None else key
                # After a restore of protected names the journal's key is the stored name and
                # stored_as the real one; under protected names it is the other way round.
                real = key if names else stored
                if origin is not None:
                    entry = onward_entry(
                        stored,
                        sha256=sha,
                        stored_size=dst_size,
                        etag=dst_etag,
                        origin=origin,
                        source=src,
                        copied=updated,
                    )
                    line = json.dumps(entry, ensure_ascii=False)
                    rows.append((stored, stored, line, 0, dst_size, dst_etag, 0))
                    continue
                line = entry_line(
                    real,
                    size=size,
                    sha256=sha,
                    source=source,
                    copied=updated,
                    stored_size=dst_size,
                    etag=dst_etag,
                    stored_as=stored if names else None,
                    encrypted=enc,
                    chunks={"size": csize, "sha256": to_hex_list(bytes(cblob))}
                    if csize and cblob
                    else None,
                )
                rows.append((stored, real, line, 0, dst_size, dst_etag, int(enc)))
            db.execute("BEGIN")
            db.executemany("INSERT OR REPLACE INTO mf VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            db.execute("COMMIT")
    db.execute("CREATE INDEX IF NOT EXISTS temp.mf_key ON mf (key)")


async def write_manifest(
    src: Endpoint,
    dst: Endpoint,
    journal: Journal,
    pair: str,
    *,
    signing_key: SigningKey,
    trusted: Sequence[PublicKey],
    identities: Sequence[Identity] = (),
    encrypt_to: Sequence[Recipient] = (),
    audit_head: str | None = None,
    origin: Entry | None = None,
) -> str:
    """Write the next signed manifest of ``dst`` (temp table ``dst`` must hold a listing of it
    taken after the run's writes) and record it as this location's newest.

    ``origin``: the run copied an encrypted replica's ciphertext as stored, and this is the
    reference to the replica's manifest it carried (:mod:`daulat.transfer.onward`)."""
    loc = location(dst)
    tip = await prepare_chain(dst, journal, trusted, identities, signing_key.public)
    source: dict[str, Any] = {"store": src.store.name, "prefix": src.prefix, **src.describe}
    if origin is not None:
        source["origin"] = origin
    _db(journal).execute(
        "INSERT OR REPLACE INTO pair_sources VALUES (?, ?)",
        (pair, json.dumps(source, ensure_ascii=False)),
    )
    fill_entries(journal, loc, bool(encrypt_to))
    db = journal.db
    content = _content_digest(db, dst, signing_key, encrypt_to)
    if tip.present and tip.key is not None and _head_content(journal, loc) == content:
        # Nothing changed since this machine's last manifest there, which is still the newest:
        # a run that changed nothing adds no copy of it.
        return tip.key
    key = _retried_key(journal, loc, tip, bool(encrypt_to)) or next_manifest_key(
        dst, bool(encrypt_to), tip.key
    )
    header = Header(
        seq=tip.seq + 1,
        prev=tip.sha256,
        signer=signing_key.public.line,
        time=now(),
        audit_head=audit_head,
        prefix=dst.prefix,
        store=dst.store.name,
        name=key.rsplit("/", 1)[-1],
    )
    _set_pending(journal, loc, key, header.seq)
    written: Written = await put_signed_manifest(
        dst,
        key,
        header,
        entry_lines(lambda: db.execute("SELECT line FROM mf ORDER BY key")),
        signing_key,
        encrypt_to,
    )
    db.execute("BEGIN")
    db.execute("DELETE FROM manifest_carried WHERE location = ?", (loc,))
    db.execute(
        "INSERT INTO manifest_carried SELECT ?, stored, key, line, stored_size, etag, encrypted "
        "FROM mf WHERE carried = 1",
        (loc,),
    )
    db.execute("COMMIT")
    _set_head(journal, loc, Head(written.seq, written.sha256, written.key), content)
    return written.key


def _retried_key(journal: Journal, loc: str, tip: Tip, encrypted: bool) -> str | None:
    """The key an earlier attempt at this same manifest was being written under, if any.

    A retried write (a 503 on the manifest or its signature) keeps its name, so that it does not
    leave a half-written manifest under another name behind it."""
    pending = _pending(journal, loc)
    if pending is None or pending[1] != tip.seq + 1:
        return None
    key = pending[0]
    if (tip.key is not None and key <= tip.key) or key.endswith(".age") != encrypted:
        return None
    return key


_DIGEST_PAGE = 1000  # manifest lines hashed per update


def _content_digest(
    db: sqlite3.Connection, dst: Endpoint, key: SigningKey, encrypt_to: Sequence[Recipient]
) -> str:
    """What a manifest would say (its entries, signer, prefix and recipients), as a hash."""
    h = hashlib.sha256()
    h.update(json.dumps([dst.prefix, key.public.line, sorted(map(str, encrypt_to))]).encode())
    rows = db.execute("SELECT line FROM mf ORDER BY key")
    # The lines each followed by a newline, as one update per page of rows rather than one
    # per object: the same bytes in the same order, so the same digest as ever.
    while page := rows.fetchmany(_DIGEST_PAGE):
        h.update(("\n".join([line for (line,) in page]) + "\n").encode())
    return h.hexdigest()


# -------------------------------------------------------------------------------- the readers


@dataclass
class Choice:
    """The manifest a restore or verify believes, and why anything is not proven."""

    key: str | None = None
    seq: int | None = None
    sha256: str | None = None
    signer: PublicKey | None = None
    read: bool = False  # its entries went to the sink
    time: str | None = None  # when it was written, as its signed header says (None: unread)
    problems: list[str] = field(default_factory=list)  # origin or newness not proven
    ignored: list[tuple[str, str]] = field(default_factory=list)  # manifests not believed


async def choose_manifest(
    ep: Endpoint,
    journal: Journal,
    trusted: Sequence[PublicKey],
    identities: Sequence[Identity],
    reset: Callable[[], None],
    sink: Callable[[list[Entry]], None],
) -> Choice:
    """Find the newest valid manifest at ``ep`` and feed its entries to ``sink``.

    ``reset`` empties what ``sink`` collected (called before each manifest is read, so only the
    chosen one's entries remain). The local record of the newest manifest seen there is checked
    (a lower ``seq``, another file with the same ``seq``, a broken chain back to it: problems)
    and moved forward when the choice is newer and sound.
    """
    loc = location(ep)
    label = ep.label or loc
    head = get_head(journal, loc)
    names = await list_manifests(ep)
    choice = Choice()
    chosen: ReadResult | None = None
    rest: list[str] = []
    for i, key in enumerate(names):
        reset()
        r = await read_manifest(ep, key, trusted, identities, sink)
        if r.problem is not None:
            choice.ignored.append((key, r.problem))
            continue
        chosen, rest = r, names[i + 1 :]
        break
    if chosen is None:
        reset()
        if head is not None:
            choice.problems.append(_newest_not_believed(label, head, names, choice.ignored))
        elif names:
            choice.problems.append(f"no manifest at {label} is signed by a pinned signer")
        return choice
    choice.key, choice.sha256, choice.signer, choice.read = (
        chosen.key,
        chosen.sha256,
        chosen.signer,
        chosen.read,
    )
    if chosen.header is not None:
        choice.seq, choice.time = chosen.header.seq, chosen.header.time
        if head is not None:
            problem = await _against_head(ep, chosen, head, rest, trusted, identities, label)
            if problem and chosen.header.seq < head.seq and head.key in names:
                # The newer one is there, only not believed: say that, not "withheld".
                problem = _newest_not_believed(label, head, names, choice.ignored)
            if problem:
                choice.problems.append(problem)
    elif head is not None and chosen.sha256 != head.sha256:
        # Encrypted and no identity: only the file hash can be compared with the record.
        offered = (
            # Same name, other bytes: naming the file twice would say nothing.
            f"{label}'s newest manifest {chosen.key} is not the file seen here under that name "
            f"(seq {head.seq}): its content was replaced (an older manifest replayed under "
            "the newer name, or a forged one)"
            if chosen.key == head.key
            else f"{label} offers {chosen.key} as its newest manifest, not {head.key} (seq "
            f"{head.seq}) seen here"
        )
        choice.problems.append(
            f"{offered}; it is encrypted: pass --identity FILE to check its chain"
        )
    if (
        not choice.problems
        and chosen.header is not None
        and chosen.sha256 is not None
        and (head is None or chosen.header.seq > head.seq)
    ):
        _set_head(journal, loc, Head(chosen.header.seq, chosen.sha256, chosen.key))
    return choice


def _newest_not_believed(
    label: str, head: Head, names: Sequence[str], ignored: Sequence[tuple[str, str]]
) -> str:
    """Why the newest manifest seen here is not the one believed: absent (withheld or deleted)
    or present but not believed (its signer not pinned, most often: that is no attack)."""
    seen = f"the newest manifest seen here for {label}, {head.key} (seq {head.seq}),"
    if head.key not in names:
        return f"{seen} is missing there: withheld or deleted by the provider"
    why = dict(ignored).get(head.key, "it could not be read")
    if why.startswith("signed by "):
        return (
            f"{seen} is there but not signed by a pinned signer: {why}. If that key is yours "
            "(say, the key this machine signed with before another was pinned), add it to "
            "`signers`; `daulat keys show FILE.sign` prints a signing key's public key"
        )
    return f"{seen} is there but not believed: {why}"


async def _against_head(
    ep: Endpoint,
    chosen: ReadResult,
    head: Head,
    older: list[str],
    trusted: Sequence[PublicKey],
    identities: Sequence[Identity],
    label: str,
) -> str | None:
    assert chosen.header is not None
    seq = chosen.header.seq
    if seq < head.seq:
        return (
            f"{label} offers {chosen.key} (seq {seq}) as its newest manifest, but {head.key} "
            f"(seq {head.seq}) was seen here: an older manifest passed off as the newest, or "
            "the newest withheld"
        )
    if seq == head.seq:
        if chosen.sha256 != head.sha256:
            seen = "under that name" if chosen.key == head.key else f"({head.key})"
            return (
                f"{chosen.key} (seq {seq}) at {label} differs from the manifest with that seq "
                f"seen here {seen}"
            )
        return None
    # Newer than the record: its chain must lead back to the manifest seen here.
    want = chosen.header.prev
    at_seq = seq
    for key in older:
        if want is None or at_seq <= head.seq:
            break
        r = await read_manifest(ep, key, trusted, identities)
        if r.sha256 != want:
            continue
        if want == head.sha256:
            return None
        if r.problem is not None or r.header is None:
            return f"the chain of manifests at {label} is broken at {key}: {r.problem or 'unread'}"
        want, at_seq = r.header.prev, r.header.seq
    if want == head.sha256:
        return None
    return (
        f"the chain of manifests at {label} from {chosen.key} (seq {seq}) does not lead back to "
        f"{head.key} (seq {head.seq}) seen here: a manifest between them is missing"
    )


async def read_unsigned(
    ep: Endpoint,
    identities: Sequence[Identity],
    reset: Callable[[], None],
    sink: Callable[[list[Entry]], None],
) -> str | None:
    """The newest manifest at ``ep`` that can be read at all (for ``--allow-unsigned``)."""
    for key in await list_manifests(ep):
        reset()
        r = await read_manifest(ep, key, (), identities, sink, require_signature=False)
        if r.read and (r.problem is None or r.problem.startswith(("unsigned", "signed by"))):
            return key
    reset()
    return None


async def newest_signer(ep: Endpoint) -> tuple[str, PublicKey] | None:
    """The newest manifest at ``ep`` and the key its signature names, as the store presents
    them (nothing is verified: for a hint to the user only). None when there is none or the
    store cannot tell."""
    try:
        names = await list_manifests(ep)
        if not names:
            return None
        sig = await fetch_signature(ep, names[0])
    except DaulatError:
        return None
    return (names[0], sig.public_key) if isinstance(sig, Signature) else None


def no_signers_message(
    config_hint: str, own: PublicKey | None, newest: tuple[str, PublicKey] | None = None
) -> str:
    """How to pin a signer, exactly. ``own``: this machine's signing key; ``newest``: the
    newest manifest at the source and the key its signature names (see :func:`newest_signer`).

    This machine's key is offered only when it is the one that signed: on a machine that
    never signed the copies it would be the wrong key to pin.
    """
    how = f"add the signing key the copies were signed with to {config_hint}'s top level"
    if newest is not None and own is not None and newest[1] == own:
        how += f": {signers_line([own])} (this machine's own signing key, which signed {newest[0]})"
    elif newest is not None:
        how += (
            f"; the newest manifest there, {newest[0]}, names {newest[1].fingerprint} as its "
            f"signer: if that is your key, {signers_line([newest[1]])}"
        )
    else:
        how += ', e.g. signers = ["ssh-ed25519 AAAA..."]'
    return (
        "no pinned signer: restore believes only manifests signed by a key in `signers`; "
        + how
        + ". `daulat keys show FILE.sign` prints the public key of a signing key (FILE.sign "
        "beside the identity `daulat keys new` made); --allow-unsigned restores without proof "
        "of origin"
    )


def state_dir_of(journal: Journal) -> Path:
    """The state directory a journal lives in (its own signing key is there too)."""
    return journal.path.parent
