"""Product page bytes -> raw record (SPEC 1), with selectolax's lexbor backend.

Only the parsing half of the original spider lives here: given a fetched page
and the shop's CSS selectors, find the product image, the label and the data
pieces.  Filtering them is filters.py's job, so texts are returned as they are.

A shop without selectors, or one that enables the structured fallback, gets
fields from schema.org data (structured.py) instead; pages of shops with all
four selectors and no fallback never pay for that.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin

# The modest backend (selectolax.parser) refuses to import in selectolax 1.x;
# lexbor handles the plain CSS the shops use (`div.gallery img`, `[itemprop=name]`).
from selectolax.lexbor import LexborHTMLParser, LexborNode, SelectolaxError

from .urls import split_url

__all__ = [
    "RawRecord",
    "NotExtracted",
    "Sources",
    "REASON_NOT_PRODUCT_PAGE",
    "REASON_NO_IMAGE",
    "REASON_UNDECODABLE_PAGE",
    "check_selector",
    "decode_page",
    "extract_product",
]

REASON_NOT_PRODUCT_PAGE = "not_product_page"
REASON_NO_IMAGE = "no_image"
REASON_UNDECODABLE_PAGE = "undecodable_page"


@dataclass(frozen=True)
class Sources:
    """Where each field of a record came from: "selector", "jsonld", "microdata",
    "opengraph", or "" where no source had it."""

    image: str = "selector"
    label: str = "selector"
    data: str = "selector"


@dataclass(frozen=True)
class RawRecord:
    """What one product page yields: absolute image URL, label, data pieces."""

    image_url: str
    label: str
    data: list[str]
    sources: Sources = Sources()


@dataclass(frozen=True)
class NotExtracted:
    """Why a page yielded no record."""

    reason: str


# Text inside these elements is code, never product text.
_SKIPPED_TEXT_PARENTS = frozenset({"script", "style"})

# <meta charset="x"> and <meta http-equiv="Content-Type" content="...; charset=x">
# both put "charset=" inside a meta tag; browsers look in the first 1024 bytes,
# we allow a little more for pages with long heads.
_META_CHARSET = re.compile(rb"<meta[^>]*?charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:\-]+)", re.IGNORECASE)
_SNIFF_BYTES = 4096

# WHATWG: pages labelled latin-1/ascii are really decoded as windows-1252.
_WINDOWS_1252_ALIASES = frozenset({"iso8859-1", "ascii", "cp1252"})


def check_selector(css: str) -> None:
    """Raise ValueError if selectolax cannot parse `css` (a shop config error)."""
    if not isinstance(css, str) or not css.strip():
        raise ValueError(f"empty CSS selector: {css!r}")
    try:
        LexborHTMLParser("").css(css)
    except SelectolaxError as exc:
        raise ValueError(f"invalid CSS selector {css!r}: {exc}") from exc


def _declared_charset(html: bytes) -> str | None:
    """The charset a page declares in a meta tag, as a Python codec name."""
    match = _META_CHARSET.search(html, 0, _SNIFF_BYTES)
    if match is None:
        return None
    try:
        return codecs.lookup(match.group(1).decode("ascii")).name
    except (LookupError, UnicodeDecodeError):
        return None  # an unknown charset declares nothing we can use


def decode_page(html: bytes, charset: str | None = None) -> str | None:
    """Decode page bytes; None if they look binary or decode in no known way.

    UTF-8 is tried first: valid UTF-8 is almost never an accident, while pages
    that declare latin-1 but are really UTF-8 are common.  Then the charset
    given by the caller (e.g. from the HTTP Content-Type), then the meta one.
    """
    if html.startswith(codecs.BOM_UTF16_LE) or html.startswith(codecs.BOM_UTF16_BE):
        try:
            return html.decode("utf-16")
        except UnicodeDecodeError:
            return None
    # NUL bytes never occur in HTML text: this is an image, a PDF, a zip, ...
    if b"\x00" in html[:1024]:
        return None
    try:
        return html.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    for candidate in (charset, _declared_charset(html)):
        if not candidate:
            continue
        try:
            name = codecs.lookup(candidate).name
        except LookupError:
            continue
        if name in _WINDOWS_1252_ALIASES:
            # cp1252 leaves five bytes undefined; latin-1 then decodes them.
            names = ("cp1252", "latin_1")
        else:
            names = (name,)
        for codec in names:
            try:
                return html.decode(codec)
            # A declared "rot13", "hex", "base64" or "zlib" names a bytes-to-bytes codec
            # (LookupError from decode) and "undefined" one that refuses all (UnicodeError):
            # neither decodes a page.
            except (UnicodeError, LookupError):
                continue
    return None


def _select(node: LexborHTMLParser | LexborNode, css: str) -> list[LexborNode]:
    """node.css(css), turning a selector error into ValueError (config error)."""
    try:
        return node.css(css)
    except SelectolaxError as exc:
        raise ValueError(f"invalid CSS selector {css!r}: {exc}") from exc


def _text_pieces(node: LexborNode) -> Iterator[str]:
    """All descendant text nodes in document order, outside script/style."""
    for child in node.traverse(include_text=True):
        if not child.is_text_node:
            continue
        parent = child.parent
        if parent is not None and parent.tag in _SKIPPED_TEXT_PARENTS:
            continue
        text = child.text_content
        if text is not None:
            yield text


def _candidate_images(nodes: list[LexborNode]) -> Iterator[LexborNode]:
    """img elements among the gallery matches, or inside matched containers."""
    for node in nodes:
        if node.tag == "img":
            yield node
        else:
            yield from node.css("img")


def _image_src(img: LexborNode) -> str | None:
    """The img's source: `src`, or `data-src` (lazy loading) when src is missing."""
    attrs = img.attributes
    src = (attrs.get("src") or "").strip()
    if not src:
        src = (attrs.get("data-src") or "").strip()
    return src or None


def _has_ending(src: str, endings: Sequence[str]) -> bool:
    """Whether the URL path (query and fragment ignored) ends with an allowed ending."""
    parts = split_url(src)
    if parts is None:  # a src no URL parser takes ("http://[oops/") is no image
        return False
    path = parts.path.lower()
    return any(path.endswith(ending.lower()) for ending in endings)


def _base_url(tree: LexborHTMLParser, page_url: str) -> str:
    """The URL relative links resolve against: <base href> if any, as browsers do."""
    base = tree.css_first("base[href]")
    if base is not None:
        href = (base.attributes.get("href") or "").strip()
        if href and split_url(href) is not None:
            return urljoin(page_url, href)
    return page_url


def _gallery_image(tree: LexborHTMLParser, css: str, page_url: str, endings: Sequence[str]) -> str | None:
    """The first image matched by the gallery selector with an allowed ending, absolute."""
    for img in _candidate_images(_select(tree, css)):
        src = _image_src(img)
        if src is not None and _has_ending(src, endings):
            return urljoin(_base_url(tree, page_url), src)
    return None


def extract_product(
    html: bytes | str,
    page_url: str,
    *,
    product: str,
    image: str,
    label: str,
    data: str,
    image_endings: Sequence[str],
    charset: str | None = None,
    structured_fallback: bool = False,
) -> RawRecord | NotExtracted:
    """Extract the raw record of one product page (SPEC 1).

    `product`, `image`, `label` and `data` are the shop's CSS selectors;
    `charset` is an optional charset from the HTTP Content-Type header.
    An empty selector takes its field from the page's schema.org data (an empty
    `product` selector: the page is a product page if that data declares a
    product); `structured_fallback` also fills fields the selectors miss.
    Raises ValueError only for an invalid selector (see check_selector).
    """
    if isinstance(html, bytes):
        text = decode_page(html, charset)
        if text is None:
            return NotExtracted(REASON_UNDECODABLE_PAGE)
    else:
        text = html
    tree = LexborHTMLParser(text)

    if structured_fallback or not (product and image and label and data):
        return _extract_with_structured(tree, page_url, product, image, label, data, image_endings)

    if not _select(tree, product):
        return NotExtracted(REASON_NOT_PRODUCT_PAGE)

    image_url = _gallery_image(tree, image, page_url, image_endings)
    if image_url is None:
        return NotExtracted(REASON_NO_IMAGE)

    label_nodes = _select(tree, label)
    label_text = "".join(_text_pieces(label_nodes[0])) if label_nodes else ""

    data_nodes = _select(tree, data)
    pieces = list(_text_pieces(data_nodes[0])) if data_nodes else []

    return RawRecord(image_url=image_url, label=label_text, data=pieces)


def _extract_with_structured(
    tree: LexborHTMLParser,
    page_url: str,
    product: str,
    image: str,
    label: str,
    data: str,
    image_endings: Sequence[str],
) -> RawRecord | NotExtracted:
    """Selectors first; schema.org data (read only when needed) for what they miss.

    A given product selector still decides alone whether this is a product page:
    structured data must not turn category or info pages into records.
    """
    # Late import: structured.py uses this module's text helpers.
    from .structured import find_products

    if product and not _select(tree, product):
        return NotExtracted(REASON_NOT_PRODUCT_PAGE)
    image_url = _gallery_image(tree, image, page_url, image_endings) if image else None
    label_nodes = _select(tree, label) if label else []
    label_text = "".join(_text_pieces(label_nodes[0])) if label_nodes else ""
    data_nodes = _select(tree, data) if data else []
    pieces = list(_text_pieces(data_nodes[0])) if data_nodes else []
    has_label, has_data = bool(label_text.strip()), any(p.strip() for p in pieces)
    if product and image_url is not None and has_label and has_data:
        return RawRecord(image_url=image_url, label=label_text, data=pieces)

    base_url = _base_url(tree, page_url)
    found = find_products(tree, base_url, page_url)
    if not product and not any(p.declares_product for p in found):
        return NotExtracted(REASON_NOT_PRODUCT_PAGE)
    sources = {"image": "selector", "label": "selector", "data": "selector"}
    if image_url is None:
        sources["image"] = ""
        for p in found:
            # The shop's allowed endings apply here too: they keep icons and other formats out.
            image_url = next((u for u in p.images if _has_ending(u, image_endings)), None)
            if image_url is not None:
                sources["image"] = p.source
                break
        if image_url is None:
            return NotExtracted(REASON_NO_IMAGE)
    if not has_label:
        sources["label"] = ""
        named = next((p for p in found if p.name.strip()), None)
        if named is not None:
            label_text, sources["label"] = named.name, named.source
    if not has_data:
        sources["data"] = ""
        described = next((p for p in found if p.data), None)
        if described is not None:
            pieces, sources["data"] = list(described.data), described.source
    return RawRecord(image_url=image_url, label=label_text, data=pieces, sources=Sources(**sources))
