"""Paths below a filesystem store's root, resolved with directory file descriptors.

Every operation of :class:`~daulat.stores.fs.FsStore` reaches its file through this module: the
root is opened once per operation, then each segment of the key's directory is opened relative to
the one before with ``O_DIRECTORY | O_NOFOLLOW``, and the file itself is opened, created, renamed,
stat'ed or unlinked relative to the last directory's descriptor (``openat``, ``mkdirat``,
``renameat``, ``fstatat``, ``unlinkat``). A symbolic link anywhere below the root therefore stops
the walk instead of being followed, and what was checked is what is used: swapping a directory for
a symlink after the check changes nothing, because the descriptor still names the directory that
was opened. Nothing is ever created outside the root.

The configured root path itself is trusted as the user wrote it (it may pass through symlinks, as
``/home`` often does); when it does not exist, a put creates only its own missing directories,
each opened without following a symlink.

Every name opened relative to a descriptor is one directory entry (:func:`is_entry_name`): never
``..``, ``.``, empty, or holding ``/``, so no caller, whatever key or prefix it was given, can walk
above the root.

Errors are the OS's own (``FileNotFoundError``, ``NotADirectoryError``, ``OSError`` with
``ELOOP``); the store decides what each means for its operation.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from daulat.errors import DaulatError

# A directory below the root: never through a symlink, never inherited by child processes.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# The root as configured: symlinks in the configured path are the user's choice.
ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# What open(O_NOFOLLOW) reports for a symlink (ELOOP on Linux, EMLINK on FreeBSD).
SYMLINK_ERRNOS = frozenset({errno.ELOOP, errno.EMLINK})


def is_symlink_error(exc: OSError) -> bool:
    """True when ``exc`` is an ``O_NOFOLLOW`` open refusing a symbolic link."""
    return exc.errno in SYMLINK_ERRNOS


class SymlinkRefused(DaulatError, OSError):
    """Creating the root would have gone through a symbolic link."""


def open_root(root: str | Path, *, create: bool) -> int | None:
    """A descriptor of the root directory, or None when it does not exist and ``create`` is false.

    Raises ``NotADirectoryError`` when the root is not a directory, :class:`SymlinkRefused` when
    creating it meets a symlink, and the OS's errors otherwise.
    """
    try:
        return os.open(root, ROOT_FLAGS)
    except FileNotFoundError:
        if not create:
            return None
    return _create_root(Path(os.path.abspath(root)))


def _create_root(root: Path) -> int:
    # The deepest ancestor that exists is trusted like the root's path; below it every missing
    # directory is made and opened relative to its parent, never through a symlink.
    missing: list[str] = []
    base = root
    while True:
        try:
            fd = os.open(base, ROOT_FLAGS)
            break
        except FileNotFoundError:
            if base.parent == base:
                raise
            missing.append(base.name)
            base = base.parent
    try:
        for name in reversed(missing):
            try:
                child = _enter(fd, name, create=True)
            except OSError as exc:
                if is_symlink_error(exc):
                    raise SymlinkRefused(exc.errno, f"{name!r} is a symbolic link") from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _enter(fd: int, name: str, *, create: bool, made: list[str] | None = None) -> int:
    """Open directory ``name`` inside ``fd``, making it first if ``create``.

    A symlink raises ``OSError(ELOOP)`` and anything else that is not a directory
    ``NotADirectoryError``.
    """
    try:
        return _open_dir(fd, name, create=create, made=made)
    except NotADirectoryError:
        # Linux answers ENOTDIR for a symlink opened with O_DIRECTORY | O_NOFOLLOW: tell the two
        # apart (only on this error path), since a symlink is refused and a file is a conflict.
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            raise NotADirectoryError(errno.ENOTDIR, f"{name!r} is not a directory") from None
        if stat.S_ISLNK(st.st_mode):
            raise OSError(errno.ELOOP, f"{name!r} is a symbolic link") from None
        raise


def _open_dir(fd: int, name: str, *, create: bool, made: list[str] | None = None) -> int:
    """``made``, if given, hears of ``name`` when this call made the directory."""
    for _attempt in range(3):
        try:
            return os.open(name, DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
        # Made meanwhile by someone else, or a symlink: the open decides.
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o777, dir_fd=fd)
            if made is not None:
                made.append(name)
    # Removed again each time between mkdir and open (a concurrent prune): give up.
    return os.open(name, DIR_FLAGS, dir_fd=fd)


def is_entry_name(name: str) -> bool:
    """True when ``name`` is one entry of a directory: not empty, ``.`` or ``..``, and holding
    neither ``/`` nor NUL. Only such names are ever opened relative to a descriptor here, so
    that no name climbs out of (or past) the directory it is opened in."""
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


def walk(
    root_fd: int, segments: Sequence[str], *, create: bool, made: list[int] | None = None
) -> list[int]:
    """Descriptors of the directories from the root down to ``ROOT/segments...``.

    The list starts with ``root_fd`` and holds one descriptor per segment, each opened relative
    to the one before without following symlinks; with ``create`` missing directories are made.
    The caller closes every descriptor (:func:`close_all`), including ``root_fd``. On error the
    descriptors opened here are closed and ``root_fd`` is left to the caller. ``made``, if
    given, hears of the index of each segment whose directory this walk made.

    A segment that is not a single entry name (:func:`is_entry_name`: ``..``, ``.``, empty,
    holding ``/`` or NUL) raises ``OSError(EINVAL)`` before anything is opened: whatever a
    caller passes, the walk never leaves the root.
    """
    for name in segments:
        if not is_entry_name(name):
            raise OSError(errno.EINVAL, f"{name!r} is not a name below the root")
    fds = [root_fd]
    try:
        for index, name in enumerate(segments):
            try:
                # The common case first: the directory is there. _enter makes and classifies.
                fds.append(os.open(name, DIR_FLAGS, dir_fd=fds[-1]))
            except OSError:
                names: list[str] = []
                fds.append(_enter(fds[-1], name, create=create, made=names))
                if names and made is not None:
                    made.append(index)
    except BaseException:
        close_all(fds[1:])
        raise
    return fds


def close_all(fds: Sequence[int]) -> None:
    for fd in reversed(fds):
        os.close(fd)
