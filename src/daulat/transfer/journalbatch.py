"""Committing outcomes in batches: one transaction per few hundred objects, not per object."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from daulat.transfer.journalrows import Outcome, State


class Recorder(Protocol):
    """Where a :class:`BatchWriter` commits: the journal, or a Ray worker's result stream."""

    def record(
        self, pair: str, run_id: int, outcomes: Sequence[Outcome], settled: Sequence[str] = ()
    ) -> None: ...


class BatchWriter:
    """Collects outcomes and commits them every ``every`` items or ``seconds``.

    A commit per object costs ~245 µs on this class of machine and caps a loop near 4,000
    objects/s; batching brings it to ~13 µs per object. Outcomes are acknowledged (counted as
    done) only once their batch has committed.

    An outcome of an object over ``immediate_over`` bytes is committed at once (with whatever
    is pending): such objects are few, each is worth a commit, and one that completed must not
    wait in memory for a kill to lose it. Its ``completing`` row goes in the same transaction.
    """

    def __init__(
        self,
        journal: Recorder,
        pair: str,
        run_id: int,
        every: int = 200,
        seconds: float = 1.0,
        *,
        immediate_over: int | None = None,
    ) -> None:
        self._journal = journal
        self.journal = journal
        self._pair = pair
        self._run_id = run_id
        self._every = every
        self._seconds = seconds
        self._immediate_over = immediate_over
        self._pending: list[Outcome] = []
        self._last = time.monotonic()

    def _large(self, outcome: Outcome) -> bool:
        return self._immediate_over is not None and outcome.size > self._immediate_over

    def add(self, outcome: Outcome) -> list[Outcome]:
        """Queue an outcome; returns the outcomes committed by this call (maybe none)."""
        self._pending.append(outcome)
        if (
            len(self._pending) >= self._every
            or self._large(outcome)
            or time.monotonic() - self._last >= self._seconds
        ):
            return self.flush()
        return []

    def add_many(self, outcomes: Sequence[Outcome]) -> list[Outcome]:
        """Queue a batch of outcomes (a Ray worker's report); returns those committed by this
        call. Same rule as :meth:`add`, judged once per batch: one large outcome in it commits
        everything pending with it."""
        self._pending.extend(outcomes)
        limit = self._immediate_over
        if (
            len(self._pending) >= self._every
            or (limit is not None and any(o.size > limit for o in outcomes))
            or time.monotonic() - self._last >= self._seconds
        ):
            return self.flush()
        return []

    def flush(self) -> list[Outcome]:
        if not self._pending:
            return []
        batch, self._pending = self._pending, []
        limit = self._immediate_over
        settled = (
            [o.key for o in batch if o.size > limit and o.state == State.DONE]
            if limit is not None
            else []
        )
        self._journal.record(self._pair, self._run_id, batch, settled=settled)
        self._last = time.monotonic()
        return batch
