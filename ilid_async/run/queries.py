"""Read-only questions to the state store: what the summary, `status`, the progress lines and
the dataset writer read. No method here writes, so a reader opened on a running store is safe."""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from ilid_async.run.database import Database

__all__ = ["StoreQueries"]


class StoreQueries:
    def __init__(self, database: Database):
        self.connection = database.connection

    def done_records(self) -> Iterator[dict]:
        """Records with their image on disk, for the dataset file, in the order their pages were
        found in the sitemaps: the same order in every run, however the crawl interleaved."""
        cur = self.connection.execute(
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
        for (answer,) in self.connection.execute("SELECT answer FROM records WHERE answer IS NOT NULL"):
            yield orjson.loads(answer)

    def labelled_texts(self) -> Iterator[tuple[str, list[str], dict]]:
        """(pre-filtered label, data, answer) of every labelled record: what grounding checks."""
        for label, data, answer in self.connection.execute(
                "SELECT label, data, answer FROM records WHERE answer IS NOT NULL"):
            yield label or "", orjson.loads(data) if data else [], orjson.loads(answer)

    def counters(self) -> dict[str, int]:
        return dict(self.connection.execute("SELECT name, value FROM counters ORDER BY name").fetchall())

    def host_stats(self) -> list[dict]:
        cur = self.connection.execute("SELECT * FROM host_stats ORDER BY host")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def failures_by_host(self) -> list[tuple[str, str, int]]:
        """(host, reason, count) of failed sitemaps, pages and image downloads."""
        rows = self.connection.execute(
            "SELECT host, reason, COUNT(*) FROM pages WHERE state='failed' GROUP BY 1, 2 "
            "UNION ALL SELECT image_host, reason, COUNT(*) FROM records "
            "WHERE state='failed' AND stage='images' GROUP BY 1, 2"
        ).fetchall()
        rows += self.connection.execute(
            "SELECT host, reason, COUNT(*) FROM sitemaps WHERE state='failed' GROUP BY 1, 2").fetchall()
        return rows

    def state_counts(self) -> dict[str, list[tuple]]:
        """(state, stage/reason, count) rows for every table, for summaries and `status`."""
        q = self.connection.execute
        return {
            "sitemaps": q("SELECT state, reason, COUNT(*) FROM sitemaps GROUP BY 1, 2 ORDER BY 1, 2").fetchall(),
            "pages": q("SELECT state, reason, COUNT(*) FROM pages GROUP BY 1, 2 ORDER BY 1, 2").fetchall(),
            "records": q(
                "SELECT state, stage, reason, COUNT(*) FROM records GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
            ).fetchall(),
        }

    def count_records(self, state: str) -> int:
        return self.connection.execute("SELECT COUNT(*) FROM records WHERE state=?", (state,)).fetchone()[0]

    def shop_counts(self) -> dict[str, dict[str, int]]:
        """Per shop: pages and records by state, for `status`."""
        shops: dict[str, dict[str, int]] = {}
        for table in ("pages", "records"):
            for shop, state, n in self.connection.execute(
                f"SELECT shop, state, COUNT(*) FROM {table} GROUP BY 1, 2 ORDER BY 1, 2"
            ):
                shops.setdefault(shop, {})[f"{table[:-1]} {state}"] = n
        return shops
