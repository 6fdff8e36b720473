"""Page extraction in worker processes gives what extraction in the event loop's process gives."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from ilid_async.config import Selectors, ShopConfig
from ilid_async.output.dataset import stable_id
from ilid_async.crawl.extract import NotExtracted
from ilid_async.filters import compile_tradename
from ilid_async.crawl.page_pool import BATCH_MAX, PageJob, PagePool, PageRecord, process_page

SHOP = ShopConfig(source="testshop", image_endings=[".jpg"], tradename_regex="acme",
                  selectors=Selectors(product="div.product", image="div.gallery img",
                                      label="h1", data="div.info"),
                  name="testshop")
# A selector lexbor cannot parse: the page fails with a reason instead of failing the batch.
BROKEN = ShopConfig(source="broken", image_endings=[".jpg"],
                    selectors=Selectors(product="div[[", image="img", label="h1", data="p"),
                    name="broken")


def page(i: int) -> bytes:
    if i % 5 == 4:
        return b"<html><body><p>About us</p></body></html>"  # not a product page
    return (f'<div class="product"><h1>ACME Clamp {i}</h1><div class="gallery">'
            f'<img src="/img/clamp-{i}.jpg"></div><div class="info"><p>Steel clamp, {i} mm</p>'
            f"<p>{'' if i % 3 else '1234'}</p></div></div>").encode()


def jobs(n: int) -> list[PageJob]:
    return [PageJob("testshop", f"http://127.0.0.1:9/p/{i}", page(i), None) for i in range(n)]


def test_process_page_extracts_prefilters_and_identifies():
    found = process_page(SHOP, compile_tradename("acme"), jobs(1)[0])
    assert isinstance(found, PageRecord)
    assert found.image_url == "http://127.0.0.1:9/img/clamp-0.jpg"
    assert found.record_id == stable_id("testshop", found.image_url)
    assert found.raw_label == "ACME Clamp 0"
    assert found.cleaned == ("Clamp", ["Steel clamp, mm"])  # tradename and digits removed
    assert process_page(SHOP, None, jobs(5)[4]) == NotExtracted("not_product_page")


async def test_the_pool_matches_inline_extraction_for_many_pages_at_once():
    pool = PagePool({"testshop": SHOP, "broken": BROKEN}, workers=1)
    try:
        batch = jobs(BATCH_MAX * 2 + 7)  # more than one batch in a single turn of the loop
        results = await asyncio.gather(*(pool.process(job) for job in batch))
        tradename = compile_tradename(SHOP.tradename_regex)
        assert results == [process_page(SHOP, tradename, job) for job in batch]
        assert sum(isinstance(r, PageRecord) for r in results) == len(batch) - len(batch) // 5
        broken = await pool.process(PageJob("broken", "http://127.0.0.1:9/p/x", page(0), None))
        assert broken == NotExtracted("extraction_error")
        # The pool still works after a page failed.
        assert await pool.process(batch[0]) == results[0]
    finally:
        pool.shutdown()


# --- dead workers -----------------------------------------------------------------------------

def _kill_this_process():
    os.kill(os.getpid(), signal.SIGKILL)


class Poison(bytes):
    """Page bytes that kill the worker process that receives them: unpickling them there calls
    _kill_this_process, as a parser crash or the kernel's OOM killer would end it."""

    def __reduce__(self):
        return _kill_this_process, ()


@pytest.mark.slow
async def test_a_page_that_kills_its_worker_fails_alone_and_the_others_are_extracted():
    pool = PagePool({"testshop": SHOP}, workers=2)
    try:
        batch = jobs(40)
        poison = PageJob("testshop", "http://127.0.0.1:9/p/poison", Poison(b"<html>"), None)
        pages = batch[:20] + [poison] + batch[20:]
        results = await asyncio.wait_for(asyncio.gather(*(pool.process(job) for job in pages)), 120)
        tradename = compile_tradename(SHOP.tradename_regex)
        assert results[20] == NotExtracted("worker_died")
        assert results[:20] + results[21:] == [process_page(SHOP, tradename, job) for job in batch]
        assert pool.pool.restarts >= 1
        # The rebuilt pool goes on working.
        assert await pool.process(batch[0]) == results[0]
    finally:
        pool.shutdown()


@pytest.mark.slow
async def test_a_page_stuck_in_one_parser_call_is_ended_by_the_cpu_limit():
    """Deeply nested markup keeps lexbor in one C call for seconds (the budget checked between
    steps cannot stop it): the worker's CPU limit ends it, and the other pages are extracted."""
    stuck = PageJob("testshop", "http://127.0.0.1:9/p/stuck", b"<div>" * 40_000 + page(0), None)
    pool = PagePool({"testshop": SHOP}, workers=1, cpu_limit=0.5)
    try:
        batch = jobs(6)
        results = await asyncio.wait_for(
            asyncio.gather(*(pool.process(job) for job in [*batch[:3], stuck, *batch[3:]])), 120)
        tradename = compile_tradename(SHOP.tradename_regex)
        assert results[3] == NotExtracted("worker_died")
        assert results[:3] + results[4:] == [process_page(SHOP, tradename, job) for job in batch]
    finally:
        pool.shutdown()
