"""Tests of ilid_async.crawl.extract: product page -> raw record (rules §1)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ilid_async import reasons
from ilid_async.crawl.extract import (
    NotExtracted,
    RawRecord,
    check_selector,
    decode_page,
    extract_product,
)

PAGE_URL = "https://shop.example/products/bolts/hex-bolt.html"

SELECTORS = {
    "product": "div.product",
    "image": "div.gallery img",
    "label": "h1.title",
    "data": "div.specs",
    "image_endings": (".jpg",),
}


def page(body: str, head: str = "") -> bytes:
    return f"<!doctype html><html><head>{head}</head><body>{body}</body></html>".encode()


def extract(html: bytes, **overrides) -> RawRecord | NotExtracted:
    return extract_product(html, PAGE_URL, **{**SELECTORS, **overrides})


PRODUCT = page(
    """
    <div class="product">
      <div class="gallery">
        <img src="/media/a.png"><img src="/media/b.gif"><img src="/media/c.jpg"><img src="/media/d.jpg">
      </div>
      <h1 class="title">Hex <b>Bolt</b> M12</h1>
      <div class="specs"><p>Steel</p><p>Zinc plated</p></div>
    </div>
    """
)


def test_product_page() -> None:
    assert extract(PRODUCT) == RawRecord(
        image_url="https://shop.example/media/c.jpg",
        label="Hex Bolt M12",
        data=["Steel", "Zinc plated"],
    )


def test_non_product_page() -> None:
    html = page('<div class="category"><div class="gallery"><img src="x.jpg"></div></div>')
    assert extract(html) == NotExtracted(reasons.NOT_PRODUCT_PAGE)


def test_product_selector_decides_not_gallery() -> None:
    # Same page, but the shop's product selector does not match it.
    assert extract(PRODUCT, product="div.not-here") == NotExtracted(reasons.NOT_PRODUCT_PAGE)


@pytest.mark.parametrize(
    ("gallery", "endings", "expected"),
    [
        pytest.param(
            '<img src="a.png"><img src="b.gif"><img src="c.jpg">',
            (".jpg",),
            "https://shop.example/products/bolts/c.jpg",
            id="first-jpg-after-png-gif",
        ),
        pytest.param(
            '<img src="a.jpg"><img src="b.jpg">', (".jpg",), "https://shop.example/products/bolts/a.jpg", id="first-of-two"
        ),
        pytest.param(
            '<img src="../img/x.JPG?v=2">',
            (".jpg",),
            "https://shop.example/products/img/x.JPG?v=2",
            id="parent-dir-uppercase-query",
        ),
        pytest.param(
            '<img src="x.jpg#zoom">', (".jpg",), "https://shop.example/products/bolts/x.jpg#zoom", id="fragment-ignored"
        ),
        pytest.param(
            '<img src="  /m/y.jpg \n">', (".jpg",), "https://shop.example/m/y.jpg", id="src-whitespace-stripped"
        ),
        pytest.param(
            '<img src="//cdn.example/z.jpg">', (".jpg",), "https://cdn.example/z.jpg", id="scheme-relative"
        ),
        pytest.param(
            '<img src="https://cdn.example/q.jpg">', (".jpg",), "https://cdn.example/q.jpg", id="already-absolute"
        ),
        pytest.param(
            '<img src="a.jpg"><img src="b.png">', (".png",), "https://shop.example/products/bolts/b.png", id="shop-endings"
        ),
        pytest.param(
            '<img src="a.gif"><img src="b.JPEG">',
            (".jpg", ".jpeg"),
            "https://shop.example/products/bolts/b.JPEG",
            id="several-endings",
        ),
        pytest.param(
            '<img data-src="lazy.jpg">', (".jpg",), "https://shop.example/products/bolts/lazy.jpg", id="data-src-fallback"
        ),
        pytest.param(
            '<img src="" data-src="lazy.jpg">',
            (".jpg",),
            "https://shop.example/products/bolts/lazy.jpg",
            id="data-src-when-src-blank",
        ),
        pytest.param(
            '<img src="real.jpg" data-src="lazy.jpg">',
            (".jpg",),
            "https://shop.example/products/bolts/real.jpg",
            id="src-wins-over-data-src",
        ),
    ],
)
def test_image_choice(gallery: str, endings: tuple[str, ...], expected: str) -> None:
    html = page(f'<div class="product"><div class="gallery">{gallery}</div></div>')
    result = extract(html, image_endings=endings)
    assert isinstance(result, RawRecord)
    assert result.image_url == expected


@pytest.mark.parametrize(
    ("body", "image"),
    [
        pytest.param('<div class="gallery"><img src="a.png"><img src="b.gif"></div>', "div.gallery img", id="no-jpg"),
        pytest.param('<div class="gallery"><img></div>', "div.gallery img", id="no-src"),
        pytest.param('<div class="gallery"><img src="a.jpg.png"></div>', "div.gallery img", id="jpg-not-at-end"),
        pytest.param('<div class="gallery"><img src="a.png?f=.jpg"></div>', "div.gallery img", id="jpg-only-in-query"),
        pytest.param('<div class="gallery"></div><img src="outside.jpg">', "div.gallery img", id="jpg-outside-gallery"),
        pytest.param('<div class="gallery"><img src="a.jpg"></div>', "div.missing img", id="gallery-selector-no-match"),
        pytest.param('<div class="gallery"><a href="big.jpg">zoom</a></div>', "div.gallery a", id="non-img-match"),
    ],
)
def test_no_image(body: str, image: str) -> None:
    html = page(f'<div class="product">{body}</div>')
    assert extract(html, image=image) == NotExtracted(reasons.NO_IMAGE)


def test_gallery_selector_matching_container() -> None:
    # The selector matches containers, not img elements: their img descendants count.
    html = page(
        '<div class="product"><ul class="thumbs"><li><img src="a.png"></li><li><span><img src="b.jpg"></span></li></ul></div>'
    )
    result = extract(html, image="ul.thumbs li")
    assert isinstance(result, RawRecord)
    assert result.image_url == "https://shop.example/products/bolts/b.jpg"


def test_base_href_is_honoured() -> None:
    html = page('<div class="product"><div class="gallery"><img src="x.jpg"></div></div>', head='<base href="/static/">')
    result = extract(html)
    assert isinstance(result, RawRecord)
    assert result.image_url == "https://shop.example/static/x.jpg"


def test_label_deep_text_as_is() -> None:
    html = page(
        '<div class="product"><div class="gallery"><img src="a.jpg"></div>'
        '<h1 class="title">\n  Hex <span>Bolt <i>DIN</i></span> 933\t</h1>'
        '<h1 class="title">Second title</h1></div>'
    )
    result = extract(html)
    assert isinstance(result, RawRecord)
    assert result.label == "\n  Hex Bolt DIN 933\t"


def test_no_label_and_no_data() -> None:
    html = page('<div class="product"><div class="gallery"><img src="a.jpg"></div></div>')
    assert extract(html) == RawRecord("https://shop.example/products/bolts/a.jpg", "", [])


def test_attribute_selectors() -> None:
    html = page(
        '<div itemscope itemtype="https://schema.org/Product">'
        '<img itemprop="image" src="p.jpg"><span itemprop="name">Nut M8</span>'
        '<div itemprop="description">Brass</div></div>'
    )
    result = extract(
        html, product="[itemtype$=Product]", image="img[itemprop=image]", label="[itemprop=name]", data="[itemprop=description]"
    )
    assert result == RawRecord("https://shop.example/products/bolts/p.jpg", "Nut M8", ["Brass"])


def test_data_pieces_in_order_with_table_cells_and_whitespace() -> None:
    html = page(
        '<div class="product"><div class="gallery"><img src="a.jpg"></div>'
        '<div class="specs">Intro <b>bold</b>\n'
        "<table><tr><th>Material</th><td>Steel</td></tr>"
        "<tr><th>Length</th> <td>40 <small>mm</small></td></tr></table>"
        "<!-- a comment --></div>"
        '<div class="specs">not the first match</div></div>'
    )
    result = extract(html)
    assert isinstance(result, RawRecord)
    assert result.data == ["Intro ", "bold", "\n", "Material", "Steel", "Length", " ", "40 ", "mm"]


def test_script_and_style_text_excluded() -> None:
    html = page(
        '<div class="product"><div class="gallery"><img src="a.jpg"></div>'
        '<h1 class="title">Bolt<script>var x = "no";</script></h1>'
        '<div class="specs"><style>.a{color:red}</style>Steel<script>track()</script><p>Zinc</p></div></div>'
    )
    result = extract(html)
    assert result == RawRecord("https://shop.example/products/bolts/a.jpg", "Bolt", ["Steel", "Zinc"])


# --- decoding -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "html",
    [
        pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), id="png-bytes"),
        pytest.param(b"%PDF-1.7\n\x00\x01\x02", id="pdf-with-nul"),
        pytest.param(b'<div class="product">\xff\xfe\xfa broken</div>', id="not-utf8-no-charset"),
        pytest.param(
            b'<meta charset="utf-8"><div class="product">\xff\xfe\xfa</div>', id="not-utf8-declared-utf8"
        ),
    ],
)
def test_undecodable_page(html: bytes) -> None:
    assert extract(html) == NotExtracted(reasons.UNDECODABLE_PAGE)


LATIN1_BODY = (
    '<div class="product"><div class="gallery"><img src="Schraube-Gr\xf6\xdfe.jpg"></div>'
    '<h1 class="title">Schraube Gr\xf6\xdfe 10 \xb5m</h1><div class="specs">\xe9tain</div></div>'
)


@pytest.mark.parametrize(
    "head",
    [
        pytest.param('<meta charset="iso-8859-1">', id="meta-charset"),
        pytest.param('<meta http-equiv="Content-Type" content="text/html; charset=ISO-8859-1">', id="http-equiv"),
        pytest.param("<meta charset='windows-1252'>", id="windows-1252"),
    ],
)
def test_latin1_page_with_charset_meta(head: str) -> None:
    html = f"<html><head>{head}</head><body>{LATIN1_BODY}</body></html>".encode("latin-1")
    with pytest.raises(UnicodeDecodeError):
        html.decode("utf-8")  # the test really needs the declared charset
    assert extract(html) == RawRecord(
        image_url="https://shop.example/products/bolts/Schraube-Gr\xf6\xdfe.jpg",
        label="Schraube Gr\xf6\xdfe 10 \xb5m",
        data=["\xe9tain"],
    )


def test_charset_from_http_header() -> None:
    html = f"<html><body>{LATIN1_BODY}</body></html>".encode("latin-1")
    assert extract(html) == NotExtracted(reasons.UNDECODABLE_PAGE)
    result = extract(html, charset="latin-1")
    assert isinstance(result, RawRecord)
    assert result.data == ["\xe9tain"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("Größe ✓".encode(), "Größe ✓", id="utf8"),
        pytest.param(b"\xef\xbb\xbfabc", "abc", id="utf8-bom-dropped"),
        pytest.param("<p>ü</p>".encode("utf-16"), "<p>ü</p>", id="utf16-bom"),
        # utf-8 is tried before a (wrong) latin-1 declaration
        pytest.param('<meta charset="latin-1">é'.encode(), '<meta charset="latin-1">é', id="utf8-despite-latin1-meta"),
        # windows-1252 is what browsers use for latin-1 labels
        pytest.param(b'<meta charset="latin-1">\x80', '<meta charset="latin-1">€', id="latin1-as-cp1252"),
        pytest.param(b'<meta charset="latin-1">\x81', '<meta charset="latin-1">\x81', id="cp1252-hole-latin1"),
        pytest.param(b'<meta charset="no-such-codec">\xff', None, id="unknown-charset"),
        # codecs that are not text encodings: undecodable, not a LookupError
        *[pytest.param(f'<meta charset="{c}">'.encode() + b"\xff", None, id=f"not-a-text-codec-{c}")
          for c in ("rot13", "hex", "base64", "zlib", "undefined")],
    ],
)
def test_decode_page(raw: bytes, expected: str | None) -> None:
    assert decode_page(raw) == expected


@pytest.mark.parametrize("charset", ["rot13", "hex", "base64", "zlib", "undefined"])
def test_header_charset_that_is_no_text_codec_is_undecodable(charset: str) -> None:
    assert decode_page(b"<p>\xff</p>", charset) is None


@pytest.mark.parametrize("charset", ["utf\x008", "latin-1\x00", "\udc80", "\ud800latin-1"])
def test_header_charset_no_codec_lookup_takes(charset: str) -> None:
    # codecs.lookup raises ValueError, not LookupError, for a NUL or a lone surrogate.
    assert decode_page(b"<p>\xff</p>", charset) is None
    assert extract(b"<p>\xff</p>", charset=charset) == NotExtracted(reasons.UNDECODABLE_PAGE)


@pytest.mark.parametrize("charset", ["unicode_escape", "raw-unicode-escape"])
def test_text_codecs_that_are_no_page_encodings(charset: str) -> None:
    # Each would decode these bytes, into nonsense: the escape read as a character.
    raw = b"\\u00e9\xe9"
    assert decode_page(raw, charset) is None
    assert decode_page(f'<meta charset="{charset}">'.encode() + raw) is None


def test_str_input_is_accepted() -> None:
    assert extract(PRODUCT.decode()) == extract(PRODUCT)


# --- selectors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "css",
    ["div.gallery img", "h1.title", "[itemprop=name]", "div#main > ul li:first-child img", "a, b", "img[src$='.jpg']"],
)
def test_check_selector_accepts(css: str) -> None:
    check_selector(css)  # must not raise


@pytest.mark.parametrize("css", ["div[[", "", "   ", "div >", "a:no-such-pseudo"])
def test_check_selector_rejects(css: str) -> None:
    with pytest.raises(ValueError, match="selector"):
        check_selector(css)


def test_bad_selector_in_extract_is_value_error() -> None:
    with pytest.raises(ValueError, match="selector"):
        extract(PRODUCT, label="h1[[")


# --- properties: any bytes, any charset ---------------------------------------------------

# What a Content-Type charset or a meta charset may say: codec names, their aliases in odd
# spellings, codecs that are no text codecs, and junk (empty, very long, non-ASCII, NUL).
_CODEC_NAMES = ["utf-8", "UTF8", "latin-1", "ISO-8859-1", "windows-1252", "cp1251", "koi8-r", "shift_jis",
                "euc-jp", "gb2312", "big5", "utf-16", "utf-16-le", "utf-32", "ascii", "iso-2022-jp",
                "rot13", "hex", "base64", "zlib", "bz2", "uu", "quopri", "undefined", "unicode_escape",
                "idna", "punycode", "utf-7", "mbcs", "cp65001", "x-user-defined", "replacement"]
CHARSETS = st.one_of(
    st.sampled_from(_CODEC_NAMES),
    st.builds(lambda name, pad: pad + name + pad, st.sampled_from(_CODEC_NAMES), st.sampled_from(["", " ", "\t", '"'])),
    st.text(max_size=40),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.:", min_size=1, max_size=20),
    st.just("x" * 5000),
)
# Bytes that UTF-8 refuses, so that the charsets are tried.
NOT_UTF8 = st.binary(max_size=200).map(lambda b: b + b"\xff")


def _meta(charset: str, style: int) -> str:
    return [f'<meta charset="{charset}">', f"<meta charset={charset}>",
            f'<meta http-equiv="Content-Type" content="text/html; charset={charset}">'][style]


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | NOT_UTF8, st.none() | CHARSETS)
def test_decode_page_gives_text_or_none(raw: bytes, charset: str | None) -> None:
    result = decode_page(raw, charset)
    assert result is None or isinstance(result, str)


@settings(max_examples=300, deadline=None)
@given(CHARSETS, st.integers(0, 2), NOT_UTF8, st.none() | CHARSETS, st.sampled_from(["utf-8", "latin-1"]))
def test_meta_charset_gives_text_or_none(meta: str, style: int, body: bytes, header: str | None,
                                         tag_encoding: str) -> None:
    raw = _meta(meta, style).encode(tag_encoding, "replace") + body
    result = decode_page(raw, header)
    assert result is None or isinstance(result, str)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.none() | CHARSETS)
def test_utf8_pages_are_utf8_whatever_the_charset_says(text: str, charset: str | None) -> None:
    raw = text.encode("utf-8")  # hypothesis text has no lone surrogates
    assume(b"\x00" not in raw[:1024] and not text.startswith("\ufeff"))
    assert decode_page(raw, charset) == text


# Each charset's own letters (and ASCII), so that pages in it are written in it.
_SINGLE_BYTE = ("cp1251", "iso-8859-2", "koi8-r", "cp1252")
_REPERTOIRES = {
    **{cs: bytes(range(0x20, 0x100)).decode(cs, "ignore") for cs in _SINGLE_BYTE},
    "shift_jis": "日本語のテキスト、ｶﾀｶﾅ", "euc-kr": "한국어 텍스트입니다", "gb2312": "中文文本测试",
}
NATIVE_PAGES = st.sampled_from(sorted(_REPERTOIRES)).flatmap(lambda cs: st.tuples(
    st.just(cs),
    st.text(alphabet=_REPERTOIRES[cs] + "<> =abc", min_size=1, max_size=200).filter(lambda t: not t.isascii()),
))


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@settings(max_examples=200, deadline=None)
@given(NATIVE_PAGES, st.booleans())
def test_declared_charset_decodes_what_it_encoded(native: tuple[str, str], in_meta: bool) -> None:
    charset, text = native
    page_text = (_meta(charset, 0) if in_meta else "") + text
    raw = page_text.encode(charset)
    assume(not _is_utf8(raw))  # valid UTF-8 is read as UTF-8 first
    assert decode_page(raw, None if in_meta else charset) == page_text


# --- properties: extract_product on HTML-ish bytes never raises --------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
    | st.sampled_from(["Product", "https://schema.org/Product", "/a.jpg", "http://[oops/", "data:x", "<p>x</p>"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["@type", "@id", "@graph", "@value", "name", "image", "url", "contentUrl", "description",
                         "mainEntity", "additionalProperty", "value", "material", "color"]) | st.text(max_size=5),
        inner, max_size=5),
    max_leaves=20,
)
_ATTRS = st.lists(st.sampled_from([
    "itemscope", 'itemtype="https://schema.org/Product"', 'itemtype="schema:ImageObject"', 'itemprop="name"',
    'itemprop="image"', 'itemprop="description"', 'itemprop="additionalProperty"', 'itemprop="mainEntity"',
    'itemprop="url"', 'itemprop="value"', 'itemprop="contentUrl"', 'itemid="/p"', 'content="/c.jpg"',
    'src="a.jpg"', 'data-src="//cdn/b.jpg"', 'href="http://[x/"', 'class="product"', 'class="gallery"',
    'class="title"', 'class="specs"', 'property="og:type" content="product"', 'property="og:image" content="/o.jpg"',
]), max_size=4)
_TAG = st.builds(lambda tag, attrs, close: f"<{tag} {' '.join(attrs)}>" + (f"</{tag}>" if close else ""),
                 st.sampled_from(["div", "span", "img", "meta", "a", "link", "p", "table", "td", "script", "style",
                                  "base", "h1", "template", "svg", "b"]), _ATTRS, st.booleans())
# Whole products, so that some pages yield records: by the selectors, JSON-LD, microdata.
_PRODUCTS = st.one_of(
    st.just('<div class="product"><div class="gallery"><img src="/g.jpg"></div><h1 class="title">T</h1>'
            '<div class="specs"><p>S</p></div></div>'),
    st.builds(lambda name, image, extra: '<script type="application/ld+json">' + json.dumps(
        {"@type": "Product", "name": name, "image": image, **extra}) + "</script>",
        _JSON, st.sampled_from(["/a.jpg", ["x.png", "/b.jpg"], {"@type": "ImageObject", "url": "c.jpg"}]) | _JSON,
        st.dictionaries(st.sampled_from(["description", "url", "@id", "additionalProperty"]), _JSON, max_size=3)),
    st.builds(lambda name, inner: '<div itemscope itemtype="https://schema.org/Product">'
              f'<span itemprop="name">{name}</span><img itemprop="image" src="/m.jpg">{inner}</div>',
              st.text(max_size=20), st.lists(_TAG, max_size=5).map("".join)),
)
_FRAGMENT = st.one_of(
    st.text(max_size=30), _TAG, _PRODUCTS,
    _JSON.map(lambda v: f'<script type="application/ld+json">{json.dumps(v)}</script>'),
    st.text(max_size=30).map(lambda t: f'<script type="application/ld+json">{t}</script>'),
    CHARSETS.map(lambda c: f'<meta charset="{c}">'),
    st.sampled_from(["<!--", "-->", "<![CDATA[", "&amp;", "&#xD800;", "&nbsp", "</div>" * 5, "<div>" * 50]),
)
HTMLISH = st.builds(
    lambda parts, encoding, tail: "".join(parts).encode(encoding, "replace") + tail,
    st.lists(_FRAGMENT, max_size=25), st.sampled_from(["utf-8", "latin-1", "utf-16", "cp1252"]),
    st.just(b"") | st.binary(max_size=20),
)
_STRUCTURED = {"product": "", "image": "", "label": "", "data": "", "image_endings": (".jpg", "")}


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(HTMLISH, st.none() | CHARSETS, st.sampled_from([(_STRUCTURED, False), (SELECTORS, False), (SELECTORS, True)]))
def test_extract_product_gives_a_record_or_a_reason(raw: bytes, charset: str | None,
                                                    shop: tuple[dict, bool]) -> None:
    selectors, fallback = shop
    result = extract_product(raw, PAGE_URL, **selectors, charset=charset, structured_fallback=fallback)
    if isinstance(result, NotExtracted):
        assert result.reason in (reasons.NOT_PRODUCT_PAGE, reasons.NO_IMAGE, reasons.UNDECODABLE_PAGE,
                                 reasons.PAGE_TIME_BUDGET)
    else:
        assert isinstance(result, RawRecord)
        assert isinstance(result.image_url, str) and isinstance(result.label, str)
        assert all(isinstance(piece, str) for piece in result.data)
