"""A destination encrypted to one set of recipients is not silently re-encrypted to another.

An ``exit`` with ``--encrypt-to`` naming another (valid) recipient than the replica's copies
every object again, encrypted to that recipient: afterwards the old identity restores nothing.
A pasted wrong key would do that without a word. So a run whose recipients differ from those
of the last encrypted run into the same place (this machine's journal: the pair id carries a
hash of the recipients, see ``Options.codec_tag``; the manifest cannot say, since an age file
does not name its recipients) is refused (exit 2) unless ``--reencrypt`` says it is meant.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from daulat.errors import SafetyRefusal
from daulat.transfer.journal import Journal

if TYPE_CHECKING:
    from daulat.transfer.engine import Endpoint, Kind, Options

__all__ = ["RecipientsChanged", "recipients_changed"]

_PAIR = re.compile(
    r"^(?P<src>[A-Za-z0-9][A-Za-z0-9._-]*):(?P<sp>.*?) -> "
    r"(?P<dst>[A-Za-z0-9][A-Za-z0-9._-]*):(?P<dp>.*?)(?: \[age:(?P<keys>[0-9a-f]+)[^\]]*\])$"
)


class RecipientsChanged(SafetyRefusal):
    """An encrypted run to other recipients than the destination's last encrypted run."""


def recipients_changed(
    kind: Kind, journal: Journal, dst: Endpoint, opts: Options
) -> RecipientsChanged | None:
    if not opts.encrypt_to or opts.reencrypt:
        return None
    now = _PAIR.match(f"x: -> x:{opts.codec_tag}")
    assert now is not None
    paths = opts.store_paths or {dst.store.name: ""}
    here = paths.get(dst.store.name, "") + dst.prefix
    rows = journal.db.execute(
        "SELECT id, pair, started FROM runs WHERE kind != 'verify' AND pair LIKE '% [age:%' "
        "ORDER BY id DESC"
    )
    for run_id, pair, started in rows:
        m = _PAIR.match(pair)
        if m is None or m["dst"] not in paths or paths[m["dst"]] + m["dp"] != here:
            continue
        wrote = journal.db.execute(
            "SELECT 1 FROM journal WHERE pair = ? AND state = 'done' LIMIT 1", (pair,)
        ).fetchone()
        if wrote is None:
            continue
        if m["keys"] == now["keys"]:
            return None
        label = dst.label or dst.store.name
        to = ", ".join(str(r) for r in opts.encrypt_to)
        return RecipientsChanged(
            f"{label} holds objects encrypted to other recipients (run {run_id}, {started}); "
            f"this {kind.value} would encrypt what it copies there to {to} instead, and the "
            "old recipients' identity could no longer restore it. Check the recipient; if the "
            "replica is meant to move to the new recipients, pass --reencrypt"
        )
    return None
