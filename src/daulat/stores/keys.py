"""One key rule per store, for every method.

Each store kind has one function saying why it cannot hold a key (``fs_key_problem``,
``gcs_name_problem``, the portable rule of :mod:`daulat.stores.base`, ...). A key that the store
could never hold is refused with :class:`~daulat.errors.InvalidKey` by ``head``, ``get`` and
``delete`` as by ``put``, never answered with :class:`~daulat.errors.NotFound` or a silent
no-op delete: either would hide a typo or an attack string (``../``, a NUL, a lone surrogate)
behind "does not exist".

A listing prefix is refused the same way when no key the store could hold starts with it
(:func:`prefix_problem`): ``list("../")`` on a directory store raises rather than listing
nothing. A prefix that is merely unusual (``"a/.."`` still starts ``"a/..b"``) is listed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from daulat.errors import DaulatError, InvalidKey
from daulat.stores.forwarding import layers

#: Why a store cannot hold a key, or None when it can.
KeyRule = Callable[[str], "str | None"]


@runtime_checkable
class KeyRules(Protocol):
    """A store that can say, before any request, why it could never hold a key."""

    def key_problem(self, key: str) -> str | None:
        """Why a put of ``key`` would be refused (the rule ``put`` applies), or None."""
        ...


def write_problem(store: object, key: str) -> str | None:
    """Why ``store`` (under its wrappers) could never hold ``key``, or None when it could or
    cannot say: a refusal known before anything is sent, never worth a retry."""
    for layer in layers(store):
        if isinstance(layer, KeyRules):
            return layer.key_problem(key)
    return None


@runtime_checkable
class NameConflicts(Protocol):
    """A store (a directory tree) where one name cannot be an object and hold others."""

    def name_conflict(self, key: str) -> str | None:
        """Which object ``key`` cannot be held beside, or None (blocking: a few stats)."""
        ...


def has_name_conflicts(store: object) -> bool:
    """Whether ``store`` (under its wrappers) is a tree where names can conflict: only those
    are worth the thread a :func:`name_conflict` takes."""
    return any(isinstance(layer, NameConflicts) for layer in layers(store))


def name_conflict(store: object, key: str) -> str | None:
    """Which object of ``store`` (under its wrappers) ``key`` cannot be written beside, or
    None. Blocking: run it in a thread."""
    for layer in layers(store):
        if isinstance(layer, NameConflicts):
            return layer.name_conflict(key)
        # A wrapper that stores objects under other names (protected names: keyed hashes)
        # is asked where the key lands below it.
        stored_key = getattr(layer, "stored_key", None)
        if callable(stored_key):
            try:
                key = stored_key(key)
            except DaulatError:
                return None  # it cannot place the key at all: its own put says why
    return None


def invalid_key(store: str, key: str, reason: str) -> InvalidKey:
    """The one wording of a refused key."""
    return InvalidKey(f"store {store!r} cannot hold key {key!r}: {reason}", store=store, key=key)


def check_key(rule: KeyRule, key: str, *, store: str) -> None:
    """Raise :class:`InvalidKey` when ``rule`` says the store cannot hold ``key``."""
    reason = rule(key)
    if reason is not None:
        raise invalid_key(store, key, reason)


def prefix_problem(rule: KeyRule, prefix: str) -> str | None:
    """Why no key that ``rule`` allows can start with ``prefix``, or None.

    The prefix itself, or the prefix followed by one more ordinary character, must be a key the
    store could hold: ``"dir/"`` passes (``"dir/x"``), ``"dir/.."`` passes (``"dir/..x"``),
    ``"../"`` and ``"a\\x00"`` do not."""
    if not prefix:
        return None
    reason = rule(prefix)
    if reason is None or rule(prefix + "x") is None:
        return None
    return reason


def check_prefix(rule: KeyRule, prefix: str, *, store: str) -> None:
    """Raise :class:`InvalidKey` when no key the store could hold starts with ``prefix``."""
    reason = prefix_problem(rule, prefix)
    if reason is not None:
        raise InvalidKey(
            f"store {store!r} cannot list prefix {prefix!r}: no key it can hold starts with it "
            f"({reason})",
            store=store,
            key=prefix,
        )
