"""A Store over a local directory.

Written directly on the OS rather than over obstore's ``LocalStore``, which refuses legal keys
ending in ``#<digits>`` (its staging-file pattern) and cannot keep user metadata; an exit tool must
hold every key a cloud store can hold, where the filesystem allows it.

Layout: the object ``a/b.txt`` is the file ``ROOT/a/b.txt``. Uploads are written to
``ROOT/.daulat-tmp/`` and renamed into place after ``fsync``, so a reader never sees a partial
object and a crash leaves at most a stray file under ``.daulat-tmp/``, which listings ignore.
User metadata is kept in ``user.daulat.*`` extended attributes, set before the rename.

Keys are data from possibly hostile sources. Besides the portable-key rules, this store refuses
backslashes, segments over 255 bytes and the reserved ``.daulat-tmp`` prefix, and checks that the
resolved parent directory lies inside the root (a symlink planted in the tree cannot redirect a
write outside it). Listing reports regular files only and does not follow symlinks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

from daulat.errors import AccessDenied, InvalidKey, NotFound, StoreError
from daulat.stores.base import Capabilities, ObjectInfo, OnUpload, PutResult, portable_key_problem
from daulat.stores.hashing import StreamHasher, check_digest

TMP_DIR = ".daulat-tmp"
XATTR_PREFIX = "user.daulat."
MAX_SEGMENT_BYTES = 255
READ_CHUNK = 1024 * 1024
LIST_BATCH = 1000


def fs_key_problem(key: str) -> str | None:
    """Why the filesystem cannot hold ``key`` safely, or None."""
    reason = portable_key_problem(key)
    if reason is not None:
        return reason
    if "\\" in key:
        return "contains a backslash"
    if key == TMP_DIR or key.startswith(TMP_DIR + "/"):
        return f"'{TMP_DIR}' is reserved for uploads in progress"
    if any(len(s.encode("utf-8")) > MAX_SEGMENT_BYTES for s in key.split("/")):
        return f"a path segment is longer than {MAX_SEGMENT_BYTES} bytes"
    return None


class FsStore:
    """Store over a directory tree; see the module docstring."""

    def __init__(self, name: str, root: Path, *, durable: bool = True) -> None:
        self._name = name
        self.root = root
        self._durable = durable

    @property
    def name(self) -> str:
        return self._name

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(user_metadata=True, server_side_copy=False)

    def _path(self, key: str) -> Path:
        reason = fs_key_problem(key)
        if reason is not None:
            raise InvalidKey(
                f"store {self._name!r} cannot hold key {key!r}: {reason}", store=self._name, key=key
            )
        return self.root.joinpath(*key.split("/"))

    def _info(self, key: str, st: os.stat_result) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=st.st_size,
            modified=datetime.fromtimestamp(st.st_mtime, UTC),
            etag=_etag(st),
            etag_scheme="local",
        )

    async def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        directory = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root.joinpath(*directory.split("/")) if directory else self.root
        walker = self._walk(start, directory, prefix)
        while True:
            batch = await asyncio.to_thread(_take, walker, LIST_BATCH)
            if not batch:
                return
            yield batch

    def _walk(self, start: Path, start_key: str, prefix: str) -> Iterator[ObjectInfo]:
        stack = [(start, start_key)]
        while stack:
            path, key_prefix = stack.pop()
            try:
                entries = list(os.scandir(path))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except PermissionError:
                raise AccessDenied(
                    f"store {self._name!r}: permission denied listing {key_prefix or '/'}",
                    store=self._name,
                ) from None
            for entry in entries:
                key = f"{key_prefix}/{entry.name}" if key_prefix else entry.name
                if not key_prefix and entry.name == TMP_DIR:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if key.startswith(prefix) or prefix.startswith(key + "/"):
                        stack.append((Path(entry.path), key))
                elif entry.is_file(follow_symlinks=False) and key.startswith(prefix):
                    yield self._info(key, entry.stat(follow_symlinks=False))

    async def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = await asyncio.to_thread(os.stat, path, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(
                f"store {self._name!r}: {key!r} does not exist", store=self._name, key=key
            ) from None
        if not _is_regular(st):
            raise NotFound(
                f"store {self._name!r}: {key!r} is not an object", store=self._name, key=key
            )
        return self._info(key, st)

    async def get(self, key: str, *, start: int = 0, end: int | None = None) -> FsReader:
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"invalid range [{start}, {end})")
        path = self._path(key)
        # One trip to a worker thread opens, checks and (for a small range) reads the file: a
        # thread hand-off costs more CPU than reading a small cached file.
        try:
            fd, st, metadata, data = await asyncio.to_thread(_open_object, path, start, end)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(
                f"store {self._name!r}: {key!r} does not exist", store=self._name, key=key
            ) from None
        except (IsADirectoryError, OSError) as exc:
            raise NotFound(
                f"store {self._name!r}: {key!r} is not an object ({exc.strerror})",
                store=self._name,
                key=key,
            ) from None
        if st is None:
            raise NotFound(
                f"store {self._name!r}: {key!r} is not an object", store=self._name, key=key
            )
        stop = st.st_size if end is None else min(end, st.st_size)
        return FsReader(self._info(key, st), metadata, fd, min(start, stop), stop, data)

    async def put(
        self,
        key: str,
        data: bytes | AsyncIterable[bytes],
        *,
        sha256: str | None = None,
        metadata: Mapping[str, str] | None = None,
        prehashed: bool = False,
        on_upload: OnUpload | None = None,
    ) -> PutResult:
        final = self._path(key)
        tmp = self.root / TMP_DIR / f"{uuid.uuid4().hex}.part"
        try:
            if isinstance(data, (bytes, bytearray, memoryview)):
                # A whole body is written in one trip to a worker thread: for small objects
                # the thread hand-offs of a step-by-step write cost more than the write.
                body = bytes(data)
                digest, st = await asyncio.to_thread(
                    self._put_bytes, final, tmp, key, body, sha256, metadata, prehashed
                )
            else:
                digest, st = await self._put_stream(final, tmp, key, data, sha256, metadata)
        except BaseException as exc:
            _unlink_quietly(tmp)
            if isinstance(exc, OSError):
                raise _os_error(exc, self._name, key, "put") from None
            raise
        # The rename keeps inode and mtime: this is the tag that head and list will report, so
        # the engine needs no head per object to learn it.
        return PutResult(key=key, size=st.st_size, sha256=digest, etag=_etag(st))

    def _put_bytes(
        self,
        final: Path,
        tmp: Path,
        key: str,
        body: bytes,
        sha256: str | None,
        metadata: Mapping[str, str] | None,
        prehashed: bool,
    ) -> tuple[str, os.stat_result]:
        if prehashed and sha256 is not None:
            digest = sha256.lower()
        else:
            hasher = StreamHasher()
            hasher.feed(body)
            check_digest(hasher, sha256, store=self._name, key=key)
            digest = hasher.hexdigest()
        self._prepare(final.parent, tmp.parent, key)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_sync(fd, memoryview(body))
            st = self._finish(fd, metadata)
        finally:
            os.close(fd)
        self._commit(tmp, final, key)
        return digest, st

    async def _put_stream(
        self,
        final: Path,
        tmp: Path,
        key: str,
        data: AsyncIterable[bytes],
        sha256: str | None,
        metadata: Mapping[str, str] | None,
    ) -> tuple[str, os.stat_result]:
        hasher = StreamHasher()
        await asyncio.to_thread(self._prepare, final.parent, tmp.parent, key)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            async for chunk in data:
                await hasher.update(chunk)
                await _write_all(fd, chunk)
            check_digest(hasher, sha256, store=self._name, key=key)
            st = await asyncio.to_thread(self._finish, fd, metadata)
        finally:
            os.close(fd)
        await asyncio.to_thread(self._commit, tmp, final, key)
        return hasher.hexdigest(), st

    def _finish(self, fd: int, metadata: Mapping[str, str] | None) -> os.stat_result:
        """Set metadata, make the content durable, and describe the finished file."""
        for name, value in (metadata or {}).items():
            os.setxattr(fd, XATTR_PREFIX + name, value.encode("utf-8"))
        if self._durable:
            os.fsync(fd)
        return os.fstat(fd)

    def _prepare(self, parent: Path, tmp_dir: Path, key: str) -> None:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise InvalidKey(
                f"store {self._name!r} cannot hold key {key!r}: a leading part of it is already "
                "an object (filesystems cannot hold both 'a' and 'a/b')",
                store=self._name,
                key=key,
            ) from None
        root = os.path.realpath(self.root)
        real_parent = os.path.realpath(parent)
        if os.path.commonpath([root, real_parent]) != root:
            raise InvalidKey(
                f"store {self._name!r} refused key {key!r}: it resolves outside the store root",
                store=self._name,
                key=key,
            )

    def _commit(self, tmp: Path, final: Path, key: str) -> None:
        if final.is_dir() and not final.is_symlink():
            raise InvalidKey(
                f"store {self._name!r} cannot hold key {key!r}: a directory of other objects "
                "has that name",
                store=self._name,
                key=key,
            )
        os.replace(tmp, final)

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            await asyncio.to_thread(os.unlink, path)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise _os_error(exc, self._name, key, "delete") from None
        await asyncio.to_thread(self._prune, path.parent)

    def _prune(self, directory: Path) -> None:
        # Remove directories emptied by a delete, so listings and `ls` agree.
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    async def close(self) -> None:
        return None


class FsReader:
    """Streaming read of ``[start, stop)`` of an open file; closes it when done.

    A small range arrives already read (``data``), with the file closed.
    """

    def __init__(
        self,
        info: ObjectInfo,
        metadata: Mapping[str, str],
        fd: int | None,
        start: int,
        stop: int,
        data: bytes | None = None,
    ) -> None:
        self.info = info
        self.metadata = metadata
        self._fd = fd
        self._pos = start
        self._stop = stop
        self._data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._data is not None:
            data, self._data = self._data, None
            if data:
                yield data
            return
        fd = self._fd
        if fd is None:
            return
        try:
            while self._pos < self._stop:
                n = min(READ_CHUNK, self._stop - self._pos)
                chunk = await asyncio.to_thread(os.pread, fd, n, self._pos)
                if not chunk:
                    break
                self._pos += len(chunk)
                yield chunk
        finally:
            self._fd = None
            os.close(fd)

    async def read_all(self) -> bytes:
        if self._data is not None:
            data, self._data = self._data, None
            return data
        return b"".join([chunk async for chunk in self])

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _open_object(
    path: Path, start: int, end: int | None
) -> tuple[int | None, os.stat_result | None, dict[str, str], bytes | None]:
    """Open ``path`` for reading: (fd, stat, metadata, data).

    stat is None when the path is not a regular file. When the wanted range fits in one read
    chunk it is read here and the file closed: fd is None and data holds the bytes.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not _is_regular(st):
            os.close(fd)
            return None, None, {}, None
        metadata = _read_xattrs(fd)
        stop = st.st_size if end is None else min(end, st.st_size)
        first = min(start, stop)
        if stop - first > READ_CHUNK:
            return fd, st, metadata, None
        data = os.pread(fd, stop - first, first) if stop > first else b""
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None, st, metadata, data


def _etag(st: os.stat_result) -> str:
    # Changes whenever the file is replaced or rewritten; not a content hash.
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


def _take(it: Iterator[ObjectInfo], n: int) -> list[ObjectInfo]:
    out: list[ObjectInfo] = []
    for item in it:
        out.append(item)
        if len(out) >= n:
            break
    return out


def _is_regular(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)


def _read_xattrs(fd: int) -> dict[str, str]:
    try:
        names = os.listxattr(fd)
    except OSError:
        return {}
    out = {}
    for name in names:
        if name.startswith(XATTR_PREFIX):
            out[name[len(XATTR_PREFIX) :]] = os.getxattr(fd, name).decode("utf-8", "replace")
    return out


async def _write_all(fd: int, chunk: bytes | memoryview) -> None:
    view = memoryview(chunk)
    if len(view) >= 1024 * 1024:
        await asyncio.to_thread(_write_sync, fd, view)
    else:
        _write_sync(fd, view)


def _write_sync(fd: int, view: memoryview) -> None:
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _os_error(exc: OSError, store: str, key: str, op: str) -> StoreError:
    if isinstance(exc, PermissionError):
        return AccessDenied(
            f"store {store!r}: permission denied for {op} {key!r}", store=store, key=key
        )
    if exc.errno == 36:  # ENAMETOOLONG
        return InvalidKey(
            f"store {store!r} cannot hold key {key!r}: name too long", store=store, key=key
        )
    return StoreError(
        f"store {store!r}: {op} {key!r} failed ({exc.strerror})", store=store, key=key
    )
