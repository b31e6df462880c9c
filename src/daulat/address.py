"""``STORE[:PREFIX]`` addresses, parsed one way for every command.

Every command that names part of a store (``ls``, ``size``, ``copy``, ``sync``, ``exit``,
``restore``, ``verify``, ``drill``) reads its arguments with :func:`parse_address`; commands that
work on whole stores (``scan``, ``clean``) read theirs with :func:`store_only`.

A prefix is a "directory" of keys: leading and trailing ``/`` are dropped (``kpu:/c1/`` and
``kpu:c1`` are the same address) and the result ends in ``/``. A prefix is refused with a
:class:`ConfigError` (exit 2) naming it when it could mean anything but keys below the store's
root: a ``.`` or ``..`` segment, an empty segment (``a//b``), or a control character (NUL,
newline, escape, DEL). On a filesystem store ``fs:../../etc`` would otherwise name a directory
outside the store; on an object store the same text is a key that HTTP clients and gateways
rewrite. The stores confine themselves too (:mod:`daulat.stores.fs` never leaves its root
whatever prefix it is given); refusing here makes the mistake a clear message instead of an
empty listing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from daulat.errors import ConfigError

__all__ = ["Address", "normalise_prefix", "parse_address", "prefix_problem", "store_only"]

# C0 controls, DEL and the C1 controls: never typed on purpose, and a terminal acts on them.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class Address:
    """A configured store's name and a key prefix in it (empty, or ending in ``/``)."""

    store: str
    prefix: str = ""

    @property
    def label(self) -> str:
        """How the address is shown: ``kpu:c1/``, or ``kpu`` for the whole store."""
        return f"{self.store}:{self.prefix}" if self.prefix else self.store


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` (leading and trailing ``/`` already dropped) names no place below a
    store's root, or None when it is a plain prefix."""
    if _CONTROL.search(prefix):
        return "contains a control character"
    if not prefix:
        return None
    for segment in prefix.split("/"):
        if segment == "":
            return "has an empty segment ('//')"
        if segment in (".", ".."):
            return f"has a {segment!r} segment"
    return None


def normalise_prefix(prefix: str, *, spec: str | None = None) -> str:
    """``prefix`` without leading or trailing ``/``, ending in ``/`` (or empty).

    Raises :class:`ConfigError` naming ``spec`` (the address as typed, else the prefix) when the
    prefix is not a plain one (see :func:`prefix_problem`).
    """
    stripped = prefix.strip("/")
    reason = prefix_problem(stripped)
    if reason is not None:
        shown = spec if spec is not None else prefix
        raise ConfigError(
            f"{shown!r}: the prefix {prefix!r} {reason}; a prefix names keys below the store's "
            "root, as a/b/c"
        )
    return f"{stripped}/" if stripped else ""


def parse_address(spec: str) -> Address:
    """``STORE`` or ``STORE:PREFIX`` → :class:`Address`; :class:`ConfigError` when malformed.

    Whether the store is configured is not checked here (``Config.store`` does that).
    """
    name, _, prefix = spec.partition(":")
    if not name:
        raise ConfigError(f"{spec!r}: expected STORE or STORE:PREFIX")
    return Address(name, normalise_prefix(prefix, spec=spec))


def store_only(spec: str, command: str) -> str:
    """The store name of a command that works on whole stores; a prefix is refused."""
    address = parse_address(spec)
    if address.prefix or ":" in spec:
        raise ConfigError(
            f"{spec!r}: {command} works on whole stores; give STORE without ':PREFIX'"
        )
    return address.store
