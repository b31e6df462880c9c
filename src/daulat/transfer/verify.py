"""``daulat verify``: compare a destination with its source by content.

Default (cheap): for every source object, the journal must hold the SHA-256 recorded when it was
copied from this same source version, and the destination must still list it with the size and
ETag it reported right after that copy. ETags are compared only within one store, never across
providers, so no provider's hash scheme is trusted to mean "content".

The cheap form trusts the listing: an object the provider replaced with other bytes of the same
size while keeping its ETag (a file rewritten in place with its times restored, say) passes it.

``--full`` re-reads both sides and hashes them: the destination content must equal the source
content and, where recorded, the journal's hash. An object whose content differs (or does not
decrypt) is no longer recorded as done (:meth:`Journal.replaced`): later cheap verifications
report it, the policies stop counting it, and the next copy or exit sends it again.

Every report says what "verified" meant (``verified_by``): :data:`VERIFIED_BY_LISTING` or
:data:`VERIFIED_BY_CONTENT`.

Under protected names each source object is looked for under its stored name (the listing's
``dkey``), computed with the destination's name key.

An onward copy of an encrypted replica (:mod:`daulat.transfer.onward`) holds the replica's
ciphertext: ``--full`` with ``--identity`` decrypts it to compare it with a plaintext source
(the data the replica was made from), and compares it as stored with an age-encrypted source
(the replica it was copied from).

Filters (:mod:`daulat.filters`) select the source objects to check by their key relative to the
source prefix, and the destination objects by theirs relative to the destination prefix (for
the check for objects no manifest lists). Under protected names the destination's keys are
keyed hashes, which no filter can judge: a filtered verify there looks only at the stored
objects of the selected source objects, and only an unfiltered one also reports objects
planted under names nobody knows. A filtered verification sets the ``verified`` time of the
objects it checked but is not recorded as a verification of the whole pair.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from daulat.crypto import NO_MATCHING_IDENTITY, DecryptError, Identity
from daulat.errors import AccessDenied, ConfigError, NotFound, StoreError
from daulat.filters import EVERYTHING, Filter
from daulat.signing import PublicKey, existing_local_key
from daulat.stores.crypt import CryptStore
from daulat.transfer.adoption import PROOF_FIELD
from daulat.transfer.distrust import distrust_replaced
from daulat.transfer.journal import REPLACED, Journal, now
from daulat.transfer.keepout import KeepOut, OwnState
from daulat.transfer.listings import list_into
from daulat.transfer.manifests import DST_MANIFEST_PREFIX, WrongIdentity
from daulat.transfer.markers import set_aside_folder_markers
from daulat.transfer.model import (
    VERIFIED_BY_CONTENT,
    VERIFIED_BY_LISTING,
    VERIFIED_BY_LISTING_ADOPTED,
    Endpoint,
    pair_id,
)
from daulat.transfer.names import NameKey
from daulat.transfer.onward import holds_onward_copies
from daulat.transfer.proof import check_destination


@dataclass
class VerifyReport:
    src: str
    dst: str
    full: bool
    objects: int = 0
    bytes: int = 0
    verified: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)
    stopped: str | None = None
    # A stopped verification: the source objects it never judged (neither verified nor found
    # wrong), or None when not even the source listing finished (``objects`` then counts what
    # it had listed).
    unchecked_objects: int | None = 0
    # Filters: their rules (None: none given) and the source objects they left out, which
    # ``objects`` does not count.
    filter: list[str] | None = None
    excluded_objects: int = 0
    excluded_bytes: int = 0
    # Source objects under its top-level .daulat/, daulat's reserved namespace at every
    # destination: a copy never carries them, so they are not compared (the first keys).
    reserved_objects: int = 0
    reserved_bytes: int = 0
    reserved: list[str] = field(default_factory=list)
    # Runs of the pair adopted objects by proof: the listing check claims no upload checksum
    # for them.
    adopted: bool = False

    @property
    def verified_by(self) -> str:
        """What "verified" meant for this report."""
        if self.full:
            return VERIFIED_BY_CONTENT
        return VERIFIED_BY_LISTING_ADOPTED if self.adopted else VERIFIED_BY_LISTING

    @property
    def ok(self) -> bool:
        return self.stopped is None and not self.problems and self.verified == self.objects

    def to_json(self) -> dict[str, object]:
        d = dict(self.__dict__)
        d["ok"] = self.ok
        d["verified_by"] = self.verified_by
        d["problems"] = [{"key": k, "reason": r} for k, r in self.problems]
        return d


# The verdict on one listed object, in SQL so that memory stays flat for any number of them:
# NULL when verified, else why not. The order of the cases is the order of the questions.
_VERDICT = """CASE
    WHEN j.state = 'refused' THEN 'refused: ' || coalesce(j.error, '')
    WHEN d.size IS NULL THEN 'missing at the destination'
    WHEN j.state = 'failed' AND j.error IS :replaced THEN j.error
    WHEN j.state IS NOT 'done' OR j.sha256 IS NULL THEN
        CASE WHEN j.error IS NOT NULL THEN 'not copied by daulat (' || j.error || ')'
             -- The listing alone proves this one different (under the same name, so not a
             -- name-protected replica); say so rather than only "run verify --full".
             WHEN s.dkey IS NULL AND d.size IS NOT s.size THEN
                 'size differs: ' || s.size || ' bytes at the source, ' || d.size
                 || ' at the destination (not copied by daulat)'
             ELSE 'no recorded hash (not copied by daulat): run verify --full' END
    WHEN j.size IS NOT s.size OR j.src_etag IS NOT s.etag
        THEN 'changed at the source since it was copied'
    WHEN d.size IS NOT j.dst_size OR d.etag IS NOT j.dst_etag
        THEN 'different at the destination from what was written'
END"""


def check_listed(
    journal: Journal, pair: str, *, run_id: int, full: bool = False, whole: bool = True
) -> VerifyReport:
    """Classify every object of temp tables ``src``/``dst`` against the journal; record the
    verification (``whole``: ``src`` is the pair's whole source, not a filtered part).
    Objects verified get their ``verified`` time set in the journal."""
    db = journal.db
    report = VerifyReport("", "", full)
    db.execute("DROP TABLE IF EXISTS temp.verdicts")
    db.execute(
        f"""CREATE TEMP TABLE verdicts AS
            SELECT s.key AS key, s.size AS size, {_VERDICT} AS reason
            FROM src s LEFT JOIN journal j ON j.pair = :pair AND j.key = s.key
            LEFT JOIN dst d ON d.key = coalesce(s.dkey, s.key)""",
        {"pair": pair, "replaced": REPLACED},
    )
    objects, size, verified = db.execute(
        "SELECT count(*), coalesce(sum(size), 0), count(*) - count(reason) FROM verdicts"
    ).fetchone()
    report.objects, report.bytes, report.verified = int(objects), int(size), int(verified)
    report.problems = [
        (str(k), str(r))
        for k, r in db.execute(
            "SELECT key, reason FROM verdicts WHERE reason IS NOT NULL ORDER BY key"
        )
    ]
    t = now()
    db.execute("BEGIN")
    db.execute(
        "UPDATE journal SET verified = ? WHERE pair = ? "
        "AND key IN (SELECT key FROM verdicts WHERE reason IS NULL)",
        (t, pair),
    )
    db.execute("COMMIT")
    _record(journal, pair, run_id, [], report, t, whole=whole)
    db.execute("DROP TABLE temp.verdicts")
    return report


def _record(
    journal: Journal,
    pair: str,
    run_id: int,
    ok_keys: list[str],
    report: VerifyReport,
    t: str | None = None,
    *,
    whole: bool = True,
) -> None:
    db = journal.db
    t = t or now()
    for start in range(0, len(ok_keys), 1000):
        db.execute("BEGIN")
        db.executemany(
            "UPDATE journal SET verified = ? WHERE pair = ? AND key = ?",
            [(t, pair, k) for k in ok_keys[start : start + 1000]],
        )
        db.execute("COMMIT")
    # An object that fails now is no longer verified, whatever an earlier run found.
    bad = [k for k, _ in report.problems]
    for start in range(0, len(bad), 1000):
        db.execute("BEGIN")
        db.executemany(
            "UPDATE journal SET verified = NULL WHERE pair = ? AND key = ?",
            [(pair, k) for k in bad[start : start + 1000]],
        )
        db.execute("COMMIT")
    if not whole:
        # A filtered check says nothing of the objects it did not select. The policies take
        # an object as verified when its time is not older than the pair's latest
        # verification, so recording this one would make them forget the others.
        return
    db.execute(
        "INSERT INTO verifications (pair, run_id, time, full, objects, verified, problems) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (pair, run_id, t, int(report.full), report.objects, report.verified, len(report.problems)),
    )


AGE_MAGIC = b"age-encryption.org/v1\n"


async def _dst_sha256(dst: Endpoint, dkey: str, identities: Sequence[Identity]) -> str:
    """SHA-256 of what ``dkey`` holds: its plaintext when ``identities`` are given."""
    store = CryptStore(dst.store, identities=identities) if identities else dst.store
    return (await _sha256(await store.get(dst.prefix + dkey)))[0]


async def _sha256(chunks: AsyncIterable[bytes], head: list[bytes] | None = None) -> tuple[str, int]:
    """SHA-256 and size of a stream; ``head`` receives its first chunk."""
    h = hashlib.sha256()
    n = 0
    it = aiter(chunks)
    try:
        async for chunk in it:
            if head is not None and not head:
                head.append(bytes(chunk[: len(AGE_MAGIC)]))
            if len(chunk) >= 1 << 20:
                await asyncio.to_thread(h.update, chunk)
            else:
                h.update(chunk)
            n += len(chunk)
    finally:
        # Closed here, in this task, also when it is cancelled mid-object: a stream left to
        # the event loop's finaliser is closed later, concurrently with its inner streams.
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()
    return h.hexdigest(), n


async def verify(
    src: Endpoint,
    dst: Endpoint,
    journal: Journal,
    *,
    full: bool = False,
    concurrency: int = 16,
    identities: Sequence[Identity] = (),
    name_key: NameKey | None = None,
    trusted: Sequence[PublicKey] | None = None,
    filter: Filter = EVERYTHING,
    own_state: OwnState | None = None,
    checker: ContentChecker | None = None,
    identity_files: Sequence[str] = (),
) -> VerifyReport:
    """Verify ``dst`` against ``src``. Never raises for store failures; see the report.

    ``checker``: with ``full``, where content is re-read and hashed (a Ray cluster), which
    opens the identities from ``identity_files`` itself; everything else (listings, journal,
    manifests, the report) stays here. Without ``full`` nothing is read, so it is not used.

    daulat's local state and its ``.daulat/`` namespace are left out on both sides, as a copy
    leaves them out (:mod:`daulat.transfer.keepout`; ``own_state``: the running state
    directory's place in either endpoint); objects under the source's ``.daulat/`` that are not
    daulat's own (reserved: never copied) are counted in the report's ``reserved_*``.

    ``filter`` selects the objects checked (see the module docstring).

    An encrypted destination is checked by its recorded plaintext hashes; ``--full`` decrypts it
    with ``identities`` and hashes the plaintext. ``name_key`` is the destination's name key when
    it holds protected names.

    The destination's manifests are checked too: the newest must be signed by one of
    ``trusted`` (None: this state directory's own signing key) and follow the one seen here
    before; objects there that it does not list are problems (*unproven*).
    """
    pair = journal.find_pair(pair_id(src, dst))
    # Protected names exist only in encrypted copies: known even when the journal is lost.
    encrypted = "[age:" in pair or name_key is not None
    if full and encrypted and not identities:
        raise ConfigError(
            f"{dst.label} holds age-encrypted copies: verify --full needs --identity FILE"
        )
    run_id = journal.begin_run("verify", pair, src.label, dst.label)
    report = VerifyReport(src.label, dst.label, full)
    report.adopted = journal.adopted_in(pair)
    whole = not filter.active
    excluded: tuple[int, int] | None = None
    src_keep_out = KeepOut(own_state.src if own_state else None)
    try:
        names = name_key.stored_name if name_key is not None else None
        excluded = await list_into(
            journal,
            "src",
            src,
            names=names,
            filter=filter,
            # Not ``exclude``: the source's .daulat/ is judged as a copy judges it, so that
            # reserved objects are counted, not dropped unseen.
            keep_out=src_keep_out,
        )
        await list_into(
            journal,
            "dst",
            dst,
            exclude=DST_MANIFEST_PREFIX,
            filter=EVERYTHING if names is not None else filter,
            keep_out=KeepOut(own_state.dst if own_state else None, destination=True),
        )
        if names is not None and not whole:
            _only_selected_stored(journal)
        if names is None:  # markers a directory cannot hold were not copied: not missing
            await set_aside_folder_markers(journal, dst.store, dst.prefix, names_protected=False)
        if not full:
            listed = check_listed(journal, pair, run_id=run_id, whole=whole)
            listed.src, listed.dst = src.label, dst.label
            listed.adopted = report.adopted
            report = listed
        else:
            onward = not encrypted
            if onward:
                believed = trusted
                if believed is None:
                    own = existing_local_key(journal.path.parent)
                    believed = [own] if own is not None else []
                onward = await holds_onward_copies(dst, believed, identities)
            await _verify_full(
                src,
                dst,
                journal,
                pair,
                run_id,
                report,
                concurrency,
                identities if encrypted else (),
                whole=whole,
                onward=onward,
                onward_identities=identities,
                checker=checker,
                identity_files=identity_files,
            )
        report.excluded_objects, report.excluded_bytes = excluded
        kept = src_keep_out.kept
        report.reserved_objects, report.reserved_bytes = kept.reserved_objects, kept.reserved_bytes
        report.reserved = list(kept.reserved)
        report.problems += await check_destination(dst, journal, trusted, identities)
    except (AccessDenied, WrongIdentity) as exc:
        report.stopped = str(exc)
        _count_unchecked(journal, report, source_listed=excluded is not None)
    except BaseException as exc:
        # A signal (or the caller) cancelled it, or an error nobody expected: say which.
        stopped = isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt))
        journal.end_run(run_id, "interrupted" if stopped else "failed", "{}")
        raise
    if not whole:
        report.filter = filter.describe()
    journal.end_run(
        run_id,
        "complete" if report.ok else "incomplete",
        json.dumps({"filter": report.filter}) if report.filter else "{}",
    )
    return report


def _count_unchecked(journal: Journal, report: VerifyReport, *, source_listed: bool) -> None:
    """A verification stopped part-way: count the whole source listing (or what it had listed)
    and what was never judged, so a stop never reads as "0 objects, problems 0"."""
    try:
        objects, size = journal.listing_totals("src")
    except sqlite3.Error:
        objects, size = 0, 0
    if objects > report.objects:
        report.objects, report.bytes = objects, size
    judged = report.verified + len(report.problems)
    report.unchecked_objects = max(0, report.objects - judged) if source_listed else None


@dataclass(frozen=True, slots=True)
class ToCheck:
    """One object ``--full`` re-reads at both sides: its source key, its key at the
    destination, its source size and the SHA-256 the journal recorded for it (if any)."""

    key: str
    dkey: str
    size: int
    recorded: str | None


@dataclass(frozen=True, slots=True)
class Judged:
    """The verdict on one :class:`ToCheck`: ``problem`` None when verified; ``replaced`` when
    the destination holds other content than was written (the journal must stop calling it
    done)."""

    key: str
    problem: str | None = None
    replaced: bool = False


@dataclass(frozen=True)
class ContentJob:
    """What re-reading content elsewhere needs (names and flags only: nothing secret).

    ``decrypt``: the destination is age-encrypted and is hashed decrypted; ``onward``: it is
    an onward copy of an encrypted replica (see the module docstring). ``identity_files``:
    where the identities are, for whoever reads the content; ``recipients``: their public
    keys, so that a reader can check it holds the same identities."""

    src_store: str
    src_prefix: str
    dst_store: str
    dst_prefix: str
    concurrency: int
    decrypt: bool = False
    onward: bool = False
    identity_files: tuple[str, ...] = ()
    recipients: tuple[str, ...] = ()


@runtime_checkable
class ContentChecker(Protocol):
    """Re-reads and hashes objects elsewhere (``verify --full --engine ray``): judges each of
    ``items`` as :func:`judge_content` does and hands the verdicts to ``on_judged`` in batches
    (each object once). Raises :class:`AccessDenied` or :class:`WrongIdentity` to stop the
    verification, as the local reading does. ``planned``: objects and bytes in ``items``."""

    async def check_content(
        self,
        job: ContentJob,
        items: Iterator[ToCheck],
        planned: tuple[int, int],
        on_judged: Callable[[Sequence[Judged]], None],
    ) -> None: ...


async def judge_content(
    src: Endpoint,
    dst: Endpoint,
    item: ToCheck,
    identities: Sequence[Identity],
    *,
    onward: bool = False,
    onward_identities: Sequence[Identity] = (),
) -> Judged:
    """Re-read and hash one object at both sides. Raises :class:`AccessDenied` and
    :class:`WrongIdentity` (they stop the whole verification); any other failure is this
    object's problem. ``identities`` decrypt the destination (empty: hashed as stored)."""
    key = item.key
    try:
        head: list[bytes] = []
        src_hash, _ = await _sha256(await src.store.get(src.prefix + key), head)
        keys = identities
        plain_source = not (head and head[0].startswith(AGE_MAGIC))
        if onward and plain_source:
            # Ciphertext against plaintext: decrypted. Against ciphertext: as stored.
            if not onward_identities:
                return Judged(
                    key, "age-encrypted at the destination: compare it with --identity FILE"
                )
            keys = onward_identities
        dst_hash = await _dst_sha256(dst, item.dkey, keys)
        if onward and onward_identities and dst_hash != src_hash and not plain_source:
            # An age file among the plaintext: its copy is encrypted again.
            dst_hash = await _dst_sha256(dst, item.dkey, onward_identities)
    except DecryptError as exc:
        if str(exc) == NO_MATCHING_IDENTITY:
            raise WrongIdentity(str(exc)) from None
        return Judged(key, str(exc), replaced=True)  # "cannot decrypt: ..." already
    except NotFound:
        return Judged(key, "disappeared while verifying")
    except (AccessDenied, WrongIdentity):
        raise
    except StoreError as exc:
        return Judged(key, f"could not read: {exc}")
    if dst_hash != src_hash:
        return Judged(key, "content differs from the source", replaced=True)
    if item.recorded is not None and item.recorded != src_hash:
        return Judged(key, "content differs from the hash recorded at copy time", replaced=True)
    return Judged(key)


async def _verify_full(
    src: Endpoint,
    dst: Endpoint,
    journal: Journal,
    pair: str,
    run_id: int,
    report: VerifyReport,
    concurrency: int,
    identities: Sequence[Identity],
    *,
    whole: bool = True,
    onward: bool = False,
    onward_identities: Sequence[Identity] = (),
    checker: ContentChecker | None = None,
    identity_files: Sequence[str] = (),
) -> None:
    """``onward``: the destination is an onward copy of an encrypted replica, which
    ``onward_identities`` open (see the module docstring). ``checker``: the content is read
    and hashed there (in batches) instead of here; this function still records everything."""
    cursor = journal.db.execute(
        """SELECT s.key, coalesce(s.dkey, s.key), s.size, d.size, j.sha256 FROM src s
           LEFT JOIN dst d ON d.key = coalesce(s.dkey, s.key)
           LEFT JOIN journal j ON j.pair = ? AND j.key = s.key ORDER BY s.key""",
        (pair,),
    )
    ok_keys: list[str] = []
    # Wrong content at the destination: the journal must stop calling these done.
    replaced: list[str] = []

    def take(judged: Sequence[Judged]) -> None:
        for j in judged:
            if j.problem is None:
                ok_keys.append(j.key)
            else:
                report.problems.append((j.key, j.problem))
                if j.replaced:
                    replaced.append(j.key)

    def present(page: Sequence[tuple[str, str, int, int | None, str | None]]) -> list[ToCheck]:
        """Count a page of the listing; its objects the destination lists, to be read."""
        found = []
        for key, dkey, size, dsize, recorded in page:
            report.objects += 1
            report.bytes += size
            if dsize is None:
                report.problems.append((key, "missing at the destination"))
            else:
                found.append(ToCheck(key, dkey, size, recorded))
        return found

    if checker is None:
        sem = asyncio.Semaphore(concurrency)

        async def one(item: ToCheck) -> None:
            async with sem:
                judged = await judge_content(
                    src, dst, item, identities, onward=onward, onward_identities=onward_identities
                )
            take([judged])

        # Pages of the listing, so memory stays flat for any number of objects.
        while page := cursor.fetchmany(1000):
            await asyncio.gather(*(one(item) for item in present(page)))
    else:
        (objects, size) = journal.db.execute(
            """SELECT count(*), coalesce(sum(s.size), 0) FROM src s
               JOIN dst d ON d.key = coalesce(s.dkey, s.key)"""
        ).fetchone()

        def items() -> Iterator[ToCheck]:
            while page := cursor.fetchmany(1000):
                yield from present(page)

        held = tuple(sorted({str(i.recipient) for i in [*identities, *onward_identities]}))
        if held and not identity_files:
            raise ConfigError(
                "verify --full on Ray workers decrypts there: give the identity as a file "
                "(--identity FILE) at the same path on every worker"
            )
        job = ContentJob(
            src.store.name,
            src.prefix,
            dst.store.name,
            dst.prefix,
            concurrency,
            decrypt=bool(identities),
            onward=onward,
            identity_files=tuple(str(f) for f in identity_files) if held else (),
            recipients=held,
        )
        await checker.check_content(job, items(), (int(objects), int(size)), take)
    report.verified = len(ok_keys)
    report.problems.sort()
    _record(journal, pair, run_id, ok_keys, report, whole=whole)
    journal.replaced(pair, replaced)
    await distrust_replaced(journal, dst, replaced, PROOF_FIELD)


def _only_selected_stored(journal: Journal) -> None:
    """Protected names and filters: keep in the ``dst`` listing only the stored objects of the
    selected source objects (``src.dkey``); the filters cannot judge the other hashes."""
    db = journal.db
    db.execute("CREATE INDEX IF NOT EXISTS temp.src_dkey ON src (dkey) WHERE dkey IS NOT NULL")
    db.execute("BEGIN")
    db.execute("DELETE FROM dst WHERE NOT EXISTS (SELECT 1 FROM src s WHERE s.dkey = dst.key)")
    db.execute("COMMIT")
