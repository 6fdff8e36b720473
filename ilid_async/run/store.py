"""The SQLite state store: the truth about every sitemap, page and record. All SQL lives here.

Every stage works the same way (docs/architecture.md): lease pending work (its state becomes a "leased"
state), do it, then commit the result and the next state in one transaction. On open, leased
work goes back to pending, so a kill at any moment loses only the work that was in flight.

Record states, in pipeline order:
    to_label -> labelling -> to_image -> imaging -> done
    rejected (by a filter or assemble, with its reason) / failed (an item error, with its reason)

A store opened for writing holds the run folder's lock (run.lock) until it is closed, so two
runs never work on one folder; readers (`status`, `stats`) need no lock. A store that cannot be
written (another program holds SQLite's lock, the disk is full) raises StoreError, a UserError:
the run stops with one line, and what was committed stays.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

import orjson

from ilid_async import reasons
from ilid_async.errors import UserError
from ilid_async.crawl.urls import host_of

__all__ = [
    "SCHEMA", "RECORD_COLUMNS_ADDED", "SITEMAP_COLUMNS_ADDED", "COUNTER_SITEMAPS_UNRECORDED", "LOCK_NAME",
    "SitemapTask", "PageTask", "LabelTask", "ImageTask", "BUSY_SECONDS", "HostRoom", "lastmod_timestamp", "sample_of",
    "StoreError", "disk_full_message", "Store"
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

# Sitemaps found in an index (or a robots.txt) and not walked are failed with reasons.SITEMAP_REFUSALS.
# Refused sitemaps beyond as many rows as max_sitemaps (per shop and pass) are only counted here:
# a generated index of millions of children must not fill the store with refusals either.
COUNTER_SITEMAPS_UNRECORDED = "sitemaps_refused_unrecorded"

LOCK_NAME = "run.lock"  # beside state.sqlite; holds "pid N, started TIME" of the run using it

# Leased state -> the pending state it returns to when a run stops mid-work.
_LEASED = {
    "sitemaps": ("leased", "pending"),
    "pages": ("leased", "pending"),
    "records_label": ("labelling", "to_label"),
    "records_image": ("imaging", "to_image"),
}


@dataclass(frozen=True)
class SitemapTask:
    url: str
    shop: str
    host: str
    depth: int = 0


@dataclass(frozen=True)
class PageTask:
    url: str
    shop: str
    host: str


@dataclass(frozen=True)
class LabelTask:
    id: str
    shop: str
    label: str
    data: list[str]


@dataclass(frozen=True)
class ImageTask:
    id: str
    shop: str
    host: str
    image_url: str
    folder: str
    hashed: bool  # an image was written for it before, with its hashes


BUSY_SECONDS = 10.0  # how long a write waits for another connection's lock before StoreError


def _unwritable(e: sqlite3.OperationalError) -> bool:
    """Whether an error says the store cannot be written now (locked, disk full, I/O), rather
    than that our SQL is wrong."""
    text = str(e).lower()
    return any(word in text for word in ("locked", "busy", "full", "disk i/o", "readonly", "read-only",
                                         "unable to open"))


def _not_in(column: str, values: Collection[str]) -> str:
    return f"AND {column} NOT IN ({','.join('?' * len(values))})" if values else ""


# host -> how many more items that host may have in flight; None: no per-host limit.
HostRoom = Callable[[str], int] | None


def lastmod_timestamp(lastmod: str | None) -> float | None:
    """A sitemap <lastmod> (W3C datetime: a date, or a date and time with a zone) as Unix time;
    None if missing or unreadable (then only new pages are fetched)."""
    if not lastmod:
        return None
    try:
        when = datetime.fromisoformat(lastmod.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def sample_of(record_id: str) -> float:
    """A stable pseudo-random number per record, so the debug fraction picks the same records
    in every run and a later run with a larger fraction labels the rest."""
    digest = hashlib.blake2b(record_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class StoreError(UserError):
    """The store cannot be written: another program holds SQLite's lock, the disk is full, or
    the file system fails. Stops the run with one line; committed work stays committed."""


def disk_full_message(folder: Path, detail: str) -> str:
    """The one line for a run stopped by a full disk (the store's, or an image's)."""
    return (f"{folder}: disk full ({detail}); what was done so far is kept: free some space and run "
            "the same command again")


class Store:
    def __init__(self, path: str | Path, *, readonly: bool = False):
        self.path = Path(path)
        self._lock: BinaryIO | None = None  # the run folder's lock file, while open for writing
        if not readonly:
            self._lock_folder()
        try:
            self._open(readonly)
        except sqlite3.DatabaseError as e:  # not a database, truncated, locked, unreadable
            db = getattr(self, "db", None)
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
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                      timeout=BUSY_SECONDS)
        else:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_SECONDS)
            # WAL lets `status` read while a run writes; NORMAL is durable across a process kill
            # (only a power cut can lose the last commits, which are then redone).
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            for table, added in (("records", RECORD_COLUMNS_ADDED), ("sitemaps", SITEMAP_COLUMNS_ADDED)):
                have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
                for column, kind in added.items():
                    if column not in have:
                        self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        self.db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads the header: a database?
        self._hosts_seen: dict[str, set[str]] = {}  # per table, hosts met while leasing
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
        if self.db.in_transaction:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def close(self) -> None:
        """Commit the open group and close; the run folder's lock goes with the connection."""
        try:
            self.flush()
        finally:
            self._rollback_quietly()  # only left open if that commit failed
            self.db.close()
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
        if self.db.in_transaction:
            with self._writing():
                self.db.execute("COMMIT")
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
                self.db.execute("BEGIN IMMEDIATE")
            try:
                with self._writing():
                    yield self.db
            except BaseException:
                self._rollback_quietly()
                raise
            try:
                with self._writing():
                    self.db.execute("COMMIT")
            except StoreError:
                self._rollback_quietly()
                raise
            return
        with self._writing():
            if not self.db.in_transaction:
                self.db.execute("BEGIN IMMEDIATE")
                self._group_started = time.monotonic()
            self.db.execute("SAVEPOINT item")
        try:
            with self._writing():
                yield self.db
        except BaseException:
            if self.db.in_transaction:  # a failed write may have rolled back the whole group
                try:
                    self.db.execute("ROLLBACK TO item")
                    self.db.execute("RELEASE item")
                except sqlite3.Error:
                    self._rollback_quietly()
            raise
        with self._writing():
            self.db.execute("RELEASE item")
        self._group_items += 1
        max_items, max_seconds = self._group_limits
        if self._group_items >= max_items or time.monotonic() - self._group_started >= max_seconds:
            self.flush()

    def release_leases(self) -> int:
        """Return all leased work to pending: the previous run stopped while doing it."""
        released = 0
        with self.transaction() as db:
            for table, (leased, pending) in (
                ("sitemaps", _LEASED["sitemaps"]),
                ("pages", _LEASED["pages"]),
                ("records", _LEASED["records_label"]),
                ("records", _LEASED["records_image"]),
            ):
                cur = db.execute(f"UPDATE {table} SET state=? WHERE state=?", (pending, leased))
                released += cur.rowcount
        return released

    def requeue_label_failures(self) -> int:
        """Return records whose labelling failed for a reason outside the record (a labelling
        server that did not answer) to labelling; called at a run's start, like release_leases."""
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE records SET state='to_label', stage=NULL, reason=NULL WHERE state='failed' "
                f"AND stage='label' AND reason IN ({','.join('?' * len(reasons.LABEL_RETRY))})",
                reasons.LABEL_RETRY,
            )
        return cur.rowcount

    def _lease(self, table: str, key: str, columns: str, host_column: str, states: tuple[str, str],
               limit: int, room: HostRoom) -> list[tuple]:
        """Lease up to ``limit`` rows in discovery order. With ``room`` (host -> how many more
        items that host may have in flight), no host gets more than its room, and hosts with
        none are skipped, so a host at its limit never blocks work for the others."""
        pending, leased = states
        room = room or (lambda host: limit)
        full = [h for h in self._hosts_seen.get(table, ()) if room(h) <= 0]
        with self.transaction() as db:
            # A few times the limit as candidates: enough to fill the slots of several hosts.
            candidates = db.execute(
                f"SELECT {columns} FROM {table} WHERE state=? {_not_in(host_column, full)} "
                "ORDER BY rowid LIMIT ?",
                (pending, *full, limit * 4),
            ).fetchall()
            host_at = columns.split(", ").index(host_column)
            given: Counter[str] = Counter()
            chosen = []
            for row in candidates:
                host = row[host_at]
                self._hosts_seen.setdefault(table, set()).add(host)
                if given[host] < room(host):
                    given[host] += 1
                    chosen.append(row)
                    if len(chosen) == limit:
                        break
            db.executemany(f"UPDATE {table} SET state=? WHERE {key}=?", [(leased, r[0]) for r in chosen])
        return chosen

    # --- sitemaps -------------------------------------------------------------------------

    def start_crawl_pass(self, *, full: bool) -> int:
        """The crawl pass this run works on. A pass that was interrupted is resumed; after a
        finished one a new pass starts, which walks every sitemap again and fetches new pages and
        pages whose lastmod is newer than our copy (``full``: every page again)."""
        counters = self.counters()
        current = counters.get("crawl_pass", 0)
        open_work = self.db.execute(
            "SELECT (SELECT COUNT(*) FROM sitemaps WHERE state IN ('pending','leased')) + "
            "(SELECT COUNT(*) FROM pages WHERE state IN ('pending','leased'))").fetchone()[0]
        started = self.db.execute("SELECT 1 FROM sitemaps LIMIT 1").fetchone() is not None
        if started and (not open_work or full):
            current += 1
            self.set_counter("crawl_pass", current)
            if full:
                with self.transaction() as db:
                    db.execute("UPDATE pages SET state='pending' WHERE state IN ('done','failed')")
        return current

    def add_sitemaps(self, shop: str, urls: Iterable[str], crawl_pass: int = 0, *, depth: int = 0,
                     max_sitemaps: int | None = None, refused: Iterable[tuple[str, str]] = ()) -> int:
        """Sitemaps to walk, found at ``depth`` (0: named by the shop file or its robots.txt).
        New ones, and known ones last walked in an earlier pass, become pending, while the shop
        has fewer than ``max_sitemaps`` in this pass; the rest are refused as too_many_sitemaps.
        ``refused`` (url, reason) pairs are sitemaps not to walk. A refused sitemap is a failed
        row with its reason, up to ``max_sitemaps`` such rows per shop and pass; beyond that it
        is only counted (COUNTER_SITEMAPS_UNRECORDED). Returns how many became pending."""
        refusals = list(refused)
        now = time.time()
        with self.transaction() as db:
            walked, refused_rows = self._sitemaps_in_pass(shop, crawl_pass)
            room = float("inf") if max_sitemaps is None else max_sitemaps - walked
            added = 0
            for url in urls:
                if room <= 0:
                    refusals.append((url, reasons.TOO_MANY_SITEMAPS))
                    continue
                cur = db.execute(
                    "INSERT INTO sitemaps(url, shop, host, state, pass, depth, updated) "
                    "VALUES (?, ?, ?, 'pending', ?, ?, ?) "
                    "ON CONFLICT(url) DO UPDATE SET state='pending', reason=NULL, pass=excluded.pass, "
                    "depth=excluded.depth "
                    "WHERE sitemaps.pass < excluded.pass AND sitemaps.state IN ('done', 'failed') "
                    # found too deep before, now by a shorter path
                    "OR sitemaps.reason=? AND sitemaps.pass = excluded.pass AND sitemaps.depth > excluded.depth",
                    (url, shop, host_of(url), crawl_pass, depth, now, reasons.TOO_DEEP),
                )
                added += cur.rowcount
                room -= cur.rowcount  # a sitemap met before in this pass takes no room
            rows_left = float("inf") if max_sitemaps is None else max_sitemaps - refused_rows
            unrecorded = 0
            for url, reason in refusals:
                if rows_left <= 0:
                    # Counted once: a sitemap met before in this pass is not new.
                    unrecorded += db.execute("SELECT 1 FROM sitemaps WHERE url=? AND pass=?",
                                             (url, crawl_pass)).fetchone() is None
                    continue
                cur = db.execute(
                    "INSERT INTO sitemaps(url, shop, host, state, reason, pass, depth, updated) "
                    "VALUES (?, ?, ?, 'failed', ?, ?, ?, ?) "
                    "ON CONFLICT(url) DO UPDATE SET state='failed', reason=excluded.reason, "
                    "pass=excluded.pass, depth=excluded.depth, urls_found=0, updated=excluded.updated "
                    "WHERE sitemaps.pass < excluded.pass AND sitemaps.state IN ('done', 'failed')",
                    (url, shop, host_of(url), reason, crawl_pass, depth, now),
                )
                rows_left -= cur.rowcount
            if unrecorded:
                db.execute("INSERT INTO counters(name, value) VALUES (?, ?) "
                           "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                           (COUNTER_SITEMAPS_UNRECORDED, unrecorded))
        return added

    def _sitemaps_in_pass(self, shop: str, crawl_pass: int) -> tuple[int, int]:
        """(sitemaps walked or to walk, sitemaps refused) of a shop in a crawl pass."""
        marks = ",".join("?" * len(reasons.SITEMAP_REFUSALS))
        total, refused = self.db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(state='failed' AND reason IN ({marks})), 0) FROM sitemaps "
            "WHERE shop=? AND pass=?", (*reasons.SITEMAP_REFUSALS, shop, crawl_pass)).fetchone()
        return total - refused, refused

    def has_sitemaps(self, shop: str) -> bool:
        return self.db.execute("SELECT 1 FROM sitemaps WHERE shop=? LIMIT 1", (shop,)).fetchone() is not None

    def lease_sitemaps(self, limit: int, room: HostRoom = None) -> list[SitemapTask]:
        rows = self._lease("sitemaps", "url", "url, shop, host, depth", "host", ("pending", "leased"), limit,
                           room)
        return [SitemapTask(*r) for r in rows]

    def finish_sitemap(self, url: str, *, reason: str | None = None, urls_found: int = 0) -> None:
        state = "failed" if reason else "done"
        with self.transaction() as db:
            db.execute(
                "UPDATE sitemaps SET state=?, reason=?, urls_found=?, updated=? WHERE url=?",
                (state, reason, urls_found, time.time(), url),
            )

    # --- pages ----------------------------------------------------------------------------

    def add_pages(self, shop: str, pages: Iterable[tuple[str, str | None]]) -> int:
        """Add (url, lastmod) pairs: new pages, and known pages whose lastmod is newer than our
        copy, become pending. The seen-set is the table, not memory."""
        with self.transaction() as db:
            now = time.time()
            rows = [(u, shop, host_of(u), lastmod, lastmod_timestamp(lastmod), now) for u, lastmod in pages]
            cur = db.executemany(
                "INSERT INTO pages(url, shop, host, state, lastmod, lastmod_ts, updated) "
                "VALUES (?, ?, ?, 'pending', ?, ?, ?) "
                "ON CONFLICT(url) DO UPDATE SET state='pending', lastmod=excluded.lastmod, "
                "lastmod_ts=excluded.lastmod_ts WHERE pages.state='done' "
                "AND excluded.lastmod_ts > COALESCE(pages.fetched_at, 0)",
                rows,
            )
            return cur.rowcount

    def lease_pages(self, limit: int, room: HostRoom = None) -> list[PageTask]:
        rows = self._lease("pages", "url", "url, shop, host", "host", ("pending", "leased"), limit, room)
        return [PageTask(*r) for r in rows]

    def finish_page(self, url: str, *, failed: str | None = None, outcome: str | None = None) -> None:
        """Commit a page that yielded no record: ``failed`` for an item error, ``outcome`` for
        a page that was fine but is not a product (not_product_page, no_image, ...)."""
        state = "failed" if failed else "done"
        now = time.time()
        with self.transaction() as db:
            db.execute(
                "UPDATE pages SET state=?, reason=?, fetched_at=?, updated=? WHERE url=?",
                (state, failed or outcome, now, now, url),
            )

    def commit_page_record(
        self,
        page_url: str,
        *,
        record_id: str,
        shop: str,
        source: str,
        image_url: str,
        raw_label: str,
        raw_data: list[str],
        cleaned: tuple[str, list[str]] | None,
        reject_reason: str | None,
    ) -> tuple[str, str | None]:
        """Store the page's raw record and its pre-filter result in one transaction with the
        page's state. Returns (page outcome, stale image): the outcome is "record" or
        "duplicate_image_url" (rules §2 rule 1: the first record with an image URL is kept,
        whatever became of it). A page fetched again by a re-crawl updates its own record; if
        its text changed the record is labelled again, and the image path it had (to delete)
        is returned."""
        now = time.time()
        raw = orjson.dumps({"label": raw_label, "data": raw_data}).decode()
        label, data = cleaned if cleaned else (None, None)
        fields = (
            raw, label, orjson.dumps(data).decode() if data is not None else None,
            "rejected" if reject_reason else "to_label", "prefilter" if reject_reason else None,
            reject_reason, now,
        )
        stale_image = None
        with self.transaction() as db:
            known = db.execute("SELECT page_url, raw, folder, image_file FROM records WHERE id=?",
                               (record_id,)).fetchone()
            if known is None:
                db.execute(
                    "INSERT INTO records(id, shop, source, page_url, image_url, image_host, sample, raw, "
                    "label, data, state, stage, reason, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (record_id, shop, source, page_url, image_url, host_of(image_url), sample_of(record_id),
                     *fields),
                )
                outcome = "record"
            elif known[0] != page_url:
                outcome = reasons.DUPLICATE_IMAGE_URL
            else:
                outcome = "record"
                if known[1] != raw:  # the shop changed the text: label it again
                    stale_image = known[3] or (known[2] and f"{known[2]}/{record_id}.png")
                    db.execute(
                        "UPDATE records SET raw=?, label=?, data=?, state=?, stage=?, reason=?, updated=?, "
                        "answer=NULL, labels=NULL, folder=NULL, image_file=NULL WHERE id=?",
                        (*fields, record_id))
            db.execute(
                "UPDATE pages SET state='done', reason=?, fetched_at=?, updated=? WHERE url=?",
                (outcome, now, now, page_url),
            )
        return outcome, stale_image

    # --- labelling ------------------------------------------------------------------------

    def lease_for_labelling(self, limit: int, debug_fraction: float = 1.0) -> list[LabelTask]:
        with self.transaction() as db:
            rows = db.execute(
                "SELECT id, shop, label, data FROM records WHERE state='to_label' AND sample < ? "
                "ORDER BY rowid LIMIT ?",
                (debug_fraction, limit),
            ).fetchall()
            db.executemany("UPDATE records SET state='labelling' WHERE id=?", [(r[0],) for r in rows])
        return [LabelTask(i, shop, label, orjson.loads(data)) for i, shop, label, data in rows]

    def commit_labels(
        self,
        record_id: str,
        *,
        answer: dict | None,
        labels: dict | None,
        folder: str | None,
        reject: tuple[str, str] | None = None,
        fail: str | None = None,
    ) -> str:
        """Commit a labelled record. With labels and a folder it goes on to the image stage,
        unless another record with the same image URL is already in the dataset (rules §5).
        Returns the record's new state."""
        now = time.time()
        with self.transaction() as db:
            if fail:
                state, stage, reason = "failed", "label", fail
            elif reject:
                state, (stage, reason) = "rejected", reject
            else:
                (image_url,) = db.execute("SELECT image_url FROM records WHERE id=?", (record_id,)).fetchone()
                taken = db.execute(
                    "SELECT 1 FROM records WHERE image_url=? AND id<>? AND state IN "
                    "('to_image', 'imaging', 'done') LIMIT 1",
                    (image_url, record_id),
                ).fetchone()
                if taken:
                    state, stage, reason = "rejected", "assemble", reasons.DUPLICATE_IN_DATASET
                else:
                    state, stage, reason = "to_image", None, None
            db.execute(
                "UPDATE records SET state=?, stage=?, reason=?, answer=?, labels=?, folder=?, updated=? "
                "WHERE id=?",
                (
                    state, stage, reason,
                    orjson.dumps(answer).decode() if answer is not None else None,
                    orjson.dumps(labels).decode() if labels is not None else None,
                    folder, now, record_id,
                ),
            )
        return state

    # --- images ---------------------------------------------------------------------------

    def lease_for_images(self, limit: int, room: HostRoom = None) -> list[ImageTask]:
        rows = self._lease("records", "id", "id, shop, image_host, image_url, folder, "
                           "image_sha256 IS NOT NULL", "image_host", ("to_image", "imaging"), limit, room)
        return [ImageTask(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]

    def commit_image(self, record_id: str, *, fail: str | None = None, file: str | None = None,
                     sha256: str | None = None, phash: str | None = None) -> None:
        """The image stage's result: ``file`` written (hashes of it, or None to keep those
        stored), or ``fail`` with the reason."""
        with self.transaction() as db:
            db.execute(
                "UPDATE records SET state=?, stage=?, reason=?, updated=?, image_file=COALESCE(?, image_file), "
                "image_sha256=COALESCE(?, image_sha256), image_phash=COALESCE(?, image_phash) WHERE id=?",
                ("failed" if fail else "done", "images" if fail else None, fail, time.time(),
                 file, sha256, phash, record_id),
            )

    # --- dataset --------------------------------------------------------------------------

    def done_records(self) -> Iterator[dict]:
        """Records with their image on disk, for the dataset file, in the order their pages were
        found in the sitemaps: the same order in every run, however the crawl interleaved."""
        cur = self.db.execute(
            "SELECT r.id, r.image_url, r.source, r.labels, r.folder, r.image_file, r.image_sha256, "
            "r.image_phash FROM records r "
            "JOIN pages p ON p.url = r.page_url WHERE r.state='done' ORDER BY p.rowid, r.rowid"
        )
        for record_id, image_url, source, labels, folder, image_file, sha256, phash in cur:
            yield {"id": record_id, "url": image_url, "source": source, "folder": folder,
                   "image_file": image_file or f"{folder}/{record_id}.png", "sha256": sha256,
                   "phash": phash, **orjson.loads(labels)}

    def answers(self) -> Iterator[dict]:
        """The model's answers (five fields, before the post-filter) of every labelled record."""
        for (answer,) in self.db.execute("SELECT answer FROM records WHERE answer IS NOT NULL"):
            yield orjson.loads(answer)

    def labelled_texts(self) -> Iterator[tuple[str, list[str], dict]]:
        """(pre-filtered label, data, answer) of every labelled record: what grounding checks."""
        for label, data, answer in self.db.execute(
                "SELECT label, data, answer FROM records WHERE answer IS NOT NULL"):
            yield label or "", orjson.loads(data) if data else [], orjson.loads(answer)

    # --- counters and status --------------------------------------------------------------

    def bump(self, name: str, by: int = 1) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO counters(name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (name, by),
            )

    def set_counter(self, name: str, value: int) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO counters(name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                (name, value),
            )

    def counters(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT name, value FROM counters ORDER BY name").fetchall())

    def add_host_stats(self, rows: Iterable[tuple]) -> None:
        """Add (host, requests, retries, 2xx, 3xx, 4xx, 5xx, 429, errors, bytes, latency) deltas."""
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO host_stats VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(host) DO UPDATE SET "
                "requests=requests+excluded.requests, retries=retries+excluded.retries, "
                "status_2xx=status_2xx+excluded.status_2xx, status_3xx=status_3xx+excluded.status_3xx, "
                "status_4xx=status_4xx+excluded.status_4xx, status_5xx=status_5xx+excluded.status_5xx, "
                "status_429=status_429+excluded.status_429, errors=errors+excluded.errors, "
                "bytes=bytes+excluded.bytes, latency_total=latency_total+excluded.latency_total",
                list(rows),
            )

    def host_stats(self) -> list[dict]:
        cur = self.db.execute("SELECT * FROM host_stats ORDER BY host")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def failures_by_host(self) -> list[tuple[str, str, int]]:
        """(host, reason, count) of failed sitemaps, pages and image downloads."""
        rows = self.db.execute(
            "SELECT host, reason, COUNT(*) FROM pages WHERE state='failed' GROUP BY 1, 2 "
            "UNION ALL SELECT image_host, reason, COUNT(*) FROM records "
            "WHERE state='failed' AND stage='images' GROUP BY 1, 2"
        ).fetchall()
        rows += self.db.execute(
            "SELECT host, reason, COUNT(*) FROM sitemaps WHERE state='failed' GROUP BY 1, 2").fetchall()
        return rows

    def state_counts(self) -> dict[str, list[tuple]]:
        """(state, stage/reason, count) rows for every table, for summaries and `status`."""
        q = self.db.execute
        return {
            "sitemaps": q("SELECT state, reason, COUNT(*) FROM sitemaps GROUP BY 1, 2 ORDER BY 1, 2").fetchall(),
            "pages": q("SELECT state, reason, COUNT(*) FROM pages GROUP BY 1, 2 ORDER BY 1, 2").fetchall(),
            "records": q(
                "SELECT state, stage, reason, COUNT(*) FROM records GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
            ).fetchall(),
        }

    def count_records(self, state: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM records WHERE state=?", (state,)).fetchone()[0]

    def shop_counts(self) -> dict[str, dict[str, int]]:
        """Per shop: pages and records by state, for `status`."""
        shops: dict[str, dict[str, int]] = {}
        for table in ("pages", "records"):
            for shop, state, n in self.db.execute(
                f"SELECT shop, state, COUNT(*) FROM {table} GROUP BY 1, 2 ORDER BY 1, 2"
            ):
                shops.setdefault(shop, {})[f"{table[:-1]} {state}"] = n
        return shops
