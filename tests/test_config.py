"""Bad configs are user errors: exit code 2 and one line naming the file and the key."""

from __future__ import annotations

import pytest
from helpers import REPO, assert_one_line_exit_2, run_cli, write_config
from shop import SHOP_TOML

from ilid_async.config import load_config, load_shop
from ilid_async.errors import UserError

SHOP = SHOP_TOML.replace("{base}", "http://127.0.0.1:9")


def test_root_config_loads():
    cfg = load_config(REPO / "config.toml")
    assert cfg.demo.enabled and cfg.http.allow_loopback
    assert [s.source for s in cfg.shops] == ["demo"]
    assert list(cfg.prompt.max_tokens) == ["label_long", "label_short", "description", "material",
                                           "material_finish"]


@pytest.mark.parametrize(
    "sections, shop, expected",
    [
        ({"http": "concurency = 4"}, SHOP, "config.toml: key 'http.concurency': unknown key"),
        ({"http": 'timeout = "fast"'}, SHOP, "config.toml: key 'http.timeout': expected float, got str"),
        ({"images": "width = true"}, SHOP, "config.toml: key 'images.width': expected int, got bool"),
        ({"llm": 'model = "nope.gguf"'}, SHOP, "config.toml: key 'llm.model': model file not found"),
        ({"llm": "debug_fraction = 0"}, SHOP, "config.toml: key 'llm.debug_fraction': must be in (0, 1]"),
        ({"colour": "x = 1"}, SHOP, "config.toml: key 'colour': unknown key"),
        ({"run": "extract_workers = -2"}, SHOP, "config.toml: key 'run.extract_workers': must be -1"),
        ({"llm": "n_parallel = 16\nn_batch = 8"}, SHOP, "config.toml: key 'llm.n_batch': must be at least llm.n_parallel"),
        ({"llm": 'reproducible = true\nflash_attn = "on"'}, SHOP,
         "config.toml: key 'llm.flash_attn': cannot be on with llm.reproducible"),
        ({}, 'imag_endings = [".png"]\n' + SHOP, "testshop.toml: key 'imag_endings': unknown key"),
        ({}, SHOP.replace('"div.product"', "5"), "testshop.toml: key 'selectors.product': expected str"),
        ({}, SHOP.replace('"div.product"', '"div[["'), "testshop.toml: key 'selectors.product': bad CSS"),
        ({}, SHOP.replace('"(proline)"', '"(proline"'), "testshop.toml: key 'tradename_regex': bad regex"),
        ({}, SHOP.replace('"product"]]', '"parse"]]'), "testshop.toml: key 'sitemap_rules[0]'"),
        ({}, SHOP.replace('source = "testshop"', ""), "testshop.toml: key 'source': required"),
    ],
    ids=["unknown-key", "wrong-type", "bool-for-int", "missing-model", "bad-fraction", "unknown-table", "bad-workers",
         "batch-under-parallel", "flash-with-reproducible",
         "shop-unknown-key", "shop-wrong-type", "bad-selector", "bad-regex", "bad-action", "no-source"],
)
def test_bad_config_is_one_line_exit_2(tmp_path, sections, shop, expected):
    assert_one_line_exit_2(write_config(tmp_path, shop, **sections), expected)


def test_missing_shop_file(tmp_path):
    config = write_config(tmp_path, SHOP, run='shops = ["shops/testshop.toml", "shops/missing.toml"]')
    result = run_cli("run", str(config), timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'shops' / 'missing.toml'}: shop file not found"]


def test_duplicate_key_is_invalid_toml(tmp_path):
    config = write_config(tmp_path, SHOP)
    config.write_text(config.read_text() + "[run]\ndir = 'again'\n")
    result = run_cli("run", str(config), timeout=60)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"error: {config}: not valid TOML")


def test_missing_config_file(tmp_path):
    result = run_cli("run", str(tmp_path / "nope.toml"), timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'nope.toml'}: config file not found"


def test_demo_placeholder_and_rules(tmp_path):
    config = write_config(tmp_path, SHOP.replace("http://127.0.0.1:9", "{demo}"))
    shop = load_config(config).shops[0].with_demo_url("http://127.0.0.1:1234")
    assert shop.robots_urls == ["http://127.0.0.1:1234/robots.txt"]
    assert shop.page_action("http://127.0.0.1:1234/p/x") == "product"
    assert shop.page_action("http://127.0.0.1:1234/about") is None
    assert shop.follows_sitemap("http://anything/sitemap.xml")


@pytest.mark.parametrize("path", sorted((REPO / "shops").glob("*.toml")), ids=lambda p: p.name)
def test_every_shop_file_loads(path):
    shop = load_shop(path)
    assert shop.name == path.stem and shop.source
    assert shop.page_action("https://unrelated.example/") is None  # only listed pages are visited


def test_example_catalogue_rules():
    shop = load_shop(REPO / "shops" / "example-catalogue.toml")
    assert shop.page_action("https://www.example.com/en/p/hinge-40x40-zinc-123456") == "product"
    assert shop.page_action("https://www.example.com/en/c/hinges/") == "ignore"
    assert shop.page_action("https://www.example.com/de/p/scharnier-123456") is None
    assert shop.follows_sitemap("https://www.example.com/sitemap-products-2.xml")
    assert not shop.follows_sitemap("https://www.example.com/sitemap-cms.xml")
    assert shop.structured_fallback


NO_SELECTORS = SHOP.split("[selectors]")[0]


@pytest.mark.parametrize(
    "shop, expected",
    [
        (NO_SELECTORS, None),
        (NO_SELECTORS + '[selectors]\nlabel = ""\n', None),
        (NO_SELECTORS + '[selectors]\nlabel = "h1"\n',
         "testshop.toml: key 'selectors.product': required (or set structured_fallback = true)"),
        ("structured_fallback = true\n" + NO_SELECTORS + '[selectors]\nlabel = "h1"\n', None),
        ("structured_fallback = true\n" + NO_SELECTORS + '[selectors]\nlabel = "h1[["\n',
         "testshop.toml: key 'selectors.label': bad CSS"),
        ('structured_fallback = "yes"\n' + SHOP, "testshop.toml: key 'structured_fallback': expected bool"),
    ],
    ids=["no-selectors", "empty-selectors", "some-selectors", "some-with-fallback", "bad-with-fallback",
         "fallback-not-bool"],
)
def test_selectors_and_structured_fallback(tmp_path, shop, expected):
    config = write_config(tmp_path, shop)
    if expected is None:
        assert load_config(config).shops[0].source == "testshop"
    else:
        with pytest.raises(UserError) as err:
            load_config(config)
        assert expected in str(err.value)
