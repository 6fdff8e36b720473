"""Crawl + extract throughput: Scrapy's SitemapSpider (the original pipeline's way) vs ilid-async.

Both crawl the same demo shop (served by its own process on loopback, a few thousand products)
from its robots.txt and gzipped sitemap index, visit every product page, and extract the raw
record with the same selectors; Scrapy writes its items to a JSON feed as the original spiders
did, ilid-async commits them to its store (`--stages crawl`, politeness limits off for this host).
Prints pages per second of both and the ratio.

    .venv/bin/pip install scrapy   # the peer, only for this benchmark
    .venv/bin/python benchmarks/bench_crawl.py [--products 3000]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import free_port, report_ratio, write_crawl_config

SPIDER = '''
import scrapy
from scrapy.spiders import SitemapSpider
from urllib.parse import urljoin


class DemoSpider(SitemapSpider):
    name = "demo"
    sitemap_urls = ["{base}/robots.txt"]
    sitemap_rules = [("/p/", "parse_product")]
    custom_settings = {{
        "CONCURRENT_REQUESTS": 32, "CONCURRENT_REQUESTS_PER_DOMAIN": 32, "DOWNLOAD_DELAY": 0,
        "ROBOTSTXT_OBEY": True, "LOG_LEVEL": "WARNING", "TELNETCONSOLE_ENABLED": False,
        "DEFAULT_REQUEST_HEADERS": {{"Accept-Language": "en-US,en"}},
    }}

    def parse_product(self, response):
        if not response.css("div.product-detail"):
            return
        src = next((s for s in response.css("div.gallery img::attr(src)").getall()
                    if s.lower().endswith((".jpg", ".jpeg", ".png"))), None)
        if src is None:
            return
        yield {{
            "url": urljoin(response.url, src),
            "web": {{
                "label": response.css("h1.product-title::text").get(default=""),
                "data": response.css("div.product-info")[0].css("::text").getall(),
            }},
        }}
'''

HTTP = """[http]
allow_loopback = true
concurrency = 32
[http.hosts."127.0.0.1"]
rate = 0
concurrency = 32
"""


def timed(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(products: int) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "ilid_async.demo", "--port", str(port),
                               "--products", str(products), "--prerender"], stdout=subprocess.PIPE, text=True)
    try:
        server.stdout.readline()  # "Demo shop serving ..." once it listens
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "spider.py").write_text(SPIDER.format(base=base))
            scrapy_s = timed([sys.executable, "-m", "scrapy", "runspider", "spider.py", "-O", "items.json"], tmp)
            scrapy_items = len(json.loads((tmp / "items.json").read_text()))

            write_crawl_config(tmp, {"demo": base}, HTTP)
            ours_s = timed([sys.executable, "-m", "ilid_async", "run", "config.toml", "--stages", "crawl"], tmp)
            db = sqlite3.connect(tmp / "run" / "state.sqlite")
            pages = db.execute("SELECT COUNT(*) FROM pages WHERE state='done'").fetchone()[0]
            records = db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
            db.close()
    finally:
        server.terminate()
        server.wait()
    print(f"product pages: {products}; items: Scrapy {scrapy_items}, ilid-async {records} "
          "(times include start-up)")
    report_ratio("pages", "pages/s", "Scrapy SitemapSpider", products, scrapy_s, pages, ours_s)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=3000)
    main(parser.parse_args().products)
