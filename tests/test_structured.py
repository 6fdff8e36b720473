"""Tests of ilid_async.crawl.structured (schema.org Product in JSON-LD, microdata, OpenGraph) and of
extract_product using it for shops without selectors or with the structured fallback."""

from __future__ import annotations

import itertools
import json
import sqlite3

import pytest
from helpers import run_cli, write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from selectolax.lexbor import LexborHTMLParser
from shop import Product, ShopServer, TestShop

from ilid_async import reasons
from ilid_async.crawl.extract import (
    PAGE_TIME_BUDGET,
    NotExtracted,
    RawRecord,
    Sources,
    extract_product,
)
from ilid_async.crawl.structured import (
    JSONLD,
    MICRODATA,
    NO_DEADLINE,
    OPENGRAPH,
    Deadline,
    PageTimeBudgetExceeded,
    ProductData,
    _item_properties,
    find_products,
    jsonld_product,
    microdata_product,
    opengraph_product,
)

PAGE_URL = "https://shop.example/p/hex-bolt"


def page(body: str = "", head: str = "") -> str:
    return f"<!doctype html><html><head>{head}</head><body>{body}</body></html>"


def ld(*blocks: object | str) -> str:
    """<script> blocks; a str is written as it is (broken JSON), anything else is dumped."""
    return "".join(
        f'<script type="application/ld+json">{b if isinstance(b, str) else json.dumps(b)}</script>'
        for b in blocks
    )


def og(**props: str) -> str:
    return "".join(f'<meta property="og:{k}" content="{v}">' for k, v in props.items())


def only(html: str, source: str) -> ProductData | None:
    """The product one source finds on the page."""
    return next((p for p in find_products(html, PAGE_URL) if p.source == source), None)


BOLT = {"@context": "https://schema.org", "@type": "Product", "name": "Hex bolt M12",
        "image": "https://cdn.example/bolt.jpg", "description": "Hex bolt, fully threaded."}


# --- JSON-LD ----------------------------------------------------------------------------


def test_deeply_nested_jsonld_beside_a_product_block() -> None:
    """A block nested deeper than Python's stack, or arrays nested deep, do not hide the page's
    valid Product block."""
    deep = "[" * 100_000 + "]" * 100_000
    lists = json.dumps([[[[[[[[[[[[BOLT]]]]]]]]]]]])
    for junk in (deep, lists):
        found = only(page(ld(junk, BOLT)), JSONLD)
        assert found is not None and found.name == "Hex bolt M12"


def test_urls_no_parser_takes_are_skipped() -> None:
    bolt = {**BOLT, "url": "http://[oops/p", "@id": "http://[oops/#id",
            "image": ["http://[oops/a.jpg", "https://cdn.example/bolt.jpg"]}
    found = only(page(ld(bolt)), JSONLD)
    assert found is not None and found.images == ["https://cdn.example/bolt.jpg"]


def test_jsonld_product_fields() -> None:
    html = page(head=ld({**BOLT, "material": "steel", "color": "zinc plated",
                         "additionalProperty": [{"@type": "PropertyValue", "name": "Length", "value": 40},
                                                {"@type": "PropertyValue", "name": "Drive"}],
                         "offers": {"@type": "Offer", "price": "0.12", "name": "Offer name"},
                         "brand": {"@type": "Brand", "name": "Fixmaster"}}))
    assert only(html, JSONLD) == ProductData(
        source=JSONLD, name="Hex bolt M12", images=["https://cdn.example/bolt.jpg"],
        data=["Hex bolt, fully threaded.", "Material", "steel", "Colour", "zinc plated", "Length", "40"],
    )


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        pytest.param("/media/bolt.jpg", ["https://shop.example/media/bolt.jpg"], id="relative-root"),
        pytest.param("bolt.jpg", ["https://shop.example/p/bolt.jpg"], id="relative-path"),
        pytest.param("//cdn.example/b.jpg", ["https://cdn.example/b.jpg"], id="scheme-relative"),
        pytest.param(["a.jpg", "/b.jpg"], ["https://shop.example/p/a.jpg", "https://shop.example/b.jpg"],
                     id="list-of-strings"),
        pytest.param({"@type": "ImageObject", "url": "/i/a.jpg", "width": 800}, ["https://shop.example/i/a.jpg"],
                     id="image-object-url"),
        pytest.param({"@type": "ImageObject", "contentUrl": "/i/c.jpg", "url": "/i/page.html"},
                     ["https://shop.example/i/c.jpg"], id="content-url-before-url"),
        pytest.param([{"@type": "ImageObject", "url": "/1.jpg"}, "/2.jpg", {"contentUrl": "/3.jpg"}],
                     ["https://shop.example/1.jpg", "https://shop.example/2.jpg", "https://shop.example/3.jpg"],
                     id="list-of-objects-and-strings"),
        pytest.param(["data:image/png;base64,AAAA", "  ", "javascript:x()", "/ok.jpg"],
                     ["https://shop.example/ok.jpg"], id="non-web-urls-skipped"),
        pytest.param({"@type": "ImageObject", "caption": "no url"}, [], id="object-without-url"),
        pytest.param(None, [], id="missing"),
    ],
)
def test_jsonld_image_shapes(image: object, expected: list[str]) -> None:
    product = only(page(head=ld({**BOLT, "image": image})), JSONLD)
    assert product is not None and product.images == expected


def test_broken_block_is_skipped_and_the_others_still_count() -> None:
    html = page(head=ld('{"@type": "Product", "name": "Broken",}', '{"@type": "Product"',
                        {"@type": "Organization", "name": "Shop"}, BOLT))
    product = only(html, JSONLD)
    assert product is not None and product.name == "Hex bolt M12"


def test_only_broken_blocks_give_nothing() -> None:
    assert only(page(head=ld("{not json", "")), JSONLD) is None


def test_lenient_json_raw_newline_and_comment_wrapper() -> None:
    block = '<!--\n{"@type": "Product", "name": "Line\none", "image": "/a.jpg"}\n-->'
    product = only(page(head=ld(block)), JSONLD)
    assert product is not None and product.name == "Line\none"


def test_script_type_case_and_parameters() -> None:
    html = page(head=f'<script type=" Application/LD+JSON; charset=utf-8">{json.dumps(BOLT)}</script>'
                     f'<script type="text/javascript">{json.dumps({**BOLT, "name": "JS"})}</script>')
    product = only(html, JSONLD)
    assert product is not None and product.name == "Hex bolt M12"


@pytest.mark.parametrize(
    "kind",
    ["Product", ["Thing", "Product"], "https://schema.org/Product", "http://schema.org/ProductGroup",
     "schema:IndividualProduct"],
)
def test_type_spellings(kind: object) -> None:
    assert only(page(head=ld({**BOLT, "@type": kind})), JSONLD) is not None


@pytest.mark.parametrize("kind", ["Organization", "BreadcrumbList", ["WebPage"], 5, None])
def test_other_types_are_not_products(kind: object) -> None:
    assert only(page(head=ld({**BOLT, "@type": kind})), JSONLD) is None


def test_graph_with_image_reference() -> None:
    # The shape WordPress SEO plugins write: one @graph, the image an @id reference.
    block = {"@context": "https://schema.org", "@graph": [
        {"@type": "WebPage", "@id": PAGE_URL + "#webpage", "name": "Hex bolt | Shop"},
        {"@type": "ImageObject", "@id": PAGE_URL + "#primaryimage", "url": "/wp/bolt-1.jpg"},
        {"@type": "Product", "@id": PAGE_URL + "#product", "name": "Hex bolt",
         "image": {"@id": PAGE_URL + "#primaryimage"}},
    ]}
    product = only(page(head=ld(block)), JSONLD)
    assert product is not None
    assert (product.name, product.images) == ("Hex bolt", ["https://shop.example/wp/bolt-1.jpg"])


def test_unresolved_image_reference_is_not_an_image_url() -> None:
    product = only(page(head=ld({**BOLT, "image": {"@id": "#primaryimage"}})), JSONLD)
    assert product is not None and product.images == []


def test_top_level_array_and_main_entity() -> None:
    block = [{"@type": "BreadcrumbList"},
             {"@type": "ItemPage", "mainEntity": {**BOLT, "name": "Main entity bolt"}}]
    product = only(page(head=ld(block)), JSONLD)
    assert product is not None and product.name == "Main entity bolt"


def test_several_products_first_wins() -> None:
    html = page(head=ld({**BOLT, "name": "First"}, [{**BOLT, "name": "Second"}]))
    assert only(html, JSONLD).name == "First"


@pytest.mark.parametrize(
    "key, value",
    [("url", PAGE_URL), ("url", "/p/hex-bolt/"), ("@id", PAGE_URL + "#product"), ("url", "hex-bolt?")],
)
def test_several_products_the_one_naming_this_page_wins(key: str, value: str) -> None:
    html = page(head=ld({**BOLT, "name": "Accessory", "url": "https://shop.example/p/washer"},
                        {**BOLT, "name": "Page product", key: value}))
    assert only(html, JSONLD).name == "Page product"


def test_nested_products_are_not_the_page_product() -> None:
    related = {**BOLT, "name": "Related nut"}
    html = page(head=ld(
        {"@type": "ItemList", "itemListElement": [{"@type": "ListItem", "item": related}]},
        {**BOLT, "name": "Group", "isRelatedTo": related, "hasVariant": [related]},
    ))
    assert only(html, JSONLD).name == "Group"
    # A category page that lists products has no product of its own.
    assert only(page(head=ld({"@type": "ItemList", "itemListElement": [related]})), JSONLD) is None


def test_jsonld_values_nested_deep_in_lists() -> None:
    """Lists in lists a few hundred deep (json.loads takes them) are no text and no image,
    not a RecursionError that fails the page."""
    deep = json.loads("[" * 500 + '"x"' + "]" * 500)
    found = only(page(ld({**BOLT, "name": deep, "description": deep, "color": deep, "image": [deep, "/a.jpg"]})),
                 JSONLD)
    assert found == ProductData(source=JSONLD, name="", images=["https://shop.example/a.jpg"], data=[])


def test_text_values_html_and_entities() -> None:
    html = page(head=ld({**BOLT, "name": ["", {"@value": "Bolt 1/2&quot; &amp; nut"}],
                         "description": "<p>Steel bolt</p><ul><li>DIN&nbsp;933</li></ul>"}))
    product = only(html, JSONLD)
    assert product.name == 'Bolt 1/2" & nut'
    assert product.data == ["Steel bolt", "DIN\xa0933"]


# --- microdata --------------------------------------------------------------------------

MICRO = """
<div itemscope itemtype="https://schema.org/Product">
  <h1 itemprop="name">Toggle clamp</h1>
  <div itemprop="brand" itemscope itemtype="https://schema.org/Brand"><span itemprop="name">Klemmfix</span></div>
  <img itemprop="image" src="/img/clamp.jpg" alt=""><link itemprop="image" href="clamp-2.jpg">
  <meta itemprop="image" content="https://cdn.example/clamp-3.jpg">
  <div itemprop="offers" itemscope itemtype="https://schema.org/Offer">
    <span itemprop="name">Offer</span><span itemprop="description">In stock</span>
  </div>
  <div itemprop="description"><p>Horizontal clamp.</p><table><tr><th>Force</th><td>900 N</td></tr></table></div>
  <span itemprop="material">steel</span>
  <div itemprop="additionalProperty" itemscope itemtype="https://schema.org/PropertyValue">
    <span itemprop="name">Finish</span><meta itemprop="value" content="zinc-plated">
  </div>
</div>
"""


def test_microdata_product_fields_ignore_nested_items() -> None:
    assert only(page(MICRO), MICRODATA) == ProductData(
        source=MICRODATA, name="Toggle clamp",
        images=["https://shop.example/img/clamp.jpg", "https://shop.example/p/clamp-2.jpg",
                "https://cdn.example/clamp-3.jpg"],
        data=["Horizontal clamp.", "Force", "900 N", "Material", "steel", "Finish", "zinc-plated"],
    )


def test_microdata_image_object_and_meta_description() -> None:
    html = page("""<div itemscope itemtype="http://schema.org/Product">
      <meta itemprop="name" content="Castor">
      <div itemprop="image" itemscope itemtype="http://schema.org/ImageObject">
        <meta itemprop="contentUrl" content="/c/castor.jpg"><span itemprop="caption">Castor</span>
      </div>
      <meta itemprop="description" content="Swivel castor &amp; brake">
    </div>""")
    product = only(html, MICRODATA)
    assert (product.name, product.images, product.data) == (
        "Castor", ["https://shop.example/c/castor.jpg"], ["Swivel castor & brake"])


def test_microdata_several_names_in_one_itemprop_and_lazy_src() -> None:
    html = page('<div itemscope itemtype="https://schema.org/Thing https://schema.org/Product">'
                '<span itemprop="name alternateName">Knob</span><img itemprop="image" data-src="knob.jpg"></div>')
    product = only(html, MICRODATA)
    assert (product.name, product.images) == ("Knob", ["https://shop.example/p/knob.jpg"])


def test_microdata_related_and_main_products() -> None:
    related = ('<div itemprop="isRelatedTo" itemscope itemtype="https://schema.org/Product">'
               '<span itemprop="name">Related</span></div>')
    html = page('<div itemscope itemtype="https://schema.org/Product">'
                f'<span itemprop="name">Main</span>{related}</div>')
    assert only(html, MICRODATA).name == "Main"
    # Two top-level products: the one whose url is this page wins over the first.
    html = page('<div itemscope itemtype="https://schema.org/Product"><span itemprop="name">Other</span></div>'
                '<div itemscope itemtype="https://schema.org/Product"><span itemprop="name">This</span>'
                '<a itemprop="url" href="/p/hex-bolt">link</a></div>')
    assert only(html, MICRODATA).name == "This"
    # A page item whose mainEntity is the product.
    html = page('<body itemscope itemtype="https://schema.org/ItemPage"><div itemprop="mainEntity" itemscope '
                'itemtype="https://schema.org/Product"><span itemprop="name">Main entity</span></div>')
    assert only(html, MICRODATA).name == "Main entity"
    # Only a nested product, or no product at all: nothing.
    assert only(page(f'<div itemscope itemtype="https://schema.org/Offer">{related}</div>'), MICRODATA) is None
    assert only(page('<div itemscope itemtype="https://schema.org/Organization">'
                     '<span itemprop="name">Shop</span></div>'), MICRODATA) is None


def deep_microdata_page(depth: int = 3000) -> str:
    """The hostile page of issue 13: ~0.75 MB, a Product whose additionalProperty items nest
    `depth` deep, each holding the next (every itemprop once walked up to its item)."""
    one = ('<div itemprop="additionalProperty" itemscope itemtype="https://schema.org/PropertyValue">'
           '<span itemprop="name">Finish {0}</span><span itemprop="value">' + "v" * 80 + "</span>")
    return page('<div itemscope itemtype="https://schema.org/Product"><h1 itemprop="name">Deep clamp</h1>'
                '<img itemprop="image" src="/deep.jpg">' + "".join(one.format(i) for i in range(depth))
                + "</div>" * depth + "</div>")


def test_deep_microdata_page_extracts_within_the_default_budget() -> None:
    html = deep_microdata_page()
    assert len(html) > 700_000
    result = extract_product(html.encode(), PAGE_URL, **NO_SELECTORS, time_budget=PAGE_TIME_BUDGET)
    # Only the outermost property is the product's own: the others belong to their items.
    assert result == RawRecord("https://shop.example/deep.jpg", "Deep clamp", ["Finish 0", "v" * 80],
                               Sources(image=MICRODATA, label=MICRODATA, data=MICRODATA))


# Markup for the property test below: items nest in items, properties in both, with and
# without itemscope/itemtype, so every "which item owns this itemprop" case comes up.
_MICRO_ATTRS = st.lists(st.sampled_from([
    "itemscope", 'itemtype="https://schema.org/Product"', 'itemtype="https://schema.org/PropertyValue"',
    'itemprop="name"', 'itemprop="image"', 'itemprop="additionalProperty"', 'itemprop="mainEntity"',
    'itemprop="name value"', "itemprop", 'content="c"', 'src="/i.jpg"',
]), max_size=4, unique=True)
_MICRO_MARKUP = st.recursive(
    st.sampled_from(["", "text", "<br>", '<meta itemprop="url" content="/p">']),
    lambda inner: st.builds(lambda tag, attrs, children: f"<{tag} {' '.join(attrs)}>{''.join(children)}</{tag}>",
                            st.sampled_from(["div", "span", "p", "section"]), _MICRO_ATTRS,
                            st.lists(inner, max_size=4)),
    max_leaves=30,
)


def _owner_by_walking_up(node):
    """The definition: an itemprop's item is its nearest itemscope ancestor."""
    parent = node.parent
    while parent is not None and "itemscope" not in parent.attributes:
        parent = parent.parent
    return parent


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_MICRO_MARKUP, min_size=1, max_size=4))
def test_one_walk_finds_the_properties_walking_up_finds(fragments: list[str]) -> None:
    tree = LexborHTMLParser(page("".join(fragments)))
    items = [n for n in tree.css("[itemscope][itemtype]")]
    walked = _item_properties(items, NO_DEADLINE)
    for item in (n for top in items for n in [top, *top.css("[itemscope]")]):
        expected: dict[str, list[int]] = {}
        for node in item.css("[itemprop]"):
            owner = _owner_by_walking_up(node)
            if owner is not None and owner.mem_id == item.mem_id:
                for name in (node.attributes.get("itemprop") or "").split():
                    expected.setdefault(name, []).append(node.mem_id)
        found = walked.get(item.mem_id, {})
        assert {name: [n.mem_id for n in nodes] for name, nodes in found.items()} == expected


# --- OpenGraph --------------------------------------------------------------------------


def test_opengraph_fields() -> None:
    head = (og(type="product", title="Hinge 40 | Shop", description="Zinc hinge.", image="/og/hinge.jpg")
            + og(image="https://cdn.example/hinge-2.jpg")
            + '<meta property="og:image:secure_url" content="https://shop.example/og/hinge.jpg">')
    assert only(page(head=head), OPENGRAPH) == ProductData(
        source=OPENGRAPH, name="Hinge 40 | Shop",
        images=["https://shop.example/og/hinge.jpg", "https://cdn.example/hinge-2.jpg"],
        data=["Zinc hinge."], declares_product=True,
    )


@pytest.mark.parametrize(
    ("head", "declares"),
    [
        (og(type="website", title="T"), False),
        (og(title="T"), False),
        (og(type="og:product", title="T"), True),
        (og(type="product.item", title="T"), True),
        ('<meta name="og:type" content="Product"><meta name="og:title" content="T">', True),
    ],
)
def test_opengraph_type(head: str, declares: bool) -> None:
    product = only(page(head=head), OPENGRAPH)
    assert product is not None and product.name == "T" and product.declares_product is declares


def test_no_structured_data_at_all() -> None:
    assert find_products(page('<h1>Hinge</h1><meta name="description" content="x">'), PAGE_URL) == []


def test_sources_in_precedence_order() -> None:
    html = page(MICRO, head=og(title="OG") + ld(BOLT))
    assert [p.source for p in find_products(html, PAGE_URL)] == [JSONLD, MICRODATA, OPENGRAPH]


# --- extract_product with structured data -----------------------------------------------

NO_SELECTORS = {"product": "", "image": "", "label": "", "data": "", "image_endings": (".jpg",)}
SELECTORS = {"product": "div.product", "image": "div.gallery img", "label": "h1.title", "data": "div.specs",
             "image_endings": (".jpg",)}


def test_shop_without_selectors_uses_jsonld() -> None:
    html = page('<div class="x">no markup the shop set selectors for</div>', head=ld(BOLT))
    assert extract_product(html.encode(), PAGE_URL, **NO_SELECTORS) == RawRecord(
        image_url="https://cdn.example/bolt.jpg", label="Hex bolt M12", data=["Hex bolt, fully threaded."],
        sources=Sources(image=JSONLD, label=JSONLD, data=JSONLD),
    )


def test_fields_come_from_the_first_source_that_has_them() -> None:
    # JSON-LD has a name only, with a .png image the shop does not allow; microdata has the
    # data; OpenGraph has the only .jpg image.
    html = page('<div itemscope itemtype="https://schema.org/Product"><span itemprop="name">Micro</span>'
                '<img itemprop="image" src="/m.gif"><p itemprop="description">From microdata</p></div>',
                head=ld({"@type": "Product", "name": "From JSON-LD", "image": "/a.png"})
                + og(title="From OG", image="/og.jpg"))
    assert extract_product(html, PAGE_URL, **NO_SELECTORS) == RawRecord(
        image_url="https://shop.example/og.jpg", label="From JSON-LD", data=["From microdata"],
        sources=Sources(image=OPENGRAPH, label=JSONLD, data=MICRODATA),
    )


def test_shop_image_endings_apply_to_structured_images() -> None:
    html = page(head=ld({**BOLT, "image": ["/a.png", "/b.webp"]}))
    assert extract_product(html, PAGE_URL, **NO_SELECTORS) == NotExtracted(reasons.NO_IMAGE)
    result = extract_product(html, PAGE_URL, **{**NO_SELECTORS, "image_endings": (".webp",)})
    assert isinstance(result, RawRecord) and result.image_url == "https://shop.example/b.webp"
    # An empty ending accepts any URL (CDNs often serve images without a file ending).
    html = page(head=ld({**BOLT, "image": "/media/catalog/12345?w=800"}))
    result = extract_product(html, PAGE_URL, **{**NO_SELECTORS, "image_endings": ("",)})
    assert isinstance(result, RawRecord) and result.image_url == "https://shop.example/media/catalog/12345?w=800"


@pytest.mark.parametrize(
    "head",
    [
        pytest.param("", id="nothing"),
        pytest.param(og(type="website", title="Category", image="/banner.jpg"), id="og-website"),
        pytest.param(ld({"@type": "ItemList", "itemListElement": [BOLT]}), id="listing"),
    ],
)
def test_shop_without_selectors_needs_a_declared_product(head: str) -> None:
    assert extract_product(page(head=head), PAGE_URL, **NO_SELECTORS) == NotExtracted(reasons.NOT_PRODUCT_PAGE)


def test_opengraph_product_type_alone_is_a_product_page() -> None:
    html = page(head=og(type="product", title="Latch", image="latch.jpg"))
    assert extract_product(html, PAGE_URL, **NO_SELECTORS) == RawRecord(
        "https://shop.example/p/latch.jpg", "Latch", [], Sources(image=OPENGRAPH, label=OPENGRAPH, data=""))


def test_structured_images_honour_base_href() -> None:
    html = page(head='<base href="https://static.example/shop/">' + ld({**BOLT, "image": "bolt.jpg"}))
    result = extract_product(html, PAGE_URL, **NO_SELECTORS)
    assert isinstance(result, RawRecord) and result.image_url == "https://static.example/shop/bolt.jpg"


SELECTOR_PAGE = ('<div class="product"><div class="gallery">{gallery}</div><h1 class="title">{title}</h1>'
                 '<div class="specs">{specs}</div></div>')


def selector_page(gallery: str = '<img src="/g.jpg">', title: str = "Selector title",
                  specs: str = "<p>Selector data</p>", head: str = ld(BOLT)) -> str:
    return page(SELECTOR_PAGE.format(gallery=gallery, title=title, specs=specs), head=head)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({}, RawRecord("https://shop.example/g.jpg", "Selector title", ["Selector data"]),
                     id="selectors-found-all"),
        pytest.param({"title": "  \n"}, RawRecord("https://shop.example/g.jpg", "Hex bolt M12", ["Selector data"],
                                                  Sources(label=JSONLD)), id="blank-label"),
        pytest.param({"gallery": '<img src="/g.png">', "specs": "<p> </p>"},
                     RawRecord("https://cdn.example/bolt.jpg", "Selector title", ["Hex bolt, fully threaded."],
                               Sources(image=JSONLD, data=JSONLD)), id="no-image-blank-data"),
        pytest.param({"title": "", "head": ""}, RawRecord("https://shop.example/g.jpg", "", ["Selector data"],
                                                          Sources(label="")), id="nothing-to-fill-with"),
        pytest.param({"gallery": "", "head": og(title="OG")}, NotExtracted(reasons.NO_IMAGE), id="no-image-anywhere"),
    ],
)
def test_fallback_fills_what_selectors_miss(kwargs: dict, expected: RawRecord | NotExtracted) -> None:
    assert extract_product(selector_page(**kwargs), PAGE_URL, **SELECTORS, structured_fallback=True) == expected


def test_fallback_never_overrules_the_product_selector() -> None:
    html = page('<div class="category"></div>', head=ld(BOLT))
    assert extract_product(html, PAGE_URL, **SELECTORS, structured_fallback=True) == NotExtracted(
        reasons.NOT_PRODUCT_PAGE)


def test_without_fallback_selectors_alone_decide() -> None:
    # The same pages as above: structured data is ignored, behaviour is the selector-only one.
    assert extract_product(selector_page(title=""), PAGE_URL, **SELECTORS) == RawRecord(
        "https://shop.example/g.jpg", "", ["Selector data"])
    assert extract_product(selector_page(gallery=""), PAGE_URL, **SELECTORS) == NotExtracted(reasons.NO_IMAGE)


def test_some_selectors_only() -> None:
    # The shop gives label and data selectors; product and image come from structured data.
    selectors = {**NO_SELECTORS, "label": "h1.title", "data": "div.specs"}
    result = extract_product(selector_page(gallery=""), PAGE_URL, **selectors)
    assert result == RawRecord("https://cdn.example/bolt.jpg", "Selector title", ["Selector data"],
                               Sources(image=JSONLD))
    assert extract_product(selector_page(head=""), PAGE_URL, **selectors) == NotExtracted(reasons.NOT_PRODUCT_PAGE)


# --- the page's time budget -------------------------------------------------------------


def ticks():
    """A clock that moves one second each time it is read."""
    return itertools.count().__next__


@pytest.mark.parametrize(
    ("html", "read"),
    [
        pytest.param(deep_microdata_page(), lambda tree, d: microdata_product(tree, PAGE_URL, PAGE_URL, d),
                     id="microdata-walk"),
        pytest.param(page(head=ld(*[BOLT] * 3000)), lambda tree, d: jsonld_product(tree, PAGE_URL, PAGE_URL, d),
                     id="jsonld-blocks"),
        pytest.param(page(head=ld({**BOLT, "description": "<p>spec</p>" * 5000})),
                     lambda tree, d: jsonld_product(tree, PAGE_URL, PAGE_URL, d), id="description-text"),
        pytest.param(page(head=ld({**BOLT, "image": ["/a.jpg"] * 5000})),
                     lambda tree, d: jsonld_product(tree, PAGE_URL, PAGE_URL, d), id="jsonld-images"),
        pytest.param(page(head=og(title="T") * 5000), lambda tree, d: opengraph_product(tree, PAGE_URL, d),
                     id="opengraph-metas"),
    ],
)
def test_readers_check_the_deadline_as_they_go(html: str, read) -> None:
    """Ten clock reads into a reader's work on a big page, its time is up: the reader stops
    with PageTimeBudgetExceeded, and with no deadline it finishes."""
    tree = LexborHTMLParser(html)
    with pytest.raises(PageTimeBudgetExceeded):
        read(tree, Deadline(10, clock=ticks()))
    assert read(tree, NO_DEADLINE) is not None


@pytest.mark.parametrize("selectors", [NO_SELECTORS, SELECTORS], ids=["structured", "selectors"])
def test_page_past_its_budget_is_not_extracted(selectors: dict) -> None:
    html = selector_page(specs="<p>spec</p>")
    assert isinstance(extract_product(html, PAGE_URL, **selectors), RawRecord)
    assert extract_product(html, PAGE_URL, **selectors, time_budget=0) == NotExtracted(reasons.PAGE_TIME_BUDGET)
    assert extract_product(deep_microdata_page().encode(), PAGE_URL, **selectors, time_budget=0) == NotExtracted(
        reasons.PAGE_TIME_BUDGET)


def test_no_budget() -> None:
    result = extract_product(deep_microdata_page(), PAGE_URL, **NO_SELECTORS, time_budget=None)
    assert isinstance(result, RawRecord) and result.label == "Deep clamp"


# --- a crawl of a shop that has only structured data ------------------------------------


class StructuredShop(TestShop):
    """The test shop, its product pages marked up only with JSON-LD (and one with OpenGraph)."""

    __test__ = False

    def product_page(self, p: Product) -> str:
        if p.slug == "castor-4":
            head = og(type="product", title=p.name, image=p.images[0], description=p.text[0])
        else:
            # Relative image URLs; a broken block and an unrelated one come first.
            head = ld("{broken", {"@type": "BreadcrumbList"}, {
                "@context": "https://schema.org", "@type": "Product", "name": p.name,
                "image": [{"@type": "ImageObject", "contentUrl": src} for src in p.images],
                "description": p.text[0], "additionalProperty": [
                    {"@type": "PropertyValue", "name": n, "value": v} for n, v in zip(p.text[1::2], p.text[2::2])]})
        return page('<div class="layout">no selectors match this</div>', head=head)


@pytest.fixture
def structured_server():
    server = ShopServer(StructuredShop()).start()
    yield server
    server.stop()


@pytest.mark.slow
def test_crawl_of_a_shop_without_selectors(structured_server, tmp_path) -> None:
    toml = structured_server.shop_toml().split("[selectors]")[0].replace(
        'image_endings = [".jpg"]', 'image_endings = [".jpg", ".png"]')
    config = write_config(tmp_path, toml)
    result = run_cli("run", str(config), "--stages", "crawl", timeout=120)
    assert result.returncode == 0, result.stderr
    db = sqlite3.connect(tmp_path / "run" / "state.sqlite")
    try:
        raw = {url.rsplit("/", 1)[-1]: json.loads(r) for url, r in db.execute("SELECT image_url, raw FROM records")}
        pages = dict(db.execute("SELECT url, reason FROM pages"))
    finally:
        db.close()
    base = structured_server.base_url
    # The first image of the list, a .png now allowed; the gif-only gasket yields nothing.
    assert "bearing-2.png" in raw and pages[f"{base}/p/gasket-8"] == "no_image"
    assert raw["hinge-1.jpg"] == {"label": "ProLine Hinge 40 x 40 zinc", "data": [
        "Hinge for aluminium profiles, 40 mm.", "Material", "zinc die-cast", "Finish", "black powder-coated"]}
    assert raw["castor-4.jpg"] == {"label": "Swivel castor with brake 100 mm",
                                   "data": ["Swivel castor with total brake."]}
