"""Page extraction in worker processes gives what extraction in the event loop's process gives."""

from __future__ import annotations

import asyncio

from ilid_async.config import Selectors, ShopConfig
from ilid_async.dataset import stable_id
from ilid_async.extract import NotExtracted
from ilid_async.filters import compile_tradename
from ilid_async.page_pool import BATCH_MAX, PageJob, PagePool, PageRecord, process_page

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
