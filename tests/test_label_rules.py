"""Worked examples in the prompt, the field rules kept while generating, and the packaged prompt:
pure rendering and rules first, then the real engine with the small Gemma 3 270M model."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys

import orjson
import pytest
import pytest_asyncio
from helpers import DEFAULT_PROMPT, REPO, ZERO_SHOT_PROMPT, assert_one_line_exit_2, write_config

from ilid_async.config import DEFAULT_MAX_WORDS, PACKAGED_PROMPT, LlmSettings, load_config, load_prompt
from ilid_async.demo.catalogue import build_catalogue
from ilid_async.fields import LABEL_FIELDS
from ilid_async.filters import Rejected, prefilter_record
from ilid_async.label.chat_format import GEMMA_TURNS, ChatFormat
from ilid_async.label.engine import LabelEngine
from ilid_async.label.prompt import PromptRenderer, answer_text, chat_format, clean_value, value_end
from ilid_async.label.quality import quality_issues, text_word_set, text_words, words_from_text

# The model, real subprocesses or real time: `pytest -m "not slow"` leaves these out.
pytestmark = pytest.mark.slow

shared_loop = pytest.mark.asyncio(loop_scope="module")
DIGIT = re.compile(r"\d")


# --- rendering ----------------------------------------------------------------------------------

def test_examples_are_earlier_turns_of_the_shared_prefix():
    prompt = load_prompt(PACKAGED_PROMPT)
    assert len(prompt.examples) >= 3
    renderer = PromptRenderer(prompt, chat_format(None, prompt))
    shared = renderer.shared()
    record, _ = renderer.record("Gas spring N", ["Lifts lids"], 1500)
    assert shared.endswith("<start_of_turn>user\nLabel: ")  # up to the record's own text
    assert record.startswith(shared) and record[len(shared):].startswith("Gas spring N\nText: Lifts lids")
    for example in prompt.examples:
        # Each example: its record as a user turn, its answers as the model's turn, in exactly
        # the text the forced keys write (so the model continues the same pattern).
        answer = answer_text(prompt, {name: getattr(example, name) for name in LABEL_FIELDS})
        assert f"Label: {example.label}\nText: {example.text}<end_of_turn>\n<start_of_turn>model\n{answer}" in shared
        assert json.loads(answer) == {name: getattr(example, name) for name in LABEL_FIELDS}
    assert shared.count("<start_of_turn>user") == len(prompt.examples) + 1
    assert record.endswith("<end_of_turn>\n<start_of_turn>model\n")


def test_a_model_template_renders_examples_as_its_own_turns():
    chatml = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    prompt = load_prompt(PACKAGED_PROMPT)
    text, _ = PromptRenderer(prompt, chat_format(chatml, prompt)).record("Hinge", ["steel"], 100)
    assert text.count("<|im_start|>assistant\n{\"label_long\"") == len(prompt.examples)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")


def test_the_one_turn_template_renders_as_before_and_refuses_turns():
    fmt = ChatFormat("<u>{system}|{user}</u>")
    assert fmt.render("S", [], "U {label}") == "<u>S|U {label}</u>"
    with pytest.raises(ValueError, match="Jinja"):
        fmt.render("S", [("q", "a")], "U")
    # Gemma's turns as a Jinja template give the one-turn form's text for a prompt without examples.
    assert ChatFormat(GEMMA_TURNS).render("S", [], "U") == ChatFormat(
        "<start_of_turn>user\n{system}\n\n{user}<end_of_turn>\n<start_of_turn>model\n").render("S", [], "U")


# --- the field rules ------------------------------------------------------------------------------

@pytest.mark.parametrize("name, text, value", [
    ("label_short", 'piano hinge"}', "piano hinge"),  # the closing quote
    ("label_short", "deep groove ball bearing with seals", "deep groove ball bearing"),  # 4 words
    ("label_short", "gas spring with end damping", "gas spring with end"),
    ("material", "stainless steel 1.4301", "stainless steel"),  # no digits
    ("description", "Holds lids, holds lids, holds lids, holds", "Holds lids,"),  # repeats itself
    ("label_long", "hinge\nmore", "hinge"),
])
def test_value_end(name, text, value):
    prompt = load_prompt(PACKAGED_PROMPT)
    end = value_end(prompt, name, text)
    assert end is not None and text[:end].strip() == value
    assert value_end(prompt, name, "piano hin") is None  # a value still being written goes on


def test_from_text_values_end_before_a_word_the_page_lacks():
    prompt = load_prompt(PACKAGED_PROMPT)
    words = text_word_set("Hinge", ["Material, stainless steel .", "Finish, blue zinc plated"])
    assert value_end(prompt, "material", 'stainless steel"', words) == len("stainless steel")
    assert value_end(prompt, "material_finish", 'blue zinc-plated"', words) == len("blue zinc-plated")
    assert value_end(prompt, "material_finish", 'flame red"', words) == 0
    assert value_end(prompt, "material", "stainless ste", words) is None  # still being written
    assert value_end(prompt, "label_long", 'flame red hinge"', words) == len("flame red hinge")  # not from_text


def test_rules_off_let_values_run():
    prompt = load_prompt(ZERO_SHOT_PROMPT)
    assert prompt.max_words == {} and prompt.no_digits == prompt.from_text == prompt.examples == []
    assert value_end(prompt, "material", "stainless steel 1.4301 with seven more words here") is None


def test_clean_value_drops_dangling_function_words():
    assert clean_value("gas spring with") == "gas spring"
    assert clean_value("Holds lids,") == "Holds lids"
    assert clean_value("  zinc\\  die-cast ") == "zinc die-cast"
    assert clean_value("with a") is None and clean_value("none") == "none"


# --- prompt files -------------------------------------------------------------------------------

GOOD_EXAMPLE = {"label": "Clamp collar", "text": "Holds parts on a shaft., Material, aluminium",
                "label_long": "clamp collar", "label_short": "clamp collar", "description": "Holds parts.",
                "material": "aluminium", "material_finish": "none"}


def prompt_file(tmp_path, extra: str, **example: str):
    values = {**GOOD_EXAMPLE, **example}
    text = DEFAULT_PROMPT.read_text().split("[max_tokens]")[0]
    text += extra + "[max_tokens]\nlabel_long = 6\nlabel_short = 4\ndescription = 8\nmaterial = 3\nmaterial_finish = 3\n"
    text += "[[examples]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items() if v is not None)
    path = tmp_path / "prompt.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("extra, example, key", [
    ("", {"label_short": None}, "examples[0].label_short"),
    ("", {"label_short": "hinge 42"}, "examples[0].label_short"),
    ("", {"label_short": "a very long short label here"}, "examples[0].label_short"),
    ("", {"material": 'say "steel"'}, "examples[0].material"),
    ("", {"text": "bore 12 mm"}, "examples[0].text"),
    ('template = "<u>{system}|{user}</u>"\n', {}, "template"),  # one turn cannot show examples
    ('template = "{% for m in messages %}"\n', {}, "template"),  # not valid Jinja
    ('no_digits = ["colour"]\n', {}, "no_digits[0]"),
    ("", {"material": "brass"}, "examples[0].material"),  # from_text: not in the example's text
    ('from_text = ["colour"]\n', {}, "from_text[0]"),
])
def test_a_bad_prompt_file_is_one_line_naming_file_and_key(tmp_path, extra, example, key):
    path = prompt_file(tmp_path, extra, **example)
    config = write_config(tmp_path, "source = 'x'\nsitemap_urls = ['http://127.0.0.1:9/s.xml']\n",
                          llm=f'prompt = "{path}"')
    assert_one_line_exit_2(config, f"{path}: key '{key}'")


def test_an_unknown_example_key_is_named(tmp_path):
    path = prompt_file(tmp_path, "", colour="red")
    with pytest.raises(Exception, match=re.escape(f"{path}: key 'examples[0].colour': unknown key")):
        load_prompt(path)


def test_a_config_outside_the_checkout_uses_the_packaged_prompt(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert REPO not in outside.parents
    config = write_config(outside, "source = 'x'\nsitemap_urls = ['http://127.0.0.1:9/s.xml']\n",
                          llm="n_ctx = 2048")
    assert "prompt" not in config.read_text()
    cfg = load_config(config)
    assert cfg.prompt.path == str(PACKAGED_PROMPT) and cfg.prompt.examples
    # The packaged prompt ships with the installed package, wherever the command runs from.
    code = "from ilid_async.config import load_config; import sys; print(len(load_config(sys.argv[1]).prompt.examples))"
    out = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True,
                         cwd=outside, timeout=60)
    assert out.returncode == 0 and int(out.stdout) == len(cfg.prompt.examples), out.stderr


# --- with the real model --------------------------------------------------------------------------

def demo_records(count: int) -> list[tuple[str, list[str]]]:
    """Pre-filtered records of demo products: names and specs full of sizes and codes, the
    input that tempts a small model into "x mm" and made-up numbers."""
    records = []
    for product in build_catalogue().products:
        data = [product.description, *(f"{k}, {v}" for k, v in product.specs)]
        cleaned = prefilter_record(product.name, data, None)
        if not isinstance(cleaned, Rejected):
            records.append((cleaned.label, cleaned.data))
    return records[:count]


def violations(prompt, fields) -> list[str]:
    broken = quality_issues(fields)
    for name, limit in DEFAULT_MAX_WORDS.items():
        if fields.get(name) and len(fields[name].split()) > limit:
            broken.append(f"{name}_over_{limit}_words")
    return broken


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def example_engine():
    eng = LabelEngine(LlmSettings(n_ctx=2048, n_parallel=4), load_prompt(DEFAULT_PROMPT))
    await eng.start()
    yield eng
    await eng.close()


@shared_loop
async def test_the_examples_are_decoded_once(example_engine):
    engine = example_engine
    examples_text = "".join(ex.text for ex in engine.prompt.examples)
    assert engine.stats["prefix_tokens"] > len(examples_text) / 8  # the examples are in it
    decodes, prompt_tokens = engine.stats["decodes"], engine.stats["prompt_tokens"]
    records = demo_records(4)
    results = await asyncio.gather(*(engine.label(*r) for r in records))
    assert all(r.fields is not None for r in results)
    # Each record decoded its own text and keys only, far less than the shared part per record.
    decoded = engine.stats["prompt_tokens"] - prompt_tokens
    assert 0 < decoded < len(records) * engine.stats["prefix_tokens"] / 2
    assert engine.stats["decodes"] > decodes


@shared_loop
async def test_field_rules_hold_on_many_records():
    """The same prompt and records with the rules off break them; with the rules on, not once."""
    records = demo_records(24)
    zero_shot = load_prompt(ZERO_SHOT_PROMPT)
    ruled = zero_shot.replace(max_words=dict(DEFAULT_MAX_WORDS), no_digits=list(LABEL_FIELDS),
                              from_text=["material", "material_finish"])
    broken = {}
    for name, prompt in (("off", zero_shot), ("on", ruled)):
        engine = LabelEngine(LlmSettings(n_ctx=2048, n_parallel=8), prompt)
        await engine.start()
        try:
            results = await asyncio.gather(*(engine.label(*r) for r in records))
        finally:
            await engine.close()
        answers = [r.fields for r in results if r.fields is not None]
        assert len(answers) == len(records)
        broken[name] = [v for fields in answers for v in violations(prompt, fields)]
        broken[name] += [f"{field}_not_from_text" for (label, data), fields in zip(records, answers)
                         for field in ("material", "material_finish")
                         if fields[field] and not words_from_text(fields[field], text_words(label, data))]
        if name == "on":
            assert not any(DIGIT.search(v) for fields in answers for v in fields.values() if v)
    assert broken["off"], "these records should tempt the model into breaking a rule"
    assert broken["on"] == []


@shared_loop
async def test_labels_of_the_packaged_prompt_keep_the_rules(example_engine):
    records = demo_records(12)
    results = await asyncio.gather(*(example_engine.label(*r) for r in records))
    answers = [r.fields for r in results]
    assert all(a is not None and violations(example_engine.prompt, a) == [] for a in answers)
    assert orjson.dumps(answers)  # plain strings only
