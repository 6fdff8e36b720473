"""The state store's work queue and record state machine: the truth about every sitemap, page
and record. The file, its schema and transactions are database.py; the reads queries.py.

Every stage works the same way (docs/architecture.md): lease pending work (its state becomes a "leased"
state), do it, then commit the result and the next state in one transaction. On open, leased
work goes back to pending, so a kill at any moment loses only the work that was in flight.

Record states, in pipeline order:
    to_label -> labelling -> to_image -> imaging -> done
    rejected (by a filter or assemble, with its reason) / failed (an item error, with its reason)
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import orjson

from ilid_async import reasons
from ilid_async.crawl.urls import host_of
from ilid_async.run.database import Database
from ilid_async.run.queries import StoreQueries

__all__ = ["COUNTER_SITEMAPS_UNRECORDED", "SitemapTask", "PageTask", "LabelTask", "ImageTask", "HostRoom", "lastmod_timestamp", "sample_of", "Store"]

# Sitemaps found in an index (or a robots.txt) and not walked are failed with reasons.SITEMAP_REFUSALS.
# Refused sitemaps beyond as many rows as max_sitemaps (per shop and pass) are only counted here:
# a generated index of millions of children must not fill the store with refusals either.
COUNTER_SITEMAPS_UNRECORDED = "sitemaps_refused_unrecorded"

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


class Store:
    """The run's work queue and record state machine over its database: every stage leases
    work here and commits its result with the next state in one transaction. Reads are
    ``queries``; the connection, its transactions and grouped commits are ``database``."""

    def __init__(self, path: str | Path, *, readonly: bool = False):
        self.database = Database(path, readonly=readonly)
        self.queries = StoreQueries(self.database)
        self._hosts_seen: dict[str, set[str]] = {}  # per table, hosts met while leasing

    @property
    def db(self) -> sqlite3.Connection:
        """The SQLite connection (ad-hoc reads; tests)."""
        return self.database.connection

    def close(self) -> None:
        self.database.close()

    def release_leases(self) -> int:
        """Return all leased work to pending: the previous run stopped while doing it."""
        released = 0
        with self.database.transaction() as db:
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
        with self.database.transaction() as db:
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
        with self.database.transaction() as db:
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
        counters = self.queries.counters()
        current = counters.get("crawl_pass", 0)
        open_work = self.database.connection.execute(
            "SELECT (SELECT COUNT(*) FROM sitemaps WHERE state IN ('pending','leased')) + "
            "(SELECT COUNT(*) FROM pages WHERE state IN ('pending','leased'))").fetchone()[0]
        started = self.database.connection.execute("SELECT 1 FROM sitemaps LIMIT 1").fetchone() is not None
        if started and (not open_work or full):
            current += 1
            self.set_counter("crawl_pass", current)
            if full:
                with self.database.transaction() as db:
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
        with self.database.transaction() as db:
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
        total, refused = self.database.connection.execute(
            f"SELECT COUNT(*), COALESCE(SUM(state='failed' AND reason IN ({marks})), 0) FROM sitemaps "
            "WHERE shop=? AND pass=?", (*reasons.SITEMAP_REFUSALS, shop, crawl_pass)).fetchone()
        return total - refused, refused

    def has_sitemaps(self, shop: str) -> bool:
        return self.database.connection.execute("SELECT 1 FROM sitemaps WHERE shop=? LIMIT 1", (shop,)).fetchone() is not None

    def lease_sitemaps(self, limit: int, room: HostRoom = None) -> list[SitemapTask]:
        rows = self._lease("sitemaps", "url", "url, shop, host, depth", "host", ("pending", "leased"), limit,
                           room)
        return [SitemapTask(*r) for r in rows]

    def finish_sitemap(self, url: str, *, reason: str | None = None, urls_found: int = 0) -> None:
        state = "failed" if reason else "done"
        with self.database.transaction() as db:
            db.execute(
                "UPDATE sitemaps SET state=?, reason=?, urls_found=?, updated=? WHERE url=?",
                (state, reason, urls_found, time.time(), url),
            )

    # --- pages ----------------------------------------------------------------------------

    def add_pages(self, shop: str, pages: Iterable[tuple[str, str | None]]) -> int:
        """Add (url, lastmod) pairs: new pages, and known pages whose lastmod is newer than our
        copy, become pending. The seen-set is the table, not memory."""
        with self.database.transaction() as db:
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
        with self.database.transaction() as db:
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
        with self.database.transaction() as db:
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
        with self.database.transaction() as db:
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
        with self.database.transaction() as db:
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
        with self.database.transaction() as db:
            db.execute(
                "UPDATE records SET state=?, stage=?, reason=?, updated=?, image_file=COALESCE(?, image_file), "
                "image_sha256=COALESCE(?, image_sha256), image_phash=COALESCE(?, image_phash) WHERE id=?",
                ("failed" if fail else "done", "images" if fail else None, fail, time.time(),
                 file, sha256, phash, record_id),
            )

    # --- dataset --------------------------------------------------------------------------

    # --- counters and status --------------------------------------------------------------

    def bump(self, name: str, by: int = 1) -> None:
        with self.database.transaction() as db:
            db.execute(
                "INSERT INTO counters(name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (name, by),
            )

    def set_counter(self, name: str, value: int) -> None:
        with self.database.transaction() as db:
            db.execute(
                "INSERT INTO counters(name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                (name, value),
            )

    def add_host_stats(self, rows: Iterable[tuple]) -> None:
        """Add (host, requests, retries, 2xx, 3xx, 4xx, 5xx, 429, errors, bytes, latency) deltas."""
        with self.database.transaction() as db:
            db.executemany(
                "INSERT INTO host_stats VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(host) DO UPDATE SET "
                "requests=requests+excluded.requests, retries=retries+excluded.retries, "
                "status_2xx=status_2xx+excluded.status_2xx, status_3xx=status_3xx+excluded.status_3xx, "
                "status_4xx=status_4xx+excluded.status_4xx, status_5xx=status_5xx+excluded.status_5xx, "
                "status_429=status_429+excluded.status_429, errors=errors+excluded.errors, "
                "bytes=bytes+excluded.bytes, latency_total=latency_total+excluded.latency_total",
                list(rows),
            )
