"""What a transfer is about: its kind, its two endpoints, its options and its summary.

These are the nouns shared by the engine (:mod:`daulat.transfer.engine`), verification
(:mod:`daulat.transfer.verify`), the safety checks and the command line. They live here, apart
from the engine, so that verification and the engine both import them without importing each
other. :mod:`daulat.transfer.engine` re-exports them, so ``from daulat.transfer.engine import
Endpoint`` keeps working.

:class:`DeleteLimit`, the ``--max-delete`` of :class:`Options`, is here too, so that the safety
checks (:mod:`daulat.transfer.safety`) import this module and not the reverse;
``from daulat.transfer.safety import DeleteLimit`` keeps working.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from daulat.address import normalise_prefix
from daulat.crypto import Identity, Recipient
from daulat.defaults import DEFAULT_MAX_DELETE_PERCENT
from daulat.errors import ConfigError
from daulat.filters import EVERYTHING, Filter
from daulat.stores.base import Store
from daulat.transfer.keepout import OwnState
from daulat.transfer.names import NameKey
from daulat.transfer.proof import ManifestSigning
from daulat.transfer.retry import RetryPolicy
from daulat.transfer.uploads import DEFAULT_MAX_AGE

if TYPE_CHECKING:
    from daulat.transfer.engine import Runner
    from daulat.transfer.safety import PlannedChanges

MiB = 1024 * 1024


class Kind(StrEnum):
    COPY = "copy"
    SYNC = "sync"
    EXIT = "exit"
    RESTORE = "restore"

    @property
    def verifies(self) -> bool:
        """Exit and restore verify every object and write a manifest at the destination."""
        return self in (Kind.EXIT, Kind.RESTORE)


@dataclass(frozen=True)
class Endpoint:
    """A store and a key prefix within it (empty, or ending in '/')."""

    store: Store
    prefix: str = ""
    label: str = ""  # how the user named it, e.g. "kpu:pemilu-2024/"
    describe: dict[str, str | None] = field(default_factory=dict)  # provider, region, country

    @staticmethod
    def normalise(prefix: str) -> str:
        """``prefix`` ending in '/' (or empty); :class:`ConfigError` for ``..`` and the like
        (see :mod:`daulat.address`)."""
        return normalise_prefix(prefix)


@dataclass(frozen=True)
class DeleteLimit:
    """How much ``sync --delete`` may delete: a count, or a share (percent) of the destination's
    objects."""

    count: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, text: str) -> DeleteLimit:
        """``"N"`` or ``"N%"``; :class:`ConfigError` otherwise."""
        t = text.strip()
        try:
            if t.endswith("%"):
                value = float(t[:-1])
                if not 0 <= value <= 100:
                    raise ValueError
                return cls(percent=value)
            n = int(t)
            if n < 0:
                raise ValueError
            return cls(count=n)
        except ValueError:
            raise ConfigError(
                f"--max-delete {text!r}: expected a count such as 100 or a share of the "
                "destination's objects such as 50%"
            ) from None

    def allowed(self, destination_objects: int) -> int:
        """The most deletions allowed in a destination of ``destination_objects`` objects."""
        if self.count is not None:
            return self.count
        assert self.percent is not None
        return int(destination_objects * self.percent / 100)

    def __str__(self) -> str:
        if self.count is not None:
            return str(self.count)
        return f"{self.percent:g}%"


DEFAULT_MAX_DELETE = DeleteLimit(percent=DEFAULT_MAX_DELETE_PERCENT)


@dataclass
class Options:
    concurrency: int = 64
    max_bytes_in_flight: int = 256 * MiB
    bwlimit: float | None = None  # bytes per second, whole run
    dry_run: bool = False
    delete: bool = False  # sync: remove destination objects the source does not have
    force: bool = False  # copy even what the journal says is done
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    encrypt_to: Sequence[Recipient] = ()  # write age ciphertext readable only by these keys
    decrypt_with: Sequence[Identity] = ()  # read age ciphertext (restore)
    encrypt_names: bool = False  # store objects under keyed hashes of their names
    # The destination's name key (see daulat.transfer.names); required with encrypt_names.
    name_key: NameKey | None = field(default=None, repr=False)
    # Keeps that key (daulat.transfer.names.RunNameKey.keep), called once the run is known to go
    # ahead and before its first write, so that a refused run writes no key. None: nothing to
    # keep (a dry run, a drill's scratch key, a key the caller keeps).
    keep_name_key: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)
    # Safety (see daulat.transfer.safety): what the run refuses unless told otherwise.
    allow_empty_source: bool = False  # exit / sync --delete from a source listing nothing
    allow_plaintext: bool = False  # plaintext (or real names) over daulat's ciphertext
    reencrypt: bool = False  # ciphertext to other recipients than the destination's last run
    # restore: replace existing destination objects whose content differs (daulat.transfer.existing)
    overwrite: bool = False
    max_delete: DeleteLimit = DEFAULT_MAX_DELETE  # sync --delete: a count or a share
    # Stores that reach the destination's key space, by name → root path in that space, so
    # earlier encrypted writes under another name count (safety.destination_space).
    store_paths: Mapping[str, str] = field(default_factory=dict)
    # Dry run: called once with what the run would copy and delete (streamed from SQLite).
    on_plan: Callable[[PlannedChanges], None] | None = field(default=None, repr=False)
    # Manifests: the key that signs them (None: the state directory's own key, beside the
    # journal), the pinned keys whose manifests are believed, identities to read an encrypted
    # destination's earlier manifest, and what a restore may accept without proof.
    signing: ManifestSigning = field(default_factory=ManifestSigning)
    # The customer's proof key (daulat.transfer.adoption.proof_key): objects written carry a MAC
    # under it, and a re-run adopts complete objects whose MAC verifies. None: neither.
    proof_key: bytes | None = field(default=None, repr=False)
    # Multipart uploads the journal does not know (lost state) are aborted only when older
    # than this and on keys the run writes (see daulat.transfer.uploads); None: never.
    abort_uploads_older_than: dt.timedelta | None = DEFAULT_MAX_AGE
    # Filters (daulat.filters): the run sees only the source objects they select, and
    # sync --delete deletes only destination objects they select. Not part of codec_tag.
    filter: Filter = EVERYTHING
    # Runs the plan somewhere else (``--engine ray``, :mod:`daulat.scale`): given the run's
    # executor, it sends the planned objects out and commits what comes back through it. None:
    # this process's own workers.
    runner: Runner | None = field(default=None, repr=False)
    # Where the running configuration's state directory lies inside either endpoint (found by
    # real path, daulat.transfer.keepout): never listed, written or deleted there.
    own_state: OwnState | None = None

    @property
    def codec_tag(self) -> str:
        """Part of the journal's pair id: changing keys or direction means copying anew."""
        if self.encrypt_to:
            keys = ",".join(sorted(str(r) for r in self.encrypt_to))
            names = "+names" if self.encrypt_names else ""
            return f" [age:{hashlib.sha256(keys.encode()).hexdigest()[:16]}{names}]"
        if self.decrypt_with:
            return " [decrypt]"
        return ""


# What "verified" means, said by every summary and verify report (``verified_by``). The listing
# form trusts the destination's listing to show what was written: an object the provider
# replaced with the same size (and ETag) passes it; reading the content back is --full.
VERIFIED_BY_LISTING = "listing size + provider-checked upload checksum"
# Some objects of the pair were adopted by proof after a crash or a lost journal: daulat did not
# send them, so no provider checked an upload checksum; their proof binds size and source
# version, their content was not re-read.
VERIFIED_BY_LISTING_ADOPTED = (
    "listing size; provider-checked upload checksum for objects daulat sent, adopted by "
    "proof (size and source version, content not re-read) for the rest: use --full"
)
VERIFIED_BY_CONTENT = "content re-read and hashed (--full)"
VERIFIED_BY_RESTORE = "content decrypted and hashed while restored"
VERIFIED_BY_RESTORE_PLAIN = "content hashed while restored as stored (a plain replica)"


@dataclass
class Summary:
    kind: str
    src: str
    dst: str
    run_id: int
    source_objects: int = 0
    source_bytes: int = 0
    planned_objects: int = 0
    planned_bytes: int = 0
    copied_objects: int = 0
    copied_bytes: int = 0
    # Bytes this process streamed to the destination, those of objects not finished (parts
    # of a multipart upload an interrupt cut short, attempts retried) included; 0 when the
    # provider copied server-side or Ray workers streamed.
    sent_bytes: int = 0
    skipped_objects: int = 0
    adopted_objects: int = 0  # found complete at the destination by proof; counted as skipped
    deleted_objects: int = 0
    # sync --delete: deletions planned but not done (the run stopped, or copies failed first).
    left_deletions: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    verified_objects: int | None = None
    unverified: list[tuple[str, str]] = field(default_factory=list)
    left_objects: int = 0
    left_bytes: int = 0
    retries: int = 0
    throttled: int = 0
    duration_s: float = 0.0
    stopped: str | None = None  # why the run stopped early (a permanent refusal)
    dry_run: bool = False
    manifest_key: str | None = None
    encrypted: bool = False
    names_protected: bool = False
    checked_against_manifest: str | None = None  # restore: the source manifest used
    provenance: str | None = None  # restore: who signed that manifest, or why it is not proven
    notes: list[str] = field(default_factory=list)  # said once, after the summary
    # Restore: objects at the source that its manifest does not list (not restored), and those
    # restored anyway with --allow-unproven.
    unproven: list[tuple[str, str]] = field(default_factory=list)
    unproven_restored: list[str] = field(default_factory=list)
    # Restore of protected names: the stored name (keyed hash) of each object reported above
    # by its real name (JSON: a ``stored_as`` field in its entry).
    stored_as: dict[str, str] = field(default_factory=dict)
    manifest_error: str | None = None  # the destination manifest could not be written
    aborted_uploads: int = 0  # multipart uploads a killed or stopped run had left behind
    # Large objects continued inside (daulat.transfer.resume): uploads an earlier attempt left,
    # the bytes found at the destination, checked and not sent again, parts found there that
    # did not match (sent again), and uploads the provider had dropped (begun afresh).
    resumed_uploads: int = 0
    resumed_bytes: int = 0
    replaced_parts: int = 0
    restarted_uploads: int = 0
    server_side_copy: bool = False
    refusal: str | None = None  # dry run: why the real run would be refused
    interrupted: str | None = None  # the signal that stopped the run ("SIGINT"), if one did
    # sync --delete: the keys deleted (relative to the destination prefix), bounded; see
    # DeletedKeys.to_json.
    deleted: dict[str, object] | None = None
    # Filters: their rules (None: none given) and the source objects they left out, which
    # the other counts (source_objects, verified_objects, ...) do not include.
    filter: list[str] | None = None
    excluded_objects: int = 0
    excluded_bytes: int = 0
    # False until the run has listed both sides and planned: stopped or interrupted before,
    # how much remains is unknown (``left_*`` are then null in JSON). ``listed_*`` count what
    # the source listing gave: all of it once it finished (also when the destination's listing
    # then failed), what it had given so far when the run stopped during it.
    remaining_known: bool = True
    listed_objects: int = 0
    listed_bytes: int = 0
    # Kept out of the copy (daulat.transfer.keepout): daulat state directories in the source
    # (their relative prefixes), and objects under the source's top-level .daulat/, daulat's
    # reserved namespace at every destination (the first keys; not copied: the run is not ok).
    skipped_state_objects: int = 0
    skipped_state_bytes: int = 0
    skipped_state: list[str] = field(default_factory=list)
    reserved_objects: int = 0
    reserved_bytes: int = 0
    reserved: list[str] = field(default_factory=list)
    # Restore: the replica holds no encrypted objects, so nothing was decrypted.
    restored_plain: bool = False
    # Restore: existing destination objects whose content differs from the replica's, left
    # alone without --overwrite (the first names; the count is whole; the run is not ok).
    kept_existing_objects: int = 0
    kept_existing: list[str] = field(default_factory=list)

    @property
    def verified_by(self) -> str:
        """What this run checked of the objects it counts as copied, skipped or verified."""
        if self.kind == Kind.RESTORE:
            how = VERIFIED_BY_RESTORE_PLAIN if self.restored_plain else VERIFIED_BY_RESTORE
            return how + (" against the source manifest" if self.checked_against_manifest else "")
        return VERIFIED_BY_LISTING

    @property
    def throughput_bps(self) -> float:
        """Bytes per second moved: those sent, even of objects not finished (an interrupted
        run that was mid-way through a large object did move bytes), else those copied."""
        moved = max(self.copied_bytes, self.sent_bytes)
        return moved / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def ok(self) -> bool:
        """True when nothing failed, was refused or is left, and (for exit) all is verified."""
        if self.interrupted:
            return False
        if self.dry_run:
            return self.stopped is None and self.refusal is None
        if (
            self.stopped
            or self.failed
            or self.refused
            or self.left_objects
            or self.left_deletions
            or self.unverified
            or self.manifest_error
            or self.unproven
            or self.reserved_objects
            or self.kept_existing_objects
        ):
            return False
        return not Kind(self.kind).verifies or (
            self.verified_objects is not None
            and self.verified_objects + len(self.unproven_restored) == self.source_objects
        )

    def to_json(self) -> dict[str, object]:
        d = dict(self.__dict__)
        d["throughput_bytes_per_s"] = round(self.throughput_bps, 1)
        d["ok"] = self.ok
        d["verified_by"] = self.verified_by
        if not self.remaining_known:
            d["left_objects"] = d["left_bytes"] = None
        stored = d.pop("stored_as")

        def entry(k: str, r: str) -> dict[str, str]:
            e = {"key": k, "reason": r}
            if k in stored:
                e["stored_as"] = stored[k]
            return e

        d["failed"] = [entry(k, r) for k, r in self.failed]
        d["refused"] = [entry(k, r) for k, r in self.refused]
        d["unverified"] = [entry(k, r) for k, r in self.unverified]
        d["unproven"] = [{"key": k, "reason": r} for k, r in self.unproven]
        return d


def pair_id(src: Endpoint, dst: Endpoint, codec_tag: str = "") -> str:
    # No filter in it: see the module docstring ("Filters").
    return f"{src.store.name}:{src.prefix} -> {dst.store.name}:{dst.prefix}{codec_tag}"
