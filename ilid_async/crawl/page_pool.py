"""Product page extraction (rules §1 and 2) on the other cores.

Parsing HTML and cleaning the text take about a third of the crawl's CPU time. The event
loop's process keeps the network and the store; the pages it fetched go, in batches, to worker
processes that extract the raw record, pre-filter it and compute its id, and send back only
that small result. A batch is every page that finished in one turn of the event loop (up to
BATCH_MAX): no page waits for a timer, and a fast crawl pays the hand-over once per batch.

A worker that dies (the kernel's OOM killer, a crash in the parser) costs no page: the pool is
rebuilt and the batch's pages go again one by one (workers.RestartingPool), so a page that
kills its worker every time ends alone as ``worker_died``.

The extraction budget (extract.PAGE_TIME_BUDGET) is checked between steps, but one call into the
HTML parser cannot be interrupted, and crafted markup under 1 MB can keep lexbor busy for minutes.
So a worker also has a CPU-time limit per page (PAGE_CPU_LIMIT): past it the kernel ends the
worker (SIGVTALRM), and the page goes the dead-worker way above.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, cast

from ilid_async import reasons
from ilid_async.config import ShopConfig
from ilid_async.output.dataset import stable_id
from ilid_async.crawl.extract import PAGE_TIME_BUDGET, NotExtracted, extract_product
from ilid_async.filters import Rejected, compile_tradename, prefilter_record
from ilid_async.workers import RestartingPool, WorkerDied, worker_pool

__all__ = ["BATCH_MAX", "PAGE_CPU_LIMIT", "PageJob", "PageRecord", "process_page", "PagePool"]

log = logging.getLogger(__name__)

BATCH_MAX = 64
# A page whose extraction raised (a bug, or a page that trips the parser): recorded, not fatal.
# CPU seconds one page may take in a worker before the kernel ends it: well past the budget
# that the extraction checks itself, so only a page stuck in one C call meets it.
PAGE_CPU_LIMIT = 4 * PAGE_TIME_BUDGET


@dataclass(frozen=True)
class PageJob:
    shop: str
    url: str  # the final URL, after redirects: relative image links resolve against it
    body: bytes
    charset: str | None  # from the Content-Type header


@dataclass(frozen=True)
class PageRecord:
    """What a product page yielded: its raw record and the pre-filter's verdict on it."""

    record_id: str
    image_url: str
    raw_label: str
    raw_data: list[str]
    cleaned: tuple[str, list[str]] | None  # None when the pre-filter rejected it
    reject_reason: str | None


def process_page(shop: ShopConfig, tradename: re.Pattern[str] | None, job: PageJob) -> PageRecord | NotExtracted:
    """Extract, pre-filter and identify one page. Runs in a worker, or inline without one."""
    sel = shop.selectors
    found = extract_product(job.body, job.url, product=sel.product, image=sel.image, label=sel.label,
                            data=sel.data, image_endings=shop.image_endings, charset=job.charset,
                            structured_fallback=shop.structured_fallback)
    if isinstance(found, NotExtracted):
        return found
    cleaned = prefilter_record(found.label, found.data, tradename)
    return PageRecord(
        record_id=stable_id(shop.source, found.image_url), image_url=found.image_url,
        raw_label=found.label, raw_data=found.data,
        cleaned=None if isinstance(cleaned, Rejected) else (cleaned.label, cleaned.data),
        reject_reason=cleaned.reason if isinstance(cleaned, Rejected) else None,
    )


# --- the worker side --------------------------------------------------------------------------

_shops: dict[str, tuple[ShopConfig, re.Pattern[str] | None]] = {}
_cpu_limit = [PAGE_CPU_LIMIT]


def _init_shops(shops: dict[str, ShopConfig], cpu_limit: float = PAGE_CPU_LIMIT) -> None:
    _shops.update({name: (shop, compile_tradename(shop.tradename_regex or None))
                   for name, shop in shops.items()})
    _cpu_limit[0] = cpu_limit


def _process_batch(jobs: Sequence[PageJob]) -> list[PageRecord | NotExtracted]:
    results: list[PageRecord | NotExtracted] = []
    for job in jobs:
        # ITIMER_VIRTUAL counts this process's CPU time, and SIGVTALRM's default action ends the
        # process: the only way out of a C call that Python cannot interrupt.
        signal.setitimer(signal.ITIMER_VIRTUAL, _cpu_limit[0])
        try:
            results.append(process_page(*_shops[job.shop], job))
        except Exception:  # noqa: BLE001 - one page never fails the batch
            results.append(NotExtracted(reasons.EXTRACTION_ERROR))
        finally:
            signal.setitimer(signal.ITIMER_VIRTUAL, 0)
    return results


# --- the event loop side ----------------------------------------------------------------------

_Done = Callable[["asyncio.Future[Any]"], None]  # a future's done callback


class PagePool:
    """Hands fetched pages to worker processes in batches; ``await process(job)``."""

    def __init__(self, shops: dict[str, ShopConfig], workers: int, cpu_limit: float = PAGE_CPU_LIMIT):
        self.pool = RestartingPool(lambda: worker_pool(workers, _init_shops, (shops, cpu_limit)))
        self._batch: list[tuple[PageJob, asyncio.Future]] = []

    async def process(self, job: PageJob) -> PageRecord | NotExtracted:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._batch.append((job, future))
        if len(self._batch) == 1:
            loop.call_soon(self._send)  # after the other pages that finish in this turn
        elif len(self._batch) >= BATCH_MAX:
            self._send()
        return await future

    def _send(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        try:
            done = asyncio.wrap_future(self.pool.submit_once(_process_batch, [job for job, _ in batch]))
        except RuntimeError:  # shut down: the run is ending and its page tasks are cancelled
            for _, future in batch:
                future.cancel()
            return
        done.add_done_callback(lambda result: self._batch_done(result, batch))

    def _batch_done(self, result: asyncio.Future, batch: list[tuple[PageJob, asyncio.Future]]) -> None:
        if result.cancelled():
            for _, future in batch:
                future.cancel()
            return
        if isinstance(result.exception(), BrokenProcessPool):
            # A worker died with this batch in the pool: each page goes again on its own, so a
            # page that kills its worker takes no other page with it.
            for job, future in batch:
                if future.done():
                    continue
                try:
                    again = asyncio.wrap_future(self.pool.submit(_process_batch, [job]))
                except RuntimeError:  # shut down meanwhile
                    future.cancel()
                    continue
                # mypy cannot infer a lambda with a default argument from the callback's type
                again.add_done_callback(cast(_Done, lambda one, future=future: _hand_out(one, [future])))
            return
        _hand_out(result, [future for _, future in batch])

    def shutdown(self) -> None:
        self.pool.shutdown(cancel_futures=True)


def _hand_out(result: asyncio.Future, futures: list[asyncio.Future]) -> None:
    """Give each page its result; a batch that failed as a whole fails each page with a reason,
    so that no page task waits forever or is left leased."""
    if result.cancelled():
        for future in futures:
            future.cancel()
        return
    if (error := result.exception()) is not None:
        if isinstance(error, WorkerDied):
            outcome = NotExtracted(reasons.WORKER_DIED)
        else:  # e.g. a result that does not pickle: a bug, but it must not cost the run
            log.warning("page batch failed in the worker pool: %r", error)
            outcome = NotExtracted(reasons.EXTRACTION_ERROR)
        values = [outcome] * len(futures)
    else:
        values = result.result()
    for future, value in zip(futures, values):
        if not future.done():  # its page task may have been cancelled meanwhile
            future.set_result(value)
