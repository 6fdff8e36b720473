"""The whole run, as a user runs it: the real command against the loopback test shop and the real
small model, with the dataset and images checked on disk."""

from __future__ import annotations

import sqlite3

import orjson
import pytest
from helpers import run_cli, write_config
from PIL import Image
from shop import SHOP_TOML, Product, ShopServer, TestShop, default_products

from ilid_async.output.dataset import DATASET_KEYS, stable_id
from ilid_async.run.store import sample_of

# The model, real subprocesses or real time: `pytest -m "not slow"` leaves these out.
pytestmark = pytest.mark.slow


def load_dataset(config_dir):
    return orjson.loads((config_dir / "run" / "ilid.json").read_bytes())


def record_states(config_dir) -> dict[str, tuple[str, str | None]]:
    db = sqlite3.connect(config_dir / "run" / "state.sqlite")
    try:
        return {url: (state, reason) for url, state, reason in
                db.execute("SELECT image_url, state, reason FROM records")}
    finally:
        db.close()


def check_dataset(tmp_path, base_url):
    entries = load_dataset(tmp_path)
    assert entries, "the run produced no entries"
    for e in entries:
        assert tuple(e) == DATASET_KEYS
        assert e["id"] == stable_id("testshop", e["url"])
        assert e["image"] == f"{e['image'].split('/')[0]}/{e['id']}.png"
        assert e["url"].startswith(base_url + "/img/") and e["source"] == "testshop"
        assert e["label_short"] == e["label_short"].lower() and len(e["label_short"]) >= 4
        with Image.open(tmp_path / "run" / "images" / e["image"]) as img:
            assert (img.format, img.size, img.mode) == ("PNG", (512, 512), "RGB")
    assert len({e["url"] for e in entries}) == len(entries)
    return entries


def test_whole_run_then_rerun_does_no_work_twice(shop_server, tmp_path):
    config = write_config(tmp_path, shop_server.shop_toml())
    first = run_cli("run", str(config))
    assert first.returncode == 0, first.stderr
    entries = check_dataset(tmp_path, shop_server.base_url)
    # The hinge variant shares the hinge's image, the digit-only part loses its label, the
    # gasket has no .jpg: at most the five good products remain.
    assert len(entries) <= 5
    assert "duplicate_image_url 1" in first.stdout and "no_image 1" in first.stdout
    assert "empty_label 1" in first.stdout
    states = record_states(tmp_path)
    assert f"{shop_server.base_url}/img/bearing-2.jpg" in states  # the .jpg after the .png thumbnail
    # The label quality guards count every answer, kept or not.
    db = sqlite3.connect(tmp_path / "run" / "state.sqlite")
    answers = [orjson.loads(a) for (a,) in db.execute("SELECT answer FROM records WHERE answer IS NOT NULL")]
    db.close()
    long_short = sum(len((a["label_short"] or "").split()) > 4 for a in answers)
    assert f"label quality of {len(answers)} answers: label_short over 4 words {long_short}," in first.stdout
    assert all(state in ("done", "rejected") for state, _ in states.values())
    dataset_bytes = (tmp_path / "run" / "ilid.json").read_bytes()
    images = sorted(p.relative_to(tmp_path) for p in (tmp_path / "run" / "images").rglob("*.png"))
    assert len(images) == len(entries)

    shop_server.shop.requests.clear()
    second = run_cli("run", str(config))
    assert second.returncode == 0, second.stderr
    # The sitemaps are read again (to find new and changed pages); no page or image is fetched.
    assert all(p == "/robots.txt" or p.startswith("/sitemap") for p in shop_server.shop.requests)
    assert (tmp_path / "run" / "ilid.json").read_bytes() == dataset_bytes
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "run" / "images").rglob("*.png")) == images


def test_stages_run_one_at_a_time(shop_server, tmp_path):
    config = write_config(tmp_path, shop_server.shop_toml())
    crawl = run_cli("run", str(config), "--stages", "crawl")
    assert crawl.returncode == 0, crawl.stderr
    assert not (tmp_path / "run" / "ilid.json").exists()
    assert {s for s, _ in record_states(tmp_path).values()} == {"to_label", "rejected"}

    shop_server.shop.requests.clear()
    label = run_cli("run", str(config), "--stages", "label")
    assert label.returncode == 0, label.stderr
    assert shop_server.shop.requests == []  # labelling what was crawled before fetches nothing
    assert "to_label" not in {s for s, _ in record_states(tmp_path).values()}
    assert not list((tmp_path / "run").glob("images/*/*.png"))

    rest = run_cli("run", str(config), "--stages", "images,dataset")
    assert rest.returncode == 0, rest.stderr
    # Images only (and robots.txt, which image fetches obey too): no page is fetched again.
    assert all(p.startswith("/img/") or p == "/robots.txt" for p in shop_server.shop.requests)
    assert any(p.startswith("/img/") for p in shop_server.shop.requests)
    check_dataset(tmp_path, shop_server.base_url)


def test_debug_fraction_labels_a_stable_subset(shop_server, tmp_path):
    config = write_config(tmp_path, shop_server.shop_toml(), llm="debug_fraction = 0.5")
    result = run_cli("run", str(config), "--stages", "crawl,label")
    assert result.returncode == 0, result.stderr
    states = record_states(tmp_path)
    for url, (state, reason) in states.items():
        if reason in ("empty_label",):
            continue
        picked = sample_of(stable_id("testshop", url)) < 0.5
        assert (state != "to_label") == picked, (url, state)


def test_broken_image_is_recorded_and_the_run_completes(shop_server, tmp_path):
    shop_server.shop.broken_images.add("/img/castor-4.jpg")
    config = write_config(tmp_path, shop_server.shop_toml())
    result = run_cli("run", str(config))
    assert result.returncode == 0, result.stderr
    castor = f"{shop_server.base_url}/img/castor-4.jpg"
    state, reason = record_states(tmp_path)[castor]
    if state != "rejected":  # the tiny model may have given it no usable label
        assert (state, reason) == ("failed", "http_404")
        assert "http_404 1" in result.stdout
    assert castor not in {e["url"] for e in check_dataset(tmp_path, shop_server.base_url)}


def test_unreachable_start_url_is_a_user_error(tmp_path):
    config = write_config(tmp_path, SHOP_TOML.replace("{base}", "http://127.0.0.1:9"))
    result = run_cli("run", str(config), "--stages", "crawl", timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "testshop.toml: key 'robots_urls': cannot fetch" in lines[0]


def test_two_shops_with_the_same_images_are_assembled_once(shop_server, tmp_path):
    """rules §5: one dataset for all shops; an image URL already in it is skipped."""
    config = write_config(tmp_path, shop_server.shop_toml(), llm="debug_fraction = 1.0")
    mirror = (shop_server.shop_toml().replace('source = "testshop"', 'source = "mirror"')
              .replace("robots_urls", f'sitemap_urls = ["{shop_server.base_url}/mirror-sitemap.xml"]\n#')
              .replace('[["/p/", "product"]]', '[["/mp/", "product"]]'))
    (tmp_path / "shops" / "mirror.toml").write_text(mirror)
    config.write_text(config.read_text().replace('shops = ["shops/testshop.toml"]',
                                                 'shops = ["shops/testshop.toml", "shops/mirror.toml"]'))
    result = run_cli("run", str(config))
    assert result.returncode == 0, result.stderr
    entries = orjson.loads((tmp_path / "run" / "ilid.json").read_bytes())
    assert entries and len({e["url"] for e in entries}) == len(entries)
    db = sqlite3.connect(tmp_path / "run" / "state.sqlite")
    accepted = db.execute("SELECT COUNT(*) FROM records WHERE state='done'").fetchone()[0]
    duplicates = db.execute("SELECT COUNT(*) FROM records WHERE reason='duplicate_in_dataset'").fetchone()[0]
    db.close()
    assert accepted == len(entries) and duplicates >= 1
    assert "duplicate_in_dataset" in result.stdout
    status = run_cli("status", str(config), timeout=60)
    assert status.returncode == 0 and status.stdout == result.stdout.rsplit("\ndataset: ", 1)[0] + "\n"


def test_incremental_recrawl_fetches_only_new_and_changed_pages(shop_server, tmp_path):
    config = write_config(tmp_path, shop_server.shop_toml())
    assert run_cli("run", str(config), "--stages", "crawl").returncode == 0
    shop = shop_server.shop
    # The shop changes: a new product, and one product's page is updated (newer lastmod).
    shop.products.append(Product("latch-9", "Draw latch steel", ["Draw latch.", "Material", "steel"],
                                 ["/img/latch-9.jpg"]))
    shop.lastmod_overrides["/p/clamp-3"] = "2099-01-01T00:00:00+00:00"
    shop.requests.clear()
    second = run_cli("run", str(config), "--stages", "crawl")
    assert second.returncode == 0, second.stderr
    pages = [p for p in shop.requests if p.startswith("/p/")]
    assert sorted(pages) == ["/p/clamp-3", "/p/latch-9"]
    assert f"{shop_server.base_url}/img/latch-9.jpg" in record_states(tmp_path)

    shop.requests.clear()
    full = run_cli("run", str(config), "--stages", "crawl", "--recrawl")
    assert full.returncode == 0, full.stderr
    assert sorted(p for p in shop.requests if p.startswith("/p/")) == sorted(f"/p/{p.slug}" for p in shop.products)


@pytest.mark.parametrize("obey", [True, False])
def test_robots_txt_is_obeyed_unless_the_shop_says_not(shop_server, tmp_path, obey):
    shop_server.shop.disallow = "/p/"
    toml = shop_server.shop_toml().replace('source = "testshop"', f'source = "testshop"\nobey_robots = {str(obey).lower()}')
    config = write_config(tmp_path, toml)
    result = run_cli("run", str(config), "--stages", "crawl")
    assert result.returncode == 0, result.stderr
    fetched = [p for p in shop_server.shop.requests if p.startswith("/p/")]
    db = sqlite3.connect(tmp_path / "run" / "state.sqlite")
    refused = db.execute("SELECT COUNT(*) FROM pages WHERE reason='robots_disallowed'").fetchone()[0]
    db.close()
    if obey:
        assert fetched == [] and refused == len(shop_server.shop.products)
    else:
        assert len(fetched) == len(shop_server.shop.products) and refused == 0


def test_jpeg_images_duplicates_dropped_and_every_output_format(tmp_path):
    # The test shop draws one picture per image size: a second hinge page with its own image
    # URL but the hinge's size serves the very same bytes, an exact duplicate.
    # Same text as well, so that greedy labelling treats both alike.
    hinge = default_products()[0]
    copy = Product("hinge-copy", hinge.name, hinge.text, ["/img/hinge-copy.jpg"], hinge.size)
    server = ShopServer(TestShop(products=default_products() + [copy])).start()
    try:
        config = write_config(tmp_path, server.shop_toml(),
                              images='format = "jpeg"\nquality = 80\nduplicates = "group"',
                              output='formats = ["ilid", "webdataset", "jsonl"]\nshard_size = 2')
        grouped = run_cli("run", str(config))
    finally:
        server.stop()
    assert grouped.returncode == 0, grouped.stderr
    entries = load_dataset(tmp_path)
    assert entries and all(e["image"].endswith(".jpg") for e in entries)
    for e in entries:
        with Image.open(tmp_path / "run" / "images" / e["image"]) as img:
            assert (img.format, img.size) == ("JPEG", (512, 512))
    rows = [orjson.loads(line) for line in (tmp_path / "run" / "metadata.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [e["id"] for e in entries]
    by_url = {r["url"].rsplit("/", 1)[1]: r for r in rows}
    assert by_url["hinge-copy.jpg"]["duplicate_of"] == by_url["hinge-1.jpg"]["id"]
    assert by_url["hinge-copy.jpg"]["image_sha256"] == by_url["hinge-1.jpg"]["image_sha256"]
    heads = [r for r in rows if r["duplicate_of"] is None]
    groups = len(rows) - len(heads)
    assert "duplicate images: " in grouped.stdout and "exact copies" in grouped.stdout
    shards = sorted((tmp_path / "run" / "webdataset").glob("*.tar"))
    assert len(shards) == (len(entries) + 1) // 2

    config.write_text(config.read_text().replace('duplicates = "group"', 'duplicates = "drop"'))
    dropped = run_cli("run", str(config), "--stages", "dataset")
    assert dropped.returncode == 0, dropped.stderr
    assert [e["id"] for e in load_dataset(tmp_path)] == [h["id"] for h in heads]
    assert len(load_dataset(tmp_path)) == len(entries) - groups
    assert len(list((tmp_path / "run" / "webdataset").glob("*.tar"))) == (len(heads) + 1) // 2


def demo_config(tmp_path, port: int):
    from helpers import REPO

    config = tmp_path / "config.toml"
    config.write_text(f'[run]\ndir = "run"\nshops = ["{REPO / "shops" / "demo.toml"}"]\n'
                      f'[demo]\nenabled = true\nport = {port}\nproducts = 5\n'
                      '[http]\nallow_loopback = true\n')
    return config


def test_stages_that_fetch_nothing_start_no_demo_shop(tmp_path):
    # The demo shop is served by the command around the run, and only for stages that fetch:
    # with its port taken (another demo run, say), `--stages dataset` still works, and a crawl
    # stops with one line naming the key.
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        config = demo_config(tmp_path, holder.getsockname()[1])
        dataset = run_cli("run", str(config), "--stages", "dataset", timeout=120)
        assert dataset.returncode == 0, dataset.stderr
        assert orjson.loads((tmp_path / "run" / "ilid.json").read_bytes()) == []
        crawl = run_cli("run", str(config), "--stages", "crawl", timeout=120)
    assert crawl.returncode == 2
    lines = crawl.stderr.strip().splitlines()
    assert len(lines) == 1 and "key 'demo.port': cannot serve the demo shop" in lines[0], crawl.stderr


def test_the_demo_shop_is_served_while_a_crawl_runs(tmp_path):
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = demo_config(tmp_path, port)
    crawl = run_cli("run", str(config), "--stages", "crawl", timeout=300)
    assert crawl.returncode == 0, crawl.stderr
    db = sqlite3.connect(tmp_path / "run" / "state.sqlite")
    (records,) = db.execute("SELECT count(*) FROM records").fetchone()
    db.close()
    assert records > 0  # pages of the demo shop were fetched and extracted
    with socket.socket() as after:  # and the server is gone with the run
        after.bind(("127.0.0.1", port))
