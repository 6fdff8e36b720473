"""Peak memory and event-loop lag while walking hostile and normal sitemaps.

A loopback server (its own process, 127.0.0.1 only) serves each workload as 8 gzipped sitemaps,
walked at once as the pipeline walks up to 8 sitemaps at once, with `walk_sitemap` through the
real HttpClient. Each workload and parser runs in a fresh process, so its peak RSS (VmHWM) is that
walk's alone; a ticker task sleeps 10 ms at a time and records how late it wakes (the loop's
worst lag), in wall-clock time and in the loop thread's CPU time (its own work, without the time
a busy machine's scheduler gives other processes). Workloads:

    hostile  100 MB of junk elements (flat and nested) per sitemap, ~100 kB gzipped
    normal   50,000 URLs with lastmod, image: and xhtml: extensions, pretty-printed
    text     one <loc> holding 90 MB of text
    deep     elements nested 20 million deep
    markup   one start tag with a 90 MB attribute
    names    3 million distinct element names

The peer is the parser ilid-async had before (ElementTree's XMLPullParser, clearing finished
<url>/<sitemap> elements), kept below as it was. A walk over 1 GiB RSS or 120 s is stopped, so
a peer that blows up does not take the machine down; its figures are then lower bounds.
Targets for ilid-async: under 100 MB peak RSS and no stall of 100 ms or more from the loop's own
work, on every workload; the wall-clock lag meets it too on a machine with a core to spare.

    .venv/bin/python benchmarks/bench_sitemap.py [--workloads hostile,normal] [--parallel 8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path

from common import free_port


NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
WORKLOADS = ["hostile", "normal", "text", "deep", "markup", "names"]
PARSERS = {"peer": "ElementTree pull parser", "ours": "ilid-async"}
RSS_LIMIT_MB = 1024
TIME_LIMIT_S = 120
MB = 1 << 20


# --- the workloads ---------------------------------------------------------------------------

def gzipped(parts) -> bytes:
    """gzip of an iterable of byte strings, never holding the whole document."""
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [c.compress(part) for part in parts]
    out.append(c.flush())
    return b"".join(out)


def repeat(unit: bytes, total: int):
    block = unit * (MB // len(unit))
    for _ in range(total // len(block)):
        yield block


def hostile():
    yield f'<?xml version="1.0"?><urlset xmlns="{NS}">'.encode()
    for i, block in enumerate(repeat(b"<a/>", 100 * MB)):
        yield block
        if i % 10 == 9:  # nested junk between the flat runs
            yield b"<b><c><d>x</d></c></b>" * 10_000
    yield b"</urlset>"


def normal(urls: int = 50_000):
    yield (f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="{NS}"\n'
           ' xmlns:image="http://www.google.com/schemas/sitemap-image/1.1"\n'
           ' xmlns:xhtml="http://www.w3.org/1999/xhtml">\n').encode()
    for i in range(urls):
        row = [f"  <url>\n    <loc>https://shop.example/p/product-{i}-steel-hinge</loc>\n",
               f"    <lastmod>2024-{1 + i % 12:02d}-{1 + i % 28:02d}T10:00:00+00:00</lastmod>\n",
               "    <changefreq>weekly</changefreq>\n    <priority>0.8</priority>\n"]
        if i % 10 == 0:
            row += [f'    <xhtml:link rel="alternate" hreflang="{lang}" '
                    f'href="https://shop.example/{lang}/p/product-{i}"/>\n' for lang in ("de", "fr")]
        if i % 5 == 0:
            row += [f"    <image:image>\n      <image:loc>https://shop.example/img/{i}-{k}.jpg</image:loc>\n"
                    f"      <image:title>Hinge {i} view {k}</image:title>\n    </image:image>\n" for k in (1, 2)]
        row.append("  </url>\n")
        yield "".join(row).encode()
    yield b"</urlset>\n"


def text():
    yield f'<urlset xmlns="{NS}"><url><loc>https://shop.example/'.encode()
    yield from repeat(b"a", 90 * MB)
    yield b"</loc></url></urlset>"


def deep():
    yield f'<urlset xmlns="{NS}">'.encode()
    yield from repeat(b"<a>", 60 * MB)


def markup():
    yield f'<urlset xmlns="{NS}"><url a="'.encode()
    yield from repeat(b"y", 90 * MB)
    yield b'"/></urlset>'


def names(count: int = 3_000_000):
    yield f'<urlset xmlns="{NS}">'.encode()
    for start in range(0, count, 100_000):
        yield b"".join(b"<n%d/>" % i for i in range(start, start + 100_000))
    yield b"</urlset>"


def serve(port: int, workloads: list[str]) -> None:
    from aiohttp import web

    bodies = {name: gzipped(globals()[name]()) for name in workloads}

    async def sitemap(request):
        return web.Response(body=bodies[request.match_info["name"]], content_type="application/x-gzip")

    app = web.Application()
    app.router.add_get("/{name}/{n}.xml.gz", sitemap)
    sizes = {name: len(body) for name, body in bodies.items()}
    web.run_app(app, host="127.0.0.1", port=port, print=lambda *_: print(json.dumps(sizes), flush=True))


# --- the peer: ilid-async's parser before issue 13 (git 2864e53), as it was ----------------

def peer_parser_class():
    from xml.etree.ElementTree import ParseError, XMLPullParser

    from ilid_async.errors import ItemError
    from ilid_async.crawl.sitemap import GZIP_MAGIC, SitemapEntry

    def _split_tag(tag: str) -> tuple[str, str]:
        ns, _, local = tag[1:].rpartition("}") if tag.startswith("{") else ("", "", tag)
        return ns, local.lower()

    class PeerSitemapParser:
        def __init__(self, max_bytes: int):
            self.max_bytes = max_bytes
            self.decompressed = 0
            self._gunzip = None
            self._started = False
            self._head = b""
            self._xml = XMLPullParser(events=("end",))
            self._loc: dict[str, str] = {}
            self._lastmod: dict[str, str] = {}
            self.root_kind = None

        def feed(self, chunk):
            if not self._started:
                self._head += chunk
                if len(self._head) < 2:
                    return
                chunk, self._head, self._started = self._head, b"", True
                if chunk[:2] == GZIP_MAGIC:
                    self._gunzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
            if self._gunzip is not None:
                data = self._gunzip.decompress(chunk, self.max_bytes - self.decompressed + 1)
                yield from self._feed_xml(data)
                while self._gunzip.unconsumed_tail:
                    data = self._gunzip.decompress(
                        self._gunzip.unconsumed_tail, self.max_bytes - self.decompressed + 1
                    )
                    yield from self._feed_xml(data)
            else:
                yield from self._feed_xml(chunk)

        def close(self):
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

        def _feed_xml(self, data):
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

        def _drain(self):
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
                        yield SitemapEntry("url" if tag == "url" else "sitemap", loc,
                                           self._lastmod.get(ns) or None)
                    self._loc.clear()
                    self._lastmod.clear()
                    elem.clear()
                elif tag in ("urlset", "sitemapindex"):
                    self.root_kind = tag

    return PeerSitemapParser


async def peer_walk_sitemap(http, url: str, *, max_bytes: int, batch_size: int = 1000):
    from ilid_async.errors import ItemError

    parser = peer_parser_class()(max_bytes)
    batch = []
    async with http.open(url) as resp:
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


# --- one walk, in its own process -----------------------------------------------------------

def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def walk(parser: str, workload: str, port: int, parallel: int, beat_path: str) -> None:
    import asyncio

    from ilid_async.config import HttpSettings
    from ilid_async.errors import ItemError
    from ilid_async.crawl.http import HttpClient
    from ilid_async.crawl.sitemap import walk_sitemap

    # A backstop under the parent's RSS watch: address space, not RSS, but it bounds a runaway.
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    walker = walk_sitemap if parser == "ours" else peer_walk_sitemap
    settings = HttpSettings(allow_loopback=True, per_host_rate=0, per_host_concurrency=parallel,
                            timeout=TIME_LIMIT_S * 2, retries=0)
    beat = open(beat_path, "w")

    async def main():
        loop = asyncio.get_running_loop()
        worst = worst_cpu = 0.0

        async def ticker():
            nonlocal worst, worst_cpu
            last_beat = 0.0
            while True:
                before, cpu = loop.time(), time.thread_time()
                await asyncio.sleep(0.01)
                now = loop.time()
                worst = max(worst, now - before - 0.01)
                # The same lag counted in the loop thread's CPU time: the work that held the loop,
                # without the time a busy machine's scheduler gave to other processes.
                worst_cpu = max(worst_cpu, time.thread_time() - cpu - 0.01)
                if now - last_beat > 0.1:  # the parent reads how late the loop is if it stops us
                    last_beat = now
                    beat.seek(0)
                    beat.write(f"{time.monotonic()} {worst}\n")
                    beat.truncate()
                    beat.flush()

        async def one(http, url):
            found = 0
            try:
                async for batch in walker(http, url, max_bytes=100_000_000):
                    found += len(batch)
            except ItemError as e:
                return found, e.reason
            return found, "done"

        async with HttpClient(settings) as http:
            tick = asyncio.create_task(ticker())
            await asyncio.sleep(0.05)
            base = vm_hwm_mb()
            started = time.monotonic()
            urls = [f"http://127.0.0.1:{port}/{workload}/{i}.xml.gz" for i in range(parallel)]
            results = await asyncio.gather(*(one(http, url) for url in urls))
            wall = time.monotonic() - started
            await asyncio.sleep(0.02)
            tick.cancel()
        outcomes = Counter(reason for _, reason in results)
        print(json.dumps({"peak_mb": vm_hwm_mb(), "base_mb": base, "lag_ms": worst * 1000,
                          "cpu_ms": worst_cpu * 1000, "wall_s": wall, "entries": sum(n for n, _ in results),
                          "outcomes": dict(outcomes)}))

    asyncio.run(main())


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_walk(parser: str, workload: str, port: int, parallel: int) -> dict:
    """One walk in a fresh process, watched: stopped over the RSS or time limit."""
    with tempfile.NamedTemporaryFile("r", suffix=".beat") as beat:
        child = subprocess.Popen([sys.executable, __file__, "--walk", parser, workload, str(port),
                                  str(parallel), beat.name], stdout=subprocess.PIPE, text=True)
        started, peak, stopped = time.monotonic(), 0.0, ""
        while child.poll() is None:
            time.sleep(0.02)
            peak = max(peak, rss_mb(child.pid))
            if peak > RSS_LIMIT_MB:
                stopped = f"stopped over {RSS_LIMIT_MB} MB RSS"
            elif time.monotonic() - started > TIME_LIMIT_S:
                stopped = f"stopped after {TIME_LIMIT_S} s"
            if stopped:
                child.kill()
                child.wait()
                beat.seek(0)
                try:
                    last_tick, lag = (float(x) for x in beat.readline().split())
                except ValueError:  # no beat yet, or one half written
                    last_tick, lag = started, 0.0
                # The loop has not ticked since the last beat: its lag is at least that long.
                lag = max(lag, time.monotonic() - last_tick)
                return {"peak_mb": peak, "lag_ms": lag * 1000, "wall_s": time.monotonic() - started,
                        "entries": None, "outcomes": {}, "stopped": stopped}
        out = child.stdout.read()
        if child.returncode != 0:
            raise SystemExit(f"{parser} walk of {workload} failed with exit code {child.returncode}")
        return json.loads(out.strip().splitlines()[-1])


def describe(label: str, r: dict) -> str:
    at_least = ">=" if r.get("stopped") else ""
    outcome = r.get("stopped") or ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items()))
    entries = "-" if r["entries"] is None else f"{r['entries']:,}"
    base = f" (before walk {r['base_mb']:.0f})" if "base_mb" in r else ""
    cpu = f" ({r['cpu_ms']:.0f} ms of it the loop's own work)" if "cpu_ms" in r else ""
    return (f"  {label:<24}: peak RSS {at_least}{r['peak_mb']:.0f} MB{base}, worst loop lag "
            f"{at_least}{r['lag_ms']:.0f} ms{cpu}, {r['wall_s']:.1f} s, entries {entries}; {outcome}")


def main(workloads: list[str], parallel: int) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--workloads", ",".join(workloads)],
                              stdout=subprocess.PIPE, text=True)
    failed, descheduled = [], []
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    try:
        sizes = json.loads(server.stdout.readline())
        for workload in workloads:
            print(f"{workload}: {parallel} sitemaps at once, {sizes[workload] / 1000:,.0f} kB gzipped each")
            peer = run_walk("peer", workload, port, parallel)
            ours = run_walk("ours", workload, port, parallel)
            print(describe(PARSERS["peer"], peer))
            print(describe(PARSERS["ours"], ours))
            at_least = ">=" if peer.get("stopped") else ""
            print(f"  ratio {PARSERS['peer']} / ilid-async: peak RSS {at_least}"
                  f"{peer['peak_mb'] / ours['peak_mb']:.1f}x, worst lag {at_least}"
                  f"{peer['lag_ms'] / max(ours['lag_ms'], 1):.1f}x")
            if ours["peak_mb"] >= 100 or ours["cpu_ms"] >= 100:
                failed.append(workload)
            if ours["lag_ms"] >= 100 and ours["cpu_ms"] < 100:
                descheduled.append(workload)
    finally:
        server.terminate()
        server.wait()
    print("targets (ilid-async under 100 MB peak RSS, no loop stall of 100 ms from its own work): "
          + (f"MISSED on {', '.join(failed)}" if failed else "met on every workload"))
    if descheduled:
        print(f"  wall-clock lag over 100 ms on {', '.join(descheduled)}: time the scheduler gave other processes "
              f"(load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs), not the loop's own work")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--walk", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.workloads.split(","))
    elif args.walk:
        which, workload, port, parallel, beat_path = args.walk
        walk(which, workload, int(port), int(parallel), beat_path)
    else:
        chosen = args.workloads.split(",")
        unknown = set(chosen) - set(WORKLOADS)
        if unknown:
            parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
        main(chosen, args.parallel)
