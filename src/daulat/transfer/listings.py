"""Listing both sides of a transfer into the journal's temporary tables.

The engine plans from these tables and verification checks against them; both import this
module (it imports neither).
"""

from __future__ import annotations

from collections.abc import Callable

from daulat.errors import MissingRoot
from daulat.filters import EVERYTHING, Filter
from daulat.transfer.journal import Journal
from daulat.transfer.keepout import KeepOut
from daulat.transfer.manifests import DST_MANIFEST_PREFIX
from daulat.transfer.model import Endpoint
from daulat.transfer.retry import RetryingStore, RetryPolicy


async def list_into(
    journal: Journal,
    table: str,
    endpoint: Endpoint,
    *,
    exclude: str = "",
    retry: RetryPolicy | None = None,
    names: Callable[[str], str] | None = None,
    filter: Filter = EVERYTHING,
    keep_excluded: bool = False,
    keep_out: KeepOut | None = None,
) -> tuple[int, int]:
    """Stream a listing of ``endpoint`` into temp table ``table`` with prefix-relative keys;
    ``names`` gives each key's destination key (protected names). ``keep_out`` leaves out (and
    counts) daulat's state and reserved objects (:mod:`daulat.transfer.keepout`).

    ``filter`` leaves out the objects it does not select (by prefix-relative key), batch by
    batch; with ``keep_excluded`` they stay in the table and are only counted. Returns the
    (objects, bytes) it did not select.
    """
    journal.new_listing(table)
    store = RetryingStore(endpoint.store, retry)
    active = filter.active
    excluded = excluded_bytes = 0
    async for batch in store.list(endpoint.prefix):
        rel = len(endpoint.prefix)
        keep = [o for o in batch if not (exclude and o.key[rel:].startswith(exclude))]
        if keep_out is not None:
            keep = [o for o in keep if keep_out.admit(o.key[rel:], o.size)]
        if active:
            selected = [o for o in keep if filter.matches(o.key[rel:])]
            if len(selected) != len(keep):
                excluded += len(keep) - len(selected)
                excluded_bytes += sum(o.size for o in keep) - sum(o.size for o in selected)
                if not keep_excluded:
                    keep = selected
        if keep:
            journal.add_to_listing(table, endpoint.prefix, keep, names)
    return excluded, excluded_bytes


async def list_destination(
    journal: Journal,
    dst: Endpoint,
    *,
    retry: RetryPolicy | None = None,
    filter: Filter = EVERYTHING,
    own_state: str | None = None,
) -> int:
    """List ``dst`` into temp table ``dst``; a directory that does not exist yet is empty.
    Its ``.daulat/`` and any daulat state directory in it (``own_state``: the running one's
    prefix there) are not listed, so nothing there is ever deleted or counted.

    The table holds every object; returns how many of them ``filter`` does not select."""
    try:
        excluded, _ = await list_into(
            journal,
            "dst",
            dst,
            exclude=DST_MANIFEST_PREFIX,
            retry=retry,
            filter=filter,
            keep_excluded=True,
            keep_out=KeepOut(own_state, destination=True),
        )
    except MissingRoot:
        # Its first put creates it. (A missing *source* stays an error.)
        journal.new_listing("dst")
        return 0
    return excluded
