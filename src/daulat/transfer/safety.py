"""The checks that stand between a typed command and lost or exposed data.

A run is refused (:class:`~daulat.errors.SafetyRefusal`, CLI exit 2) before it writes or deletes
anything when

- source and destination overlap (:func:`refuse_overlap`, by real location: see
  :mod:`daulat.transfer.locations`);
- ``sync --delete`` or ``exit`` reads a source that lists no objects (:func:`empty_source`):
  most often a typo, and ``sync --delete`` would empty the destination. With filters, what
  counts is what the filters select: filters that exclude every object of a non-empty source
  are refused the same way;
- ``sync --delete`` would delete more than ``max_delete`` of the destination
  (:func:`too_many_deletions`). The deletions are counted from the plan before anything is
  copied or deleted; unlike rclone's ``--max-delete``, which stops after N deletions, nothing
  happens at all. With filters, a share is of the destination objects the filters select;
- ``sync --delete`` with filters into a destination whose names are protected
  (:func:`filtered_delete_on_protected_names`): its keys are keyed hashes, which no filter
  can judge;
- an unencrypted write would go into a destination that holds daulat-encrypted objects, or real
  names into one whose names are protected (:func:`plaintext_over_ciphertext`; for a drill's
  scratch copy, which has no plan, :func:`plaintext_into`). Evidence: the journal
  (age-encrypted objects daulat wrote there that the destination still holds unchanged), the
  destination's newest manifest (``.daulat/manifest-*.jsonl.age``), its name key
  (``.daulat/names.key.age``), and the ``encryption: age`` metadata of a few of its objects.
  "There" is the whole store (its bucket or directory), not only the prefix written: a
  plaintext write into a new prefix of an encrypted store is refused as well. So the evidence
  is looked for at the destination prefix, at every prefix above it up to the store's root
  (manifests, name keys, a few objects' metadata), below it (manifests and name keys in the
  plan's listing that the source does not bring), and, through the journal, at every prefix
  of the store daulat wrote ciphertext to;
- a run with ``--encrypt-names`` (other than ``sync --delete``) into a destination that holds
  objects under the real names of source objects (:func:`real_names_left`): copies an earlier
  run wrote without name protection would stay beside the protected ones, readable with
  the key they were encrypted to and listed in the new manifest.

Each check but the filters' one and the last has an override that the message names
(``--allow-empty-source``, ``--max-delete``, ``--allow-plaintext``).

This module is the one list of refusals and their messages; the search for daulat's
ciphertext and protected names at a destination (the journal, manifests, name keys,
metadata, prefixes above and below) is in :mod:`daulat.transfer.ciphertext`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from daulat.config import Config
from daulat.errors import (
    EmptySource,
    FilterOnProtectedNames,
    OverlappingLocations,
    PlaintextOverCiphertext,
    RealNamesLeft,
    SafetyRefusal,
    StoreError,
    TooManyDeletions,
)
from daulat.plurals import plural
from daulat.transfer.ciphertext import (
    NESTED_MANIFEST,
    NESTED_NAME_KEY,
    first_objects_ciphertext,
    journal_ciphertext,
    journal_ciphertext_kept,
    listed_below,
    local_name_keys,
    manifest_ciphertext,
    metadata_ciphertext,
    names_protected,
    root_metadata_ciphertext,
)
from daulat.transfer.journal import Journal
from daulat.transfer.keepout import KeptOut
from daulat.transfer.locations import Location, location_of, overlaps, same_space

# DeleteLimit and its default are part of a run's Options (daulat.transfer.model); importable
# from here as before.
from daulat.transfer.model import DEFAULT_MAX_DELETE as DEFAULT_MAX_DELETE
from daulat.transfer.model import DeleteLimit as DeleteLimit
from daulat.transfer.model import Endpoint, Kind, Options
from daulat.transfer.names import (
    NAME_KEY_OBJECT,
    has_protected_names,
)

__all__ = [
    "DEFAULT_MAX_DELETE",
    "DeleteLimit",
    "PlannedChanges",
    "ciphertext_refusal",
    "count_deletions",
    "destination_space",
    "empty_source",
    "filtered_delete_on_protected_names",
    "local_name_keys",
    "names_in_clear",
    "overlap_phrase",
    "plaintext_into",
    "plaintext_over_ciphertext",
    "real_names_left",
    "refuse_overlap",
    "too_many_deletions",
]

# --------------------------------------------------------------------------- --max-delete


def count_deletions(journal: Journal, pair: str, keep: Callable[[str], bool] | None = None) -> int:
    """How many destination objects ``sync --delete`` would delete (the plan's listings);
    ``keep``: the filters' verdict on a destination key (see :meth:`Journal.extraneous`)."""
    return sum(len(page) for page in journal.extraneous(pair, page=10_000, keep=keep))


def too_many_deletions(
    deletions: int,
    destination_objects: int,
    limit: DeleteLimit,
    dst: Endpoint,
    *,
    filtered: bool = False,
) -> TooManyDeletions | None:
    """``destination_objects``: those the filters select, when ``filtered``."""
    allowed = limit.allowed(destination_objects)
    if deletions <= allowed:
        return None
    what = "" if limit.count is not None else f" ({allowed:,} of its {destination_objects:,})"
    which = "objects the filters select" if filtered else "objects"
    return TooManyDeletions(
        f"sync --delete would delete {deletions:,} of the {destination_objects:,} {which} at "
        f"{_label(dst)}, more than --max-delete {limit}{what} allows; nothing was copied or "
        f"deleted. Check the source, look at the list with --dry-run, and pass --max-delete "
        f"{deletions} (or a share such as 100%) if these deletions are meant"
    )


# --------------------------------------------------------------------------- empty sources


def empty_source(
    kind: Kind,
    opts: Options,
    src: Endpoint,
    dst: Endpoint,
    excluded: int = 0,
    kept: KeptOut | None = None,
) -> EmptySource | None:
    """``exit`` or ``sync --delete`` from a source that listed no objects, or none that the
    filters select (``excluded``: how many they left out), or only objects a copy never
    carries (``kept``: daulat's reserved ``.daulat/`` namespace and state directories)."""
    if opts.allow_empty_source:
        return None
    if kind == Kind.EXIT:
        effect = "an exit from it would copy nothing and call that complete"
    elif kind == Kind.SYNC and opts.delete:
        what = "every object the filters select" if opts.filter.active else "everything"
        effect = f"sync --delete would delete {what} at {_label(dst)}"
    else:
        return None
    if excluded:
        rules = "; ".join(opts.filter.describe())
        return EmptySource(
            f"the filters excluded every object at the source {_label(src)} ({excluded:,} "
            f"listed, none selected by: {rules}): {effect}. Check the --include/--exclude/"
            "--filter rules; if selecting nothing is meant, pass --allow-empty-source"
        )
    if kept is not None and (kept.reserved_objects or kept.state_objects):
        seen = []
        if kept.reserved_objects:
            seen.append(
                f"{kept.reserved_objects:,} under its .daulat/, which daulat reserves at every "
                "destination for its own manifests and keys"
            )
        if kept.state_objects:
            seen.append(
                f"{kept.state_objects:,} of daulat state directories (keys, journal, audit "
                "log), which daulat never copies"
            )
        return EmptySource(
            f"the source {_label(src)} holds no objects a copy carries: the ones it lists are "
            f"daulat's own ({'; '.join(seen)}) and were not copied: {effect}. Move data out "
            "of .daulat/ at the source, or check the store name and prefix; if nothing to "
            "copy is meant, pass --allow-empty-source"
        )
    return EmptySource(
        f"the source {_label(src)} lists no objects: {effect}. Check the store name and "
        "prefix; if the source really is empty, pass --allow-empty-source"
    )


async def filtered_delete_on_protected_names(
    opts: Options, dst: Endpoint
) -> FilterOnProtectedNames | None:
    """``sync --delete`` with filters where the destination's keys are protected names.

    A filter judges real names; there the keys are keyed hashes. Judging a hash by the name
    the journal or a manifest gives it would trust records the provider can withhold or that
    another machine never had, and an object whose name is unknown could not be judged at all.
    An excluded object must never be deleted, so the run is refused instead: no override.
    """
    if not opts.filter.active:
        return None
    whose = "whose object names are protected"
    if not opts.encrypt_names:
        try:
            if not await has_protected_names(dst, opts.retry):
                return None
        except StoreError as exc:
            # Cannot tell: judge it as protected, the case in which deleting could be wrong.
            whose = f"whose names may be protected (checking for {NAME_KEY_OBJECT} failed: {exc})"
    return FilterOnProtectedNames(
        f"sync --delete with filters into {_label(dst)}, {whose}: its keys are keyed hashes, "
        "so the filters cannot tell which objects they exclude, and an excluded object must "
        "never be deleted. Run sync --delete without filters, or filter without --delete"
    )


def real_names_left(
    kind: Kind, opts: Options, dst: Endpoint, journal: Journal
) -> RealNamesLeft | None:
    """A protected-names run that would leave copies under real names at the destination.

    Their names are what protection hides; they stay readable with whatever key they were
    encrypted to (not this run's, after ``--reencrypt``), and the run's manifest would list
    them beside the protected copies. Only ``sync --delete`` removes them, so any other run is
    refused; no override. Reads the plan's listings, so call it after planning."""
    if not opts.encrypt_names or (kind == Kind.SYNC and opts.delete):
        return None
    found = journal.real_named_copies()
    if not found:
        return None
    return RealNamesLeft(
        f"{_label(dst)} holds {plural(found, 'object')} under the real names "
        "of source files (copies written without name protection); this "
        f"{kind.value} with --encrypt-names would leave them there, readable with the key "
        "they were encrypted to; nothing was copied. Run sync --delete to replace them, or "
        "write to a new prefix"
    )


# --------------------------------------------------------------------------- overlap


async def refuse_overlap(
    config: Config, src: tuple[str, str], dst: tuple[str, str]
) -> tuple[Location, Location]:
    """Resolve (store, prefix) of both endpoints; raise :class:`OverlappingLocations` when
    they are one place or one lies inside the other. Returns both locations."""
    a = location_of(config.store(src[0]), src[1])
    b = location_of(config.store(dst[0]), dst[1])
    if await overlaps(a, b):
        names = f"{_spec(*src)} and {_spec(*dst)}"
        how = overlap_phrase(a, b)
        raise OverlappingLocations(
            f"{names} {how}: the source is {a}, the destination is {b}. A copy between them "
            "would write into (and sync --delete delete from) its own source; choose a "
            "destination outside the source"
        )
    return a, b


def overlap_phrase(a: Location, b: Location) -> str:
    """How two overlapping locations overlap, as every refusal of one words it."""
    return "are the same place" if a == b or a.path == b.path else "lie one inside the other"


async def destination_space(config: Config, dst: Location) -> dict[str, str]:
    """Every configured store that shares the destination's key space (one bucket on one
    server, or the filesystem), mapped to its root's path in that space.

    It lets the journal check recognise earlier writes into this destination made under
    another store name (an alias, another spelling of the server, a store on a prefix).
    """
    paths: dict[str, str] = {}
    for name, cfg in config.stores.items():
        if cfg.scheme != dst.kind:
            continue
        loc = location_of(cfg)
        if await same_space(loc, dst):
            paths[name] = loc.path
    return paths


# --------------------------------------------------------------------------- plaintext


async def plaintext_over_ciphertext(
    kind: Kind,
    src: Endpoint,
    dst: Endpoint,
    journal: Journal,
    opts: Options,
    *,
    as_stored: bool = False,
    hashed_names: bool = False,
) -> PlaintextOverCiphertext | None:
    """A run that writes plaintext (or real names) where daulat put ciphertext (or protected
    names), anywhere in the destination's store. Reads the plan's ``src``, ``dst`` and
    ``work`` tables, so call it after planning.

    ``as_stored``: the run copies an encrypted replica's ciphertext as stored (an onward copy,
    :mod:`daulat.transfer.onward`), so objects marked ``encryption: age`` are no evidence
    against it; its manifest is plain, so the journal and the newest manifest still are.
    ``hashed_names``: the names it writes are that replica's protected names."""
    if opts.allow_plaintext:
        return None
    if not opts.encrypt_to:
        evidence = (
            journal_ciphertext(journal, dst, opts.store_paths)
            or await journal_ciphertext_kept(journal, dst, opts, planned=True)
            or await manifest_ciphertext(dst)
            or listed_below(journal, NESTED_MANIFEST, "an age-encrypted manifest")
            or (None if as_stored else await metadata_ciphertext(dst, journal))
            or (None if as_stored else await root_metadata_ciphertext(dst))
        )
        if evidence:
            return ciphertext_refusal(kind.value, dst, evidence, restore=kind == Kind.RESTORE)
    if not opts.encrypt_names and not hashed_names:
        evidence = await names_protected(dst) or listed_below(
            journal, NESTED_NAME_KEY, "a name key"
        )
        if evidence:
            return names_in_clear(kind, dst, evidence)
    return None


async def plaintext_into(
    what: str, dst: Endpoint, journal: Journal, opts: Options
) -> PlaintextOverCiphertext | None:
    """The same check for a run that has no plan of the destination (a drill, whose scratch
    copy goes below ``dst``): ``journal`` is the state directory's journal, and the
    destination is not listed, only sampled (its first objects, and its store's)."""
    if opts.allow_plaintext:
        return None
    if not opts.encrypt_to:
        evidence = (
            await journal_ciphertext_kept(journal, dst, opts, planned=False)
            or await manifest_ciphertext(dst)
            or await first_objects_ciphertext(dst, dst.prefix)
            or await root_metadata_ciphertext(dst)
        )
        if evidence:
            return ciphertext_refusal(what, dst, evidence)
    if not opts.encrypt_names:
        evidence = await names_protected(dst)
        if evidence:
            return names_in_clear(what, dst, evidence)
    return None


def ciphertext_refusal(
    what: str, dst: Endpoint, evidence: str, *, restore: bool = False
) -> PlaintextOverCiphertext:
    """The refusal of a run (``what``: copy, exit, drill, ...) that would write plaintext where
    ``evidence`` shows daulat's ciphertext."""
    how = (
        "pass --allow-plaintext to write decrypted objects there anyway"
        if restore
        else "pass --encrypt-to AGE_RECIPIENT to keep it encrypted, or --allow-plaintext to "
        "really replace them with plaintext"
    )
    return PlaintextOverCiphertext(
        f"{_label(dst)} holds daulat-encrypted objects ({evidence}); this {what} "
        f"would write plaintext there; {how}"
    )


def names_in_clear(kind: Kind | str, dst: Endpoint, evidence: str) -> PlaintextOverCiphertext:
    """The refusal of a run that would write real names where names are protected."""
    what = kind if isinstance(kind, str) else kind.value
    fix = (
        "pass --allow-plaintext to write decrypted objects there anyway"
        if kind == Kind.RESTORE
        else "pass --encrypt-to AGE_RECIPIENT --encrypt-names, or --allow-plaintext to write "
        "names in clear anyway"
    )
    return PlaintextOverCiphertext(
        f"{_label(dst)} keeps its object names protected ({evidence}); this {what} "
        f"would write real names there; {fix}"
    )


# --------------------------------------------------------------------------- dry runs


class PlannedChanges:
    """What a dry run would copy and delete, read page by page from the plan's tables.

    Valid only while the engine's ``on_plan`` callback runs (the tables are the run's).
    Keys are relative to the source prefix (copies) and the destination prefix (deletions).
    """

    def __init__(
        self,
        journal: Journal,
        pair: str,
        *,
        copies: tuple[int, int],
        deletions: int | None,
        keep: Callable[[str], bool] | None = None,
    ) -> None:
        self._journal = journal
        self._pair = pair
        self._keep = keep
        self.copy_objects, self.copy_bytes = copies
        self.delete_objects = deletions or 0
        self._deleting = deletions is not None

    def copies(self) -> Iterator[tuple[str, int]]:
        """(key, size) of every object the run would copy, largest first."""
        for item in self._journal.work():
            yield item.key, item.size

    def deletions(self) -> Iterator[tuple[str, int]]:
        """(key, size) of every destination object ``sync --delete`` would delete, in key order."""
        if not self._deleting or not self.delete_objects:
            return  # (none planned, or a refusal left them uncounted)
        for page in self._journal.extraneous(self._pair, keep=self._keep):
            yield from page


# --------------------------------------------------------------------------- helpers


def refusal_or_raise(
    summary_refusal: str | None, found: SafetyRefusal | None, dry_run: bool
) -> str | None:
    """Raise ``found`` in a real run; in a dry run keep its message (the first one) instead."""
    if found is None:
        return summary_refusal
    if not dry_run:
        raise found
    return summary_refusal or str(found)


def _label(ep: Endpoint) -> str:
    return ep.label or ep.store.name


def _spec(store: str, prefix: str) -> str:
    p = prefix.strip("/")
    return f"{store}:{p}" if p else store
