"""Counts in words for people: "1 object", "2 objects", never "1 objects".

Human text only: JSON field names stay as they are. Kept apart from :mod:`daulat.terminal`
(which imports rich) so that library modules that word a message import nothing heavy.
"""

from __future__ import annotations

__all__ = ["plural"]


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``n`` (with thousands separators) and ``noun``, or ``nouns`` (default: ``noun`` + "s")
    for any number but one: "1 object", "0 objects", "2,000 objects"."""
    return f"{n:,} {noun if n == 1 else (nouns or noun + 's')}"
