"""A small web shop written for the tests, served on 127.0.0.1 from a background thread so
that both in-process code and real subprocesses (the CLI) can crawl it.

Layout: robots.txt announces a gzipped sitemap index; the index lists a gzipped product sitemap,
a `.gz` sitemap served already decompressed, and a plain pages sitemap. Products have a gallery
(a PNG thumbnail before the JPEG for some), a description and a spec table.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import threading
from dataclasses import dataclass, field

from aiohttp import web
from PIL import Image, ImageDraw

SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"


@dataclass
class Product:
    slug: str
    name: str
    text: list[str]
    images: list[str]  # image paths in gallery order
    size: tuple[int, int] = (640, 480)


def default_products() -> list[Product]:
    return [
        Product("hinge-1", "ProLine Hinge 40 x 40 zinc", ["Hinge for aluminium profiles, 40 mm.",
                "Material", "zinc die-cast", "Finish", "black powder-coated"], ["/img/hinge-1.jpg"], (800, 600)),
        Product("bearing-2", "Deep groove ball bearing 6204", ["Single row ball bearing.",
                "Material", "chrome steel", "Finish", "bright"], ["/img/bearing-2.png", "/img/bearing-2.jpg"],
                (300, 500)),
        Product("clamp-3", "ProLine toggle clamp horizontal", ["Horizontal toggle clamp, holding force 900 N.",
                "Material", "steel", "Finish", "zinc-plated"], ["/img/clamp-3.jpg"], (1200, 1200)),
        Product("castor-4", "Swivel castor with brake 100 mm", ["Swivel castor with total brake.",
                "Material", "polyamide", "Finish", "grey"], ["/img/castor-4.jpg"], (250, 250)),
        Product("handle-5", "Tubular handle stainless", ["Tubular handle for machine doors.",
                "Material", "stainless steel", "Finish", "brushed"], ["/img/handle-5.jpg"], (1600, 400)),
        # Same image as hinge-1: the pre-filter keeps the first record only.
        Product("hinge-1-variant", "ProLine Hinge 40 x 40 zinc variant", ["Hinge variant."],
                ["/img/hinge-1.jpg"]),
        # Only digits in the name: the pre-filter rejects it (empty label after rule 6).
        Product("part-7", "4711 0815", ["Spare part 12."], ["/img/part-7.jpg"]),
        # No allowed image: the page yields nothing.
        Product("gasket-8", "Flat gasket", ["Gasket."], ["/img/gasket-8.gif"]),
    ]


KINDS = ["hinge", "bearing", "toggle clamp", "castor", "handle", "levelling foot", "gas spring",
         "cable gland", "latch", "knob"]
MATERIALS = ["steel", "stainless steel", "zinc die-cast", "polyamide", "aluminium", "brass"]
FINISHES = ["black", "bright zinc-plated", "anodised", "brushed", "grey powder-coated"]


def many_products(n: int) -> list[Product]:
    """A catalogue of n distinct products with one image each, for crash and scale tests."""
    products = []
    for i in range(n):
        kind, material, finish = KINDS[i % 10], MATERIALS[i % 6], FINISHES[i % 5]
        slug = f"{kind.replace(' ', '-')}-{i}"
        products.append(Product(
            slug, f"{material.title()} {kind} {20 + i % 7 * 10} mm",
            [f"{kind.capitalize()} for machines and fixtures.", "Material", material, "Finish", finish],
            [f"/img/{slug}.jpg"], (240 + (i * 37) % 500, 200 + (i * 53) % 400)))
    return products


@dataclass
class TestShop:
    __test__ = False  # a shop, not a test class
    products: list[Product] = field(default_factory=default_products)
    base_url: str = ""
    requests: list[str] = field(default_factory=list)
    broken_images: set[str] = field(default_factory=set)  # paths answered with 404
    sitemap_seconds: float = 0.0  # spread each product sitemap's body over this long
    lastmod_overrides: dict[str, str] = field(default_factory=dict)  # path -> <lastmod>
    disallow: str = "/private"  # robots.txt Disallow for every user agent

    # --- content ---

    def product_page(self, p: Product) -> str:
        gallery = "".join(f'<img src="{src}" alt="">' for src in p.images)
        text = "".join(f"<td>{t}</td>" for t in p.text[1:])
        return (f"<html><head><title>{p.name} | Shop</title></head><body>"
                f'<nav><a href="/">Home</a> <img src="/img/logo.jpg"></nav>'
                f'<div class="product"><h1 class="title">{p.name}</h1>'
                f'<div class="gallery">{gallery}</div>'
                f'<div class="info"><p>{p.text[0]}</p><table><tr>{text}</tr></table></div></div>'
                f"<footer>Newsletter 2024</footer></body></html>")

    def image_bytes(self, path: str) -> tuple[bytes, str]:
        name = path.rsplit("/", 1)[-1]
        stem, ext = name.rsplit(".", 1)
        if stem != "logo" and not any(p.slug == stem for p in self.products):
            raise KeyError(path)
        size = next((p.size for p in self.products if p.slug == stem), (400, 300))
        img = Image.new("RGB", size, (200, 210, 220))
        draw = ImageDraw.Draw(img)
        w, h = size
        draw.rectangle([w // 4, h // 4, 3 * w // 4, 3 * h // 4], fill=(90, 90, 100))
        buf = io.BytesIO()
        fmt = {"jpg": "JPEG", "png": "PNG", "gif": "GIF"}[ext]
        img.save(buf, fmt)
        return buf.getvalue(), f"image/{'jpeg' if fmt == 'JPEG' else ext}"

    def urlset(self, urls: list[str]) -> bytes:
        body = "".join(f"<url><loc>{self.base_url}{u}</loc>"
                       f"<lastmod>{self.lastmod_overrides.get(u, '2024-05-01')}</lastmod></url>" for u in urls)
        return f'<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="{SITEMAP_NS}">{body}</urlset>'.encode()

    # --- handlers ---

    async def slowly(self, request: web.Request, body: bytes, content_type: str) -> web.StreamResponse:
        """Send a body in pieces over sitemap_seconds, like a large sitemap on a slow link."""
        if not self.sitemap_seconds:
            return web.Response(body=body, content_type=content_type)
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        await resp.prepare(request)
        pieces = 20
        step = -(-len(body) // pieces)
        try:
            for i in range(0, len(body), step):
                await resp.write(body[i:i + step])
                await asyncio.sleep(self.sitemap_seconds / pieces)
            await resp.write_eof()
        except ConnectionError:
            pass  # the crawler was killed mid-sitemap (crash tests do that)
        return resp

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path
        self.requests.append(path)
        half = len(self.products) // 2
        if path == "/robots.txt":
            return web.Response(text=f"User-agent: *\nDisallow: {self.disallow}\n"
                                     f"Sitemap: {self.base_url}/sitemap_index.xml.gz\n")
        if path == "/sitemap_index.xml.gz":
            index = "".join(f"<sitemap><loc>{self.base_url}{p}</loc></sitemap>"
                            for p in ("/sitemap-products-1.xml.gz", "/sitemap-products-2.xml.gz", "/sitemap-pages.xml"))
            xml = f'<?xml version="1.0"?><sitemapindex xmlns="{SITEMAP_NS}">{index}</sitemapindex>'
            return web.Response(body=gzip.compress(xml.encode()), content_type="application/x-gzip")
        if path == "/sitemap-products-1.xml.gz":
            xml = self.urlset([f"/p/{p.slug}" for p in self.products[:half]])
            return await self.slowly(request, gzip.compress(xml), "application/x-gzip")
        if path == "/sitemap-products-2.xml.gz":  # served already decompressed, as servers do
            return await self.slowly(request, self.urlset([f"/p/{p.slug}" for p in self.products[half:]]),
                                     "application/xml")
        if path == "/sitemap-pages.xml":
            return web.Response(body=self.urlset(["/about"]),
                                content_type="application/xml")
        if path == "/mirror-sitemap.xml":  # a second catalogue of the same products and images
            return web.Response(body=self.urlset([f"/mp/{p.slug}" for p in self.products]),
                                content_type="application/xml")
        if path.startswith("/mp/"):
            path = "/p/" + path[4:]
        if path == "/about":
            return web.Response(text="<html><body><h1>About us</h1></body></html>", content_type="text/html")
        if path.startswith("/p/"):
            for p in self.products:
                if path == f"/p/{p.slug}":
                    return web.Response(text=self.product_page(p), content_type="text/html")
        if path.startswith("/img/") and path not in self.broken_images:
            try:
                body, ctype = self.image_bytes(path)
            except (KeyError, ValueError):
                raise web.HTTPNotFound() from None
            return web.Response(body=body, content_type=ctype)
        raise web.HTTPNotFound()


SHOP_TOML = """
source = "testshop"
robots_urls = ["{base}/robots.txt"]
sitemap_rules = [["/p/", "product"]]
allowed_domains = ["127.0.0.1"]
image_endings = [".jpg"]
tradename_regex = "(proline)"

[selectors]
product = "div.product"
image = "div.gallery img"
label = "h1.title"
data = "div.info"
"""


class ShopServer:
    """Runs a shop (anything with an aiohttp ``handle`` and a ``base_url``) in a thread with its
    own event loop, on one or more loopback addresses (several hosts for per-host tests)."""

    def __init__(self, shop=None, hosts: tuple[str, ...] = ("127.0.0.1",)):
        self.shop = shop or TestShop()
        self.hosts = hosts
        self.base_urls: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> ShopServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.shop.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        for host in self.hosts:
            site = web.TCPSite(self._runner, host, 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]
            self.base_urls.append(f"http://{host}:{port}")
        self.shop.base_url = self.base_urls[0]
        if hasattr(self.shop, "base_urls"):
            self.shop.base_urls = self.base_urls

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    @property
    def base_url(self) -> str:
        return self.base_urls[0]

    def shop_toml(self) -> str:
        return SHOP_TOML.replace("{base}", self.base_url)
