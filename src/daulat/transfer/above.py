"""Encryption above a destination store's own root, by real location.

A store can be defined at a sub-path of an encrypted directory or bucket (``file:vault/newsub``
inside an encrypted ``vault``, ``s3://encb/sub`` inside an encrypted bucket). The checks of
:mod:`daulat.transfer.safety` walk up only to the store's root, which the provider's layout does
not care about: a plain copy there puts plaintext inside the encrypted place. So, before a run
that would write plaintext (or real names), :func:`evidence_above` looks at the destination's
real location (:mod:`daulat.transfer.locations`) and finds, in this order:

- a configured store declaring ``encrypt_to`` (or ``encrypt_names``) whose real location is the
  destination's or an ancestor of it;
- a journal record of an age-encrypted copy into such a location (under any store name) whose
  objects, looked up a few at a time through that store, are still there;
- the newest manifest (``.jsonl.age``) or a name key at any prefix above the destination store's
  root in the same bucket, container or directory tree, read through a copy of the store's
  configuration rooted there (with the same credentials; a prefix they cannot reach is skipped).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from daulat.config import Config, StoreConfig
from daulat.errors import ConfigError, StoreError
from daulat.stores import open_store
from daulat.transfer.journal import Journal
from daulat.transfer.locations import Location, location_of, same_space
from daulat.transfer.manifests import latest_manifest
from daulat.transfer.names import NAME_KEY_OBJECT, has_protected_names

if TYPE_CHECKING:
    from daulat.transfer.engine import Endpoint

__all__ = ["Evidence", "evidence_above"]

# A journal pair id: "SRC:PREFIX -> DST:PREFIX[ [TAG]]" (see engine.pair_id).
_PAIR = re.compile(
    r"^(?P<src>[A-Za-z0-9][A-Za-z0-9._-]*):(?P<sp>.*?) -> "
    r"(?P<dst>[A-Za-z0-9][A-Za-z0-9._-]*):(?P<dp>.*?)(?: \[(?P<tag>[^\]]*)\])?$"
)
_SAMPLE = 4


class Evidence:
    """What was found: ``ciphertext`` and ``names`` each say where, or are None."""

    def __init__(self) -> None:
        self.ciphertext: str | None = None
        self.names: str | None = None

    @property
    def done(self) -> bool:
        return self.ciphertext is not None and self.names is not None


def _contains(outer: Location, inner: Location) -> bool:
    return inner.path.startswith(outer.path)


async def evidence_above(
    config: Config,
    dst_store: str,
    dst: Location,
    journal: Journal,
    *,
    want_ciphertext: bool,
    want_names: bool,
) -> Evidence:
    """Evidence that ``dst`` lies in an encrypted (or name-protected) place."""
    found = Evidence()
    if not want_ciphertext:
        found.ciphertext = ""
    if not want_names:
        found.names = ""
    await _configured(config, dst_store, dst, found)
    if not found.done:
        await _journal(config, dst, journal, found)
    if not found.done:
        await _manifests_above(config.store(dst_store), found)
    return found


async def _configured(config: Config, dst_store: str, dst: Location, found: Evidence) -> None:
    for name, cfg in config.stores.items():
        if name == dst_store or not (cfg.encrypt_to or cfg.encrypt_names):
            continue
        loc = location_of(cfg)
        if not (_contains(loc, dst) and await same_space(loc, dst)):
            continue
        if cfg.encrypt_to and found.ciphertext is None:
            found.ciphertext = f"store {name!r} declares encrypt_to for {loc}, which contains it"
        if cfg.encrypt_names and found.names is None:
            found.names = f"store {name!r} declares encrypt_names for {loc}, which contains it"


async def _journal(config: Config, dst: Location, journal: Journal, found: Evidence) -> None:
    rows = journal.db.execute(
        "SELECT DISTINCT pair FROM runs WHERE kind != 'verify' AND pair LIKE '% [age:%'"
    ).fetchall()
    for (pair,) in rows:
        m = _PAIR.match(pair)
        if m is None or m["dst"] not in config.stores:
            continue
        cfg = config.store(m["dst"])
        try:
            there = location_of(cfg, m["dp"])
        except ConfigError:
            continue
        if not (_contains(there, dst) and await same_space(there, dst)):
            continue
        if not await _still_there(cfg, m["dp"], journal, pair):
            continue
        what = (
            f"the journal records age-encrypted copies from {m['src']}:{m['sp']} into "
            f"{m['dst']}:{m['dp']} ({there}), which contains it, that are still there"
        )
        if found.ciphertext is None:
            found.ciphertext = what
        if found.names is None and (m["tag"] or "").endswith("+names"):
            found.names = what
        if found.done:
            return


async def _still_there(cfg: StoreConfig, prefix: str, journal: Journal, pair: str) -> bool:
    """A few of the pair's done rows, looked up through its own store: still as written."""
    sample: list[tuple[str, int | None, str | None]] = []
    for order in ("ASC", "DESC"):
        sample += journal.db.execute(
            "SELECT coalesce(stored_as, key), dst_size, dst_etag FROM journal "
            f"WHERE pair = ? AND state = 'done' ORDER BY key {order} LIMIT ?",
            (pair, _SAMPLE),
        ).fetchall()
    if not sample:
        return False
    store = open_store(cfg)
    try:
        for key, size, etag in sample:
            try:
                info = await store.head(prefix + str(key))
            except StoreError:
                continue
            if info.size == size and info.etag == etag:
                return True
    finally:
        with contextlib.suppress(StoreError):
            await store.close()
    return False


def _ancestors(cfg: StoreConfig) -> list[StoreConfig]:
    """The store's configuration rooted at each prefix (directory) above its root, nearest
    first, up to the bucket's root (the filesystem's root for a directory)."""
    out: list[StoreConfig] = []
    if cfg.scheme == "file":
        for parent in PurePosixPath(cfg.path).parents:
            out.append(cfg.model_copy(update={"url": f"file://{parent}"}))
        return out
    parts = [p for p in cfg.prefix.split("/") if p]
    for n in range(len(parts) - 1, -1, -1):
        rest = "/".join(parts[:n])
        url = f"{cfg.scheme}://{cfg.bucket}" + (f"/{rest}" if rest else "")
        out.append(cfg.model_copy(update={"url": url}))
    return out


async def _manifests_above(cfg: StoreConfig, found: Evidence) -> None:
    from daulat.transfer.engine import Endpoint

    for above in _ancestors(cfg):
        try:
            store = open_store(above)
        except (ConfigError, StoreError):
            continue
        at: Endpoint = Endpoint(store, "", label=above.url)
        try:
            if found.ciphertext is None:
                with contextlib.suppress(StoreError):
                    newest = await latest_manifest(at)
                    if newest is not None and newest.endswith(".age"):
                        found.ciphertext = (
                            f"the newest manifest at {above.url}, above it, {newest} is "
                            "age-encrypted"
                        )
            if found.names is None:
                with contextlib.suppress(StoreError):
                    if await has_protected_names(at):
                        found.names = f"{above.url} above it holds {NAME_KEY_OBJECT}"
        finally:
            with contextlib.suppress(StoreError):
                await store.close()
        if found.done:
            return
