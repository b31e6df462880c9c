"""What the gateway last found about each store: revoked, down or recovered (from the audit log).

``daulat serve`` keeps replica health in memory and writes each change to the audit log
(``gateway.revoked``, ``gateway.down``, ``gateway.recovered``, see :mod:`.runtime`). ``daulat
stores`` and the report read the latest of those per store, so that a provider's refusal seen
by the gateway is shown where the stores are, after the gateway has stopped.
"""

from __future__ import annotations

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
}


@dataclass(frozen=True)
class Standing:
    """The gateway's latest finding about one store."""

    state: str  # "revoked" (403/401: access refused), "down" (unreachable, 5xx) or "recovered"
    since: str  # the audit entry's time, to the second
    replica: str  # the replica (STORE[:PREFIX]) the finding was about
    error: str | None

    @property
    def refused(self) -> bool:
        return self.state != "recovered"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def store_standing(state_dir: Path) -> dict[str, Standing]:
    """Store name → the latest gateway finding about any of its replicas. A damaged audit log
    yields what was read before the damage (``daulat audit verify`` says where it is)."""
    out: dict[str, Standing] = {}
    log = audit_log(state_dir)
    if not log.path.exists():
        return out
    try:
        for entry in log.entries():
            state = OPERATIONS.get(entry.operation)
            if state is None:
                continue
            replica = entry.details.get("replica")
            if not isinstance(replica, str):
                continue
            store = entry.details.get("store")
            name = store if isinstance(store, str) else replica.partition(":")[0]
            error = entry.details.get("error")
            out[name] = Standing(
                state, _seconds(entry.time), replica, error if isinstance(error, str) else None
            )
    except AuditLogError:
        pass
    return out


def _seconds(when: str) -> str:
    """An audit time to the second (people read it; the log keeps the exact one)."""
    try:
        return dt.datetime.fromisoformat(when).isoformat(timespec="seconds")
    except ValueError:
        return when


def describe(name: str, s: Standing) -> str:
    """One line for ``daulat stores``."""
    what = {
        "revoked": "refused access (revoked)",
        "down": "did not answer (down)",
        "recovered": "answered again (recovered)",
    }[s.state]
    where = f" ({s.replica})" if s.replica != name else ""
    tail = f": {s.error}" if s.error and s.refused else ""
    return f"{name}: the gateway last found it {what} at {s.since}{where}{tail}"
