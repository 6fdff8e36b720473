"""Sitemaps: parsed as a stream, gzip by magic bytes, indexes, robots.txt discovery, caps."""

from __future__ import annotations

import gzip

import pytest

from ilid_async.config import HttpSettings
from ilid_async.errors import ItemError
from ilid_async.http import HttpClient
from ilid_async.sitemap import SitemapParser, robots_sitemaps, walk_sitemap

NS = "http://www.sitemaps.org/schemas/sitemap/0.9"


def urlset(n: int) -> bytes:
    body = "".join(f"<url><loc>http://shop.test/p/{i}</loc><lastmod>2024-01-{1 + i % 28:02d}</lastmod></url>"
                   for i in range(n))
    return f'<?xml version="1.0"?><urlset xmlns="{NS}">{body}</urlset>'.encode()


def parse(data: bytes, chunk: int = 7, max_bytes: int = 10_000_000):
    parser = SitemapParser(max_bytes)
    out = []
    for i in range(0, len(data), chunk):
        out += parser.feed(data[i:i + chunk])
    out += parser.close()
    return out, parser


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_urlset_in_small_chunks(compress):
    data = urlset(50)
    entries, parser = parse(gzip.compress(data) if compress else data)
    assert [e.loc for e in entries] == [f"http://shop.test/p/{i}" for i in range(50)]
    assert entries[3].lastmod == "2024-01-04" and all(e.kind == "url" for e in entries)
    assert parser.root_kind == "urlset"


def test_index_entries_are_sitemaps():
    xml = f'<sitemapindex xmlns="{NS}"><sitemap><loc> http://a/s1.xml.gz </loc></sitemap>' \
          f"<sitemap><loc>http://a/s2.xml</loc><lastmod>2024-02-02</lastmod></sitemap></sitemapindex>"
    entries, parser = parse(xml.encode())
    assert [(e.kind, e.loc, e.lastmod) for e in entries] == [
        ("sitemap", "http://a/s1.xml.gz", None), ("sitemap", "http://a/s2.xml", "2024-02-02")]
    assert parser.root_kind == "sitemapindex"


@pytest.mark.parametrize("data", [b"<urlset><url><loc>x</loc>", b"<html><body>hello</body></html>",
                                  b"\x00\x01binary", b""], ids=["truncated", "html", "binary", "empty"])
def test_malformed_sitemaps_are_item_errors(data):
    with pytest.raises(ItemError) as err:
        parse(data)
    assert err.value.reason == "malformed_sitemap"


def test_gzip_bomb_stops_at_cap():
    bomb = gzip.compress(b"<urlset>" + b" " * 50_000_000)  # ~50 MB of spaces, ~50 kB compressed
    parser = SitemapParser(max_bytes=1_000_000)
    with pytest.raises(ItemError) as err:
        for i in range(0, len(bomb), 4096):
            list(parser.feed(bomb[i:i + 4096]))
    assert err.value.reason == "too_large"
    assert parser.decompressed <= 1_000_000 + 1 + 65536  # never much past the cap


def test_robots_sitemap_lines():
    txt = "User-agent: *\nDisallow: /x\nSitemap: http://a/one.xml\nsitemap:http://a/two.xml.gz\nSitemap:\n"
    assert robots_sitemaps(txt) == ["http://a/one.xml", "http://a/two.xml.gz"]


async def test_walk_over_http_robots_index_gzip_and_decompressed_gz(shop_server):
    base = shop_server.base_url
    async with HttpClient(HttpSettings(allow_loopback=True)) as http:
        robots = await http.get(f"{base}/robots.txt", max_bytes=100_000)
        (index_url,) = robots_sitemaps(robots.body.decode())
        assert index_url == f"{base}/sitemap_index.xml.gz"
        children = [e.loc async for batch in walk_sitemap(http, index_url, max_bytes=10**7) for e in batch]
        assert children == [f"{base}/sitemap-products-1.xml.gz", f"{base}/sitemap-products-2.xml.gz",
                            f"{base}/sitemap-pages.xml"]
        pages = []
        for child in children:
            pages += [e.loc async for batch in walk_sitemap(http, child, max_bytes=10**7, batch_size=2)
                      for e in batch]
    slugs = [p.slug for p in shop_server.shop.products]
    assert pages == [f"{base}/p/{s}" for s in slugs] + [f"{base}/about"]


async def test_walk_missing_sitemap_is_http_404(shop_server):
    async with HttpClient(HttpSettings(allow_loopback=True)) as http:
        with pytest.raises(ItemError) as err:
            async for _ in walk_sitemap(http, f"{shop_server.base_url}/nope.xml", max_bytes=10**6):
                pass
    assert err.value.reason == "http_404"


def test_extension_locs_inside_url_are_not_pages():
    xml = (f'<urlset xmlns="{NS}" xmlns:image="http://www.google.com/schemas/sitemap-image/1.1">'
           "<url><loc>http://a/p/1</loc><image:image><image:loc>http://a/img/1.jpg</image:loc>"
           "</image:image></url><url><image:image><image:loc>http://a/img/2.jpg</image:loc></image:image>"
           "<loc>http://a/p/2</loc><lastmod>2024-03-03</lastmod></url></urlset>")
    entries, _ = parse(xml.encode())
    assert [(e.loc, e.lastmod) for e in entries] == [("http://a/p/1", None), ("http://a/p/2", "2024-03-03")]
