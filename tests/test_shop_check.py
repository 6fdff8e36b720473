"""`ilid-async shop check`: a shop file against one page, fetched from a loopback shop or saved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli
from shop import SHOP_TOML, TestShop, default_products

from ilid_async.cli import main
from ilid_async.config import Selectors, ShopConfig
from ilid_async.output.dataset import stable_id
from ilid_async.crawl.shop_check import check_page

PRODUCTS = {p.slug: p for p in default_products()}


def shop_file(tmp_path: Path, toml: str) -> Path:
    path = tmp_path / "testshop.toml"
    path.write_text(toml)
    return path


@pytest.mark.slow
def test_product_page_over_http(tmp_path, shop_server):
    shop = shop_file(tmp_path, shop_server.shop_toml())
    url = f"{shop_server.base_url}/p/clamp-3"
    result = run_cli("shop", "check", str(shop), url, "--allow-loopback")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    product = PRODUCTS["clamp-3"]
    image_url = f"{shop_server.base_url}{product.images[0]}"
    assert f'label   "{product.name}"  (from selector)' in out
    assert f"image   {image_url}  (from selector)" in out
    assert stable_id("testshop", image_url) in out
    # The pre-filter result: the tradename and the digits are gone.
    assert 'label   "toggle clamp horizontal"' in out
    assert '"Horizontal toggle clamp, holding force N."' in out
    assert out.rstrip().endswith("record found")
    # Fetched like the crawl fetches: robots.txt first.
    assert shop_server.shop.requests[:2] == ["/robots.txt", "/p/clamp-3"]


def test_loopback_is_refused_without_the_flag(tmp_path, shop_server):
    shop = shop_file(tmp_path, shop_server.shop_toml())
    result = run_cli("shop", "check", str(shop), f"{shop_server.base_url}/p/clamp-3")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "--allow-loopback" in result.stderr
    assert shop_server.shop.requests == []


@pytest.mark.parametrize("path, reason", [
    ("/about", "no record: not_product_page"),
    ("/p/gasket-8", "no record: no_image"),  # only a .gif in the gallery
    ("/p/part-7", "pre-filter: dropped (empty_label)"),  # a label of digits only
    ("/p/no-such-product", "cannot be fetched (http_404)"),
])
def test_pages_without_a_record_exit_1(tmp_path, shop_server, capsys, path, reason):
    shop = shop_file(tmp_path, shop_server.shop_toml())
    assert main(["shop", "check", str(shop), shop_server.base_url + path, "--allow-loopback"]) == 1
    out = capsys.readouterr().out
    assert reason in out
    assert "record found" not in out


def test_robots_txt_is_obeyed(tmp_path, shop_server, capsys):
    shop = shop_file(tmp_path, shop_server.shop_toml())
    url = f"{shop_server.base_url}/private/p/x"  # the test shop's robots.txt disallows /private
    assert main(["shop", "check", str(shop), url, "--allow-loopback"]) == 1
    assert "robots_disallowed" in capsys.readouterr().out
    assert "/private/p/x" not in shop_server.shop.requests


def test_selector_report(tmp_path, shop_server, capsys):
    shop = shop_file(tmp_path, shop_server.shop_toml())
    url = f"{shop_server.base_url}/p/bearing-2"  # a PNG thumbnail before the JPEG
    assert main(["shop", "check", str(shop), url, "--allow-loopback"]) == 0
    out = capsys.readouterr().out
    assert 'image    div.gallery img  2 matches  first: "/img/bearing-2.png"' in out
    assert "2 img, 2 with src; first with an allowed ending: /img/bearing-2.jpg" in out
    assert f'label    h1.title         1 match  first: "{PRODUCTS["bearing-2"].name}"' in out
    assert "structured data (not used" in out


def saved_page(tmp_path: Path, slug: str) -> Path:
    path = tmp_path / f"{slug}.html"
    path.write_text(TestShop().product_page(PRODUCTS[slug]))
    return path


def test_saved_page_resolves_against_url_option(tmp_path, capsys):
    shop = shop_file(tmp_path, SHOP_TOML.replace("{base}", "http://shop.example"))
    page = saved_page(tmp_path, "handle-5")
    assert main(["shop", "check", str(shop), str(page), "--url", "http://shop.example/p/handle-5"]) == 0
    out = capsys.readouterr().out
    assert "image   http://shop.example/img/handle-5.jpg  (from selector)" in out
    # SHOP_TOML allows only 127.0.0.1: the checker says the crawl would skip this host.
    assert "note: the host is not in allowed_domains" in out
    assert "sitemap_rules" not in out  # /p/ is a product rule


def test_saved_page_without_url_uses_a_file_url(tmp_path, capsys):
    shop = shop_file(tmp_path, SHOP_TOML.replace("{base}", "http://shop.example"))
    page = saved_page(tmp_path, "handle-5")
    assert main(["shop", "check", str(shop), str(page)]) == 0
    out = capsys.readouterr().out
    assert f"page: {page.resolve().as_uri()}" in out
    assert "image   file:///img/handle-5.jpg" in out


def test_saved_page_without_product_from_the_command(tmp_path):
    shop = shop_file(tmp_path, SHOP_TOML.replace("{base}", "http://shop.example"))
    page = tmp_path / "about.html"
    page.write_text("<html><body><h1>About us</h1><img src='/team.jpg'></body></html>")
    result = run_cli("shop", "check", str(shop), str(page), "--url", "http://shop.example/about")
    assert result.returncode == 1
    assert "no record: not_product_page" in result.stdout
    assert "product  div.product      0 matches" in result.stdout
    # The crawl would not even visit it: no sitemap rule says product.
    assert "no sitemap_rules entry marks this URL" in result.stdout


def test_missing_saved_page_is_a_user_error(tmp_path, capsys):
    shop = shop_file(tmp_path, SHOP_TOML.replace("{base}", "http://shop.example"))
    missing = tmp_path / "gone.html"
    assert main(["shop", "check", str(shop), str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and len(err.strip().splitlines()) == 1


JSONLD_PAGE = """<html><head>
<meta property="og:title" content="Star knob | Shop"><meta property="og:image" content="/img/banner.jpg">
<script type="application/ld+json">{ld}</script></head>
<body><div class="product"><div class="gallery"><img src="/img/knob-photo.jpg"></div>
<div class="info"><p>Knob for clamping.</p></div></div></body></html>"""
KNOB = {"@type": "Product", "name": "Star knob M8", "image": "/img/knob.jpg",
        "description": "Star knob with thread.", "material": "polyamide"}


def test_structured_data_fields_and_their_sources():
    shop = ShopConfig(source="ld", sitemap_urls=["https://example.com/s.xml"], image_endings=[".jpg"])
    check = check_page(shop, JSONLD_PAGE.format(ld=json.dumps(KNOB)).encode(), "https://example.com/p/knob")
    assert check.yields_record
    assert check.result.image_url == "https://example.com/img/knob.jpg"
    assert check.result.label == KNOB["name"]
    assert (check.result.sources.image, check.result.sources.label, check.result.sources.data) == (
        "jsonld", "jsonld", "jsonld")
    assert [p.source for p in check.structured] == ["jsonld", "opengraph"]
    assert check.structured_used
    assert [h.note for h in check.selectors] == ["not set"] * 4


def test_fallback_fills_what_selectors_miss():
    shop = ShopConfig(source="mix", sitemap_urls=["https://example.com/s.xml"], structured_fallback=True,
                      selectors=Selectors(product="div.product", image="div.gallery img", data="div.info"))
    check = check_page(shop, JSONLD_PAGE.format(ld=json.dumps(KNOB)).encode(), "https://example.com/p/knob")
    sources = check.result.sources
    assert (sources.image, sources.label, sources.data) == ("selector", "jsonld", "selector")
    assert check.result.image_url == "https://example.com/img/knob-photo.jpg"
    assert check.result.data == ["Knob for clamping."]


def test_crawled_text_cannot_drive_the_terminal(tmp_path, capsys):
    shop = shop_file(tmp_path, SHOP_TOML.replace("{base}", "http://shop.example"))
    page = tmp_path / "evil.html"
    page.write_text('<div class="product"><h1 class="title">Knob \x1b[2J\x1b]0;pwned\x07 M8</h1>'
                    '<div class="gallery"><img src="/a.jpg"></div><div class="info">Text</div></div>')
    assert main(["shop", "check", str(shop), str(page), "--url", "http://shop.example/p/a"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b[2J" in out
