"""Open files of the filesystem store: uploads being written, and reads re-checked at the end.

:class:`Upload` is one object being written to its locked temp file and renamed into place;
:class:`FsReader` streams a file and, once it has read it, checks that it did not change meanwhile
(:class:`~daulat.errors.SourceChanged`), so a file rewritten during a copy is read again rather
than stored torn. Every descriptor here is closed only when no worker thread still uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar

from daulat.errors import (
    AccessDenied,
    InvalidKey,
    MetadataTooLarge,
    NameConflict,
    SourceChanged,
    StoreError,
    Transient,
)
from daulat.stores.base import ObjectInfo
from daulat.stores.fstree import close_all

XATTR_PREFIX = "user.daulat."
#: The metadata a file keeps beside it, counted as :attr:`Capabilities.max_metadata` counts
#: it. ext4 (and overlayfs over it) keeps every extended attribute of a file in one 4 KiB
#: block: measured, ``user.daulat.s3`` takes a value of at most 4,032 bytes there. Less, so
#: that a security label or overlayfs' own attributes beside it still fit (XFS and btrfs
#: keep more; a directory store on them is held to ext4's bound all the same).
XATTR_ROOM = 3900
READ_CHUNK = 1024 * 1024
T = TypeVar("T")


class Upload:
    """One object being written: its directories, its locked temp file, and the commit."""

    def __init__(
        self,
        store: str,
        key: str,
        dirs: list[int],
        final: str,
        tmp_fd: int,
        tmp_name: str,
        fd: int,
    ) -> None:
        self.store, self.key = store, key
        self.dirs, self.final = dirs, final
        self.tmp_fd, self.tmp_name, self.fd = tmp_fd, tmp_name, fd
        self.committed = False
        self.closed = False
        #: Makes the key's directories (``parents``) again, descriptors from the root, for a
        #: commit that finds them removed (see :meth:`commit`); None: the commit fails instead.
        self.remake: Callable[[Sequence[str], str], list[int]] | None = None
        self.parents: Sequence[str] = ()
        #: The key's directories and the index of the first this put made, if it made any:
        #: removed again (when still empty) if the put does not complete.
        self.made: tuple[list[str], int] | None = None

    def _set_xattr(self, name: str, value: bytes) -> None:
        try:
            os.setxattr(self.fd, name, value)
        except OSError as exc:
            # A value past the filesystem's limit (ext4 keeps about 4 KB beside a file and
            # answers ENOSPC; no filesystem takes 64 KiB: E2BIG) refuses this one object,
            # and "no space left on device" would send its reader to the wrong problem.
            if exc.errno not in (errno.ENOSPC, errno.E2BIG, errno.ERANGE):
                raise
            full = " (or the filesystem is full)" if exc.errno == errno.ENOSPC else ""
            raise MetadataTooLarge(
                f"store {self.store!r} cannot keep the description of {self.key!r}: its "
                f"extended attribute {name} ({len(value):,} bytes) is more than this "
                f"filesystem keeps beside a file{full}",
                store=self.store,
                key=self.key,
            ) from None

    def commit(self, metadata: Mapping[str, str] | None, durable: bool) -> os.stat_result:
        """Set metadata, make the content durable, rename it into place; its stat."""
        for name, value in (metadata or {}).items():
            self._set_xattr(XATTR_PREFIX + name, value.encode("utf-8"))
        if durable:
            os.fsync(self.fd)
        st = os.fstat(self.fd)
        if st.st_nlink == 0:
            raise Transient(
                f"store {self.store!r}: the temporary file for {self.key!r} was removed by a "
                "concurrent clean-up",
                store=self.store,
                key=self.key,
            )
        try:
            try:
                self._replace()
            except FileNotFoundError:
                # The key's directory was removed while we wrote: emptied by a delete, or
                # made by another put of this store that failed and removed it again (its
                # temp file, like ours, was elsewhere until the commit). The content is
                # complete in the temp file: make the directories again and commit it,
                # rather than read the whole object again.
                if self.remake is None:
                    raise
                fresh = self.remake(self.parents, self.key)
                close_all(self.dirs)
                self.dirs = fresh
                self._replace()
        except (IsADirectoryError, NotADirectoryError):
            raise NameConflict(
                f"store {self.store!r} cannot hold key {self.key!r}: a directory of other "
                "objects has that name",
                store=self.store,
                key=self.key,
            ) from None
        except FileNotFoundError:
            # Removed again at once: a delete racing with this put.
            raise Transient(
                f"store {self.store!r}: the directory of {self.key!r} disappeared during the put",
                store=self.store,
                key=self.key,
            ) from None
        self.committed = True
        return st

    def _replace(self) -> None:
        os.replace(self.tmp_name, self.final, src_dir_fd=self.tmp_fd, dst_dir_fd=self.dirs[-1])

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.committed:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp_name, dir_fd=self.tmp_fd)
            self._remove_made()
        os.close(self.fd)  # releases the lock
        os.close(self.tmp_fd)
        close_all(self.dirs)

    def _remove_made(self) -> None:
        """Remove the directories this put made, deepest first, while they are empty: a put
        that failed leaves nothing behind, not even ``a/b/`` (rmdir never removes a
        directory another put has filled meanwhile, nor follows a symlink)."""
        if self.made is None:
            return
        parents, first = self.made
        for level in range(len(parents) - 1, first - 1, -1):
            try:
                os.rmdir(parents[level], dir_fd=self.dirs[level])
            except OSError:
                break

    def __del__(self) -> None:
        # A put cancelled while its worker thread was opening the upload never saw it.
        self.close()


class Source:
    """An open file being read, and what it was when opened: to tell whether it changed."""

    def __init__(
        self, store: str, key: str, fd: int, parent: int, name: str, st: os.stat_result
    ) -> None:
        self.store, self.key = store, key
        self.fd, self.parent, self.name = fd, parent, name
        self.version = version_of(st)

    def recheck(self) -> None:
        """Raise :class:`SourceChanged` (a :class:`Transient`) when the file changed since it
        was opened, or its path now names another file."""
        changed = version_of(os.fstat(self.fd)) != self.version
        if not changed:
            try:
                now = os.stat(self.name, dir_fd=self.parent, follow_symlinks=False)
            except FileNotFoundError:
                changed = True
            else:
                changed = version_of(now) != self.version
        if changed:
            raise SourceChanged(
                f"store {self.store!r}: {self.key!r} changed while it was read; it will be "
                "read again",
                store=self.store,
                key=self.key,
            )

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.parent)


class FsReader:
    """Streaming read of ``[start, stop)`` of an open file; closes it when done.

    A small range arrives already read (``data``), with the file closed. A streamed read
    re-checks the file at its end and raises :class:`Transient` if it changed meanwhile, before
    the stream ends, so a consumer never sees a torn object complete.
    """

    def __init__(
        self,
        info: ObjectInfo,
        metadata: Mapping[str, str],
        source: Source | None,
        start: int,
        stop: int,
        data: bytes | None = None,
    ) -> None:
        self.info = info
        self.metadata = metadata
        self._source = source
        self._pos = start
        self._stop = stop
        self._data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._data is not None:
            data, self._data = self._data, None
            if data:
                yield data
            return
        source = self._source
        if source is None:
            return
        try:
            while self._pos < self._stop:
                n = min(READ_CHUNK, self._stop - self._pos)
                try:
                    chunk = await guarded(os.pread, source.fd, n, self._pos)
                except OSError as exc:
                    raise os_error(exc, source.store, source.key, "read") from None
                if not chunk:
                    break
                self._pos += len(chunk)
                yield chunk
            try:
                source.recheck()
            except OSError as exc:
                raise os_error(exc, source.store, source.key, "read") from None
        finally:
            self._source = None
            source.close()

    async def read_all(self) -> bytes:
        if self._data is not None:
            data, self._data = self._data, None
            return data
        return b"".join([chunk async for chunk in self])

    def __del__(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None


def version_of(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def etag_of(st: os.stat_result) -> str:
    # Changes whenever the file is replaced or rewritten; not a content hash.
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


def read_xattrs(fd: int) -> dict[str, str]:
    try:
        names = os.listxattr(fd)
    except OSError:
        return {}
    out = {}
    for name in names:
        if name.startswith(XATTR_PREFIX):
            out[name[len(XATTR_PREFIX) :]] = os.getxattr(fd, name).decode("utf-8", "replace")
    return out


async def guarded(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread, for calls on descriptors the caller closes afterwards.

    Cancelled, it still waits for the thread before re-raising: closing a descriptor while the
    thread uses it would let the kernel hand its number to another open file, and the thread
    would then read or write that one.
    """
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await asyncio.wait([task])
        raise


async def write_all(fd: int, chunk: bytes | memoryview) -> None:
    view = memoryview(chunk)
    if len(view) >= 1024 * 1024:
        await guarded(write_sync, fd, view)
    else:
        write_sync(fd, view)


def write_sync(fd: int, view: memoryview) -> None:
    while view:
        n = os.write(fd, view)
        view = view[n:]


def os_error(exc: OSError, store: str, key: str | None, op: str) -> StoreError:
    what = f"{op} {key!r}" if key is not None else op
    if isinstance(exc, PermissionError):
        return AccessDenied(f"store {store!r}: permission denied for {what}", store=store, key=key)
    if exc.errno == errno.EROFS:
        # A read-only mount refuses every write for as long as it stays mounted so: a
        # refusal, not a fault that a retry could mend.
        return AccessDenied(
            f"store {store!r}: {what} refused: read-only file system", store=store, key=key
        )
    if exc.errno == errno.ENAMETOOLONG and key is not None:
        return InvalidKey(
            f"store {store!r} cannot hold key {key!r}: name too long", store=store, key=key
        )
    return StoreError(f"store {store!r}: {what} failed ({exc.strerror})", store=store, key=key)
