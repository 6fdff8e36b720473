"""The bundled demo web shop: an aiohttp server on loopback that serves the demo catalogue.

It behaves like a real shop as far as the crawler can tell: robots.txt with Disallow and
Sitemap lines, a gzipped sitemap index, product sitemaps (one of them served already
decompressed despite its .gz name, as some servers do), full HTML pages with boilerplate
around the product, JSON-LD, and generated product photos in JPEG and PNG.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import html
import io
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from urllib.parse import quote

from aiohttp import web
from PIL import Image as PILImage
from PIL import ImageDraw, ImageOps

from ilid_async.demo.catalogue import Catalogue, Image, Product, build_catalogue

__all__ = [
    "SHOP_NAME", "PRODUCTS_PER_SITEMAP", "PLAIN_SITEMAP_NUMBER", "PAGES_LASTMOD", "INFO_PAGES", "SITEMAP_NS",
    "IMAGE_NS", "render_image", "PLACEHOLDER_SVG", "LOGO_SVG", "SHOP_CSS", "urlset", "sitemap_index", "Handler",
    "DemoServer", "start_demo_server"
]

SHOP_NAME = "Werkstock Industrial Supply"
PRODUCTS_PER_SITEMAP = 100
# This product sitemap is served as plain XML although its name ends in .gz.
PLAIN_SITEMAP_NUMBER = 2
PAGES_LASTMOD = "2025-01-15"
INFO_PAGES = ("about", "contact", "shipping")

SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
IMAGE_NS = "http://www.google.com/schemas/sitemap-image/1.1"


# --------------------------------------------------------------------------------------------
# Product photos, drawn from the image spec.

# Colours of steel, zinc, brass, coatings and plastics.
_METALS = [(150, 155, 160), (190, 194, 198), (96, 101, 107), (172, 182, 196), (181, 148, 70),
           (42, 42, 46), (206, 208, 211), (184, 46, 38), (224, 106, 32), (28, 72, 126),
           (198, 198, 190), (219, 176, 34), (62, 64, 68)]
_BACKGROUNDS = [(255, 255, 255), (247, 247, 247), (240, 242, 245), (250, 248, 243),
                (234, 238, 243), (244, 244, 240)]
# Drawing happens on a canvas of at most this many pixels per side and is then scaled up:
# it keeps a 2000 x 1500 photo well under 100 ms while the shapes still differ per image.
_DRAW_SIDE = 400


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    """Lighter (factor > 1) or darker (factor < 1) version of a colour."""
    if factor >= 1:
        return tuple(round(c + (255 - c) * (factor - 1)) for c in colour)  # type: ignore[return-value]
    return tuple(round(c * factor) for c in colour)  # type: ignore[return-value]


def _draw_part(draw: ImageDraw.ImageDraw, rng: random.Random, w: int, h: int,
               alpha: bool) -> None:
    """Draw a simple machine-part-like object: shadow, body, highlight, holes."""
    base = rng.choice(_METALS)
    light, dark = _shade(base, 1.45), _shade(base, 0.55)
    cx = w / 2 + rng.uniform(-0.06, 0.06) * w
    cy = h / 2 + rng.uniform(-0.06, 0.06) * h
    r = min(w, h) * rng.uniform(0.26, 0.4)
    line = max(1, round(r * 0.04))

    # Soft floor shadow under the object.
    shadow = (0, 0, 0, 60) if alpha else (200, 200, 200)
    draw.ellipse((cx - r * 1.1, cy + r * 0.75, cx + r * 1.1, cy + r * 1.05), fill=shadow)

    # Optional rod or rail behind the body (threaded rods, gas springs, guides).
    if rng.random() < 0.4:
        rod = _shade(rng.choice(_METALS), 1.1)
        t = r * rng.uniform(0.12, 0.25)
        draw.rectangle((cx - r * 1.6, cy - t, cx + r * 1.6, cy + t), fill=rod, outline=dark,
                       width=line)

    kind = rng.randrange(4)
    if kind == 0:  # block or plate with mounting holes
        aw, ah = r * rng.uniform(0.75, 1.15), r * rng.uniform(0.5, 1.0)
        draw.rounded_rectangle((cx - aw, cy - ah, cx + aw, cy + ah), radius=r * 0.12, fill=base,
                               outline=dark, width=line)
        draw.rectangle((cx - aw * 0.9, cy - ah * 0.8, cx + aw * 0.9, cy - ah * 0.55), fill=light)
        holes = rng.choice([2, 3, 4])
        for i in range(holes):
            hx = cx - aw * 0.7 + i * (aw * 1.4 / max(1, holes - 1))
            hr = r * 0.09
            draw.ellipse((hx - hr, cy + ah * 0.2 - hr, hx + hr, cy + ah * 0.2 + hr), fill=dark)
    elif kind == 1:  # wheel, bearing or knob seen from the front
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=dark)
        ri = r * rng.uniform(0.75, 0.9)
        draw.ellipse((cx - ri, cy - ri, cx + ri, cy + ri), fill=base, outline=light, width=line)
        rh = r * rng.uniform(0.2, 0.4)
        draw.ellipse((cx - rh, cy - rh, cx + rh, cy + rh), fill=light, outline=dark, width=line)
        draw.ellipse((cx - rh / 2, cy - rh / 2, cx + rh / 2, cy + rh / 2), fill=dark)
    elif kind == 2:  # star knob, nut or lever head
        n = rng.choice([5, 6, 6, 8])
        turn = rng.uniform(0, math.pi)
        points = []
        for i in range(n * 2 if n != 6 else n):
            step = n * 2 if n != 6 else n
            radius = r if (n == 6 or i % 2 == 0) else r * 0.7
            a = turn + 2 * math.pi * i / step
            points.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
        draw.polygon(points, fill=base, outline=dark, width=line)
        rh = r * 0.3
        draw.ellipse((cx - rh, cy - rh, cx + rh, cy + rh), fill=light, outline=dark, width=line)
    else:  # hinge or bracket: two leaves and a pin
        lw, lh = r * rng.uniform(0.38, 0.55), r * rng.uniform(0.8, 1.1)
        draw.rectangle((cx - lw * 2, cy - lh, cx, cy + lh), fill=base, outline=dark, width=line)
        draw.rectangle((cx, cy - lh, cx + lw * 2, cy + lh), fill=light, outline=dark, width=line)
        pin = r * 0.12
        draw.rectangle((cx - pin, cy - lh * 1.08, cx + pin, cy + lh * 1.08), fill=dark)
        for sx in (-1, 1):
            for sy in (-0.5, 0.5):
                hx, hy, hr = cx + sx * lw, cy + sy * lh, r * 0.07
                draw.ellipse((hx - hr, hy - hr, hx + hr, hy + hr), fill=dark)


@functools.lru_cache(maxsize=2048)  # every photo of a 1000-product shop; about 300 MB at most
def render_image(img: Image) -> bytes:
    """Encoded bytes of a catalogue image; deterministic in the image spec, cached."""
    if img.format == "SVG":
        return PLACEHOLDER_SVG.encode()
    rng = random.Random(img.colour_seed)
    scale = min(1.0, _DRAW_SIDE / max(img.width, img.height))
    sw, sh = max(1, round(img.width * scale)), max(1, round(img.height * scale))

    if img.alpha:  # cut-out product on a transparent background
        canvas = PILImage.new("RGBA", (sw, sh), (255, 255, 255, 0))
    else:
        top = rng.choice(_BACKGROUNDS)
        if rng.random() < 0.5:  # studio-style vertical gradient
            bottom = _shade(top, rng.uniform(0.78, 0.92))
            ramp = PILImage.linear_gradient("L").resize((sw, sh))
            canvas = ImageOps.colorize(ramp, top, bottom)
        else:
            canvas = PILImage.new("RGB", (sw, sh), top)
    _draw_part(ImageDraw.Draw(canvas), rng, sw, sh, img.alpha)
    if (sw, sh) != (img.width, img.height):
        canvas = canvas.resize((img.width, img.height), PILImage.Resampling.BILINEAR)

    out = io.BytesIO()
    if img.format == "JPEG":
        canvas.save(out, "JPEG", quality=85)
    else:
        # Fast zlib level: these PNGs are generated on request, not archived.
        canvas.save(out, "PNG", compress_level=1)
    return out.getvalue()


PLACEHOLDER_SVG = """<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="400" height="400" viewBox="0 0 400 400">
  <rect width="400" height="400" fill="#f2f2f2"/>
  <path d="M120 250 l50-60 40 45 30-30 40 45z" fill="#c8c8c8"/>
  <circle cx="250" cy="150" r="22" fill="#c8c8c8"/>
  <text x="200" y="320" font-family="sans-serif" font-size="24" fill="#999"
        text-anchor="middle">No image available</text>
</svg>
"""

LOGO_SVG = """<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="180" height="40" viewBox="0 0 180 40">
  <rect x="2" y="6" width="28" height="28" rx="4" fill="#e2661f"/>
  <rect x="9" y="13" width="14" height="14" fill="#fff"/>
  <text x="38" y="27" font-family="sans-serif" font-size="18" font-weight="bold"
        fill="#1c3f6e">Werkstock</text>
</svg>
"""

SHOP_CSS = """body{font-family:sans-serif;margin:0;color:#222}
.topbar{background:#1c3f6e;color:#fff;font-size:13px;padding:4px 16px}
.site-header{display:flex;gap:24px;align-items:center;padding:12px 16px}
.main-menu ul{display:flex;flex-wrap:wrap;gap:12px;list-style:none;padding:8px 16px;margin:0}
main{padding:16px}.gallery img{max-width:420px;height:auto}
table.specs th{text-align:left;padding-right:24px}
.cookie-banner{position:fixed;bottom:0;left:0;right:0;background:#333;color:#fff;padding:12px}
"""


# --------------------------------------------------------------------------------------------
# HTML pages.

def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _json_ld(data: dict) -> str:
    # "</" inside a script element would end it early.
    return json.dumps(data, ensure_ascii=False).replace("</", "<\\/")


class _Pages:
    """Renders the shop's HTML pages for one catalogue."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.cat = catalogue

    def layout(self, *, title: str, path: str, base: str, body: str, page_type: str,
               crumbs: Sequence[tuple[str, str]] = (), head_extra: str = "",
               description: str = "") -> str:
        menu = "\n".join(f'      <li><a href="/c/{c.slug}">{_e(c.title)}</a></li>'
                         for c in self.cat.categories)
        trail = [("Home", "/"), *crumbs]
        crumb_html = " &rsaquo; ".join(
            f'<a href="{href}">{_e(label)}</a>' if href else f"<span>{_e(label)}</span>"
            for label, href in trail)
        meta = description or f"{SHOP_NAME}: industrial parts for machine building and plants."
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{_e(title)} | {SHOP_NAME}</title>
  <meta name="description" content="{_e(meta)}">
  <link rel="canonical" href="{base}{quote(path)}">
  <link rel="stylesheet" href="/static/shop.css">
  <script>
    window.dataLayer = window.dataLayer || [];
    window.dataLayer.push({{"pageType": "{page_type}", "currency": "EUR", "locale": "en-US"}});
    function acceptCookies(all) {{
      document.cookie = "consent=" + (all ? "all" : "necessary") + "; path=/; max-age=31536000";
      document.getElementById("cookie-banner").hidden = true;
    }}
  </script>{head_extra}
</head>
<body>
  <div class="topbar">Free shipping in Germany on orders over &euro; 150 &middot; Hotline +49 000 1234567 (Mon&ndash;Fri 8:00&ndash;17:00)</div>
  <header class="site-header">
    <a class="logo" href="/"><img src="/static/logo.svg" alt="{SHOP_NAME}" width="180" height="40"></a>
    <form class="search" action="/search" method="get">
      <input type="search" name="q" placeholder="Search 12,000 parts" aria-label="Search">
      <button type="submit">Search</button>
    </form>
    <nav class="account"><a href="/contact">Contact</a> <a href="/cart">Cart (0)</a></nav>
  </header>
  <nav class="main-menu" aria-label="Categories">
    <ul>
{menu}
    </ul>
  </nav>
  <main>
    <nav class="breadcrumbs" aria-label="Breadcrumb">{crumb_html}</nav>
{body}
  </main>
  <section class="newsletter">
    <h2>Newsletter</h2>
    <p>New products, price changes and technical tips once a month. Unsubscribe at any time.</p>
    <form action="/contact" method="get"><input type="email" name="email" placeholder="Your e-mail address"><button type="submit">Subscribe</button></form>
  </section>
  <footer class="site-footer">
    <div class="footer-col"><h3>Service</h3><ul><li><a href="/shipping">Shipping and delivery</a></li><li><a href="/contact">Contact</a></li><li><a href="/cart">Cart</a></li></ul></div>
    <div class="footer-col"><h3>Company</h3><ul><li><a href="/about">About us</a></li></ul></div>
    <div class="footer-col"><h3>Payment</h3><p>Invoice, credit card, bank transfer</p></div>
    <p class="copyright">&copy; 2025 {SHOP_NAME}. All prices in EUR excl. VAT plus shipping. This is a demo shop; no orders are processed.</p>
  </footer>
  <div class="cookie-banner" id="cookie-banner" role="dialog" aria-label="Cookie settings">
    <p>We use cookies to run this shop and, with your consent, to measure how it is used. You can change your choice at any time.</p>
    <button type="button" onclick="acceptCookies(true)">Accept all</button>
    <button type="button" onclick="acceptCookies(false)">Only necessary</button>
  </div>
</body>
</html>
"""

    def product(self, p: Product, base: str) -> str:
        category = self.cat.category_by_slug(p.category)
        gallery_imgs = []
        for i, img in enumerate(p.images):
            alt = _e(p.name) if img.format != "SVG" else "No image available"
            lazy = ' loading="lazy"' if i else ""  # only the main photo loads eagerly
            gallery_imgs.append(f'        <img src="/img/{quote(img.name)}" alt="{alt}" '
                                f'width="{img.width}" height="{img.height}"{lazy}>')
        gallery = "\n".join(gallery_imgs)
        # Long descriptions are split into two paragraphs, as shop editors tend to do.
        sentences = p.description.split(". ")
        if len(sentences) > 2:
            paras = [". ".join(sentences[:2]) + ".", ". ".join(sentences[2:])]
        else:
            paras = [p.description]
        paragraphs = "\n".join(f"        <p>{_e(t)}</p>" for t in paras)
        rows = "\n".join(f"          <tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in p.specs)
        related = self._related(p)
        images = [f"{base}/img/{quote(i.name)}" for i in p.images if i.format != "SVG"]
        ld = {"@context": "https://schema.org", "@type": "Product", "name": p.name, "sku": p.sku,
              "description": p.description, "category": category.title if category else p.category,
              "url": f"{base}/p/{p.slug}",
              "offers": {"@type": "Offer", "price": f"{p.price:.2f}", "priceCurrency": "EUR",
                         "availability": "https://schema.org/InStock"},
              "additionalProperty": [{"@type": "PropertyValue", "name": k, "value": v}
                                     for k, v in p.specs]}
        if images:
            ld["image"] = images
        if p.tradename:
            ld["brand"] = {"@type": "Brand", "name": p.tradename}
        material = dict(p.specs).get("Material")
        if material:
            ld["material"] = material
        head = f'\n  <script type="application/ld+json">\n{_json_ld(ld)}\n  </script>'
        body = f"""    <div class="product-detail" data-sku="{_e(p.sku)}">
      <h1 class="product-title">{_e(p.name)}</h1>
      <p class="sku">Article no. {_e(p.sku)}</p>
      <div class="gallery">
{gallery}
      </div>
      <div class="buy-box">
        <p class="price">&euro; {p.price:,.2f} <small>excl. VAT</small></p>
        <p class="stock">In stock &ndash; ships within 1&ndash;2 working days</p>
        <form action="/cart" method="post">
          <input type="hidden" name="sku" value="{_e(p.sku)}">
          <input type="number" name="qty" value="1" min="1" aria-label="Quantity">
          <button type="submit">Add to cart</button>
        </form>
      </div>
      <div class="product-info">
        <h2>Description</h2>
{paragraphs}
        <h2>Technical data</h2>
        <table class="specs">
          <tbody>
{rows}
          </tbody>
        </table>
      </div>
    </div>
{related}"""
        crumbs = [(category.title, f"/c/{category.slug}")] if category else []
        return self.layout(title=p.name, path=f"/p/{p.slug}", base=base, body=body,
                           page_type="product", crumbs=[*crumbs, (p.name, "")],
                           head_extra=head, description=p.description)

    def _related(self, p: Product) -> str:
        """'Customers also viewed': thumbnails of neighbours, outside the gallery on purpose."""
        same = self.cat.products_in(p.category)
        i = same.index(p)
        others: dict[str, Product] = {}  # by SKU: small categories wrap around
        for k in (1, 2, 3):
            q = same[(i + k) % len(same)]
            if q is not p:
                others.setdefault(q.sku, q)
        if not others:
            return ""
        return ('    <section class="related">\n      <h2>Customers also viewed</h2>\n      <ul>\n'
                + "".join(f"        <li>{self._tile(q)}</li>\n" for q in others.values())
                + "      </ul>\n    </section>")

    @staticmethod
    def _tile(q: Product) -> str:
        thumb = q.images[0]
        return (f'<a href="/p/{q.slug}"><img src="/img/{quote(thumb.name)}" alt="" width="160" '
                f'height="160" loading="lazy"><span class="tile-name">{_e(q.name)}</span></a> '
                f'<span class="tile-price">&euro; {q.price:,.2f}</span>')

    def category(self, slug: str, base: str) -> str | None:
        category = self.cat.category_by_slug(slug)
        if category is None:
            return None
        items = self.cat.products_in(slug)
        tiles = "\n".join(f'        <li class="product-tile">{self._tile(q)}</li>' for q in items)
        body = f"""    <section class="category">
      <h1>{_e(category.title)}</h1>
      <p class="intro">{_e(category.blurb)} {len(items)} products.</p>
      <ul class="product-grid">
{tiles}
      </ul>
    </section>"""
        return self.layout(title=category.title, path=f"/c/{slug}", base=base, body=body,
                           page_type="category", crumbs=[(category.title, "")],
                           description=category.blurb)

    def home(self, base: str) -> str:
        tiles = "\n".join(f'        <li><a href="/c/{c.slug}">{_e(c.title)}</a> &ndash; {_e(c.blurb)}</li>'
                          for c in self.cat.categories)
        body = f"""    <section class="home">
      <h1>Industrial parts for machine building</h1>
      <p>{len(self.cat.products)} standard parts from stock, from hinges to scissor lift tables.</p>
      <ul class="category-tiles">
{tiles}
      </ul>
    </section>"""
        return self.layout(title="Industrial parts", path="/", base=base, body=body,
                           page_type="home")

    INFO = {
        "about": ("About us", [
            "Werkstock supplies standard parts to machine builders, plant operators and "
            "maintenance teams since 1987.",
            "Our warehouse holds more than 12,000 articles, and 95 % of all orders leave it on "
            "the day they arrive.",
        ]),
        "contact": ("Contact", [
            "Werkstock Industrial Supply, Example Street 1, 00000 Demo Town.",
            "Phone +49 000 1234567, Monday to Friday 8:00 to 17:00. E-mail: sales@example.com",
            "Technical questions are answered by our application engineers within one working day.",
        ]),
        "shipping": ("Shipping and delivery", [
            "Orders placed by 14:00 are shipped the same working day.",
            "Parcels up to 31.5 kg go by parcel service; pallet trucks and lift tables are "
            "delivered by freight forwarder on a pallet.",
            "Shipping is free within Germany for orders over 150 EUR net.",
        ]),
    }

    def info(self, key: str, base: str) -> str:
        title, paras = self.INFO[key]
        text = "\n".join(f"      <p>{_e(t)}</p>" for t in paras)
        body = f'    <section class="info-page">\n      <h1>{_e(title)}</h1>\n{text}\n    </section>'
        return self.layout(title=title, path=f"/{key}", base=base, body=body, page_type="info",
                           crumbs=[(title, "")])

    def search(self, query: str, base: str) -> str:
        q = query.strip().lower()
        hits = [p for p in self.cat.products if q and q in p.name.lower()][:24]
        tiles = "\n".join(f'        <li class="product-tile">{self._tile(p)}</li>' for p in hits)
        body = (f'    <section class="search-results">\n      <h1>Search results for '
                f'&ldquo;{_e(query)}&rdquo;</h1>\n      <p>{len(hits)} products found.</p>\n'
                f'      <ul class="product-grid">\n{tiles}\n      </ul>\n    </section>')
        return self.layout(title="Search", path="/search", base=base, body=body,
                           page_type="search", crumbs=[("Search", "")])

    def cart(self, base: str) -> str:
        body = ('    <section class="cart">\n      <h1>Your cart</h1>\n'
                '      <p>Your cart is empty. This demo shop does not take orders.</p>\n    </section>')
        return self.layout(title="Cart", path="/cart", base=base, body=body, page_type="cart",
                           crumbs=[("Cart", "")])

    def not_found(self, base: str, path: str) -> str:
        body = ('    <section class="not-found">\n      <h1>Page not found</h1>\n'
                '      <p>The page you are looking for does not exist or has moved. '
                'Try the search or start from the <a href="/">home page</a>.</p>\n    </section>')
        return self.layout(title="Page not found", path=path, base=base, body=body,
                           page_type="error")


# --------------------------------------------------------------------------------------------
# Sitemaps.

def _lastmod(lastmod: str | None) -> str:
    return f"\n    <lastmod>{lastmod}</lastmod>" if lastmod else ""


def urlset(entries: Sequence[tuple[str, str | None, Sequence[str]]]) -> bytes:
    """A <urlset> of (loc, lastmod or None, image locs)."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<urlset xmlns="{SITEMAP_NS}" xmlns:image="{IMAGE_NS}">']
    for loc, lastmod, images in entries:
        lines.append(f"  <url>\n    <loc>{_e(loc)}</loc>{_lastmod(lastmod)}")
        for img in images:  # image sitemap extension, as shop systems emit it
            lines.append(f"    <image:image><image:loc>{_e(img)}</image:loc></image:image>")
        lines.append("  </url>")
    lines.append("</urlset>")
    return ("\n".join(lines) + "\n").encode()


def sitemap_index(entries: Iterable[tuple[str, str | None]]) -> bytes:
    """A <sitemapindex> of (loc, lastmod or None)."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', f'<sitemapindex xmlns="{SITEMAP_NS}">']
    for loc, lastmod in entries:
        lines.append(f"  <sitemap>\n    <loc>{_e(loc)}</loc>{_lastmod(lastmod)}\n  </sitemap>")
    lines.append("</sitemapindex>")
    return ("\n".join(lines) + "\n").encode()


# --------------------------------------------------------------------------------------------
# The server.

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class DemoServer:
    """A running demo shop. Use ``await start_demo_server()`` to get one."""

    def __init__(self, catalogue: Catalogue, host: str) -> None:
        self.catalogue = catalogue
        self.host = host
        self.port = 0
        self.base_url = ""
        # (time.monotonic(), path) of every request, in arrival order; tests read it to check
        # rate limits, robots.txt obedience and "nothing fetched twice".
        self.request_log: list[tuple[float, str]] = []
        self._pages = _Pages(catalogue)
        chunks = [catalogue.products[i:i + PRODUCTS_PER_SITEMAP]
                  for i in range(0, len(catalogue.products), PRODUCTS_PER_SITEMAP)]
        self.product_chunks: list[list[Product]] = chunks
        self.app = self._make_app()
        self._runner: web.AppRunner | None = None
        # Product pages rendered ahead, by (slug, base URL); see prerender().
        self._rendered: dict[tuple[str, str], str] = {}

    @property
    def product_sitemap_names(self) -> list[str]:
        return [f"products-{i}.xml.gz" for i in range(1, len(self.product_chunks) + 1)]

    @property
    def plain_sitemap_name(self) -> str | None:
        """The product sitemap served uncompressed despite its .gz name (None if too few)."""
        if len(self.product_chunks) >= PLAIN_SITEMAP_NUMBER:
            return f"products-{PLAIN_SITEMAP_NUMBER}.xml.gz"
        return None

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/", self._home)
        app.router.add_get("/robots.txt", self._robots)
        app.router.add_get("/sitemap_index.xml.gz", self._sitemap_index)
        app.router.add_get("/sitemaps/pages.xml", self._pages_sitemap)
        app.router.add_get("/sitemaps/{name}", self._product_sitemap)
        app.router.add_get("/p/{slug}", self._product)
        app.router.add_get("/c/{slug}", self._category)
        for key in INFO_PAGES:
            app.router.add_get(f"/{key}", functools.partial(self._info, key))
        app.router.add_get("/img/{name}", self._image)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_route("*", "/cart", self._cart)
        app.router.add_get("/search", self._search)
        return app

    async def start(self, port: int = 0) -> None:
        # A short shutdown timeout: close() should not wait a minute for idle keep-alives.
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, port)
        await site.start()
        self.port = self._runner.addresses[0][1]  # the real port when 0 was asked for
        shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(self.host, self.host)
        if ":" in shown and not shown.startswith("["):
            shown = f"[{shown}]"
        self.base_url = f"http://{shown}:{self.port}"

    def prerender(self) -> None:
        """Render every product page now and serve the copies, as a shop behind a page cache
        does: rendering takes most of the server's time per page, and a benchmark should
        measure its crawler, not this server's template code."""
        for product in self.catalogue.products:
            self._rendered[product.slug, self.base_url] = self._pages.product(product, self.base_url)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "DemoServer":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- plumbing --------------------------------------------------------------------------

    @staticmethod
    def _base(request: web.Request) -> str:
        # Absolute URLs follow the Host the client used, like a shop behind a proxy would; on
        # loopback this equals base_url.
        return f"{request.scheme}://{request.host}"

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.request_log.append((time.monotonic(), request.path))
        try:
            response = await handler(request)
        except web.HTTPNotFound:
            response = self._html(self._pages.not_found(self._base(request), request.path),
                                  status=404, cache="no-cache")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers["Server"] = "werkstock-demo"
        return response

    @staticmethod
    def _html(text: str, status: int = 200, cache: str = "public, max-age=300") -> web.Response:
        return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": cache, "Content-Language": "en",
                                     "Vary": "Accept-Language"})

    @staticmethod
    def _bytes(body: bytes, content_type: str, cache: str = "public, max-age=3600") -> web.Response:
        return web.Response(body=body, headers={"Content-Type": content_type,
                                                "Cache-Control": cache})

    # -- robots and sitemaps ---------------------------------------------------------------

    async def _robots(self, request: web.Request) -> web.Response:
        base = self._base(request)
        text = ("# Werkstock demo shop\n"
                "User-agent: *\n"
                "Disallow: /cart\n"
                "Disallow: /search\n"
                "\n"
                "User-agent: ExampleScraperBot\n"
                "Disallow: /\n"
                "\n"
                f"Sitemap: {base}/sitemap_index.xml.gz\n")
        return web.Response(text=text, content_type="text/plain", charset="utf-8",
                            headers={"Cache-Control": "public, max-age=3600"})

    async def _sitemap_index(self, request: web.Request) -> web.Response:
        base = self._base(request)
        entries = [(f"{base}/sitemaps/{name}", max(p.lastmod for p in chunk))
                   for name, chunk in zip(self.product_sitemap_names, self.product_chunks)]
        entries.append((f"{base}/sitemaps/pages.xml", PAGES_LASTMOD))
        # Raw gzip bytes, no Content-Encoding: the client must gunzip the file itself.
        return self._bytes(gzip.compress(sitemap_index(entries), mtime=0), "application/x-gzip")

    async def _pages_sitemap(self, request: web.Request) -> web.Response:
        base = self._base(request)
        entries: list[tuple[str, str, list[str]]] = [(f"{base}/", PAGES_LASTMOD, [])]
        entries += [(f"{base}/c/{c.slug}", PAGES_LASTMOD, []) for c in self.catalogue.categories]
        entries += [(f"{base}/{key}", PAGES_LASTMOD, []) for key in INFO_PAGES]
        return self._bytes(urlset(entries), "application/xml; charset=utf-8")

    async def _product_sitemap(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.product_sitemap_names:
            raise web.HTTPNotFound()
        chunk = self.product_chunks[self.product_sitemap_names.index(name)]
        base = self._base(request)
        entries = [(f"{base}/p/{p.slug}", p.lastmod,
                    [f"{base}/img/{quote(i.name)}" for i in p.images if i.format != "SVG"])
                   for p in chunk]
        xml = urlset(entries)
        if name == self.plain_sitemap_name:
            # Served already decompressed despite the .gz name, as some servers do.
            return self._bytes(xml, "application/xml; charset=utf-8")
        return self._bytes(gzip.compress(xml, mtime=0), "application/x-gzip")

    # -- pages -----------------------------------------------------------------------------

    async def _home(self, request: web.Request) -> web.Response:
        return self._html(self._pages.home(self._base(request)))

    async def _product(self, request: web.Request) -> web.Response:
        product = self.catalogue.product_by_slug(request.match_info["slug"])
        if product is None:
            raise web.HTTPNotFound()
        base = self._base(request)
        page = self._rendered.get((product.slug, base))
        return self._html(page if page is not None else self._pages.product(product, base))

    async def _category(self, request: web.Request) -> web.Response:
        text = self._pages.category(request.match_info["slug"], self._base(request))
        if text is None:
            raise web.HTTPNotFound()
        return self._html(text)

    async def _info(self, key: str, request: web.Request) -> web.Response:
        return self._html(self._pages.info(key, self._base(request)))

    async def _search(self, request: web.Request) -> web.Response:
        return self._html(self._pages.search(request.query.get("q", ""), self._base(request)),
                          cache="no-store")

    async def _cart(self, request: web.Request) -> web.Response:
        if request.method not in ("GET", "HEAD", "POST"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD", "POST"])
        if request.method == "POST":
            await request.read()  # drain the form; the demo keeps no cart
        return self._html(self._pages.cart(self._base(request)), cache="no-store")

    # -- images and static files -----------------------------------------------------------

    async def _image(self, request: web.Request) -> web.Response:
        img = self.catalogue.image_by_name(request.match_info["name"])
        if img is None:
            raise web.HTTPNotFound()
        # Drawing and encoding take tens of milliseconds: keep them off the event loop so
        # page requests are not held up while images are generated.
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(None, render_image, img)
        response = self._bytes(body, img.content_type, cache="public, max-age=604800")
        response.headers["ETag"] = f'"{img.colour_seed:08x}-{img.width}x{img.height}"'
        return response

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "logo.svg":
            return self._bytes(LOGO_SVG.encode(), "image/svg+xml", cache="public, max-age=86400")
        if name == "shop.css":
            return self._bytes(SHOP_CSS.encode(), "text/css; charset=utf-8",
                               cache="public, max-age=86400")
        raise web.HTTPNotFound()


async def start_demo_server(host: str = "127.0.0.1", port: int = 0, n_products: int = 320,
                            seed: int = 7, prerender: bool = False) -> DemoServer:
    """Start the demo shop on host:port (port 0 picks a free one) and return it running;
    ``prerender`` renders every product page first (DemoServer.prerender)."""
    server = DemoServer(build_catalogue(n_products, seed), host)
    await server.start(port)
    if prerender:
        server.prerender()
    return server
