"""Streaming sitemap walk: robots.txt `Sitemap:` lines, sitemap indexes, gzip.

A sitemap is parsed while it downloads: bytes -> (gunzip) -> incremental XML parser -> entries,
handed on in batches, so a 50,000-URL sitemap is never held in memory whole. Whether a file is
gzip is decided by its first two bytes, not its name, because servers often send `.gz` files
already decompressed.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from xml.etree.ElementTree import ParseError, XMLPullParser

from .errors import ItemError

GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class SitemapEntry:
    kind: str  # "sitemap" (a child of an index) or "url" (a page)
    loc: str
    lastmod: str | None


def robots_sitemaps(robots_txt: str) -> list[str]:
    """`Sitemap:` lines of a robots.txt, in order (the key is case-insensitive)."""
    found = []
    for line in robots_txt.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "sitemap" and value.strip():
            found.append(value.strip())
    return found


def _split_tag(tag: str) -> tuple[str, str]:
    """(namespace, local name). Sitemaps in the wild use several namespaces for their own
    tags, and extensions (image:, news:, xhtml:) nest their own <loc> inside <url>."""
    ns, _, local = tag[1:].rpartition("}") if tag.startswith("{") else ("", "", tag)
    return ns, local.lower()


class SitemapParser:
    """Feed raw (maybe gzipped) bytes in any chunk sizes; collect entries as they complete."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.decompressed = 0
        self._gunzip: zlib._Decompress | None = None
        self._started = False
        self._head = b""
        self._xml = XMLPullParser(events=("end",))
        # Per namespace, the <loc>/<lastmod> seen since the last entry: only those in the
        # entry's own namespace count.
        self._loc: dict[str, str] = {}
        self._lastmod: dict[str, str] = {}
        self.root_kind: str | None = None  # "urlset" or "sitemapindex"

    def feed(self, chunk: bytes) -> Iterator[SitemapEntry]:
        if not self._started:
            # Wait for two bytes to decide gzip or not.
            self._head += chunk
            if len(self._head) < 2:
                return
            chunk, self._head, self._started = self._head, b"", True
            if chunk[:2] == GZIP_MAGIC:
                self._gunzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self._gunzip is not None:
            # Decompress in bounded pieces so a gzip bomb stops at the cap, not in memory.
            data = self._gunzip.decompress(chunk, self.max_bytes - self.decompressed + 1)
            yield from self._feed_xml(data)
            while self._gunzip.unconsumed_tail:
                data = self._gunzip.decompress(
                    self._gunzip.unconsumed_tail, self.max_bytes - self.decompressed + 1
                )
                yield from self._feed_xml(data)
        else:
            yield from self._feed_xml(chunk)

    def close(self) -> Iterator[SitemapEntry]:
        if not self._started and self._head:
            self._started = True
            yield from self._feed_xml(self._head)
        if self._gunzip is not None:
            yield from self._feed_xml(self._gunzip.flush())
        try:
            self._xml.close()
        except ParseError as e:
            raise ItemError("malformed_sitemap", str(e)) from None
        yield from self._drain()
        if self.root_kind not in ("urlset", "sitemapindex"):
            raise ItemError("malformed_sitemap", f"root element is {self.root_kind or 'missing'}")

    def _feed_xml(self, data: bytes) -> Iterator[SitemapEntry]:
        if not data:
            return
        self.decompressed += len(data)
        if self.decompressed > self.max_bytes:
            raise ItemError("too_large", f"sitemap over {self.max_bytes} bytes")
        try:
            self._xml.feed(data)
        except ParseError as e:
            raise ItemError("malformed_sitemap", str(e)) from None
        yield from self._drain()

    def _drain(self) -> Iterator[SitemapEntry]:
        try:
            events = list(self._xml.read_events())
        except ParseError as e:
            raise ItemError("malformed_sitemap", str(e)) from None
        for _, elem in events:
            ns, tag = _split_tag(elem.tag)
            if tag == "loc":
                self._loc[ns] = (elem.text or "").strip()
            elif tag == "lastmod":
                self._lastmod[ns] = (elem.text or "").strip()
            elif tag in ("url", "sitemap"):
                loc = self._loc.get(ns)
                if loc:
                    yield SitemapEntry("url" if tag == "url" else "sitemap", loc, self._lastmod.get(ns) or None)
                self._loc.clear()
                self._lastmod.clear()
                elem.clear()  # finished entries are dropped: memory stays flat
            elif tag in ("urlset", "sitemapindex"):
                self.root_kind = tag


async def walk_sitemap(http, url: str, *, max_bytes: int, headers: dict[str, str] | None = None,
                       batch_size: int = 1000) -> AsyncIterator[list[SitemapEntry]]:
    """Fetch one sitemap and yield its entries in batches while it downloads."""
    parser = SitemapParser(max_bytes)
    batch: list[SitemapEntry] = []
    async with http.open(url, headers=headers) as resp:
        if resp.status != 200:
            raise ItemError(f"http_{resp.status}", url)
        async for chunk in resp.content.iter_chunked(65536):
            http.count_bytes(url, len(chunk))
            for entry in parser.feed(chunk):
                batch.append(entry)
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
    for entry in parser.close():
        batch.append(entry)
    if batch:
        yield batch
