"""The signed manifests daulat leaves beside the data it writes, and reads back to restore.

Format (version 2)
    ``<prefix>.daulat/manifest-<UTC time>.jsonl`` (``.jsonl.age`` when the copy is encrypted:
    then the whole file is one age stream), JSON Lines. The first line is the header::

        {"daulat": "manifest", "format": 2, "seq": 7, "prev": "<sha256>", "signer": "ssh-ed25519 …",
         "time": "…", "audit_head": "<sha256>", "prefix": "arsip/", "store": "vault",
         "name": "manifest-….jsonl.age", "keys": "relative"}

    ``seq`` counts the manifests of this destination prefix; ``prev`` is the SHA-256 of the
    previous manifest file *as stored* (null for the first); ``audit_head`` the local audit log's
    head hash when it was written (so the local log is anchored where a local attacker cannot
    rewrite it); ``prefix`` and ``name`` where it was written, so that a manifest moved or
    renamed by the provider (an old one passed off as the newest) is not believed. Every other line is one object::

        {"key": "c1/tps-001.json", "size": 1234, "sha256": "…", "source": {…}, "copied": "…",
         "stored_size": 1423, "etag": "…", "encryption": "age", "stored_as": "…"}

    ``key`` is relative to the prefix that holds the manifest (so ``cd`` there and use it as a
    path), the real name; ``stored_as`` the stored name when names are protected. Readers ignore
    fields they do not know: later versions add more per object.

    ``chunks`` (optional, objects of more than one chunk): ``{"size": 8388608, "sha256": [...]}``,
    the SHA-256 of each ``size``-byte piece of the plaintext in order, the last one shorter
    (:mod:`daulat.stores.chunkhash`); ``split -b 8M`` and ``sha256sum`` recompute them. An
    object without it has one chunk, its ``sha256``. The gateway checks every byte it serves
    against them.

    Each manifest describes the whole known content of its prefix (entries of earlier runs of
    other sources are carried forward, deleted keys dropped), so the newest alone is enough.

Onward copies
    A copy of an encrypted replica made without decrypting it (``daulat exit vault:arsip
    elsewhere``, see :mod:`daulat.transfer.onward`) cannot know what its objects decrypt to. Its
    manifest (plain) lists per object only what it can prove, and where the rest is proven::

        {"key": "c1/tps-001.json", "stored_size": 1423, "stored_sha256": "…", "etag": "…",
         "encryption": "age", "origin": {"sha256": "…", "name": "manifest-….jsonl.age",
         "prefix": "arsip/", "store": "vault", "carried_as": ".daulat/origin/<sha256>.jsonl.age"},
         "source": {…}, "copied": "…"}

    ``key`` is the name as stored (under protected names the 64-hex name: the real one is known
    only to the origin); ``stored_sha256``/``stored_size`` describe the ciphertext as stored
    (no ``sha256``/``size``: the plaintext is unknown there). ``origin`` references the
    replica's newest signed manifest when the copy was made, by the SHA-256 of its file as
    stored; the copy holds that file, and its ``.sig``, at ``carried_as`` (relative to the copy's
    prefix), and the replica's signed ``names.key.age`` at ``.daulat/names.key.age`` (unless the
    copy has a name key already: it is never replaced). Keys in the origin manifest, relative to
    the replica's prefix, are the same relative to the copy's, after ``within`` when the copy
    holds only part of the replica (``"within": "c1/"`` for a copy of ``arsip/c1/``). A copy of
    an onward copy carries the same origin on. An onward run refuses (exit 2, nothing copied)
    when the replica's manifests exist but none can be believed, or the believed one is not the
    newest this machine saw there: nothing could then ever prove the copy's content.

Carried manifests: what makes one believed
    A carried manifest is not a manifest of the prefix that holds it (``list_manifests`` does
    not see ``.daulat/origin/``): its header names another prefix, name and store. The provider
    that holds the onward copy can put any manifest the customer ever signed there (another
    replica's, an older one), and the provider of the replica could have shown the onward run
    a manifest moved or renamed from elsewhere (the run, holding no identity, cannot read its
    header). So:

    1. A carried manifest is read only through a reference in an onward entry of the believed
       manifest of the prefix being restored (signed by a pinned key, chain and local record
       checked as for any manifest). Where it lies and what its header says count for nothing
       on their own.
    2. Its file must hash to the referenced ``sha256``: it is the very file the onward run saw
       (and checked to be signed by a trusted key) at the replica.
    3. Its own signature must be valid and by a pinned key, and its header must name that key.
    4. Its header must say it was written for the referenced ``prefix`` under the referenced
       ``name``: the prefix the onward run copied and the file name it found it under. A
       manifest moved from another prefix or renamed (an old one passed off as the newest) at
       the replica is refused here, where the identity is at hand.
    5. ``store`` is not compared: store names are local to a daulat.toml, and the onward run
       may have named the replica's store otherwise than the machine that wrote it. What a
       direct restore from the replica checks (prefix, name) is what is checked here; a
       manifest moved between two stores at the same prefix passes both.
    6. Each object is then checked twice: its ciphertext against the onward entry, its
       plaintext against the origin entry of the same stored name. Objects the origin does not
       list are not restored; objects it lists that the copy lacks are reported as withheld.

    The origin is the replica as it was when the onward copy was made: it is never compared
    with newer manifests of the replica seen on this machine (the copy is that snapshot).

Signature
    ``<manifest>.sig`` beside it: an OpenSSH SSHSIG signature (namespace
    ``daulat-manifest@daulat``) over the file's bytes as stored — the ciphertext when encrypted,
    so it is checked without the identity: ``ssh-keygen -Y verify``.

Version 1 manifests (before signatures) have no header and name keys with the destination
prefix in front; they are still read (see :func:`read_manifest`), never believed as signed.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any

from daulat.crypto import (
    NO_MATCHING_IDENTITY,
    DecryptError,
    Identity,
    Recipient,
    decrypt_stream,
    encrypt_stream,
)
from daulat.errors import ConfigError, MissingRoot, NotFound
from daulat.signing import (
    MANIFEST_NAMESPACE,
    PublicKey,
    Signature,
    SignatureError,
    SigningKey,
    message_hasher,
    parse_signature,
    sign_digest,
)

if TYPE_CHECKING:
    from daulat.transfer.journal import Journal
    from daulat.transfer.model import Endpoint

MiB = 1024 * 1024
DST_MANIFEST_PREFIX = ".daulat/"
MANIFEST_NAME = "manifest-"
SIG_SUFFIX = ".sig"
FORMAT = 2
STAMP = "%Y%m%dT%H%M%SZ"

Entry = dict[str, Any]


class WrongIdentity(DecryptError):
    """None of the given identities opens the data: stop, nothing more can be decrypted."""


class ProvenanceError(ConfigError):
    """What a destination holds cannot be proven to be the customer's own work (exit 2)."""


@dataclass(frozen=True)
class Header:
    seq: int
    prev: str | None
    signer: str
    time: str
    audit_head: str | None
    prefix: str
    store: str = ""
    name: str = ""  # the file's own name: a renamed manifest (an old one replayed) is refused

    def to_json(self) -> Entry:
        return {
            "daulat": "manifest",
            "format": FORMAT,
            "seq": self.seq,
            "prev": self.prev,
            "signer": self.signer,
            "time": self.time,
            "audit_head": self.audit_head,
            "prefix": self.prefix,
            "store": self.store,
            "name": self.name,
            "keys": "relative",
        }

    @classmethod
    def from_json(cls, d: Entry) -> Header:
        seq, prev, signer = d.get("seq"), d.get("prev"), d.get("signer")
        if not isinstance(seq, int) or seq < 1 or not isinstance(signer, str):
            raise ValueError("malformed manifest header")
        if prev is not None and not isinstance(prev, str):
            raise ValueError("malformed manifest header")
        return cls(
            seq=seq,
            prev=prev,
            signer=signer,
            time=str(d.get("time", "")),
            audit_head=d.get("audit_head") if isinstance(d.get("audit_head"), str) else None,
            prefix=str(d.get("prefix", "")),
            store=str(d.get("store", "")),
            name=str(d.get("name", "")),
        )


def is_manifest_key(key: str, prefix: str) -> bool:
    """Whether ``key`` names a manifest directly under ``prefix``'s ``.daulat/``."""
    name = key[len(prefix) :]
    if not name.startswith(DST_MANIFEST_PREFIX + MANIFEST_NAME) or "/" in name[8:]:
        return False
    return name.endswith(".jsonl") or name.endswith(".jsonl.age")


async def list_manifests(ep: Endpoint) -> list[str]:
    """Keys of the manifests at ``ep``, newest name first (names sort by time)."""
    found: list[str] = []
    try:
        async for batch in ep.store.list(ep.prefix + DST_MANIFEST_PREFIX + MANIFEST_NAME):
            found += [o.key for o in batch if is_manifest_key(o.key, ep.prefix)]
    except MissingRoot:
        return []  # a directory not created yet holds no manifest
    return sorted(found, reverse=True)


async def latest_manifest(ep: Endpoint) -> str | None:
    """Key of the newest manifest at ``ep`` by name (signed or not), or None."""
    found = await list_manifests(ep)
    return found[0] if found else None


def name_time(key: str) -> int | None:
    """The time in a manifest's name (``…/manifest-20261205T215343Z.jsonl.age``), in seconds
    since the epoch; None when the name holds none."""
    try:
        return calendar.timegm(time.strptime(key.rsplit(MANIFEST_NAME, 1)[1][:16], STAMP))
    except (IndexError, ValueError):
        return None


def next_manifest_key(ep: Endpoint, encrypted: bool, after: str | None) -> str:
    """A new manifest's key: now, but always after ``after`` (clocks differ, runs are quick)."""
    now = int(time.time())
    last = name_time(after) if after is not None else None
    if last is not None and last >= now:
        now = last + 1
    stamp = time.strftime(STAMP, time.gmtime(now))
    key = f"{ep.prefix}{DST_MANIFEST_PREFIX}{MANIFEST_NAME}{stamp}.jsonl"
    return key + ".age" if encrypted else key


def is_onward_entry(entry: Entry) -> bool:
    """An entry of an onward copy: it proves the ciphertext, its origin the plaintext."""
    return "origin" in entry


def onward_entry(
    stored: str,
    *,
    sha256: str,
    stored_size: int | None,
    etag: str | None,
    origin: Entry,
    source: Entry,
    copied: str,
) -> Entry:
    """The manifest entry of an object an onward run copied as it was stored."""
    return {
        "key": stored,
        "stored_size": stored_size,
        "stored_sha256": sha256,
        "etag": etag,
        "encryption": "age",
        "origin": origin,
        "source": source,
        "copied": copied,
    }


def entry_line(
    key: str,
    *,
    size: int,
    sha256: str,
    source: str,
    copied: str | None,
    stored_size: int | None,
    etag: str | None,
    stored_as: str | None = None,
    encrypted: bool = False,
    chunks: Entry | None = None,
) -> str:
    """The manifest line of one object: exactly ``json.dumps(entry, ensure_ascii=False)`` of
    ``{"key", "size", "sha256", "source", "copied", "stored_size", "etag"}`` (then
    ``stored_as``, ``encryption``, ``chunks`` when given), with ``source`` already serialised
    so (one text per pair, the same for every object of it). A run writes one per object
    it lists: building the dict and encoding the repeated source each time took ~15 µs of a
    small object's ~1.2 ms of client CPU, this a third of that."""
    parts = [
        '{"key": ',
        _value(key),
        ', "size": ',
        _value(size),
        ', "sha256": ',
        _value(sha256),
        ', "source": ',
        source,
        ', "copied": ',
        _value(copied),
        ', "stored_size": ',
        _value(stored_size),
        ', "etag": ',
        _value(etag),
    ]
    if stored_as is not None:
        parts += [', "stored_as": ', _value(stored_as)]
    if encrypted:
        parts.append(', "encryption": "age"')
    if chunks is not None:
        parts += [', "chunks": ', json.dumps(chunks, ensure_ascii=False)]
    parts.append("}")
    return "".join(parts)


def _value(v: object) -> str:
    """``v`` as ``json.dumps(v, ensure_ascii=False)`` writes it (the common types directly)."""
    if type(v) is str:
        return encode_basestring(v)
    if type(v) is int:
        return int.__repr__(v)
    if v is None:
        return "null"
    return json.dumps(v, ensure_ascii=False)


# ------------------------------------------------------------------------------------ writing


@dataclass(frozen=True)
class Written:
    key: str
    seq: int
    sha256: str


async def put_signed_manifest(
    ep: Endpoint,
    key: str,
    header: Header,
    lines: Callable[[], AsyncIterator[bytes]],
    signing_key: SigningKey,
    encrypt_to: Sequence[Recipient] = (),
) -> Written:
    """Write the manifest (header, then ``lines``) at ``key`` and its signature beside it.

    The signature covers the bytes as stored; a crash between the two puts leaves an unsigned
    manifest, which every reader ignores.
    """
    sha = hashlib.sha256()
    sig_hash = message_hasher()

    async def body() -> AsyncIterator[bytes]:
        yield json.dumps(header.to_json(), ensure_ascii=False).encode() + b"\n"
        async for chunk in lines():
            yield chunk

    async def stored() -> AsyncIterator[bytes]:
        plain: AsyncIterable[bytes] = body()
        if encrypt_to:
            plain = encrypt_stream(plain, encrypt_to)
        async for chunk in plain:
            sha.update(chunk)
            sig_hash.update(chunk)
            yield chunk

    await ep.store.put(key, stored())
    armored = sign_digest(signing_key, sig_hash.digest(), MANIFEST_NAMESPACE)
    await ep.store.put(key + SIG_SUFFIX, armored.encode("ascii"))
    return Written(key, header.seq, sha.hexdigest())


def entry_lines(rows: Callable[[], Any]) -> Callable[[], AsyncIterator[bytes]]:
    """JSON lines from an iterator of already-serialised entries, about 1 MiB per chunk."""

    async def gen() -> AsyncIterator[bytes]:
        buf: list[bytes] = []
        n = 0
        for (line,) in rows():
            data = line.encode() + b"\n"
            buf.append(data)
            n += len(data)
            if n >= MiB:
                yield b"".join(buf)
                buf, n = [], 0
        if buf:
            yield b"".join(buf)

    return gen


# ------------------------------------------------------------------------------------ reading


@dataclass
class ReadResult:
    """One manifest as found at a destination."""

    key: str
    sha256: str | None = None  # of the file as stored
    header: Header | None = None  # None: version 1, or not read (encrypted, no identity)
    signer: PublicKey | None = None  # set only when the signature is valid and trusted
    problem: str | None = None  # why it cannot be believed (None: signed by a trusted key)
    read: bool = False  # whether its content was read (not only hashed)


async def fetch_signature(ep: Endpoint, key: str) -> Signature | str:
    """The parsed signature beside ``key``, or why there is none usable."""
    try:
        raw = await (await ep.store.get(key + SIG_SUFFIX)).read_all()
    except NotFound:
        return "unsigned (no .sig beside it)"
    try:
        return parse_signature(raw)
    except SignatureError as exc:
        return f"its signature is unusable: {exc}"


async def read_manifest(
    ep: Endpoint,
    key: str,
    trusted: Sequence[PublicKey],
    identities: Sequence[Identity] = (),
    on_entries: Callable[[list[Entry]], None] | None = None,
    *,
    require_signature: bool = True,
    written_for: tuple[str, str] | None = None,
) -> ReadResult:
    """Check and read the manifest at ``key`` in one pass over its bytes.

    Its signature must be by one of ``trusted`` (else ``problem`` says why and, with
    ``require_signature``, the body is not read at all). An encrypted manifest is decrypted
    with ``identities`` when given (else only hashed). ``on_entries`` receives the object
    lines, keys relative to the prefix of ``ep`` (version 1 keys are made relative here); the
    caller must discard them unless the result has no ``problem``.

    The header must say it was written for the prefix of ``ep`` under the name it has there;
    ``written_for`` (prefix, name) replaces both for a manifest carried away from where it
    was written (see "Carried manifests" above). Such a manifest must have a header.
    """
    result = ReadResult(key)
    sig = await fetch_signature(ep, key)
    if isinstance(sig, str):
        result.problem = sig
    else:
        try:
            if sig.namespace != MANIFEST_NAMESPACE:
                raise SignatureError(f"signed for {sig.namespace!r}, not as a manifest")
            if sig.public_key not in set(trusted):
                raise SignatureError(
                    f"signed by {sig.public_key.fingerprint}, which is not a pinned signer"
                )
        except SignatureError as exc:
            result.problem = str(exc)
    if result.problem and require_signature:
        return result
    sha = hashlib.sha256()
    sig_hash = sig.hasher() if isinstance(sig, Signature) else None
    try:
        reader = await ep.store.get(key)
    except NotFound:
        result.problem = "it disappeared while being read"
        return result

    async def stored() -> AsyncIterator[bytes]:
        async for chunk in reader:
            sha.update(chunk)
            if sig_hash is not None:
                sig_hash.update(chunk)
            yield chunk

    encrypted = key.endswith(".age")
    if encrypted and not identities:
        async for _ in stored():
            pass
    else:
        stream: AsyncIterable[bytes] = stored()
        if encrypted:
            stream = decrypt_stream(stream, identities)
        try:
            await _parse(ep, stream, result, on_entries)
        except DecryptError as exc:
            if str(exc) == NO_MATCHING_IDENTITY:
                raise WrongIdentity(f"cannot open the manifest {key!r}: {exc}") from None
            result.problem = result.problem or str(exc)  # "cannot decrypt: ..." already
            return result
        result.read = True
    result.sha256 = sha.hexdigest()
    if isinstance(sig, Signature) and sig_hash is not None and result.problem is None:
        try:
            sig.check(sig_hash.digest(), MANIFEST_NAMESPACE, trusted)
        except SignatureError as exc:
            result.problem = str(exc)
        else:
            result.signer = sig.public_key
    want_prefix, want_name = written_for or (ep.prefix, key.rsplit("/", 1)[-1])
    if result.signer is not None and result.header is not None:
        # The header is inside the signed bytes: it must name the key that signed it, and
        # the prefix it was written for must be where it was found (not moved by the provider).
        if result.header.signer.split()[:2] != result.signer.line.split()[:2]:
            result.problem, result.signer = "its header names another signer", None
        elif result.header.prefix != want_prefix:
            result.problem = (
                f"it was written for prefix {result.header.prefix!r}, not {want_prefix!r}: moved"
            )
            result.signer = None
        elif (result.header.name or written_for) and result.header.name != want_name:
            result.problem = f"it was written as {result.header.name}: renamed (replayed)"
            result.signer = None
    elif result.signer is not None and (result.read or written_for) and result.header is None:
        result.problem, result.signer = "it has no manifest header", None
    return result


async def _parse(
    ep: Endpoint,
    stream: AsyncIterable[bytes],
    result: ReadResult,
    on_entries: Callable[[list[Entry]], None] | None,
) -> None:
    pending = b""
    first = True
    legacy_prefix = ""

    def take(lines: list[bytes]) -> None:
        nonlocal first, legacy_prefix
        batch: list[Entry] = []
        for raw in lines:
            if not raw.strip():
                continue
            try:
                d = json.loads(raw)
            except ValueError:
                result.problem = result.problem or "it holds a line that is not JSON"
                continue
            if not isinstance(d, dict):
                result.problem = result.problem or "it holds a line that is not an object"
                continue
            if first:
                first = False
                if d.get("daulat") == "manifest":
                    try:
                        result.header = Header.from_json(d)
                    except ValueError as exc:
                        result.problem = result.problem or str(exc)
                    continue
                # Version 1: keys carry the destination prefix.
                legacy_prefix = ep.prefix
            if not isinstance(d.get("key"), str):
                result.problem = result.problem or "an object line has no key"
                continue
            if legacy_prefix:
                for field in ("key", "stored_as"):
                    v = d.get(field)
                    if isinstance(v, str) and v.startswith(legacy_prefix):
                        d[field] = v[len(legacy_prefix) :]
            batch.append(d)
        if batch and on_entries is not None:
            on_entries(batch)

    async for chunk in stream:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        take(lines)
    take([pending])


# ------------------------------------------------------------------------ restore's expectations


def load_into_expected(journal: Journal, prefix: str) -> Callable[[list[Entry]], None]:
    """A sink for :func:`read_manifest` that fills the journal's ``expected`` table (keys with
    ``prefix`` in front, as the restore engine looks them up)."""

    def add(entries: list[Entry]) -> None:
        journal.add_expected(
            [
                {
                    "key": prefix + e["key"],
                    "stored_as": prefix + e["stored_as"]
                    if isinstance(e.get("stored_as"), str)
                    else None,
                    "size": e.get("size"),
                    "sha256": e.get("sha256"),
                }
                for e in entries
            ]
        )

    return add
