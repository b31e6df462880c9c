"""What each replica lacks of the gateway's writes, for ``daulat stores``.

A replica that missed a write keeps a ``failed`` row saying so (:mod:`.ledger`): it lags, and
``daulat sync PRIMARY REPLICA`` copies the object. Some such objects no sync can copy while
things stay as they are, and recommending the sync for them would name a command that fails
every time; they are counted apart, with a reason:

- the write itself failed at the replica with a name conflict (its row's reason carries
  :data:`.ledger.CONFLICT`);
- a directory replica holds, now, an object the key cannot be held beside ('a' is a file there
  and the key is 'a/b', or the reverse): it was down when the write came, so the write's
  up-front check could not see it. Found with that same check
  (:func:`daulat.stores.keys.name_conflict`: one ``lstat`` per path segment, never a listing),
  for at most :data:`CHECKED` keys of a replica: past those they count as lagging;
- a sync refused it (the sync turned the row ``refused``, with its reason): the row no longer
  says it lags, yet the replica still lacks a write the gateway made.

A sync that failed to copy one (its row ``failed`` with the sync's reason, no longer the
gateway's) still lags: the next sync tries it again.

Which rows are the gateway's writes is known from its runs: one of kind ``gateway`` per row it
wrote, naming the key in its summary (:meth:`.ledger.Ledger._record`).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from daulat.config import StoreConfig
from daulat.gateway.ledger import CONFLICT, LAGS, NOT_ACKNOWLEDGED, UNDER_WAY
from daulat.state import connect_readonly, has_tables
from daulat.transfer.journal import JOURNAL_KIND, JOURNAL_NAME

#: How many lagging keys of one directory replica ``daulat stores`` checks for a conflict
#: (a few ``lstat`` each): a replica down for long may lag by millions.
CHECKED = 1000
#: How the reason of an object a sync refused begins.
REFUSED_BY_SYNC = "a sync refused it: "

# A journal pair id: "SRC:PREFIX -> DST:PREFIX[ [TAG]]" (see daulat.transfer.model.pair_id).
_PAIR = re.compile(
    r"^(?P<src>[A-Za-z0-9][A-Za-z0-9._-]*):(?P<sp>.*?) -> "
    r"(?P<dst>[A-Za-z0-9][A-Za-z0-9._-]*):(?P<dp>.*?)(?: \[[^\]]*\])?$"
)
# The rows the gateway left failed: they say it lags (see daulat.gateway.ledger).
_THE_GATEWAYS = "(substr(error, 1, ?) = ? OR substr(error, 1, ?) = ? OR error = ?)"
_MARKS = (len(LAGS), LAGS, len(NOT_ACKNOWLEDGED), NOT_ACKNOWLEDGED, UNDER_WAY)


@dataclass(frozen=True)
class Lag:
    """Objects written through the gateway that a replica does not hold verified yet."""

    objects: int  # all of them, ``conflicts`` included
    sync: str  # the command that copies them: daulat sync PRIMARY REPLICA
    conflicts: int = 0  # of them, those no sync copies while things stay as they are
    conflict: str = ""  # why, for one of them


@dataclass
class _Pair:
    """One pair's counts, gathered from the queries below."""

    lagging: int = 0  # a sync copies them (as far as is known)
    conflicts: int = 0
    conflict: str = ""

    def blocked(self, n: int, why: str | None) -> None:
        self.conflicts += n
        self.conflict = self.conflict or why or ""


def lagging(state_dir: Path, stores: Mapping[str, StoreConfig] | None = None) -> dict[str, Lag]:
    """Store name → what it lacks of the gateway's writes (see the module docstring). With
    ``stores`` (the configured stores), the lagging keys of directory replicas are checked
    for a name conflict. Never raises: unreadable state is reported by the commands that own
    it."""
    path = state_dir / JOURNAL_NAME
    if not path.exists():
        return {}
    try:
        db = connect_readonly(path, JOURNAL_KIND)
    except Exception:
        return {}
    try:
        if not has_tables(db, "journal", "runs"):
            return {}
        pairs = _pairs(db)
        for pair, counts in pairs.items():
            m = _PAIR.match(pair)
            if m is not None and counts.lagging and stores is not None:
                _check(db, pair, m["dst"], m["dp"], counts, stores)
    except sqlite3.Error:
        return {}
    finally:
        db.close()
    out: dict[str, Lag] = {}
    for pair, counts in pairs.items():
        m = _PAIR.match(pair)
        if m is None:
            continue
        src = f"{m['src']}:{m['sp']}".rstrip(":")
        dst = f"{m['dst']}:{m['dp']}".rstrip(":")
        kept = out.get(m["dst"]) or Lag(0, "")
        out[m["dst"]] = Lag(
            kept.objects + counts.lagging + counts.conflicts,
            kept.sync if kept.sync and not counts.lagging else f"daulat sync {src} {dst}",
            kept.conflicts + counts.conflicts,
            kept.conflict or counts.conflict,
        )
    return out


def _pairs(db: sqlite3.Connection) -> dict[str, _Pair]:
    """Pair → its counts, before any conflict is looked for at the replicas."""
    pairs: dict[str, _Pair] = {}
    # The rows the gateway itself left failed; those whose write met a name conflict apart.
    for pair, n, conflicts, conflict in db.execute(
        "SELECT pair, count(*), sum(instr(error, ?) > 0), "
        "max(CASE WHEN instr(error, ?) > 0 THEN substr(error, instr(error, ?) + ?) END) "
        f"FROM journal WHERE state = 'failed' AND {_THE_GATEWAYS} GROUP BY pair",
        (CONFLICT, CONFLICT, CONFLICT, len(CONFLICT), *_MARKS),
    ):
        counts = pairs.setdefault(pair, _Pair())
        counts.lagging += int(n) - int(conflicts or 0)
        counts.blocked(int(conflicts or 0), conflict)
    # The gateway's writes whose rows a sync has since rewritten without copying them. The
    # gateway's runs are read once (one per row it wrote) and joined on the journal's key.
    for pair, state, n, error in db.execute(
        "WITH gw(pair, key) AS (SELECT DISTINCT pair, json_extract(summary, '$.key') "
        "FROM runs WHERE kind = 'gateway' AND json_valid(summary)) "
        "SELECT j.pair, j.state, count(*), max(j.error) FROM gw "
        "JOIN journal j ON j.pair = gw.pair AND j.key = gw.key "
        f"WHERE j.state != 'done' AND NOT coalesce({_THE_GATEWAYS}, 0) "
        "GROUP BY j.pair, j.state",
        _MARKS,
    ):
        counts = pairs.setdefault(pair, _Pair())
        if state == "refused":
            counts.blocked(int(n), f"{REFUSED_BY_SYNC}{error or 'no reason recorded'}")
        else:
            counts.lagging += int(n)
    return pairs


def _check(
    db: sqlite3.Connection,
    pair: str,
    name: str,
    prefix: str,
    counts: _Pair,
    stores: Mapping[str, StoreConfig],
) -> None:
    """Move to ``counts.conflicts`` the lagging keys of ``pair`` (up to :data:`CHECKED`) that
    replica ``name``, a directory, cannot hold beside an object it holds now."""
    from daulat.stores import open_store
    from daulat.stores.keys import has_name_conflicts, name_conflict

    store_cfg = stores.get(name)
    # Only a directory tree has such conflicts; other stores are not even opened.
    if store_cfg is None or store_cfg.scheme != "file":
        return
    store = open_store(store_cfg)
    if not has_name_conflicts(store):
        return
    rows = db.execute(
        "SELECT coalesce(stored_as, key) FROM journal WHERE pair = ? AND state = 'failed' AND "
        f"{_THE_GATEWAYS} AND instr(error, ?) = 0 LIMIT ?",
        (pair, *_MARKS, CONFLICT, CHECKED),
    )
    for (key,) in rows.fetchall():
        try:
            why = name_conflict(store, prefix + key)
        except ValueError:  # a NUL in a key: no path, so no conflict to report here
            continue
        if why is not None:
            counts.lagging -= 1
            counts.blocked(1, f"{key!r}: {why}")
