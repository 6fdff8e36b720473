"""The tests' one fake web shop, served on 127.0.0.1 from a background thread so that both
in-process code and real subprocesses (the CLI) can crawl it. Its faults are options and routes
of the same shop; its sitemap XML is the demo shop's (``ilid_async.demo.server``).

Layout: robots.txt announces a gzipped sitemap index; the index lists a gzipped product sitemap,
a `.gz` sitemap served already decompressed, and a plain pages sitemap. Products have a gallery
(a PNG thumbnail before the JPEG for some), a description and a spec table. The pictures are
plain on purpose, one per image size: two products of the same size serve the very same bytes.

Faults:
- options of any shop: ``broken_images`` (answered 404), ``noisy_images`` (noise photos, large as
  PNGs, for full-disk tests), ``sitemap_seconds`` (product sitemaps arrive slowly),
  ``lastmod_overrides``, ``disallow``;
- ``hostile_shop()``: the shop misbehaving in every way the issue lists, on two loopback hosts:
  pages and sitemaps on the first, images on the second (which is off the shop's
  allowed_domains). Each transient fault happens once per path, then the path works;
- sitemap indexes without end, routes of every shop: ``/chain/NAME.xml`` lists ``maze_fanout``
  children ``/chain/NAME-i.xml``, each an index again; ``/wide.xml`` lists ``maze_width`` empty
  sitemaps ``/leaf/i.xml``.

``full_disk`` gives a folder a real small disk, or a file size limit to a process, for full-disk
tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gzip
import io
import random
import resource
import struct
import subprocess
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from PIL import Image, ImageDraw

from ilid_async.demo.server import SITEMAP_NS, sitemap_index, urlset


@dataclass
class Product:
    slug: str
    name: str
    text: list[str]
    images: list[str]  # image paths (or whole URLs) in gallery order
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


# --- the hostile web: what each of its pages, images and sitemaps must end as ---------------------

# page slug -> what the crawl must end with: ("record", None), ("done", outcome), ("failed", reason)
PAGE_EXPECTED = {
    "ok-1": ("record", None), "ok-2": ("record", None),
    "flaky-1": ("record", None), "flaky-2": ("record", None), "flaky-3": ("record", None),
    "limited-1": ("record", None), "limited-2": ("record", None),
    "busy": ("record", None),
    "gone": ("failed", "http_404"),
    "slow": ("failed", "timeout"),
    "loop": ("failed", "redirect_loop"),
    "private": ("failed", "address_refused"),
    "binary": ("failed", "undecodable_page"),
    "noimg": ("done", "no_image"),
    "emptylabel": ("record", None),  # rejected by the pre-filter: empty_label
    "trunc": ("record", None), "htmlimg": ("record", None), "fakejpeg": ("record", None),
    "bomb": ("record", None), "imgflaky": ("record", None),
    # Input that made urlsplit, float() or a codec raise (issue 13 items 2, 3, 5).
    "badredirect": ("failed", "bad_url"),  # Location: http://[oops/p
    "oddretry": ("record", None),  # 503 with Retry-After: ² once: treated as absent, retried
    "rot13": ("failed", "undecodable_page"),  # charset=rot13 in the header, bytes not UTF-8
    "badimg": ("record", None),  # a gallery src no parser takes before a good one
    "onlybadimg": ("done", "no_image"),  # only such a src
    # Issue 13 item 7: a redirect to a host off allowed_domains (the images host) is not extracted.
    "offsite": ("failed", "off_domain"),
}
# image stem -> how the image stage must end: ("done", None) or ("failed", reason)
IMAGE_EXPECTED = {
    "ok-1": ("done", None), "ok-2": ("done", None), "flaky-1": ("done", None), "flaky-2": ("done", None),
    "flaky-3": ("done", None), "limited-1": ("done", None), "limited-2": ("done", None),
    "busy": ("done", None), "imgflaky": ("done", None), "oddretry": ("done", None), "badimg": ("done", None),
    "trunc": ("failed", "truncated_image"), "htmlimg": ("failed", "not_image_content_type"),
    "fakejpeg": ("failed", "not_an_image"), "bomb": ("failed", "too_many_pixels"),
}
SITEMAP_EXPECTED = {"sitemap-1.xml": ("done", None), "sitemap-bomb.xml.gz": ("failed", "too_large"),
                    "sitemap-bad.xml": ("failed", "malformed_sitemap"),
                    # On the images host, off allowed_domains: listed by the index, and by robots.txt.
                    "sitemap-offsite.xml": ("failed", "off_domain"), "robots-offsite.xml": ("failed", "off_domain"),
                    "oops.xml": ("failed", "bad_url")}  # http://[oops/oops.xml in the index
OFFSITE_SITEMAPS = ("sitemap-offsite.xml", "robots-offsite.xml")
BAD_SRC = "http://[oops/a.jpg"  # a gallery src that no URL parser takes


def hostile_product(slug: str) -> Product:
    """A page of the hostile shop: a machine part named after the slug (no name for emptylabel)
    with a 320 x 240 JPEG (800 x 600 for trunc), none for noimg, and BAD_SRC before it for
    badimg, instead of it for onlybadimg."""
    images = {"noimg": [], "badimg": [BAD_SRC, f"/img/{slug}.jpg"], "onlybadimg": [BAD_SRC]}.get(
        slug, [f"/img/{slug}.jpg"])
    name = "" if slug == "emptylabel" else f"Machine part {slug.split('-')[0]}"
    return Product(slug, name, ["Steel part for machines.", "Material", "steel"], images,
                   (800, 600) if slug == "trunc" else (320, 240))


def hostile_products() -> list[Product]:
    """The hostile shop's catalogue: one page per PAGE_EXPECTED slug."""
    return [hostile_product(slug) for slug in PAGE_EXPECTED]


def png_claiming(width: int, height: int) -> bytes:
    """A valid small PNG whose header claims another size (a decompression bomb's header)."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


# --- the shop -----------------------------------------------------------------------------------

@dataclass
class TestShop:
    __test__ = False  # a shop, not a test class
    products: list[Product] = field(default_factory=default_products)
    base_url: str = ""
    base_urls: list[str] = field(default_factory=list)  # one per host the server listens on
    requests: list[str] = field(default_factory=list)  # every request's path, in arrival order
    hits: Counter[str] = field(default_factory=Counter)  # requests per path (not cleared with requests)
    broken_images: set[str] = field(default_factory=set)  # paths answered with 404
    # Slugs whose photo is noise: as a 512 x 512 PNG each is about 0.8 MB (the others a few KB),
    # so a small disk fills at the first of them.
    noisy_images: set[str] = field(default_factory=set)
    sitemap_seconds: float = 0.0  # spread each product sitemap's body over this long
    lastmod_overrides: dict[str, str] = field(default_factory=dict)  # path -> <lastmod>
    disallow: str = "/private"  # robots.txt Disallow for every user agent
    hostile: bool = False  # the hostile web's faults, see hostile_shop()
    maze_fanout: int = 3  # children of each /chain/ index
    maze_width: int = 3000  # sitemaps in /wide.xml

    @property
    def images_url(self) -> str:
        """Where the gallery's images are: the second host on a hostile shop, else this one."""
        return self.base_urls[1] if self.hostile else self.base_url

    def hits_under(self, prefix: str) -> int:
        return sum(n for path, n in self.hits.items() if path.startswith(prefix))

    def gallery_src(self, src: str) -> str:
        """An image path as the gallery links it: on the images host for a hostile shop."""
        return f"{self.images_url}{src}" if self.hostile and src.startswith("/") else src

    # --- content ---

    def product_page(self, p: Product) -> str:
        gallery = "".join(f'<img src="{self.gallery_src(src)}" alt="">' for src in p.images)
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
        if stem in self.noisy_images:
            noise = random.Random(stem).randbytes(640 * 480 * 3)
            buf = io.BytesIO()
            Image.frombytes("RGB", (640, 480), noise).save(buf, "JPEG", quality=95)
            return buf.getvalue(), "image/jpeg"
        size = next((p.size for p in self.products if p.slug == stem), (400, 300))
        img = Image.new("RGB", size, (200, 210, 220))
        draw = ImageDraw.Draw(img)
        w, h = size
        draw.rectangle([w // 4, h // 4, 3 * w // 4, 3 * h // 4], fill=(90, 90, 100))
        buf = io.BytesIO()
        fmt = {"jpg": "JPEG", "png": "PNG", "gif": "GIF"}[ext]
        img.save(buf, fmt)
        return buf.getvalue(), f"image/{'jpeg' if fmt == 'JPEG' else ext}"

    def urlset(self, urls: list[str], lastmod: bool = True) -> bytes:
        """A sitemap of paths on this shop (or whole URLs), each with a <lastmod> unless not asked."""
        return urlset([(u if "://" in u else f"{self.base_url}{u}",
                        self.lastmod_overrides.get(u, "2024-05-01") if lastmod else None, ()) for u in urls])

    @staticmethod
    def xml(body: bytes) -> web.Response:
        return web.Response(body=body, content_type="application/xml")

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

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.requests.append(path)
        self.hits[path] += 1
        if self.hostile:
            fault = await self.hostile_fault(request, path, first=self.hits[path] == 1)
            if fault is not None:
                return fault
        half = len(self.products) // 2
        if path == "/robots.txt":
            return web.Response(text=f"User-agent: *\nDisallow: {self.disallow}\n"
                                     f"Sitemap: {self.base_url}/sitemap_index.xml.gz\n")
        if path == "/sitemap_index.xml.gz":
            index = sitemap_index((f"{self.base_url}{p}", None) for p in (
                "/sitemap-products-1.xml.gz", "/sitemap-products-2.xml.gz", "/sitemap-pages.xml"))
            return web.Response(body=gzip.compress(index), content_type="application/x-gzip")
        if path == "/sitemap-products-1.xml.gz":
            xml = self.urlset([f"/p/{p.slug}" for p in self.products[:half]])
            return await self.slowly(request, gzip.compress(xml), "application/x-gzip")
        if path == "/sitemap-products-2.xml.gz":  # served already decompressed, as servers do
            return await self.slowly(request, self.urlset([f"/p/{p.slug}" for p in self.products[half:]]),
                                     "application/xml")
        if path == "/sitemap-pages.xml":
            return self.xml(self.urlset(["/about"]))
        if path == "/mirror-sitemap.xml":  # a second catalogue of the same products and images
            return self.xml(self.urlset([f"/mp/{p.slug}" for p in self.products]))
        if path.startswith("/chain/"):  # an index of indexes without end
            name = path[len("/chain/"):-len(".xml")]
            return self.xml(sitemap_index((f"{self.base_url}/chain/{name}-{i}.xml", None)
                                          for i in range(self.maze_fanout)))
        if path == "/wide.xml":
            return self.xml(sitemap_index((f"{self.base_url}/leaf/{i}.xml", None) for i in range(self.maze_width)))
        if path.startswith("/leaf/"):
            return self.xml(urlset([]))
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

    # --- the hostile web ---

    async def hostile_fault(self, request: web.Request, path: str, first: bool) -> web.StreamResponse | None:
        """The hostile shop's answer to a request, or None where it answers as any shop does."""
        base, images = self.base_url, self.images_url
        if path == "/robots.txt":
            if f"http://{request.host}" != base:
                raise web.HTTPNotFound()  # the images host has none
            return web.Response(text=f"User-agent: *\nDisallow: {self.disallow}\nSitemap: {base}/index.xml\n"
                                     f"Sitemap: {images}/robots-offsite.xml\n")
        if path == "/index.xml":
            locs = [f"{images if name in OFFSITE_SITEMAPS else base}/{name}" for name in SITEMAP_EXPECTED
                    if name not in ("robots-offsite.xml", "oops.xml")]
            locs.append("http://[oops/oops.xml")  # recorded, never requested
            return self.xml(sitemap_index((loc, None) for loc in locs))
        if path == "/sitemap-1.xml":
            urls = [f"/p/{p.slug}" for p in self.products] + [f"{self.disallow}/p/1"]
            urls.append("http://[oops/p/broken")  # a <loc> urlsplit refuses: recorded on its page
            return self.xml(self.urlset(urls, lastmod=False))
        if path == "/sitemap-bomb.xml.gz":
            return web.Response(body=gzip.compress(b"<urlset>" + b" " * 30_000_000, 9),
                                content_type="application/x-gzip")
        if path.endswith("-offsite.xml"):  # never fetched: it would bring a page of its own
            return self.xml(self.urlset(["/p/from-offsite"], lastmod=False))
        if path == "/sitemap-bad.xml":
            return web.Response(text=f'<urlset xmlns="{SITEMAP_NS}"><url><loc>{base}/p/ok-1</url>',
                                content_type="application/xml")
        if path == "/p/elsewhere":  # where offsite redirects to, on the images host: a page as any other
            return web.Response(text=self.product_page(hostile_product("elsewhere")), content_type="text/html")
        if path.startswith("/p/"):
            return await self.page_fault(path[3:], first)
        if path.startswith("/img/"):
            return self.image_fault(path, first)
        return None

    async def page_fault(self, slug: str, first: bool) -> web.StreamResponse | None:
        if slug.startswith("flaky") and first:
            return web.Response(status=500)
        if slug.startswith("limited") and first:
            return web.Response(status=429, headers={"Retry-After": "1"})
        if slug == "busy" and first:
            when = email.utils.formatdate(time.time() + 2, usegmt=True)
            return web.Response(status=503, headers={"Retry-After": when})
        if slug == "gone":
            raise web.HTTPNotFound()
        if slug == "slow":
            await asyncio.sleep(5)
        if slug == "loop":
            raise web.HTTPFound("/p/loop")
        if slug == "private":
            # Refused by the address guard before any connection is made.
            raise web.HTTPFound("http://10.255.255.1/p/ok-1")
        if slug == "offsite":
            raise web.HTTPFound(f"{self.images_url}/p/elsewhere")  # a product page, on the other host
        if slug == "badredirect":
            return web.Response(status=302, headers={"Location": "http://[oops/p"})
        if slug == "oddretry" and first:
            return web.Response(status=503, headers={"Retry-After": "²"})
        if slug == "rot13":
            return web.Response(body=b"<html><p>\xff\xfe</p></html>", headers={"Content-Type": "text/html; charset=rot13"})
        if slug == "binary":
            return web.Response(body=bytes(range(256)) * 20, content_type="text/html")
        return None

    def image_fault(self, path: str, first: bool) -> web.StreamResponse | None:
        stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if stem == "imgflaky" and first:
            return web.Response(status=502)
        if stem == "trunc":
            return web.Response(body=self.image_bytes(path)[0][:600], content_type="image/jpeg")
        if stem == "htmlimg":
            return web.Response(text="<html>no image here</html>", content_type="text/html")
        if stem == "fakejpeg":
            return web.Response(text="<html>no image here</html>", content_type="image/jpeg")
        if stem == "bomb":
            return web.Response(body=png_claiming(30000, 30000), content_type="image/png")
        return None


def hostile_shop() -> TestShop:
    """The shop that misbehaves in every way the issue lists; serve it on two hosts (the second
    holds the images and is off SHOP_TOML's allowed_domains once those name the first)."""
    return TestShop(products=hostile_products(), disallow="/secret", hostile=True)


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


@contextlib.contextmanager
def full_disk(folder: Path, how: str, size: int):
    """A folder whose disk holds only ``size`` bytes. Yields the preexec_fn for the process
    that is to meet the full disk (None for a real disk) and a function that gives the disk
    room again. how="tmpfs": a real tmpfs of that size mounted on the folder (ENOSPC; needs
    the right to mount, else the test is skipped); how="rlimit": the process may not write
    files past ``size`` bytes (RLIMIT_FSIZE: EFBIG, Python ignores SIGXFSZ)."""
    folder.mkdir(parents=True, exist_ok=True)
    if how == "rlimit":
        yield (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))), lambda: None
        return
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {mount.stderr.strip()}")
    try:
        yield None, lambda: subprocess.run(["mount", "-o", "remount,size=256m", str(folder)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
