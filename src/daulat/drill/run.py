"""Running a drill: open the stores, sample, measure, fit, record, and always clean up."""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from daulat.audit import audited
from daulat.config import Config
from daulat.crypto import Recipient, parse_recipients
from daulat.drill.measure import _measure_classes, _probe_listing
from daulat.drill.model import _build_result
from daulat.drill.record import DrillLog, _last_run_id
from daulat.drill.result import DrillFailed, DrillResult
from daulat.drill.sample import Stratum, _describe_sample, draw_sample, excluded_by
from daulat.drill.units import _now
from daulat.errors import ConfigError, Interrupted, MissingRoot, StoreError
from daulat.filters import EVERYTHING, Filter
from daulat.inventory.database import MANIFEST_NAME, Manifest
from daulat.plurals import plural
from daulat.stores.base import Store
from daulat.transfer import open_endpoint
from daulat.transfer.above import evidence_above
from daulat.transfer.journal import JOURNAL_NAME, Journal
from daulat.transfer.locations import location_of
from daulat.transfer.manifests import DST_MANIFEST_PREFIX
from daulat.transfer.model import Endpoint, Options
from daulat.transfer.names import NameKey
from daulat.transfer.safety import (
    ciphertext_refusal,
    destination_space,
    local_name_keys,
    names_in_clear,
    plaintext_into,
)

SCRATCH_PREFIX = f"{DST_MANIFEST_PREFIX}drill-"  # + id + "/": real exits never list .daulat/


async def run_drill(
    config: Config,
    src_spec: str,
    dst_spec: str,
    *,
    sample: int | float | None = None,
    link_bps: float | None = None,
    workers: int = 1,
    concurrency: int = 64,
    seed: int | None = None,
    encrypt_to: Sequence[Recipient] = (),
    on_event: Callable[[str], None] | None = None,
    filter: Filter = EVERYTHING,
    encrypt_names: bool = False,
    allow_plaintext: bool = False,
) -> DrillResult:
    """Drill an exit from ``src_spec`` to ``dst_spec`` (``STORE[:PREFIX]``); see the package doc.

    ``sample``: None (default rule, see :func:`allocate`), an ``int`` total or a ``float``
    fraction per class. ``link_bps`` (bits/s) and ``workers`` add a labelled projection.
    ``encrypt_to`` overrides the destination's ``encrypt_to``, as ``exit --encrypt-to`` does;
    ``encrypt_names`` (or the store's ``encrypt_names``) protects the sample's names there.
    The scratch copy goes into the destination's store, so it is refused
    (:class:`~daulat.errors.PlaintextOverCiphertext`) where an exit would be: plaintext where
    daulat's ciphertext is, real names where names are protected (``allow_plaintext`` goes on).
    ``filter`` (keys relative to the source prefix): the drill samples only the objects it
    selects and predicts an exit with the same filter (which still lists every object).

    Raises :class:`ConfigError` (no scan of the source, bad arguments, overlapping stores) and
    :class:`DrillFailed` (nothing could be measured). Store failures of single objects do not
    raise: they are listed in ``problems``. The drill is recorded either way.
    """
    details: dict[str, object] = {"src": src_spec, "dst": dst_spec}
    if filter.active:
        details["filter"] = filter.describe()
    with audited(config.state_dir, "drill", details, drill_details) as a:
        result = await _run_drill(
            config,
            src_spec,
            dst_spec,
            sample=sample,
            link_bps=link_bps,
            workers=workers,
            concurrency=concurrency,
            seed=seed,
            encrypt_to=encrypt_to,
            on_event=on_event,
            filter=filter,
            encrypt_names=encrypt_names,
            allow_plaintext=allow_plaintext,
        )
        a.done(result, "ok" if result.ok else "problems")
    return result


def drill_details(result: DrillResult) -> Mapping[str, object]:
    """What the audit log keeps of a drill."""
    details: dict[str, object] = {
        "drill": result.id,
        "sampled_objects": result.sampled_objects,
        "predicted_hours": round(result.predicted_hours, 4),
    }
    if result.filter is not None:
        details["filter"] = result.filter
        details["excluded_objects"] = result.excluded_objects
    return details


async def _run_drill(
    config: Config,
    src_spec: str,
    dst_spec: str,
    *,
    sample: int | float | None,
    link_bps: float | None,
    workers: int,
    concurrency: int,
    seed: int | None,
    encrypt_to: Sequence[Recipient],
    on_event: Callable[[str], None] | None,
    filter: Filter = EVERYTHING,
    encrypt_names: bool = False,
    allow_plaintext: bool = False,
) -> DrillResult:
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    if concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    if link_bps is not None and link_bps <= 0:
        raise ConfigError("--link must be a positive bandwidth")
    src = open_endpoint(config, src_spec)
    dst = open_endpoint(config, dst_spec)
    try:
        return await _drill(
            config,
            src,
            dst,
            sample,
            link_bps,
            workers,
            concurrency,
            seed,
            encrypt_to,
            on_event,
            filter,
            encrypt_names,
            allow_plaintext,
        )
    finally:
        await src.store.close()
        await dst.store.close()


async def _drill(
    config: Config,
    src: Endpoint,
    dst: Endpoint,
    sample: int | float | None,
    link_bps: float | None,
    workers: int,
    concurrency: int,
    seed: int | None,
    encrypt_to: Sequence[Recipient],
    on_event: Callable[[str], None] | None,
    filter: Filter = EVERYTHING,
    encrypt_names: bool = False,
    allow_plaintext: bool = False,
) -> DrillResult:
    say = on_event or (lambda _msg: None)
    name = src.store.name
    if src.store.name == dst.store.name and (
        src.prefix.startswith(dst.prefix) or dst.prefix.startswith(src.prefix)
    ):
        raise ConfigError(
            f"{src.label!r} and {dst.label!r} overlap: a store cannot be drilled into itself"
        )
    # The journal is read when the drill is recorded: a damaged one fails now, not after the copy.
    _last_run_id(config.state_dir / JOURNAL_NAME)
    with Manifest.in_state_dir(config.state_dir) as manifest:
        scan = manifest.last_scan(name)
    if scan is None:
        raise ConfigError(
            f"the manifest has no complete scan of store {name!r}: the drill samples from it. "
            f"Run `daulat scan {name}` first"
        )
    seed = secrets.randbits(32) if seed is None else seed
    manifest_path = config.state_dir / MANIFEST_NAME
    strata = draw_sample(
        manifest_path, name, src.prefix, sample, concurrency, random.Random(seed), filter
    )
    excluded = excluded_by(manifest_path, name, src.prefix, filter)
    objects = sum(s.objects for s in strata)
    if objects == 0 and excluded[0]:
        raise DrillFailed(
            f"the filters excluded every object under {src.label!r} in the latest scan of "
            f"{name!r} (#{scan.id}): {plural(excluded[0], 'object')}, none selected by: "
            + "; ".join(filter.describe())
        )
    if objects == 0:
        raise DrillFailed(
            f"the latest scan of {name!r} (#{scan.id}) found no objects under {src.label!r}: "
            "nothing to drill (scan again if the store has changed)"
        )
    dst_cfg = config.store(dst.store.name)
    if not encrypt_to and dst_cfg.encrypt_to:
        encrypt_to = parse_recipients(dst_cfg.encrypt_to)
    encrypt_names = encrypt_names or bool(encrypt_to and dst_cfg.encrypt_names)
    if encrypt_names and not encrypt_to:
        raise ConfigError(
            "--encrypt-names needs --encrypt-to AGE_RECIPIENT (or encrypt_to on store "
            f"{dst_cfg.name!r}): names are protected only inside encrypted copies"
        )
    await _refuse_plaintext(config, dst, encrypt_to, encrypt_names, allow_plaintext)
    # A destination that protects names must not see even the sample's real names. The scratch
    # copy is removed afterwards, so a throwaway name key does (and costs what the real one
    # does per object).
    name_key = NameKey.generate() if encrypt_names else None
    log = DrillLog(config.state_dir)
    try:
        result = await _measure(
            log,
            config,
            src,
            dst,
            strata,
            scan.id,
            scan.census_date,  # an inventory report's date where the scan was read from one
            sample,
            link_bps,
            workers,
            concurrency,
            seed,
            encrypt_to,
            name_key,
            say,
            (filter, *excluded),
            allow_plaintext,
        )
    finally:
        log.close()
    return result


async def _measure(
    log: DrillLog,
    config: Config,
    src: Endpoint,
    dst: Endpoint,
    strata: list[Stratum],
    scan_id: int,
    scanned: str | None,
    sample: int | float | None,
    link_bps: float | None,
    workers: int,
    concurrency: int,
    seed: int,
    encrypt_to: Sequence[Recipient],
    name_key: NameKey | None,
    say: Callable[[str], None],
    filtered: tuple[Filter, int, int] = (EVERYTHING, 0, 0),
    allow_plaintext: bool = False,
) -> DrillResult:
    """Copy the sample class by class, fit, and always remove the scratch copy.

    ``filtered``: the filter, and the objects and bytes it leaves out."""
    flt, excluded, excluded_bytes = filtered
    opts = Options(
        concurrency=concurrency,
        encrypt_to=encrypt_to,
        encrypt_names=name_key is not None,
        name_key=name_key,
        allow_plaintext=allow_plaintext,
    )
    drill_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)
    scratch = f"{dst.prefix}{SCRATCH_PREFIX}{drill_id}/"
    started = _now()
    t_start = time.monotonic()
    log.begin(drill_id, started, src, dst, scratch)
    problems: list[str] = []
    journal_path = config.state_dir / f"drill-{drill_id}.journal.sqlite"
    try:
        problems += (await sweep_leftovers(log, dst.store, say))[1]
        with Journal(journal_path) as journal:
            say("probing the source listing")
            probe = await _probe_listing(src, journal)
            runs = await _measure_classes(
                strata, src, dst, scratch, journal, opts, sample is None, say
            )
        for r in runs:
            problems += [p for part in r.parts for p in part.problems]
        skipped = [s for r in runs for part in r.parts for s in part.skipped]
        say("fitting the model")
        result = _build_result(
            drill_id=drill_id,
            started=started,
            src=src,
            dst=dst,
            scratch=scratch,
            scan_id=scan_id,
            scanned=scanned,
            concurrency=concurrency,
            sample=_describe_sample(sample),
            seed=seed,
            encrypted=bool(encrypt_to),
            strata=strata,
            runs=runs,
            probe=probe,
            link_bps=link_bps,
            workers=workers,
            rng=random.Random(seed + 1),
            listed_objects=sum(s.objects for s in strata) + excluded,
        )
        result.note_skipped(skipped)
        if flt.active:
            result.filter = flt.describe()
            result.excluded_objects, result.excluded_bytes = excluded, excluded_bytes
    except BaseException as exc:
        log.fail(drill_id, _describe_error(exc))
        raise
    finally:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                Path(f"{journal_path}{suffix}").unlink(missing_ok=True)
        say(f"removing the scratch copy {dst.store.name}:{scratch}")
        removed, left = await remove_scratch(dst.store, scratch)
        log.scratch_removed(drill_id, removed)
        if not removed:
            msg = (
                f"the scratch copy at {dst.store.name}:{scratch} could not be removed "
                f"({left} object(s) remain): delete that prefix by hand, or run another drill "
                "to this store, which retries"
            )
            say(msg)
            problems.append(msg)
    result.scratch_removed = removed
    result.problems = problems
    result.finished = _now()
    result.drill_s = time.monotonic() - t_start
    log.complete(result)
    return result


async def _refuse_plaintext(
    config: Config,
    dst: Endpoint,
    encrypt_to: Sequence[Recipient],
    encrypt_names: bool,
    allow_plaintext: bool,
) -> None:
    """The scratch copy goes into the destination's store: refuse it where an exit there
    would be refused (plaintext over ciphertext, real names where names are protected), in
    the store and, as copy and exit do, in an encrypted directory or bucket that contains the
    store's root (:mod:`daulat.transfer.above`)."""
    if allow_plaintext:
        return
    if not encrypt_names and local_name_keys(config.state_dir, dst):
        raise names_in_clear("drill", dst, "this machine holds its name key")
    location = location_of(config.store(dst.store.name), dst.prefix)
    opts = Options(
        encrypt_to=encrypt_to,
        encrypt_names=encrypt_names,
        store_paths=await destination_space(config, location),
    )
    with Journal.in_state_dir(config.state_dir) as journal:
        found = await plaintext_into("drill", dst, journal, opts)
        if found is None and not (encrypt_to and encrypt_names):
            above = await evidence_above(
                config,
                dst.store.name,
                location,
                journal,
                want_ciphertext=not encrypt_to,
                want_names=not encrypt_names,
            )
            if above.ciphertext:
                found = ciphertext_refusal("drill", dst, above.ciphertext)
            elif above.names:
                found = names_in_clear("drill", dst, above.names)
    if found is not None:
        raise found


async def remove_scratch(store: Store, prefix: str, attempts: int = 3) -> tuple[bool, int]:
    """Delete every object under ``prefix`` and list again to prove it is gone.

    Returns (gone, objects still there). Never raises for store errors: a failure to clean up is
    reported, and must not hide the error that ended the drill.
    """
    left = 0
    sem = asyncio.Semaphore(32)

    async def one(key: str) -> None:
        async with sem:
            with contextlib.suppress(StoreError):
                await store.delete(key)

    for _ in range(attempts):
        try:
            keys = [o.key async for batch in store.list(prefix) for o in batch]
        except MissingRoot:
            return True, 0  # a directory store that was never created holds nothing
        except StoreError:
            await asyncio.sleep(0.5)
            continue
        left = len(keys)
        if not keys:
            return True, 0
        await asyncio.gather(*(one(k) for k in keys))
    try:
        left = sum([len(batch) async for batch in store.list(prefix)])
    except StoreError:
        return False, left
    return left == 0, left


async def sweep_leftovers(
    log: DrillLog, store: Store, say: Callable[[str], None]
) -> tuple[list[str], list[str]]:
    """Remove scratch copies that earlier drills to this store left behind (killed, or their
    clean-up failed). A drill still running elsewhere is left alone. Returns the scratch
    prefixes removed and the problems met."""
    removed: list[str] = []
    problems: list[str] = []
    for drill_id, scratch in log.leftovers(store.name):
        say(f"removing the scratch copy left by drill {drill_id}: {store.name}:{scratch}")
        gone, left = await remove_scratch(store, scratch)
        log.scratch_removed(drill_id, gone)
        if gone:
            removed.append(scratch)
        else:
            problems.append(
                f"an earlier drill's scratch copy {store.name}:{scratch} still holds {left} "
                "object(s)"
            )
    return removed, problems


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError, Interrupted)):
        return "interrupted"
    return f"{type(exc).__name__}: {exc}"
