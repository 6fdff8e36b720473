"""The hostile web: every fault ends recovered or recorded with its reason, and the run completes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest
from helpers import REPO, run_cli, write_config
from shop import (
    IMAGE_EXPECTED,
    OFFSITE_SITEMAPS,
    PAGE_EXPECTED,
    SHOP_TOML,
    SITEMAP_EXPECTED,
    ShopServer,
    TestShop,
    full_disk,
    hostile_shop,
    many_products,
)

from ilid_async.run.store import Store


@pytest.fixture
def faulty():
    server = ShopServer(hostile_shop(), hosts=("127.0.0.2", "127.0.0.3")).start()
    yield server
    server.stop()


def label_everything_by_hand(store_path, folders: dict[int, str] | None = None) -> list[str]:
    """Give every crawled record fixed labels, so the image stage is tested on its own; the
    image folder is machine_part, or ``folders[i]`` for the i-th record. Returns the ids."""
    store = Store(store_path)
    try:
        ids = []
        for i, task in enumerate(store.lease_for_labelling(1000)):
            labels = {"label_short": "machine part", "label_long": "machine part for machines",
                      "description": "A part.", "material": "steel", "material_finish": None}
            store.commit_labels(task.id, answer=labels, labels=labels, folder=(folders or {}).get(i, "machine_part"))
            ids.append(task.id)
        return ids
    finally:
        store.close()


def record_states(run) -> dict[str, tuple[str, str | None]]:
    db = sqlite3.connect(run / "state.sqlite")
    try:
        return {i: (state, reason) for i, state, reason in db.execute("SELECT id, state, reason FROM records")}
    finally:
        db.close()


@pytest.mark.slow
def test_every_fault_ends_as_it_should(faulty, tmp_path):
    shop_a, shop_b = faulty.base_urls
    shop_toml = SHOP_TOML.replace("{base}", shop_a).replace('tradename_regex = "(proline)"', "")
    shop_toml = shop_toml.replace('allowed_domains = ["127.0.0.1"]', 'allowed_domains = ["127.0.0.2"]')
    config = write_config(tmp_path, shop_toml,
                          http="timeout = 1.0\nretries = 2\nmax_sitemap_bytes = 1000000")
    crawl = run_cli("run", str(config), "--stages", "crawl", timeout=300)
    assert crawl.returncode == 0, crawl.stderr

    store = Store(tmp_path / "run" / "state.sqlite")
    sitemaps = {url.rsplit("/", 1)[1]: (state, reason) for url, state, reason in
                store.db.execute("SELECT url, state, reason FROM sitemaps")}
    pages = {url.split("/", 3)[3]: (state, reason) for url, state, reason in
             store.db.execute("SELECT url, state, reason FROM pages")}
    store.close()
    assert {k: v for k, v in sitemaps.items() if k in SITEMAP_EXPECTED} == SITEMAP_EXPECTED
    for slug, (state, reason) in PAGE_EXPECTED.items():
        if state == "record":
            assert pages[f"p/{slug}"] == ("done", "record"), slug
        else:
            assert pages[f"p/{slug}"] == (state, reason), slug
    assert pages["secret/p/1"] == ("failed", "robots_disallowed")
    assert pages["p/broken"] == ("failed", "bad_url")  # its <loc> was http://[oops/p/broken
    # Sitemaps off allowed_domains are recorded, never fetched, and bring no pages.
    assert all(faulty.shop.hits[f"/{name}"] == 0 for name in OFFSITE_SITEMAPS)
    assert "p/from-offsite" not in pages
    assert "/secret/p/1" not in faulty.shop.hits  # disallowed pages are never requested
    # Transient faults were each answered once and then recovered.
    for slug in ("flaky-1", "flaky-2", "flaky-3", "limited-1", "limited-2", "busy", "oddretry"):
        assert faulty.shop.hits[f"/p/{slug}"] == 2, slug

    label_everything_by_hand(tmp_path / "run" / "state.sqlite")
    images = run_cli("run", str(config), "--stages", "images,dataset", timeout=300)
    assert images.returncode == 0, images.stderr
    store = Store(tmp_path / "run" / "state.sqlite")
    records = {url.rsplit("/", 1)[1].rsplit(".", 1)[0]: (state, reason) for url, state, reason in
               store.db.execute("SELECT image_url, state, reason FROM records")}
    hosts = {h["host"]: h for h in store.queries.host_stats()}
    store.close()
    assert records.pop("emptylabel") == ("rejected", "empty_label")
    assert records == IMAGE_EXPECTED
    assert faulty.shop.hits["/img/imgflaky.jpg"] == 2

    # The summary shows per-host requests, retries and 429s, and failures by reason.
    a = hosts["127.0.0.2"]
    assert a["status_429"] == 2 and a["retries"] >= 6 and a["status_5xx"] >= 4 and a["errors"] >= 3
    assert hosts["127.0.0.3"]["status_5xx"] == 1
    status = run_cli("status", str(config), timeout=60)
    assert status.returncode == 0
    host_lines = status.stdout.split("\nhost ", 1)[1]
    failed_a = host_lines.split("127.0.0.2", 1)[1].split("127.0.0.3", 1)[0]
    failed_b = host_lines.split("127.0.0.3", 1)[1]
    for reason in ("http_404 1", "timeout 1", "redirect_loop 1", "address_refused 1", "robots_disallowed 1",
                   "undecodable_page 2", "malformed_sitemap 1", "too_large 1", "bad_url 1", "off_domain 1"):
        assert reason in failed_a, reason
    assert "off_domain 2" in failed_b  # the two sitemaps on the images host
    for reason in ("truncated_image 1", "too_many_pixels 1", "not_an_image 1", "not_image_content_type 1"):
        assert reason in failed_b and reason not in failed_a, reason


# --- sitemap indexes without end (issue 13 item 8) ---------------------------------------------

MAZE_SHOP = """
source = "maze"
sitemap_urls = [{seeds}]
sitemap_rules = [["/p/", "product"]]
[selectors]
product = "div.product"
image = "img"
label = "h1"
data = "p"
"""


@pytest.fixture
def maze():
    server = ShopServer(TestShop(maze_fanout=3, maze_width=3000)).start()
    yield server
    server.stop()


def crawl_maze(tmp_path, maze, seed: str, http: str = "") -> tuple[dict, dict[str, int]]:
    """Crawl the maze from one sitemap; (sitemap rows by (state, reason, depth), counters)."""
    config = write_config(tmp_path, MAZE_SHOP.format(seeds=f'"{maze.base_url}{seed}"'), http=http)
    crawl = run_cli("run", str(config), "--stages", "crawl", timeout=300)
    assert crawl.returncode == 0, crawl.stderr
    store = Store(tmp_path / "run" / "state.sqlite")
    try:
        rows = {(state, reason, depth): n for state, reason, depth, n in store.db.execute(
            "SELECT state, reason, depth, COUNT(*) FROM sitemaps GROUP BY 1, 2, 3")}
        return rows, store.queries.counters()
    finally:
        store.close()


@pytest.mark.slow
def test_an_endless_index_chain_stops_at_max_sitemap_depth(maze, tmp_path):
    rows, _ = crawl_maze(tmp_path, maze, "/chain/r.xml")
    # Depths 0 to 4 (http.max_sitemap_depth) are walked: 1 + 3 + 9 + 27 + 81; the 243 children of
    # depth 4 are recorded as too deep, and never fetched.
    assert rows == {("done", None, d): 3 ** d for d in range(5)} | {("failed", "too_deep", 5): 243}
    assert maze.shop.hits_under("/chain/") == 121


@pytest.mark.slow
def test_an_endless_index_chain_stops_at_max_sitemaps(maze, tmp_path):
    rows, counters = crawl_maze(tmp_path, maze, "/chain/r.xml", "max_sitemap_depth = 50\nmax_sitemaps = 200")
    walked = sum(n for (state, _, _), n in rows.items() if state == "done")
    refused = sum(n for (_, reason, _), n in rows.items() if reason == "too_many_sitemaps")
    assert walked == 200 == maze.shop.hits_under("/chain/")
    # As many refusals as walked sitemaps are rows, the rest only a count; every child is one
    # of the two: 3 per walked sitemap, less the 199 that were walked.
    assert refused == 200 and {reason for _, reason, _ in rows} == {None, "too_many_sitemaps"}
    assert refused + counters["sitemaps_refused_unrecorded"] == 3 * 200 - 199


@pytest.mark.slow
def test_a_wide_index_stops_at_max_sitemaps(maze, tmp_path):
    rows, counters = crawl_maze(tmp_path, maze, "/wide.xml", "max_sitemaps = 100")
    assert rows == {("done", None, 0): 1, ("done", None, 1): 99, ("failed", "too_many_sitemaps", 1): 100}
    assert maze.shop.hits_under("/leaf/") == 99
    assert counters["sitemaps_refused_unrecorded"] == 3000 - 99 - 100


# --- the images stage's own disk (issue 13 item 12) ---------------------------------------------

@pytest.fixture
def shop6():
    server = ShopServer(TestShop(products=many_products(6))).start()
    yield server
    server.stop()


@pytest.mark.slow
def test_image_write_errors_are_recorded_on_their_records(shop6, tmp_path):
    config = write_config(tmp_path, shop6.shop_toml())
    assert run_cli("run", str(config), "--stages", "crawl", timeout=300).returncode == 0
    run = tmp_path / "run"
    ids = label_everything_by_hand(run / "state.sqlite", {0: "blocked", 1: "x" * 300})
    images = run / "images"
    images.mkdir()
    (images / "blocked").write_text("a file where the record's folder should be")
    (images / "machine_part" / f"{ids[2]}.png").mkdir(parents=True)  # a folder where its image should be
    result = run_cli("run", str(config), "--stages", "images,dataset", timeout=300)
    assert result.returncode == 0, result.stderr
    states = record_states(run)
    assert states.pop(ids[0]) == ("failed", "folder_is_a_file")
    assert states.pop(ids[1]) == ("failed", "name_too_long")
    assert states.pop(ids[2]) == ("failed", "file_is_a_folder")
    assert set(states.values()) == {("done", None)}
    assert "folder_is_a_file 1" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_a_full_disk_stops_the_image_stage_with_one_line_and_loses_nothing(tmp_path, how):
    products = many_products(6)
    server = ShopServer(TestShop(products=products, noisy_images={p.slug for p in products[3:]})).start()
    try:
        config = write_config(tmp_path, server.shop_toml(), images="workers = 1")
        assert run_cli("run", str(config), "--stages", "crawl", timeout=300).returncode == 0
        run = tmp_path / "run"
        label_everything_by_hand(run / "state.sqlite")
        # Room for the small PNGs and the store's writes, not for a noise photo's PNG.
        with full_disk(run / "images", how, 300_000) as (limit, make_room):
            stopped = subprocess.run([sys.executable, "-m", "ilid_async", "run", str(config), "--stages",
                                      "images,dataset"], cwd=REPO, capture_output=True, text=True, timeout=300,
                                     preexec_fn=limit)
            # One line says why (after the progress lines every run prints as its stages end).
            lines = [line for line in stopped.stderr.splitlines() if not line.startswith("progress ")]
            assert stopped.returncode == 2 and len(lines) == 1, stopped.stderr
            assert lines[0].startswith(f"error: {run / 'images'}: disk full (")
            # Nothing is left leased or failed: what was written is done, the rest is to do.
            states = record_states(run)
            assert {state for state, _ in states.values()} <= {"done", "to_image"}
            assert ("to_image", None) in states.values()
            done = {i for i, (state, _) in states.items() if state == "done"}
            assert all((run / "images" / "machine_part" / f"{i}.png").is_file() for i in done)
            assert not list(run.rglob("*.tmp"))

            make_room()
            again = run_cli("run", str(config), "--stages", "images,dataset", timeout=300)
            assert again.returncode == 0, again.stderr
            assert set(record_states(run).values()) == {("done", None)}
            assert len(list((run / "images" / "machine_part").glob("*.png"))) == 6
    finally:
        server.stop()
