"""The labelling engine with the real llama-cpp-python and the small Gemma 3 270M model."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from conftest import DEFAULT_PROMPT
from ilid_async.config import LABEL_FIELDS, LlmSettings, load_prompt
from ilid_async.label.engine import LabelEngine
from ilid_async.label.prompt import clean_value, field_prefix, render_chat, render_user

# The async tests share one event loop so they can share one loaded model.
shared_loop = pytest.mark.asyncio(loop_scope="module")

HINGE = ("Hinge zinc die-cast", ["Hinge for aluminium profiles.", "Material", "zinc die-cast",
                                 "Finish", "black powder-coated"])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def engine():
    eng = LabelEngine(LlmSettings(n_ctx=1024), load_prompt(DEFAULT_PROMPT))
    await eng.start()
    yield eng
    await eng.close()


@shared_loop
async def test_five_fields_in_order_and_greedy_is_repeatable(engine):
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
    eng = LabelEngine(LlmSettings(n_ctx=256), load_prompt(DEFAULT_PROMPT))
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
    eng = LabelEngine(LlmSettings(n_ctx=1024), load_prompt(DEFAULT_PROMPT))
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
    chat = render_chat("<u>{system}|{user}</u>", "S", "U")
    assert chat == "<u>S|U</u>"
    assert field_prefix(0, "label_long") == '{"label_long": "'
    assert field_prefix(2, "description") == '", "description": "'
    assert clean_value("  zinc\\  die-cast ") == "zinc die-cast"
    assert clean_value("   ") is None


@shared_loop
async def test_answer_does_not_depend_on_what_came_before(engine):
    """Each record starts from the same cached prefix, so order and history change nothing
    (a resumed run must label a record as an uninterrupted run did)."""
    records = [("Castor", ["Swivel castor", "polyamide"]), ("Latch", ["Draw latch", "steel"]),
               ("Knob", ["Star knob", "thermoplastic", "black"])]
    forward = [(await engine.label(*r)).fields for r in records]
    backward = [(await engine.label(*r)).fields for r in reversed(records)]
    assert forward == backward[::-1]
