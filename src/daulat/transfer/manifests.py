"""The manifests daulat writes beside the data it copies, and reads back to restore.

A manifest is JSON Lines under ``<prefix>.daulat/manifest-<time>.jsonl`` (``.age`` when the
copy is encrypted): one line per object with its key, size, SHA-256 of the content, where it came
from and when it was copied, so that anyone can check a copy with ordinary tools. ``restore``
loads the newest one and checks every object against it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import TYPE_CHECKING

from daulat.crypto import (
    NO_MATCHING_IDENTITY,
    DecryptError,
    Identity,
    Recipient,
    decrypt_stream,
    encrypt_stream,
)
from daulat.transfer.journal import Journal

if TYPE_CHECKING:
    from daulat.transfer.engine import Endpoint

MiB = 1024 * 1024
DST_MANIFEST_PREFIX = ".daulat/"


class WrongIdentity(DecryptError):
    """None of the given identities opens the data: stop, nothing more can be decrypted."""


async def write_destination_manifest(
    src: Endpoint,
    dst: Endpoint,
    journal: Journal,
    pair: str,
    encrypt_to: Sequence[Recipient] = (),
    *,
    names_protected: bool = False,
    verified_only: bool = True,
) -> str:
    """Write a JSON Lines manifest of verified (or, with ``verified_only=False``, copied) objects
    beside the data at the destination.

    One line per object: key, size, SHA-256 of the content, source store/provider/region/country,
    copy time; with protected names also ``stored_as``, the key the object is stored under. It
    lets anyone check the copy later with ordinary tools (``sha256sum``), without daulat.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    key = f"{dst.prefix}{DST_MANIFEST_PREFIX}manifest-{stamp}.jsonl"
    if encrypt_to:
        # Names and plaintext hashes are as sensitive as the data: the manifest is encrypted too.
        key += ".age"
    source = {"store": src.store.name, "prefix": src.prefix, **src.describe}
    rows = journal.db.execute(
        "SELECT key, coalesce(plain_size, size), sha256, updated, stored_as FROM journal "
        "WHERE pair = ? AND state = 'done'"
        + (" AND verified IS NOT NULL" if verified_only else "")
        + " ORDER BY key",
        (pair,),
    )

    async def lines() -> AsyncIterator[bytes]:
        buf: list[bytes] = []
        n = 0
        for rel, size, sha, updated, stored in rows:
            # "key" is always the real name: after a restore of protected names the journal's
            # key is the stored name and stored_as the real one.
            real = rel if names_protected or stored is None else stored
            entry: dict[str, object] = {
                "key": dst.prefix + real,
                "size": size,
                "sha256": sha,
                "source": source,
                "copied": updated,
            }
            if names_protected:
                entry["stored_as"] = dst.prefix + stored
            if encrypt_to:
                entry["encryption"] = "age"
            line = json.dumps(entry, ensure_ascii=False).encode() + b"\n"
            buf.append(line)
            n += len(line)
            if n >= MiB:
                yield b"".join(buf)
                buf, n = [], 0
        if buf:
            yield b"".join(buf)

    body: AsyncIterable[bytes] = lines()
    if encrypt_to:
        body = encrypt_stream(body, encrypt_to)
    await dst.store.put(key, body)
    return key


async def latest_manifest(src: Endpoint) -> str | None:
    """Key of the newest daulat manifest at ``src`` (names sort by time), or None."""
    newest: str | None = None
    async for batch in src.store.list(src.prefix + DST_MANIFEST_PREFIX + "manifest-"):
        for o in batch:
            if newest is None or o.key > newest:
                newest = o.key
    return newest


async def load_expected(
    src: Endpoint, journal: Journal, identities: Sequence[Identity]
) -> str | None:
    """Load the newest manifest at ``src`` into the journal's ``expected`` table.

    Returns its key, or None when the source has no manifest (objects encrypted by other tools);
    then each object is still authenticated by age's own per-chunk tags while decrypting. An
    encrypted manifest that the identities cannot open stops the run before anything is written.
    """
    journal.new_expected()
    key = await latest_manifest(src)
    if key is None:
        return None
    reader = await src.store.get(key)
    stream: AsyncIterable[bytes] = reader
    if key.endswith(".age"):
        stream = decrypt_stream(reader, identities)
    pending = b""
    try:
        async for chunk in stream:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            journal.add_expected([json.loads(line) for line in lines if line.strip()])
    except DecryptError as exc:
        if str(exc) == NO_MATCHING_IDENTITY:
            raise WrongIdentity(f"cannot open the manifest {key!r}: {exc}") from None
        raise
    if pending.strip():
        journal.add_expected([json.loads(pending)])
    return key
