"""Wires the stages into one streaming run over the store.

    sitemaps -> pages (extract + pre-filter) -> label (LLM + post-filter + assemble) -> images -> dataset

Each stage leases pending work from the store, does it with bounded concurrency, and commits
the result; finished work wakes the next stage, which can start while earlier stages still run.
A stage is finished when its upstream stages are finished and it has no work left. The store is
the truth and the in-memory side holds only work in flight, so memory stays bounded and a
killed run resumes from the store.

An item error is recorded on its item and the run goes on. A UserError from a stage (a full
disk, a store that cannot be written) stops the run at once: finished work is committed, work
in flight returns to pending, and the error is the command's one line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from ilid_async import reasons
from ilid_async.config import Config, ShopConfig
from ilid_async.output.dataset import image_path, safe_join
from ilid_async.errors import ItemError, UserError
from ilid_async.crawl.extract import NotExtracted
from ilid_async.filters import Rejected, apply_no_value_rule, compile_tradename, postfilter
from ilid_async.crawl.http import HttpClient
from ilid_async.images.fetch import download_image
from ilid_async.images.transform import NO_SPACE_ERRNOS, Encoding, ImageError, ImageWriteError, image_pool, write_failure
from ilid_async.label.quality import page_words, ungrounded_fields
from ilid_async.output.writers import OutputPlan, find_duplicates, write_outputs
from ilid_async.crawl.page_pool import PageJob, PagePool, process_page
from ilid_async.crawl.sitemap import robots_sitemaps, walk_sitemap
from ilid_async.run.store import ImageTask, LabelTask, PageTask, SitemapTask, Store, StoreError, disk_full_message
from ilid_async.crawl.urls import domain_allowed, split_url
from ilid_async.workers import RestartingPool

if TYPE_CHECKING:
    from ilid_async.label.engine import LabelEngine
    from ilid_async.label.openai_backend import OpenAIBackend

__all__ = [
    "COMMIT_EVERY", "GRACE_SECONDS", "PAGES_IN_FLIGHT", "PAGE_FAILURES", "ungrounded_rejection", "Stage", "Pipeline"
]

log = logging.getLogger(__name__)

# Item results are committed in groups at least this often (seconds): a killed run redoes at
# most this much work, and a fast crawl does not pay one commit per page.
COMMIT_EVERY = 0.05
GRACE_SECONDS = 10.0
PAGES_IN_FLIGHT = 2  # pages leased per connection allowed (see _run_stages)

# Page outcomes that are item failures; the other outcomes are fine pages that are not products.
PAGE_FAILURES = {reasons.UNDECODABLE_PAGE, reasons.EXTRACTION_ERROR, reasons.WORKER_DIED, reasons.PAGE_TIME_BUDGET}


def ungrounded_rejection(answer: dict[str, str | None], label: str, data: list[str],
                         fields: Collection[str]) -> str | None:
    """The post-filter reason for an answer with a label in ``fields`` (filters.reject_ungrounded)
    that is not grounded in the page text (the first in GROUNDED_FIELDS order), else None."""
    if not fields:
        return None
    bad = (name for name in ungrounded_fields(answer, page_words(label, data)) if name in fields)
    return next((reasons.ungrounded(name) for name in bad), None)


T = TypeVar("T")  # a stage's work item: a store task


class _Hosted(Protocol):
    """The items of a stage with a host_limit."""

    @property
    def host(self) -> str: ...


class Stage(Generic[T]):
    """Leases work from the store and runs it with at most ``concurrency`` items in flight."""

    def __init__(self, name: str, lease: Callable[..., list[T]], work: Callable[[T], Awaitable[None]],
                 concurrency: int, upstream: Iterable[Stage[Any]] = (),
                 host_limit: Callable[[str], int] | None = None):
        self.name = name
        self.lease = lease
        self.work = work
        self.concurrency = concurrency
        # With host_limit, items carry a .host and the lease skips hosts that already have
        # that many items in flight: a slow or rate-limited host never takes every slot.
        self.host_limit = host_limit
        self.per_host: Counter[str] = Counter()
        # Back-pressure: while gate() is False the stage leases nothing new.
        self.gate: Callable[[], bool] = lambda: True
        self.stopping = False
        # The hosts that were full when a lease last found nothing else: until one of them has
        # room again or new work comes, leasing again would only scan their backlog for nothing.
        self._dry: frozenset[str] | None = None
        self.upstream = list(upstream)
        self.downstream: list[Stage[Any]] = []
        for stage in self.upstream:
            stage.downstream.append(self)
        self.finished = asyncio.Event()
        # Set by anything that may make new work leasable: an item of ours or of an upstream
        # stage finishing, or an upstream stage finishing.
        self.wake = asyncio.Event()
        self.error: UserError | None = None  # an item's error that stops the run; run() raises it

    def new_work(self) -> None:
        """Something may have added work for this stage."""
        self._dry = None
        self.wake.set()

    def _poke_downstream(self) -> None:
        for stage in self.downstream:
            stage.new_work()

    def stop(self) -> None:
        """Lease nothing more; finish the items in flight, then end."""
        self.stopping = True
        self.wake.set()

    async def _run_item(self, item: T) -> None:
        try:
            await self.work(item)
        except UserError as e:  # the run cannot go on (a full disk, a store it cannot write)
            self.error = self.error or e
            self.wake.set()
        except Exception:  # noqa: BLE001 - the work functions record item errors; this is a bug
            log.exception("%s: unexpected error on %r", self.name, item)

    def _worth_leasing(self, in_flight: int) -> bool:
        """Lease in batches (a quarter of the slots free, or none in flight): one transaction
        per batch instead of one per item is most of the store's cost on a fast crawl."""
        free = self.concurrency - in_flight
        return free > 0 and (in_flight == 0 or free >= max(1, self.concurrency // 4))

    def _lease(self, n: int) -> list[T]:
        if self.host_limit is None:
            return self.lease(n)
        full = frozenset(h for h, count in self.per_host.items() if count >= self.host_limit(h))
        if self._dry is not None and full >= self._dry:
            return []
        items = self.lease(n, lambda host: self.host_limit(host) - self.per_host[host])
        self._dry = None if items else full
        for item in items:
            self.per_host[cast(_Hosted, item).host] += 1
        return items

    def _item_done(self, task: asyncio.Task[None], in_flight: set[asyncio.Task[None]], item: T) -> None:
        # Wake only once the task is out of in_flight, or the loop could wait forever on it.
        in_flight.discard(task)
        if self.host_limit is not None:
            self.per_host[cast(_Hosted, item).host] -= 1
        self.wake.set()
        self._poke_downstream()
        for stage in self.upstream:  # work left this stage: a gated upstream may go on
            stage.wake.set()

    async def run(self) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while True:
                if self.error is not None:
                    raise self.error
                self.wake.clear()
                # Read before leasing: if upstream had finished by now, this lease sees all it made.
                upstream_done = all(s.finished.is_set() for s in self.upstream)
                leased: list[T] = []
                if self.stopping:
                    if not in_flight:
                        break
                elif self._worth_leasing(len(in_flight)) and self.gate():
                    leased = self._lease(self.concurrency - len(in_flight))
                    for item in leased:
                        task = asyncio.create_task(self._run_item(item))
                        in_flight.add(task)
                        # mypy cannot infer a lambda with a default argument from the callback's type
                        task.add_done_callback(cast(Callable[[asyncio.Task[None]], None],
                                                    lambda t, item=item: self._item_done(t, in_flight, item)))
                if not in_flight and not leased and upstream_done and not self.stopping:
                    break
                await self.wake.wait()
        finally:
            for task in in_flight:
                task.cancel()
            self.finished.set()
            self._poke_downstream()


class Pipeline:
    def __init__(self, cfg: Config, stages: Iterable[str], *, replace_images: bool = False,
                 recrawl: bool = False, progress_interval: float = 10.0):
        self.cfg = cfg
        self.recrawl = recrawl
        self.crawl_pass = 0
        self.stages = set(stages)
        self.replace_images = replace_images
        self.progress_interval = progress_interval
        self.store = Store(cfg.store_path)
        self.shops: dict[str, ShopConfig] = {s.name: s for s in cfg.shops}
        self.tradenames = {s.name: compile_tradename(s.tradename_regex or None) for s in cfg.shops}
        self.http: HttpClient | None = None
        self.engine: LabelEngine | OpenAIBackend | None = None
        self.pool: RestartingPool | None = None  # the image transforms'
        self.page_pool: PagePool | None = None
        self.stages_running: list[Stage[Any]] = []
        self.pages_stage: Stage[PageTask] | None = None  # woken while sitemaps still download
        self.interrupted = False  # a signal asked us to stop before the work was done
        self.fatal: UserError | None = None  # what stopped the run before its work was done

    # --- the run --------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the stages. Raises UserError if one of them cannot go on (the store is opened
        by then, and holds the run folder's lock: nothing here races another run)."""
        released = self.store.release_leases()
        if released:
            log.info("resuming: %d leased items returned to pending", released)
        requeued = self.store.requeue_label_failures()
        if requeued:
            log.info("%d records whose labelling server was unavailable go back to labelling", requeued)
        self._remove_stale_temp_files()
        self.store.group_commits(max_seconds=COMMIT_EVERY)
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        assert main is not None  # run() is a coroutine, run by a task
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, main)
        try:
            async with HttpClient(self.cfg.http) as self.http:
                await self._run_stages()
        except asyncio.CancelledError:
            if not self.interrupted:
                raise
            # A second signal or the grace period ran out: work in flight was dropped, and its
            # leases go back to pending below.
        except UserError as e:
            self.fatal = e
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            if self.engine is not None:
                await self.engine.close(drain=not (self.interrupted or self.fatal))
            if self.pool is not None:
                self.pool.shutdown(cancel_futures=True)
            if self.page_pool is not None:
                self.page_pool.shutdown()
            if self.fatal is not None:
                self._keep_what_was_done()
            else:
                if self.http is not None:
                    self.store.add_host_stats(self.http.take_stats())
                if self.interrupted:
                    # Nothing runs any more and the run lock is ours: work dropped at the stop is
                    # pending again now, so the summary and `status` show it as work to do.
                    self.store.release_leases()
                self.store.flush()
        if self.fatal is not None:
            raise self.fatal

    def _keep_what_was_done(self) -> None:
        """After a stop for a UserError: commit what finished and return work in flight to
        pending (the next start would too). If the store refuses even that (its disk is the
        full one), the open group is dropped: those items are simply done again."""
        try:
            if self.http is not None:
                self.store.add_host_stats(self.http.take_stats())
            self.store.flush()
            self.store.release_leases()
            self.store.flush()
        except StoreError:
            self.store.abandon_group()

    def _on_signal(self, main: asyncio.Task) -> None:
        if self.interrupted:
            main.cancel()  # second signal: stop at once (still safe: the store is the truth)
            return
        self.interrupted = True
        print(f"stopping: finishing work in flight (up to {GRACE_SECONDS:.0f} s; signal again to stop "
              "at once)", file=sys.stderr, flush=True)
        for stage in self.stages_running:
            stage.stop()
        asyncio.get_running_loop().call_later(GRACE_SECONDS, main.cancel)

    def _remove_stale_temp_files(self) -> None:
        """Temporary files of a killed run: outputs are written as .NAME.XXXX.tmp and renamed,
        so these were never finished and nothing refers to them."""
        for folder in (self.cfg.run_dir, self.cfg.run_dir / "webdataset", *self.cfg.images_dir.glob("*/")):
            for stale in folder.glob(".*.tmp"):
                try:
                    stale.unlink(missing_ok=True)
                except OSError as e:  # a folder of that name, say: in nobody's way
                    log.warning("cannot remove %s: %s", stale, e.strerror)

    def use_demo_shop(self, base_url: str) -> None:
        """Point the shops' demo placeholders at the demo shop serving at ``base_url`` (the
        command layer starts and stops it around the run: cli.run_with_demo)."""
        self.shops = {name: s.with_demo_url(base_url) for name, s in self.shops.items()}

    async def _run_stages(self) -> None:
        cfg = self.cfg
        chain: list[Stage[Any]] = []
        if "crawl" in self.stages:
            self.crawl_pass = self.store.start_crawl_pass(full=self.recrawl)
            if workers := _extract_workers(cfg.run.extract_workers):
                # Started first: the workers start up while robots.txt and sitemaps download.
                self.page_pool = PagePool(self.shops, workers)
            await self._seed_sitemaps()
            # One sitemap at a time per host (they are large), several hosts side by side.
            sitemaps = Stage("sitemaps", self.store.lease_sitemaps, self._walk_sitemap, 8,
                             host_limit=lambda host: 1)
            # Twice the connection limits: a page being parsed or committed holds no connection
            # (http.py caps requests in flight), so the next pages download meanwhile.
            pages = Stage("pages", self.store.lease_pages, self._crawl_page,
                          PAGES_IN_FLIGHT * cfg.http.concurrency, upstream=[sitemaps],
                          host_limit=lambda host: PAGES_IN_FLIGHT * self._host_limit(host))
            chain += [sitemaps, pages]
            self.pages_stage = pages
        if "label" in self.stages:
            from ilid_async.label.backends import make_labeller

            self.engine = make_labeller(cfg.llm, cfg.prompt)  # the engine, or a server client
            await self.engine.start()
            # Twice the records the labeller works on at once: records queued ahead keep it
            # busy while results commit.
            chain.append(Stage("label", lambda n: self.store.lease_for_labelling(n, cfg.llm.debug_fraction),
                               self._label_record, 2 * self.engine.capacity, upstream=chain[-1:]))
        if "images" in self.stages:
            self.pool = RestartingPool(lambda: image_pool(cfg.images.workers))
            chain.append(Stage("images", self.store.lease_for_images, self._fetch_image,
                               cfg.http.concurrency, upstream=chain[-1:], host_limit=self._host_limit))
        if "label" in self.stages and "crawl" in self.stages:
            # Back-pressure: the crawl waits while too many records wait for the model.
            backlog = cfg.run.max_label_backlog
            chain[1].gate = lambda: self.store.count_records("to_label") < backlog
        self.stages_running = chain
        stages = [asyncio.create_task(stage.run()) for stage in chain]
        timers = [asyncio.create_task(self._report_progress()), asyncio.create_task(self._commit_often())]
        try:
            # Until every stage is done, or a stage or timer fails (a UserError stops them all).
            waiting = {*stages, *timers}
            while not all(task.done() for task in stages):
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if (error := task.exception()) is not None:
                        raise error
        finally:
            for task in stages + timers:
                task.cancel()
            await asyncio.gather(*stages, *timers, return_exceptions=True)
        if "dataset" in self.stages:
            self.write_dataset()

    def _host_limit(self, host: str) -> int:
        assert self.http is not None  # called only while the stages run
        return self.http.host_concurrency(host)  # the http layer's own per-host state

    async def _commit_often(self) -> None:
        """Commit the store's open group while stages wait (e.g. on the model)."""
        while True:
            await asyncio.sleep(COMMIT_EVERY)
            self.store.flush_if_due()

    async def _report_progress(self) -> None:
        """One line per stage on stderr (progress.py); host stats go to the store meanwhile,
        so that `status` shows them during the run."""
        from ilid_async.run.progress import Progress

        progress = Progress(self.store, [(s.name, s.finished.is_set) for s in self.stages_running],
                            interval=self.progress_interval)
        # Runs only while the stages run, inside run()'s HttpClient: self.http is set.
        await progress.run(lambda: self.store.add_host_stats(cast(HttpClient, self.http).take_stats()))

    # --- crawl ----------------------------------------------------------------------------

    async def _seed_sitemaps(self) -> None:
        for shop in self.shops.values():
            # The shop file's own sitemaps are walked wherever they are; what robots.txt names
            # must be on the shop's allowed_domains, like every sitemap and page found on the web.
            self.store.add_sitemaps(shop.name, shop.sitemap_urls, self.crawl_pass,
                                    max_sitemaps=self.cfg.http.max_sitemaps)
            found: list[str] = []
            for robots_url in shop.robots_urls:
                assert self.http is not None  # _run_stages runs inside run()'s HttpClient
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
            self._add_sitemaps(shop, found, depth=0)

    def _add_sitemaps(self, shop: ShopConfig, urls: list[str], *, depth: int) -> None:
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

    async def _walk_sitemap(self, task: SitemapTask) -> None:
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
                    self._add_sitemaps(shop, children, depth=task.depth + 1)
                if self.store.add_pages(shop_name, pages):
                    assert self.pages_stage is not None  # set with the sitemaps stage that runs this
                    self.pages_stage.new_work()  # crawl pages while the sitemap still downloads
                found += len(batch)
        except ItemError as e:
            self.store.finish_sitemap(url, reason=e.reason, urls_found=found)
            return
        self.store.finish_sitemap(url, urls_found=found)

    async def _crawl_page(self, task: PageTask) -> None:
        shop = self.shops[task.shop]
        assert self.http is not None  # the stages run inside run()'s HttpClient
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

    # --- label ----------------------------------------------------------------------------

    async def _label_record(self, task: LabelTask) -> None:
        assert self.engine is not None  # started before the label stage that runs this
        result = await self.engine.label(task.label, task.data)
        if result.truncated:
            self.store.bump("label_input_truncated")
        if result.fields is None:
            self.store.commit_labels(task.id, answer=None, labels=None, folder=None, fail=result.reason)
            return
        answer = apply_no_value_rule(result.fields)
        labels = postfilter(answer, self.cfg.filters.min_field_length)
        if isinstance(labels, Rejected):
            self.store.commit_labels(task.id, answer=answer, labels=None, folder=None,
                                     reject=("postfilter", labels.reason))
            return
        reason = ungrounded_rejection(answer, task.label, task.data, self.cfg.filters.reject_ungrounded)
        if reason:
            self.store.commit_labels(task.id, answer=answer, labels=None, folder=None,
                                     reject=("postfilter", reason))
            return
        fields = asdict(labels)
        folder = fields.pop("folder")
        self.store.commit_labels(task.id, answer=answer, labels=fields, folder=folder)

    # --- images ---------------------------------------------------------------------------

    async def _fetch_image(self, task: ImageTask) -> None:
        cfg = self.cfg
        img = cfg.images
        encoding = Encoding(img.format, img.png_compress_level, img.quality)
        file = image_path(task.folder, task.id, encoding.ending)
        try:
            target = safe_join(cfg.images_dir, file)
            # rules §6: an existing file is kept (it was written whole: files are renamed into
            # place), once its hashes are known; a run killed between writing and committing
            # fetches it again.
            keep = target.exists() and task.hashed and not self.replace_images
        except ValueError:
            self.store.commit_image(task.id, fail=reasons.UNSAFE_PATH)
            return
        except OSError as e:  # a name too long, a folder we may not read
            self._image_write_failed(task, write_failure(e), cast(str, e.strerror))  # str in practice
            return
        if keep:
            self.store.commit_image(task.id, file=file)
            return
        # Both are set before the images stage that runs this starts.
        assert self.http is not None and self.pool is not None
        try:
            result = await download_image(self.http, self.pool, task.image_url, target, width=img.width,
                                          height=img.height, max_pixels=img.max_pixels, encoding=encoding,
                                          max_bytes=cfg.http.max_image_bytes,
                                          check_robots=self.shops[task.shop].obey_robots)
        except ImageWriteError as e:
            self._image_write_failed(task, e.reason, e.detail)
            return
        except (ItemError, ImageError) as e:  # worker_died among them
            self.store.commit_image(task.id, fail=e.reason)
            return
        self.store.commit_image(task.id, file=file, sha256=result.sha256, phash=result.phash)

    def _image_write_failed(self, task: ImageTask, reason: str, detail: str) -> None:
        """A record whose image cannot be written fails with the reason; a full disk stops the
        run instead, leaving the record to do (the next run with room writes it)."""
        if reason == reasons.DISK_FULL:
            raise UserError(disk_full_message(self.cfg.images_dir, detail))
        self.store.commit_image(task.id, fail=reason)

    # --- dataset --------------------------------------------------------------------------

    def write_dataset(self) -> int:
        cfg = self.cfg
        dups = find_duplicates(self.store.done_records(), cfg.images.near_duplicate_bits)
        plan = OutputPlan(cast(list[str], cfg.output.formats), cfg.run_dir, cfg.dataset_path, cfg.images_dir,
                          cfg.output.shard_size, cfg.images.duplicates)
        try:
            count = write_outputs(plan, self.store.done_records, dups)
        except OSError as e:  # the store keeps everything: the next run writes them again
            if e.errno in NO_SPACE_ERRNOS:
                raise UserError(disk_full_message(cfg.run_dir, cast(str, e.strerror))) from None
            raise UserError(f"{e.filename or cfg.run_dir}: cannot write the dataset ({e.strerror})") from None
        for name, value in (("dataset_entries", count), ("exact_duplicates", dups.exact),
                            ("near_duplicates", dups.near)):
            self.store.set_counter(name, value)
        return count


def _extract_workers(setting: int) -> int:
    """run.extract_workers: -1 = every core but the event loop's (none on one core)."""
    return max(0, (os.cpu_count() or 1) - 1) if setting < 0 else setting
