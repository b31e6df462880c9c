"""daulat's Python API as coroutines: ``await daulat.aio.exit(cfg, "kpu", "vault")``.

The functions of :mod:`daulat` (``daulat.exit`` …) are these same functions run to completion
with :func:`asyncio.run`; code that already runs in an event loop (a web service, a notebook,
the gateway) awaits these instead.

Each function is a thin shell over the library function its command runs, as the command line
is (design principle 5): it loads nothing the command would not, takes keyword options named
after the command's options (``--dry-run`` → ``dry_run``, ``--filter`` → ``filter_rules``), and
is recorded in the audit log exactly as the command is, by the same code
(:func:`daulat.audit.audited`). A job that cannot finish returns a result whose ``ok`` is
False (the command's exit 1); whatever the command ends with exit 2 (a configuration error, a
refusal) is raised, always as a :class:`~daulat.errors.DaulatError`.

``cfg`` is a :class:`~daulat.config.Config` (from :func:`load_config`) or the path of a
``daulat.toml``. Stores are named as on the command line: ``"kpu"``, ``"kpu:c1/jawa-barat"``.

Cancelling one of these coroutines stops the run cleanly, as Ctrl-C stops the command: the
journal keeps every object finished, nothing partial is visible as done, the audit log records
the interruption, and running it again resumes.

Why this module is long: it is the public surface, one function per command, each spelling out
every option of its command as a documented keyword parameter (a test holds the two lists
together); how an argument is checked is in :mod:`daulat.apiargs`, and what a command does in
the library function it calls. Split by command, the one list a caller reads would be scattered.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import ClassVar

from daulat import apiargs
from daulat.address import store_only
from daulat.apiargs import Engine
from daulat.audit import audited, failures_audited
from daulat.census.imported import scan_from_inventory
from daulat.census.sharded import DEFAULT_SHARDS
from daulat.config import Config, find_config
from daulat.config import load_config as _read_config
from daulat.crypto import Recipient
from daulat.defaults import MAX_SHARDS
from daulat.drill import DrillResult, parse_bandwidth, run_drill
from daulat.errors import ConfigError, SafetyRefusal
from daulat.filters import Filter
from daulat.inventory import Manifest, ScanResults, scan_stores
from daulat.listing import is_reserved
from daulat.policy import PolicyResult, check_policies
from daulat.stores import ObjectInfo, ObjectReader, PutResult, Store
from daulat.stores import open_store as _open_adapter
from daulat.stores.abilities import EVERY_ABILITY
from daulat.stores.base import OnUpload
from daulat.stores.forwarding import ForwardingStore
from daulat.transfer import Kind, Options, Progress, Summary, run_transfer, run_verify
from daulat.transfer.proof import ManifestSigning
from daulat.transfer.safety import DEFAULT_MAX_DELETE, DeleteLimit
from daulat.transfer.uploads import DEFAULT_MAX_AGE
from daulat.transfer.verify import VerifyReport

__all__ = [
    "ConfigLike",
    "DrillProgress",
    "OpenedStore",
    "ScanProgress",
    "TransferProgress",
    "check",
    "copy",
    "drill",
    "exit",
    "load_config",
    "open_store",
    "restore",
    "scan",
    "sync",
    "verify",
]

#: A loaded configuration, or the path of a ``daulat.toml`` to load.
ConfigLike = Config | str | os.PathLike[str]

#: What a copy, sync, exit or restore reports while it runs (a snapshot, a few times a second):
#: ``planned_objects``/``planned_bytes`` once the plan is known, ``done_objects``/``done_bytes``
#: committed so far, ``moved_bytes`` including objects in flight, ``failed``, ``retries``;
#: before the plan is known, ``waiting_for`` says what the run is doing (``"listing dst"``).
TransferProgress = Progress


@dataclass(frozen=True, slots=True)
class ScanProgress:
    """What a scan has listed so far of one store (after each batch merged into the manifest)."""

    store: str
    objects: int
    bytes: int


@dataclass(frozen=True, slots=True)
class DrillProgress:
    """One step of a drill, as the command prints it ("sampling 500 objects…")."""

    message: str


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate ``daulat.toml``: ``path``, else ``./daulat.toml`` or the nearest in a
    parent directory (:func:`daulat.config.find_config`).

    Raises :class:`~daulat.errors.ConfigError` naming every problem found."""
    return _read_config(find_config(Path(path) if path is not None else None))


def _config(cfg: ConfigLike, request_timeout: float | None = None) -> Config:
    if isinstance(cfg, Config):
        config = cfg
    elif isinstance(cfg, (str, os.PathLike)):
        config = load_config(cfg)
    else:
        raise ConfigError(
            "cfg must be a Config (from daulat.load_config) or the path of a daulat.toml, "
            f"not {apiargs.shown(cfg)}"
        )
    return config.with_request_timeout(request_timeout)


def _said(value: object) -> object:
    """An argument as the audit log can hold it (a wrong one, say ``None``, as its repr)."""
    return value if isinstance(value, (str, bool, int, float)) else repr(value)[:200]


@contextmanager
def _call(config: Config, operation: str, **details: object) -> Iterator[None]:
    """Everything a call does once its configuration is loaded: a failure before the library
    function's own audit record began (a bad argument, a missing identity file, an unreachable
    Ray cluster) is recorded too, by the same code (see :func:`daulat.audit.failures_audited`).
    Without a configuration there is no audit log to write to."""
    shown = {name: _said(value) for name, value in details.items()}
    with failures_audited(config.state_dir, operation, shown):
        yield


def _on_transfer(
    progress: Callable[[TransferProgress], None] | None,
) -> Callable[[Progress], None] | None:
    say = apiargs.callback("progress", progress)
    if say is None:
        return None
    # The engine updates one Progress in place; each event is a snapshot the caller may keep.
    return lambda p: say(replace(p))


async def _transfer(
    kind: Kind,
    cfg: ConfigLike,
    src: str,
    dst: str,
    options: Callable[[], Options],
    *,
    identity: str | os.PathLike[str] | None,
    progress: Callable[[TransferProgress], None] | None,
    request_timeout: float | None,
    engine: Engine = "local",
    ray_address: str | None = None,
    workers: int | None = None,
) -> Summary:
    config = _config(cfg)
    with _call(config, kind.value, src=src, dst=dst):
        src, dst = apiargs.store_spec("src", src), apiargs.store_spec("dst", dst)
        on_progress = _on_transfer(progress)
        run_on = apiargs.runner(engine, ray_address, workers)
        opts = options()
        config = config.with_request_timeout(request_timeout)
        ids = apiargs.identities(identity)
        if run_on is not None:
            opts = replace(opts, runner=run_on(config))
        return await run_transfer(config, kind, src, dst, opts, on_progress, identities=ids)


async def copy(
    cfg: ConfigLike,
    src: str,
    dst: str,
    *,
    dry_run: bool = False,
    encrypt_to: str | Iterable[str | Recipient] = (),
    encrypt_names: bool = False,
    identity: str | os.PathLike[str] | None = None,
    allow_plaintext: bool = False,
    reencrypt: bool = False,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    filter_rules: Sequence[str] = (),
    filter_from: Sequence[str | os.PathLike[str]] = (),
    concurrency: int = 64,
    bwlimit: float | str | None = None,
    request_timeout: float | None = None,
    abort_uploads_older_than: timedelta | None = DEFAULT_MAX_AGE,
    engine: Engine = "local",
    ray_address: str | None = None,
    workers: int | None = None,
    progress: Callable[[TransferProgress], None] | None = None,
) -> Summary:
    """``daulat copy SRC DST``: copy what is missing or different at ``dst``, each object
    verified by its SHA-256.

    ``encrypt_to`` (age recipients, ``age1…``) overrides the destination store's
    ``encrypt_to``; ``encrypt_names`` stores objects under keyed hashes of their names;
    ``identity`` (an age identity file) recovers the destination's name key when this machine
    lacks it. ``reencrypt``: encrypt to ``encrypt_to`` even where this machine's journal says
    the destination was encrypted to other recipients (refused by default with
    :class:`~daulat.transfer.recipients.RecipientsChanged`: the old identity could no longer
    restore what is rewritten). ``bwlimit`` is in bytes per second. ``progress`` receives
    :data:`TransferProgress` snapshots. Filters select keys relative to ``src``'s prefix.

    ``engine="ray"`` copies in shards on a Ray cluster (``pip install 'daulat[ray]'``): the
    one at ``ray_address`` (default: ``RAY_ADDRESS``, else a local Ray started for the run and
    stopped after it), ``workers`` shards at once (default: the cluster's CPUs), each with
    ``concurrency`` objects and its own ``bwlimit``.
    """

    def options() -> Options:
        return Options(
            concurrency=apiargs.concurrency(concurrency),
            bwlimit=apiargs.bwlimit(bwlimit),
            dry_run=apiargs.flag("dry_run", dry_run),
            encrypt_to=apiargs.recipients(encrypt_to),
            encrypt_names=apiargs.flag("encrypt_names", encrypt_names),
            allow_plaintext=apiargs.flag("allow_plaintext", allow_plaintext),
            reencrypt=apiargs.flag("reencrypt", reencrypt),
            abort_uploads_older_than=apiargs.age_limit(
                "abort_uploads_older_than", abort_uploads_older_than
            ),
            filter=apiargs.filter_of(include, exclude, filter_rules, filter_from),
        )

    return await _transfer(
        Kind.COPY,
        cfg,
        src,
        dst,
        options,
        identity=identity,
        progress=progress,
        request_timeout=request_timeout,
        engine=engine,
        ray_address=ray_address,
        workers=workers,
    )


async def sync(
    cfg: ConfigLike,
    src: str,
    dst: str,
    *,
    delete: bool = False,
    max_delete: int | str | DeleteLimit = DEFAULT_MAX_DELETE,
    allow_empty_source: bool = False,
    dry_run: bool = False,
    encrypt_to: str | Iterable[str | Recipient] = (),
    encrypt_names: bool = False,
    identity: str | os.PathLike[str] | None = None,
    allow_plaintext: bool = False,
    reencrypt: bool = False,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    filter_rules: Sequence[str] = (),
    filter_from: Sequence[str | os.PathLike[str]] = (),
    concurrency: int = 64,
    bwlimit: float | str | None = None,
    request_timeout: float | None = None,
    abort_uploads_older_than: timedelta | None = DEFAULT_MAX_AGE,
    engine: Engine = "local",
    ray_address: str | None = None,
    workers: int | None = None,
    progress: Callable[[TransferProgress], None] | None = None,
) -> Summary:
    """``daulat sync SRC DST``: mirror ``src`` to ``dst``; with ``delete``, also remove what
    ``src`` no longer has, refused (:class:`~daulat.errors.TooManyDeletions`) beyond
    ``max_delete`` (a count, or ``"N%"`` of the destination; default 50%).

    Other options as :func:`copy`; filters apply to both sides, and excluded objects are
    neither copied nor deleted.
    """

    def options() -> Options:
        limit = (
            max_delete
            if isinstance(max_delete, DeleteLimit)
            else DeleteLimit.parse(str(max_delete))
        )
        return Options(
            concurrency=apiargs.concurrency(concurrency),
            bwlimit=apiargs.bwlimit(bwlimit),
            dry_run=apiargs.flag("dry_run", dry_run),
            delete=apiargs.flag("delete", delete),
            max_delete=limit,
            allow_empty_source=apiargs.flag("allow_empty_source", allow_empty_source),
            encrypt_to=apiargs.recipients(encrypt_to),
            encrypt_names=apiargs.flag("encrypt_names", encrypt_names),
            allow_plaintext=apiargs.flag("allow_plaintext", allow_plaintext),
            reencrypt=apiargs.flag("reencrypt", reencrypt),
            abort_uploads_older_than=apiargs.age_limit(
                "abort_uploads_older_than", abort_uploads_older_than
            ),
            filter=apiargs.filter_of(include, exclude, filter_rules, filter_from),
        )

    return await _transfer(
        Kind.SYNC,
        cfg,
        src,
        dst,
        options,
        identity=identity,
        progress=progress,
        request_timeout=request_timeout,
        engine=engine,
        ray_address=ray_address,
        workers=workers,
    )


async def exit(
    cfg: ConfigLike,
    src: str,
    dst: str,
    *,
    allow_empty_source: bool = False,
    dry_run: bool = False,
    encrypt_to: str | Iterable[str | Recipient] = (),
    encrypt_names: bool = False,
    identity: str | os.PathLike[str] | None = None,
    allow_plaintext: bool = False,
    reencrypt: bool = False,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    filter_rules: Sequence[str] = (),
    filter_from: Sequence[str | os.PathLike[str]] = (),
    concurrency: int = 64,
    bwlimit: float | str | None = None,
    request_timeout: float | None = None,
    abort_uploads_older_than: timedelta | None = DEFAULT_MAX_AGE,
    engine: Engine = "local",
    ray_address: str | None = None,
    workers: int | None = None,
    progress: Callable[[TransferProgress], None] | None = None,
) -> Summary:
    """``daulat exit SRC DST``: evacuate everything from ``src`` to ``dst`` and verify every
    object; ``summary.ok`` only when all are (``verified_objects == source_objects``).

    A source that lists nothing is refused (:class:`~daulat.errors.EmptySource`) unless
    ``allow_empty_source``. Other options as :func:`copy`; with filters "everything" is what
    they select, and the summary counts the rest as excluded.
    """

    def options() -> Options:
        return Options(
            concurrency=apiargs.concurrency(concurrency),
            bwlimit=apiargs.bwlimit(bwlimit),
            dry_run=apiargs.flag("dry_run", dry_run),
            allow_empty_source=apiargs.flag("allow_empty_source", allow_empty_source),
            encrypt_to=apiargs.recipients(encrypt_to),
            encrypt_names=apiargs.flag("encrypt_names", encrypt_names),
            allow_plaintext=apiargs.flag("allow_plaintext", allow_plaintext),
            reencrypt=apiargs.flag("reencrypt", reencrypt),
            abort_uploads_older_than=apiargs.age_limit(
                "abort_uploads_older_than", abort_uploads_older_than
            ),
            filter=apiargs.filter_of(include, exclude, filter_rules, filter_from),
        )

    return await _transfer(
        Kind.EXIT,
        cfg,
        src,
        dst,
        options,
        identity=identity,
        progress=progress,
        request_timeout=request_timeout,
        engine=engine,
        ray_address=ray_address,
        workers=workers,
    )


async def restore(
    cfg: ConfigLike,
    src: str,
    dst: str,
    *,
    identity: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
    allow_plaintext: bool = False,
    allow_unsigned: bool = False,
    allow_unproven: bool = False,
    overwrite: bool = False,
    concurrency: int = 64,
    bwlimit: float | str | None = None,
    request_timeout: float | None = None,
    abort_uploads_older_than: timedelta | None = DEFAULT_MAX_AGE,
    progress: Callable[[TransferProgress], None] | None = None,
) -> Summary:
    """``daulat restore SRC DST [--identity FILE]``: decrypt an encrypted replica back into
    plain objects, checked against its signed manifest. ``identity`` (an age identity file)
    is needed only for an encrypted replica: a plain one is copied back as stored.

    ``allow_unsigned``: restore even when no manifest signed by a pinned signer proves where
    the objects come from; ``allow_unproven``: also objects the manifest does not list (the
    summary lists them). ``allow_plaintext``: write into a store that declares ``encrypt_to``.
    Objects that already exist at ``dst`` with other content are left alone and listed in the
    summary unless ``overwrite`` (they may hold changes made since).
    """

    def options() -> Options:
        return Options(
            concurrency=apiargs.concurrency(concurrency),
            bwlimit=apiargs.bwlimit(bwlimit),
            dry_run=apiargs.flag("dry_run", dry_run),
            decrypt_with=apiargs.identities(identity),
            allow_plaintext=apiargs.flag("allow_plaintext", allow_plaintext),
            overwrite=apiargs.flag("overwrite", overwrite),
            abort_uploads_older_than=apiargs.age_limit(
                "abort_uploads_older_than", abort_uploads_older_than
            ),
            signing=ManifestSigning(
                allow_unsigned=apiargs.flag("allow_unsigned", allow_unsigned),
                allow_unproven=apiargs.flag("allow_unproven", allow_unproven),
            ),
        )

    return await _transfer(
        Kind.RESTORE,
        cfg,
        src,
        dst,
        options,
        identity=None,
        progress=progress,
        request_timeout=request_timeout,
    )


async def verify(
    cfg: ConfigLike,
    src: str,
    dst: str,
    *,
    full: bool = False,
    identity: str | os.PathLike[str] | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    filter_rules: Sequence[str] = (),
    filter_from: Sequence[str | os.PathLike[str]] = (),
    concurrency: int = 16,
    request_timeout: float | None = None,
    engine: Engine = "local",
    ray_address: str | None = None,
    workers: int | None = None,
) -> VerifyReport:
    """``daulat verify SRC DST``: compare ``dst`` with ``src`` by content, from the recorded
    SHA-256 and size, or with ``full`` by re-reading and hashing both sides (``identity``
    decrypts an encrypted destination). ``report.ok`` when every object matches; the
    ``problems`` are (key, reason) pairs.

    ``engine="ray"`` (with ``ray_address`` and ``workers`` as for :func:`copy`) re-reads on Ray
    workers, which open the ``identity`` file at the same path themselves; only ``full`` reads
    content, so without it the check runs here whatever the engine."""
    config = _config(cfg)
    with _call(config, "verify", src=src, dst=dst, full=full):
        src, dst = apiargs.store_spec("src", src), apiargs.store_spec("dst", dst)
        full = apiargs.flag("full", full)
        flt = apiargs.filter_of(include, exclude, filter_rules, filter_from)
        run_on = apiargs.runner(engine, ray_address, workers)
        config = config.with_request_timeout(request_timeout)
        return await run_verify(
            config,
            src,
            dst,
            full=full,
            concurrency=apiargs.concurrency(concurrency),
            identities=apiargs.identities(identity),
            filter=flt,
            runner=run_on(config) if run_on is not None and full else None,
            identity_files=[identity] if identity is not None else [],
        )


async def check(cfg: ConfigLike, *, strict: bool = False) -> PolicyResult:
    """``daulat check``: evaluate the ``[[policies]]`` of the configuration. The result's
    ``findings`` say what passes, fails or cannot be judged yet (and why, and the fix);
    ``result.ok`` is False on any failure (with ``strict``, on anything unknown too)."""
    config = _config(cfg)
    with _call(config, "check", strict=strict):
        strict = apiargs.flag("strict", strict)
        # Reading the manifest and journal of a large inventory takes a while: off the loop.
        return await asyncio.to_thread(check_policies, config, strict=strict)


async def scan(
    cfg: ConfigLike,
    stores: str | Sequence[str] | None = None,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    filter_rules: Sequence[str] = (),
    filter_from: Sequence[str | os.PathLike[str]] = (),
    shards: int = DEFAULT_SHARDS,
    from_inventory: str | os.PathLike[str] | None = None,
    request_timeout: float | None = None,
    progress: Callable[[ScanProgress], None] | None = None,
) -> ScanResults:
    """``daulat scan [STORE]...``: list ``stores`` (a name, names, or None for all) into the
    manifest under ``.daulat/``. Every store is scanned even when some cannot be: those are in
    ``results.failures`` and ``results.ok`` is False. With filters only the selected objects
    are recorded and nothing is marked removed. ``shards``: listings in flight at once, each
    over its own part of the key space (the same result either way).

    ``from_inventory`` records one store (``stores`` names exactly one, no filters) from its
    provider's inventory report instead of listing it: an S3 Inventory ``manifest.json`` or an
    Azure Blob Inventory ``<rule>-manifest.json`` (``s3://BUCKET/KEY``, ``az://CONTAINER/PATH``,
    ``STORE:PATH`` or a local path)."""
    config = _config(cfg)
    with _call(config, "scan", stores=stores if isinstance(stores, str) else _said(stores)):
        return await _scan(
            config,
            stores,
            apiargs.filter_of(include, exclude, filter_rules, filter_from),
            apiargs.whole("shards", shards, 1, MAX_SHARDS),
            from_inventory,
            request_timeout,
            apiargs.callback("progress", progress),
        )


async def _scan(
    config: Config,
    stores: str | Sequence[str] | None,
    flt: Filter,
    shards: int,
    from_inventory: str | os.PathLike[str] | None,
    request_timeout: float | None,
    progress: Callable[[ScanProgress], None] | None,
) -> ScanResults:
    config = config.with_request_timeout(request_timeout)
    names = [stores] if isinstance(stores, str) else list(stores or config.stores)
    for name in names:
        apiargs.store_spec("stores", name)
    report = None if from_inventory is None else apiargs.inventory(from_inventory, stores, flt)

    def on_store(name: str) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        say = progress
        return lambda objects, size: say(ScanProgress(name, objects, size))

    with Manifest.in_state_dir(config.state_dir) as manifest:
        if report is not None:
            for name in names:
                config.store(store_only(name, "scan"))
            summary = await scan_from_inventory(
                config, names[0], manifest, report, on_store(names[0])
            )
            return ScanResults(summaries=[summary])
        return await scan_stores(config, names, manifest, on_store, filter=flt, shards=shards)


async def drill(
    cfg: ConfigLike,
    src: str,
    dst: str,
    *,
    sample: int | float | str | None = None,
    link: float | str | None = None,
    workers: int = 1,
    seed: int | None = None,
    encrypt_to: str | Iterable[str | Recipient] = (),
    encrypt_names: bool = False,
    allow_plaintext: bool = False,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    filter_rules: Sequence[str] = (),
    filter_from: Sequence[str | os.PathLike[str]] = (),
    concurrency: int = 64,
    request_timeout: float | None = None,
    progress: Callable[[DrillProgress], None] | None = None,
) -> DrillResult:
    """``daulat drill SRC DST``: copy a sample to a scratch prefix in ``dst``'s store (removed
    afterwards), measure it, and predict how long a full exit would take
    (``result.predicted_hours``). Needs a scan of ``src``.

    ``sample``: a count (``500``), a fraction of each size class (``0.05``) or the command's
    text (``"5%"``); ``link`` (bits per second, or text such as ``"10G"``) and ``workers`` add
    a labelled what-if projection. ``result.ok`` when the scratch copy is gone and nothing went
    wrong."""
    config = _config(cfg)
    with _call(config, "drill", src=src, dst=dst):
        workers = apiargs.whole("workers", workers, 1)
        src, dst = apiargs.store_spec("src", src), apiargs.store_spec("dst", dst)
        flt = apiargs.filter_of(include, exclude, filter_rules, filter_from)
        say = apiargs.callback("progress", progress)
        config = config.with_request_timeout(request_timeout)
        return await run_drill(
            config,
            src,
            dst,
            sample=apiargs.sample(sample),
            link_bps=parse_bandwidth(link) if isinstance(link, str) else link,
            workers=workers,
            concurrency=apiargs.concurrency(concurrency),
            seed=seed,
            encrypt_to=apiargs.recipients(encrypt_to),
            on_event=None if say is None else (lambda message: say(DrillProgress(message))),
            filter=flt,
            encrypt_names=apiargs.flag("encrypt_names", encrypt_names),
            allow_plaintext=apiargs.flag("allow_plaintext", allow_plaintext),
        )


class OpenedStore(ForwardingStore):
    """A configured store, opened: the :class:`~daulat.stores.Store` protocol (``list``,
    ``head``, ``get``, ``put``, ``delete``), closed by ``async with`` or :meth:`aclose`.

    It is the store as the provider holds it: an encrypted replica lists its ciphertext (and,
    with protected names, keyed hashes as keys). It is read-only unless opened with
    ``writable=True``: ``put`` and ``delete`` raise :class:`~daulat.errors.SafetyRefusal`
    naming that option, so a script meant to read cannot change a replica. Writable, each
    ``put`` and ``delete`` is recorded in daulat's audit log (operation ``store put`` /
    ``store delete``, with the store and key) however it ends, and daulat's reserved
    ``.daulat/`` objects (manifests, signatures, the sealed name key) stay refused. Nothing
    done through it is journaled or checked as a copy is (it can write plaintext into an
    encrypted replica; ``daulat verify`` then reports it): copies that must be verified and
    resumable go through :func:`copy` and the others.
    """

    # A handle for listing and reading: the engine's abilities are not reached through it.
    hides: ClassVar[tuple[type, ...]] = EVERY_ABILITY

    def __init__(
        self, inner: Store, *, writable: bool = False, state_dir: Path | None = None
    ) -> None:
        super().__init__(inner)
        if writable and state_dir is None:
            raise ConfigError("a writable opened store needs the state directory to audit to")
        self.writable = writable
        self._state_dir = state_dir

    def _refuse(self, operation: str, key: str) -> Path:
        """The audit log's directory, once ``operation`` on ``key`` is allowed here."""
        if not self.writable or self._state_dir is None:
            raise SafetyRefusal(
                f"store {self.name!r} was opened read-only, so {operation} {key!r} was refused; "
                f"open it with daulat.open_store(cfg, {self.name!r}, writable=True) to write "
                "and delete (each change is audited)"
            )
        # Case-folded: on a case-insensitive filesystem ".DAULAT/x" lands in ".daulat/".
        if is_reserved(key) or is_reserved(key.casefold()):
            raise SafetyRefusal(
                f"store {self.name!r}: {key!r} is in daulat's reserved .daulat/ namespace "
                "(manifests, signatures, keys), which an opened store never writes or deletes"
            )
        return self._state_dir

    async def get(self, key: str, *, start: int = 0, end: int | None = None) -> ObjectReader:
        """A streaming read of ``[start, end)`` (see :mod:`daulat.stores.base`); a range that
        is not one is a :class:`~daulat.errors.ConfigError`, as other bad arguments are."""
        if start < 0 or (end is not None and end < start):
            raise ConfigError(
                f"store {self.name!r}: invalid range start={start}, end={end} for {key!r} "
                "(0 <= start <= end)"
            )
        return await self.inner.get(key, start=start, end=end)

    async def put(
        self,
        key: str,
        data: bytes | AsyncIterable[bytes],
        *,
        sha256: str | None = None,
        metadata: Mapping[str, str] | None = None,
        prehashed: bool = False,
        on_upload: OnUpload | None = None,
    ) -> PutResult:
        """Write an object (``writable=True`` only; audited as ``store put``)."""
        state_dir = self._refuse("put", key)
        details = {"store": self.name, "key": key}
        with audited(state_dir, "store put", details, _put_details) as audit:
            result = await self.inner.put(
                key,
                data,
                sha256=sha256,
                metadata=metadata,
                prehashed=prehashed,
                on_upload=on_upload,
            )
            audit.done(result)
        return result

    async def delete(self, key: str) -> None:
        """Delete an object (``writable=True`` only; audited as ``store delete``)."""
        state_dir = self._refuse("delete", key)
        with audited(state_dir, "store delete", {"store": self.name, "key": key}):
            await self.inner.delete(key)

    def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        """Batches of the objects whose key starts with ``prefix`` (a plain string)."""
        return self.inner.list(prefix)

    async def close(self) -> None:
        """Release the store's connections; it is unusable afterwards."""
        await self.inner.close()

    aclose = close

    async def __aenter__(self) -> OpenedStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<daulat store {self.name!r}>"


def open_store(
    cfg: ConfigLike,
    name: str,
    *,
    request_timeout: float | None = None,
    writable: bool = False,
) -> OpenedStore:
    """The configured store ``name``, opened for listing and reading (no network I/O yet);
    ``writable=True`` allows ``put`` and ``delete`` too, each audited (see
    :class:`OpenedStore`).

    Not a coroutine: it does no I/O, so ``daulat.open_store`` and ``daulat.aio.open_store`` are
    one function. Close it with ``async with`` or ``await store.aclose()``."""
    if not isinstance(writable, bool):
        raise ConfigError(f"writable must be True or False, not {writable!r}")
    config = _config(cfg, request_timeout)
    adapter = _open_adapter(
        config.store(store_only(apiargs.store_spec("name", name), "open_store"))
    )
    return OpenedStore(adapter, writable=writable, state_dir=config.state_dir)


def _put_details(result: PutResult) -> dict[str, object]:
    return {"size": result.size, "sha256": result.sha256}
