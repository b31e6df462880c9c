"""The journal's rows as Python values: what one object's copy came to, and what is planned.

Shared by the journal (:mod:`daulat.transfer.journal`), the engine, adoption and the Ray
workers, which send :class:`Outcome` values to the driver to commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum


class State(StrEnum):
    DONE = "done"
    FAILED = "failed"
    REFUSED = "refused"


# The error of a row whose object ``verify --full`` found different at the destination from
# what was written (see Journal.replaced): failed, so the next copy or exit sends it again, and
# never adopted by its proof, which a replacement that keeps size and metadata still carries.
REPLACED = (
    "replaced at the destination: verify --full found its content different from what was "
    "written; the next copy or exit sends it again"
)


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One object to copy: its key relative to the source prefix, and what the source said.

    ``dkey`` is its key relative to the destination prefix when that differs (protected names,
    or a restore of them), else None.
    """

    key: str
    size: int
    etag: str | None
    dkey: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one object, as written to the journal."""

    key: str
    size: int
    src_etag: str | None
    state: State
    sha256: str | None = None
    dst_size: int | None = None
    dst_etag: str | None = None
    error: str | None = None
    plain_size: int | None = None
    stored_as: str | None = None  # key relative to the destination prefix, if not ``key``
    # SHA-256 of each chunk of the plaintext (concatenated digests) and the chunk size, for
    # objects of more than one chunk (daulat.stores.chunkhash).
    chunks: bytes | None = None
    chunk_size: int | None = None


@dataclass(frozen=True, slots=True)
class Completing:
    """A streamed object about to complete at the destination (table ``completing``)."""

    key: str
    size: int
    src_etag: str | None
    nonce: str
    sha256: str
    plain_size: int
    dst_size: int
    stored_as: str | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A planned object that the destination already lists (see ``adoption_candidates``)."""

    work_id: int
    key: str
    dkey: str | None
    size: int  # source, as listed now
    etag: str | None
    dst_size: int | None  # destination, as listed now
    dst_etag: str | None
    completing: Completing | None
    # The run whose done row records this very source version (the object is listed with
    # another size or ETag since): only a proof of a later write is adopted.
    recorded_run: int | None = None


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
