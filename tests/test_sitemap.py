"""Sitemaps: parsed as a stream, gzip by magic bytes, indexes, robots.txt discovery, caps; hostile
documents (junk, nesting, entities, huge markup) stay bounded; a property test over arbitrary bytes."""

from __future__ import annotations

import asyncio
import gzip
import tracemalloc
import zlib

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ilid_async.config import HttpSettings
from ilid_async.errors import ItemError
from ilid_async.crawl.http import HttpClient
from ilid_async.crawl.sitemap import SitemapEntry, SitemapParser, robots_sitemaps, walk_sitemap

NS = "http://www.sitemaps.org/schemas/sitemap/0.9"


def urlset(n: int) -> bytes:
    body = "".join(f"<url><loc>http://shop.test/p/{i}</loc><lastmod>2024-01-{1 + i % 28:02d}</lastmod></url>"
                   for i in range(n))
    return f'<?xml version="1.0"?><urlset xmlns="{NS}">{body}</urlset>'.encode()


def parse(data: bytes, chunk: int = 7, max_bytes: int = 10_000_000, **caps):
    parser = SitemapParser(max_bytes, **caps)
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


@pytest.mark.slow
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


# --- hostile sitemaps (issue 13): bounded memory and time whatever the document holds --------

def gz(*parts: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return b"".join([*(c.compress(p) for p in parts), c.flush()])


def outcome(data: bytes, chunk: int, **caps):
    """What a parse comes to: ("ok", entries) or ("error", reason)."""
    try:
        entries, _ = parse(data, chunk, **caps)
    except ItemError as e:
        return "error", e.reason
    return "ok", entries


def error_of(data: bytes, chunk: int = 65536, **caps) -> ItemError:
    with pytest.raises(ItemError) as err:
        parse(data, chunk, **caps)
    return err.value


URLS = "".join(f"<url><loc>http://a/p/{i}</loc></url>" for i in range(3)).encode()
HEAD = f'<urlset xmlns="{NS}">'.encode()
JUNK = b"<a/>" * 50 + b"<b><c x='1'>text</c><!-- c --><?pi x?></b>" * 20 + b"<d><![CDATA[<e/>]]></d>"


def test_junk_elements_stop_at_the_element_cap():
    data = gz(HEAD, JUNK * 2000, URLS, b"</urlset>")
    err = error_of(data, max_elements=20_000)
    assert err.reason == "too_many_elements"


def test_junk_is_parsed_without_a_tree():
    # 1 MB of junk elements around the entries: memory stays that of a few pieces, not a tree.
    data = gz(HEAD, URLS, JUNK * 1000, URLS, b"</urlset>")
    tracemalloc.start()
    try:
        entries, parser = parse(data, 65536)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 512 * 1024, peak  # a tree of its 90,000 elements is over 10 MB
    assert parser.decompressed > 1_000_000
    assert [e.loc for e in entries] == [f"http://a/p/{i}" for i in (0, 1, 2)] * 2


def test_nesting_cap():
    depth = 40
    err = error_of(HEAD + b"<a>" * depth + b"</a>" * depth + b"</urlset>")
    assert err.reason == "too_nested"
    # Real extensions nest five deep: well inside the cap.
    news = (f'<urlset xmlns="{NS}" xmlns:news="http://www.google.com/schemas/sitemap-news/0.9"><url>'
            "<loc>http://a/n/1</loc><news:news><news:publication><news:name>A</news:name>"
            "</news:publication></news:news></url></urlset>").encode()
    assert [e.loc for e in parse(news)[0]] == ["http://a/n/1"]


def test_distinct_names_cap():
    names = b"".join(b"<n%d/>" % i for i in range(1500))
    assert error_of(HEAD + names + URLS + b"</urlset>").reason == "too_many_names"
    attributes = b"".join(b"<a x%d='1'/>" % i for i in range(1500))
    assert error_of(HEAD + attributes + URLS + b"</urlset>").reason == "too_many_names"


@pytest.mark.parametrize("markup", [b"<url a='%s'/>", b"<!--%s-->", b"<?pi %s?>"],
                         ids=["start-tag", "comment", "processing-instruction"])
def test_unfinished_markup_is_capped_while_text_streams(markup):
    big = b"y" * 400_000
    # 400 kB of text inside an element (not a <loc>) is streamed, not held: fine.
    entries, _ = parse(HEAD + b"<url><loc>http://a/p/1</loc><x>" + big + b"</x></url></urlset>", 65536)
    assert [e.loc for e in entries] == ["http://a/p/1"]
    # The same inside one start tag, comment or PI is held whole by expat: refused.
    err = error_of(HEAD + markup % big + URLS + b"</urlset>")
    assert err.reason == "too_large_markup"


def test_overlong_loc_is_dropped():
    long = b"<url><loc>http://a/" + b"x" * 10_000 + b"</loc><lastmod>2024-01-01</lastmod></url>"
    entries, _ = parse(HEAD + long + URLS + b"</urlset>", 1000)
    assert [e.loc for e in entries] == [f"http://a/p/{i}" for i in range(3)]


BILLION_LAUGHS = b"""<?xml version="1.0"?><!DOCTYPE urlset [<!ENTITY l0 "ha">
<!ENTITY l1 "&l0;&l0;&l0;&l0;&l0;&l0;&l0;&l0;&l0;&l0;"><!ENTITY l2 "&l1;&l1;&l1;&l1;&l1;&l1;&l1;&l1;&l1;&l1;">
<!ENTITY l3 "&l2;&l2;&l2;&l2;&l2;&l2;&l2;&l2;&l2;&l2;"><!ENTITY l4 "&l3;&l3;&l3;&l3;&l3;&l3;&l3;&l3;&l3;&l3;">
<!ENTITY l5 "&l4;&l4;&l4;&l4;&l4;&l4;&l4;&l4;&l4;&l4;"><!ENTITY l6 "&l5;&l5;&l5;&l5;&l5;&l5;&l5;&l5;&l5;&l5;">
<!ENTITY l7 "&l6;&l6;&l6;&l6;&l6;&l6;&l6;&l6;&l6;&l6;"><!ENTITY l8 "&l7;&l7;&l7;&l7;&l7;&l7;&l7;&l7;&l7;&l7;">
<!ENTITY l9 "&l8;&l8;&l8;&l8;&l8;&l8;&l8;&l8;&l8;&l8;">]>
<urlset><url><loc>http://a/&l9;</loc></url></urlset>"""


@pytest.mark.parametrize("doc", [
    BILLION_LAUGHS,
    b'<!DOCTYPE urlset [<!ENTITY p "http://a/p/1">]><urlset><url><loc>&p;</loc></url></urlset>',
    b'<!DOCTYPE urlset [<!ENTITY f SYSTEM "file:///etc/passwd">]><urlset><url><loc>&f;</loc></url></urlset>',
    b'<!DOCTYPE urlset [<!ENTITY % d SYSTEM "http://evil/x.dtd"> %d;]><urlset/>',
    b'<!DOCTYPE urlset [<!ATTLIST url a CDATA "x">]><urlset><url><loc>http://a/p/1</loc></url></urlset>',
], ids=["billion-laughs", "internal-entity", "external-entity", "parameter-entity", "attlist"])
def test_dtd_internal_subset_is_refused(doc):
    # A bare DOCTYPE is harmless (expat fetches nothing) and stays accepted.
    bare = b'<!DOCTYPE urlset SYSTEM "http://evil/x.dtd"><urlset><url><loc>http://a/p/1</loc></url></urlset>'
    assert [e.loc for e in parse(bare)[0]] == ["http://a/p/1"]
    tracemalloc.start()
    try:
        err = error_of(doc, chunk=16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.reason == "malformed_sitemap" and "DTD" in err.detail
    assert peak < 256 * 1024


@pytest.mark.parametrize("encoding", ["no-such-codec", "rot13", "shift_jis", "idna"])
def test_unusable_declared_encoding_is_malformed(encoding):
    doc = f'<?xml version="1.0" encoding="{encoding}"?><urlset/>'.encode()
    assert error_of(doc).reason == "malformed_sitemap"
    latin = b'<?xml version="1.0" encoding="ISO-8859-1"?><urlset><url><loc>http://a/caf\xe9</loc></url></urlset>'
    assert [e.loc for e in parse(latin)[0]] == ["http://a/caf\u00e9"]


@pytest.mark.parametrize("data", [b"\x1f\x8b" + b"junk" * 100, gz(urlset(20))[:40] + b"\xff" * 64],
                         ids=["bad-header", "bad-stream"])
def test_corrupt_gzip_is_malformed(data):
    assert error_of(data, chunk=13).reason == "malformed_sitemap"


def test_a_page_that_is_no_sitemap_fails_at_its_first_element():
    parser = SitemapParser(10_000_000)
    with pytest.raises(ItemError) as err:
        list(parser.feed(b"<html><body>" + b"<p>hello</p>" * 1000))  # no close(): fails while it streams
    assert err.value.reason == "malformed_sitemap" and "html" in err.value.detail


def test_prefixes_are_scoped_to_their_element():
    # (Passes on the ElementTree parser too: it guards namespaces through the rewrite.)
    scoped = (f'<urlset xmlns="{NS}"><s:url xmlns:s="{NS}"><s:loc>http://a/p/1</s:loc></s:url>'
              "<s:url><s:loc>http://a/p/2</s:loc></s:url></urlset>").encode()
    assert error_of(scoped).reason == "malformed_sitemap"
    other = (f'<urlset xmlns="{NS}"><url><loc xmlns="urn:other">http://a/x</loc><loc>http://a/p/1</loc></url>'
             "</urlset>").encode()
    assert [e.loc for e in parse(other)[0]] == ["http://a/p/1"]


@pytest.fixture
async def bytes_server():
    """A loopback server for sitemaps given as {path: body}."""
    bodies: dict[str, bytes] = {}

    async def handle(request: web.Request) -> web.Response:
        if request.path not in bodies:
            raise web.HTTPNotFound()
        return web.Response(body=bodies[request.path], content_type="application/x-gzip")

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", bodies
    await runner.cleanup()


@pytest.mark.slow
async def test_walk_yields_to_the_loop_while_a_small_gzip_inflates(bytes_server):
    # 2 MB of XML in a ~10 kB gzip arrives as one chunk; an entry every ~10 kB. Between two turns
    # of another task the walk may hand on an entry or two, not the whole chunk's.
    base, bodies = bytes_server
    rows = b"".join(b"<url><loc>http://a/p/%d</loc></url>" % i + b"<a/>" * 2500 for i in range(200))
    bodies["/s.xml.gz"] = gz(HEAD, rows, b"</urlset>")
    found: list[str] = []
    seen_at_turn: list[int] = []

    async def other_task():
        while True:
            seen_at_turn.append(len(found))
            await asyncio.sleep(0)

    async with HttpClient(HttpSettings(allow_loopback=True)) as http:
        task = asyncio.create_task(other_task())
        async for batch in walk_sitemap(http, f"{base}/s.xml.gz", max_bytes=10**7, batch_size=1):
            found += [e.loc for e in batch]
        task.cancel()
    assert found == [f"http://a/p/{i}" for i in range(200)]
    per_turn = [b - a for a, b in zip(seen_at_turn, seen_at_turn[1:])] + [len(found) - seen_at_turn[-1]]
    assert max(per_turn) <= 2, max(per_turn)


async def test_walk_over_http_records_the_element_cap(bytes_server):
    base, bodies = bytes_server
    bodies["/bomb.xml.gz"] = gz(HEAD, b"<a/>" * 1_000_000, b"</urlset>")  # 4 MB in ~4 kB
    async with HttpClient(HttpSettings(allow_loopback=True)) as http:
        with pytest.raises(ItemError) as err:
            async for _ in walk_sitemap(http, f"{base}/bomb.xml.gz", max_bytes=10**8, max_elements=100_000):
                pass
    assert err.value.reason == "too_many_elements"


# --- property: whatever the bytes, entries or ItemError; and the same whatever the chunking -----

VALID = [
    urlset(3),
    f'<sitemapindex xmlns="{NS}"><sitemap><loc>http://a/s1.xml</loc><lastmod>2024-02-02</lastmod>'
    f"</sitemap></sitemapindex>".encode(),
    (f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="{NS}" '
     'xmlns:image="http://www.google.com/schemas/sitemap-image/1.1">\n<url><loc>http://a/p/1</loc>'
     "<image:image><image:loc>http://a/i.jpg</image:loc></image:image></url>\n"
     "<url><loc>http://a/p/&amp;2</loc><!-- c --><lastmod>2024</lastmod></url></urlset>\n").encode(),
]

# Pieces of markup as well as random bytes, so that mutations reach the parser's deeper states.
TOKENS = [b"<url>", b"</url>", b"<loc>", b"</loc>", b"<sitemap>", b"<lastmod>", b"</lastmod>", b"&amp;",
          b"&#x41;", b"&bad;", b"<![CDATA[x]]>", b"<!-- c -->", b"<?pi x?>", b' xmlns="urn:x"', b" xmlns:s='u'",
          b"<s:loc>", b"<!DOCTYPE urlset>", b'<!DOCTYPE u [<!ENTITY e "x">]>', b"\xef\xbb\xbf", b"\r\n",
          b"\xc3\xa9", b'<?xml version="1.0" encoding="latin-1"?>']
mutation = st.tuples(st.sampled_from(["insert", "delete", "replace", "duplicate"]),
                     st.integers(0, 10_000), st.integers(0, 40),
                     st.one_of(st.binary(max_size=12), st.sampled_from(TOKENS)))


def mutate(data: bytes, mutations) -> bytes:
    for op, pos, length, blob in mutations:
        pos %= len(data) + 1
        if op == "insert":
            data = data[:pos] + blob + data[pos:]
        elif op == "delete":
            data = data[:pos] + data[pos + length:]
        elif op == "replace":
            data = data[:pos] + blob + data[pos + len(blob):]
        else:
            data = data[:pos] + data[pos:pos + length] * 3 + data[pos + length:]
    return data


def only_entries_or_item_error(data: bytes, chunk: int):
    try:
        entries, _ = parse(data, chunk, max_bytes=100_000)
    except ItemError:
        return
    assert all(isinstance(e, SitemapEntry) and e.loc and e.kind in ("url", "sitemap") for e in entries)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.integers(1, 300), st.booleans())
def test_property_arbitrary_bytes(data, chunk, gzipped):
    only_entries_or_item_error(gz(data) if gzipped else data, chunk)
    only_entries_or_item_error(b"\x1f\x8b" + data, chunk)  # a gzip magic before junk


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VALID), st.lists(mutation, max_size=4), st.integers(1, 64), st.integers(0, 200))
def test_property_mutated_sitemaps_same_whatever_the_chunking(doc, mutations, chunk, cut):
    data = mutate(doc, mutations)
    whole = outcome(data, len(data) + 1)
    assert outcome(data, chunk) == whole
    assert outcome(gz(data), chunk) == whole  # gzipped: the same document, inflated in pieces
    packed = gz(data)
    only_entries_or_item_error(mutate(packed, mutations), chunk)  # the gzip stream itself mutated
    only_entries_or_item_error(packed[:len(packed) - cut], chunk)  # a truncated download
