"""Per-replica health: a circuit breaker with half-open probes, in memory.

A replica that fails (connection refused or reset, a 5xx, a timeout) ``FAILURES`` times in a
row, or that refuses access once (403/401, a deleted bucket: revoked, which retrying will not
mend), or whose directory is gone (a directory store's root), is *open* ("down"):
requests skip it, so a dead replica costs nothing after it was found dead. After a cool-down
(doubling per failed probe, up to ``MAX_COOLDOWN``) it is *half-open*: one request may try it;
success closes the circuit, failure opens it again. Transitions are reported to ``on_change``
(the gateway writes them to the audit log).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from daulat.errors import InvalidKey, NotFound, StoreError, Unsupported

FAILURES = 3
COOLDOWN = 2.0
MAX_COOLDOWN = 60.0


# A store's error that carries the server's 4xx answer (other than 401/403, which are
# AccessDenied, and 404, NotFound): "(HTTP 400)" for a HEAD without a body, else S3's code.
_ANSWER = re.compile(
    r"\((?:HTTP 4\d\d|InvalidArgument|InvalidRequest|InvalidURI|InvalidObjectName|"
    r"KeyTooLongError|BadRequest)\)$"
)


def answered(exc: BaseException) -> bool:
    """Whether a failed request is the replica's answer about that one request (no such key,
    a key it refuses as invalid: a 4xx other than 401/403), which says nothing about its
    health. Only connection failures, timeouts, 5xx and refusals of access count: else any
    client could knock a healthy primary "down" by asking three times for ``../x``."""
    if isinstance(exc, (NotFound, InvalidKey, Unsupported)):
        return True
    return type(exc) is StoreError and _ANSWER.search(str(exc)) is not None


class State(StrEnum):
    CLOSED = "up"
    OPEN = "down"
    HALF_OPEN = "probing"


@dataclass
class Circuit:
    name: str
    state: State = State.CLOSED
    failures: int = 0
    cooldown: float = COOLDOWN
    opened_at: float = 0.0
    revoked: bool = False
    last_error: str = ""
    probing: bool = field(default=False, repr=False)


Listener = Callable[[Circuit, str], None]


class Health:
    """The circuits of every replica by name."""

    def __init__(
        self, on_change: Listener | None = None, clock: Callable[[], float] = time.monotonic
    ):
        self._circuits: dict[str, Circuit] = {}
        self._on_change = on_change
        self._clock = clock

    def circuit(self, name: str) -> Circuit:
        c = self._circuits.get(name)
        if c is None:
            c = self._circuits[name] = Circuit(name)
        return c

    def usable(self, name: str) -> bool:
        """Whether a request may use the replica now (claims the probe when half-open)."""
        c = self.circuit(name)
        if c.state == State.CLOSED:
            return True
        if c.state == State.OPEN and self._clock() - c.opened_at >= c.cooldown:
            c.state, c.probing = State.HALF_OPEN, False
        if c.state == State.HALF_OPEN and not c.probing:
            c.probing = True
            return True
        return False

    def succeeded(self, name: str) -> None:
        c = self.circuit(name)
        was = c.state
        c.failures, c.probing = 0, False
        if was != State.CLOSED:
            c.state, c.cooldown, c.revoked = State.CLOSED, COOLDOWN, False
            self._changed(c, "recovered")

    def failed(self, name: str, error: str, *, revoked: bool = False, gone: bool = False) -> None:
        """A request to the replica failed. ``revoked``: it refused access; ``gone``: it is not
        there (a directory store's root, a bucket): either opens the circuit at once."""
        c = self.circuit(name)
        c.failures += 1
        c.last_error = error
        c.probing = False
        if c.state == State.HALF_OPEN:
            c.cooldown = min(MAX_COOLDOWN, c.cooldown * 2)
        if c.state != State.OPEN and (
            revoked or gone or c.failures >= FAILURES or c.state == State.HALF_OPEN
        ):
            first = c.state == State.CLOSED
            c.state, c.opened_at = State.OPEN, self._clock()
            c.revoked = c.revoked or revoked
            if first:
                self._changed(c, "revoked" if revoked else "down")
        elif c.state == State.OPEN:
            c.opened_at = self._clock()

    def snapshot(self) -> list[Circuit]:
        return list(self._circuits.values())

    def _changed(self, c: Circuit, what: str) -> None:
        if self._on_change is not None:
            self._on_change(c, what)
