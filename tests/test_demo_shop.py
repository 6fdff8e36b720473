"""The bundled demo shop: catalogue, server routes, sitemaps, pages and images.

Runs a real server on 127.0.0.1 (free port) and talks to it with a real aiohttp client.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import re
import time
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import aiohttp
import pytest
from PIL import Image as PILImage

from ilid_async.demo.catalogue import (
    DIGIT_ONLY,
    LARGEST_SIZE,
    PLACEHOLDER_NAME,
    TRADENAMES,
    Catalogue,
    build_catalogue,
)
from ilid_async.demo.server import DemoServer, render_image, start_demo_server

NS = {"sm": "http://www.sitemaps.org/schemas/sitemap/0.9"}
SHOP_FILE = Path(__file__).resolve().parents[1] / "shops" / "demo.toml"
GZIP_MAGIC = b"\x1f\x8b"


@pytest.fixture
async def shop():
    server = await start_demo_server()
    yield server
    await server.close()


@pytest.fixture
async def http(shop: DemoServer):
    # Depends on shop so the client closes before the server does.
    async with aiohttp.ClientSession() as session:
        yield session


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, str, bytes]:
    async with http.get(url) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


def _locs(xml: bytes) -> list[str]:
    """<loc> of the sitemap's own entries (not image:loc of the image extension)."""
    root = ET.fromstring(xml)
    entries = root.findall("sm:url/sm:loc", NS) + root.findall("sm:sitemap/sm:loc", NS)
    return [el.text for el in entries]


async def _product_urls(shop: DemoServer, http: aiohttp.ClientSession) -> list[str]:
    _, _, index = await _get(http, f"{shop.base_url}/sitemap_index.xml.gz")
    urls: list[str] = []
    for loc in _locs(gzip.decompress(index)):
        if "/products-" in loc:
            _, _, body = await _get(http, loc)
            urls += _locs(gzip.decompress(body) if body[:2] == GZIP_MAGIC else body)
    return urls


# ---------------------------------------------------------------------------------------------
# Catalogue


def test_catalogue_is_deterministic():
    a, b = build_catalogue(), build_catalogue()
    assert a.products == b.products
    assert build_catalogue(seed=8).products != a.products
    assert [p.sku for p in build_catalogue(50).products] == [
        p.sku for p in build_catalogue(50).products]


def test_catalogue_contents():
    cat = build_catalogue()
    assert isinstance(cat, Catalogue) and len(cat.products) == 320
    assert Catalogue.TRADENAMES == TRADENAMES
    assert {"ProLine", "FixMaster", "Ameise"} <= set(TRADENAMES)
    assert len({p.slug for p in cat.products}) == 320 and len({p.sku for p in cat.products}) == 320
    assert all(re.fullmatch(r"[A-Z]{2}-\d{5}", p.sku) for p in cat.products)
    assert len(cat.categories) >= 10
    assert {p.category for p in cat.products} == {c.slug for c in cat.categories}

    # The awkward cases, each present.
    no_image = cat.no_image_products()
    assert 5 <= len(no_image) <= 16
    assert all([i.name for i in p.images] == [PLACEHOLDER_NAME] for p in no_image)
    digits = cat.digit_only_products()
    assert digits and all(DIGIT_ONLY.fullmatch(p.name) for p in digits)
    shared = cat.shared_image_products()
    assert len(shared) >= 2 and len(shared) % 2 == 0
    assert any(p.images[0].format == "PNG" and p.images[1].format == "JPEG" for p in cat.products)

    # Names carry tradenames and sizes; descriptions carry numbers.
    named = [p for p in cat.products if p not in digits]
    assert sum(any(t in p.name for t in TRADENAMES) for p in named) > len(named) / 3
    assert any(re.search(r"M\d+ x \d+", p.name) for p in named)
    assert sum(bool(re.search(r"\d", p.description)) for p in cat.products) > 200
    assert all(1 <= len(re.findall(r"\.(?: |$)", p.description)) <= 3 for p in cat.products)
    keys = {k for p in cat.products for k, _ in p.specs}
    assert {"Material", "Finish", "Weight"} <= keys

    images = [i for i in cat.images if i.format != "SVG"]
    assert all(250 <= i.width <= 2000 and 250 <= i.height <= 1500 for i in images)
    assert any(i.width > i.height for i in images) and any(i.width < i.height for i in images)
    assert any(i.width == i.height for i in images)
    assert any((i.width, i.height) == LARGEST_SIZE for i in images)
    assert any(i.format == "PNG" and i.alpha for i in images)

    p = cat.products[0]
    assert cat.product_by_slug(p.slug) is p
    assert cat.image_by_name(p.images[0].name) == p.images[0]
    assert cat.product_by_slug("nope") is None and cat.image_by_name("nope.jpg") is None


def test_largest_image_renders_fast():
    cat = build_catalogue()
    img = next(i for i in cat.images if (i.width, i.height) == LARGEST_SIZE and i.format == "JPEG")
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        render_image.__wrapped__(img)  # bypass the cache
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.1, timings


# ---------------------------------------------------------------------------------------------
# Server


async def test_robots_txt(shop: DemoServer, http: aiohttp.ClientSession):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", shop.base_url) and shop.port > 0
    status, ctype, body = await _get(http, f"{shop.base_url}/robots.txt")
    text = body.decode()
    assert status == 200 and ctype.startswith("text/plain")
    assert f"Sitemap: {shop.base_url}/sitemap_index.xml.gz" in text.splitlines()
    assert "Disallow: /cart" in text and "Disallow: /search" in text


async def test_sitemaps_and_product_pages(shop: DemoServer, http: aiohttp.ClientSession):
    status, ctype, index = await _get(http, f"{shop.base_url}/sitemap_index.xml.gz")
    assert status == 200 and ctype in ("application/x-gzip", "application/gzip")
    assert index[:2] == GZIP_MAGIC
    locs = _locs(gzip.decompress(index))
    product_maps = [u for u in locs if re.search(r"/sitemaps/products-\d+\.xml\.gz$", u)]
    assert len(product_maps) == 4 and f"{shop.base_url}/sitemaps/pages.xml" in locs
    assert b"<lastmod>" in gzip.decompress(index)

    plain = f"{shop.base_url}/sitemaps/{shop.plain_sitemap_name}"
    assert plain in product_maps
    for url in product_maps:
        status, ctype, body = await _get(http, url)
        assert status == 200
        if url == plain:  # served already decompressed despite the .gz name
            assert body.startswith(b"<?xml") and ctype.startswith("application/xml")
        else:
            assert body[:2] == GZIP_MAGIC and gzip.decompress(body).startswith(b"<?xml")

    urls = await _product_urls(shop, http)
    assert len(urls) >= 300 and len(set(urls)) == len(urls)
    assert all(u.startswith(f"{shop.base_url}/p/") for u in urls)

    limit = asyncio.Semaphore(32)

    async def check(url: str) -> None:
        async with limit:
            status, ctype, body = await _get(http, url)
        assert status == 200 and ctype.startswith("text/html"), url
        page = body.decode()
        assert '<div class="product-detail"' in page and '<table class="specs">' in page
        product = shop.catalogue.product_by_slug(url.rsplit("/", 1)[1])
        assert product is not None
        gallery = page.split('<div class="gallery">', 1)[1].split("</div>", 1)[0]
        first_src = re.search(r'<img src="([^"]+)"', gallery).group(1)
        assert first_src == f"/img/{product.images[0].name}"

    before = len(shop.request_log)
    await asyncio.gather(*(check(u) for u in urls))
    assert len(shop.request_log) - before == len(urls)


async def test_page_sitemap_pages_are_not_products(shop: DemoServer, http: aiohttp.ClientSession):
    status, ctype, body = await _get(http, f"{shop.base_url}/sitemaps/pages.xml")
    assert status == 200 and ctype.startswith("application/xml") and body.startswith(b"<?xml")
    urls = _locs(body)
    assert any("/c/" in u for u in urls)
    for path in ("/about", "/contact", "/shipping"):
        assert f"{shop.base_url}{path}" in urls
    for url in urls:
        status, ctype, page = await _get(http, url)
        assert status == 200 and ctype.startswith("text/html"), url
        assert b"product-detail" not in page, url


@pytest.mark.slow
async def test_images_decode_to_declared_size(shop: DemoServer, http: aiohttp.ClientSession):
    cat = shop.catalogue
    images = [i for i in cat.images if i.format != "SVG"]
    # A sample covering every format/alpha/shape combination plus the largest size.
    sample = {(i.format, i.alpha, (i.width > i.height) - (i.width < i.height)): i for i in images}
    sample = list(sample.values()) + [i for i in images if (i.width, i.height) == LARGEST_SIZE][:2]
    sample += images[:: len(images) // 20]
    for img in sample:
        status, ctype, body = await _get(http, f"{shop.base_url}/img/{img.name}")
        assert status == 200 and ctype == img.content_type, img
        decoded = PILImage.open(io.BytesIO(body))
        assert decoded.format == img.format and decoded.size == (img.width, img.height), img
        assert (decoded.mode == "RGBA") == img.alpha

    status, ctype, body = await _get(http, f"{shop.base_url}/img/{PLACEHOLDER_NAME}")
    assert status == 200 and ctype == "image/svg+xml" and b"<svg" in body

    # Different images really differ, the same image is served identically.
    a, b = images[0], images[1]
    assert render_image(a) != render_image(b) and render_image(a) == render_image.__wrapped__(a)


async def test_shared_image_url_on_two_product_pages(shop: DemoServer, http: aiohttp.ClientSession):
    p1, p2 = shop.catalogue.shared_image_products()[:2]
    name = p1.images[0].name
    assert name in {i.name for i in p2.images}
    for p in (p1, p2):
        _, _, page = await _get(http, f"{shop.base_url}/p/{p.slug}")
        assert f'src="/img/{name}"'.encode() in page


async def test_other_routes_and_404(shop: DemoServer, http: aiohttp.ClientSession):
    for path in ("/cart", "/search?q=hinge", "/", "/static/logo.svg"):
        status, _, _ = await _get(http, f"{shop.base_url}{path}")
        assert status == 200, path
    async with http.post(f"{shop.base_url}/cart", data={"sku": "X", "qty": "1"}) as resp:
        assert resp.status == 200
    for path in ("/nope", "/p/no-such-product", "/c/no-such-category", "/img/nope.jpg",
                 "/sitemaps/products-99.xml.gz"):
        status, ctype, _ = await _get(http, f"{shop.base_url}{path}")
        assert status == 404 and ctype.startswith("text/html"), path

    paths = [path for _, path in shop.request_log]
    assert "/nope" in paths and "/cart" in paths
    times = [t for t, _ in shop.request_log]
    assert times == sorted(times)


async def test_shop_file_matches_demo_pages(shop: DemoServer, http: aiohttp.ClientSession):
    lexbor = pytest.importorskip("selectolax.lexbor")
    config = tomllib.loads(SHOP_FILE.read_text())
    assert set(config) == {"source", "robots_urls", "sitemap_urls", "sitemap_follow",
                           "sitemap_rules", "allowed_domains", "accept_language", "obey_robots",
                           "image_endings", "tradename_regex", "selectors"}
    assert config["robots_urls"] == ["{demo}/robots.txt"]
    pattern = re.compile(config["tradename_regex"], re.IGNORECASE)
    assert all(pattern.fullmatch(t) for t in TRADENAMES)
    sel = config["selectors"]

    # A product with a PNG-first gallery: the selectors find the gallery, label and data.
    cat = shop.catalogue
    product = next(p for p in cat.products if p.images[0].format == "PNG")
    _, _, body = await _get(http, f"{shop.base_url}/p/{product.slug}")
    tree = lexbor.LexborHTMLParser(body.decode())
    assert tree.css_first(sel["product"]) is not None
    srcs = [n.attributes["src"] for n in tree.css(sel["image"])]
    assert srcs == [f"/img/{i.name}" for i in product.images]
    assert "/static/logo.svg" not in srcs
    assert tree.css_first(sel["label"]).text(strip=True) == product.name
    data = tree.css_first(sel["data"]).text(separator="\n")
    assert product.description.split(". ")[0] in data
    assert all(v in data for _, v in product.specs)

    # A category page does not look like a product page.
    _, _, body = await _get(http, f"{shop.base_url}/c/{product.category}")
    assert lexbor.LexborHTMLParser(body.decode()).css_first(sel["product"]) is None


async def test_prerendered_pages_are_the_pages_rendered_on_request(shop: DemoServer,
                                                                   http: aiohttp.ClientSession):
    urls = (await _product_urls(shop, http))[:5]
    on_request = [await _get(http, url) for url in urls]
    cached = await start_demo_server(n_products=len(shop.catalogue.products), prerender=True)
    try:
        async with aiohttp.ClientSession() as other:
            # Same catalogue, another port: the pages differ only in their absolute URLs.
            served = [await _get(other, url.replace(shop.base_url, cached.base_url)) for url in urls]
    finally:
        await cached.close()
    assert len(cached._rendered) == len(shop.catalogue.products)
    for (status, ctype, body), (status2, ctype2, body2) in zip(on_request, served):
        assert status == status2 == 200 and ctype == ctype2
        assert body2 == body.replace(shop.base_url.encode(), cached.base_url.encode())
