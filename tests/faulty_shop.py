"""A shop that misbehaves in every way the issue lists, on two loopback hosts: pages and
sitemaps on the first, images on the second. Each transient fault happens once per path, then
the path works."""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import io
import struct
import time
import zlib
from collections import Counter

from aiohttp import web
from PIL import Image

NS = "http://www.sitemaps.org/schemas/sitemap/0.9"

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
                    "sitemap-bad.xml": ("failed", "malformed_sitemap")}


def jpeg(size=(320, 240)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 130, 140)).save(buf, "JPEG")
    return buf.getvalue()


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


class FaultyShop:
    def __init__(self):
        self.base_url = ""
        self.base_urls: list[str] = []
        self.hits: Counter[str] = Counter()

    @property
    def images_url(self) -> str:
        return self.base_urls[1]

    def page(self, slug: str) -> str:
        label = "" if slug == "emptylabel" else f"Machine part {slug.split('-')[0]}"
        gallery = "" if slug == "noimg" else f'<img src="{self.images_url}/img/{slug}.jpg">'
        if slug in ("badimg", "onlybadimg"):
            gallery = '<img src="http://[oops/a.jpg">' + (gallery if slug == "badimg" else "")
        return (f'<html><body><div class="product"><h1 class="title">{label}</h1>'
                f'<div class="gallery">{gallery}</div><div class="info"><p>Steel part for machines.</p>'
                f"<p>Material: steel</p></div></div></body></html>")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.hits[path] += 1
        first = self.hits[path] == 1
        if path == "/robots.txt":
            if request.host.startswith("127.0.0.3"):
                raise web.HTTPNotFound()
            return web.Response(text=f"User-agent: *\nDisallow: /secret\nSitemap: {self.base_url}/index.xml\n")
        if path == "/index.xml":
            body = "".join(f"<sitemap><loc>{self.base_url}/{name}</loc></sitemap>" for name in SITEMAP_EXPECTED)
            return web.Response(text=f'<sitemapindex xmlns="{NS}">{body}</sitemapindex>', content_type="application/xml")
        if path == "/sitemap-1.xml":
            urls = [f"{self.base_url}/p/{slug}" for slug in PAGE_EXPECTED] + [f"{self.base_url}/secret/p/1"]
            urls.append("http://[oops/p/broken")  # a <loc> urlsplit refuses: the sitemap still completes
            body = "".join(f"<url><loc>{u}</loc></url>" for u in urls)
            return web.Response(text=f'<urlset xmlns="{NS}">{body}</urlset>', content_type="application/xml")
        if path == "/sitemap-bomb.xml.gz":
            return web.Response(body=gzip.compress(b"<urlset>" + b" " * 30_000_000, 9),
                                content_type="application/x-gzip")
        if path == "/sitemap-bad.xml":
            return web.Response(text=f'<urlset xmlns="{NS}"><url><loc>{self.base_url}/p/ok-1</url>',
                                content_type="application/xml")
        if path.startswith("/p/"):
            return await self.product(path[3:], first)
        if path.startswith("/img/"):
            return self.image(path[5:].rsplit(".", 1)[0], first)
        raise web.HTTPNotFound()

    async def product(self, slug: str, first: bool) -> web.StreamResponse:
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
        if slug == "badredirect":
            return web.Response(status=302, headers={"Location": "http://[oops/p"})
        if slug == "oddretry" and first:
            return web.Response(status=503, headers={"Retry-After": "²"})
        if slug == "rot13":
            return web.Response(body=b"<html><p>\xff\xfe</p></html>", headers={"Content-Type": "text/html; charset=rot13"})
        if slug == "binary":
            return web.Response(body=bytes(range(256)) * 20, content_type="text/html")
        return web.Response(text=self.page(slug), content_type="text/html")

    def image(self, stem: str, first: bool) -> web.StreamResponse:
        if stem == "imgflaky" and first:
            return web.Response(status=502)
        if stem == "trunc":
            return web.Response(body=jpeg((800, 600))[:600], content_type="image/jpeg")
        if stem == "htmlimg":
            return web.Response(text="<html>no image here</html>", content_type="text/html")
        if stem == "fakejpeg":
            return web.Response(text="<html>no image here</html>", content_type="image/jpeg")
        if stem == "bomb":
            return web.Response(body=png_claiming(30000, 30000), content_type="image/png")
        return web.Response(body=jpeg(), content_type="image/jpeg")
