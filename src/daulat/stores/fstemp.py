"""Temporary files of the filesystem store: named as daulat's, locked while written, cleaned up.

An upload is written to ``ROOT/.daulat-tmp/<random>.<pid>.daulat-part`` and renamed into place.
The name says whose file it is (daulat's, and which process made it); the proof that nobody is
still writing it is an advisory lock: the writer holds ``flock(LOCK_EX)`` on the file from the
moment it creates it until it is renamed or removed, and the kernel drops the lock when the
writer exits, however it dies (``kill -9`` included). The pid in the name is for people; it is
not trusted (pids are reused, and another machine sharing the directory has its own).

:func:`cleanup` removes daulat's temp files whose lock it can take, i.e. that no live process is
writing, and then ``.daulat-tmp/`` itself when it is empty. A put that made the key's
directories (``a/b/`` for ``a/b/c``) records them on its temp file (:func:`record_made`: their
names and inode numbers, in an extended attribute), so that when its writer was killed the
cleanup also removes them while they are empty and still the very directories it made: never
a directory someone else made or filled since. (A writer killed between making them and
recording them, an instant, leaves them; so does a filesystem without extended attributes.) Files named by daulat versions before
the lock (``<32 hex>.part``) carry no lock, so they are removed only once they have not been
written for :data:`LEGACY_GRACE` seconds. Anything else in the directory is left alone.

A cleanup that takes the lock of a file an instant after its writer created it, before the writer
locked it, removes it; the writer finds its file unlinked when it finishes (``st_nlink == 0``) and
reports a transient failure, so the object is written again, never lost.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import stat
import time

from daulat.errors import DaulatError
from daulat.stores.fstree import DIR_FLAGS, close_all, is_symlink_error, walk

TMP_DIR = ".daulat-tmp"
SUFFIX = ".daulat-part"
LEGACY_GRACE = 600.0
#: The extended attribute of a temp file naming the key directories its put made.
MADE_XATTR = "user.daulat.made"
_OURS = re.compile(r"[0-9a-f]{16}\.[0-9]+\.daulat-part")
_LEGACY = re.compile(r"[0-9a-f]{32}\.part")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Read-write: NFS emulates flock with POSIX locks, whose exclusive kind needs a writable fd.
_INSPECT = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class TempDirUnusable(DaulatError, OSError):
    """``.daulat-tmp`` exists but is not a directory (a file, or a symlink that is not followed)."""


def temp_name() -> str:
    return f"{os.urandom(8).hex()}.{os.getpid()}{SUFFIX}"


def is_ours(name: str) -> bool:
    """Whether ``name`` (inside ``.daulat-tmp``) is a temp file daulat made."""
    return _OURS.fullmatch(name) is not None or _LEGACY.fullmatch(name) is not None


def create(root_fd: int) -> tuple[int, str, int]:
    """Create and lock a new temp file: (descriptor of ``.daulat-tmp``, file name, file fd).

    The caller writes the file, renames it out of the directory or unlinks it, and closes both
    descriptors (closing the file's releases the lock).
    """
    for _attempt in range(5):
        try:
            tmp_fd = os.open(TMP_DIR, DIR_FLAGS, dir_fd=root_fd)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):
                os.mkdir(TMP_DIR, 0o777, dir_fd=root_fd)
            continue
        except OSError as exc:
            if is_symlink_error(exc) or exc.errno == errno.ENOTDIR:
                raise TempDirUnusable(exc.errno, f"{TMP_DIR!r} is not a directory") from None
            raise
        name = temp_name()
        try:
            fd = os.open(name, _CREATE, 0o644, dir_fd=tmp_fd)
        except FileNotFoundError:
            # .daulat-tmp was removed (emptied and pruned by another run) between the two opens.
            os.close(tmp_fd)
            continue
        except BaseException:
            os.close(tmp_fd)
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # A cleanup took it in the instant before we did, and is removing it.
            os.close(fd)
            os.close(tmp_fd)
            continue
        except OSError:
            pass  # no locks on this filesystem: cleanup cannot take one either, and leaves it
        except BaseException:
            discard(tmp_fd, name, fd)
            raise
        return tmp_fd, name, fd
    raise FileNotFoundError(2, f"{TMP_DIR!r} kept disappearing")


def discard(tmp_fd: int, name: str, fd: int | None) -> None:
    """Remove an unfinished temp file and close its descriptors."""
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=tmp_fd)
    if fd is not None:
        os.close(fd)
    os.close(tmp_fd)


def remove_dir_if_empty(root_fd: int) -> None:
    """Remove ``.daulat-tmp`` when nothing is in it (rmdir refuses otherwise)."""
    with contextlib.suppress(OSError):
        os.rmdir(TMP_DIR, dir_fd=root_fd)


def cleanup(
    root_fd: int, *, older_than: float | None = None, dry_run: bool = False
) -> tuple[int, int]:
    """Remove daulat's temp files that nobody is writing; (files, bytes) removed.

    ``older_than`` (seconds) spares files modified more recently than that. ``dry_run``: count
    what would be removed (the same checks, writers' locks included) and remove nothing.
    """
    try:
        tmp_fd = os.open(TMP_DIR, DIR_FLAGS, dir_fd=root_fd)
    except FileNotFoundError:
        return 0, 0
    except OSError as exc:
        if is_symlink_error(exc) or exc.errno == errno.ENOTDIR:
            return 0, 0  # not ours to touch
        raise
    files = size = 0
    now = time.time()
    try:
        with os.scandir(tmp_fd) as entries:
            names = [
                e.name for e in entries if is_ours(e.name) and e.is_file(follow_symlinks=False)
            ]
        for name in names:
            removed = _remove_if_abandoned(root_fd, tmp_fd, name, now, older_than, dry_run)
            if removed is not None:
                files += 1
                size += removed
    finally:
        os.close(tmp_fd)
    if not dry_run:
        remove_dir_if_empty(root_fd)
    return files, size


def _remove_if_abandoned(
    root_fd: int,
    tmp_fd: int,
    name: str,
    now: float,
    older_than: float | None,
    dry_run: bool = False,
) -> int | None:
    """Unlink ``name`` if no writer holds its lock (``dry_run``: only say so); its size, or
    None when it was left."""
    try:
        fd = os.open(name, _INSPECT, dir_fd=tmp_fd)
    except OSError:
        return None  # gone meanwhile (renamed into place), or not a file we may open
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        age = now - st.st_mtime
        if older_than is not None and age < older_than:
            return None
        if _LEGACY.fullmatch(name) and age < LEGACY_GRACE:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # a live writer holds it
        except OSError:
            return None  # no locks on this filesystem: nothing proves the writer is gone
        # The name must still be this file: a finished upload is renamed away, never reused.
        try:
            now_st = os.stat(name, dir_fd=tmp_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if (now_st.st_ino, now_st.st_dev) != (st.st_ino, st.st_dev):
            return None
        if not dry_run:
            made = _made(fd)
            os.unlink(name, dir_fd=tmp_fd)
            if made is not None:
                _remove_made(root_fd, *made)
        return st.st_size
    finally:
        os.close(fd)


def record_made(fd: int, parents: list[str], first: int, dirs: list[int]) -> None:
    """Record on the temp file ``fd`` that its put made the directories ``parents[first:]``
    (``dirs``: the descriptors of the root and of each of ``parents``), for :func:`cleanup`.
    Best effort: without the record, a killed put's directories are left, never wrongly
    removed."""
    with contextlib.suppress(OSError):
        inodes = []
        for level in range(first, len(parents)):
            st = os.fstat(dirs[level + 1])
            inodes.append([st.st_ino, st.st_dev])
        record = json.dumps({"parents": parents, "first": first, "inodes": inodes})
        os.setxattr(fd, MADE_XATTR, record.encode("ascii"))  # json.dumps writes ASCII


def _made(fd: int) -> tuple[list[str], int, list[tuple[int, int]]] | None:
    try:
        record = json.loads(os.getxattr(fd, MADE_XATTR).decode("ascii"))
        parents = [str(p) for p in record["parents"]]
        first = int(record["first"])
        inodes = [(int(i), int(d)) for i, d in record["inodes"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not 0 <= first < len(parents) or len(inodes) != len(parents) - first:
        return None
    return parents, first, inodes


def _remove_made(
    root_fd: int, parents: list[str], first: int, inodes: list[tuple[int, int]]
) -> None:
    """Remove, deepest first, the directories a killed put made while each is empty and is
    the directory it made (same inode); stop at the first that is not."""
    try:
        fds = walk(root_fd, parents, create=False)
    except OSError:
        return  # gone, or no longer a directory below the root
    try:
        for level in range(len(parents) - 1, first - 1, -1):
            st = os.fstat(fds[level + 1])
            if (st.st_ino, st.st_dev) != inodes[level - first]:
                break
            try:
                os.rmdir(parents[level], dir_fd=fds[level])
            except OSError:
                break
    finally:
        close_all(fds[1:])
