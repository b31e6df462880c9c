"""Tamper-evident, append-only audit log for everything daulat does.

Why this exists
---------------
daulat moves and deletes other people's data between providers.  Afterwards
someone (an auditor, a regulator, the owner) needs to know *what was done,
when, by whom* and to trust that the record was not quietly edited.  This
module keeps that record as a hash chain in a JSON Lines file (daulat puts it
at ``.daulat/audit.jsonl`` beside its config).

Format
------
One JSON object per line, each with exactly these fields:

``seq``        0-based, consecutive position in the log.
``time``       UTC ISO-8601 time the entry was written (informational only:
               clocks skew between hosts, so order is given by ``seq`` and the
               chain, never by ``time``).
``actor``      ``user@host`` of the writer unless the caller names one.
``operation``  what was done: ``"scan"``, ``"exit"``, ``"verify"``,
               ``"keys.new"``, ``"check"``, ...
``details``    a JSON object supplied by the caller.
``prev``       the ``hash`` of the previous entry; 64 zeros for entry 0.
``hash``       hex SHA-256 of the entry's canonical form: the entry *without*
               ``hash``, serialised as JSON with sorted keys, no whitespace,
               ``ensure_ascii=False``, encoded as UTF-8 (see
               :func:`canonical_json`).  Anyone can recompute it with a few
               lines of code in any language; no daulat needed.

Because every entry commits to the hash of the one before it, the ``hash`` of
the newest entry (the *head hash*) commits to the entire history.  Editing,
deleting, inserting or reordering any earlier entry changes what the chain
hashes to, and :meth:`AuditLog.verify` reports where and how, in plain English.

The head hash and published reports
-----------------------------------
A report daulat publishes (an inventory, an exit certificate, ...) shows the
head hash of the log at the moment the report was made.  A reader checks the
report against the log with ``AuditLog(path).verify(published_head=...)``
(what ``daulat audit verify`` runs): the log must verify, *and* some entry in
it must have exactly that hash.  Entries appended later do not disturb this:
the published hash stays inside the chain as the log grows.

What the chain does NOT protect against
---------------------------------------
* **A consistent rewrite.**  The chain has no secret key.  Someone who can
  write the file can rewrite it from any point onward, recomputing every
  ``prev`` and ``hash``, and the result verifies.  The same goes for cutting
  off the newest entries at a line boundary: the shorter log is still a valid
  chain.  A :class:`Checkpoint` of an earlier verification (daulat keeps one in
  ``.daulat/audit.verified``) exposes a cut below it, but it sits beside the log
  and goes with it.  Only a head hash kept *somewhere else* (in a published
  report, an e-mail, a ticket, another machine) exposes either for certain.  That is why reports
  publish the head hash: the log alone is evidence of consistency, the log
  plus an independently kept head hash is evidence of integrity.
* **Lies at write time.**  The chain proves the record was not changed after
  it was written, not that what was written is true.
* **Disclosure.**  The log is plain text.  It is created ``0600`` and
  :meth:`AuditLog.append` refuses detail keys that look like secrets
  (``password``, ``token``, ``account_key``, ...), but it cannot recognise a
  secret stored under an innocent-looking key: callers must not put one there.

Concurrency
-----------
Several daulat processes may append at once.  :meth:`AuditLog.append` takes an
exclusive ``fcntl.flock`` on the log file itself, reads the last entry *under
that lock*, writes one complete line with ``O_APPEND`` and ``fsync``\\ s it before
releasing the lock, so seqs never collide or skip.  Readers take a shared lock
only long enough to read the file size: bytes before that offset never change
in an append-only file, so they read a consistent snapshot without holding up
writers.  ``flock`` is advisory and unreliable on some network filesystems;
keep the log on a local disk.

Why this module is long
-----------------------
One file format with its writer and its verifier: some eighty lines are this docstring,
and most of the rest is :class:`_ChainChecker`, which has to name every way a log can be
damaged in plain words. Writer and verifier share the canonical form and the line parsing, and
must never drift apart; they stay in one module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import getpass
import hashlib
import json
import math
import os
import re
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO, Final, TypeAlias

from daulat.errors import DaulatError
from daulat.plurals import plural

__all__ = [
    "GENESIS_PREV",
    "AuditEntry",
    "AuditLog",
    "AuditLogError",
    "Checkpoint",
    "JSONValue",
    "Problem",
    "ProblemKind",
    "VerifyResult",
    "canonical_json",
    "default_actor",
    "secret_looking_key",
]

JSONValue: TypeAlias = str | int | float | bool | list["JSONValue"] | dict[str, "JSONValue"] | None

GENESIS_PREV: Final = "0" * 64
"""The ``prev`` of entry 0: there is no previous entry to commit to."""

_FIELDS: Final = frozenset({"seq", "time", "actor", "operation", "details", "prev", "hash"})
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_TAIL_BLOCK: Final = 64 * 1024


class AuditLogError(DaulatError):
    """The log cannot be read or appended to safely; :meth:`AuditLog.verify` says why."""


def canonical_json(value: JSONValue) -> bytes:
    """Serialise ``value`` the one way the chain hashes it.

    Sorted keys, no whitespace, non-ASCII kept as UTF-8, and no NaN/Infinity
    (they are not JSON, and other languages' parsers would reject them, making
    the log unverifiable outside Python).
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def default_actor() -> str:
    """``user@host`` of this process: who did it, and from which machine."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname() or 'localhost'}"


# --------------------------------------------------------------------------- entries


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the log, exactly as stored.

    ``details`` is a plain dict so that entries serialise without ceremony;
    treat it as read-only: mutating it makes ``hash`` stale.
    """

    seq: int
    time: str
    actor: str
    operation: str
    details: dict[str, JSONValue]
    prev: str
    hash: str

    def body(self) -> dict[str, JSONValue]:
        """The entry without ``hash``: exactly what ``hash`` is computed over."""
        return {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "operation": self.operation,
            "details": self.details,
            "prev": self.prev,
        }

    def compute_hash(self) -> str:
        """Recompute the hash from the content, to compare with the stored ``hash``."""
        return hashlib.sha256(canonical_json(self.body())).hexdigest()

    def to_dict(self) -> dict[str, JSONValue]:
        """All fields, as written to the log."""
        return {**self.body(), "hash": self.hash}

    def to_json_line(self) -> bytes:
        """The exact bytes :meth:`AuditLog.append` writes, newline included."""
        return canonical_json(self.to_dict()) + b"\n"


# --------------------------------------------------------------------------- secrets

# Matched anywhere in the key once case and separators are dropped: long enough
# that an innocent key containing one is very unlikely (and refusing it is cheap).
_SECRET_SUBSTRINGS: Final = (
    "secret",  # also covers secret_access_key, client_secret
    "password",
    "passwd",
    "passphrase",
    "credential",
    "token",  # sas_token, session_token, refresh_token
    "accountkey",  # Azure account_key / AccountKey
    "privatekey",
    "apikey",
)
# Matched only as whole words, because as substrings they hit innocent keys
# ("sas" in "kansas"); "identity" is an age private key.
_SECRET_WORDS: Final = frozenset({"sas", "identity", "identities", "private"})
_WORD: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def secret_looking_key(key: str) -> bool:
    """True if a details key looks like it names a secret.

    Works on words, so ``sas_token``, ``SasToken``, ``AWS_SECRET_ACCESS_KEY``
    and ``accountKey`` are all caught while ``object_key`` or ``bucket`` are not.
    Deliberately errs towards refusing: a refused key costs the caller a
    rename, a leaked secret in a permanent, shared log costs much more.
    """
    words = [w.lower() for w in _WORD.findall(key)]
    joined = "".join(words)
    return any(s in joined for s in _SECRET_SUBSTRINGS) or any(w in _SECRET_WORDS for w in words)


def _key_path(path: str, key: str) -> str:
    return f"{path}[{key!r}]"


def _clean_json(value: object, path: str) -> JSONValue:
    """Copy ``value`` into plain JSON types, refusing secrets and non-JSON.

    The copy is what gets hashed and written, so later mutation by the caller
    cannot make the stored hash disagree with the stored content, and the
    verifier (which only ever sees parsed JSON) recomputes the same bytes.
    Subclasses (``StrEnum``, ``IntEnum``, ...) become their plain base type for
    the same reason.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path} is {value!r}, which JSON cannot represent")
        return float(value)
    if isinstance(value, Mapping):
        out: dict[str, JSONValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{path} has a non-string key {key!r}; JSON object keys must be strings"
                )
            where = _key_path(path, key)
            if secret_looking_key(key):
                raise ValueError(
                    f"refusing to write {where} to the audit log: the key {key!r} looks like"
                    " a secret, and secrets must never be written to the audit log"
                )
            out[str.__str__(key)] = _clean_json(item, where)
        return out
    if isinstance(value, list | tuple):
        return [_clean_json(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise TypeError(f"{path} is a {type(value).__name__}, which is not JSON-serialisable")


def _clean_details(details: Mapping[str, object]) -> dict[str, JSONValue]:
    if not isinstance(details, Mapping):
        raise TypeError(f"details must be a mapping (a JSON object), not {type(details).__name__}")
    cleaned = _clean_json(details, "details")
    assert isinstance(cleaned, dict)
    return cleaned


def _require_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return str.__str__(value)


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- parsing


class ProblemKind(StrEnum):
    """What kind of damage :meth:`AuditLog.verify` found."""

    NO_LOG = "no_log"
    """The log file does not exist."""
    NOT_JSON = "not_json"
    """A line is blank, not UTF-8, or not JSON."""
    TRUNCATED = "truncated"
    """The file ends without a line ending, usually in the middle of an entry."""
    MALFORMED = "malformed"
    """A line is JSON but not an audit entry (fields missing, extra or of the wrong type)."""
    EDITED = "edited"
    """An entry's stored hash does not match its content."""
    BROKEN_CHAIN = "broken_chain"
    """An entry's ``prev`` is not the hash of the entry before it."""
    MISSING = "missing"
    """Sequence numbers are skipped: entries were removed."""
    REORDERED = "reordered"
    """An entry appears after entries that should follow it."""
    DUPLICATE = "duplicate"
    """A sequence number appears twice: an entry was inserted or copied."""
    HEAD_NOT_FOUND = "head_not_found"
    """No entry has the head hash a report published."""
    REMOVED_AT_END = "removed_at_end"
    """The log is shorter than an earlier verification recorded: its newest entries are gone."""
    REWRITTEN = "rewritten"
    """The entry an earlier verification recorded as the head is no longer the same entry."""
    CHECKPOINT = "checkpoint"
    """``audit.verified``, the state the log last verified at, is not a readable state."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the log, located as precisely as the damage allows.

    ``line`` is 1-based (``None`` when the problem is not about one line);
    ``seq`` is the entry's sequence number when it could be read.
    """

    line: int | None
    seq: int | None
    kind: ProblemKind
    message: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of :meth:`AuditLog.verify`.

    ``entries`` counts lines that are well-formed entries (whether or not they
    chain correctly); ``head_seq``/``head_hash`` are those of the highest
    entry in the chain, the value a report should publish; when a published
    head was checked, ``published_head_seq`` is the entry that has it.
    """

    ok: bool
    entries: int
    head_seq: int | None
    head_hash: str | None
    problems: list[Problem] = field(default_factory=list)
    published_head_seq: int | None = None
    checkpoint: Checkpoint | None = None
    """When the log verified: what :meth:`AuditLog.verify` can be given to skip re-parsing it."""

    def summary(self) -> str:
        """Plain-English report, one problem per line, for a CLI to print as is."""
        if self.ok:
            if self.head_hash is None:
                text = "audit log is intact and empty"
            else:
                text = (
                    f"audit log is intact: {plural(self.entries, 'entry', 'entries')},"
                    f" head is entry {self.head_seq} with hash {self.head_hash}"
                )
            if self.published_head_seq is not None:
                text += f"; the published head hash is entry {self.published_head_seq}"
            return text
        count = len(self.problems)
        lines = [f"audit log FAILED verification ({count} problem{'s' if count != 1 else ''}):"]
        lines.extend(f"  - {p.message}" for p in self.problems)
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A prefix of the log that verified: ``size`` bytes hashing to ``sha256``, holding
    ``lines`` lines and ``entries`` entries, with the chain's tip at its end.

    Given back to :meth:`AuditLog.verify`, it spares re-parsing that prefix: its bytes are
    only hashed again (any change to them changes the hash), and only what follows is
    checked entry by entry.  It trusts the place it was kept: whoever can rewrite it can also
    rewrite the chain consistently, which the chain cannot detect either (see above).
    """

    size: int
    sha256: str
    lines: int
    entries: int
    head_seq: int | None
    head_hash: str | None

    def to_json(self) -> str:
        return json.dumps(
            {
                "size": self.size,
                "sha256": self.sha256,
                "lines": self.lines,
                "entries": self.entries,
                "head_seq": self.head_seq,
                "head_hash": self.head_hash,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Checkpoint | None:
        """The checkpoint in ``text``, or None when it is not one (then verify in full)."""
        try:
            obj = json.loads(text)
            cp = cls(
                size=obj["size"],
                sha256=obj["sha256"],
                lines=obj["lines"],
                entries=obj["entries"],
                head_seq=obj["head_seq"],
                head_hash=obj["head_hash"],
            )
        except (ValueError, TypeError, KeyError):
            return None
        ints = (cp.size, cp.lines, cp.entries)
        if not all(type(v) is int and v >= 0 for v in ints) or not isinstance(cp.sha256, str):
            return None
        if (cp.head_seq is None) != (cp.head_hash is None):
            return None
        if cp.head_seq is not None and (type(cp.head_seq) is not int or cp.head_seq < 0):
            return None
        if cp.head_hash is not None and not _HEX64.fullmatch(str(cp.head_hash)):
            return None
        return cp


class _BadLine(Exception):
    def __init__(self, kind: ProblemKind, reason: str, seq: int | None = None) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.seq = seq


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _decode_entry(raw: bytes) -> AuditEntry:
    """Parse one line (without its newline) into an entry, or raise :class:`_BadLine`.

    Strict about shape (exact field set, exact types) because anything lenient
    here is room for an attacker to smuggle content past the hash.
    """
    if not raw.strip():
        raise _BadLine(ProblemKind.NOT_JSON, "is blank")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _BadLine(ProblemKind.NOT_JSON, "is not valid UTF-8 text") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _BadLine(
            ProblemKind.NOT_JSON, f"is not valid JSON ({exc.msg} at column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise _BadLine(ProblemKind.NOT_JSON, f"is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise _BadLine(ProblemKind.MALFORMED, "is JSON but not an object")
    raw_seq = obj.get("seq")
    seq = raw_seq if type(raw_seq) is int and raw_seq >= 0 else None

    def bad(reason: str) -> _BadLine:
        return _BadLine(ProblemKind.MALFORMED, f"is not a valid audit entry: {reason}", seq)

    missing = sorted(_FIELDS - obj.keys())
    if missing:
        raise bad(f"it lacks {', '.join(missing)}")
    extra = sorted(obj.keys() - _FIELDS)
    if extra:
        raise bad(f"it has unexpected field(s) {', '.join(extra)}")
    if seq is None:
        raise bad(f"seq is {raw_seq!r}, not a non-negative integer")
    time, actor, operation = obj["time"], obj["actor"], obj["operation"]
    details, prev, hash_ = obj["details"], obj["prev"], obj["hash"]
    if not isinstance(time, str) or not _is_utc_timestamp(time):
        raise bad(f"time is {time!r}, not a UTC ISO-8601 timestamp")
    for name, value in (("actor", actor), ("operation", operation)):
        if not isinstance(value, str) or not value.strip():
            raise bad(f"{name} is {value!r}, not a non-empty string")
    if not isinstance(details, dict):
        raise bad("details is not a JSON object")
    for name, value in (("prev", prev), ("hash", hash_)):
        if not isinstance(value, str) or not _HEX64.fullmatch(value):
            raise bad(f"{name} is not 64 lowercase hex digits")
    entry = AuditEntry(
        seq=seq, time=time, actor=actor, operation=operation, details=details, prev=prev, hash=hash_
    )
    try:
        canonical_json(entry.body())
    except ValueError:  # e.g. 1e400 parses to inf, which cannot be hashed canonically
        raise bad("details contain a number JSON cannot represent exactly") from None
    return entry


def _is_utc_timestamp(text: str) -> bool:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return False
    offset = parsed.utcoffset()
    return offset is not None and not offset


# --------------------------------------------------------------------------- file helpers


def _snapshot_size(fd: int) -> int:
    """Size of the file at a moment no append is in progress.

    The shared lock waits out a writer mid-line; once we have the size, the
    bytes before it are immutable (append-only), so the lock can go at once.
    """
    fcntl.flock(fd, fcntl.LOCK_SH)
    try:
        return os.fstat(fd).st_size
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _iter_lines(f: BinaryIO, size: int) -> Iterator[tuple[int, bytes, bool]]:
    """Yield ``(line_number, line_without_newline, had_newline)`` up to ``size`` bytes."""
    offset = 0
    line_no = 0
    while offset < size:
        raw = f.readline(size - offset)
        if not raw:
            break
        offset += len(raw)
        line_no += 1
        if raw.endswith(b"\n"):
            yield line_no, raw[:-1], True
        else:
            yield line_no, raw, False


def _starts_with(f: BinaryIO, size: int, point: Checkpoint, digest: hashlib._Hash) -> bool:
    """Whether the first ``point.size`` of ``size`` bytes of ``f`` hash to ``point.sha256``;
    they are fed to ``digest``, and ``f`` is left just after them."""
    if point.size > size:
        return False
    left = point.size
    while left:
        block = f.read(min(left, 1 << 20))
        if not block:
            return False
        digest.update(block)
        left -= len(block)
    return digest.hexdigest() == point.sha256


def _read_last_entry(fd: int, size: int) -> AuditEntry | None:
    """Read and check the last entry by seeking from the end (no full scan).

    Raises :class:`AuditLogError` if the tail is damaged: appending on top of
    damage would bury it under fresh, valid-looking entries.
    """
    if size == 0:
        return None
    if os.pread(fd, 1, size - 1) != b"\n":
        raise AuditLogError(
            "the audit log ends in the middle of a line (an interrupted write or a"
            " truncated file); run `daulat audit verify` and repair it before appending"
        )
    chunks: list[bytes] = []
    end = size - 1  # exclude the final newline
    pos = end
    while pos > 0:
        start = max(0, pos - _TAIL_BLOCK)
        block = os.pread(fd, pos - start, start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            chunks.append(block[newline + 1 :])
            break
        chunks.append(block)
        pos = start
    raw = b"".join(reversed(chunks))
    try:
        entry = _decode_entry(raw)
    except _BadLine as exc:
        raise AuditLogError(
            f"the last line of the audit log {exc.reason}; run `daulat audit verify`"
        ) from None
    if entry.compute_hash() != entry.hash:
        raise AuditLogError(
            f"the last entry of the audit log (entry {entry.seq}) was edited: its hash does"
            " not match its content; run `daulat audit verify`"
        )
    return entry


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    """Make a newly created file's directory entry durable, where the OS allows."""
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# --------------------------------------------------------------------------- verification


@dataclass
class _Gap:
    """Seqs ``first..last`` skipped when line ``line`` jumped from ``after`` to ``to``.

    ``first..last`` shrinks as reordered entries turn up; ``line``, ``after``
    and ``to`` keep describing the original jump, for the message.
    """

    first: int
    last: int
    line: int
    after: int | None  # the seq before the jump, None at the start of the log
    to: int  # the seq the jump landed on
    explained: bool  # as many unreadable lines stood there, already reported


class _ChainChecker:
    """Streaming verifier: keeps only the chain tip and the open gaps in memory.

    Every valid entry is compared with the tip (the highest seq so far).
    A jump forward opens a gap; an entry that later fills a gap is reported as
    reordered, anything else below the tip as a duplicate, and gaps still open
    at the end as missing entries.  A log that raises no problem therefore has
    seqs 0, 1, 2, ... in file order with every ``prev`` checked.
    """

    def __init__(self, published_head: str | None, since: Checkpoint | None = None) -> None:
        self.published_head = published_head
        self.published_head_seq: int | None = None
        # What an earlier verification recorded: the log must still reach that entry, unchanged.
        self.since = since
        self.since_hash: str | None = None
        self.problems: list[Problem] = []
        self.entries = 0
        self.tip_seq: int | None = None
        self.tip_hash: str | None = None
        self.gaps: list[_Gap] = []
        self.unreadable_since_tip = 0

    def report(self, line: int | None, seq: int | None, kind: ProblemKind, message: str) -> None:
        self.problems.append(Problem(line=line, seq=seq, kind=kind, message=message))

    def feed(self, line: int, raw: bytes, complete: bool) -> None:
        try:
            entry = _decode_entry(raw)
        except _BadLine as exc:
            self.unreadable_since_tip += 1
            if not complete and exc.kind is ProblemKind.NOT_JSON:
                self.report(
                    line,
                    None,
                    ProblemKind.TRUNCATED,
                    f"line {line} is cut off: the file ends in the middle of an entry, so the"
                    " last write was interrupted or the file was truncated",
                )
            else:
                label = f"entry {exc.seq} (line {line})" if exc.seq is not None else f"line {line}"
                self.report(line, exc.seq, exc.kind, f"{label} {exc.reason}")
            return
        self.entries += 1
        seq = entry.seq
        if not complete:
            self.report(
                line,
                seq,
                ProblemKind.TRUNCATED,
                f"entry {seq} (line {line}) has no line ending: the file was cut short"
                " or edited after it was written",
            )
        expected = 0 if self.tip_seq is None else self.tip_seq + 1
        actual = entry.compute_hash()
        if actual != entry.hash:
            message = f"entry {seq} (line {line}) was edited: its hash does not match its content"
            if seq != expected:
                message += f" (it stands where entry {expected} belongs)"
            self.report(line, seq, ProblemKind.EDITED, message)
            # Its seq is as suspect as the rest of its content, so place it where
            # the chain expects; its stored hash is what the next entry links to.
            # Otherwise an edited seq would cascade into bogus gap reports.
            seq = expected
        if self.published_head is not None and actual == self.published_head:
            self.published_head_seq = seq
        if self.since is not None and seq == self.since.head_seq and self.since_hash is None:
            self.since_hash = actual
        self._place(line, seq, expected, entry)

    def _place(self, line: int, seq: int, expected: int, entry: AuditEntry) -> None:
        if seq == expected:
            want_prev = GENESIS_PREV if self.tip_hash is None else self.tip_hash
            if entry.prev != want_prev:
                if seq == 0:
                    message = (
                        f"entry 0 (line {line}) does not start a chain: its prev should be"
                        " 64 zeros, so it was forged or the log was spliced"
                    )
                else:
                    message = (
                        f"entry {seq} (line {line}) does not link to entry {seq - 1}: its prev"
                        f" is not entry {seq - 1}'s hash, so one of the two was rewritten"
                        " or forged"
                    )
                self.report(line, seq, ProblemKind.BROKEN_CHAIN, message)
        elif seq > expected:
            skipped = seq - expected
            self.gaps.append(
                _Gap(
                    first=expected,
                    last=seq - 1,
                    line=line,
                    after=self.tip_seq,
                    to=seq,
                    explained=self.unreadable_since_tip >= skipped,
                )
            )
        else:
            self._behind_tip(line, seq)
            return  # the tip stays where it is
        self.tip_seq, self.tip_hash = seq, entry.hash
        self.unreadable_since_tip = 0

    def _behind_tip(self, line: int, seq: int) -> None:
        for i, gap in enumerate(self.gaps):
            if gap.first <= seq <= gap.last:
                pieces = [
                    _Gap(gap.first, seq - 1, gap.line, gap.after, gap.to, gap.explained),
                    _Gap(seq + 1, gap.last, gap.line, gap.after, gap.to, gap.explained),
                ]
                self.gaps[i : i + 1] = [p for p in pieces if p.first <= p.last]
                self.report(
                    line,
                    seq,
                    ProblemKind.REORDERED,
                    f"entry {seq} (line {line}) is out of order: it comes after entry"
                    f" {self.tip_seq}, so lines were moved",
                )
                return
        self.report(
            line,
            seq,
            ProblemKind.DUPLICATE,
            f"entry {seq} (line {line}) repeats a sequence number already used earlier in the"
            " log: an entry was inserted or copied",
        )

    def _check_since(self) -> None:
        """The log must extend what the last verification recorded: a valid but shorter
        chain is a log whose newest entries were cut off (a hash chain alone cannot tell)."""
        point = self.since
        if point is None or point.head_seq is None:
            return
        now = self.entries
        if self.tip_seq is None or self.tip_seq < point.head_seq:
            gone = max(point.entries - now, 1)
            self.report(
                None,
                None,
                ProblemKind.REMOVED_AT_END,
                f"{gone} entr{'y' if gone == 1 else 'ies'} removed from the end: was"
                f" {point.entries}, now {now} (the last verification recorded entry"
                f" {point.head_seq} with hash {point.head_hash} as the head)",
            )
        elif self.since_hash != point.head_hash:
            self.report(
                None,
                point.head_seq,
                ProblemKind.REWRITTEN,
                f"entry {point.head_seq} is not the entry the last verification recorded (hash"
                f" {point.head_hash}): the log was rewritten or replaced after it verified",
            )

    def finish(self) -> VerifyResult:
        for gap in self.gaps:
            if gap.explained:
                continue
            if gap.first == gap.last:
                what = f"entry {gap.first} is missing"
            else:
                what = f"entries {gap.first} to {gap.last} are missing"
            where = (
                "at the start of the log" if gap.after is None else f"right after entry {gap.after}"
            )
            self.report(
                gap.line,
                gap.first,
                ProblemKind.MISSING,
                f"{what} (removed): line {gap.line} holds entry {gap.to} {where}",
            )
        self._check_since()
        if self.published_head is not None and self.published_head_seq is None:
            self.report(
                None,
                None,
                ProblemKind.HEAD_NOT_FOUND,
                f"no entry in the log has the published head hash {self.published_head}: the"
                " log was rewritten or cut short after the report was made, or the report"
                " belongs to another log",
            )
        problems = sorted(
            self.problems, key=lambda p: (p.line is None, p.line if p.line is not None else 0)
        )
        return VerifyResult(
            ok=not problems,
            entries=self.entries,
            head_seq=self.tip_seq,
            head_hash=self.tip_hash,
            problems=problems,
            published_head_seq=self.published_head_seq,
        )


# --------------------------------------------------------------------------- the log


class AuditLog:
    """The audit log at ``path`` (a JSON Lines file; created on first append).

    Holds no file open and caches nothing between calls, so any number of
    ``AuditLog`` objects and processes can share one file safely.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    def append(
        self, operation: str, details: Mapping[str, object], *, actor: str | None = None
    ) -> AuditEntry:
        """Record one operation and return the entry as written (and fsynced).

        Everything the caller supplies is validated *before* the file is
        touched, so a refused entry leaves no trace: ``ValueError`` for a
        secret-looking detail key (the message names the key, never the
        value), an empty operation/actor or a NaN; ``TypeError`` for values
        JSON cannot hold.  Raises :class:`AuditLogError` if the last line of
        the log is damaged, rather than chaining new entries onto it.
        """
        operation = _require_text("operation", operation)
        actor = default_actor() if actor is None else _require_text("actor", actor)
        clean = _clean_details(details)
        try:  # e.g. lone surrogates cannot be UTF-8 encoded; find out before writing
            canonical_json({"actor": actor, "operation": operation, "details": clean})
        except UnicodeEncodeError as exc:
            raise ValueError(f"entry text is not valid Unicode: {exc.reason}") from None

        fd = self._open_for_append()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            last = _read_last_entry(fd, size)
            seq = 0 if last is None else last.seq + 1
            prev = GENESIS_PREV if last is None else last.hash
            time = _utc_now()  # taken under the lock, so times follow seqs on one host
            unsigned = AuditEntry(seq, time, actor, operation, clean, prev, hash="")
            entry = AuditEntry(seq, time, actor, operation, clean, prev, unsigned.compute_hash())
            try:
                _write_all(fd, entry.to_json_line())
                os.fsync(fd)
            except BaseException:
                # Leave no half-written line behind: it would block every later append.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                    os.fsync(fd)
                raise
            return entry
        finally:
            os.close(fd)  # also releases the lock

    def create(self) -> None:
        """Create the log, empty and ``0600``, if it does not exist (an existing one is
        left as it is)."""
        os.close(self._open_for_append())

    def _open_for_append(self) -> int:
        """Open (creating ``0600`` if needed) for appending and reading the tail."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
        while True:
            try:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                try:
                    return os.open(self.path, flags)
                except FileNotFoundError:  # removed between the two opens; try again
                    continue
            try:
                os.fchmod(fd, 0o600)  # exact mode, whatever the umask
                _fsync_dir(self.path.parent)
            except BaseException:
                os.close(fd)
                raise
            return fd

    def head(self) -> AuditEntry | None:
        """The newest entry (its ``hash`` is what reports publish), or None if empty.

        Reads only the tail of the file.  Raises :class:`AuditLogError` if the
        last line is damaged or edited, so a report never publishes a head
        hash that does not match its content.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            return _read_last_entry(fd, _snapshot_size(fd))
        finally:
            os.close(fd)

    def entries(self) -> Iterator[AuditEntry]:
        """Stream the entries in file order, one line in memory at a time.

        Checks that each line is a well-formed entry (raising
        :class:`AuditLogError` naming the line otherwise) but not the hashes or
        the chain: that is :meth:`verify`'s job.  Sees the log as it was when
        iteration started; entries appended meanwhile are not included.
        """
        try:
            f = self.path.open("rb")
        except FileNotFoundError:
            return
        with f:
            for line, raw, complete in _iter_lines(f, _snapshot_size(f.fileno())):
                if not complete:
                    raise AuditLogError(
                        f"line {line} of the audit log is cut off; run `daulat audit verify`"
                    )
                try:
                    yield _decode_entry(raw)
                except _BadLine as exc:
                    raise AuditLogError(
                        f"line {line} of the audit log {exc.reason}; run `daulat audit verify`"
                    ) from None

    def verify(
        self, published_head: str | None = None, *, since: Checkpoint | None = None
    ) -> VerifyResult:
        """Check every entry and link of the chain, streaming through the file.

        Detects edited entries, removed, inserted, duplicated and reordered
        entries, lines that are not entries, and a cut-off last line, and
        says in plain English which line and seq and what happened.  Never
        raises for damage: damage is the result.

        ``published_head`` is a head hash taken from a report; verification
        then also requires some entry in the log to hash to exactly that value
        (see the module docstring for why this matters).

        ``since`` is the checkpoint of an earlier verification of this log: when
        the log still begins with exactly those bytes, they are hashed rather than
        parsed and only the entries after them are checked one by one (a run
        checks a 100,000-entry log this way in a fraction of a second).  When the
        bytes differ, the whole log is verified as without it, and must still reach the
        checkpoint's head entry unchanged: a log cut short of it (fewer entries, emptied,
        deleted) is reported as entries removed from the end, one whose entry there has another
        hash as rewritten.
        """
        want: str | None = None
        if published_head is not None:
            want = published_head.strip().lower()
            if not _HEX64.fullmatch(want):
                raise ValueError(
                    f"published head {published_head!r} is not a hex SHA-256 (64 hex digits)"
                )
        checker = _ChainChecker(want, since)
        try:
            f = self.path.open("rb")
        except FileNotFoundError:
            message = f"there is no audit log at {self.path}: it was never written or was deleted"
            if since is not None and since.entries:
                message = (
                    f"there is no audit log at {self.path}: it was deleted; the last"
                    f" verification recorded {plural(since.entries, 'entry', 'entries')} (head: entry"
                    f" {since.head_seq} with hash {since.head_hash})"
                )
            checker.report(None, None, ProblemKind.NO_LOG, message)
            # One problem is enough: there is nothing to search.
            checker.published_head = checker.since = None
            return checker.finish()
        with f:
            size = _snapshot_size(f.fileno())
            digest = hashlib.sha256()
            lines = 0
            if since is not None and want is None and _starts_with(f, size, since, digest):
                checker.entries = since.entries
                checker.tip_seq, checker.tip_hash = since.head_seq, since.head_hash
                checker.since_hash = since.head_hash  # those very bytes verified before
                lines = since.lines
            else:
                f.seek(0)
                digest = hashlib.sha256()
            for _, raw, complete in _iter_lines(f, size - f.tell()):
                digest.update(raw + b"\n" if complete else raw)
                lines += 1
                checker.feed(lines, raw, complete)
            result = checker.finish()
        if not result.ok:
            return result
        point = Checkpoint(
            size=size,
            sha256=digest.hexdigest(),
            lines=lines,
            entries=result.entries,
            head_seq=result.head_seq,
            head_hash=result.head_hash,
        )
        return dataclasses.replace(result, checkpoint=point)
