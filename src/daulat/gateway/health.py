"""Per-replica health: a circuit breaker with half-open probes, in memory.

A replica that fails (connection refused or reset, a 5xx, a timeout) ``FAILURES`` times in a
row, or that refuses access once (403/401, a deleted bucket: revoked, which retrying will not
mend), or whose directory is gone (a directory store's root), is *open* ("down"):
requests skip it, so a dead replica costs nothing after it was found dead. After a cool-down
(doubling per failed probe, up to ``MAX_COOLDOWN``) it is *half-open*: it is probed once;
success closes the circuit, failure opens it again. Where a probe is registered
(:meth:`Health.register`) it runs in the background and requests go on skipping the replica
meanwhile: a client never waits for a replica that hangs while another could answer. Else
the next request is the probe. A request that got no answer within the store's
``request_timeout`` (:meth:`Health.limit`) opens the circuit at once: three of them would
cost three clients that long each. Transitions are reported to ``on_change`` (the gateway
writes them to the audit log).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from daulat.errors import (
    AccessDenied,
    InvalidKey,
    NotFound,
    StoreError,
    Unresponsive,
    Unsupported,
)

T = TypeVar("T")

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


def refused_access(exc: BaseException) -> bool:
    """Whether the replica refused access (revoked), as opposed to being unreachable: an
    endpoint that stopped answering is Unresponsive, an AccessDenied the store raises so that
    runs stop, but for the gateway it is down, not revoked."""
    return isinstance(exc, AccessDenied) and not isinstance(exc, Unresponsive)


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
Probe = Callable[[], Awaitable[None]]


class Health:
    """The circuits of every replica by name."""

    def __init__(
        self, on_change: Listener | None = None, clock: Callable[[], float] = time.monotonic
    ):
        self._circuits: dict[str, Circuit] = {}
        self._on_change = on_change
        self._clock = clock
        self._probes: dict[str, Probe] = {}
        self._limits: dict[str, float] = {}
        self._running: set[asyncio.Task[None]] = set()

    def register(self, name: str, probe: Probe, limit: float | None) -> None:
        """``probe`` checks the replica in the background when its circuit is half-open (it
        reports through :meth:`succeeded` / :meth:`failed`); ``limit``: the store's
        ``request_timeout``, the longest a request to it may wait for an answer."""
        self._probes.setdefault(name, probe)
        if limit is not None:
            self._limits.setdefault(name, limit)

    def limit(self, name: str) -> float | None:
        return self._limits.get(name)

    async def within(self, name: str, request: Awaitable[T]) -> T:
        """``request``, failed with :class:`TimeoutError` past the replica's limit: one
        timeout, never the store's retries of it (which multiply it)."""
        return await asyncio.wait_for(request, self._limits.get(name))

    def timed_out(self, name: str, what: str) -> None:
        """A request to the replica got no answer within its limit: open at once."""
        limit = self._limits.get(name)
        self.failed(
            name,
            f"{what}: no answer within {limit:g} s (request_timeout)" if limit else what,
            gone=True,
        )

    def _probe(self, c: Circuit) -> bool:
        """Start the replica's background probe; False when it has none (or no loop runs)."""
        probe = self._probes.get(c.name)
        if probe is None:
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False

        async def run() -> None:
            try:
                await probe()
            except Exception as exc:  # a probe that broke is a failed probe
                if c.probing:
                    self.failed(c.name, f"probe failed: {exc}")
            finally:
                if c.probing:  # the probe reported nothing: try again after the cool-down
                    self.failed(c.name, c.last_error)

        task = loop.create_task(run())
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return True

    async def close(self) -> None:
        """Cancel the probes in flight."""
        for task in list(self._running):
            task.cancel()
        for task in list(self._running):
            with contextlib.suppress(BaseException):
                await task

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
            return not self._probe(c)
        return False

    def succeeded(self, name: str) -> None:
        c = self.circuit(name)
        was = c.state
        c.failures, c.probing = 0, False
        if was != State.CLOSED:
            c.state, c.cooldown, c.revoked = State.CLOSED, COOLDOWN, False
            self._changed(c, "recovered")  # the listener may say what it recovered from
        c.last_error = ""

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
