"""daulat's own records in the ``.daulat/`` of a sub-prefix, told apart from data by evidence.

A copy into a sub-prefix (``daulat copy fsrc:sub rdst:sub``) leaves its signed manifests at
``rdst``'s ``sub/.daulat/``, where the pair of the parent (``fsrc`` to ``rdst``) meets them
among its objects. Its ``verify`` must not call them unproven, its ``restore`` must not restore
them, and its ``sync --delete`` must never delete them (the sub-prefix's next restore would then
accuse the provider of withholding them). The same names are also open to anyone: a user's own
``x/.daulat/manifest-20200101T000000Z.jsonl`` is data, and a provider can plant files so named.
So one rule, :func:`own_records`, decides for all three. A file is daulat's own when

1. its name is one daulat writes under a sub-prefix's ``.daulat/`` (a manifest, a carried origin
   manifest, the name key, or the ``.sig`` of one of these), and
2. the parent pair does not hold it as data: its believed manifest does not list it (verify,
   restore), nor its journal as copied (``sync --delete``, which decides before its own
   manifest exists), and
3. a pinned signer signed it: the ``.sig`` beside it is a valid SSHSIG over its bytes as stored,
   by a trusted key, in daulat's namespace for it, and a manifest in the clear says (in its
   signed header) that it was written there, for that sub-prefix and under that name: a real
   manifest copied by the provider to another sub-prefix is not daulat's record there. A
   ``.sig`` is daulat's when the file it signs is.

The name alone proves nothing; a signature cannot be made without a pinned key. A file that
fails 3 is what any other unlisted object is: verify reports it unproven, restore does not
restore it, ``sync --delete`` deletes it when the source lacks it. A user's file that passes 1
and 3 (a copy of a daulat destination kept as data) is listed by the parent, so 2 keeps it data.
Checking a signature reads the whole file: a cost paid only for files named so and not listed.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterable, Sequence

from daulat.errors import StoreError
from daulat.signing import (
    MANIFEST_NAMESPACE,
    NAME_KEY_NAMESPACE,
    PublicKey,
    SignatureError,
    parse_signature,
)
from daulat.stores.base import Store
from daulat.transfer.manifests import SIG_SUFFIX, Header

# The names daulat writes in the ``.daulat/`` of a sub-prefix: its manifests, a carried origin
# manifest, the name key, and the signatures of each.
_OWN_NAME = re.compile(
    r"/\.daulat/(?:manifest-\d{8}T\d{6}Z\.jsonl(?:\.age)?|origin/[0-9a-f]{64}\.jsonl\.age"
    r"|(?P<names>names\.key\.age))(?P<sig>\.sig)?\Z"
)
# Signatures checked at once: each reads a whole file.
_CONCURRENT_CHECKS = 8
# A manifest's header line is far shorter: more is not a header daulat wrote.
_HEADER_MAX = 64 * 1024


def named_as_own(key: str) -> bool:
    """Whether ``key`` (relative to an endpoint's prefix) is named as one of daulat's files in
    the ``.daulat/`` of a sub-prefix: step 1 of :func:`own_records`, never enough alone."""
    return "/.daulat/" in key and _OWN_NAME.search(key) is not None


async def own_records(
    store: Store,
    prefix: str,
    keys: Iterable[str],
    trusted: Sequence[PublicKey],
    *,
    listed: Callable[[str], bool],
) -> set[str]:
    """Which of ``keys`` (relative to ``prefix`` in ``store``) are daulat's own records of a
    sub-prefix (see the module's rule). ``listed``: whether the parent pair holds a key as data.
    ``trusted``: the signers believed (empty: nothing is daulat's own)."""

    def candidate(key: str) -> bool:
        return named_as_own(key) and not listed(key)

    named = [k for k in keys if candidate(k)]
    if not named or not trusted:
        return set()
    # The signed files to check: each candidate, or the file a candidate .sig signs.
    signed = {k.removesuffix(SIG_SUFFIX) for k in named}
    signed = {k for k in signed if candidate(k) and not k.endswith(SIG_SUFFIX)}
    sem = asyncio.Semaphore(_CONCURRENT_CHECKS)

    async def check(key: str) -> bool:
        match = _OWN_NAME.search(key)
        namespace = NAME_KEY_NAMESPACE if match and match["names"] else MANIFEST_NAMESPACE
        sub, name = key.rsplit("/.daulat/", 1)
        # A manifest in the clear names where it was written; an encrypted one cannot be read
        # here (no identity), and its signature is what there is.
        written_for = (prefix + sub + "/", name) if name.endswith(".jsonl") else None
        async with sem:
            return await _signed_by(store, prefix + key, namespace, trusted, written_for)

    order = sorted(signed)
    verdicts = await asyncio.gather(*(check(k) for k in order))
    proven = {k for k, ok in zip(order, verdicts, strict=True) if ok}
    return {k for k in named if k.removesuffix(SIG_SUFFIX) in proven}


async def _signed_by(
    store: Store,
    key: str,
    namespace: str,
    trusted: Sequence[PublicKey],
    written_for: tuple[str, str] | None,
) -> bool:
    """Whether ``key``'s ``.sig`` is a valid signature over its bytes as stored, made for
    ``namespace`` by one of ``trusted``, and, given ``written_for`` (prefix, file name), whether
    its header says it was written for that prefix under that name. Anything missing,
    unreadable or malformed: no."""
    try:
        sig = parse_signature(await (await store.get(key + SIG_SUFFIX)).read_all())
        if sig.namespace != namespace or sig.public_key not in set(trusted):
            return False  # not worth reading the file: it cannot pass
        hasher = sig.hasher()
        first = b""
        async for chunk in await store.get(key):
            hasher.update(chunk)
            if written_for is not None and b"\n" not in first and len(first) < _HEADER_MAX:
                first += chunk[:_HEADER_MAX]
        sig.check(hasher.digest(), namespace, trusted)
    except (StoreError, SignatureError):
        return False
    if written_for is None:
        return True
    try:
        line = json.loads(first.split(b"\n", 1)[0])
        if not isinstance(line, dict) or line.get("daulat") != "manifest":
            return False
        header = Header.from_json(line)
    except ValueError:
        return False
    prefix, name = written_for
    # As when a manifest is read for its own pair: the name is checked where it was written.
    return header.prefix == prefix and (not header.name or header.name == name)
