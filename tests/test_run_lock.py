"""One run per run folder (issue 13 item 11): a second `run` on a folder in use exits 2 with one
line naming the process that holds it, `status` still works meanwhile, and a run killed with
SIGKILL leaves the folder free (the lock is the kernel's and dies with its process)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from helpers import REPO, run_cli, write_config
from shop import ShopServer, TestShop, many_products

from ilid_async.errors import UserError
from ilid_async.run.store import Store


@pytest.fixture
def slow_shop():
    # The product sitemaps trickle in over a minute: the first run is still crawling meanwhile.
    server = ShopServer(TestShop(products=many_products(20), sitemap_seconds=60)).start()
    yield server
    server.stop()


def leased_sitemaps(db_path) -> int:
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1)
        try:
            return db.execute("SELECT COUNT(*) FROM sitemaps WHERE state='leased'").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0  # not created yet


@pytest.mark.slow
def test_a_second_run_on_a_folder_in_use_is_refused_and_a_killed_run_frees_it(slow_shop, tmp_path):
    config = write_config(tmp_path, slow_shop.shop_toml())
    db_path = tmp_path / "run" / "state.sqlite"
    first = subprocess.Popen([sys.executable, "-m", "ilid_async", "run", str(config), "--stages", "crawl"],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while leased_sitemaps(db_path) == 0 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None and leased_sitemaps(db_path) > 0, "the first run is not crawling"
        index_fetches = slow_shop.shop.requests.count("/sitemap_index.xml.gz")

        second = run_cli("run", str(config), "--stages", "crawl", timeout=120)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, second.stderr
        assert f"{tmp_path / 'run'}: another ilid-async run (pid {first.pid}, started " in lines[0]
        # It took nothing over: the first run's sitemaps are still leased, and it fetched nothing
        # (a run fetches the sitemap index first; the first run did so once).
        assert leased_sitemaps(db_path) > 0
        assert slow_shop.shop.requests.count("/sitemap_index.xml.gz") == index_fetches == 1

        status = run_cli("status", str(config), timeout=120)
        assert status.returncode == 0, status.stderr
        assert "sitemaps" in status.stdout
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()

    slow_shop.shop.sitemap_seconds = 0
    again = run_cli("run", str(config), "--stages", "crawl", timeout=300)
    assert again.returncode == 0, again.stderr
    db = sqlite3.connect(db_path)
    try:
        open_work = db.execute("SELECT (SELECT COUNT(*) FROM sitemaps WHERE state IN ('pending', 'leased')) + "
                               "(SELECT COUNT(*) FROM pages WHERE state IN ('pending', 'leased'))").fetchone()[0]
        pages = db.execute("SELECT COUNT(*) FROM pages WHERE state='done'").fetchone()[0]
    finally:
        db.close()
    assert open_work == 0 and pages == 20


def test_the_store_is_locked_while_open_for_writing_and_readers_need_no_lock(tmp_path):
    path = tmp_path / "state.sqlite"
    store = Store(path)
    try:
        with pytest.raises(UserError) as err:
            Store(path)
        assert str(err.value).startswith(f"{tmp_path}: another ilid-async run (pid {os.getpid()}, started ")
        reader = Store(path, readonly=True)
        assert reader.queries.count_records("done") == 0  # it reads
        reader.close()
    finally:
        store.close()
    Store(path).close()  # closed: the folder is free again
