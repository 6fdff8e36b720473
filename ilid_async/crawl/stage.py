"""The crawl stage's work: a shop's robots.txt and sitemaps become pending pages, and a page
becomes a stored record (extracted and pre-filtered) or a page outcome with its reason.

    sitemap URL -> walk (streamed) -> page URLs -> fetch -> extract + pre-filter -> record

Every result is committed to the store with the item's next state (run/store.py); the run's
scheduler (run/stage.py) leases the sitemaps and pages this works on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from ilid_async import reasons
from ilid_async.config import Config, ShopConfig
from ilid_async.crawl.extract import NotExtracted
from ilid_async.crawl.http import HttpClient
from ilid_async.crawl.page_pool import PageJob, PagePool, process_page
from ilid_async.crawl.sitemap import robots_sitemaps, walk_sitemap
from ilid_async.crawl.urls import domain_allowed, split_url
from ilid_async.errors import ItemError, UserError
from ilid_async.output.dataset import safe_join
from ilid_async.run.store import PageTask, SitemapTask, Store

__all__ = ["PAGE_FAILURES", "CrawlStage"]

log = logging.getLogger(__name__)

# Page outcomes that are item failures; the other outcomes are fine pages that are not products.
PAGE_FAILURES = {reasons.UNDECODABLE_PAGE, reasons.EXTRACTION_ERROR, reasons.WORKER_DIED, reasons.PAGE_TIME_BUDGET}


class CrawlStage:
    """Sitemaps and pages of the run's shops, over one HTTP client and the store.

    ``new_pages`` is called when a sitemap adds pages, so that the pages stage crawls them
    while the sitemap still downloads. ``page_pool`` (None: in this process) extracts pages
    on the other cores."""

    def __init__(self, cfg: Config, shops: dict[str, ShopConfig], tradenames: dict[str, re.Pattern[str] | None],
                 store: Store, http: HttpClient, crawl_pass: int, page_pool: PagePool | None,
                 new_pages: Callable[[], None]):
        self.cfg = cfg
        self.shops = shops
        self.tradenames = tradenames
        self.store = store
        self.http = http
        self.crawl_pass = crawl_pass
        self.page_pool = page_pool
        self.new_pages = new_pages

    async def seed_sitemaps(self) -> None:
        for shop in self.shops.values():
            # The shop file's own sitemaps are walked wherever they are; what robots.txt names
            # must be on the shop's allowed_domains, like every sitemap and page found on the web.
            self.store.add_sitemaps(shop.name, shop.sitemap_urls, self.crawl_pass,
                                    max_sitemaps=self.cfg.http.max_sitemaps)
            found: list[str] = []
            for robots_url in shop.robots_urls:
                try:
                    resp = await self.http.get(robots_url, max_bytes=500_000)
                    resp.raise_for_status()
                except ItemError as e:
                    if found or self.store.has_sitemaps(shop.name):
                        log.warning("%s: robots.txt %s: %s", shop.name, robots_url, e)
                        continue
                    raise UserError(f"{shop.path}: key 'robots_urls': cannot fetch {robots_url} "
                                    f"({e.reason})") from None
                found += robots_sitemaps(resp.body.decode("utf-8", "replace"))
            self.add_sitemaps(shop, found, depth=0)

    def add_sitemaps(self, shop: ShopConfig, urls: list[str], *, depth: int) -> None:
        """Sitemaps found on the web (robots.txt lines, index children) at ``depth``: those off
        the shop's allowed_domains or deeper than http.max_sitemap_depth are recorded as failed
        with the reason, the store refuses those over http.max_sitemaps, the rest are walked."""
        http = self.cfg.http
        walk, refused = [], []
        for url in urls:
            if split_url(url) is None:  # "http://[oops/": recorded, never requested
                refused.append((url, reasons.BAD_URL))
            elif not domain_allowed(url, shop.allowed_domains):
                refused.append((url, reasons.OFF_DOMAIN))
            elif depth > http.max_sitemap_depth:
                refused.append((url, reasons.TOO_DEEP))
            else:
                walk.append(url)
        self.store.add_sitemaps(shop.name, walk, self.crawl_pass, depth=depth, max_sitemaps=http.max_sitemaps,
                                refused=refused)

    def _headers(self, shop: ShopConfig) -> dict[str, str]:
        return {"Accept-Language": shop.accept_language}

    async def walk_sitemap(self, task: SitemapTask) -> None:
        url, shop_name = task.url, task.shop
        shop = self.shops[shop_name]
        found = 0
        try:
            async for batch in walk_sitemap(self.http, url, max_bytes=self.cfg.http.max_sitemap_bytes,
                                            headers=self._headers(shop)):
                children = [e.loc for e in batch if e.kind == "sitemap" and shop.follows_sitemap(e.loc)]
                # A page URL that does not parse is kept, to be recorded: the fetch refuses it
                # as bad_url without a request.
                pages = [(e.loc, e.lastmod) for e in batch
                         if e.kind == "url" and shop.page_action(e.loc) == "product"
                         and (split_url(e.loc) is None or domain_allowed(e.loc, shop.allowed_domains))]
                if children:
                    self.add_sitemaps(shop, children, depth=task.depth + 1)
                if self.store.add_pages(shop_name, pages):
                    self.new_pages()
                found += len(batch)
        except ItemError as e:
            self.store.finish_sitemap(url, reason=e.reason, urls_found=found)
            return
        self.store.finish_sitemap(url, urls_found=found)

    async def crawl_page(self, task: PageTask) -> None:
        shop = self.shops[task.shop]
        try:
            resp = await self.http.get(task.url, max_bytes=self.cfg.http.max_page_bytes,
                                       headers=self._headers(shop), check_robots=shop.obey_robots)
        except ItemError as e:
            self.store.finish_page(task.url, failed=e.reason)
            return
        if not domain_allowed(resp.final_url, shop.allowed_domains):  # redirected off the shop
            self.store.finish_page(task.url, failed=reasons.OFF_DOMAIN)
            return
        if not resp.ok:
            self.store.finish_page(task.url, failed=reasons.http_status(resp.status))
            return
        job = PageJob(shop.name, resp.final_url, resp.body, resp.charset)
        if self.page_pool is not None:
            found = await self.page_pool.process(job)
        else:
            found = process_page(shop, self.tradenames[shop.name], job)
        if isinstance(found, NotExtracted):
            if found.reason in PAGE_FAILURES:
                self.store.finish_page(task.url, failed=found.reason)
            else:
                self.store.finish_page(task.url, outcome=found.reason)
            return
        _, stale_image = self.store.commit_page_record(
            task.url, record_id=found.record_id, shop=shop.name, source=shop.source,
            image_url=found.image_url, raw_label=found.raw_label, raw_data=found.raw_data,
            cleaned=found.cleaned, reject_reason=found.reject_reason,
        )
        if stale_image:  # the record is labelled again and may get another folder
            try:
                safe_join(self.cfg.images_dir, stale_image).unlink(missing_ok=True)
            except (OSError, ValueError) as e:  # left behind: not in the dataset, harmless
                log.warning("cannot remove the outdated image %s: %s", stale_image, e)
