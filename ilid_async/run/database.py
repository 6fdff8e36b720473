"""The run's SQLite database: the state store's file, its schema and its transactions.

One connection per process. A database opened for writing holds the run folder's lock (run.lock)
until it is closed, so two runs never work on one folder; readers (`status`, `stats`) need no
lock. A database that cannot be written (another program holds SQLite's lock, the disk is full)
raises StoreError, a UserError: the run stops with one line, and what was committed stays.
Item transactions can be committed in groups (group_commits) with each item a savepoint.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from ilid_async.errors import UserError

__all__ = [
    "SCHEMA", "RECORD_COLUMNS_ADDED", "SITEMAP_COLUMNS_ADDED", "LOCK_NAME",
    "BUSY_SECONDS", "StoreError", "disk_full_message", "Database",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS sitemaps (
    url TEXT PRIMARY KEY,
    shop TEXT NOT NULL,
    host TEXT NOT NULL,
    state TEXT NOT NULL,          -- pending, leased, done, failed
    reason TEXT,
    urls_found INTEGER NOT NULL DEFAULT 0,
    pass INTEGER NOT NULL DEFAULT 0,  -- the crawl pass that walked it; a new pass walks it again
    updated REAL
);
-- Columns added to sitemaps since: SITEMAP_COLUMNS_ADDED. Sitemaps of one shop in one pass are
-- counted against http.max_sitemaps.
CREATE INDEX IF NOT EXISTS sitemaps_shop_pass ON sitemaps(shop, pass);
CREATE TABLE IF NOT EXISTS pages (
    url TEXT PRIMARY KEY,
    shop TEXT NOT NULL,
    host TEXT NOT NULL,           -- so one slow host cannot take every slot of the crawl
    state TEXT NOT NULL,          -- pending, leased, done, failed
    reason TEXT,                  -- for done: record, duplicate_image_url, not_product_page, ...
    lastmod TEXT,                 -- as the sitemap gave it
    lastmod_ts REAL,              -- the same as a Unix time, to compare with fetched_at
    fetched_at REAL,              -- when the page was last fetched
    updated REAL
);
-- rowid is the discovery order (rows are never deleted): work is leased in that order and
-- the dataset keeps it. An index on state alone is ordered by rowid within each state.
CREATE INDEX IF NOT EXISTS pages_state ON pages(state);
CREATE TABLE IF NOT EXISTS records (
    id TEXT PRIMARY KEY,          -- stable: uuid5(source, image URL); the pre-filter dedup key
    shop TEXT NOT NULL,
    source TEXT NOT NULL,
    page_url TEXT NOT NULL,
    image_url TEXT NOT NULL,
    image_host TEXT NOT NULL,
    raw TEXT NOT NULL,            -- {"label", "data"} as extracted
    label TEXT,                   -- after the pre-filter
    data TEXT,                    -- JSON list, after the pre-filter
    sample REAL NOT NULL,         -- stable pseudo-random number in [0, 1) for the debug fraction
    state TEXT NOT NULL,
    stage TEXT,                   -- the stage that rejected or failed it
    reason TEXT,
    answer TEXT,                  -- the model's five fields as JSON, before the post-filter
    labels TEXT,                  -- the post-filtered fields as JSON
    folder TEXT,
    updated REAL
);
CREATE INDEX IF NOT EXISTS records_state ON records(state);
-- Columns added after the first release are in RECORD_COLUMNS_ADDED (older stores get them).
CREATE INDEX IF NOT EXISTS records_image_url ON records(image_url);
CREATE TABLE IF NOT EXISTS host_stats (
    host TEXT PRIMARY KEY,
    requests INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    status_2xx INTEGER NOT NULL DEFAULT 0,
    status_3xx INTEGER NOT NULL DEFAULT 0,
    status_4xx INTEGER NOT NULL DEFAULT 0,
    status_5xx INTEGER NOT NULL DEFAULT 0,
    status_429 INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    latency_total REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

# Columns of records added since the first schema: ALTER TABLE adds them to an older store.
RECORD_COLUMNS_ADDED = {
    "image_file": "TEXT",  # the image as written, relative to the images folder
    "image_sha256": "TEXT",  # SHA-256 of the downloaded bytes: exact duplicates
    "image_phash": "TEXT",  # perceptual hash of the picture: near duplicates
}
# The same for sitemaps.
SITEMAP_COLUMNS_ADDED = {
    # Index levels below the sitemaps the shop file or robots.txt names (those are 0).
    "depth": "INTEGER NOT NULL DEFAULT 0",
}

LOCK_NAME = "run.lock"  # beside state.sqlite; holds "pid N, started TIME" of the run using it

BUSY_SECONDS = 10.0  # how long a write waits for another connection's lock before StoreError


def _unwritable(e: sqlite3.OperationalError) -> bool:
    """Whether an error says the store cannot be written now (locked, disk full, I/O), rather
    than that our SQL is wrong."""
    text = str(e).lower()
    return any(word in text for word in ("locked", "busy", "full", "disk i/o", "readonly", "read-only",
                                         "unable to open"))


class StoreError(UserError):
    """The store cannot be written: another program holds SQLite's lock, the disk is full, or
    the file system fails. Stops the run with one line; committed work stays committed."""


def disk_full_message(folder: Path, detail: str) -> str:
    """The one line for a run stopped by a full disk (the store's, or an image's)."""
    return (f"{folder}: disk full ({detail}); what was done so far is kept: free some space and run "
            "the same command again")


class Database:
    def __init__(self, path: str | Path, *, readonly: bool = False):
        self.path = Path(path)
        self._lock: BinaryIO | None = None  # the run folder's lock file, while open for writing
        if not readonly:
            self._lock_folder()
        try:
            self._open(readonly)
        except sqlite3.DatabaseError as e:  # not a database, truncated, locked, unreadable
            db = getattr(self, "connection", None)
            if db is not None:
                db.close()
            self._unlock()
            if isinstance(e, sqlite3.OperationalError) and _unwritable(e):
                raise self._unwritable_error(e) from None
            raise UserError(f"{self.path}: cannot use the run's state store ({e}; move it away to "
                            "start the run afresh)") from None

    def _lock_folder(self) -> None:
        """Take the run folder's lock, or say who has it. flock dies with its process (and the
        file object with the Store), so a killed run never leaves the folder locked."""
        lock_path = self.path.parent / LOCK_NAME
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(lock_path, "a+b")  # noqa: SIM115 - held until close()
        except OSError as e:  # a file where the folder should be, no permission, no space
            raise UserError(f"{lock_path}: cannot open the run folder's lock ({e.strerror})") from None
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(lock.fileno(), 200, 0).decode("utf-8", "replace").strip() or "pid unknown"
            lock.close()
            raise UserError(f"{self.path.parent}: another ilid-async run ({holder}) is using this run "
                            "folder; wait for it to end or stop it") from None
        try:
            lock.truncate(0)
            started = datetime.now().astimezone().isoformat(timespec="seconds")
            lock.write(f"pid {os.getpid()}, started {started}\n".encode())
            lock.flush()
        except OSError:
            pass  # the lock holds without its text; a second run then says "pid unknown"
        self._lock = lock

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def _open(self, readonly: bool) -> None:
        # The busy timeout from the start: opening an older store alters its tables.
        if readonly:
            self.connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                      timeout=BUSY_SECONDS)
        else:
            self.connection = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_SECONDS)
            # WAL lets `status` read while a run writes; NORMAL is durable across a process kill
            # (only a power cut can lose the last commits, which are then redone).
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=NORMAL")
            self.connection.executescript(SCHEMA)
            for table, added in (("records", RECORD_COLUMNS_ADDED), ("sitemaps", SITEMAP_COLUMNS_ADDED)):
                have = {row[1] for row in self.connection.execute(f"PRAGMA table_info({table})")}
                for column, kind in added.items():
                    if column not in have:
                        self.connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        self.connection.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads the header: a database?
        # Group commit (see group_commits): items per group, seconds a group may stay open.
        self._group_limits: tuple[int, float] | None = None
        self._group_items = 0
        self._group_started = 0.0

    def _unwritable_error(self, e: sqlite3.Error) -> StoreError:
        """The one line for a store that cannot be written."""
        text = str(e)
        if "full" in text:
            return StoreError(disk_full_message(self.path.parent, f"{self.path.name}: {text}"))
        if "locked" in text or "busy" in text:
            return StoreError(f"{self.path}: the run's state store is locked by another program ({text}); "
                              "stop that program and run the same command again")
        return StoreError(f"{self.path}: cannot write the run's state store ({text})")

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """SQLite errors that are the disk's or another program's, not ours, as StoreError."""
        try:
            yield
        except sqlite3.OperationalError as e:
            if not _unwritable(e):
                raise
            raise self._unwritable_error(e) from None

    def _rollback_quietly(self) -> None:
        """End a transaction that a failed write may have ended already (SQLite rolls back on
        some errors, a full disk among them)."""
        if self.connection.in_transaction:
            try:
                self.connection.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def close(self) -> None:
        """Commit the open group and close; the run folder's lock goes with the connection."""
        try:
            self.flush()
        finally:
            self._rollback_quietly()  # only left open if that commit failed
            self.connection.close()
            self._unlock()

    def abandon_group(self) -> None:
        """Drop the open group after a write failed (its items' leases go with it, so that work
        is pending again; see group_commits)."""
        self._rollback_quietly()
        self._group_items = 0

    def group_commits(self, max_items: int = 256, max_seconds: float = 0.05) -> None:
        """Commit item transactions in groups rather than one by one.

        A COMMIT writes every page the transaction touched to the WAL, and on a fast crawl
        that was a tenth of the run. Each item still goes in as one unit (a savepoint inside
        the group), and a group is committed once it holds ``max_items`` items or is
        ``max_seconds`` old; call flush() on a timer so that an idle run commits too. A killed
        run loses at most the open group: its leases are lost with it, so that work is simply
        pending again at the next start, and nothing is marked done that was not done.
        """
        self._group_limits = (max_items, max_seconds)

    def flush(self) -> None:
        """Commit the open group, if any."""
        if self.connection.in_transaction:
            with self._writing():
                self.connection.execute("COMMIT")
        self._group_items = 0

    def flush_if_due(self) -> None:
        if self._group_limits and self._group_items and \
                time.monotonic() - self._group_started >= self._group_limits[1]:
            self.flush()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One item's writes, all or nothing. Raises StoreError if the store cannot be written
        (the item's work is then not committed)."""
        if self._group_limits is None:
            with self._writing():
                self.connection.execute("BEGIN IMMEDIATE")
            try:
                with self._writing():
                    yield self.connection
            except BaseException:
                self._rollback_quietly()
                raise
            try:
                with self._writing():
                    self.connection.execute("COMMIT")
            except StoreError:
                self._rollback_quietly()
                raise
            return
        with self._writing():
            if not self.connection.in_transaction:
                self.connection.execute("BEGIN IMMEDIATE")
                self._group_started = time.monotonic()
            self.connection.execute("SAVEPOINT item")
        try:
            with self._writing():
                yield self.connection
        except BaseException:
            if self.connection.in_transaction:  # a failed write may have rolled back the whole group
                try:
                    self.connection.execute("ROLLBACK TO item")
                    self.connection.execute("RELEASE item")
                except sqlite3.Error:
                    self._rollback_quietly()
            raise
        with self._writing():
            self.connection.execute("RELEASE item")
        self._group_items += 1
        max_items, max_seconds = self._group_limits
        if self._group_items >= max_items or time.monotonic() - self._group_started >= max_seconds:
            self.flush()
