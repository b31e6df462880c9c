"""daulat's private local state: the ``.daulat/`` directory and every file in it.

The transfer journal, the manifest database, drill records, name keys, the audit log and
SQLite's ``-wal``/``-shm`` files say what a user holds, where, and under which names; name keys
are secrets. So the directory is created ``0700`` and every file in it ``0600``, whatever the
umask, and state left with looser modes (by an older daulat, a copy, an archive tool) is
tightened the first time a process touches it, with a one-line notice on the ``daulat.state``
logger (which Python prints to stderr when nobody configured logging).

Every opener goes through this module: :func:`private_dir` for the directory, :func:`private_file`
for a file it is about to create or open, :func:`connect` / :func:`connect_readonly` for SQLite
databases. The database openers also make sure the file *is* the daulat database it should be:
a damaged file, or another program's SQLite database at that path, raises :class:`StateError`
naming the file, instead of a traceback half-way through a run (or, worse, daulat writing its
tables into someone else's database).
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from daulat.errors import StateError

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "DatabaseKind",
    "StateError",
    "check_database",
    "claim",
    "connect",
    "connect_readonly",
    "has_tables",
    "hold_lock",
    "is_locked",
    "private_dir",
    "private_file",
]

DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600
_LOOSE: Final = 0o077  # any permission for group or others

log = logging.getLogger("daulat.state")


@dataclass(frozen=True)
class DatabaseKind:
    """What one of daulat's SQLite databases must look like.

    ``tables`` maps each of daulat's tables in it to columns it must have (enough to tell it
    from someone else's table of that name, not its whole schema, so that columns added by
    later versions do not make older files look foreign). ``application_id`` is written into
    the SQLite header of files daulat creates, so another program's database is recognised
    even when it has no table daulat knows.
    """

    what: str  # "transfer journal", for messages
    application_id: int
    tables: Mapping[str, frozenset[str]]


def _notice(message: str) -> None:
    log.warning("daulat: %s", message)


def _tighten(path: Path, st: os.stat_result, mode: int) -> bool:
    """chmod ``path`` to ``mode`` if group or others have any access; whether it did."""
    if stat.S_IMODE(st.st_mode) & _LOOSE:
        os.chmod(path, mode, follow_symlinks=False)
        return True
    return False


def private_dir(path: Path) -> Path:
    """Create the state directory ``path`` (mode 0700), or make an existing one and everything
    in it private: directories 0700, files 0600. Symbolic links inside it are left alone
    (never followed); ``path`` itself may be a link to a directory elsewhere. Only for daulat's
    own directories (``.daulat/`` and those in it): everything below ``path`` is changed.

    Raises :class:`StateError` when the directory cannot be created or is not a directory.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # the user's own directories
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            pass
        else:
            os.chmod(path, DIR_MODE)  # exact, whatever the umask
            return path
        st = os.stat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise StateError(f"{path} should be daulat's state directory but is not a directory")
        # The walk costs a few stat calls (the directory holds a handful of files) and runs at
        # every open, so state loosened while a long-lived process runs is caught too.
        tightened = int(_tighten(path, st, DIR_MODE))
        for dirpath, dirnames, filenames in os.walk(path):
            here = Path(dirpath)
            for name in (*dirnames, *filenames):
                entry = here / name
                est = os.lstat(entry)
                if stat.S_ISDIR(est.st_mode):
                    tightened += _tighten(entry, est, DIR_MODE)
                elif stat.S_ISREG(est.st_mode):
                    tightened += _tighten(entry, est, FILE_MODE)
        if tightened:
            _notice(
                f"{path} held state other users could read ({tightened} file(s) or "
                "directories); made private: directories 0700, files 0600"
            )
    except OSError as exc:
        raise StateError(f"cannot use the state directory {path}: {exc.strerror}") from None
    return path


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists as a private file (0600, created empty if missing) in a private
    directory, without following a symbolic link at ``path``. Raises :class:`StateError`.

    An existing file is never opened here: it may be a SQLite database this process already
    holds open, and POSIX drops every lock a process holds on a file when it closes any
    descriptor of that file. SQLite in WAL mode counts the other connections by those locks,
    so another process's close would then take itself for the last one and delete the WAL
    under this process's connection (whose later commits would be lost)."""
    private_dir(path.parent)
    flags = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    try:
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                raise StateError(
                    f"{path} should be a daulat state file but is not a file"
                ) from None
            if stat.S_IMODE(st.st_mode) & _LOOSE:
                os.chmod(path, FILE_MODE, follow_symlinks=False)
                _notice(
                    f"{path} was open to other users (mode {stat.S_IMODE(st.st_mode):04o}); "
                    "made private (0600)"
                )
            return path
        try:
            os.fchmod(fd, FILE_MODE)  # exact, whatever the umask
        finally:
            os.close(fd)
    except OSError as exc:
        raise StateError(f"cannot open {path}: {exc.strerror}") from None
    return path


def _foreign(path: Path, kind: DatabaseKind, why: str) -> StateError:
    return StateError(
        f"{path} is not a daulat {kind.what} ({why}); move it away (daulat starts a new one) "
        "or put the right file back"
    )


def check_database(
    db: sqlite3.Connection, path: Path, kind: DatabaseKind, *, schema: str = "main"
) -> bool:
    """Raise :class:`StateError` unless database ``schema`` of ``db`` (the file ``path``) can be
    daulat's ``kind``. Returns whether its header already carries daulat's application id."""
    try:
        (app_id,) = db.execute(f"PRAGMA {schema}.application_id").fetchone()
        tables: dict[str, set[str]] = {}
        for (name,) in db.execute(
            f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%'"
        ).fetchall():
            tables[name] = {
                row[1] for row in db.execute(f"PRAGMA {schema}.table_info({_quote(name)})")
            }
    except sqlite3.DatabaseError as exc:
        raise _foreign(path, kind, str(exc)) from None
    if app_id not in (0, kind.application_id):
        raise _foreign(path, kind, f"it is another program's SQLite database, id {app_id:#x}")
    for table, columns in kind.tables.items():
        missing = columns - tables.get(table, columns)
        if missing:
            raise _foreign(
                path, kind, f"its table {table!r} lacks column(s) {', '.join(sorted(missing))}"
            )
    if app_id == 0 and tables and not set(tables) & set(kind.tables):
        raise _foreign(path, kind, "it holds none of daulat's tables")
    return bool(app_id)


def has_tables(db: sqlite3.Connection, *names: str, schema: str = "main") -> bool:
    """Whether every table in ``names`` exists (a database created and then killed before its
    tables were is empty, not damaged)."""
    found = {
        row[0]
        for row in db.execute(f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'")
    }
    return set(names) <= found


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def connect(path: Path, kind: DatabaseKind, *, timeout: float = 60.0) -> sqlite3.Connection:
    """Open (creating it private if missing) daulat's database ``kind`` at ``path``, in autocommit
    mode. The caller creates its tables, then calls :func:`claim` so that the file is marked as
    daulat's. Raises :class:`StateError` for a damaged or foreign file."""
    private_file(path)
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=timeout)
    except sqlite3.Error as exc:
        raise StateError(f"cannot open {path}: {exc}") from None
    try:
        check_database(db, path, kind)
    except BaseException:
        db.close()
        raise
    return db


def claim(db: sqlite3.Connection, path: Path, kind: DatabaseKind) -> None:
    """Write daulat's application id into the header of ``db`` (once its tables exist)."""
    try:
        if not check_database(db, path, kind):
            db.execute(f"PRAGMA application_id = {int(kind.application_id)}")
    except sqlite3.DatabaseError as exc:
        raise StateError(f"cannot write {path}: {exc}") from None


def connect_readonly(path: Path, kind: DatabaseKind) -> sqlite3.Connection:
    """Open an existing database ``kind`` at ``path`` read-only; :class:`StateError` if it is
    damaged or foreign. The state directory is made private on the way."""
    private_dir(path.parent)
    try:
        db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StateError(f"cannot open {path}: {exc}") from None
    try:
        check_database(db, path, kind)
    except BaseException:
        db.close()
        raise
    return db


def hold_lock(path: Path) -> int:
    """Create ``path`` as a private lock file and hold an exclusive lock on it; return the file
    descriptor, whose closing (or the process's end, however it ends) releases the lock."""
    private_dir(path.parent)
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, FILE_MODE)
    except OSError as exc:
        raise StateError(f"cannot open {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise StateError(f"{path} is held by another process ({exc.strerror})") from None
    return fd


def is_locked(path: Path) -> bool:
    """Whether a live process holds the lock of :func:`hold_lock` at ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
