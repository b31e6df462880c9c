"""Objects a restore restores although no believed manifest lists them (``--allow-unproven``):
never written as age ciphertext.

Such an object holds whatever the source serves. An age file among them (its body begins with
age's header, ``age-encryption.org/v1``, or is ASCII-armored: ``-----BEGIN AGE ENCRYPTED
FILE-----`` after any blank space) is most often an object an earlier encrypted run
copied that the newest signed manifest does not list (a later plaintext run's manifest never
lists encrypted objects). Writing it as it is would leave ciphertext where the user expects
their data, under a summary that says "complete". So:

* an unproven age file is read through the restore's identities: decrypted, and still
  reported unproven (nothing proves what it decrypts to);
* one that no identity opens, or that arrives when no identity was given, fails with its
  reason; it is never written; an armored one fails too (daulat's copies are binary age;
  ``age -d`` reads the armored kind);
* an unproven object read as stored is checked, as it is read, not to begin with age's header:
  the first look decides how to read it, and the provider may serve other bytes to the read
  than to that look.

A manifest's own entries are not concerned: their bytes must match the SHA-256 the signed
manifest gives, which is that of what the source held (a user's own ``.age`` file stays one).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from daulat.crypto import AGE_MAGIC, DecryptError, Identity
from daulat.errors import IntegrityError
from daulat.stores.base import ObjectInfo, ObjectReader, Store
from daulat.stores.crypt import AGE_BUFFER, CryptStore
from daulat.stores.forwarding import ForwardingStore

# How the failure of an unproven object that is an age file begins.
UNPROVEN_AGE = "not listed in the manifest (origin not proven) and age-encrypted"
# The first line of an ASCII-armored age file (age -a), which may follow blank space.
ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
# The bytes a first look reads: enough for either header after some blank space.
LOOK = 64


def age_kind(head: bytes) -> str | None:
    """ "binary" or "armored" when ``head``, an object's first bytes (up to :data:`LOOK`),
    begins an age file of that kind; else None."""
    if head.startswith(AGE_MAGIC):
        return "binary"
    if head.lstrip(b" \t\r\n").startswith(ARMOR_BEGIN):
        return "armored"
    return None


class NoIdentity(DecryptError):
    """An unproven age file, and the restore was given no identity to open it."""


class Armored(DecryptError):
    """An unproven age file in ASCII armor, which daulat does not decrypt."""


@dataclass(frozen=True)
class Unproven:
    """The objects of a restore that no believed manifest lists, and how to read them."""

    # Keys relative to the source prefix (``Summary.unproven_restored``).
    keys: Collection[str] = frozenset()
    # The identities the restore was given (also when its replica is plain).
    identities: Sequence[Identity] = field(default=(), repr=False)

    def __contains__(self, key: object) -> bool:
        return key in self.keys

    async def reading(self, store: Store, key: str, size: int) -> Store:
        """The store to read unproven ``key`` through, given the one the run reads the rest
        through: that one when it decrypts already (it refuses what is not age), a decrypting
        wrapper when ``key`` is an age file, else one that refuses age files as it reads.

        Raises :class:`NoIdentity` for an age file when no identity was given, and
        :class:`Armored` for an armored one."""
        if isinstance(store, CryptStore):
            return store
        if size:
            reader = await store.get(key, start=0, end=min(size, LOOK))
            kind = age_kind(await reader.read_all())
            if kind == "armored":
                raise Armored(
                    f"{UNPROVEN_AGE} in ASCII armor: daulat decrypts binary age files only "
                    "(`age -d` reads this one); not written"
                )
            if kind == "binary":
                if not self.identities:
                    raise NoIdentity(
                        f"{UNPROVEN_AGE}: not decrypted, no identity was given "
                        "(--identity FILE decrypts it); not written"
                    )
                return CryptStore(
                    store, identities=self.identities, max_buffer=AGE_BUFFER, remember=False
                )
        return NotAgeStore(store)

    def failure(self, exc: DecryptError) -> str:
        """The reason an unproven object that could not be decrypted failed. Its own failure:
        a key that opens none of what the manifest lists would have stopped the run."""
        if isinstance(exc, (NoIdentity, Armored)):
            return str(exc)
        return f"{UNPROVEN_AGE}: {exc}; not written"


class NotAgeStore(ForwardingStore):
    """Reads that raise :class:`IntegrityError` before giving out the first bytes of an age
    file (a view: closing it leaves the store it reads open)."""

    async def get(self, key: str, *, start: int = 0, end: int | None = None) -> ObjectReader:
        reader = await self.inner.get(key, start=start, end=end)
        return _NotAgeReader(reader, self.inner.name, key) if start == 0 else reader

    async def close(self) -> None:
        return None


class _NotAgeReader:
    def __init__(self, inner: ObjectReader, store: str, key: str) -> None:
        self.inner = inner
        self.info: ObjectInfo = inner.info
        self.metadata: Mapping[str, str] = inner.metadata
        self._where = (store, key)

    def _refuse(self) -> IntegrityError:
        store, key = self._where
        return IntegrityError(
            f"{key!r} was served as age ciphertext after its first bytes said otherwise; "
            f"{UNPROVEN_AGE}: not written",
            store=store,
            key=key,
        )

    async def read_all(self) -> bytes:
        data = await self.inner.read_all()
        if age_kind(data[:LOOK]):
            raise self._refuse()
        return data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        it = aiter(self.inner)
        # The first bytes, held back until they are known not to begin an age file.
        head: bytes | None = b""
        try:
            async for chunk in it:
                if head is None:
                    yield chunk
                    continue
                head += bytes(chunk)
                if len(head) < LOOK:
                    continue
                if age_kind(head[:LOOK]):
                    raise self._refuse()
                yield head
                head = None
            if head:
                if age_kind(head):
                    raise self._refuse()
                yield head
        finally:
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                await aclose()
