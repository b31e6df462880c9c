"""A restore never replaces a file the user already has with other content, unless told to.

A restore writes into the user's own place (a working directory, a bucket in use), where files
may have been edited since the replica was made. After planning and adoption, every object the
restore would write over something the destination already lists is compared with what the
replica's manifest says it should be (the SHA-256 of the existing object, read from the
destination):

- the same content is left as it is and counted as skipped and verified (it was just hashed
  against the manifest); it is journaled as restored, with the manifest's SHA-256 and the size
  and ETag the destination lists, so that a later restore skips it without reading it again
  and ``verify``, ``check`` and ``report`` see it as every other restored object;
- other content (or an object that cannot be read to compare, or one the manifest gives no
  SHA-256 for) is left alone, named in the summary (``Summary.kept_existing``), and the run is
  not complete.

``Options.overwrite`` (``daulat restore --overwrite``) replaces them, as every restore did
before. Only restore checks this: copy, sync and exit make the destination a copy of the
source, which is what they are asked for.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from daulat.errors import StoreError
from daulat.transfer.journal import Journal, Outcome, State
from daulat.transfer.model import Endpoint, Summary

__all__ = ["KEPT_SHOWN", "Kept", "keep_existing"]

# How many kept keys a summary names (the count is always whole).
KEPT_SHOWN = 1000


@dataclass
class Kept:
    """The planned objects taken out of the plan: their source keys (relative), for the
    verification that follows, and how many were identical."""

    keys: set[str] = field(default_factory=set)
    identical: int = 0
    # Of the identical ones, how many were journaled as restored (all but in a dry run): the
    # verification that follows finds those in the journal and counts them itself.
    journaled: int = 0


async def keep_existing(
    journal: Journal,
    dst: Endpoint,
    summary: Summary,
    expected: Callable[[str], str | None],
    *,
    concurrency: int = 16,
    record: tuple[str, int] | None = None,
) -> Kept:
    """Take out of the plan (temp table ``work``) every object the destination listing
    (temp table ``dst``) already shows; say in ``summary`` which differ.

    ``expected(key)``: the manifest's SHA-256 of the object at source key ``key`` (relative to
    the source prefix), or None when it gives none. ``record``: the (pair, run id) to journal
    the identical ones under as done (None: a dry run, which writes nothing)."""
    rows = journal.db.execute(
        "SELECT w.id, w.key, coalesce(w.dkey, w.key), w.dkey, w.size, w.etag, d.size, d.etag "
        "FROM work w JOIN dst d ON d.key = coalesce(w.dkey, w.key) "
        "ORDER BY coalesce(w.dkey, w.key)"
    ).fetchall()
    kept = Kept()
    if not rows:
        return kept
    sem = asyncio.Semaphore(max(1, min(concurrency, 32)))

    async def same(key: str, dkey: str) -> bool:
        want = expected(key)
        if want is None:
            return False
        async with sem:
            digest = hashlib.sha256()
            try:
                async for chunk in await dst.store.get(dst.prefix + dkey):
                    digest.update(chunk)
            except StoreError:
                return False  # cannot tell: leaving it alone is the side that loses nothing
        return digest.hexdigest() == want

    verdicts = await asyncio.gather(*(same(str(r[1]), str(r[2])) for r in rows))
    journal.unplan([int(r[0]) for r in rows])
    restored: list[Outcome] = []
    for (_, key, dkey, stored_as, size, etag, dst_size, dst_etag), identical in zip(
        rows, verdicts, strict=True
    ):
        kept.keys.add(str(key))
        if identical:
            kept.identical += 1
            # As if restored now: the plaintext is the manifest's (just hashed), the
            # destination's size and ETag are what it lists.
            restored.append(
                Outcome(
                    str(key),
                    int(size),
                    etag,
                    State.DONE,
                    sha256=expected(str(key)),
                    dst_size=int(dst_size),
                    dst_etag=dst_etag,
                    plain_size=int(dst_size),
                    stored_as=stored_as,
                )
            )
            continue
        summary.kept_existing_objects += 1
        if len(summary.kept_existing) < KEPT_SHOWN:
            summary.kept_existing.append(str(dkey))
    if record is not None and restored:
        pair, run_id = record
        for start in range(0, len(restored), 1000):
            journal.record(pair, run_id, restored[start : start + 1000])
        kept.journaled = len(restored)
    return kept
