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

A store found down or refusing is found answering again by more than the gateway that found
it so (whose probe writes ``gateway.recovered``): a later ``gateway.write`` that the same
replica holds verified (another gateway wrote to it), or a later ``daulat sync`` (``copy``,
``exit``) to the replica's address that ended ok, once nothing written through the gateway
lags there (:mod:`.lag`): the sync caught it up. Either is shown as "recovered", with when
it was last found down or refusing, in the past tense.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daulat.address import parse_address
from daulat.audit import AuditLogError, audit_log
from daulat.errors import ConfigError

if TYPE_CHECKING:
    from daulat.gateway.lag import Lag

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
#: The states a later answer of the store makes history.
REFUSING = {"down", "revoked"}
#: The audit operations of transfers that write to their destination (``daulat copy``,
#: ``sync``, ``exit``): one that ended ok shows the destination answered.
TRANSFERS = {"copy", "sync", "exit"}


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
    # For "recovered", what showed the store answering: "gateway" (the gateway that found it
    # down or refusing: a request or its probe), "write" (a later write through a gateway
    # reached the replica), or the transfer ("sync", "copy", "exit") that ended ok at the
    # replica's address, nothing written through the gateway lagging there since.
    seen_by: str | None = None
    # For "recovered", the finding it recovered from ("down", "revoked"), when, and why.
    was: str | None = None
    was_since: str | None = None
    was_error: str | None = None

    @property
    def refused(self) -> bool:
        """Whether the store is, as far as the gateways know, refusing or down now."""
        return self.state != "recovered" and self.watched is None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def store_standing(state_dir: Path, lags: Mapping[str, Lag] | None = None) -> dict[str, Standing]:
    """Store name → the most serious gateway finding about any of its replicas: the latest
    altered or withheld object if any (see :data:`EVIDENCE`), else the latest of revoked, down
    and recovered, a store found answering since counting as recovered (see the module
    docstring). ``lags``: what each store lacks of the gateway's writes
    (:func:`.lag.lagging`), read from the journal when not given. A damaged audit log yields
    what was read before the damage (``daulat audit verify`` says where it is)."""
    out: dict[str, Standing] = {}
    # Store → the latest transfer that ended ok at the address of its replica found down or
    # refusing, after that finding: (when, operation).
    synced: dict[str, tuple[str, str]] = {}
    log = audit_log(state_dir)
    if not log.path.exists():
        return out
    try:
        for entry in log.entries():
            if entry.operation == "gateway.write":
                for holder in _names(entry.details.get("replicas")):
                    name = holder.partition(":")[0]
                    kept = out.get(name)
                    if kept is not None and kept.state in REFUSING and kept.replica == holder:
                        out[name] = _answered(kept, _seconds(entry.time), "write")
                        synced.pop(name, None)
                continue
            if entry.operation in TRANSFERS:
                name, address = _destination(entry.details)
                kept = out.get(name)
                if kept is not None and kept.state in REFUSING and kept.replica == address:
                    synced[name] = (_seconds(entry.time), entry.operation)
                continue
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
                    if kept.seen_by not in (None, "gateway"):
                        continue  # not that gateway's finding: its stop says nothing of it
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
            kept = out.get(name)
            found = Standing(
                state,
                _seconds(entry.time),
                replica,
                error if isinstance(error, str) else None,
                key if isinstance(key, str) and state in EVIDENCE else None,
            )
            if state == "recovered":
                found = dataclasses.replace(found, seen_by="gateway")
                if kept is not None and kept.state in REFUSING:
                    found = _answered(kept, found.since, "gateway")
            out[name] = found
            synced.pop(name, None)
    except AuditLogError:
        pass
    if synced:
        if lags is None:
            from daulat.gateway.lag import lagging

            lags = lagging(state_dir)
        for name, (when, operation) in synced.items():
            # Caught up only when nothing written through the gateway lags there: a write
            # since, which the gateway still found it down for, says it was not.
            if (lag := lags.get(name)) is None or lag.objects == 0:
                out[name] = _answered(out[name], when, operation)
    return out


def _answered(kept: Standing, when: str, seen_by: str) -> Standing:
    """``kept`` (down or refusing) made history: the store answered at ``when``."""
    return Standing(
        "recovered",
        when,
        kept.replica,
        None,
        seen_by=seen_by,
        was=kept.state,
        was_since=kept.since,
        was_error=kept.error,
    )


def _destination(details: Mapping[str, object]) -> tuple[str, str]:
    """The store and address (``STORE[:PREFIX]`` as replicas are named) a transfer wrote to
    and ended ok at, or ("", "") for one that did not (a dry run, a run that failed or is
    incomplete, a malformed entry)."""
    dst = details.get("dst")
    if details.get("outcome") != "ok" or details.get("dry_run") or not isinstance(dst, str):
        return "", ""
    try:
        address = parse_address(dst)
    except ConfigError:
        return "", ""
    return address.store, address.label


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
    if s.seen_by == "write":
        line = (
            f"{name}: it answered again (recovered): a write through the gateway reached it at "
            f"{s.since} ({age(s.since, now)}){where}"
        )
    elif s.seen_by in TRANSFERS:
        line = (
            f"{name}: it answered again (recovered): `daulat {s.seen_by}` to {s.replica} ended "
            f"ok at {s.since} ({age(s.since, now)}) and nothing of the gateway's writes "
            "lags there"
        )
    else:
        line = f"{name}: the gateway last found it {what} at {s.since} ({age(s.since, now)}){where}"
    if s.was is not None and s.was_since is not None:
        was = "refusing access (revoked)" if s.was == "revoked" else "down"
        line += f"; it was last found {was} at {s.was_since} ({age(s.was_since, now)})"
        line += f": {s.was_error}" if s.was_error else ""
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
