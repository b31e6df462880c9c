"""Proof of completion at the destination, and adoption by proof after a crash.

The problem
    The journal commits outcomes in batches (see :class:`~daulat.transfer.journal.BatchWriter`),
    so after ``kill -9`` objects that were complete at the destination may not be recorded as
    done. Re-sending them is correct but wasteful; a large object re-sent whole is what hurts.
    The destination's listing alone cannot tell a finished copy from anything else under that
    key: the provider writes objects and their metadata too, and is the adversary (it plants,
    replaces and replays at will).

The proof
    Every object the engine writes carries one user-metadata field, ``proof``
    (``daulat_proof`` at the provider), holding a MAC under a key only the customer holds
    (:func:`proof_key`; never sent anywhere). These forms exist::

        3s.<base64url(nonce[12] || AES-GCM-SIV(sha256[32] || run[8])[40] || tag[16])>
                                                         objects whose hash is known when the
                                                         metadata is written (one PUT, or
                                                         streamed to a directory: see below)
        1n.<base64url(nonce[16] || tag[32])>             objects streamed in parts
        2s.<base64url(nonce[16] || sealed_sha256[32] || sealed_run[8] || tag[32])>
        1s.<base64url(nonce[16] || sealed_sha256[32] || tag[32])>   both written by earlier
                                                         versions, still checked

    Every form binds a length-prefixed frame of: a version label, the form, the transfer's
    codec (plain, age to which recipients, protected names, decrypting — an object written for
    another codec is never adopted, so plaintext is never adopted into an encrypted exit), the
    destination key exactly as stored, the source version that was read (size and ETag; the
    filesystem's ETag is inode, mtime and size), then for ``s`` the stored size.

    ``3s`` is one AES-GCM-SIV encryption (RFC 8452, under a key derived from the proof key) of
    the plaintext SHA-256 and the id of the journal run that wrote the object, with the frame
    as associated data: one pass of a standard AEAD seals both values (the provider learns
    neither the hash, nor the run, nor under protected names the name) and authenticates them
    with the frame (any changed byte fails its 128-bit tag). GCM-SIV, not GCM, because its
    nonces are random: a repeated nonce would reveal only that two proofs are identical, never
    the key that authenticates them. Where the cryptography library offers no AES-GCM-SIV
    (OpenSSL before 3.2) ``2s`` is written instead, and a ``3s`` proof is not adopted (sent
    again, never believed).

    ``1n``, ``1s`` and ``2s`` are HMAC-SHA256 tags over the frame plus, for ``s``, the
    plaintext SHA-256, the nonce (for ``2s`` also the run id). Their ``sealed_sha256`` is the
    plaintext SHA-256 XOR a pad HMAC(seal key, nonce), and ``sealed_run`` the run id XOR a
    second pad; the tag binds the unsealed values, so a changed seal fails. ``2s`` took three
    MACs per object where ``3s`` takes one AEAD pass.
    Plain single-PUT copies still carry ``sha256`` in clear, as before; encrypted ones never do.

Adoption
    After planning, every planned object that the destination listing already shows is a
    *candidate*. One that the journal records as done from this very source version, but that
    is listed with another size or ETag, is either a later write whose journal commit a kill
    lost (the destination was emptied, say, and the killed run had written it again) or a
    change made after daulat wrote it. Only the proof can tell: it is adopted when its ``3s``
    or ``2s`` proof names a run *later* than the one the done row was recorded by, or when a
    ``completing`` row newer than the done row matches its ``n`` proof; otherwise (the object
    that row records, changed in place under its old proof; a ``1s`` proof, which names no run)
    it is sent again. Run ids come from this state directory's journal, the only place whose
    rows they are compared with. For each candidate one
    metadata request is made (``get(key, start=0, end=0)``); the object is adopted — journal row
    done with the proven SHA-256, no upload — only when the tag verifies against the *current*
    source listing and the *listed* stored size. Anything else (no proof, a proof for another
    key, version, size or codec, a replayed older upload, a damaged field, a lost key) is
    copied again and overwritten. Only candidates cost a request.

Large objects (streamed in parts, over 8 MiB)
    Their SHA-256 is known only after the last part, when the metadata has long been sent. So:

    1. at upload start the object's metadata gets the ``n`` form: a fresh random nonce MAC'd
       with the key and source version;
    2. when the source stream ends — before the store can complete the upload, which needs the
       end of the stream — a ``completing`` row (nonce, SHA-256, plaintext and stored sizes,
       source version) is committed to the journal in its own transaction;
    3. once the upload completes the outcome is committed at once, not batched, and the
       ``completing`` row is removed in the same transaction.

    A kill between 2 and 3 leaves a complete object and a ``completing`` row: on resume it is
    adopted when the listed size equals the recorded stored size, the source version is
    unchanged and the nonce in the verified tag equals the row's. A kill before 2 leaves no
    complete object (or an older one whose nonce differs). So a large object complete at the
    destination is never sent again.

    A store that sets metadata only when it commits, after the last byte (the filesystem:
    ``Capabilities.metadata_at_commit``), gets the full ``3s`` proof at step 2 instead of the
    nonce, so its large objects are adopted like small ones even when the journal is lost.
    Elsewhere a lost journal means a large object is sent again: hashing what the destination
    holds would make the provider's bytes the only witness of the SHA-256 then recorded.

What this proves, and what not
    Adoption is as strong as the journal's own skip: both rest on the listing's size (and the
    proof binds it, under the customer's key), neither re-reads content. A provider that
    alters content but keeps size and metadata defeats both; ``verify --full`` and restore,
    which check the plaintext SHA-256 recorded here, catch it. An object ``verify --full``
    found different is never adopted again by the proof it carried then, whichever pair meets
    it (:mod:`daulat.transfer.distrust`). Losing the key costs re-sends, never a wrong adoption.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import os
import secrets
import struct
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from daulat.crypto import fsync_directory
from daulat.errors import AccessDenied, ConfigError, StoreError
from daulat.state import private_dir
from daulat.stores.base import Store
from daulat.stores.hashing import Hashed
from daulat.transfer.distrust import distrusted_in, store_place
from daulat.transfer.journal import Candidate, Journal, Outcome, State
from daulat.transfer.retry import RetryPolicy

PROOF_FIELD = "proof"  # user metadata name; stores add their own prefix (daulat_proof)
KEY_FILE = Path("keys") / "proof"
KEY_BYTES = 32
NONCE_BYTES = 16
_TAG_BYTES = 32
_LABEL = b"daulat-proof-1"
_SEALED, _NONCE, _SEALED_RUN, _SEALED_AEAD = "1s.", "1n.", "2s.", "3s."
_RUN_BYTES = 8
_AEAD_NONCE_BYTES = 12
_AEAD_TAG_BYTES = 16
_AEAD_BLOB = _AEAD_NONCE_BYTES + 32 + _RUN_BYTES + _AEAD_TAG_BYTES
# Metadata requests in flight while adopting, at most: each is one small round trip.
ADOPT_CONCURRENCY = 32
ADOPT_PAGE = 1000


class ProofKeyError(ConfigError):
    """The proof key file cannot be read or written (CLI exit 2)."""


def proof_key(state_dir: Path) -> bytes:
    """The customer-held key that proofs are MAC'd with (32 bytes).

    Derived with HKDF-SHA256 from 32 random bytes kept in ``state_dir/keys/proof`` (created
    0600, its directory 0700, on first need). This is the one place the key comes from, so it
    can be switched to derive from the configured signing key.
    """
    # Through the state helpers: the first key may be made before anything else in a new state
    # directory, and a key left readable by others is tightened with the usual notice.
    private_dir(state_dir)
    private_dir(state_dir / KEY_FILE.parent)
    raw = _read_or_create(state_dir / KEY_FILE)
    return HKDF(algorithm=SHA256(), length=KEY_BYTES, salt=None, info=b"daulat proof key").derive(
        raw
    )


def _read_or_create(path: Path) -> bytes:
    try:
        raw = _read_key(path)
        if raw is not None:
            return raw
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(tmp, flags, 0o600)
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, secrets.token_bytes(KEY_BYTES))
                os.fsync(fd)
            finally:
                os.close(fd)
            # A link never replaces: when two runs race, both end up with the first key.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
            fsync_directory(path.parent)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raw = _read_key(path)
    except OSError as exc:
        raise ProofKeyError(f"cannot use the proof key file {path}: {exc.strerror}") from None
    assert raw is not None
    return raw


def _read_key(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
        raw = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) != KEY_BYTES:
        raise ProofKeyError(
            f"the proof key file {path} is damaged: move it away and run again (objects "
            "already at destinations will be sent once more, never adopted wrongly)"
        )
    return raw


@dataclass(frozen=True, slots=True)
class Proven:
    """What an adopted object's proof established."""

    sha256: str
    plain_size: int
    run_id: int | None = None  # the journal run that wrote it (``3s`` and ``2s`` proofs)


class Prover:
    """Makes and checks proofs for one transfer (one codec); see the module docstring."""

    __slots__ = ("_aead", "_codec", "_encrypting", "_mac", "_run_id", "_seal")

    def __init__(
        self, key: bytes, *, codec: str, encrypting: bool, run_id: int | None = None
    ) -> None:
        # Keyed once; each MAC starts from a copy (saves re-keying on every object).
        self._mac = hmac.new(_derive(key, b"mac"), digestmod="sha256")
        self._seal = hmac.new(_derive(key, b"seal"), digestmod="sha256")
        # None where the library has no AES-GCM-SIV (OpenSSL < 3.2): 2s is written then.
        self._aead = _aead(_derive(key, b"aead"))
        self._codec = codec.encode()
        # Encrypting: the plaintext is the source object; otherwise it is what is stored.
        self._encrypting = encrypting
        # The journal run writing objects with this prover (None: checking only, or an
        # earlier caller; its proofs are then of the 1s form, which names no run).
        self._run_id = run_id

    def __repr__(self) -> str:
        return "Prover(<key hidden>)"

    def sealed(
        self, dst_key: str, src_size: int, src_etag: str | None, sha256: str, stored_size: int
    ) -> dict[str, str]:
        """Metadata for an object sent in one PUT (empty when the source has no version)."""
        if src_etag is None:
            return {}
        digest = bytes.fromhex(sha256)
        run = self._run_id
        if run is not None and self._aead is not None:
            # One AEAD pass seals and binds everything (this runs once per object).
            nonce = os.urandom(_AEAD_NONCE_BYTES)
            sealed = self._aead.encrypt(
                nonce,
                digest + run.to_bytes(_RUN_BYTES, "big"),
                self._frame(_SEALED_AEAD, dst_key, src_size, src_etag, stored_size),
            )
            return {PROOF_FIELD: _SEALED_AEAD + _b64(nonce + sealed)}
        nonce = os.urandom(NONCE_BYTES)
        if run is None:
            tag = self._tag(_SEALED, dst_key, src_size, src_etag, nonce, digest, stored_size)
            return {PROOF_FIELD: _SEALED + _b64(nonce + _xor(digest, self._pad(nonce)) + tag)}
        run_bytes = run.to_bytes(_RUN_BYTES, "big")
        tag = self._tag(
            _SEALED_RUN, dst_key, src_size, src_etag, nonce, digest, stored_size, run_bytes
        )
        blob = (
            nonce + _xor(digest, self._pad(nonce)) + _xor(run_bytes, self._pad(nonce, b"run")) + tag
        )
        return {PROOF_FIELD: _SEALED_RUN + _b64(blob)}

    def started(
        self, dst_key: str, src_size: int, src_etag: str | None, *, nonce: str | None = None
    ) -> tuple[str, dict[str, str]] | None:
        """(nonce hex, metadata) for an object about to be streamed, or None when the
        source has no version to bind. ``nonce`` (hex): the one a resumed upload was begun
        with (its metadata is already at the provider); else a fresh one."""
        if src_etag is None:
            return None
        given = bytes.fromhex(nonce) if nonce is not None else b""
        raw = given if len(given) == NONCE_BYTES else os.urandom(NONCE_BYTES)
        tag = self._tag(_NONCE, dst_key, src_size, src_etag, raw, None, None)
        return raw.hex(), {PROOF_FIELD: _NONCE + _b64(raw + tag)}

    def check(self, value: str | None, candidate: Candidate, dst_key: str) -> Proven | None:
        """Whether ``value`` (the object's ``proof`` metadata) proves ``candidate`` complete:
        written by us for this codec and key, from the source version listed now, at the
        size listed now, and — when the journal records this source version as done (by run
        ``c.recorded_run``) — written by a later run. None means: copy it again."""
        c = candidate
        if value is None or c.etag is None or c.dst_size is None:
            return None
        if value.startswith(_SEALED_AEAD):
            blob = _unb64(value[len(_SEALED_AEAD) :], _AEAD_BLOB)
            if blob is None or self._aead is None:
                return None
            frame = self._frame(_SEALED_AEAD, dst_key, c.size, c.etag, c.dst_size)
            try:
                opened = self._aead.decrypt(
                    blob[:_AEAD_NONCE_BYTES], blob[_AEAD_NONCE_BYTES:], frame
                )
            except InvalidTag:
                return None
            return self._after_recorded(opened[:32], opened[32:], c)
        if value.startswith(_SEALED_RUN):
            blob = _unb64(value[len(_SEALED_RUN) :], NONCE_BYTES + 32 + _RUN_BYTES + _TAG_BYTES)
            if blob is None:
                return None
            nonce = blob[:NONCE_BYTES]
            sealed = blob[NONCE_BYTES : NONCE_BYTES + 32]
            sealed_run, tag = blob[NONCE_BYTES + 32 : -_TAG_BYTES], blob[-_TAG_BYTES:]
            digest = _xor(sealed, self._pad(nonce))
            run_bytes = _xor(sealed_run, self._pad(nonce, b"run"))
            want = self._tag(
                _SEALED_RUN, dst_key, c.size, c.etag, nonce, digest, c.dst_size, run_bytes
            )
            if not hmac.compare_digest(tag, want):
                return None
            return self._after_recorded(digest, run_bytes, c)
        if value.startswith(_SEALED):
            if c.recorded_run is not None:
                return None  # names no run: cannot be told from the write the row records

            blob = _unb64(value[len(_SEALED) :], NONCE_BYTES + 32 + _TAG_BYTES)
            if blob is None:
                return None
            nonce, sealed, tag = (
                blob[:NONCE_BYTES],
                blob[NONCE_BYTES:-_TAG_BYTES],
                blob[-_TAG_BYTES:],
            )
            digest = _xor(sealed, self._pad(nonce))
            want = self._tag(_SEALED, dst_key, c.size, c.etag, nonce, digest, c.dst_size)
            if not hmac.compare_digest(tag, want):
                return None
            return Proven(digest.hex(), c.size if self._encrypting else c.dst_size)
        if value.startswith(_NONCE):
            done = c.completing
            blob = _unb64(value[len(_NONCE) :], NONCE_BYTES + _TAG_BYTES)
            if blob is None or done is None:
                return None
            nonce, tag = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
            want = self._tag(_NONCE, dst_key, c.size, c.etag, nonce, None, None)
            if not (
                hmac.compare_digest(tag, want)
                and hmac.compare_digest(nonce.hex(), done.nonce)
                and done.size == c.size
                and done.src_etag == c.etag
                and done.dst_size == c.dst_size
            ):
                return None
            return Proven(done.sha256, done.plain_size)
        return None

    def _after_recorded(self, digest: bytes, run_bytes: bytes, c: Candidate) -> Proven | None:
        """A verified proof naming run ``run_bytes``: adopted unless the journal records this
        source version as done by that run or a later one."""
        run = int.from_bytes(run_bytes, "big")
        if c.recorded_run is not None and run <= c.recorded_run:
            # The very write the done row records (or an older one), changed since.
            return None
        assert c.dst_size is not None  # checked by the caller
        return Proven(digest.hex(), c.size if self._encrypting else c.dst_size, run)

    def _frame(
        self, form: str, dst_key: str, src_size: int, src_etag: str, stored_size: int
    ) -> bytes:
        """What a ``3s`` proof binds besides the sealed values (the AEAD's associated data),
        framed as the HMAC forms' fields are."""
        return _framed([*self._bound(form, dst_key, src_size, src_etag), b"%d" % stored_size])

    def _bound(self, form: str, dst_key: str, src_size: int, src_etag: str) -> list[bytes]:
        """The fields every form binds first: label, form, codec, key, source version."""
        return [
            _LABEL,
            form.encode(),
            self._codec,
            dst_key.encode("utf-8", "surrogatepass"),
            b"%d" % src_size,
            src_etag.encode("utf-8", "surrogatepass"),
        ]

    def _pad(self, nonce: bytes, purpose: bytes = b"") -> bytes:
        h = self._seal.copy()
        h.update(nonce + purpose)
        return h.digest()

    def _tag(
        self,
        form: str,
        dst_key: str,
        src_size: int,
        src_etag: str,
        nonce: bytes,
        digest: bytes | None,
        stored_size: int | None,
        run: bytes | None = None,
    ) -> bytes:
        fields = [*self._bound(form, dst_key, src_size, src_etag), nonce]
        if digest is not None and stored_size is not None:
            fields += [digest, b"%d" % stored_size]
        if run is not None:
            fields.append(run)
        h = self._mac.copy()
        h.update(_framed(fields))
        return h.digest()


def _framed(fields: list[bytes]) -> bytes:
    """The count and every length first: no two different field lists frame to the same
    bytes (one pack and one join: this runs once per object)."""
    return struct.pack(f">B{len(fields)}I", len(fields), *map(len, fields)) + b"".join(fields)


def _aead(key: bytes) -> AESGCMSIV | None:
    try:
        return AESGCMSIV(key)
    except UnsupportedAlgorithm:
        return None


def _derive(key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=b"daulat proof " + purpose).derive(
        key
    )


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b[: len(a)], "big")).to_bytes(len(a), "big")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str, length: int) -> bytes | None:
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if len(data) == length else None


def before_end(stream: AsyncIterable[bytes], at_end: Callable[[int], None]) -> AsyncIterable[bytes]:
    """Pass ``stream`` through; call ``at_end(bytes passed)`` once it is exhausted, before the
    consumer learns that it ended (an upload cannot complete before that).

    A :class:`~daulat.stores.hashing.Hashed` stream stays one (its check comes first, then
    ``at_end``), so the store it goes to can reuse its hash rather than hash it again."""
    if isinstance(stream, Hashed):
        return stream.then(at_end)
    return _before_end(stream, at_end)


async def _before_end(
    stream: AsyncIterable[bytes], at_end: Callable[[int], None]
) -> AsyncIterator[bytes]:
    n = 0
    async for chunk in stream:
        n += len(chunk)
        yield chunk
    at_end(n)


@dataclass
class Adopted:
    """What :func:`adopt_proven` did."""

    candidates: int = 0
    objects: int = 0
    bytes: int = 0


async def adopt_proven(
    journal: Journal,
    pair: str,
    run_id: int,
    store: Store,
    prefix: str,
    prover: Prover,
    *,
    retry: RetryPolicy,
    concurrency: int = ADOPT_CONCURRENCY,
    expected: Callable[[str], str | None] | None = None,
) -> Adopted:
    """Adopt planned objects whose proof at the destination verifies (see the module
    docstring): record them done and take them out of the plan. Raises
    :class:`~daulat.errors.AccessDenied` when the destination refuses; any other failure to
    read one object's metadata leaves it planned.

    ``expected`` (restore) gives the SHA-256 a source manifest expects for a key: an object
    whose proven hash differs is not adopted (its copy then fails the manifest check)."""
    result = Adopted()
    sem = asyncio.Semaphore(max(1, concurrency))
    # verify --full found these different: their proof is not believed, whichever pair asks.
    distrusted = distrusted_in(journal, store_place(store), prefix)

    async def one(c: Candidate) -> Outcome | None:
        dst_key = prefix + (c.key if c.dkey is None else c.dkey)
        async with sem:
            try:
                reader = await retry.call(lambda: store.get(dst_key, start=0, end=0))
            except AccessDenied:
                raise
            except StoreError:
                return None
        info = reader.info
        # Changed since it was listed: whatever it is now, it is not what was listed.
        if info.size != c.dst_size or (info.etag is not None and info.etag != c.dst_etag):
            return None
        proof = reader.metadata.get(PROOF_FIELD)
        found = distrusted.get(dst_key)
        if found is not None and found.still(proof, info.size, info.etag):
            return None
        proven = prover.check(proof, c, dst_key)
        if proven is None:
            return None
        if expected is not None and expected(c.key) not in (None, proven.sha256):
            return None
        return Outcome(
            c.key,
            c.size,
            c.etag,
            State.DONE,
            sha256=proven.sha256,
            dst_size=c.dst_size,
            dst_etag=c.dst_etag,
            plain_size=proven.plain_size,
            stored_as=c.dkey,
        )

    for page in journal.adoption_candidates(pair, ADOPT_PAGE):
        result.candidates += len(page)
        outcomes = await asyncio.gather(*(one(c) for c in page))
        adopted = [(c, o) for c, o in zip(page, outcomes, strict=True) if o is not None]
        if not adopted:
            continue
        journal.record(pair, run_id, [o for _, o in adopted], settled=[c.key for c, _ in adopted])
        journal.unplan([c.work_id for c, _ in adopted])
        result.objects += len(adopted)
        result.bytes += sum(c.size for c, _ in adopted)
    return result
