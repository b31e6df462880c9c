"""A listing that does not progress is the provider's fault, not a reason to list forever.

Every provider pages its listings: each answer carries a continuation token (or the caller
starts after the last key it got), and the listing ends when an answer says it is complete.
Each request is answered, so no timeout ever fires; a provider that keeps answering the same
page with the same token (a bug, or a hostile source) keeps an exit listing for ever.
:class:`ListingGuard` watches the pages of one listing and raises
:class:`InconsistentListing` when

* a continuation token (or start-after key) comes back that was already followed;
* keys do not increase across pages, for providers that promise UTF-8 binary order (the
  first key of a page sorts at or before the last key of the one before);
* a key comes twice in one page, or again in the next page (any provider: no listing
  legitimately lists one key twice in a row).

The error is an :class:`~daulat.errors.AccessDenied`: permanent, not retried, and it stops the
run with what it had listed (what remains is then unknown).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence

from daulat.errors import AccessDenied

# Tokens remembered per listing: a cycle longer than this with fresh-looking tokens is caught
# by the key checks instead (in order, or repeating the page before).
_TOKENS_KEPT = 1024


class InconsistentListing(AccessDenied):
    """The provider's listing does not progress (repeats a token or keys): the run stops."""


class ListingGuard:
    """Checks the pages of one listing of ``store`` (see the module docstring)."""

    __slots__ = ("_last", "_ordered", "_previous", "_recent", "_store", "_tokens")

    def __init__(self, store: str, *, ordered: bool) -> None:
        self._store = store
        self._ordered = ordered
        self._tokens: set[Hashable] = set()
        self._recent: deque[Hashable] = deque()
        self._last: str | None = None
        self._previous: frozenset[str] = frozenset()

    def follow(self, token: Hashable) -> None:
        """Note the token about to be followed; raise when it was followed before."""
        if token in self._tokens:
            raise self._error("it gave a continuation token it had already given")
        self._tokens.add(token)
        self._recent.append(token)
        if len(self._recent) > _TOKENS_KEPT:
            self._tokens.discard(self._recent.popleft())

    def page(self, keys: Sequence[str]) -> None:
        """Check one page's keys (in the order listed)."""
        if not keys:
            return
        if self._ordered:
            last = self._last
            for key in keys:
                if last is not None and key <= last:
                    raise self._error(
                        f"key {key!r} came after {last!r}, but its keys must increase"
                    )
                last = key
            self._last = last
        seen = frozenset(keys)
        if len(seen) != len(keys) or not self._previous.isdisjoint(seen):
            raise self._error("it listed a key twice")
        self._previous = seen

    def _error(self, why: str) -> InconsistentListing:
        return InconsistentListing(
            f"store {self._store!r} returned an inconsistent listing ({why}); stopped listing "
            "rather than list for ever",
            store=self._store,
        )
