"""Tests of ilid_async.extract: product page -> raw record (SPEC 1)."""

from __future__ import annotations

import pytest

from ilid_async.extract import (
    REASON_NO_IMAGE,
    REASON_NOT_PRODUCT_PAGE,
    REASON_UNDECODABLE_PAGE,
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
    assert extract(html) == NotExtracted(REASON_NOT_PRODUCT_PAGE)


def test_product_selector_decides_not_gallery() -> None:
    # Same page, but the shop's product selector does not match it.
    assert extract(PRODUCT, product="div.not-here") == NotExtracted(REASON_NOT_PRODUCT_PAGE)


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
    assert extract(html, image=image) == NotExtracted(REASON_NO_IMAGE)


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
    assert extract(html) == NotExtracted(REASON_UNDECODABLE_PAGE)


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
    assert extract(html) == NotExtracted(REASON_UNDECODABLE_PAGE)
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
