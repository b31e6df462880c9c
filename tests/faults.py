"""Fault injection: a Store that wraps another Store and misbehaves on purpose.

Why this exists: an exit tool is judged on its worst day, when the provider throttles, a stream
dies half-way or the credentials are revoked in the middle of a run. Real servers cannot be made
to fail on cue, deterministically, at the exact operation a test cares about, so the tests wrap a
real store in :class:`FaultyStore` and state the faults as data (:class:`FaultRules`):

* **Throttling.** ``transient={"put": 0.3}`` raises :class:`~daulat.errors.Transient` (what a
  503 SlowDown becomes) on that fraction of ``put`` calls. The draws come from a seeded
  :class:`random.Random`, so a test sees the same sequence of decisions on every run (for a
  given order of calls).
* **Refusal.** ``deny_after=40`` lets 40 counted operations (``deny_counts``, puts by default)
  succeed, then raises :class:`~daulat.errors.AccessDenied` on every call of every operation, as a
  provider does once it has revoked a key. :meth:`FaultyStore.revoke` and
  :meth:`FaultyStore.restore` flip the same switch by hand. Calls already inside the inner store
  when the switch flips complete normally: a real revocation does not cut off a request that is
  being served either.
* **Broken streams.** ``stream_fail_after=K`` makes a ``get`` whose body is longer than ``K``
  bytes raise ``Transient`` after yielding ``K`` bytes, ``stream_fail_times`` times per key, which
  is what a connection reset in the middle of a download looks like to the reader.
* **Accounting.** Every call is counted per operation and per key (``puts_by_key``,
  ``gets_by_key``, ...), attempted and succeeded separately, so a test can assert what was (or
  was not) uploaded again after a resume.

The wrapper keeps the Store contracts of the inner store (it is a Store itself); it only adds
failures that the contracts allow any store to have. It is for tests only, so it lives beside them
and is not part of the installed package.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from daulat.errors import AccessDenied, Transient
from daulat.stores.base import ObjectInfo, ObjectReader, OnUpload, PutResult, Store
from daulat.stores.forwarding import ForwardingStore

Op = Literal["list", "head", "get", "put", "delete"]
OPS: tuple[Op, ...] = get_args(Op)


@dataclass(frozen=True)
class FaultRules:
    """What a :class:`FaultyStore` does wrong, and when.

    ``transient``
        Probability per operation name of raising ``Transient`` instead of calling the inner
        store. For ``list`` the draw is made before each batch, so a listing can also fail part
        way through (a caller must restart it).
    ``fail_first``
        Per operation name, the first N calls *for each key* raise ``Transient`` (for ``list``:
        the first N listings). Deterministic, for tests that need "fails once, then works".
    ``transient_keys``
        Limits ``transient`` and ``fail_first`` to the keys it accepts (all keys when None),
        e.g. only the manifest under ``.daulat/``.
    ``seed``
        Seed of the random draws, so a failing test fails the same way when re-run.
    ``deny_after``
        After this many successful operations of the kinds in ``deny_counts``, every further
        call (of any kind) raises ``AccessDenied`` until :meth:`FaultyStore.restore`. Calls in
        flight count towards the limit, so at most ``deny_after`` counted operations succeed
        even when many run concurrently.
    ``stream_fail_after`` / ``stream_fail_times`` / ``stream_fail_keys``
        A ``get`` of a key accepted by ``stream_fail_keys`` (all keys when None) whose body
        goes past ``stream_fail_after`` bytes raises ``Transient`` after exactly that many
        bytes; this happens at most ``stream_fail_times`` times per key, so retries eventually
        succeed (use a large number for a stream that never completes).
    """

    transient: Mapping[Op, float] = field(default_factory=dict)
    fail_first: Mapping[Op, int] = field(default_factory=dict)
    transient_keys: Callable[[str], bool] | None = None
    seed: int = 0
    deny_after: int | None = None
    deny_counts: Collection[Op] = field(default_factory=lambda: frozenset[Op]({"put"}))
    stream_fail_after: int | None = None
    stream_fail_times: int = 1
    stream_fail_keys: Callable[[str], bool] | None = None

    def __post_init__(self) -> None:
        for op, p in self.transient.items():
            if op not in OPS:
                raise ValueError(f"unknown operation {op!r} (expected one of {OPS})")
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"probability for {op!r} must be within [0, 1], not {p}")
        for op, n in self.fail_first.items():
            if op not in OPS or n < 0:
                raise ValueError(f"fail_first needs known operations and counts >= 0: {op}={n}")
        if self.deny_after is not None and self.deny_after < 0:
            raise ValueError("deny_after must be >= 0")
        if self.stream_fail_after is not None and self.stream_fail_after < 0:
            raise ValueError("stream_fail_after must be >= 0")
        unknown = [op for op in self.deny_counts if op not in OPS]
        if unknown:
            raise ValueError(f"unknown operations in deny_counts: {unknown}")


class FaultyStore(ForwardingStore):
    """A Store that forwards to ``inner`` and injects the faults described by ``rules``.

    Counters (read them freely; they are plain :class:`~collections.Counter` objects):

    ``calls`` / ``succeeded`` / ``injected``
        Per operation: calls made, calls that returned normally (for ``get``: the reader was
        returned; the body may still fail), and faults injected (all kinds).
    ``attempts_by_key[op]`` / ``successes_by_key[op]``
        Per operation and key; shortcuts :attr:`puts_by_key`, :attr:`puts_ok_by_key`,
        :attr:`gets_by_key`, :attr:`heads_by_key`, :attr:`deletes_by_key`.
    ``denied``
        How many calls were refused with ``AccessDenied``.
    """

    def __init__(self, inner: Store, *, rules: FaultRules | None = None) -> None:
        super().__init__(inner)
        self.rules = rules or FaultRules()
        self._random = random.Random(self.rules.seed)
        # A lock, not just the event loop's single thread: tests may drive one wrapper from
        # several loops (e.g. asyncio.to_thread helpers); counters must stay exact.
        self._lock = threading.Lock()
        self._revoked = False
        self._deny_armed = self.rules.deny_after is not None
        self._counted_ok = 0
        self._counted_in_flight = 0
        self._stream_failures: Counter[str] = Counter()
        self.calls: Counter[Op] = Counter()
        self.succeeded: Counter[Op] = Counter()
        self.injected: Counter[Op] = Counter()
        self.denied = 0
        self.attempts_by_key: dict[Op, Counter[str]] = {op: Counter() for op in OPS}
        self.successes_by_key: dict[Op, Counter[str]] = {op: Counter() for op in OPS}

    # --- switches -----------------------------------------------------------------------------

    @property
    def revoked(self) -> bool:
        """True while every call is refused (by :meth:`revoke` or by ``deny_after``)."""
        return self._revoked

    def revoke(self) -> None:
        """Refuse every call from now on, as a provider does with revoked credentials."""
        with self._lock:
            self._revoked = True

    def restore(self) -> None:
        """Accept calls again, and disarm ``deny_after`` so that it does not fire again."""
        with self._lock:
            self._revoked = False
            self._deny_armed = False

    # --- counters -----------------------------------------------------------------------------

    @property
    def puts_by_key(self) -> Counter[str]:
        """Put attempts per key (including failed and refused ones)."""
        return self.attempts_by_key["put"]

    @property
    def puts_ok_by_key(self) -> Counter[str]:
        """Completed puts per key: what the inner store actually accepted."""
        return self.successes_by_key["put"]

    @property
    def gets_by_key(self) -> Counter[str]:
        return self.attempts_by_key["get"]

    @property
    def heads_by_key(self) -> Counter[str]:
        return self.attempts_by_key["head"]

    @property
    def deletes_by_key(self) -> Counter[str]:
        return self.attempts_by_key["delete"]

    # --- the decision of each call --------------------------------------------------------------

    def _enter(self, op: Op, key: str | None) -> bool:
        """Count the call and raise the injected fault, if any; True if it counts for deny."""
        with self._lock:
            self.calls[op] += 1
            if key is not None:
                self.attempts_by_key[op][key] += 1
            counted = self._deny_armed and op in self.rules.deny_counts
            limit = self.rules.deny_after
            if self._deny_armed and limit is not None:
                # A counted call is admitted only while the successes plus those in flight stay
                # under the limit; any other call is refused once the limit has been reached.
                used = self._counted_ok + (self._counted_in_flight if counted else 0)
                if used >= limit:
                    self._revoked = True
            if self._revoked:
                self.denied += 1
                self.injected[op] += 1
                raise AccessDenied(
                    f"store {self.name!r} refused {_what(op, key)} (AccessDenied, injected): "
                    "credentials revoked",
                    store=self.name,
                    key=key,
                )
            if self._transient_now(op, key):
                self.injected[op] += 1
                raise Transient(
                    f"store {self.name!r}: {_what(op, key)} failed (SlowDown, injected)",
                    store=self.name,
                    key=key,
                )
            if counted:
                self._counted_in_flight += 1
            return counted

    def _transient_now(self, op: Op, key: str | None) -> bool:
        """Whether this call gets a Transient (called with the lock held, after counting)."""
        accept = self.rules.transient_keys
        if key is not None and accept is not None and not accept(key):
            return False
        first = self.rules.fail_first.get(op, 0)
        if first:
            seen = self.calls[op] if key is None else self.attempts_by_key[op][key]
            if seen <= first:
                return True
        p = self.rules.transient.get(op, 0.0)
        return p > 0.0 and self._random.random() < p

    def _leave(self, op: Op, key: str | None, counted: bool, *, ok: bool) -> None:
        with self._lock:
            if counted:
                self._counted_in_flight -= 1
                if ok:
                    self._counted_ok += 1
            if ok:
                self.succeeded[op] += 1
                if key is not None:
                    self.successes_by_key[op][key] += 1

    def _stream_should_fail(self, key: str) -> bool:
        after = self.rules.stream_fail_after
        if after is None:
            return False
        accept = self.rules.stream_fail_keys
        if accept is not None and not accept(key):
            return False
        with self._lock:
            if self._stream_failures[key] >= self.rules.stream_fail_times:
                return False
            self._stream_failures[key] += 1
            return True

    # --- the Store protocol ---------------------------------------------------------------------

    async def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        counted = self._enter("list", None)
        ok = False
        try:
            first = True
            async for batch in self.inner.list(prefix):
                if not first:
                    # Later pages can fail too; the draw for the first was made in _enter.
                    self._draw_transient("list")
                first = False
                yield batch
            ok = True
        finally:
            self._leave("list", None, counted, ok=ok)

    def _draw_transient(self, op: Op) -> None:
        with self._lock:
            if self._revoked:
                self.denied += 1
                self.injected[op] += 1
                raise AccessDenied(
                    f"store {self.name!r} refused {op} (AccessDenied, injected): "
                    "credentials revoked",
                    store=self.name,
                )
            p = self.rules.transient.get(op, 0.0)
            if p > 0.0 and self._random.random() < p:
                self.injected[op] += 1
                raise Transient(
                    f"store {self.name!r}: {op} failed (SlowDown, injected)", store=self.name
                )

    async def head(self, key: str) -> ObjectInfo:
        counted = self._enter("head", key)
        ok = False
        try:
            info = await self.inner.head(key)
            ok = True
            return info
        finally:
            self._leave("head", key, counted, ok=ok)

    async def get(self, key: str, *, start: int = 0, end: int | None = None) -> ObjectReader:
        counted = self._enter("get", key)
        ok = False
        try:
            reader = await self.inner.get(key, start=start, end=end)
            ok = True
        finally:
            self._leave("get", key, counted, ok=ok)
        after = self.rules.stream_fail_after
        if after is not None and reader.info.size - start > after and self._stream_should_fail(key):
            with self._lock:
                self.injected["get"] += 1
            return _BrokenReader(reader, after, self.name, key)
        return reader

    async def put(
        self,
        key: str,
        data: bytes | AsyncIterable[bytes],
        *,
        sha256: str | None = None,
        metadata: Mapping[str, str] | None = None,
        prehashed: bool = False,
        on_upload: OnUpload | None = None,
    ) -> PutResult:
        counted = self._enter("put", key)
        ok = False
        try:
            result = await self.inner.put(
                key, data, sha256=sha256,
                metadata=metadata,
                prehashed=prehashed,
                on_upload=on_upload,
            )
            ok = True
            return result
        finally:
            self._leave("put", key, counted, ok=ok)

    async def delete(self, key: str) -> None:
        counted = self._enter("delete", key)
        ok = False
        try:
            await self.inner.delete(key)
            ok = True
        finally:
            self._leave("delete", key, counted, ok=ok)


class _BrokenReader:
    """A reader that passes ``limit`` bytes of the inner body through, then fails.

    The failure is ``Transient``, as a reset connection is: the object itself is fine and a
    fresh read would succeed.
    """

    def __init__(self, inner: ObjectReader, limit: int, store: str, key: str) -> None:
        self.info = inner.info
        self.metadata = inner.metadata
        self._inner = inner
        self._limit = limit
        self._store = store
        self._key = key

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        body = aiter(self._inner)
        try:
            async for chunk in body:
                room = self._limit - sent
                if len(chunk) >= room:
                    if room:
                        yield chunk[:room]
                    break
                sent += len(chunk)
                yield chunk
        finally:
            # Release the inner stream now (a file descriptor, a connection), as a reset would.
            close = getattr(body, "aclose", None)
            if close is not None:
                await close()
        raise Transient(
            f"store {self._store!r}: read {self._key!r} failed after {self._limit} bytes "
            "(connection reset, injected)",
            store=self._store,
            key=self._key,
        )

    async def read_all(self) -> bytes:
        return b"".join([chunk async for chunk in self])


def _what(op: Op, key: str | None) -> str:
    return op if key is None else f"{op} {key!r}"
