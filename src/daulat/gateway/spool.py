"""Multipart uploads in progress: their parts spooled on this machine's disk until completed.

Parts live in ``.daulat/gateway-spool/PID-RANDOM/UPLOAD_ID/`` (directories 0700, files 0600),
the ``PID-RANDOM`` directory held under a lock file beside it for as long as this gateway
runs. Each upload's directory holds its record (``upload.json``: bucket, key, when it began,
its Content-Type and user metadata) and its parts, each named by its number and SHA-256
(``00001-HEX.part``), so that an upload outlives the gateway that began it, as S3's uploads
outlive a client: a gateway that starts adopts the uploads of every such directory whose lock
no live process holds (one stopped, crashed or killed), and UploadPart, ListParts, Complete and
Abort go on with their ids. What cannot be adopted is removed at that start: a directory
without a readable record, a part being written when its gateway died, an upload idle for
longer than :data:`UPLOAD_IDLE`, an upload of a bucket that is no longer writable, the lock
file of a gateway killed before it made its directory. Two
gateways sharing a state directory never touch each other's uploads.

Upload ids are 32 random bytes (URL-safe base64): unguessable. The bytes all uploads spool
at once are bounded (``write_spool``, adopted uploads included); a part that would pass the
bound is refused (503 SlowDown) and leaves nothing. A part sent again (a client's retry) may
reuse the bytes of the part it replaces. The uploads in progress are bounded too: one idle
for a day (no part received, nothing completing) is aborted, and past :data:`MAX_UPLOADS` a
new one is refused (503 SlowDown), so uploads begun and forgotten cannot pile up directories
without end. Completing an upload streams its parts in order through the same fan-out as a
PutObject, checking each part's SHA-256 again as it is read back (a disk that altered a part,
or a part renamed, fails the write instead of storing it).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterable, AsyncIterator, Collection
from dataclasses import dataclass, field
from pathlib import Path

from daulat.errors import IntegrityError, StateError
from daulat.gateway.s3xml import S3Failure
from daulat.state import hold_lock, is_locked, private_dir
from daulat.stores.described import Described
from daulat.stores.hashing import StreamHasher

SPOOL_DIR = "gateway-spool"
RECORD = "upload.json"
_UPLOAD_ID = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)
_PART = re.compile(r"^(\d{5})-([0-9a-f]{64})\.part$")
READ_PIECE = 1024 * 1024
MAX_PARTS = 10_000
#: Multipart uploads one gateway keeps in progress at once.
MAX_UPLOADS = 1_000
#: An upload that received no part for this long is aborted (S3 lets a lifecycle rule do it).
UPLOAD_IDLE = dt.timedelta(days=1)


def new_upload_id() -> str:
    """A new multipart upload's id: 256 random bits, never starting with "-", which the AWS
    CLI and other argument parsers would read as an option (`--upload-id -x…` fails)."""
    while True:
        upload_id = secrets.token_urlsafe(32)
        if not upload_id.startswith("-"):
            return upload_id


class SpoolError(S3Failure):
    """An upload that cannot be used, or a part the spool cannot take."""


@dataclass(frozen=True)
class Part:
    number: int
    size: int
    sha256: str
    path: Path

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'  # 64 hex digits: never taken for an MD5


@dataclass
class Upload:
    id: str
    bucket: str
    key: str
    dir: Path
    started: dt.datetime
    parts: dict[int, Part] = field(default_factory=dict)
    busy: int = 0  # parts being written or a completion under way
    touched: dt.datetime | None = None  # when a part last arrived (else ``started``)
    replacing: set[int] = field(default_factory=set)  # part numbers being sent again
    described: Described = field(default_factory=Described)  # Content-Type, x-amz-meta-*


class Spool:
    def __init__(self, state_dir: Path, limit: int, max_uploads: int = MAX_UPLOADS) -> None:
        self.root = state_dir / SPOOL_DIR
        self.limit = limit
        self.max_uploads = max_uploads
        self.used = 0
        self.uploads: dict[str, Upload] = {}
        self.mine: Path | None = None
        self._lock: int | None = None

    def start(self, buckets: Collection[str] | None = None) -> list[Path]:
        """Make this gateway's directory and adopt the uploads of gateways no longer running
        (of ``buckets`` only, when given: the writable ones); remove what cannot be adopted
        (see the module docstring). Returns the uploads (or stray files) removed."""
        # The state directory first: made as the parent of the spool, it would take the
        # umask's mode, and the next process to open it would find it open to others.
        private_dir(self.root.parent)
        private_dir(self.root)
        mine = self.root / f"{os.getpid()}-{secrets.token_hex(4)}"
        self._lock = hold_lock(mine.with_name(mine.name + ".lock"))
        self.mine = private_dir(mine)
        removed = []
        cutoff = dt.datetime.now(dt.UTC) - UPLOAD_IDLE
        for entry in sorted(self.root.iterdir()):
            if entry.suffix == ".lock" and entry != self._lock_path(mine):
                _drop_orphan_lock(entry)
                continue
            if entry == mine or entry.is_symlink() or not entry.is_dir():
                continue
            lock = entry.with_name(entry.name + ".lock")
            if is_locked(lock):
                continue
            try:
                # Held while taking over: a gateway starting beside this one skips it.
                held = hold_lock(lock)
            except StateError:
                continue
            try:
                for old in sorted(entry.iterdir()):
                    upload = _adoptable(old, mine / old.name, cutoff, buckets)
                    if upload is None:
                        removed.append(old)
                        continue
                    with contextlib.suppress(OSError):
                        old.rename(upload.dir)
                        self.uploads[upload.id] = upload
                        self.used += sum(p.size for p in upload.parts.values())
                shutil.rmtree(entry, ignore_errors=True)
                with contextlib.suppress(OSError):
                    lock.unlink()
            finally:
                os.close(held)
        return removed

    @staticmethod
    def _lock_path(directory: Path) -> Path:
        return directory.with_name(directory.name + ".lock")

    def close(self) -> None:
        """Release this gateway's directory: its uploads stay for the next gateway to adopt;
        an empty directory is removed."""
        if self.mine is not None:
            with contextlib.suppress(OSError):
                self.mine.rmdir()  # only when empty
            if not self.mine.exists():
                with contextlib.suppress(OSError):
                    self.mine.with_name(self.mine.name + ".lock").unlink()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def create(self, bucket: str, key: str, described: Described | None = None) -> Upload:
        assert self.mine is not None, "Spool.start() first"
        self.expire()
        if len(self.uploads) >= self.max_uploads:
            raise SpoolError(
                503,
                "SlowDown",
                f"this gateway has {len(self.uploads)} multipart uploads in progress, its "
                "limit: complete or abort some (uploads idle for a day are aborted)",
            )
        upload_id = new_upload_id()
        path = private_dir(self.mine / upload_id)
        upload = Upload(upload_id, bucket, key, path, dt.datetime.now(dt.UTC))
        upload.described = described or Described()
        try:
            _write_record(upload)
        except OSError:
            shutil.rmtree(path, ignore_errors=True)
            raise
        self.uploads[upload_id] = upload
        return upload

    def expire(self, now: dt.datetime | None = None) -> list[Upload]:
        """Abort the uploads idle for longer than :data:`UPLOAD_IDLE`; returns them."""
        cutoff = (now or dt.datetime.now(dt.UTC)) - UPLOAD_IDLE
        idle = [
            u for u in self.uploads.values() if not u.busy and (u.touched or u.started) < cutoff
        ]
        for upload in idle:
            self.abort(upload)
        return idle

    def get(self, upload_id: str, bucket: str, key: str) -> Upload:
        upload = self.uploads.get(upload_id)
        # The same answer for an id never issued and one of another key: ids are not probed.
        if upload is None or upload.bucket != bucket or upload.key != key:
            raise SpoolError(
                404,
                "NoSuchUpload",
                "The specified upload does not exist. The upload ID may be invalid, or the "
                "upload may have been aborted or completed.",
            )
        return upload

    async def write_part(
        self, upload: Upload, number: int, body: AsyncIterable[bytes], hasher: StreamHasher
    ) -> Part:
        """Spool one part (``body`` feeds ``hasher``); replaces an earlier part of that
        number once this one is complete."""
        if not 1 <= number <= MAX_PARTS:
            raise SpoolError(400, "InvalidArgument", "partNumber must be 1-10000")
        tmp = upload.dir / f"{number:05d}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        held = 0
        upload.busy += 1
        upload.touched = dt.datetime.now(dt.UTC)
        # A part sent again (a retry) may use the bytes of the one it replaces: that one goes
        # once this one is complete. Only one retry of a part at a time gets the credit: the
        # disk holds at most the bound plus the parts being replaced, each already received.
        credit = 0
        if number in upload.parts and number not in upload.replacing:
            credit = upload.parts[number].size
            upload.replacing.add(number)
        try:
            with os.fdopen(fd, "wb") as out:
                async for piece in body:
                    if self.used + len(piece) > self.limit + credit:
                        raise SpoolError(
                            503,
                            "SlowDown",
                            "the gateway's spool for multipart uploads is full (write_spool): "
                            "retry later, or complete or abort other uploads",
                        )
                    self.used += len(piece)
                    held += len(piece)
                    await asyncio.to_thread(out.write, piece)
                await asyncio.to_thread(out.flush)
            sha = hasher.hexdigest()
            part = Part(number, hasher.size, sha, upload.dir / f"{number:05d}-{sha}.part")
            if upload.id not in self.uploads:  # aborted meanwhile
                raise self._gone()
            os.replace(tmp, part.path)
            old = upload.parts.get(number)
            if old is not None:
                self.used -= old.size
                if old.path != part.path:
                    with contextlib.suppress(OSError):
                        old.path.unlink()
            upload.parts[number] = part
            return part
        except BaseException:
            self.used -= held
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        finally:
            upload.busy -= 1
            upload.touched = dt.datetime.now(dt.UTC)
            if credit:
                upload.replacing.discard(number)

    def _gone(self) -> SpoolError:
        return SpoolError(404, "NoSuchUpload", "The specified upload does not exist.")

    def abort(self, upload: Upload) -> None:
        self.uploads.pop(upload.id, None)
        self.used -= sum(p.size for p in upload.parts.values())
        upload.parts.clear()
        shutil.rmtree(upload.dir, ignore_errors=True)

    async def read(self, parts: list[Part], hasher: StreamHasher) -> AsyncIterator[bytes]:
        """The parts' bytes in order (feeding ``hasher``), each part's SHA-256 checked again
        before the next one (or the end) is handed on."""
        for part in parts:
            check = hashlib.sha256()
            n = 0
            with open(part.path, "rb") as f:
                piece = await asyncio.to_thread(f.read, READ_PIECE)
                while piece:
                    following = await asyncio.to_thread(f.read, READ_PIECE)
                    check.update(piece)
                    n += len(piece)
                    if not following:
                        _check(part, n, check.hexdigest())
                    await hasher.update(piece)
                    yield piece
                    piece = following
            _check(part, n, check.hexdigest())


def _drop_orphan_lock(lock: Path) -> None:
    """Remove the lock file of a gateway killed before it made its directory (or after it
    removed it): no live process holds it and no directory goes with it."""
    directory = lock.with_suffix("")
    if directory.exists() or lock.is_symlink() or is_locked(lock):
        return  # a directory to take over first (below), or a live gateway's
    try:
        held = hold_lock(lock)  # a gateway starting beside this one skips it meanwhile
    except StateError:
        return
    try:
        if not directory.exists():
            with contextlib.suppress(OSError):
                lock.unlink()
    finally:
        os.close(held)


def _write_record(upload: Upload) -> None:
    """The upload's record beside its parts (0600), written whole or not at all."""
    record = {
        "bucket": upload.bucket,
        "key": upload.key,
        "started": upload.started.isoformat(),
        "content_type": upload.described.content_type,
        "metadata": dict(upload.described.user),
    }
    tmp = upload.dir / f"{RECORD}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(record, out)
    os.replace(tmp, upload.dir / RECORD)


def _adoptable(
    path: Path, dest: Path, cutoff: dt.datetime, buckets: Collection[str] | None
) -> Upload | None:
    """The upload a stopped gateway left at ``path`` (to be moved to ``dest``), or None when
    it is not to be adopted: no readable record, idle too long, a bucket no longer writable.
    Parts being written when it stopped (``*.tmp``) are not adopted; the directory moves
    whole, and they go when the upload does."""
    if path.is_symlink() or not path.is_dir() or _UPLOAD_ID.match(path.name) is None:
        return None
    try:
        record = json.loads((path / RECORD).read_text(encoding="utf-8"))
        bucket, key = record["bucket"], record["key"]
        started = dt.datetime.fromisoformat(record["started"])
        content_type, metadata = record.get("content_type"), record.get("metadata") or {}
        if not (isinstance(bucket, str) and isinstance(key, str) and started.tzinfo):
            return None
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            return None
        described = Described(content_type if isinstance(content_type, str) else None, metadata)
        parts: dict[int, Part] = {}
        when: dict[int, float] = {}
        touched = started
        for entry in path.iterdir():
            m = _PART.match(entry.name)
            if m is None or entry.is_symlink():
                continue
            st = entry.stat()
            number = int(m.group(1))
            if number in parts and when[number] >= st.st_mtime:
                entry.unlink()  # replaced by a retry just before the gateway stopped
                continue
            if number in parts:
                (path / parts[number].path.name).unlink()
            parts[number] = Part(number, st.st_size, m.group(2), dest / entry.name)
            when[number] = st.st_mtime
            touched = max(touched, dt.datetime.fromtimestamp(st.st_mtime, dt.UTC))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if touched < cutoff or (buckets is not None and bucket not in buckets):
        return None
    for entry in path.glob("*.tmp"):
        with contextlib.suppress(OSError):
            entry.unlink()
    upload = Upload(path.name, bucket, key, dest, started, parts, touched=touched)
    upload.described = described
    return upload


def _check(part: Part, size: int, sha256: str) -> None:
    if size != part.size or sha256 != part.sha256:
        raise IntegrityError(
            f"part {part.number} changed on this machine's disk since it was received",
            store="gateway spool",
        )
