"""Progress while running: plain lines per stage when stderr is not a terminal (the real command
as a subprocess), and the counts, rate and ETA behind them."""

from __future__ import annotations

import io
import re
import sqlite3

import pytest
from helpers import run_cli, write_config
from rich.console import Console
from shop import ShopServer, TestShop, many_products

from ilid_async.run.progress import Progress, format_seconds
from ilid_async.run.store import Store

LINE = re.compile(r"^progress \[\s*\d+s\] (\w+): (\d+)/(\d+) done, (\S+), (ETA \S+|done), failed (\d+)$")


@pytest.mark.slow
def test_plain_progress_lines_per_stage_match_the_store(tmp_path):
    n = 60
    server = ShopServer(TestShop(products=many_products(n))).start()
    try:
        # 40 pages/s: the crawl lasts at least 1.5 s, several progress intervals
        config = write_config(tmp_path, server.shop_toml(), http="per_host_rate = 40")
        result = run_cli("run", str(config), "--stages", "crawl", "--progress-interval", "0.2")
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    lines: dict[str, list[tuple]] = {}
    for text in result.stderr.splitlines():
        if text.startswith("progress "):
            m = LINE.match(text)
            assert m, text
            stage, done, total, rate, eta, failed = m.groups()
            lines.setdefault(stage, []).append((int(done), int(total), rate, eta, int(failed)))
    assert set(lines) == {"sitemaps", "pages"}  # the stages of --stages crawl, no others
    assert len(lines["pages"]) >= 3  # periodic lines, then the final one
    for stage, seen in lines.items():
        assert all(done <= total for done, total, *_ in seen), stage
        assert [d for d, *_ in seen] == sorted(d for d, *_ in seen), f"{stage} went backwards"
        assert [t for _, t, *_ in seen] == sorted(t for _, t, *_ in seen), stage
        assert all(eta != "done" for *_, eta, _ in seen[:-1]) or stage == "sitemaps"
        assert seen[-1][3] == "done"  # the last line, after the stage ended

    db = sqlite3.connect(tmp_path / "run" / "state.sqlite")
    try:
        for stage, table in (("sitemaps", "sitemaps"), ("pages", "pages")):
            total, = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
            failed, = db.execute(f"SELECT COUNT(*) FROM {table} WHERE state='failed'").fetchone()
            done, total_seen, _, _, failed_seen = lines[stage][-1]
            assert (done, total_seen, failed_seen) == (total, total, failed), stage
        assert lines["pages"][-1][1] >= n  # every product page, plus the shop's other pages
    finally:
        db.close()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pages_store(tmp_path, n: int) -> Store:
    store = Store(tmp_path / "state.sqlite")
    store.add_pages("shop", [(f"http://127.0.0.1/p/{i}", None) for i in range(n)])
    return store


def test_rate_and_eta_from_counts(tmp_path):
    store = pages_store(tmp_path, 100)
    clock = Clock()
    finished = False
    progress = Progress(store.queries, [("pages", lambda: finished)], stream=io.StringIO(), clock=clock)
    assert not progress.live  # a StringIO is no terminal
    first, = progress.snapshot()
    assert (first.done, first.total, first.failed, first.rate) == (0, 100, 0, None)
    assert first.eta is None  # no rate yet: unknown, not zero

    for task in store.lease_pages(30):
        store.finish_page(task.url, failed="http_404" if task.url.endswith("/7") else None)
    clock.now += 10
    second, = progress.snapshot()
    assert (second.done, second.total, second.failed) == (30, 100, 1)
    assert second.rate == 3.0 and second.eta == 70 / 3.0
    assert "pages: 30/100 done, 3.0/s, ETA 0:23, failed 1" in progress.plain_lines()[0]

    # leased is not done: work in flight counts as left
    store.lease_pages(10)
    clock.now += 10
    third, = progress.snapshot()
    assert third.done == 30 and third.rate == 1.5

    for task in store.lease_pages(100):
        store.finish_page(task.url)
    store.db.execute("UPDATE pages SET state='done' WHERE state='leased'")
    finished = True
    clock.now += 10
    last, = progress.snapshot()
    assert (last.done, last.total, last.eta, last.finished) == (100, 100, 0.0, True)
    assert progress.plain_lines()[0].endswith("pages: 100/100 done, 3.3/s, done, failed 1")
    store.close()


def test_rate_is_over_the_recent_window(tmp_path):
    store = pages_store(tmp_path, 1000)
    clock = Clock()
    progress = Progress(store.queries, [("pages", lambda: False)], stream=io.StringIO(), clock=clock)
    progress.snapshot()
    for task in store.lease_pages(600):  # a fast start ...
        store.finish_page(task.url)
    clock.now += 60
    progress.snapshot()
    for _ in range(3):  # ... then nothing for two minutes: the rate falls to zero
        clock.now += 60
        stalled, = progress.snapshot()
    assert stalled.rate == 0.0 and stalled.eta is None
    store.close()


def test_live_display_has_one_row_per_stage(tmp_path):
    store = pages_store(tmp_path, 5)
    progress = Progress(store.queries, [("sitemaps", lambda: True), ("pages", lambda: False)],
                        stream=io.StringIO(), live=True)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    console.print(progress.render())
    rows = [line.split() for line in out.getvalue().splitlines() if line.strip()]
    assert [r[0] for r in rows] == ["sitemaps", "pages"]
    assert rows[1][1] == "0/5" and rows[0][1] == "0/0" and "done" in rows[0]
    store.close()


def test_format_seconds():
    assert [format_seconds(s) for s in (None, 0, 59.6, 61, 3600 * 2 + 65)] == \
        ["?", "0:00", "1:00", "1:01", "2:01:05"]


def test_negative_interval_is_a_user_error(tmp_path):
    config = write_config(tmp_path, "source = 'x'\nsitemap_urls = ['http://127.0.0.1:9/s.xml']\n")
    result = run_cli("run", str(config), "--progress-interval", "-1")
    assert result.returncode == 2 and "--progress-interval" in result.stderr


@pytest.mark.slow
def test_no_known_work_has_no_eta(tmp_path):
    store = Store(tmp_path / "state.sqlite")
    progress = Progress(store.queries, [("pages", lambda: False)], stream=io.StringIO())
    assert "pages: 0/0 done, -, ETA ?, failed 0" in progress.plain_lines()[0]
    store.close()
