"""The hostile web: every fault ends recovered or recorded with its reason, and the run completes."""

from __future__ import annotations

import pytest

from conftest import run_cli, write_config
from faulty_shop import IMAGE_EXPECTED, PAGE_EXPECTED, SITEMAP_EXPECTED, FaultyShop
from shop import SHOP_TOML, ShopServer
from ilid_async.store import Store


@pytest.fixture
def faulty():
    server = ShopServer(FaultyShop(), hosts=("127.0.0.2", "127.0.0.3")).start()
    yield server
    server.stop()


def label_everything_by_hand(store_path) -> None:
    """Give every crawled record fixed labels, so the image stage is tested on its own."""
    store = Store(store_path)
    try:
        for task in store.lease_for_labelling(1000):
            labels = {"label_short": "machine part", "label_long": "machine part for machines",
                      "description": "A part.", "material": "steel", "material_finish": None}
            store.commit_labels(task.id, answer=labels, labels=labels, folder="machine_part")
    finally:
        store.close()


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
    hosts = {h["host"]: h for h in store.host_stats()}
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
                   "undecodable_page 2", "malformed_sitemap 1", "too_large 1", "bad_url 1"):
        assert reason in failed_a, reason
    for reason in ("truncated_image 1", "too_many_pixels 1", "not_an_image 1", "not_image_content_type 1"):
        assert reason in failed_b and reason not in failed_a, reason
