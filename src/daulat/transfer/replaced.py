"""Objects a restore found in the clear because the user put them there: told apart from forgery
only by a signed record.

``daulat sync --allow-plaintext SRC vault:sub`` replaces the encrypted copies under ``vault``'s
``sub/`` with plaintext on purpose, and leaves its own signed manifest at ``sub/.daulat/``. A
later restore of ``vault`` checks ``sub/x`` against ``vault``'s manifest, which lists the
ciphertext: it cannot be decrypted, and on its own that looks exactly like a provider's
forgery. :func:`explain_replaced` says which it is.

A failure is explained only when all of these hold, else the old reason stays (the provider may
have forged it):

1. a sub-prefix ``P`` of the object holds daulat's own records (signed by a pinned signer and
   written for ``P``, :mod:`daulat.transfer.nested`), and the newest manifest there, chosen as a
   restore of ``P`` would choose it (pinned signers only, this machine's record of the newest
   seen there checked, :func:`~daulat.transfer.provenance.choose_manifest`), is sound;
2. it lists the object unencrypted (a plaintext copy, not an onward one);
3. it was written after the manifest the restore believes (its signed time later than the
   time in that manifest's signed name, which is never earlier than its writing): an older
   plaintext record proves nothing about an object a later encrypted run wrote again, and a
   provider that kept the old plaintext could put it back;
4. the object as listed now has the size (and ETag, where both are known) that record gives.

Nothing unsigned counts: a planted ``.daulat/manifest-…`` is no record (1), and neither is a
signed one moved to another sub-prefix or older than the restore's manifest. The object is
still not restored from here (its origin is proven only by the sub-prefix's manifest): the
reason names the restore of ``P`` that restores it, checked against that manifest. Running
the same restore again cannot change it (:func:`daulat.transfer.proof.retry_would_help`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from daulat.crypto import Identity
from daulat.signing import PublicKey
from daulat.transfer.journal import Journal
from daulat.transfer.manifests import Entry, is_onward_entry, name_time
from daulat.transfer.model import Endpoint, Summary
from daulat.transfer.proof import REPLACED
from daulat.transfer.provenance import choose_manifest

# The failure a plaintext copy over ciphertext causes. (Over a plain replica, another copy
# fails the manifest's SHA-256 instead; nothing here says what that was, so it is left as is.)
_CAUSED = "cannot decrypt"


def _header_time(text: str | None) -> datetime | None:
    try:
        found = datetime.fromisoformat(text or "")
    except ValueError:
        return None
    return found if found.tzinfo is not None else None


def _spec(label: str, prefix: str) -> str:
    """``STORE:PREFIX`` as a user types it (no trailing slash)."""
    store = label.split(":", 1)[0]
    return f"{store}:{prefix.rstrip('/')}" if prefix.strip("/") else store


async def explain_replaced(
    src: Endpoint,
    dst: Endpoint,
    journal: Journal,
    signers: Sequence[PublicKey],
    identities: Sequence[Identity],
    summary: Summary,
    records: Iterable[str],
) -> None:
    """Rewrite the reasons in ``summary.failed`` of objects a later signed run replaced by a
    plaintext copy (see the module's rules). ``records``: the sub-prefixes (relative to
    ``src.prefix``, ending in '/') where daulat's own records were found. Reads temp table
    ``src`` (the restore's listing). Besides the reasons it changes only what a restore of such
    a sub-prefix would: this machine's record of the newest manifest seen there."""
    since = name_time(summary.checked_against_manifest or "")
    if since is None or not signers or (summary.provenance or "").startswith("origin not"):
        return  # no signed manifest to be later than: nothing is explained
    failed = {k for k, r in summary.failed if r.startswith(_CAUSED)}
    by_prefix: dict[str, set[str]] = {}
    for p in sorted(set(records)):
        under = {k for k in failed if k.startswith(p)}
        if under:
            by_prefix[p] = under
    found: dict[str, tuple[datetime, str]] = {}
    for p, keys in by_prefix.items():
        for key, (when, why) in (
            await _explained(src, dst, journal, signers, identities, p, keys, since)
        ).items():
            if key not in found or when > found[key][0]:
                found[key] = (when, why)
    if found:
        summary.failed = [(k, found[k][1] if k in found else r) for k, r in summary.failed]


async def _explained(
    src: Endpoint,
    dst: Endpoint,
    journal: Journal,
    signers: Sequence[PublicKey],
    identities: Sequence[Identity],
    sub: str,
    keys: set[str],
    since: int,
) -> dict[str, tuple[datetime, str]]:
    """The reasons for those of ``keys`` (relative to ``src.prefix``) that the newest sound
    manifest of ``sub`` explains, with its time."""
    ep = Endpoint(src.store, src.prefix + sub, label=_spec(src.label or src.store.name, sub))
    wanted = {k[len(sub) :] for k in keys}
    entries: dict[str, Entry] = {}

    def reset() -> None:
        entries.clear()

    def sink(batch: list[Entry]) -> None:
        for e in batch:
            key = e.get("key")
            if isinstance(key, str) and key in wanted:
                entries[key] = e

    choice = await choose_manifest(ep, journal, signers, identities, reset, sink)
    if choice.key is None or not choice.read or choice.problems:
        return {}
    when = _header_time(choice.time)
    if when is None or when.timestamp() <= since:
        return {}
    restore_sub = (
        f"daulat restore {_spec(src.label or src.store.name, src.prefix + sub)} "
        f"{_spec(dst.label or dst.store.name, dst.prefix + sub)}"
    )
    out: dict[str, tuple[datetime, str]] = {}
    for rel, e in entries.items():
        if e.get("encryption") or is_onward_entry(e) or "stored_as" in e:
            continue  # not a plaintext copy under its own name
        row = journal.db.execute(
            "SELECT size, etag FROM temp.src WHERE key = ?", (sub + rel,)
        ).fetchone()
        size = e.get("stored_size", e.get("size"))
        etag = e.get("etag")
        if row is None or row[0] != size or (etag and row[1] and row[1] != etag):
            continue  # not the copy that run wrote: changed since, as far as anyone can tell
        out[sub + rel] = (
            when,
            f"{REPLACED} by a signed run on {choice.time} (its manifest "
            f"{_spec(ep.label, choice.key)} lists it unencrypted); not restored: the manifest "
            f"this restore believes lists the copy it replaced. `{restore_sub}` restores it, "
            "checked against that run's manifest",
        )
    return out
