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
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from ilid_async.config import Config, ShopConfig
from ilid_async.crawl.http import HttpClient
from ilid_async.crawl.page_pool import PagePool
from ilid_async.crawl.stage import CrawlStage
from ilid_async.errors import UserError
from ilid_async.filters import compile_tradename
from ilid_async.images.stage import ImageStage
from ilid_async.images.transform import image_pool
from ilid_async.output.stage import write_dataset
from ilid_async.run.database import StoreError
from ilid_async.run.stage import Stage
from ilid_async.run.store import Store
from ilid_async.workers import RestartingPool

if TYPE_CHECKING:
    from ilid_async.label.engine import LabelEngine
    from ilid_async.label.openai_backend import OpenAIBackend

__all__ = ["COMMIT_EVERY", "GRACE_SECONDS", "PAGES_IN_FLIGHT", "Pipeline"]

log = logging.getLogger(__name__)

# Item results are committed in groups at least this often (seconds): a killed run redoes at
# most this much work, and a fast crawl does not pay one commit per page.
COMMIT_EVERY = 0.05
GRACE_SECONDS = 10.0
PAGES_IN_FLIGHT = 2  # pages leased per connection allowed (see _run_stages)


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
        self.store.database.group_commits(max_seconds=COMMIT_EVERY)
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
                self.store.database.flush()
        if self.fatal is not None:
            raise self.fatal

    def _keep_what_was_done(self) -> None:
        """After a stop for a UserError: commit what finished and return work in flight to
        pending (the next start would too). If the store refuses even that (its disk is the
        full one), the open group is dropped: those items are simply done again."""
        try:
            if self.http is not None:
                self.store.add_host_stats(self.http.take_stats())
            self.store.database.flush()
            self.store.release_leases()
            self.store.database.flush()
        except StoreError:
            self.store.database.abandon_group()

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
        assert self.http is not None  # run() opens the client around the stages
        stages: dict[str, Stage[Any]] = {}  # by name, in pipeline order
        if "crawl" in self.stages:
            crawl_pass = self.store.start_crawl_pass(full=self.recrawl)
            if workers := _extract_workers(cfg.run.extract_workers):
                # Started first: the workers start up while robots.txt and sitemaps download.
                self.page_pool = PagePool(self.shops, workers)
            crawl = CrawlStage(cfg, self.shops, self.tradenames, self.store, self.http, crawl_pass,
                               self.page_pool, new_pages=lambda: stages["pages"].new_work())
            await crawl.seed_sitemaps()
            # One sitemap at a time per host (they are large), several hosts side by side.
            stages["sitemaps"] = Stage("sitemaps", self.store.lease_sitemaps, crawl.walk_sitemap, 8,
                                       host_limit=lambda host: 1)
            # Twice the connection limits: a page being parsed or committed holds no connection
            # (http.py caps requests in flight), so the next pages download meanwhile.
            stages["pages"] = Stage("pages", self.store.lease_pages, crawl.crawl_page,
                                    PAGES_IN_FLIGHT * cfg.http.concurrency, upstream=[stages["sitemaps"]],
                                    host_limit=lambda host: PAGES_IN_FLIGHT * self._host_limit(host))
        if "label" in self.stages:
            from ilid_async.label.backends import make_labeller
            from ilid_async.label.stage import LabelStage

            self.engine = make_labeller(cfg.llm, cfg.prompt)  # the engine, or a server client
            await self.engine.start()
            label = LabelStage(self.store, self.engine, cfg.filters)
            # Twice the records the labeller works on at once: records queued ahead keep it
            # busy while results commit.
            stages["label"] = Stage("label", lambda n: self.store.lease_for_labelling(n, cfg.llm.debug_fraction),
                                    label.label_record, 2 * self.engine.capacity, upstream=_last(stages))
        if "images" in self.stages:
            self.pool = RestartingPool(lambda: image_pool(cfg.images.workers))
            images = ImageStage(cfg, self.shops, self.store, self.http, self.pool, replace=self.replace_images)
            stages["images"] = Stage("images", self.store.lease_for_images, images.fetch_image,
                                     cfg.http.concurrency, upstream=_last(stages), host_limit=self._host_limit)
        if "label" in stages and "pages" in stages:
            # Back-pressure: the crawl waits while too many records wait for the model.
            backlog = cfg.run.max_label_backlog
            stages["pages"].gate = lambda: self.store.queries.count_records("to_label") < backlog
        self.stages_running = list(stages.values())
        tasks = [asyncio.create_task(stage.run()) for stage in self.stages_running]
        timers = [asyncio.create_task(self._report_progress()), asyncio.create_task(self._commit_often())]
        try:
            # Until every stage is done, or a stage or timer fails (a UserError stops them all).
            waiting = {*tasks, *timers}
            while not all(task.done() for task in tasks):
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if (error := task.exception()) is not None:
                        raise error
        finally:
            for task in tasks + timers:
                task.cancel()
            await asyncio.gather(*tasks, *timers, return_exceptions=True)
        if "dataset" in self.stages:
            write_dataset(cfg, self.store)

    def _host_limit(self, host: str) -> int:
        assert self.http is not None  # called only while the stages run
        return self.http.host_concurrency(host)  # the http layer's own per-host state

    async def _commit_often(self) -> None:
        """Commit the store's open group while stages wait (e.g. on the model)."""
        while True:
            await asyncio.sleep(COMMIT_EVERY)
            self.store.database.flush_if_due()

    async def _report_progress(self) -> None:
        """One line per stage on stderr (progress.py); host stats go to the store meanwhile,
        so that `status` shows them during the run."""
        from ilid_async.run.progress import Progress

        progress = Progress(self.store.queries, [(s.name, s.finished.is_set) for s in self.stages_running],
                            interval=self.progress_interval)
        # Runs only while the stages run, inside run()'s HttpClient: self.http is set.
        await progress.run(lambda: self.store.add_host_stats(cast(HttpClient, self.http).take_stats()))


def _extract_workers(setting: int) -> int:
    """run.extract_workers: -1 = every core but the event loop's (none on one core)."""
    return max(0, (os.cpu_count() or 1) - 1) if setting < 0 else setting


def _last(stages: dict[str, Stage[Any]]) -> list[Stage[Any]]:
    """The stage before the next one added: its upstream (none for the first)."""
    return list(stages.values())[-1:]
