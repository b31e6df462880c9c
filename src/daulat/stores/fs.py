"""A Store over a local directory.

Written directly on the OS rather than over obstore's ``LocalStore``, which refuses legal keys
ending in ``#<digits>`` (its staging-file pattern) and cannot keep user metadata; an exit tool must
hold every key a cloud store can hold, where the filesystem allows it.

Layout: the object ``a/b.txt`` is the file ``ROOT/a/b.txt``. Uploads are written to
``ROOT/.daulat-tmp/`` and renamed into place after ``fsync``, so a reader never sees a partial
object; temp files are named, locked and cleaned up as :mod:`daulat.stores.fstemp` describes, and
listings never report them. User metadata is kept in ``user.daulat.*`` extended attributes, set
before the rename.

Confinement. Keys are data from possibly hostile sources, and the tree may hold symlinks planted
by anyone who can write to it. Every operation reaches its file by directory descriptors opened
without following symlinks, one directory entry at a time (:mod:`daulat.stores.fstree`, which
never opens ``..``, ``.`` or an empty name), so no check can be raced and nothing outside the
root is read, written, created, removed or listed, whatever key or prefix the store is given:
``list("../etc/")`` raises :class:`InvalidKey`, since no key below the root can start with it
(:mod:`daulat.stores.keys`).

Reading is not writing. A POSIX name may hold anything but ``/`` and NUL, and a source directory
holds what its owners put there: ``list`` reports every regular file, and ``get``, ``head`` and
``delete`` accept every key made of such names (a newline, an escape, a backslash, a bidi
override), so that a copy can take them to a store that holds them. ``put`` refuses more
(:func:`fs_key_problem`): besides the portable-key rules, backslashes, segments over 255 bytes
and the reserved ``.daulat-tmp`` prefix, so that what this store writes can be read back on any
system. A key no file could have (an empty, ``.`` or ``..`` segment, a NUL, text that is not
UTF-8) raises :class:`InvalidKey` everywhere, as does a listing prefix no such key starts with.

Symlinks below the root are not objects, and are never followed:

- ``list`` skips them (links to files and to directories alike);
- ``get`` and ``head`` of a key that is a symlink, or whose path passes through one, raise
  :class:`NotFound`;
- ``put`` of a key whose path passes through a symlink raises :class:`InvalidKey`; a put whose
  final name is a symlink replaces the link itself (``rename`` never follows it);
- ``delete`` leaves symlinks, directories and anything else that is not a regular file alone
  (deleting a key that is not an object succeeds, as for a missing key).

The root path itself is taken as configured, symlinks in it included. A root that does not exist
makes ``list`` raise :class:`MissingRoot` (a missing source is an error, never an empty store);
the first ``put`` creates it, making only the root's own missing directories, none through a
symlink.

Open files (uploads in progress, streamed reads) are in :mod:`daulat.stores.fsio`. Reads re-check
the file once it has been read: when its size, mtime, ctime or inode changed (through the open
descriptor, or at its path) the read raises :class:`SourceChanged`, a :class:`Transient`
("changed while it was read"), so a file rewritten during a copy is read again rather than
stored torn.

Why this module is long: it is one adapter, :class:`FsStore`, and each of its operations has to
keep the confinement and reading rules above; the parts that stand alone (descriptor walking in
:mod:`~daulat.stores.fstree`, temp files in :mod:`~daulat.stores.fstemp`, open files in
:mod:`~daulat.stores.fsio`) are already elsewhere. Splitting the class further would spread one
set of invariants over several files.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import UTC, datetime
from pathlib import Path

from daulat.errors import (
    AccessDenied,
    InvalidKey,
    MissingRoot,
    NameConflict,
    NotFound,
    StoreError,
    Transient,
)
from daulat.stores import fstemp
from daulat.stores.base import (
    Capabilities,
    ObjectInfo,
    OnUpload,
    PutResult,
    portable_key_problem,
)
from daulat.stores.fsio import (
    READ_CHUNK,
    XATTR_PREFIX,
    XATTR_ROOM,
    FsReader,
    Source,
    Upload,
    etag_of,
    guarded,
    os_error,
    read_xattrs,
    write_all,
    write_sync,
)
from daulat.stores.fstemp import TMP_DIR
from daulat.stores.fstree import (
    DIR_FLAGS,
    SymlinkRefused,
    close_all,
    is_entry_name,
    is_symlink_error,
    open_root,
    walk,
)
from daulat.stores.hashing import StreamHasher, check_digest
from daulat.stores.keys import check_key, check_prefix

MAX_SEGMENT_BYTES = 255
LIST_BATCH = 1000
# O_NONBLOCK: opening a FIFO planted under a key must not hang the read; it changes nothing
# for regular files.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# Named here: inside FsStore, ``list`` is the listing method.
Fds = list[int]  # directory descriptors, root first
Segments = list[str]  # a key split at '/'
# The entries of one directory still to visit, the next one last: (sort key, key, entry).
Pending = list[tuple[bytes, str, os.DirEntry[str]]]
_Stack = list[tuple[int, Pending]]

__all__ = [
    "READ_CHUNK",
    "TMP_DIR",
    "XATTR_PREFIX",
    "FsReader",
    "FsStore",
    "fs_key_problem",
    "fs_name_problem",
]


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


def fs_name_problem(key: str) -> str | None:
    """Why no file below the root can have ``key`` (the rule for reading and deleting), or
    None. Looser than :func:`fs_key_problem`: control characters and backslashes are legal
    in POSIX names."""
    if not key:
        return "empty key"
    if "\0" in key:
        return "contains NUL"
    if not (key.isascii() or _is_utf8(key)):
        # Listing refuses such names (see _not_utf8): no object here can have one.
        return "not valid UTF-8"
    for segment in key.split("/"):
        if not is_entry_name(segment):
            if segment:
                return f"'{segment}' path segment"
            return "empty path segment (leading, trailing or doubled '/')"
    if key == TMP_DIR or key.startswith(TMP_DIR + "/"):
        return f"'{TMP_DIR}' is reserved for uploads in progress"
    return None


class FsStore:
    """Store over a directory tree; see the module docstring."""

    def __init__(self, name: str, root: Path, *, durable: bool = True) -> None:
        self._name = name
        self.root = root
        self._root_path = os.fspath(root)  # opened on every operation: convert once
        self._durable = durable
        self._wrote = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            user_metadata=True,
            server_side_copy=False,
            metadata_at_commit=True,
            max_metadata=XATTR_ROOM,
        )

    def key_problem(self, key: str) -> str | None:
        """Why a put of ``key`` would be refused (:class:`~daulat.stores.keys.KeyRules`)."""
        return fs_key_problem(key)

    def name_conflict(self, key: str) -> str | None:
        """Which object here ``key`` cannot be held beside (a file where it needs a directory,
        or a directory of other objects where it needs a file), or None. One ``lstat`` per
        segment, stopping at the first that is absent: never a listing. Blocking."""
        path = self._root_path
        segments = key.split("/")
        for i, segment in enumerate(segments):
            path = os.path.join(path, segment)
            try:
                st = os.lstat(path)
            except OSError:
                return None  # absent (or unreadable: the put itself will say)
            name = "/".join(segments[: i + 1])
            last = i == len(segments) - 1
            if not last and stat.S_ISREG(st.st_mode):
                return f"{name!r} is an object here, so it cannot also be a directory"
            if last and stat.S_ISDIR(st.st_mode):
                return f"{name!r} is a directory of other objects here"
        return None

    # ------------------------------------------------------------------ paths

    def _segments(self, key: str, *, writing: bool = False) -> Segments:
        check_key(fs_key_problem if writing else fs_name_problem, key, store=self._name)
        return key.split("/")

    def _open_root(self, *, create: bool) -> int | None:
        try:
            return open_root(self._root_path, create=create)
        except SymlinkRefused as exc:
            raise StoreError(
                f"store {self._name!r}: refused to create {self.root}: {exc.strerror}",
                store=self._name,
            ) from None
        except NotADirectoryError:
            raise StoreError(
                f"store {self._name!r}: {self.root} is not a directory", store=self._name
            ) from None
        except OSError as exc:
            raise os_error(exc, self._name, None, f"open {self.root}") from None

    def _missing_root(self) -> MissingRoot:
        return MissingRoot(
            f"store {self._name!r}: directory {self.root} does not exist", store=self._name
        )

    def _dirs(
        self, segments: Sequence[str], key: str, *, create: bool, made: list[int] | None = None
    ) -> Fds | None:
        """Descriptors from the root to the directory of ``key``; None when it does not exist.

        Reading (``create`` false), a missing directory, a file or a symlink in the way all mean
        the object is not there. Writing, they mean the key cannot be held (:class:`InvalidKey`).
        """
        root = self._open_root(create=create)
        if root is None:
            return None
        try:
            return walk(root, segments, create=create, made=made)
        except OSError as exc:
            os.close(root)
            if not create and (
                isinstance(exc, (FileNotFoundError, NotADirectoryError)) or is_symlink_error(exc)
            ):
                return None
            if isinstance(exc, NotADirectoryError):
                raise NameConflict(
                    f"store {self._name!r} cannot hold key {key!r}: a leading part of it is "
                    "already an object (filesystems cannot hold both 'a' and 'a/b')",
                    store=self._name,
                    key=key,
                ) from None
            if is_symlink_error(exc):
                raise self._invalid(
                    key, "a leading part of it is a symbolic link, which this store never follows"
                ) from None
            if isinstance(exc, FileNotFoundError):
                raise Transient(
                    f"store {self._name!r}: a directory for {key!r} kept disappearing",
                    store=self._name,
                    key=key,
                ) from None
            raise os_error(exc, self._name, key, "put" if create else "read") from None
        except BaseException:
            os.close(root)
            raise

    def _invalid(self, key: str, reason: str) -> InvalidKey:
        return InvalidKey(
            f"store {self._name!r} cannot hold key {key!r}: {reason}", store=self._name, key=key
        )

    def _not_found(self, key: str, why: str = "does not exist") -> NotFound:
        return NotFound(f"store {self._name!r}: {key!r} {why}", store=self._name, key=key)

    def _info(self, key: str, st: os.stat_result) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=st.st_size,
            modified=datetime.fromtimestamp(st.st_mtime, UTC),
            etag=etag_of(st),
            etag_scheme="local",
        )

    # ------------------------------------------------------------------ list

    async def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        check_prefix(fs_name_problem, prefix, store=self._name)
        directory = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        walker = self._walk(directory, prefix)
        try:
            while True:
                batch = await asyncio.to_thread(_take, walker, LIST_BATCH)
                if not batch:
                    return
                yield batch
        finally:
            # Still running in its thread when the listing was cancelled: its finaliser closes
            # the descriptors once that thread lets go.
            with contextlib.suppress(ValueError):
                walker.close()

    def _walk(self, directory: str, prefix: str) -> Generator[ObjectInfo, None, None]:
        root = self._open_root(create=False)
        if root is None:
            raise self._missing_root()
        if directory == TMP_DIR or directory.startswith(TMP_DIR + "/"):
            os.close(root)
            return  # uploads in progress are never objects, whatever the prefix
        segments = directory.split("/") if directory else []
        if not all(is_entry_name(s) for s in segments):
            # "../etc/", "/etc/", "a//b/": no key below the root starts with it.
            os.close(root)
            return
        try:
            fds = walk(root, segments, create=False)
        except OSError as exc:
            os.close(root)
            if isinstance(exc, (FileNotFoundError, NotADirectoryError)) or is_symlink_error(exc):
                return  # nothing can be under that prefix
            raise os_error(exc, self._name, None, f"list {prefix!r}") from None
        close_all(fds[:-1])
        # Depth-first with one open descriptor per level: (directory fd, its entries still to
        # visit). Bounded by depth, not by the number of directories. Each directory's entries
        # are taken in the order of their keys' bytes, a subdirectory as its name and "/", so
        # the keys come out sorted as S3 and Azure list them (not in the filesystem's own
        # order, which differs between machines and would make two listings incomparable).
        stack: _Stack = []
        # Files whose names are not UTF-8: once one is found nothing more is yielded, and the
        # walk goes on only to name them all in one error (one rename per run would cost a
        # whole listing each).
        bad: list[str] = []  # the first NAMED_NOT_UTF8 of them
        bad_count = 0
        try:
            # On the stack before it is read: closed by the finally if reading fails.
            stack.append((fds[-1], []))
            stack[-1] = (fds[-1], self._scan(fds[-1], directory, prefix))
            while stack:
                fd, todo = stack[-1]
                if not todo:
                    os.close(fd)
                    stack.pop()
                    continue
                _, key, entry = todo.pop()
                if entry.is_dir(follow_symlinks=False):
                    try:
                        child = os.open(entry.name, DIR_FLAGS, dir_fd=fd)
                    except (FileNotFoundError, NotADirectoryError):
                        continue  # removed, or swapped for a file, since it was read
                    except OSError as exc:
                        if is_symlink_error(exc):
                            continue  # swapped for a symlink since it was read: not followed
                        raise self._list_error(exc, key) from None
                    # On the stack before it is read: closed by the finally if reading fails.
                    stack.append((child, []))
                    stack[-1] = (child, self._scan(child, key, prefix))
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if _is_regular(st):
                    if not (key.isascii() or _is_utf8(key)):
                        bad_count += 1
                        if len(bad) < NAMED_NOT_UTF8:
                            bad.append(key)
                    elif not bad_count:
                        yield self._info(key, st)
        finally:
            close_all([fd for fd, _ in stack])
        if bad_count:
            raise self._not_utf8(bad, bad_count)

    def _scan(self, fd: int, key_prefix: str, prefix: str) -> Pending:
        """The entries of directory ``fd`` worth visiting (files under ``prefix``, directories
        that may hold some), the first in key order last."""
        try:
            with os.scandir(fd) as it:
                entries = list(it)
        except OSError as exc:
            raise self._list_error(exc, key_prefix) from None
        found: Pending = []
        for entry in entries:
            key = f"{key_prefix}/{entry.name}" if key_prefix else entry.name
            if not key_prefix and entry.name == TMP_DIR:
                continue
            name = os.fsencode(entry.name)
            if entry.is_dir(follow_symlinks=False):
                if key.startswith(prefix) or prefix.startswith(key + "/"):
                    found.append((name + b"/", key, entry))
            elif entry.is_file(follow_symlinks=False) and key.startswith(prefix):
                found.append((name, key, entry))
        found.sort(key=lambda e: e[0], reverse=True)
        return found

    def _not_utf8(self, keys: Sequence[str], count: int) -> StoreError:
        # Keys are UTF-8 text everywhere (journal, manifests, every provider): a file whose
        # name is other bytes cannot be carried, and leaving it out silently would lose it.
        shown = ", ".join(repr(os.fsencode(k)) for k in keys)
        if count == 1:
            what = f"the file {shown} has a name that is not UTF-8"
            fix = "rename it (or move it out of the store)"
        else:
            more = f" and {count - len(keys)} more" if count > len(keys) else ""
            what = f"{count} files have names that are not UTF-8: {shown}{more}"
            fix = (
                "rename them (e.g. `convmv -r -f latin1 -t utf8 --notest DIR`) or move them "
                "out of the store"
            )
        return StoreError(
            f"store {self._name!r}: {what}, which no object key can hold; {fix} and run again",
            store=self._name,
        )

    def _list_error(self, exc: OSError, where: str) -> StoreError:
        if isinstance(exc, PermissionError):
            return AccessDenied(
                f"store {self._name!r}: permission denied listing {where or '/'}", store=self._name
            )
        return os_error(exc, self._name, None, f"list {where or '/'}")

    # ------------------------------------------------------------------ read

    async def head(self, key: str) -> ObjectInfo:
        segments = self._segments(key)
        return self._info(key, await asyncio.to_thread(self._stat, segments, key))

    def _stat(self, segments: Segments, key: str) -> os.stat_result:
        dirs = self._dirs(segments[:-1], key, create=False)
        if dirs is None:
            raise self._not_found(key)
        try:
            st = os.stat(segments[-1], dir_fd=dirs[-1], follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            raise self._not_found(key) from None
        except OSError as exc:
            raise os_error(exc, self._name, key, "head") from None
        finally:
            close_all(dirs)
        if not _is_regular(st):
            raise self._not_found(key, "is not an object")
        return st

    async def get(self, key: str, *, start: int = 0, end: int | None = None) -> FsReader:
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"invalid range [{start}, {end})")
        segments = self._segments(key)
        # One trip to a worker thread opens, checks and (for a small range) reads the file: a
        # thread hand-off costs more CPU than reading a small cached file.
        return await asyncio.to_thread(self._open_object, segments, key, start, end)

    def _open_object(self, segments: Segments, key: str, start: int, end: int | None) -> FsReader:
        """Open ``key`` for reading; a range that fits in one read chunk is read (and re-checked)
        here and the file closed."""
        dirs = self._dirs(segments[:-1], key, create=False)
        if dirs is None:
            raise self._not_found(key)
        parent = dirs.pop()
        close_all(dirs)
        name = segments[-1]
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=parent)
        except BaseException as exc:
            os.close(parent)
            if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
                raise self._not_found(key) from None
            if isinstance(exc, OSError):
                if is_symlink_error(exc) or exc.errno in (errno.ENXIO, errno.EISDIR):
                    raise self._not_found(key, "is not an object") from None
                raise os_error(exc, self._name, key, "get") from None
            raise
        reader: FsReader | None = None
        try:
            st = os.fstat(fd)
            if not _is_regular(st):
                raise self._not_found(key, "is not an object")
            metadata = read_xattrs(fd)
            stop = st.st_size if end is None else min(end, st.st_size)
            first = min(start, stop)
            source = Source(self._name, key, fd, parent, name, st)
            if stop - first > READ_CHUNK:
                reader = FsReader(self._info(key, st), metadata, source, first, stop)
                return reader
            data = os.pread(fd, stop - first, first) if stop > first else b""
            source.recheck()
            return FsReader(self._info(key, st), metadata, None, first, stop, data)
        except OSError as exc:
            raise os_error(exc, self._name, key, "get") from None
        finally:
            if reader is None:
                os.close(fd)
                os.close(parent)

    # ------------------------------------------------------------------ write

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
        segments = self._segments(key, writing=True)
        try:
            if isinstance(data, (bytes, bytearray, memoryview)):
                # A whole body is written in one trip to a worker thread: for small objects
                # the thread hand-offs of a step-by-step write cost more than the write.
                body = bytes(data)
                digest, st = await asyncio.to_thread(
                    self._put_bytes, segments, key, body, sha256, metadata, prehashed
                )
            else:
                digest, st = await self._put_stream(segments, key, data, sha256, metadata)
        except OSError as exc:
            raise os_error(exc, self._name, key, "put") from None
        # The rename keeps inode and mtime: this is the tag that head and list will report, so
        # the engine needs no head per object to learn it.
        return PutResult(key=key, size=st.st_size, sha256=digest, etag=etag_of(st))

    def _put_bytes(
        self,
        segments: Segments,
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
        upload = self._begin(segments, key)
        try:
            write_sync(upload.fd, memoryview(body))
            return digest, upload.commit(metadata, self._durable)
        finally:
            upload.close()

    async def _put_stream(
        self,
        segments: Segments,
        key: str,
        data: AsyncIterable[bytes],
        sha256: str | None,
        metadata: Mapping[str, str] | None,
    ) -> tuple[str, os.stat_result]:
        hasher = StreamHasher()
        upload = await asyncio.to_thread(self._begin, segments, key)
        try:
            async for chunk in data:
                await hasher.update(chunk)
                await write_all(upload.fd, chunk)
            check_digest(hasher, sha256, store=self._name, key=key)
            st = await guarded(upload.commit, metadata, self._durable)
        finally:
            upload.close()
        return hasher.hexdigest(), st

    def _begin(self, segments: Segments, key: str) -> Upload:
        """Make the key's directories and a locked temp file for it."""
        made: list[int] = []
        dirs = self._dirs(segments[:-1], key, create=True, made=made)
        assert dirs is not None  # created
        self._wrote = True
        try:
            tmp_fd, tmp_name, fd = fstemp.create(dirs[0])
        except fstemp.TempDirUnusable:
            close_all(dirs)
            raise StoreError(
                f"store {self._name!r}: {self.root / TMP_DIR} is not a directory (a file or a "
                "symbolic link); remove it so that uploads can be staged",
                store=self._name,
                key=key,
            ) from None
        except BaseException:
            close_all(dirs)
            raise
        upload = Upload(self._name, key, dirs, segments[-1], tmp_fd, tmp_name, fd)
        upload.remake, upload.parents = self._remake, segments[:-1]
        if made:
            upload.made = (list(segments[:-1]), made[0])
            fstemp.record_made(fd, list(segments[:-1]), made[0], dirs)  # for a killed put
        return upload

    def _remake(self, segments: Sequence[str], key: str) -> Fds:
        """The key's directories, made again for a commit that found them removed."""
        dirs = self._dirs(segments, key, create=True)
        assert dirs is not None  # created
        return dirs

    # ------------------------------------------------------------------ delete

    async def delete(self, key: str) -> None:
        segments = self._segments(key)
        await asyncio.to_thread(self._delete, segments, key)

    def _delete(self, segments: Segments, key: str) -> None:
        dirs = self._dirs(segments[:-1], key, create=False)
        if dirs is None:
            return
        name = segments[-1]
        try:
            try:
                st = os.stat(name, dir_fd=dirs[-1], follow_symlinks=False)
                if not _is_regular(st):
                    return  # a symlink or a directory is not an object: left alone
                os.unlink(name, dir_fd=dirs[-1])
            except (FileNotFoundError, NotADirectoryError):
                return
            except OSError as exc:
                raise os_error(exc, self._name, key, "delete") from None
            # Remove directories the delete emptied, so listings and `ls` agree. rmdir removes
            # only empty directories and never follows a symlink.
            for level in range(len(dirs) - 1, 0, -1):
                try:
                    os.rmdir(segments[level - 1], dir_fd=dirs[level - 1])
                except OSError:
                    break
        finally:
            close_all(dirs)

    # ------------------------------------------------------------------ temp files

    async def cleanup_temp(
        self, *, older_than: float | None = None, dry_run: bool = False
    ) -> tuple[int, int]:
        """Remove daulat's temp files that no live process is writing; (files, bytes) removed
        (``dry_run``: that would be removed; nothing is).

        Leftovers of killed runs are found by their names and removed when their writer's lock
        is gone (see :mod:`daulat.stores.fstemp`); ``older_than`` (seconds) also spares files
        written more recently. ``.daulat-tmp`` is removed when it is left empty.
        """
        return await asyncio.to_thread(self._cleanup_temp, older_than, dry_run)

    def _cleanup_temp(self, older_than: float | None, dry_run: bool) -> tuple[int, int]:
        root = self._open_root(create=False)
        if root is None:
            return 0, 0
        try:
            return fstemp.cleanup(root, older_than=older_than, dry_run=dry_run)
        except OSError as exc:
            raise os_error(exc, self._name, None, f"clean {TMP_DIR}") from None
        finally:
            os.close(root)

    async def close(self) -> None:
        if self._wrote:
            # Leave no empty .daulat-tmp behind; a concurrent writer that loses it remakes it.
            self._wrote = False
            await asyncio.to_thread(self._remove_empty_temp_dir)

    def _remove_empty_temp_dir(self) -> None:
        with contextlib.suppress(StoreError, OSError):
            root = self._open_root(create=False)
            if root is not None:
                try:
                    fstemp.remove_dir_if_empty(root)
                finally:
                    os.close(root)


#: The names that are not UTF-8 an error names (the rest are counted).
NAMED_NOT_UTF8 = 20


def _take(it: Iterator[ObjectInfo], n: int) -> list[ObjectInfo]:
    out: list[ObjectInfo] = []
    for item in it:
        out.append(item)
        if len(out) >= n:
            break
    return out


def _is_utf8(name: str) -> bool:
    # os.scandir decodes other bytes as lone surrogates, which UTF-8 cannot encode.
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_regular(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)
