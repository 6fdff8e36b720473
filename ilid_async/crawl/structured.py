"""schema.org Product data in a parsed page: JSON-LD, microdata and OpenGraph.

Used by extract.py for shops without selectors, or to fill what a shop's selectors miss.
Each reader returns at most one `ProductData` (the page's main product, see
`_main_product`); `find_products` returns them in precedence order, JSON-LD first, then
microdata, then OpenGraph, so a caller takes each field from the first source that has it
and can say where it came from.

Why this order: JSON-LD is written for machines (search engines, merchant feeds) and is
the most complete and clean; microdata is read from the visible markup and may carry UI
text; OpenGraph describes the page for link previews (titles often end in the shop's name,
the image may be a banner), so it only fills gaps.

Cost: a reader's work grows with the page's size, not with its depth times its properties
(microdata is gathered in one walk, see `_item_properties`), and the fields are read for the
main product only. Every reader takes a `Deadline` and checks it between blocks and every
few hundred nodes or values, raising `PageTimeBudgetExceeded` once the page's time is spent.

The text and deadline helpers extract.py also uses live here, so this module imports nothing
from extract.py.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urldefrag, urljoin

from selectolax.lexbor import LexborHTMLParser, LexborNode

from ilid_async.crawl.urls import split_url

__all__ = [
    "JSONLD",
    "MICRODATA",
    "NO_DEADLINE",
    "OPENGRAPH",
    "SELECTOR",
    "Deadline",
    "PageTimeBudgetExceeded",
    "ProductData",
    "find_products",
    "jsonld_product",
    "microdata_product",
    "opengraph_product",
    "text_pieces",
]

T = TypeVar("T")

# Where a field's value came from, as the shop checker shows it.
JSONLD = "jsonld"
MICRODATA = "microdata"
OPENGRAPH = "opengraph"
SELECTOR = "selector"

# schema.org Product and its subtypes that describe one sellable thing.
_PRODUCT_TYPES = frozenset({"Product", "ProductGroup", "IndividualProduct", "ProductModel", "SomeProducts"})
_OG_PRODUCT_TYPES = frozenset({"product", "og:product", "product.item", "product.group"})
# Data strings beyond the description, with the label that goes before each value (as a
# spec table on a page would show them).
_EXTRA_PROPERTIES = (("material", "Material"), ("color", "Colour"))
# Text inside these elements is code, never product text.
_SKIPPED_TEXT_PARENTS = frozenset({"script", "style"})


@dataclass(frozen=True)
class ProductData:
    """What one source says about the page's product; images are absolute URLs in order."""

    source: str
    name: str = ""
    images: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    # The source declares a product (a Product item, og:type product), not just a page.
    declares_product: bool = True


# --- the page's time (shared with extract.py) --------------------------------------------


class PageTimeBudgetExceeded(Exception):
    """A page's extraction ran past its time budget (extract.PAGE_TIME_BUDGET)."""


class Deadline:
    """When a page's extraction must end; `Deadline(None)` never ends.

    The checks are cooperative: loops call `check()` or iterate through `checked()`, so a
    single long C call (the parse, one CSS match) is only noticed when it returns.
    """

    __slots__ = ("_at", "_clock")
    # Items between two clock reads in checked(): one item (a node) costs less than a read.
    EVERY = 256

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._at = None if seconds is None else clock() + seconds

    def check(self) -> None:
        """Raise PageTimeBudgetExceeded if the time is spent."""
        if self._at is not None and self._clock() >= self._at:
            raise PageTimeBudgetExceeded

    def checked(self, items: Iterable[T]) -> Iterator[T]:
        """`items`, checking before the first one and then every EVERY items."""
        if self._at is None:
            yield from items
            return
        for i, item in enumerate(items):
            if i % self.EVERY == 0:
                self.check()
            yield item


NO_DEADLINE = Deadline(None)


def text_pieces(node: LexborNode, deadline: Deadline = NO_DEADLINE) -> Iterator[str]:
    """All descendant text nodes in document order, outside script/style."""
    for child in deadline.checked(node.traverse(include_text=True)):
        if not child.is_text_node:
            continue
        parent = child.parent
        if parent is not None and parent.tag in _SKIPPED_TEXT_PARENTS:
            continue
        text = child.text_content
        if text is not None:
            yield text


def find_products(page: LexborHTMLParser | str, base_url: str, page_url: str | None = None,
                  deadline: Deadline = NO_DEADLINE) -> list[ProductData]:
    """The main product by JSON-LD, microdata and OpenGraph, in that order, those found.

    `base_url` resolves relative URLs (the page URL, or its <base href>); `page_url`
    (default `base_url`) picks the main product when a source has several. Raises
    PageTimeBudgetExceeded once `deadline` has passed.
    """
    tree = LexborHTMLParser(page) if isinstance(page, str) else page
    page_url = page_url or base_url
    # Each reader checks the deadline when it starts, and as it goes.
    found = (
        jsonld_product(tree, base_url, page_url, deadline),
        microdata_product(tree, base_url, page_url, deadline),
        opengraph_product(tree, base_url, deadline),
    )
    return [p for p in found if p is not None]


# --- shared helpers ---------------------------------------------------------------------


def _short_type(name: str) -> str:
    """'https://schema.org/Product', 'schema:Product', 'Product' -> 'Product'."""
    for sep in ("/", "#", ":"):
        name = name.rsplit(sep, 1)[-1]
    return name


def _absolute(url: str, base_url: str) -> str | None:
    """`url` resolved against the base; None for non-web URLs (data:, javascript:, blank)."""
    url = url.strip()
    if not url:
        return None
    resolved = _join(base_url, url)
    parts = split_url(resolved) if resolved else None
    return resolved if parts is not None and parts.scheme in ("http", "https") else None


def _join(base_url: str, url: str) -> str | None:
    """urljoin, or None for a URL no parser takes ("http://[oops/"): page text is input."""
    try:
        return urljoin(base_url, url)
    except ValueError:
        return None


def _same_page(url: str, page_url: str) -> bool:
    """Whether a product's url/@id names this page (fragment and trailing slash ignored)."""
    return urldefrag(url)[0].rstrip("/") == urldefrag(page_url)[0].rstrip("/")


def _main_product(candidates: list[tuple[T, list[str]]], page_url: str,
                  deadline: Deadline = NO_DEADLINE) -> T | None:
    """The candidate whose url or id is this page, else the first in document order.

    A page yields one record, so related products, variants and accessories that a page
    also describes must not win over the product the page is about; shops that mark
    them up usually list the main product first. Candidates are cheap to make (a node and
    its ids); the caller reads the fields of the winner only.
    """
    for product, urls in deadline.checked(candidates):
        if any(_same_page(u, page_url) for u in urls):
            return product
    return candidates[0][0] if candidates else None


def _fragment_pieces(text: str, deadline: Deadline = NO_DEADLINE) -> list[str]:
    """A description that may hold HTML tags or entities -> its text pieces."""
    if "<" not in text and "&" not in text:
        return [text]
    body = LexborHTMLParser(text).body
    deadline.check()
    return list(text_pieces(body, deadline)) if body is not None else []


# --- JSON-LD ----------------------------------------------------------------------------


def _jsonld_blocks(tree: LexborHTMLParser, deadline: Deadline) -> Iterator[Any]:
    """Every parsed <script type="application/ld+json">; a broken block is skipped."""
    for script in tree.css("script[type]"):
        deadline.check()  # a block can be megabytes: check between blocks
        kind = (script.attributes.get("type") or "").split(";")[0].strip().lower()
        if kind != "application/ld+json":
            continue
        text = (script.text(deep=True) or "").strip()
        # CMSs wrap scripts in HTML comments or CDATA sections for ancient browsers.
        for start, end in (("<!--", "-->"), ("//<![CDATA[", "//]]>"), ("<![CDATA[", "]]>")):
            if text.startswith(start) and text.endswith(end):
                text = text[len(start):-len(end)].strip()
        try:
            # strict=False: raw newlines and tabs inside strings are common and harmless.
            yield json.loads(text, strict=False)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's stack
            continue  # one shop plugin's broken block must not hide the others


def _types(node: dict) -> set[str]:
    kinds = node.get("@type")
    if isinstance(kinds, str):
        kinds = [kinds]
    return {_short_type(k) for k in kinds if isinstance(k, str)} if isinstance(kinds, list) else set()


_MAX_LIST_DEPTH = 8  # arrays in arrays; deeper ones state nothing a shop means


def _top_nodes(value: Any, depth: int = 0) -> Iterator[dict]:
    """The items a block states at top level: the block, array items, @graph items."""
    if depth > _MAX_LIST_DEPTH:
        return
    if isinstance(value, list):
        for item in value:
            yield from _top_nodes(item, depth + 1)
    elif isinstance(value, dict):
        if "@graph" in value:
            yield from _top_nodes(value["@graph"], depth + 1)
        yield value


def _jsonld_products(node: dict) -> Iterator[dict]:
    """A top-level node's products: the node, or a page's mainEntity.

    Products nested anywhere else (isRelatedTo, hasVariant, ItemList entries) are other
    products than the one the page is about.
    """
    if _types(node) & _PRODUCT_TYPES:
        yield node
        return
    main = node.get("mainEntity")
    for item in main if isinstance(main, list) else [main]:
        if isinstance(item, dict) and _types(item) & _PRODUCT_TYPES:
            yield item


def _string(value: Any) -> str:
    """A JSON-LD text value: a string, a {"@value": ...} object, or the first of a list."""
    if isinstance(value, list):
        # Not into lists in lists: they hold no text value, and recursing into one nested
        # a thousand deep would overflow the stack.
        value = next((v for v in value if not isinstance(v, list) and _string(v)), "")
    if isinstance(value, dict):
        value = value.get("@value", "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value.strip() if isinstance(value, str) else ""


def _jsonld_images(value: Any, base_url: str, by_id: dict[str, dict], deadline: Deadline,
                   depth: int = 0) -> Iterator[str]:
    """Image URLs from a string, an ImageObject (url / contentUrl), an @id reference to
    one elsewhere in the page's JSON-LD, or a list of those."""
    if isinstance(value, list):
        if depth < _MAX_LIST_DEPTH:
            for item in deadline.checked(value):
                yield from _jsonld_images(item, base_url, by_id, deadline, depth + 1)
        return
    if isinstance(value, dict):
        if set(value) <= {"@id", "@type"} and isinstance(value.get("@id"), str):
            value = by_id.get(value["@id"], {})  # an @id is a name, not an image URL
        value = _string(value.get("contentUrl")) or _string(value.get("url"))
    if isinstance(value, str):
        url = _absolute(value, base_url)
        if url is not None:
            yield url


def _jsonld_data(node: dict, deadline: Deadline) -> list[str]:
    data = _fragment_pieces(_string(node.get("description")), deadline)
    for key, label in _EXTRA_PROPERTIES:
        value = _string(node.get(key))
        if value:
            data += [label, value]
    properties = node.get("additionalProperty")
    for prop in deadline.checked(properties if isinstance(properties, list) else [properties]):
        if isinstance(prop, dict) and _string(prop.get("name")) and _string(prop.get("value")):
            data += [_string(prop.get("name")), _string(prop.get("value"))]
    return [piece for piece in data if piece.strip()]


def jsonld_product(tree: LexborHTMLParser, base_url: str, page_url: str,
                   deadline: Deadline = NO_DEADLINE) -> ProductData | None:
    """The page's main Product in its JSON-LD blocks, or None."""
    deadline.check()
    nodes = [node for block in _jsonld_blocks(tree, deadline) for node in deadline.checked(_top_nodes(block))]
    by_id = {n["@id"]: n for n in nodes if isinstance(n.get("@id"), str)}
    candidates = []
    for node in deadline.checked(nodes):
        for product in _jsonld_products(node):
            ids = [_join(base_url, u) or "" for u in (_string(product.get("url")), product.get("@id"))
                   if isinstance(u, str) and u]
            candidates.append((product, ids))
    main = _main_product(candidates, page_url, deadline)
    if main is None:
        return None
    return ProductData(
        source=JSONLD,
        name=html.unescape(_string(main.get("name"))),
        images=list(_jsonld_images(main.get("image"), base_url, by_id, deadline)),
        data=_jsonld_data(main, deadline),
    )


# --- microdata --------------------------------------------------------------------------

Properties = dict[str, list[LexborNode]]  # an item's own properties by name, in document order


def _item_properties(items: list[LexborNode], deadline: Deadline) -> dict[int, Properties]:
    """The properties of every item in or under `items`, by the item's mem_id.

    One walk of each item's subtree (an item inside one already walked is not walked again).
    An itemprop belongs to its nearest itemscope ancestor, not to the items further out, and
    document order reaches a parent before its children, so each element's item is known
    from its parent's: the parent, if it is an itemscope, else the parent's own item.
    """
    child_owner: dict[int, int | None] = {}  # element -> the item its children belong to
    props: dict[int, Properties] = {}
    for item in items:
        if item.mem_id in child_owner:
            continue
        for node in deadline.checked(item.traverse()):
            attrs = node.attributes
            parent = node.parent
            # The walk's first node (the item) belongs to no item walked here.
            owner = child_owner.get(parent.mem_id) if parent is not None else None
            if owner is not None:
                for name in (attrs.get("itemprop") or "").split():
                    props.setdefault(owner, {}).setdefault(name, []).append(node)
            child_owner[node.mem_id] = node.mem_id if "itemscope" in attrs else owner
    return props


def _url_value(node: LexborNode) -> str:
    """The URL a URL property holds (meta content, img src, a/link href, ...)."""
    attrs = node.attributes
    for attr in ("content", "src", "href", "data", "data-src"):
        value = (attrs.get(attr) or "").strip()
        if value:
            return value
    return ""


def _has_content(node: LexborNode) -> bool:
    """Whether a property's value is its content attribute rather than its text."""
    return node.tag == "meta" or "content" in node.attributes


def _text_value(node: LexborNode, deadline: Deadline) -> str:
    if _has_content(node):
        return (node.attributes.get("content") or "").strip()
    return "".join(text_pieces(node, deadline))


def _microdata_images(nodes: list[LexborNode], base_url: str, props: dict[int, Properties],
                      deadline: Deadline) -> Iterator[str]:
    for node in deadline.checked(nodes):
        if "itemscope" in node.attributes:  # an ImageObject item
            own = props.get(node.mem_id, {})
            inner = own.get("contentUrl", []) + own.get("url", [])
            value = _url_value(inner[0]) if inner else ""
        else:
            value = _url_value(node)
        url = _absolute(value, base_url)
        if url is not None:
            yield url


def _is_product_item(node: LexborNode) -> bool:
    types = (node.attributes.get("itemtype") or "").split()
    return any(_short_type(t) in _PRODUCT_TYPES for t in types)


def _is_page_item(node: LexborNode) -> bool:
    """Top-level items only (or a page's mainEntity): a product that is a property of
    another item is a related product or an accessory."""
    role = (node.attributes.get("itemprop") or "").split()
    return not role or "mainEntity" in role


def _microdata_fields(item: LexborNode, props: dict[int, Properties], base_url: str,
                      deadline: Deadline) -> ProductData:
    own = props.get(item.mem_id, {})
    data: list[str] = []
    for node in own.get("description", [])[:1]:
        data += [_text_value(node, deadline)] if _has_content(node) else list(text_pieces(node, deadline))
    for key, label in _EXTRA_PROPERTIES:
        value = _text_value(own[key][0], deadline).strip() if key in own else ""
        if value:
            data += [label, value]
    for prop in deadline.checked(own.get("additionalProperty", [])):
        inner = props.get(prop.mem_id, {})
        if "name" in inner and "value" in inner:
            data += [_text_value(inner["name"][0], deadline), _text_value(inner["value"][0], deadline)]
    return ProductData(
        source=MICRODATA,
        name=_text_value(own["name"][0], deadline) if "name" in own else "",
        images=list(_microdata_images(own.get("image", []), base_url, props, deadline)),
        data=[piece for piece in data if piece and piece.strip()],
    )


def microdata_product(tree: LexborHTMLParser, base_url: str, page_url: str,
                      deadline: Deadline = NO_DEADLINE) -> ProductData | None:
    """The page's main Product item in its microdata, or None."""
    deadline.check()
    items = [item for item in deadline.checked(tree.css("[itemscope][itemtype]"))
             if _is_product_item(item) and _is_page_item(item)]
    if not items:
        return None
    props = _item_properties(items, deadline)
    candidates = []
    for item in deadline.checked(items):
        own = props.get(item.mem_id, {})
        ids = [_join(base_url, _url_value(n)) or "" for n in own.get("url", [])[:1]]
        itemid = item.attributes.get("itemid")
        ids += [_join(base_url, itemid) or ""] if itemid else []
        candidates.append((item, ids))
    main = _main_product(candidates, page_url, deadline)
    return None if main is None else _microdata_fields(main, props, base_url, deadline)


# --- OpenGraph --------------------------------------------------------------------------


def opengraph_product(tree: LexborHTMLParser, base_url: str,
                      deadline: Deadline = NO_DEADLINE) -> ProductData | None:
    """og:title, og:image (every one, in order) and og:description; None without any."""
    deadline.check()
    values: dict[str, list[str]] = {}
    for meta in deadline.checked(tree.css("meta[content]")):
        attrs = meta.attributes
        # The protocol says property=, but name= is a common mistake that readers accept.
        key = (attrs.get("property") or attrs.get("name") or "").strip().lower()
        if key.startswith("og:"):
            values.setdefault(key, []).append((attrs.get("content") or "").strip())
    if not values:
        return None
    image_urls = [
        url for key in ("og:image", "og:image:secure_url", "og:image:url")
        for value in deadline.checked(values.get(key, [])) if (url := _absolute(value, base_url)) is not None
    ]
    # The HTML parser has already decoded entities in attribute values.
    description = next((v for v in values.get("og:description", []) if v), "")
    return ProductData(
        source=OPENGRAPH,
        name=next((v for v in values.get("og:title", []) if v), ""),
        images=list(dict.fromkeys(image_urls)),
        data=[description] if description else [],
        declares_product=any(v.lower() in _OG_PRODUCT_TYPES for v in values.get("og:type", [])),
    )
