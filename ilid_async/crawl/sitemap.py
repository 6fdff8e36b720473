"""Streaming sitemap walk: robots.txt `Sitemap:` lines, sitemap indexes, gzip.

A sitemap is parsed while it downloads: bytes -> (gunzip) -> expat -> entries, handed on in
batches. Whether a file is gzip is decided by its first two bytes, not its name, because servers
often send `.gz` files already decompressed.

A sitemap is untrusted input that may be hostile, so memory and time per step are bounded
whatever the document holds:

- no tree is built: expat's handlers keep only the open entry's <loc>/<lastmod> text (capped);
- gzip is inflated, and XML parsed, in pieces of at most PIECE_BYTES, and walk_sitemap yields to
  the event loop between pieces, so one 64 KiB chunk of a gzip bomb cannot stall the loop;
- caps on decompressed bytes (``too_large``), elements (``too_many_elements``), nesting
  (``too_nested``), distinct names (``too_many_names``) and one unfinished piece of markup such as
  a start tag or comment (``too_large_markup``); a DTD with an internal subset (entity
  declarations) and every other XML or gzip fault is ``malformed_sitemap``.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from xml.parsers import expat

from ilid_async import reasons
from ilid_async.errors import ItemError

__all__ = [
    "GZIP_MAGIC", "XML_NS", "PIECE_BYTES", "MAX_ELEMENTS", "MAX_NESTING", "MAX_NAMES", "MAX_MARKUP_BYTES",
    "MAX_TEXT_CHARS", "ROOT_TAGS", "ENTRY_TAGS", "TEXT_TAGS", "SitemapEntry", "robots_sitemaps", "SitemapParser",
    "walk_sitemap"
]

GZIP_MAGIC = b"\x1f\x8b"
XML_NS = "http://www.w3.org/XML/1998/namespace"

# Decompressed XML handed to expat at once, and so the work between two yields to the event loop:
# 4 KiB hold at most 1,024 elements (`<a/>`), about a ms of handler calls, so 8 sitemaps walked at
# once still leave the loop's lag well under 100 ms.
PIECE_BYTES = 4 * 1024
# A 50,000-URL sitemap with image or hreflang extensions has up to a few hundred thousand
# elements, and no real element is under ~25 bytes: 4 million is headroom even for a full
# 100 MB sitemap, and stops 100 MB of `<a/>` after 16 MB.
MAX_ELEMENTS = 4_000_000
# Sitemaps nest 3 to 5 levels (urlset/url/news:news/news:publication/news:name).
MAX_NESTING = 32
# Expat keeps every distinct element and attribute name for the document's life; sitemaps use a
# few dozen. Counting them bounds that table.
MAX_NAMES = 1_000
# Text is streamed, but expat holds an unfinished start tag, comment or processing instruction
# whole (and, before expat 2.6, rescans it on every piece); real sitemap markup is under a few KB.
MAX_MARKUP_BYTES = 256 * 1024
# A <loc> or <lastmod> longer than this is dropped (URLs past 2,048 characters are rare and
# widely refused): it bounds what one entry, and a batch of them, holds.
MAX_TEXT_CHARS = 8192

ROOT_TAGS = ("urlset", "sitemapindex")
ENTRY_TAGS = ("url", "sitemap")
TEXT_TAGS = ("loc", "lastmod")


@dataclass(frozen=True, slots=True)  # slots: hundreds of thousands pass through one walk
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


class SitemapParser:
    """Feed raw (maybe gzipped) bytes in any chunk sizes; collect entries as they complete.

    Namespaces are resolved here rather than by expat, so that every name expat stores is one
    the start handler sees and counts. Sitemaps in the wild use several namespaces for their own
    tags, and extensions (image:, news:, xhtml:) nest their own <loc> inside <url>: only a
    <loc>/<lastmod> in the entry's own namespace counts.
    """

    def __init__(self, max_bytes: int, *, max_elements: int = MAX_ELEMENTS, max_nesting: int = MAX_NESTING,
                 max_names: int = MAX_NAMES, max_markup_bytes: int = MAX_MARKUP_BYTES):
        self.max_bytes = max_bytes
        self.max_elements = max_elements
        self.max_nesting = max_nesting
        self.max_names = max_names
        self.max_markup_bytes = max_markup_bytes
        self.decompressed = 0
        self.elements = 0
        self.root_kind: str | None = None  # "urlset" or "sitemapindex"
        self._gunzip: zlib._Decompress | None = None
        self._started = False
        self._head = b""
        self._out: list[SitemapEntry] = []  # entries completed in the piece being parsed
        self._depth = 0
        self._names: dict[str, tuple[str, str]] = {}  # distinct names -> (prefix, lower-case local)
        self._bindings = {"": "", "xml": XML_NS}  # prefix -> namespace, as open elements declare
        self._undo: list[tuple[int, str, str | None]] = []  # (depth, prefix, earlier binding)
        # The open <url>/<sitemap>: its kind, namespace and depth (0 = none open).
        self._entry_kind = ""
        self._entry_ns = ""
        self._entry_depth = 0
        self._loc: str | None = None
        self._lastmod: str | None = None
        # The open <loc>/<lastmod> of that entry whose text is being collected (depth 0 = none).
        self._text_tag = ""
        self._text_depth = 0
        self._text: list[str] = []
        self._text_len = 0
        self._xml = expat.ParserCreate()  # no namespace_separator: names come as written
        self._xml.buffer_text = True  # one call per text run, not per line or entity
        self._xml.ordered_attributes = True  # a flat list is cheaper than a dict per element
        self._xml.StartElementHandler = self._start
        self._xml.EndElementHandler = self._end
        self._xml.CharacterDataHandler = self._chars
        self._xml.StartDoctypeDeclHandler = self._doctype

    # --- bytes in ---------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> Iterator[SitemapEntry]:
        for entries in self.steps(chunk):
            yield from entries

    def steps(self, chunk: bytes) -> Iterator[list[SitemapEntry]]:
        """Parse a chunk in bounded pieces: one list of entries per piece (often empty). A caller
        on an event loop yields to it between steps."""
        for piece in self._pieces(chunk):
            yield self._parse(piece)

    def close(self) -> Iterator[SitemapEntry]:
        if not self._started and self._head:
            self._started = True
            yield from self._parse(self._head)
        if self._gunzip is not None:
            for piece in self._inflate(b""):  # output zlib still holds back
                yield from self._parse(piece)
        yield from self._parse(b"", final=True)
        if self.root_kind not in ROOT_TAGS:  # expat refuses a document without a root anyway
            raise ItemError(reasons.MALFORMED_SITEMAP, "root element is missing")

    def _pieces(self, chunk: bytes) -> Iterator[bytes | memoryview]:
        if not self._started:
            # Wait for two bytes to decide gzip or not.
            self._head += chunk
            if len(self._head) < 2:
                return
            chunk, self._head, self._started = self._head, b"", True
            if chunk[:2] == GZIP_MAGIC:
                self._gunzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self._gunzip is not None:
            yield from self._inflate(chunk)
        else:
            view = memoryview(chunk)
            for i in range(0, len(view), PIECE_BYTES):
                yield view[i:i + PIECE_BYTES]

    def _inflate(self, data: bytes) -> Iterator[bytes]:
        # Bounded output per call: a gzip bomb is inflated one piece at a time, and stops at the
        # byte cap (checked per piece in _parse) rather than in memory.
        assert self._gunzip is not None
        while True:
            try:
                out = self._gunzip.decompress(data, PIECE_BYTES)
            except zlib.error as e:
                raise ItemError(reasons.MALFORMED_SITEMAP, f"bad gzip: {e}") from None
            data = self._gunzip.unconsumed_tail
            if out:
                yield out
            # A full piece may leave output inside zlib even when all input is taken.
            if not data and len(out) < PIECE_BYTES:
                return

    def _parse(self, piece: bytes | memoryview, final: bool = False) -> list[SitemapEntry]:
        self.decompressed += len(piece)
        if self.decompressed > self.max_bytes:
            raise ItemError(reasons.TOO_LARGE, f"sitemap over {self.max_bytes} bytes")
        self._out = []
        try:
            self._xml.Parse(piece, final)
        except expat.ExpatError as e:
            raise ItemError(reasons.MALFORMED_SITEMAP, str(e)) from None
        except (LookupError, ValueError) as e:
            # An XML declaration naming an encoding expat cannot use leaks the codec lookup's error.
            raise ItemError(reasons.MALFORMED_SITEMAP, f"encoding: {e}") from None
        # Outside a handler, CurrentByteIndex is just past the last complete token: what lies
        # beyond it is one unfinished piece of markup that expat buffers whole.
        if self.decompressed - self._xml.CurrentByteIndex > self.max_markup_bytes:
            raise ItemError(reasons.TOO_LARGE_MARKUP, f"markup over {self.max_markup_bytes} bytes unfinished")
        return self._out

    # --- expat handlers ---------------------------------------------------------------------

    def _doctype(self, name, system_id, public_id, has_internal_subset):
        # Entity declarations live in the internal subset: refusing it rules out entity
        # expansion attacks outright. A bare DOCTYPE is harmless (expat fetches nothing).
        if has_internal_subset:
            raise ItemError(reasons.MALFORMED_SITEMAP, "a DTD internal subset (entity declarations) in a sitemap")

    def _new_name(self, name: str) -> tuple[str, str]:
        if len(self._names) >= self.max_names:
            raise ItemError(reasons.TOO_MANY_NAMES, f"over {self.max_names} distinct element and attribute names")
        prefix, _, local = name.rpartition(":")
        split = self._names[name] = (prefix, local.lower())
        return split

    def _start(self, name: str, attrs: list[str]) -> None:
        # Called for every element, junk included: the common path is a few comparisons.
        depth = self._depth = self._depth + 1
        self.elements += 1
        if self.elements > self.max_elements:
            raise ItemError(reasons.TOO_MANY_ELEMENTS, f"over {self.max_elements} elements")
        if depth > self.max_nesting:
            raise ItemError(reasons.TOO_NESTED, f"elements nested over {self.max_nesting} deep")
        prefix, local = self._names.get(name) or self._new_name(name)
        if attrs:
            self._attributes(attrs, depth)
        ns = self._bindings.get(prefix)
        if ns is None:
            raise ItemError(reasons.MALFORMED_SITEMAP, f"unbound prefix in <{name}>")
        if depth == 1:
            if local not in ROOT_TAGS:
                raise ItemError(reasons.MALFORMED_SITEMAP, f"root element is {local}")
            self.root_kind = local
        elif local in ENTRY_TAGS:
            self._entry_kind, self._entry_ns, self._entry_depth = local, ns, depth
            self._loc = self._lastmod = None
        elif local in TEXT_TAGS and self._entry_depth and ns == self._entry_ns:
            self._text_tag, self._text_depth = local, depth
            self._text, self._text_len = [], 0

    def _attributes(self, attrs: list[str], depth: int) -> None:
        for i in range(0, len(attrs), 2):
            key = attrs[i]
            if key not in self._names:
                self._new_name(key)
            if key == "xmlns" or key.startswith("xmlns:"):
                prefix = key[6:]
                self._undo.append((depth, prefix, self._bindings.get(prefix)))
                self._bindings[prefix] = attrs[i + 1]

    def _end(self, name: str) -> None:
        depth = self._depth
        self._depth = depth - 1
        if depth == self._text_depth:
            self._text_depth = 0
            text = "".join(self._text).strip() if self._text_len <= MAX_TEXT_CHARS else None
            if self._text_tag == "loc":
                self._loc = text
            else:
                self._lastmod = text
        elif depth == self._entry_depth:
            self._entry_depth = 0
            if self._loc:
                self._out.append(SitemapEntry(self._entry_kind, self._loc, self._lastmod or None))
        if self._undo and self._undo[-1][0] == depth:
            self._unbind(depth)

    def _unbind(self, depth: int) -> None:
        """The namespace declarations of the element at depth go out of scope."""
        while self._undo and self._undo[-1][0] == depth:
            _, prefix, earlier = self._undo.pop()
            if earlier is None:
                del self._bindings[prefix]
            else:
                self._bindings[prefix] = earlier

    def _chars(self, data: str) -> None:
        # Only the open <loc>/<lastmod>'s own text, and only up to the cap.
        if self._depth == self._text_depth and self._text_len <= MAX_TEXT_CHARS:
            self._text_len += len(data)
            if self._text_len <= MAX_TEXT_CHARS:
                self._text.append(data)


async def walk_sitemap(http, url: str, *, max_bytes: int, headers: dict[str, str] | None = None,
                       batch_size: int = 1000, **caps: int) -> AsyncIterator[list[SitemapEntry]]:
    """Fetch one sitemap and yield its entries in batches while it downloads. ``caps`` are
    SitemapParser's keyword arguments (max_elements, max_nesting, ...)."""
    parser = SitemapParser(max_bytes, **caps)
    batch: list[SitemapEntry] = []
    async with http.open(url, headers=headers) as resp:
        if resp.status != 200:
            raise ItemError(reasons.http_status(resp.status), url)
        async for chunk in resp.content.iter_chunked(65536):
            http.count_bytes(url, len(chunk))
            for entries in parser.steps(chunk):
                for entry in entries:
                    batch.append(entry)
                    if len(batch) >= batch_size:
                        yield batch
                        batch = []
                # Each step is bounded work: let other tasks (other sitemaps, the page
                # crawl) run between them.
                await asyncio.sleep(0)
    batch += parser.close()
    if batch:
        yield batch
