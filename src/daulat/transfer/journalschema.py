"""The journal's database: its tables, the columns added since, and how it is opened.

What the rows mean is in :mod:`daulat.transfer.journal`; this module is the file's format, read
by every version of daulat that opens it (columns are only ever added, never changed).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from daulat.errors import ManifestError, StateError
from daulat.state import DatabaseKind, claim, connect

JOURNAL_NAME = "transfers.sqlite"
# Beside the journal: one lock file per run in progress (see Journal.begin_run).
RUN_LOCKS = "runs"
JOURNAL_KIND = DatabaseKind(
    "transfer journal",
    application_id=0x644C544A,  # "dLTJ"
    tables={
        "runs": frozenset({"id", "kind", "status"}),
        "journal": frozenset({"pair", "key", "state"}),
    },
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,            -- copy | sync | exit | verify
    pair TEXT NOT NULL,
    src TEXT NOT NULL,
    dst TEXT NOT NULL,
    started TEXT NOT NULL,
    finished TEXT,
    status TEXT NOT NULL,          -- running | complete | incomplete | refused | failed | interrupted
    summary TEXT
);
CREATE TABLE IF NOT EXISTS journal (
    pair TEXT NOT NULL,
    key TEXT NOT NULL,             -- relative to the source prefix
    size INTEGER NOT NULL,         -- source size
    src_etag TEXT,
    state TEXT NOT NULL,           -- done | failed | refused
    sha256 TEXT,                   -- of the plaintext, computed while streaming
    plain_size INTEGER,            -- plaintext size (differs from size/dst_size when encrypted)
    dst_size INTEGER,
    dst_etag TEXT,
    error TEXT,
    run_id INTEGER NOT NULL,
    updated TEXT NOT NULL,
    verified TEXT,                 -- time of the last successful verification
    stored_as TEXT,                -- key relative to the destination prefix, if not ``key``
    PRIMARY KEY (pair, key)
) WITHOUT ROWID;
-- A streamed object whose last byte has been handed to the store, committed before the store
-- can complete the upload; removed with the object's done row (see daulat.transfer.adoption).
CREATE TABLE IF NOT EXISTS completing (
    pair TEXT NOT NULL,
    key TEXT NOT NULL,             -- relative to the source prefix
    size INTEGER NOT NULL,         -- source size, as read
    src_etag TEXT,
    nonce TEXT NOT NULL,           -- hex; also MAC'd into the object's metadata
    sha256 TEXT NOT NULL,          -- of the plaintext
    plain_size INTEGER NOT NULL,
    dst_size INTEGER NOT NULL,     -- bytes handed to the store: the size it must list
    stored_as TEXT,
    run_id INTEGER NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY (pair, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
    location TEXT NOT NULL,        -- the destination: endpoint, bucket and store prefix
    key TEXT NOT NULL,             -- relative to the store (destination prefix included)
    upload_id TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    started TEXT NOT NULL,
    part_size INTEGER,             -- bytes per part (the first thousand), for a later resume
    resume TEXT,                   -- JSON: what a later run needs to continue it (see below)
    PRIMARY KEY (location, key, upload_id)
) WITHOUT ROWID;
-- SHA-256 of every 8 MiB chunk of an object's plaintext (daulat.stores.chunkhash), for objects
-- of more than one chunk; a done row without one here has a single chunk (its sha256).
CREATE TABLE IF NOT EXISTS chunks (
    pair TEXT NOT NULL,
    key TEXT NOT NULL,             -- relative to the source prefix, as in journal
    chunk_size INTEGER NOT NULL,
    sha256 BLOB NOT NULL,          -- the 32-byte digests, concatenated in order
    PRIMARY KEY (pair, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS verifications (
    pair TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    time TEXT NOT NULL,
    full INTEGER NOT NULL,
    objects INTEGER NOT NULL,
    verified INTEGER NOT NULL,
    problems INTEGER NOT NULL
);
"""


# Columns added after the first release of the schema: (name, type).
_ADDED_COLUMNS = [("plain_size", "INTEGER"), ("stored_as", "TEXT")]


def open_database(path: Path) -> sqlite3.Connection:
    """The journal at ``path``, created or brought up to date; :class:`ManifestError` when the
    file is not a database, :class:`StateError` when it is another kind of daulat's."""
    db = connect(path, JOURNAL_KIND, timeout=60)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a batch acknowledged as committed survives a power cut, not just a kill.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA temp_store=FILE")
        db.executescript(SCHEMA)
        migrate(db)
        # Partial: rows of plain copies (no stored_as) cost nothing here.
        db.execute(
            "CREATE INDEX IF NOT EXISTS journal_stored_as ON journal (pair, stored_as) "
            "WHERE stored_as IS NOT NULL"
        )
        claim(db, path, JOURNAL_KIND)
    except StateError:
        db.close()
        raise
    except sqlite3.DatabaseError as exc:
        db.close()
        raise ManifestError(f"cannot open transfer journal {path}: {exc}") from None
    return db


def migrate(db: sqlite3.Connection) -> None:
    """Add columns that journals written by earlier versions lack."""
    have = {row[1] for row in db.execute("PRAGMA table_info(journal)")}
    for column, kind in _ADDED_COLUMNS:
        if column not in have:
            db.execute(f"ALTER TABLE journal ADD COLUMN {column} {kind}")
    have = {row[1] for row in db.execute("PRAGMA table_info(uploads)")}
    if "resume" not in have:
        db.execute("ALTER TABLE uploads ADD COLUMN resume TEXT")
