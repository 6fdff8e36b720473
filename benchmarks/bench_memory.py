"""Peak memory of a crawl whose sitemaps list 1,000,000 product URLs.

A loopback server (its own process) serves a sitemap index of 20 gzipped sitemaps of 50,000
URLs each; ilid-async walks them all (`--stages crawl`) while it starts crawling the pages, and
is stopped once every sitemap is walked (the page crawl is cut short). Prints the crawler's peak
RSS (VmHWM) and how long the walk took. Target: under 300 MB.

    .venv/bin/python benchmarks/bench_memory.py [--sitemaps 20] [--urls 50000]
"""

from __future__ import annotations

import argparse
import gzip
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import free_port, write_crawl_config
NS = "http://www.sitemaps.org/schemas/sitemap/0.9"


def serve(port: int, sitemaps: int, urls: int) -> None:
    from aiohttp import web

    base = f"http://127.0.0.1:{port}"

    async def robots(_):
        return web.Response(text=f"User-agent: *\nSitemap: {base}/index.xml\n")

    async def index(_):
        body = "".join(f"<sitemap><loc>{base}/s/{i}.xml.gz</loc></sitemap>" for i in range(sitemaps))
        return web.Response(text=f'<sitemapindex xmlns="{NS}">{body}</sitemapindex>', content_type="application/xml")

    async def sitemap(request):
        n = int(request.match_info["n"])
        rows = "".join(f"<url><loc>{base}/p/{n}-{i}</loc><lastmod>2024-06-01</lastmod></url>" for i in range(urls))
        xml = f'<?xml version="1.0"?><urlset xmlns="{NS}">{rows}</urlset>'.encode()
        return web.Response(body=gzip.compress(xml, 1), content_type="application/x-gzip")

    async def page(_):
        return web.Response(text="<html><body><h1>Part</h1></body></html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/robots.txt", robots)
    app.router.add_get("/index.xml", index)
    app.router.add_get("/s/{n}.xml.gz", sitemap)
    app.router.add_get("/p/{slug}", page)
    web.run_app(app, host="127.0.0.1", port=port, print=lambda *_: print("ready", flush=True))


HTTP = """[http]
allow_loopback = true
[http.hosts."127.0.0.1"]
rate = 0
concurrency = 16
"""


def peak_rss_mb(pid: int) -> float:
    """Peak RSS of the process and, summed, of its children (the page-parsing workers)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:")), 0.0)
    return own + sum(peak_rss_mb(int(child)) for child in children)


def main(sitemaps: int, urls: int) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--sitemaps", str(sitemaps),
                               "--urls", str(urls)], stdout=subprocess.PIPE, text=True)
    try:
        server.stdout.readline()
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            write_crawl_config(tmp, {"big": f"http://127.0.0.1:{port}"}, HTTP)
            started = time.monotonic()
            crawler = subprocess.Popen([sys.executable, "-m", "ilid_async", "run", "config.toml", "--stages",
                                        "crawl"], cwd=tmp, stdout=subprocess.DEVNULL)
            db_path = tmp / "run" / "state.sqlite"
            walked = pages = 0
            peak = 0.0
            while crawler.poll() is None:
                time.sleep(0.5)
                peak = max(peak, peak_rss_mb(crawler.pid))
                try:
                    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
                    walked = db.execute("SELECT COUNT(*) FROM sitemaps WHERE state='done'").fetchone()[0]
                    pages = db.execute("SELECT COUNT(*) FROM pages").fetchone()[0]
                    crawled = db.execute("SELECT COUNT(*) FROM pages WHERE state<>'pending'").fetchone()[0]
                    db.close()
                except sqlite3.Error:
                    continue
                if walked == sitemaps + 1:  # the index and all its sitemaps
                    break
            took = time.monotonic() - started
            peak = max(peak, peak_rss_mb(crawler.pid))
            crawler.send_signal(signal.SIGINT)  # a graceful stop lets it end its workers
            try:
                crawler.wait(timeout=30)
            except subprocess.TimeoutExpired:
                crawler.kill()
                crawler.wait()
    finally:
        server.terminate()
        server.wait()
    print(f"sitemaps walked: {walked}, page URLs stored: {pages:,}, pages crawled meanwhile: {crawled:,}")
    print(f"walk took {took:.0f} s; crawler peak RSS {peak:.0f} MB with its worker processes "
          "(target < 300 MB)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sitemaps", type=int, default=20)
    parser.add_argument("--urls", type=int, default=50_000)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.sitemaps, args.urls)
    else:
        main(args.sitemaps, args.urls)
