"""The labelling engine with the real llama-cpp-python and the small Gemma 3 270M model."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from helpers import DEFAULT_PROMPT, ZERO_SHOT_PROMPT

from ilid_async.config import LlmSettings, load_prompt
from ilid_async.fields import LABEL_FIELDS
from ilid_async.label.chat_format import ChatFormat
from ilid_async.label.engine import LabelEngine
from ilid_async.label.prompt import clean_value, field_prefix, render_user
from ilid_async.label.quality import label_quality, quality_issues

# The model, real subprocesses or real time: `pytest -m "not slow"` leaves these out.
pytestmark = pytest.mark.slow

# The async tests share one event loop so they can share one loaded model.
shared_loop = pytest.mark.asyncio(loop_scope="module")

HINGE = ("Hinge zinc die-cast", ["Hinge for aluminium profiles.", "Material", "zinc die-cast",
                                 "Finish", "black powder-coated"])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def engine():
    eng = LabelEngine(LlmSettings(n_ctx=2048, n_parallel=4), load_prompt(DEFAULT_PROMPT))
    await eng.start()
    yield eng
    await eng.close()


@shared_loop
async def test_five_fields_in_order_and_greedy_is_repeatable(reproducible_engine):
    engine = reproducible_engine
    first = await engine.label(*HINGE)
    assert first.reason is None and first.fields is not None
    assert tuple(first.fields) == LABEL_FIELDS
    assert all(v is None or (isinstance(v, str) and v == v.strip() and "\n" not in v)
               for v in first.fields.values())
    assert first.fields["label_long"]  # a clear product always gets a long label
    again = await engine.label(*HINGE)
    assert again.fields == first.fields


@shared_loop
async def test_many_records_in_flight_all_parse(engine):
    records = [(f"Part {name}", [f"{name} for machines", "Material", "steel"])
               for name in ("clamp", "castor", "handle", "bearing")]
    results = await asyncio.gather(*(engine.label(*r) for r in records))
    assert len(results) == 4
    assert all(r.fields is not None and tuple(r.fields) == LABEL_FIELDS for r in results)


@shared_loop
async def test_long_input_is_truncated_and_counted(engine):
    before = engine.stats["truncated"]
    result = await engine.label("Gas spring", ["stroke and force details " * 400])
    assert result.truncated and result.fields is not None
    assert engine.stats["truncated"] == before + 1


@shared_loop
async def test_context_overflow_is_recorded_not_raised():
    eng = LabelEngine(LlmSettings(n_ctx=256), load_prompt(ZERO_SHOT_PROMPT))
    await eng.start()
    try:
        result = await eng.label(*HINGE)
        assert result.fields is None and result.reason == "context_overflow"
        # The queue goes on after a failure.
        assert (await eng.label(*HINGE)).reason == "context_overflow"
    finally:
        await eng.close()


@shared_loop
async def test_close_drains_the_queue():
    eng = LabelEngine(LlmSettings(n_ctx=2048), load_prompt(DEFAULT_PROMPT))
    await eng.start()
    futures = [asyncio.ensure_future(eng.label(*HINGE)) for _ in range(3)]
    await asyncio.sleep(0)  # let the three jobs reach the queue before the stop marker
    await eng.close()
    results = await asyncio.gather(*futures)
    assert all(r.fields is not None for r in results)


def test_prompt_rendering_is_plain_text():
    prompt = load_prompt(DEFAULT_PROMPT)
    user, cut = render_user(prompt, "Hinge {x}", ["a", "b {y}"], max_chars=1000)
    assert "Label: Hinge {x}" in user and "Text: a, b {y}" in user and not cut
    user, cut = render_user(prompt, "Hinge", ["word " * 100], max_chars=42)
    assert cut and "Text: " + ("word " * 8).strip() in user and "word " * 9 not in user
    chat = ChatFormat("<u>{system}|{user}</u>").render("S", [], "U {x}")
    assert chat == "<u>S|U {x}</u>"
    assert field_prefix(0, "label_long") == '{"label_long": "'
    assert field_prefix(2, "description") == '", "description": "'
    assert clean_value("  zinc\\  die-cast ") == "zinc die-cast"
    assert clean_value("   ") is None


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def reproducible_engine():
    eng = LabelEngine(LlmSettings(n_ctx=2048, n_parallel=4, reproducible=True), load_prompt(DEFAULT_PROMPT))
    await eng.start()
    yield eng
    await eng.close()


@shared_loop
async def test_reproducible_answer_does_not_depend_on_what_came_before(reproducible_engine):
    """Each record starts from the same cached prefix in a stream of its own, so order and
    history change nothing."""
    engine = reproducible_engine
    records = [("Castor", ["Swivel castor", "polyamide"]), ("Latch", ["Draw latch", "steel"]),
               ("Knob", ["Star knob", "thermoplastic", "black"])]
    forward = [(await engine.label(*r)).fields for r in records]
    backward = [(await engine.label(*r)).fields for r in reversed(records)]
    assert forward == backward[::-1]


# Short records of the demo shop's kinds: varied enough that a batch holds different prompts.
PARTS = [(f"{kind} {extra}", [f"{kind} for machines and doors.", "Material", material, "Finish", finish])
         for kind, extra, material, finish in [
             ("Hinge", "heavy", "zinc die-cast", "black"), ("Castor", "swivel", "polyamide", "grey"),
             ("Star knob", "", "thermoplastic", "matt"), ("Draw latch", "", "stainless steel", "bright"),
             ("Gas spring", "lockable", "steel", "black"), ("Cable gland", "", "brass", "nickel-plated"),
             ("Tubular handle", "", "aluminium", "anodised"), ("Levelling foot", "", "steel", "zinc-plated")]]


@shared_loop
async def test_reproducible_labels_are_identical_in_any_batch_order(reproducible_engine):
    """llm.reproducible: alone, batched, and batched in another order beside other records,
    every record gets exactly the same labels."""
    engine = reproducible_engine
    alone = [(await engine.label(*r)).fields for r in PARTS]
    together = [r.fields for r in await asyncio.gather(*(engine.label(*r) for r in PARTS))]
    shuffled = PARTS[3:] + PARTS[:3]
    other = [r.fields for r in await asyncio.gather(*(engine.label(*r) for r in shuffled))]
    other = other[-3:] + other[:-3]  # back in PARTS order
    assert all(f is not None and tuple(f) == LABEL_FIELDS for f in alone)
    assert together == alone
    assert other == alone


@shared_loop
async def test_throughput_engine_under_concurrency_every_answer_parses(engine):
    """Three times as many records as sequences, queued at once: every record ends with five
    parsed fields, and decodes carry several records' tokens each."""
    records = [(f"{label} {i}", data) for i, (label, data) in enumerate(PARTS * 3)][:3 * engine.capacity]
    before = dict(engine.stats)
    results = await asyncio.gather(*(engine.label(*r) for r in records))
    assert all(r.reason is None and tuple(r.fields) == LABEL_FIELDS for r in results)
    assert all(v is None or (v == v.strip() and "\n" not in v and '"' not in v)
               for r in results for v in r.fields.values())
    decodes = engine.stats["decodes"] - before["decodes"]
    generated = engine.stats["tokens"] - before["tokens"]
    prompt_rows = engine.stats["prompt_tokens"] - before["prompt_tokens"]
    # One record at a time would need a decode per generated token, plus prompts and keys.
    assert decodes < generated
    assert (generated + prompt_rows) / decodes > 2


@shared_loop
async def test_a_failing_record_fails_alone_among_others(engine):
    """A record whose label alone overflows the context is recorded as failed; the records
    queued beside it are labelled."""
    huge = ("Hinge " * 2000, ["steel"])
    results = await asyncio.gather(engine.label(*PARTS[0]), engine.label(*huge), engine.label(*PARTS[1]))
    assert results[1].fields is None and results[1].reason == "context_overflow"
    assert results[0].fields is not None and results[2].fields is not None


@shared_loop
async def test_every_sequence_may_fill_its_context_at_once(engine):
    """llm.n_ctx is per record: n_parallel records of the most text allowed fit the one shared
    cache together."""
    assert engine.n_ctx_seq == 2048
    longest = [(f"Gas spring {i}", [f"stroke force details {i} " * 300]) for i in range(engine.capacity)]
    results = await asyncio.gather(*(engine.label(*r) for r in longest))
    assert all(r.truncated and r.fields is not None for r in results)


@shared_loop
async def test_close_without_drain_abandons_in_flight_and_queued():
    eng = LabelEngine(LlmSettings(n_ctx=2048, n_parallel=2), load_prompt(DEFAULT_PROMPT))
    await eng.start()
    futures = [asyncio.ensure_future(eng.label(*r)) for r in PARTS]
    while eng.stats["records"] < 2:  # both sequences busy, the rest queued
        await asyncio.sleep(0.01)
    await eng.close(drain=False)
    await asyncio.wait(futures)
    cancelled = [f for f in futures if f.cancelled()]
    assert len(cancelled) >= len(PARTS) - 2  # at least every queued record was dropped
    assert all(f.result().fields is not None for f in futures if not f.cancelled())


def sampling_engine(seed: int) -> LabelEngine:
    return LabelEngine(LlmSettings(n_ctx=2048, n_parallel=2, temperature=1.0, top_p=0.95, seed=seed,
                                   reproducible=True), load_prompt(DEFAULT_PROMPT))


async def label_one_by_one(eng: LabelEngine, records) -> list:
    await eng.start()
    try:
        return [(await eng.label(*record)).fields for record in records]
    finally:
        await eng.close()


@shared_loop
async def test_sampling_is_seeded_per_record():
    """temperature > 0 (llama.cpp's own sampler chain): the draw depends on the record and
    llm.seed, not on its neighbours or on what came before; another seed draws otherwise."""
    eng = sampling_engine(1234)
    await eng.start()
    try:
        first = await asyncio.gather(eng.label(*PARTS[0]), eng.label(*PARTS[1]))
        second = await asyncio.gather(eng.label(*PARTS[0]), eng.label(*PARTS[2]))
        assert first[0].fields == second[0].fields and first[0].fields is not None
    finally:
        await eng.close()
    same_seed = await label_one_by_one(sampling_engine(1234), PARTS[:4])
    other_seed = await label_one_by_one(sampling_engine(99), PARTS[:4])
    assert same_seed[0] == first[0].fields
    assert other_seed != same_seed  # at temperature 1, four records do not all draw the same


@pytest.mark.parametrize("fields, issues", [
    ({"label_short": "Hinge", "description": "A hinge.", "material": "zinc"}, []),
    ({"label_short": "Heavy duty black zinc hinge"}, ["label_short_over_4_words"]),
    ({"label_short": "Hinge", "description": " ".join(["word"] * 31)}, ["description_over_30_words"]),
    ({"label_short": "Hinge", "description": " ".join(["word"] * 30)}, []),
    ({"label_short": "Hinge", "material": "steel 1.4301"}, ["with_digits"]),
    ({"label_short": None, "description": None}, []),
])
def test_quality_issues(fields, issues):
    assert quality_issues(fields) == issues


def test_label_quality_counts_records_and_fields_with_digits():
    counts = label_quality([
        {"label_short": "M8 hinge", "label_long": "Hinge M8", "description": "ok"},
        {"label_short": "Knob", "label_long": "Star knob", "description": None},
        {"label_short": "one two three four five", "label_long": "x", "description": "6 mm"},
    ])
    assert counts["records"] == 3
    assert counts["with_digits"] == 2
    assert counts["label_short_over_4_words"] == 1
    assert counts["digits_label_short"] == 1 and counts["digits_description"] == 1
