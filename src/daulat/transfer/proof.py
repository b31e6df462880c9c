"""What the engine and ``verify`` ask of the signed manifests: sign what a run wrote, believe
only what a pinned key signed, and set apart what no believed manifest lists (*unproven*).

A restore (``Kind.RESTORE``) refuses, as a configuration matter (exit 2), when it cannot prove
the origin of what it would restore: no pinned signer, no manifest signed by one, the newest
manifest seen here withheld or replaced by an older one. ``allow_unsigned`` restores anyway and
says so; ``allow_unproven`` also restores objects the believed manifest does not list (an age
file among them decrypted or failed, never written as ciphertext: :mod:`daulat.transfer.unproven`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from daulat.audit import AuditLogError, audit_log
from daulat.crypto import Identity, Recipient
from daulat.signing import PublicKey, SigningKey, existing_local_key, local_signing_key
from daulat.transfer.journal import Journal
from daulat.transfer.manifests import (
    DST_MANIFEST_PREFIX,
    Entry,
    ProvenanceError,
    load_into_expected,
)
from daulat.transfer.nested import own_records
from daulat.transfer.onward import (
    OnwardEntries,
    Origin,
    expect_from_origins,
    forget_stored_expectations,
)
from daulat.transfer.provenance import (
    choose_manifest,
    fill_entries,
    get_head,
    location,
    newest_signer,
    no_signers_message,
    pairs_into,
    prepare_chain,
    read_unsigned,
    state_dir_of,
    write_manifest,
)
from daulat.transfer.retry import RetryPolicy
from daulat.transfer.unproven import UNPROVEN_AGE

if TYPE_CHECKING:
    from daulat.transfer.model import Endpoint, Summary


@dataclass(frozen=True)
class ManifestSigning:
    """How a run signs its manifest and which manifests it believes."""

    # Signs this run's manifest; None: the state directory's own key (created on first need).
    key: SigningKey | None = field(default=None, repr=False)
    # Pinned public keys (config ``signers``): the only signers a restore believes; writers
    # believe their own key too.
    signers: Sequence[PublicKey] = ()
    # To read an encrypted destination's earlier manifest written elsewhere.
    identities: Sequence[Identity] = field(default=(), repr=False)
    allow_unsigned: bool = False  # restore: without a manifest signed by a pinned signer
    allow_unproven: bool = False  # restore: objects the manifest does not list, too

    def signing_key(self, journal: Journal) -> SigningKey:
        if self.key is not None:
            return self.key
        return local_signing_key(state_dir_of(journal))[0]

    def trusted(self, own: PublicKey | None) -> list[PublicKey]:
        keys = list(self.signers)
        if own is not None and own not in keys:
            keys.append(own)
        return keys


async def check_chain_before_writing(
    dst: Endpoint, journal: Journal, signing: ManifestSigning, retry: RetryPolicy
) -> None:
    """Find the manifest this run's must follow before anything is written (raises
    :class:`ProvenanceError` when it cannot be followed, see :func:`prepare_chain`)."""
    key = signing.signing_key(journal)
    await retry.call(
        lambda: prepare_chain(
            dst, journal, signing.trusted(key.public), signing.identities, key.public
        )
    )


def _audit_head(journal: Journal) -> str | None:
    try:
        head = audit_log(state_dir_of(journal)).head()
    except AuditLogError:
        # A damaged log has no head to anchor; `daulat audit verify` says what is wrong.
        return None
    return head.hash if head is not None else None


async def write_run_manifest(
    src: Endpoint,
    dst: Endpoint,
    journal: Journal,
    pair: str,
    signing: ManifestSigning,
    encrypt_to: Sequence[Recipient],
    origin: Origin | None = None,
) -> str:
    """Write the destination's next signed manifest; temp table ``dst`` holds a listing of it
    taken after the run's writes. ``origin``: the run is an onward copy of an encrypted
    replica, whose manifest it carried (:mod:`daulat.transfer.onward`)."""
    key = signing.signing_key(journal)
    return await write_manifest(
        src,
        dst,
        journal,
        pair,
        signing_key=key,
        trusted=signing.trusted(key.public),
        identities=signing.identities,
        encrypt_to=encrypt_to,
        audit_head=_audit_head(journal),
        origin=origin.to_json() if origin is not None else None,
    )


async def load_restore_manifest(
    src: Endpoint,
    journal: Journal,
    signing: ManifestSigning,
    identities: Sequence[Identity],
    summary: Summary,
) -> bool:
    """Load the manifest a restore from ``src`` checks against into the ``expected`` table.

    Returns True when that manifest lists objects and none of them is encrypted: the replica
    is a plain copy, restored as stored (each object still checked against the manifest's
    SHA-256) rather than failing every object as "cannot decrypt".

    Raises :class:`ProvenanceError` when the origin cannot be proven, unless
    ``allow_unsigned``: then the summary says why it is not proven.
    """
    label = src.label or location(src)
    if not signing.signers and not signing.allow_unsigned:
        own = signing.key.public if signing.key else existing_local_key(state_dir_of(journal))
        raise ProvenanceError(no_signers_message("daulat.toml", own, await newest_signer(src)))
    journal.new_expected()
    forget_stored_expectations(journal)
    # How the entries of the manifest read say their objects are stored: plain or age.
    stored = {"plain": 0, "age": 0}
    expect = load_into_expected(journal, src.prefix)

    def counted(entries: list[Entry]) -> None:
        for e in entries:
            stored["age" if e.get("encryption") else "plain"] += 1
        expect(entries)

    # Entries of an onward copy of an encrypted replica are set apart: their plaintext is
    # proven by the replica's own manifest, carried along (daulat.transfer.onward).
    sink = OnwardEntries(journal, counted)

    def reset() -> None:
        journal.new_expected()
        sink.reset()
        stored.update(plain=0, age=0)

    def plain() -> bool:
        # The manifest of an encrypted copy is encrypted too (and older ones name no
        # encryption in their entries): only a plain manifest listing no age object says plain.
        manifest = summary.checked_against_manifest
        if sink.count or stored["age"] or not stored["plain"] or not manifest:
            return False
        if manifest.endswith(".age"):
            return False
        summary.notes.append(
            f"{label}'s signed manifest lists no encrypted object: what it lists is restored as "
            "stored, each checked against the manifest's SHA-256; no identity is needed for it"
        )
        return True

    choice = await choose_manifest(src, journal, signing.signers, identities, reset, sink)
    summary.notes += [f"ignored {k}: {why}" for k, why in choice.ignored]
    if choice.key is not None and choice.read and not choice.problems:
        assert choice.signer is not None
        summary.checked_against_manifest = choice.key
        summary.provenance = (
            f"{choice.key} (seq {choice.seq}) signed by the pinned key {choice.signer.fingerprint}"
        )
        if sink.count:
            await expect_from_origins(
                src,
                journal,
                signing.signers,
                identities,
                summary,
                allow_unsigned=signing.allow_unsigned,
            )
        return plain()
    reason = "; ".join(choice.problems) or f"no daulat manifest at {label}"
    if not signing.allow_unsigned:
        raise ProvenanceError(
            f"{reason}. Nothing was restored: the origin of what {label} holds is not proven "
            "(--allow-unsigned restores it anyway, without that proof)"
        )
    summary.provenance = f"origin not proven: {reason}"
    if choice.key is not None and choice.read:
        summary.checked_against_manifest = choice.key
    else:
        summary.checked_against_manifest = await read_unsigned(src, identities, reset, sink)
    if sink.count:
        await expect_from_origins(
            src, journal, signing.signers, identities, summary, allow_unsigned=True
        )
        summary.provenance = f"origin not proven: {reason}"
    return plain()


# How the reason of an object a later signed run replaced by a plaintext copy begins
# (:mod:`daulat.transfer.replaced`, which proves it before saying it).
REPLACED = "replaced by a plaintext copy"

# Failures (``Summary.failed`` reasons) that running the same command again cannot change:
# the source object is not what its signed manifest says, or cannot be decrypted, or a later
# signed run replaced it by a plaintext copy, or it is an unproven age file the restore cannot
# open (daulat.transfer.unproven). Those are objects the run tried (they count as left); the
# last two here are never attempted.
_LASTING_ATTEMPTED = ("the source manifest's SHA-256", "cannot decrypt", REPLACED, UNPROVEN_AGE)
_LASTING_UNATTEMPTED = ("listed in the manifest but missing at the source", "real name is unknown")


def retry_would_help(summary: Summary) -> bool:
    """Whether anything left undone by a run could be done by running it again: False when
    all that is missing was refused, forged, damaged or withheld at the source, or replaced
    by a plaintext copy by a later signed run (:mod:`daulat.transfer.replaced`)."""
    attempted = {k for k, r in summary.failed if any(m in r for m in _LASTING_ATTEMPTED)}
    lasting = attempted | {
        k for k, r in summary.failed if any(m in r for m in _LASTING_UNATTEMPTED)
    }
    return (
        any(k not in lasting for k, _ in summary.failed)
        or summary.left_objects > len(attempted)
        or any(k not in lasting for k, _ in summary.unverified)
    )


def name_problems_by_real_name(journal: Journal, summary: Summary) -> None:
    """Restore of protected names: report the objects that failed, were refused or are
    unverified by their real names (from the manifest, as the listing's ``dkey``), not by the
    keyed hashes they are stored under, which name nothing the user knows. The stored name
    goes to ``summary.stored_as``."""
    db = journal.db

    def real(key: str) -> str | None:
        row = db.execute("SELECT dkey FROM temp.src WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row and row[0] is not None else None

    def renamed(problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
        out = []
        for key, reason in problems:
            name = real(key)
            if name is None:
                out.append((key, reason))
                continue
            summary.stored_as[name] = key
            out.append((name, reason.replace(repr(key), repr(name))))
        return out

    if not db.execute("SELECT 1 FROM temp.src WHERE dkey IS NOT NULL LIMIT 1").fetchone():
        return  # names are not protected: keys are real names already
    summary.failed = renamed(summary.failed)
    summary.refused = renamed(summary.refused)
    summary.unverified = renamed(summary.unverified)


async def drop_nested_bookkeeping(
    src: Endpoint, journal: Journal, signing: ManifestSigning, summary: Summary
) -> set[str]:
    """Leave out of a restore daulat's own files of copies made into sub-prefixes of the
    source (``sub/.daulat/manifest-...``; the source's own ``.daulat/`` is never listed): they
    are not data to restore. Restoring ``SRC:sub`` checks them. What is daulat's own is decided
    by :func:`daulat.transfer.nested.own_records`: a file the restore's manifest lists is data
    (a user's ``x/.daulat/manifest-…``), one no pinned signer signed is left to
    :func:`settle_unproven` (planted, as far as anyone can tell).

    Returns the sub-prefixes (relative to ``src.prefix``, ending in '/') that hold such files,
    where :func:`daulat.transfer.replaced.explain_replaced` looks for signed records."""
    db = journal.db
    sizes = {
        str(key): int(size)
        for key, size in db.execute(
            "SELECT key, size FROM src WHERE instr(key, '/' || ?) > 0", (DST_MANIFEST_PREFIX,)
        )
    }
    if not sizes:
        return set()

    def listed(key: str) -> bool:
        row = db.execute("SELECT 1 FROM expected WHERE stored = ?", (src.prefix + key,)).fetchone()
        return row is not None

    found = await own_records(src.store, src.prefix, sizes, signing.signers, listed=listed)
    own = sorted((k, sizes[k]) for k in found)
    if not own:
        return set()
    n, size = len(own), sum(s for _, s in own)
    db.execute("BEGIN")
    db.executemany("DELETE FROM src WHERE key = ?", [(k,) for k, _ in own])
    db.execute("COMMIT")
    summary.source_objects -= int(n)
    summary.source_bytes -= int(size)
    summary.notes.append(
        f"left out {int(n):,} file(s) daulat keeps under {DST_MANIFEST_PREFIX} of sub-prefixes "
        "(the manifests of copies made into them): restore such a prefix itself to check them"
    )
    return {k.rsplit("/" + DST_MANIFEST_PREFIX, 1)[0] + "/" for k, _ in own}


def settle_unproven(
    src: Endpoint, journal: Journal, signing: ManifestSigning, summary: Summary
) -> int:
    """Take objects the restore's manifest does not list out of the source listing (temp table
    ``src``) unless ``allow_unproven``, and report what it lists that the source lacks.

    Returns how many objects were taken out.
    """
    if summary.checked_against_manifest is None:
        return 0
    db, prefix, n = journal.db, src.prefix, len(src.prefix)
    missing = db.execute(
        "SELECT e.key FROM expected e WHERE substr(e.stored, 1, ?) = ? "
        "AND NOT EXISTS (SELECT 1 FROM src s WHERE s.key = substr(e.stored, ? + 1)) "
        "ORDER BY e.key",
        (n, prefix, n),
    ).fetchall()
    summary.failed += [
        (str(k)[n:], "listed in the manifest but missing at the source: withheld or deleted")
        for (k,) in missing
    ]
    unlisted = "NOT EXISTS (SELECT 1 FROM expected e WHERE e.stored = ? || src.key)"
    keys = [
        str(k)
        for (k,) in db.execute(f"SELECT key FROM src WHERE {unlisted} ORDER BY key", (prefix,))
    ]
    if not keys:
        return 0
    if signing.allow_unproven:
        summary.unproven_restored = keys
        summary.notes.append(
            f"{len(keys):,} object(s) the manifest does not list are restored anyway "
            "(--allow-unproven): their origin is not proven; age files among them are "
            "decrypted with the identity or fail, never written as ciphertext"
        )
        return 0
    if summary.restored_plain:
        summary.notes.append(
            "a manifest of a run that copied in the clear never lists the encrypted objects an "
            "earlier run left beside them: if the objects not listed were copied encrypted, "
            "--allow-unproven with --identity FILE restores them decrypted (their origin "
            "still not proven)"
        )
    db.execute("BEGIN")
    db.execute(f"DELETE FROM src WHERE {unlisted}", (prefix,))
    db.execute("COMMIT")
    summary.unproven = [
        (k, "not listed in the manifest: origin not proven, not restored") for k in keys
    ]
    return len(keys)


async def check_destination(
    dst: Endpoint,
    journal: Journal,
    trusted: Sequence[PublicKey] | None,
    identities: Sequence[Identity],
) -> list[tuple[str, str]]:
    """``verify``'s manifest checks: the chain at ``dst`` and objects there that the newest
    valid manifest does not list (temp tables ``src`` and ``dst`` hold fresh listings).

    ``trusted`` None: this state directory's own signing key. Returns problems as (key, reason).
    """
    if trusted is None:
        own = existing_local_key(state_dir_of(journal))
        trusted = [own] if own is not None else []
    loc = location(dst)
    db = journal.db

    def reset() -> None:
        db.execute("DROP TABLE IF EXISTS temp.proven")
        db.execute("CREATE TEMP TABLE proven (stored TEXT PRIMARY KEY) WITHOUT ROWID")

    def sink(entries: list[Entry]) -> None:
        db.execute("BEGIN")
        db.executemany(
            "INSERT OR IGNORE INTO proven VALUES (?)",
            [
                (e["stored_as"] if isinstance(e.get("stored_as"), str) else e["key"],)
                for e in entries
            ],
        )
        db.execute("COMMIT")

    head = get_head(journal, loc)
    reset()
    choice = await choose_manifest(dst, journal, trusted, identities, reset, sink)
    where = dst.prefix + DST_MANIFEST_PREFIX
    problems = [(where, p) for p in choice.problems]
    problems += [(k, f"manifest not believed: {why}") for k, why in choice.ignored]
    if choice.key is None:
        if head is None and not pairs_into(journal, loc) and not problems:
            return []  # nothing daulat made is known to be there: nothing to prove
        if not choice.problems:
            problems.append((where, "no manifest signed by a pinned signer"))
        return problems
    if not choice.read:
        if choice.problems:
            return problems
        if head is None or head.sha256 != choice.sha256:
            problems.append(
                (choice.key, "encrypted: pass --identity FILE to check which objects it lists")
            )
            return problems
        # Encrypted and no identity: the newest manifest is the one this machine wrote or
        # saw (same hash), so what it lists is what this machine's records say.
        fill_entries(journal, loc, encrypted=True)
        db.execute("INSERT OR IGNORE INTO proven SELECT stored FROM mf")
    db.execute("CREATE INDEX IF NOT EXISTS temp.src_dkey ON src (dkey) WHERE dkey IS NOT NULL")
    unproven = [
        str(k)
        for (k,) in db.execute(
            "SELECT d.key FROM dst d "
            "WHERE NOT EXISTS (SELECT 1 FROM proven p WHERE p.stored = d.key) "
            "AND NOT EXISTS (SELECT 1 FROM src s WHERE s.key = d.key AND s.dkey IS NULL) "
            "AND NOT EXISTS (SELECT 1 FROM src s WHERE s.dkey = d.key) ORDER BY d.key"
        )
    ]

    def listed(key: str) -> bool:
        return db.execute("SELECT 1 FROM proven WHERE stored = ?", (key,)).fetchone() is not None

    # The manifests of a copy made into a sub-prefix are daulat's, proven by their own chain
    # (verify that sub-prefix to check them), not objects of this copy; files merely named so
    # stay unproven (daulat.transfer.nested).
    records = await own_records(dst.store, dst.prefix, unproven, trusted, listed=listed)
    problems += [
        (k, "unproven: at the destination but not listed in its signed manifest")
        for k in unproven
        if k not in records
    ]
    return problems
