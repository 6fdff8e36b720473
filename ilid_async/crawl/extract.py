"""Product page bytes -> raw record (rules §1), with selectolax's lexbor backend.

Only the parsing half of the original spider lives here: given a fetched page
and the shop's CSS selectors, find the product image, the label and the data
pieces.  Filtering them is filters.py's job, so texts are returned as they are.

A shop without selectors, or one that enables the structured fallback, gets
fields from schema.org data (structured.py) instead; pages of shops with all
four selectors and no fallback never pay for that.

Each page has a time budget (PAGE_TIME_BUDGET): a page that outlasts it ends as
NotExtracted(reasons.PAGE_TIME_BUDGET), so one huge or hostile page cannot hold up the
batch of pages a worker process extracts.
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

from ilid_async import reasons
from ilid_async.crawl.structured import NO_DEADLINE, Deadline, PageTimeBudgetExceeded, find_products, text_pieces
from ilid_async.crawl.urls import split_url

__all__ = [
    "RawRecord",
    "NotExtracted",
    "Sources",
    "PAGE_TIME_BUDGET",
    "check_selector",
    "decode_page",
    "extract_product",
    "candidate_images",
    "has_ending",
    "image_src",
    "page_base_url",
]


# Seconds one page may take to extract. A usual product page takes milliseconds, a 5 MB one
# well under a second; a page that needs more is hostile or broken, and its batch waits on it.
PAGE_TIME_BUDGET = 5.0


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


# <meta charset="x"> and <meta http-equiv="Content-Type" content="...; charset=x">
# both put "charset=" inside a meta tag; browsers look in the first 1024 bytes,
# we allow a little more for pages with long heads.
_META_CHARSET = re.compile(rb"<meta[^>]*?charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:\-]+)", re.IGNORECASE)
_SNIFF_BYTES = 4096

# WHATWG: pages labelled latin-1/ascii are really decoded as windows-1252.
_WINDOWS_1252_ALIASES = frozenset({"iso8859-1", "ascii", "cp1252"})
# Text codecs that take any bytes but are no page encodings (browsers know neither): they
# read backslash escapes in the page as characters, and warn about the page's other ones.
_NOT_PAGE_CODECS = frozenset({"unicode-escape", "raw-unicode-escape"})


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
    A charset that names no codec, or no text codec a page can be in, is passed
    over; whatever the bytes and the charset, this returns a str or None.
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
        except (LookupError, ValueError):  # ValueError: a NUL or a lone surrogate in the name
            continue
        if name in _NOT_PAGE_CODECS:
            continue
        if name in _WINDOWS_1252_ALIASES:
            # cp1252 leaves five bytes undefined; latin-1 then decodes them.
            names: tuple[str, ...] = ("cp1252", "latin_1")
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


def _select(node: LexborHTMLParser | LexborNode, css: str, deadline: Deadline) -> list[LexborNode]:
    """node.css(css), turning a selector error into ValueError (config error)."""
    try:
        found = node.css(css)
    except SelectolaxError as exc:
        raise ValueError(f"invalid CSS selector {css!r}: {exc}") from exc
    deadline.check()  # one match of a costly selector on a huge page is one long C call
    return found


def candidate_images(nodes: list[LexborNode], deadline: Deadline = NO_DEADLINE) -> Iterator[LexborNode]:
    """img elements among the gallery matches, or inside matched containers."""
    for node in nodes:
        deadline.check()  # each container's search is a walk of its subtree
        if node.tag == "img":
            yield node
        else:
            yield from node.css("img")


def image_src(img: LexborNode) -> str | None:
    """The img's source: `src`, or `data-src` (lazy loading) when src is missing."""
    attrs = img.attributes
    src = (attrs.get("src") or "").strip()
    if not src:
        src = (attrs.get("data-src") or "").strip()
    return src or None


def has_ending(src: str, endings: Sequence[str]) -> bool:
    """Whether the URL path (query and fragment ignored) ends with an allowed ending."""
    parts = split_url(src)
    if parts is None:  # a src no URL parser takes ("http://[oops/") is no image
        return False
    path = parts.path.lower()
    return any(path.endswith(ending.lower()) for ending in endings)


def page_base_url(tree: LexborHTMLParser, page_url: str) -> str:
    """The URL relative links resolve against: <base href> if any, as browsers do."""
    base = tree.css_first("base[href]")
    if base is not None:
        href = (base.attributes.get("href") or "").strip()
        if href and split_url(href) is not None:
            return urljoin(page_url, href)
    return page_url


def _gallery_image(tree: LexborHTMLParser, css: str, page_url: str, endings: Sequence[str],
                   deadline: Deadline) -> str | None:
    """The first image matched by the gallery selector with an allowed ending, absolute."""
    for img in deadline.checked(candidate_images(_select(tree, css, deadline), deadline)):
        src = image_src(img)
        if src is not None and has_ending(src, endings):
            return urljoin(page_base_url(tree, page_url), src)
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
    time_budget: float | None = PAGE_TIME_BUDGET,
) -> RawRecord | NotExtracted:
    """Extract the raw record of one product page (rules §1).

    `product`, `image`, `label` and `data` are the shop's CSS selectors;
    `charset` is an optional charset from the HTTP Content-Type header.
    An empty selector takes its field from the page's schema.org data (an empty
    `product` selector: the page is a product page if that data declares a
    product); `structured_fallback` also fills fields the selectors miss.

    `time_budget` is the seconds the page may take (None: no limit). The steps
    check it as they go: after decoding, after parsing, after each CSS match,
    every few hundred nodes of a text or microdata walk, between JSON-LD blocks;
    a page past it is NotExtracted(reasons.PAGE_TIME_BUDGET). A single C call
    (the parse, one CSS match) is not interrupted: the check after it ends the page.

    Raises ValueError only for an invalid selector (see check_selector).
    """
    deadline = Deadline(time_budget)
    try:
        tree = _parse(html, charset, deadline)
        if tree is None:
            return NotExtracted(reasons.UNDECODABLE_PAGE)
        if structured_fallback or not (product and image and label and data):
            return _extract_with_structured(tree, page_url, product, image, label, data, image_endings, deadline)
        return _extract_with_selectors(tree, page_url, product, image, label, data, image_endings, deadline)
    except PageTimeBudgetExceeded:
        return NotExtracted(reasons.PAGE_TIME_BUDGET)


def _parse(html: bytes | str, charset: str | None, deadline: Deadline) -> LexborHTMLParser | None:
    """The page's tree; None if its bytes decode in no known way."""
    if isinstance(html, bytes):
        text = decode_page(html, charset)
        if text is None:
            return None
    else:
        text = html
    deadline.check()
    tree = LexborHTMLParser(text)
    deadline.check()  # the parse is one C call: a huge page is noticed only after it
    return tree


def _extract_with_selectors(
    tree: LexborHTMLParser,
    page_url: str,
    product: str,
    image: str,
    label: str,
    data: str,
    image_endings: Sequence[str],
    deadline: Deadline,
) -> RawRecord | NotExtracted:
    """The shop's four selectors alone decide."""
    if not _select(tree, product, deadline):
        return NotExtracted(reasons.NOT_PRODUCT_PAGE)

    image_url = _gallery_image(tree, image, page_url, image_endings, deadline)
    if image_url is None:
        return NotExtracted(reasons.NO_IMAGE)

    label_nodes = _select(tree, label, deadline)
    label_text = "".join(text_pieces(label_nodes[0], deadline)) if label_nodes else ""

    data_nodes = _select(tree, data, deadline)
    pieces = list(text_pieces(data_nodes[0], deadline)) if data_nodes else []

    return RawRecord(image_url=image_url, label=label_text, data=pieces)


def _extract_with_structured(
    tree: LexborHTMLParser,
    page_url: str,
    product: str,
    image: str,
    label: str,
    data: str,
    image_endings: Sequence[str],
    deadline: Deadline,
) -> RawRecord | NotExtracted:
    """Selectors first; schema.org data (read only when needed) for what they miss.

    A given product selector still decides alone whether this is a product page:
    structured data must not turn category or info pages into records.
    """
    if product and not _select(tree, product, deadline):
        return NotExtracted(reasons.NOT_PRODUCT_PAGE)
    image_url = _gallery_image(tree, image, page_url, image_endings, deadline) if image else None
    label_nodes = _select(tree, label, deadline) if label else []
    label_text = "".join(text_pieces(label_nodes[0], deadline)) if label_nodes else ""
    data_nodes = _select(tree, data, deadline) if data else []
    pieces = list(text_pieces(data_nodes[0], deadline)) if data_nodes else []
    has_label, has_data = bool(label_text.strip()), any(p.strip() for p in pieces)
    if product and image_url is not None and has_label and has_data:
        return RawRecord(image_url=image_url, label=label_text, data=pieces)

    base_url = page_base_url(tree, page_url)
    found = find_products(tree, base_url, page_url, deadline)
    if not product and not any(p.declares_product for p in found):
        return NotExtracted(reasons.NOT_PRODUCT_PAGE)
    sources = {"image": "selector", "label": "selector", "data": "selector"}
    if image_url is None:
        sources["image"] = ""
        for p in found:
            # The shop's allowed endings apply here too: they keep icons and other formats out.
            image_url = next((u for u in deadline.checked(p.images) if has_ending(u, image_endings)), None)
            if image_url is not None:
                sources["image"] = p.source
                break
        if image_url is None:
            return NotExtracted(reasons.NO_IMAGE)
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
