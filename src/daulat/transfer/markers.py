"""Folder markers: empty objects whose key ends in ``/`` (``reports/``), as the AWS console's
"Create folder" and many tools make so that an empty folder shows in a bucket browser.

A directory (and daulat's Azure and GCS stores) cannot hold such a key as an object: a file
cannot be named ``reports/``. Copying them there would refuse each one on every run and leave
every exit "incomplete" for ever, for objects that hold no data. So where the destination
cannot hold them they are set aside before planning: not copied, not counted as source objects
(nor against completeness), and named in a note with the reason. The folders they mark exist at
the destination wherever they hold files; only the marker of a folder with nothing in it is not
carried, and a copy back to a bucket does not recreate it. Destinations that hold them (S3, or
any destination with protected names, where they are stored under keyed hashes) get them like
any other object.
"""

from __future__ import annotations

from daulat.errors import InvalidKey, StoreError
from daulat.transfer.journal import Journal

__all__ = ["is_folder_marker", "marker_note", "set_aside_folder_markers"]

# How many marker keys a note names before it says "and N more".
SHOWN = 5

MARKER_NOTE = (
    "folder marker(s) (empty objects whose key ends in '/', as the AWS console's 'Create "
    "folder' makes) not copied: {dst} cannot hold such a key as an object; the folders exist "
    "there wherever they hold files, and they are not counted against completeness. Empty "
    "folders are not carried: to keep their markers, copy to a bucket or use --encrypt-names"
)

# dkey: the real name, when a restore takes it from the manifest of a name-protected replica.
_MARKERS = "substr(coalesce(dkey, key), -1) = '/' AND size = 0"


def is_folder_marker(key: str, size: int) -> bool:
    """An empty object whose key ends in ``/``."""
    return size == 0 and key.endswith("/")


async def _holds_markers(store: object, probe: str) -> bool:
    """Whether ``store`` accepts ``probe`` (a key ending in '/') as a key: a store that cannot
    hold it refuses it on any request, before any I/O."""
    head = getattr(store, "head", None)
    if head is None:
        return True
    try:
        await head(probe)
    except InvalidKey:
        return False
    except StoreError:
        return True  # not found, or unreachable: the copy itself will say
    return True


async def set_aside_folder_markers(
    journal: Journal, store: object, prefix: str, *, names_protected: bool
) -> list[str]:
    """Take the folder markers out of temp table ``src`` when the destination (``store`` at
    ``prefix``) cannot hold them; returns their keys (relative to the source prefix)."""
    if names_protected:
        return []
    db = journal.db
    first = db.execute(
        f"SELECT coalesce(dkey, key) FROM temp.src WHERE {_MARKERS} LIMIT 1"
    ).fetchone()
    if first is None or await _holds_markers(store, prefix + str(first[0])):
        return []
    keys = [
        str(k)
        for (k,) in db.execute(
            f"SELECT coalesce(dkey, key) FROM temp.src WHERE {_MARKERS} ORDER BY 1"
        )
    ]
    db.execute("BEGIN")
    db.execute(f"DELETE FROM temp.src WHERE {_MARKERS}")
    db.execute("COMMIT")
    return keys


def marker_note(keys: list[str], dst: str) -> str:
    """The note a run prints about the markers it set aside."""
    shown = ", ".join(repr(k) for k in keys[:SHOWN])
    more = f" and {len(keys) - SHOWN:,} more" if len(keys) > SHOWN else ""
    return f"{len(keys):,} " + MARKER_NOTE.format(dst=dst) + f": {shown}{more}"
