"""Destination objects whose proof is no longer believed: ``verify --full`` found them different.

A proof in an object's metadata says what daulat wrote; a provider that flips bytes and keeps
the metadata leaves a proof that still verifies. Once ``verify --full`` has read such an object
and found its content wrong, no pair may adopt it by that proof again: not the pair that
verified it, nor one that meets the same stored object under another prefix spelling, a
sub-prefix or another source, nor one whose journal rows were lost. So the fact is kept per
destination object, not per pair: the store's location (endpoint and bucket, or the real
directory), the full stored key, and what the object carried when it was found different (its
proof value, or, without one, its listed size and ETag). An object rewritten since (a new proof,
or a new version where there was none) is judged afresh.

Adoption loads the facts for its destination once (:func:`distrusted_in`): one dict lookup per
candidate, nothing on the copy path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from daulat.errors import NotFound, StoreError
from daulat.stores.abilities import upload_cleanup
from daulat.stores.base import Store
from daulat.stores.forwarding import layers
from daulat.stores.resumable import unwrap_resumable
from daulat.transfer.journal import Journal
from daulat.transfer.journalrows import now
from daulat.transfer.model import Endpoint

_SCHEMA = """
CREATE TABLE IF NOT EXISTS distrusted (
    location TEXT NOT NULL,        -- the destination store: endpoint and bucket, or real root
    key TEXT NOT NULL,             -- the full stored key (destination prefix included)
    proof TEXT,                    -- the proof it carried when found different (NULL: none)
    size INTEGER,                  -- its listed size then
    etag TEXT,                     -- its listed ETag then
    found TEXT NOT NULL,
    PRIMARY KEY (location, key)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Found:
    """What a destination object carried when ``verify --full`` found it different."""

    proof: str | None
    size: int | None
    etag: str | None

    def still(self, proof: str | None, size: int, etag: str | None) -> bool:
        """Whether an object carrying ``proof`` (listed with ``size``, ``etag``) is the one
        found different. With a proof then, only that proof is: daulat's next write carries
        a new one. Without, the same listed version is."""
        if self.proof is not None:
            return proof == self.proof
        return size == self.size and etag == self.etag


def store_place(store: Store) -> str:
    """Where ``store``'s objects are, whatever it is called and however it is wrapped (retries,
    fault injection): the location object stores keep upload records under, or a directory's
    real path; the configured name only for a store that offers neither."""
    cleanup = upload_cleanup(store)
    if cleanup is not None:
        return cleanup.location
    resumable = unwrap_resumable(store)
    if resumable is not None:
        return resumable.location
    for layer in layers(store):
        root = getattr(layer, "root", None)
        if isinstance(root, Path):
            return f"file://{root.resolve()}/"
    return f"store:{store.name}"


def distrust(journal: Journal, place: str, found: dict[str, Found]) -> None:
    """Record objects (full stored keys) whose proof is no longer believed."""
    if not found:
        return
    db = journal.db
    db.execute(_SCHEMA)
    db.execute("BEGIN")
    db.executemany(
        "INSERT OR REPLACE INTO distrusted (location, key, proof, size, etag, found) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [(place, k, f.proof, f.size, f.etag, now()) for k, f in found.items()],
    )
    db.execute("COMMIT")


def distrusted_in(journal: Journal, place: str, prefix: str) -> dict[str, Found]:
    """The objects under ``prefix`` of the store at ``place`` whose proof is not believed."""
    db = journal.db
    db.execute(_SCHEMA)
    rows = db.execute(
        "SELECT key, proof, size, etag FROM distrusted WHERE location = ? AND substr(key, 1, ?) = ?",
        (place, len(prefix), prefix),
    )
    return {k: Found(p, s, e) for k, p, s, e in rows}


async def distrust_replaced(
    journal: Journal, dst: Endpoint, replaced: Sequence[str], proof_field: str
) -> None:
    """Keep, per destination object, that its proof is not believed (see
    :mod:`daulat.transfer.distrust`): whichever pair later meets it, with journal rows or not,
    adopts it no more while it carries the proof (metadata ``proof_field``) it had now."""
    found: dict[str, Found] = {}
    for key in replaced:
        row = journal.db.execute(
            "SELECT coalesce(s.dkey, s.key), d.size, d.etag FROM src s "
            "JOIN dst d ON d.key = coalesce(s.dkey, s.key) WHERE s.key = ?",
            (key,),
        ).fetchone()
        if row is None:
            continue
        dkey, size, etag = row
        try:
            reader = await dst.store.get(dst.prefix + dkey, start=0, end=0)
        except (NotFound, StoreError):
            # Unreadable now: the version it was listed with is what is not believed.
            found[dst.prefix + dkey] = Found(None, size, etag)
            continue
        found[dst.prefix + dkey] = Found(reader.metadata.get(proof_field), size, etag)
    distrust(journal, store_place(dst.store), found)
