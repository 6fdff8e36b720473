"""A shop that misbehaves in every way the issue lists, on two loopback hosts: pages and
sitemaps on the first, images on the second (which is off the shop's allowed_domains). Each
transient fault happens once per path, then the path works. SitemapMaze serves sitemap indexes
without end; NoisyShop serves images whose PNGs are large. ``full_disk`` gives a folder a real
small disk, or a file size limit to a process, for full-disk tests."""

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
import time
import zlib
from collections import Counter
from pathlib import Path

from aiohttp import web
from PIL import Image
from shop import TestShop

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
            return web.Response(text=f"User-agent: *\nDisallow: /secret\nSitemap: {self.base_url}/index.xml\n"
                                     f"Sitemap: {self.images_url}/robots-offsite.xml\n")
        if path == "/index.xml":
            body = "".join(f"<sitemap><loc>{self.images_url if name in OFFSITE_SITEMAPS else self.base_url}/{name}"
                           "</loc></sitemap>" for name in SITEMAP_EXPECTED
                           if name not in ("robots-offsite.xml", "oops.xml"))
            body += "<sitemap><loc>http://[oops/oops.xml</loc></sitemap>"  # recorded, never requested
            return web.Response(text=f'<sitemapindex xmlns="{NS}">{body}</sitemapindex>', content_type="application/xml")
        if path == "/sitemap-1.xml":
            urls = [f"{self.base_url}/p/{slug}" for slug in PAGE_EXPECTED] + [f"{self.base_url}/secret/p/1"]
            urls.append("http://[oops/p/broken")  # a <loc> urlsplit refuses: recorded on its page
            body = "".join(f"<url><loc>{u}</loc></url>" for u in urls)
            return web.Response(text=f'<urlset xmlns="{NS}">{body}</urlset>', content_type="application/xml")
        if path == "/sitemap-bomb.xml.gz":
            return web.Response(body=gzip.compress(b"<urlset>" + b" " * 30_000_000, 9),
                                content_type="application/x-gzip")
        if path.endswith("-offsite.xml"):  # never fetched: it would bring a page of its own
            return web.Response(text=f'<urlset xmlns="{NS}"><url><loc>{self.base_url}/p/from-offsite</loc></url>'
                                     "</urlset>", content_type="application/xml")
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


class SitemapMaze:
    """Sitemap indexes that never end, as generated ones did (issue 13 item 8): /chain/NAME.xml
    lists ``fanout`` children /chain/NAME-i.xml, each an index again; /wide.xml lists ``width``
    empty sitemaps /leaf/i.xml."""

    def __init__(self, fanout: int = 3, width: int = 3000):
        self.base_url = ""
        self.fanout = fanout
        self.width = width
        self.hits: Counter[str] = Counter()

    def index(self, locs) -> web.Response:
        body = "".join(f"<sitemap><loc>{self.base_url}{loc}</loc></sitemap>" for loc in locs)
        return web.Response(text=f'<sitemapindex xmlns="{NS}">{body}</sitemapindex>', content_type="application/xml")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.hits[path.split("/")[1]] += 1
        if path.startswith("/chain/"):
            name = path[len("/chain/"):-len(".xml")]
            return self.index(f"/chain/{name}-{i}.xml" for i in range(self.fanout))
        if path == "/wide.xml":
            return self.index(f"/leaf/{i}.xml" for i in range(self.width))
        if path.startswith("/leaf/"):
            return web.Response(text=f'<urlset xmlns="{NS}"></urlset>', content_type="application/xml")
        raise web.HTTPNotFound()


class NoisyShop(TestShop):
    """The test shop with noise photos from product ``noisy_from`` on: as a 512 x 512 PNG each is
    about 0.8 MB (the others a few KB), so a small disk fills at the first of them."""

    __test__ = False

    def __init__(self, products, noisy_from: int):
        super().__init__(products=products)
        self.noisy = {p.slug for p in products[noisy_from:]}

    def image_bytes(self, path: str) -> tuple[bytes, str]:
        stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if stem not in self.noisy:
            return super().image_bytes(path)
        noise = random.Random(stem).randbytes(640 * 480 * 3)
        buf = io.BytesIO()
        Image.frombytes("RGB", (640, 480), noise).save(buf, "JPEG", quality=95)
        return buf.getvalue(), "image/jpeg"


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
        import pytest

        pytest.skip(f"cannot mount a small tmpfs: {mount.stderr.strip()}")
    try:
        yield None, lambda: subprocess.run(["mount", "-o", "remount,size=256m", str(folder)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
