"""`ilid-async shop check`: what a shop file makes of one page, for writing and fixing shops.

`check_page` is pure (page bytes in, a `PageCheck` out) and runs the same extraction and
pre-filter as the crawl; `fetch_page` gets the page through http.py like the crawl does
(politeness, robots.txt, address guard); `format_check` turns the result into text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from selectolax.lexbor import LexborHTMLParser

from ilid_async import reasons
from ilid_async.config import HttpSettings, ShopConfig
from ilid_async.output.dataset import stable_id
from ilid_async.crawl.extract import (
    NotExtracted,
    RawRecord,
    candidate_images,
    decode_page,
    extract_product,
    has_ending,
    image_src,
    page_base_url,
)
from ilid_async.filters import Cleaned, Rejected, compile_tradename, prefilter_record
from ilid_async.output.stats import printable
from ilid_async.crawl.structured import ProductData, find_products, text_pieces
from ilid_async.crawl.urls import domain_allowed

__all__ = ["SelectorHit", "PageCheck", "check_page", "fetch_page", "format_check"]

SELECTOR_NAMES = ("product", "image", "label", "data")
_EXPLAIN = {
    reasons.NOT_PRODUCT_PAGE: "not a product page (the product selector, or the page's schema.org "
                             "data, says no product)",
    reasons.NO_IMAGE: "no image with an allowed ending (image_endings)",
    reasons.UNDECODABLE_PAGE: "the page is not text in any known encoding",
    reasons.PAGE_TIME_BUDGET: "extracting the page took longer than its time budget "
                             "(extract.PAGE_TIME_BUDGET seconds)",
}


@dataclass(frozen=True)
class SelectorHit:
    """What one of the shop's selectors finds: `css` is "" when the shop does not set it."""

    name: str
    css: str
    count: int = 0
    first: str = ""  # the first match's text, or for the image selector its img's src
    note: str = ""


@dataclass(frozen=True)
class PageCheck:
    page_url: str
    selectors: list[SelectorHit]
    structured: list[ProductData]
    structured_used: bool  # whether the shop's settings let schema.org data fill fields
    result: RawRecord | NotExtracted
    prefiltered: Cleaned | Rejected | None  # None when there is no raw record
    record_id: str | None
    crawl_notes: list[str] = field(default_factory=list)

    @property
    def yields_record(self) -> bool:
        """The page yields a record that the pre-filter keeps (it would be labelled)."""
        return isinstance(self.prefiltered, Cleaned)


def _joined(pieces: list[str]) -> str:
    return " | ".join(p.strip() for p in pieces if p.strip())


def _selector_hit(tree: LexborHTMLParser, name: str, css: str, page_url: str,
                  endings: list[str]) -> SelectorHit:
    if not css:
        return SelectorHit(name, "", note="not set")
    nodes = tree.css(css)
    if not nodes:
        return SelectorHit(name, css)
    if name == "image":
        images = list(candidate_images(nodes))
        srcs = [src for img in images if (src := image_src(img)) is not None]
        chosen = next((s for s in srcs if has_ending(s, endings)), None)
        note = f"{len(images)} img, {len(srcs)} with src; "
        note += (f"first with an allowed ending: {chosen}" if chosen is not None
                 else f"none ends with {', '.join(endings) or '(any)'}")
        return SelectorHit(name, css, len(nodes), srcs[0] if srcs else "", note)
    pieces = list(text_pieces(nodes[0]))
    note = f"{sum(1 for p in pieces if p.strip())} text pieces" if name == "data" else ""
    return SelectorHit(name, css, len(nodes), _joined(pieces), note)


def _crawl_notes(shop: ShopConfig, page_url: str) -> list[str]:
    """Why the crawl would not reach this URL even if it is a product page."""
    if urlsplit(page_url).scheme not in ("http", "https"):
        return []
    notes = []
    if shop.page_action(page_url) != "product":
        notes.append("no sitemap_rules entry marks this URL as a product page: the crawl would not visit it")
    if not domain_allowed(page_url, shop.allowed_domains):
        notes.append("the host is not in allowed_domains: the crawl would not visit it")
    return notes


def check_page(shop: ShopConfig, body: bytes, page_url: str, charset: str | None = None) -> PageCheck:
    """Run the shop's selectors, the schema.org readers, the extraction and the pre-filter on
    one page, as the crawl would, and keep what each step found."""
    notes = _crawl_notes(shop, page_url)
    sel = shop.selectors
    structured_used = shop.structured_fallback or not all(getattr(sel, n) for n in SELECTOR_NAMES)
    text = decode_page(body, charset)
    if text is None:
        return PageCheck(page_url, [], [], structured_used, NotExtracted(reasons.UNDECODABLE_PAGE),
                         None, None, notes)
    tree = LexborHTMLParser(text)
    hits = [_selector_hit(tree, n, getattr(sel, n), page_url, shop.image_endings) for n in SELECTOR_NAMES]
    structured = find_products(tree, page_base_url(tree, page_url), page_url)
    # The decoded text, not the bytes: the same decoding as above, done once.
    result = extract_product(text, page_url, product=sel.product, image=sel.image, label=sel.label,
                             data=sel.data, image_endings=shop.image_endings,
                             structured_fallback=shop.structured_fallback)
    if isinstance(result, NotExtracted):
        return PageCheck(page_url, hits, structured, structured_used, result, None, None, notes)
    cleaned = prefilter_record(result.label, result.data, compile_tradename(shop.tradename_regex or None))
    return PageCheck(page_url, hits, structured, structured_used, result, cleaned,
                     stable_id(shop.source, result.image_url), notes)


async def fetch_page(shop: ShopConfig, url: str, settings: HttpSettings) -> tuple[str, bytes, str | None]:
    """(final URL, body, charset) of a page fetched as the crawl fetches it; raises ItemError
    with the reason the crawl would record (http_404, robots_disallowed, timeout, ...)."""
    from ilid_async.crawl.http import HttpClient

    async with HttpClient(settings) as http:
        resp = await http.get(url, max_bytes=settings.max_page_bytes,
                              headers={"Accept-Language": shop.accept_language},
                              check_robots=shop.obey_robots)
    resp.raise_for_status()
    return resp.final_url, resp.body, resp.charset


def _quoted(text: str, limit: int = 100) -> str:
    return f'"{printable(text, limit)}"'


def _format_product(p: ProductData) -> list[str]:
    kind = "declares a product" if p.declares_product else "no product type"
    lines = [f"  {p.source:<10} {kind}", f"    name    {_quoted(p.name) if p.name else '-'}"]
    images = f"{len(p.images)}" + (f", first: {printable(p.images[0], 100)}" if p.images else "")
    lines.append(f"    images  {images}")
    data = f"{len(p.data)} pieces" + (f": {_quoted(_joined(p.data))}" if p.data else "")
    lines.append(f"    data    {data}")
    return lines


def format_check(check: PageCheck) -> str:
    lines = [f"page: {printable(check.page_url, 200)}"]
    lines += [f"note: {n}" for n in check.crawl_notes]
    if check.selectors:
        lines += ["", "selectors:"]
        width = max(len(h.css) for h in check.selectors)
        for h in check.selectors:
            if not h.css:
                lines.append(f"  {h.name:<8} (not set)")
                continue
            found = f"{h.count} match" + ("" if h.count == 1 else "es")
            first = f"  first: {_quoted(h.first)}" if h.count else ""
            lines.append(f"  {h.name:<8} {printable(h.css, 60):<{min(width, 60)}}  {found}{first}")
            if h.note:
                lines.append(f"  {'':<8} {printable(h.note, 200)}")
    used = ("used for what the selectors miss" if check.structured_used
            else "not used: all four selectors are set and structured_fallback = false")
    lines += ["", f"structured data ({used}):"]
    for product in check.structured:
        lines += _format_product(product)
    if not check.structured:
        lines.append("  none (no JSON-LD or microdata Product, no OpenGraph tags)")
    result = check.result
    if isinstance(result, NotExtracted):
        lines += ["", f"no record: {result.reason}: {_EXPLAIN.get(result.reason, '')}".rstrip(": ")]
        return "\n".join(lines)
    src = result.sources
    lines += ["", "raw record:",
              f"  image   {printable(result.image_url, 200)}  (from {src.image or 'nowhere'})",
              f"  label   {_quoted(result.label)}  (from {src.label or 'nowhere'})",
              f"  data    {len(result.data)} pieces  (from {src.data or 'nowhere'})"]
    lines += [f"          {_quoted(piece)}" for piece in result.data if piece.strip()]
    lines.append(f"  id      {check.record_id}")
    cleaned = check.prefiltered
    if isinstance(cleaned, Rejected):
        lines += ["", f"pre-filter: dropped ({cleaned.reason})", "", "no record: the pre-filter drops it"]
    elif isinstance(cleaned, Cleaned):
        lines += ["", "pre-filter: kept", f"  label   {_quoted(cleaned.label)}"]
        lines += [f"  data    {_quoted(cleaned.data[0])}"]
        lines += [f"          {_quoted(piece)}" for piece in cleaned.data[1:]]
        lines += ["", "record found"]
    return "\n".join(lines)
