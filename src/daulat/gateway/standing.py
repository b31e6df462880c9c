"""What the gateway found about each store: altered or withheld data, revoked, down or
recovered (from the audit log).

``daulat serve`` keeps replica health in memory and writes each change to the audit log
(``gateway.revoked``, ``gateway.down``, ``gateway.recovered``), and each object a replica
held altered or withheld (``gateway.mismatch``, ``gateway.withheld``), see :mod:`.runtime`.
``daulat stores`` and the report show the most serious of those per store (evidence about its
data first, else the latest of the others), so that what the gateway found about a provider
is shown where the stores are, after the gateway has stopped.

A store's health is a state that ages: a gateway that stops while it holds stores down or
revoked writes ``gateway.stopped`` naming them, and their state is then shown with the time
that gateway stopped (nothing has watched the store since: it may well answer now). A gateway
that starts writes ``gateway.started`` naming the stores it watches: from then on an earlier
"down" or "revoked" of one of them is history, shown with the time the new watch began, and
no longer as current (that gateway writes ``gateway.down`` if it finds the store down again).
Every state is shown with its age. Evidence about data (altered, withheld) does not age.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from daulat.audit import AuditLogError, audit_log

#: The audit operations that change a replica's standing, and the state each one means.
OPERATIONS = {
    "gateway.revoked": "revoked",
    "gateway.down": "down",
    "gateway.recovered": "recovered",
    "gateway.mismatch": "altered",
    "gateway.withheld": "withheld",
}
#: Written by a gateway as it stops, naming the stores it watched.
STOPPED = "gateway.stopped"
#: Written by a gateway as it starts, naming the stores it watches: a new watch begins.
STARTED = "gateway.started"
#: Findings about the data a store holds (other bytes than were copied, a copy missing):
#: evidence against the provider. They stay shown until a later such finding: a store that
#: answers again afterwards ("recovered", "down") does not hide them.
EVIDENCE = {"altered", "withheld"}


@dataclass(frozen=True)
class Standing:
    """The gateway's latest finding about one store."""

    # "altered" (held other bytes than were copied), "withheld" (lacked an object it is
    # recorded to hold), "revoked" (403/401: access refused), "down" (unreachable, 5xx) or
    # "recovered"
    state: str
    since: str  # the audit entry's time, to the second
    replica: str  # the replica (STORE[:PREFIX]) the finding was about
    error: str | None
    key: str | None = None  # the object, for altered and withheld
    # When the gateway that found it stopped (down, revoked, recovered): no gateway has
    # watched the store since. None while one runs, or when it ended without saying so.
    stopped: str | None = None
    # When a later gateway started watching the store (down, revoked): it has not found it
    # so since, or a newer finding would have replaced this one. None if none has.
    watched: str | None = None

    @property
    def refused(self) -> bool:
        """Whether the store is, as far as the gateways know, refusing or down now."""
        return self.state != "recovered" and self.watched is None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def store_standing(state_dir: Path) -> dict[str, Standing]:
    """Store name → the most serious gateway finding about any of its replicas: the latest
    altered or withheld object if any (see :data:`EVIDENCE`), else the latest of revoked, down
    and recovered. A damaged audit log yields what was read before the damage (``daulat
    audit verify`` says where it is)."""
    out: dict[str, Standing] = {}
    log = audit_log(state_dir)
    if not log.path.exists():
        return out
    try:
        for entry in log.entries():
            if entry.operation == STARTED:
                for name in _names(entry.details.get("stores")):
                    kept = out.get(name)
                    if kept is None or kept.state in EVIDENCE or kept.state == "recovered":
                        continue
                    if kept.watched is None:
                        out[name] = dataclasses.replace(kept, watched=_seconds(entry.time))
                continue
            if entry.operation == STOPPED:
                for name in _names(entry.details.get("stores")):
                    kept = out.get(name)
                    if kept is None or kept.state in EVIDENCE or kept.stopped is not None:
                        continue
                    out[name] = dataclasses.replace(kept, stopped=_seconds(entry.time))
                continue
            state = OPERATIONS.get(entry.operation)
            if state is None:
                continue
            replica = entry.details.get("replica")
            if not isinstance(replica, str):
                continue
            store = entry.details.get("store")
            name = store if isinstance(store, str) else replica.partition(":")[0]
            if state not in EVIDENCE and (kept := out.get(name)) and kept.state in EVIDENCE:
                continue
            error = entry.details.get("error")
            key = entry.details.get("key")
            out[name] = Standing(
                state,
                _seconds(entry.time),
                replica,
                error if isinstance(error, str) else None,
                key if isinstance(key, str) and state in EVIDENCE else None,
            )
    except AuditLogError:
        pass
    return out


def _names(value: object) -> list[str]:
    """The store names an entry lists (nothing from a malformed entry)."""
    return [n for n in value if isinstance(n, str)] if isinstance(value, list) else []


def _seconds(when: str) -> str:
    """An audit time to the second (people read it; the log keeps the exact one)."""
    try:
        return dt.datetime.fromisoformat(when).isoformat(timespec="seconds")
    except ValueError:
        return when


def describe(name: str, s: Standing, now: dt.datetime | None = None) -> str:
    """One line for ``daulat stores``."""
    what = {
        "altered": f"held other bytes than were copied for {s.key!r} (altered)",
        "withheld": f"lacked {s.key!r}, of which it is recorded to hold a verified copy (withheld)",
        "revoked": "refused access (revoked)",
        "down": "did not answer (down)",
        "recovered": "answered again (recovered)",
    }[s.state]
    where = f" ({s.replica})" if s.replica != name else ""
    tail = f": {s.error}" if s.error and s.state != "recovered" else ""
    line = f"{name}: the gateway last found it {what} at {s.since} ({age(s.since, now)}){where}"
    if s.stopped is not None:
        line += f"; that gateway stopped at {s.stopped} ({age(s.stopped, now)})"
        if s.watched is None:
            line += " and nothing has checked the store since"
    line += tail
    if s.watched is not None:
        line += (
            f"; a later gateway, started at {s.watched} ({age(s.watched, now)}), has not found "
            "it down or refusing"
        )
    return line


def age(when: str, now: dt.datetime | None = None) -> str:
    """How long ago ``when`` (an audit time) was, for people: "5 min ago"."""
    try:
        then = dt.datetime.fromisoformat(when)
    except ValueError:
        return "age unknown"
    if then.tzinfo is None:
        then = then.replace(tzinfo=dt.UTC)
    seconds = max(0, int(((now or dt.datetime.now(dt.UTC)) - then).total_seconds()))
    if seconds < 90:
        return f"{seconds} s ago"
    if seconds < 90 * 60:
        return f"{seconds // 60} min ago"
    if seconds < 48 * 3600:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"
