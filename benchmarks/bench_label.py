"""Labelling throughput: the engine against the best a user gets from llama.cpp without it.

All sides label the same pre-filtered records (benchmarks/label_records.py, a catalogue that is
not the demo shop's) with the same model file, chat prompt (the packaged one, with its worked
examples), forced keys, value stops, per-field token caps, greedy decoding, n_ctx per record,
threads and n_batch, and keep the same field rules, each as its interface allows: no digits
(the engine masks them; (a) a numpy logits processor; (b) and (d) a GBNF grammar; (e) a schema
pattern), material and finish in the record's own words (the engine and (a) keep only the
record's tokens; the servers' values are cut before the first other word: a grammar of the
words made llama-server about 13x slower), and values ended at their word limit or where they
repeat themselves (the engine while generating, (a) a stopping criterion, the servers' answers
cut afterwards):

(a) sequential: llama-cpp-python's high-level `Llama.create_completion`, one call per field on
    the growing text (forced key appended, value generated up to a stop). Llama keeps its
    evaluated tokens, so each call decodes only what follows the common prefix.
(b) llama-server: llama.cpp's own server from the sources llama-cpp-python vendors
    (scripts/build-llama-server.sh), `-np` slots with continuous batching, fed by as many
    concurrent aiohttp clients doing the same per-field continuation on `/completion` with
    `cache_prompt`.
(c) ilid-async: `LabelEngine`, every record queued at once.
(d) ilid-async's `OpenAIBackend` (llm.backend = "openai") on the same llama-server: the same
    per-field continuation on `/v1/completions`, up to --parallel records in flight.
(e) the other request format a server with guided decoding offers: one `/v1/chat/completions`
    per record with `response_format` = a JSON schema of the five string fields (the server
    constrains sampling with a grammar and the model writes the JSON syntax itself), as many
    concurrent clients as slots. The answer must parse as that JSON object.
(b), (d) and (e) share one llama-server process and run one after another, each from empty
caches: the slots are erased between them and the server keeps no prompt cache in host memory.

Prints records/s, generated tokens/s, answers parsed/failed and label quality per side, how
many answers equal (a)'s (greedy decoding: they differ only where batching changes the maths),
and the ratios engine / (a), engine / (b), (d) / (b) and (e) / (d).

    .venv/bin/python benchmarks/bench_label.py [--records 24] [--parallel 8] [--threads N]
        [--skip-server | --only SIDE [SIDE ...]] [--show] [--llama-server PATH] [--prompt FILE]
    SIDE: sequential (a), server (b), engine (c), backend (d), schema (e)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from common import PROMPT, REPO, free_port
from label_records import RECORDS

from ilid_async.config import LlmSettings, PromptConfig, load_prompt
from ilid_async.filters import Rejected, prefilter_record
from ilid_async.label.engine import LabelEngine
from ilid_async.label.llama import Model, resolve_model_path
from ilid_async.label.sampling import text_tokens, vocab_classes
from ilid_async.label.openai_backend import NO_DIGITS_GRAMMAR, OpenAIBackend
from ilid_async.label.prompt import (VALUE_STOPS, PromptRenderer, chat_format, clean_value, field_prefix,
                                     prompt_budget, value_end)
from ilid_async.label.quality import label_quality, text_word_set

if TYPE_CHECKING:
    import aiohttp

N_CTX = 2048  # tokens per record: the shared part (examples) is about 800, the longest record 600 more
SIDES = ("sequential", "server", "backend", "schema", "engine")
SERVER_SIDES = ("server", "backend", "schema")  # they share one llama-server
SCHEMA_SYNTAX_TOKENS = 40  # (e): room for the JSON syntax around the values' token caps
# (e)'s no-digits rule: a JSON string's characters without digits (nor the quote and backslash
# that llama.cpp's pattern-to-grammar would otherwise let through raw, breaking the JSON).
SCHEMA_NO_DIGITS = '^[^0-9"\\\\]*$'
SERVER_START_TIMEOUT_S = 120
REQUEST_TIMEOUT_S = 300


@dataclass
class SideResult:
    name: str
    seconds: float
    answers: list[dict[str, str | None] | None]  # None: the record failed
    tokens: int  # generated tokens
    notes: list[str] = field(default_factory=list)


# --- records and prompts --------------------------------------------------------------------

def benchmark_records(count: int) -> list[tuple[str, list[str]]]:
    """The first `count` records the pre-filter keeps, cleaned exactly as the pipeline does."""
    kept, rejected = [], {}
    for label, data in RECORDS:
        cleaned = prefilter_record(label, data, None)
        if isinstance(cleaned, Rejected):
            rejected[cleaned.reason] = rejected.get(cleaned.reason, 0) + 1
        else:
            kept.append((cleaned.label, cleaned.data))
    print(f"records: {len(RECORDS)} written, pre-filter rejected {sum(rejected.values())} "
          f"{rejected or ''}, kept {len(kept)}")
    if count > len(kept):
        print(f"--records {count}: only {len(kept)} records are kept; using those")
    return kept[:count]


class ChatPrompts:
    """The engine's prompt up to the first forced key, from the model's vocabulary alone."""

    def __init__(self, path: str, llm: LlmSettings, prompt: PromptConfig):
        import llama_cpp

        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True  # tokenizer and metadata only: the sides load their own weights
        self._model = Model(path, params)
        self.llm, self.prompt = llm, prompt
        model_template = self._model.chat_template()
        self.model_has_template = bool(model_template)
        self.renderer = PromptRenderer(prompt, chat_format(model_template, prompt))  # as the engine's
        self.vocab = vocab_classes(self._model.vocab)
        if model_template:
            self.template_source = "the model's chat template"
        else:
            self.template_source = "the prompt file's template" if prompt.template else "DEFAULT_TEMPLATE"

    def render(self, label: str, data: list[str]) -> tuple[str, str, bool]:
        """Chat prompt, its user message and whether the text was cut, exactly as the engine
        renders and shortens it to fit n_ctx."""
        return self.renderer.fit(label, data, self.llm.max_input_chars, prompt_budget(self.prompt, self.llm.n_ctx),
                                 lambda text: len(self._model.tokenize(text.encode(), add_bos=True, special=True)))

    def text_tokens(self, label: str, data: list[str]):
        """What the record's from_text fields may use, as the engine finds it."""
        return text_tokens(self._model, self.vocab, label, data)

    def server_chat_template(self) -> str | None:
        """For (e): a Jinja chat template that makes llama-server's chat endpoint render the same
        text, or None when the model has its own (the server applies that one). Without it the
        server falls back to ChatML for a model without a template."""
        if self.model_has_template:
            return None
        if not self.renderer.format.jinja:
            raise ValueError("(e) needs the prompt's chat format as a Jinja template")
        return self.renderer.format.source

    def close(self) -> None:
        self._model.close()


def answer_or_none(fields: dict[str, str | None]) -> dict[str, str | None] | None:
    """The engine's rule: an answer without any value is a failure."""
    return fields if any(fields.values()) else None


# --- (a) the sequential llama-cpp-python loop -------------------------------------------------

@dataclass
class BenchRecord:
    label: str
    data: list[str]
    prompt: str  # the chat text up to the first forced key
    user: str  # its user message
    tokens: object  # numpy ids its from_text fields may use (for (a))

    @property
    def word_set(self) -> set[str]:
        return text_word_set(self.label, self.data)


def ruled_value(prompt: PromptConfig, name: str, text: str, record: BenchRecord) -> str:
    """A value as the field rules end it (every side: the engine ends it while generating)."""
    end = value_end(prompt, name, text, record.word_set)
    return (text if end is None else text[:end]).rstrip()  # the text goes on with it, as the engine's


def grammar_for(prompt: PromptConfig, name: str) -> str | None:
    """The GBNF grammar of the field rules, as the openai backend sends it to llama.cpp servers
    (the digit rule only: see openai_backend)."""
    return NO_DIGITS_GRAMMAR if name in prompt.no_digits else None


def run_sequential(items: list[BenchRecord], path: str, llm: LlmSettings, prompt: PromptConfig,
                   digit_tokens) -> SideResult:
    """The field rules as a llama-cpp-python user keeps them: logits processors that keep only
    the record's tokens (from_text fields) and mask the digit tokens (numpy, once per token),
    and a stopping criterion that ends a value when the rules say so (detokenizing what was
    generated)."""
    import numpy as np
    from llama_cpp import Llama, LogitsProcessorList, StoppingCriteriaList

    model = Llama(model_path=path, n_ctx=llm.n_ctx, n_batch=llm.n_batch, n_ubatch=llm.n_batch,
                  n_threads=llm.n_threads, n_threads_batch=llm.n_threads,
                  flash_attn=llm.flash_attn == "on", seed=llm.seed, verbose=False,
                  swa_full=True)  # Gemma 3: without it Llama cannot cut its cache back to a prefix
    answers, tokens = [], 0

    def no_digits(input_ids, scores):
        scores[digit_tokens] = -np.inf
        return scores

    def only(tokens):
        def keep(input_ids, scores):
            kept = scores[tokens]
            scores.fill(-np.inf)
            scores[tokens] = kept
            return scores
        return keep

    def rules_stop(name: str, n_prompt: int, item: BenchRecord):
        words = item.word_set

        def stop(input_ids, logits) -> bool:
            text = model.detokenize(input_ids[n_prompt:].tolist()).decode(errors="ignore")
            return value_end(prompt, name, text, words) is not None
        return StoppingCriteriaList([stop])

    try:
        start = time.perf_counter()
        for item in items:
            text, fields = item.prompt, {}
            try:
                for index, (name, cap) in enumerate(prompt.max_tokens.items()):
                    text += field_prefix(index, name)
                    n_prompt = len(model.tokenize(text.encode(), special=True))
                    masks = ([only(item.tokens)] if name in prompt.from_text else []) + (
                        [no_digits] if name in prompt.no_digits else [])
                    out = model.create_completion(text, max_tokens=cap, stop=VALUE_STOPS, temperature=0.0,
                                                  logits_processor=LogitsProcessorList(masks) if masks else None,
                                                  stopping_criteria=rules_stop(name, n_prompt, item))
                    value = ruled_value(prompt, name, out["choices"][0]["text"], item)
                    tokens += out["usage"]["completion_tokens"]
                    fields[name] = clean_value(value)
                    text += value
                answers.append(answer_or_none(fields))
            except ValueError as e:  # a prompt over n_ctx: that record fails, as in the engine
                print(f"sequential: record failed: {e}", file=sys.stderr)
                answers.append(None)
        seconds = time.perf_counter() - start
    finally:
        model.close()
    return SideResult("(a) llama-cpp-python loop", seconds, answers, tokens)


# --- (b) llama-server --------------------------------------------------------------------------

def llama_server_binary() -> str:
    """The script builds it once (several minutes) and afterwards only prints its path."""
    out = subprocess.run(["bash", str(REPO / "scripts" / "build-llama-server.sh")],
                         stdout=subprocess.PIPE, text=True, check=True,
                         env={**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)})
    return out.stdout.strip().splitlines()[-1]


class LlamaServer:
    """llama-server on a free 127.0.0.1 port for the time of a `with` block."""

    def __init__(self, binary: str, path: str, llm: LlmSettings, chat_template: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.slots = llm.n_parallel
        # --slot-save-path enables the slot actions, erase among them; nothing is saved there.
        self._slot_dir = tempfile.mkdtemp(prefix="llama-server-slots-")
        self.command = [
            binary, "-m", path, "--host", "127.0.0.1", "--port", str(self.port),
            "-np", str(llm.n_parallel), "-cb",
            # Not unified: the context is split evenly, so every slot has n_ctx, as every
            # engine sequence has.
            "-c", str(llm.n_ctx * llm.n_parallel), os.environ.get("KVU_FLAG", "--no-kv-unified"),
            "-t", str(llm.n_threads), "-tb", str(llm.n_threads),
            "-b", str(llm.n_batch), "-ub", str(llm.n_batch),
            "-fa", llm.flash_attn,
            "--swa-full",  # Gemma 3: lets a slot reuse its cached prefix, as the engine does
            "--no-webui", "--seed", str(llm.seed),
            # (b), (d) and (e) label the same records one after another: no side may find the
            # previous side's prompts cached. No host-memory prompt cache (it outlives a slot's
            # erase and hands a record's state to any slot), and erasable slots.
            "--cache-ram", "0", "--slot-save-path", self._slot_dir,
        ]
        self._template_file = None
        if chat_template is not None:  # for the chat endpoint of (e) only; (b) and (d) send raw text
            self._template_file = tempfile.NamedTemporaryFile(
                "w", prefix="llama-server-", suffix=".jinja", delete=False)
            self._template_file.write(chat_template)
            self._template_file.close()
            self.command += ["--jinja", "--chat-template-file", self._template_file.name]
        self._log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> "LlamaServer":
        self._process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        try:
            self._wait_healthy()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self._process.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass  # not listening yet, or 503 while the model loads
            time.sleep(0.25)
        raise TimeoutError(f"llama-server not healthy after {SERVER_START_TIMEOUT_S} s:\n{self.log_tail()}")

    def erase_caches(self) -> None:
        """Empty every slot's cache: a side that follows another on this server would otherwise
        find its records' prompts already decoded."""
        for slot in range(self.slots):
            request = urllib.request.Request(f"{self.url}/slots/{slot}?action=erase", data=b"{}",
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(Path(self._log.name).read_text(errors="replace").splitlines()[-lines:])

    def __exit__(self, *exc) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()
        if self._template_file is not None:
            os.unlink(self._template_file.name)
            self._template_file = None
        shutil.rmtree(self._slot_dir, ignore_errors=True)
        if exc[0] is None:
            os.unlink(self._log.name)
        else:
            print(f"llama-server log kept: {self._log.name}", file=sys.stderr)


async def run_server(items: list[BenchRecord], server: LlamaServer, prompt: PromptConfig,
                     clients: int) -> SideResult:
    import aiohttp

    answers: list[dict[str, str | None] | None] = [None] * len(items)
    tokens = 0
    next_record = iter(range(len(items)))
    decoded = reused = 0  # prompt tokens: decoded by the slot, taken from its cache

    async def client(session: aiohttp.ClientSession, slot: int) -> None:
        nonlocal tokens, decoded, reused
        for index in next_record:  # one shared iterator: each client takes the next record
            item = items[index]
            text, fields = item.prompt, {}
            for field_index, (name, cap) in enumerate(prompt.max_tokens.items()):
                text += field_prefix(field_index, name)
                # A client keeps to its own slot, so every call finds its record's tokens there.
                request = {"prompt": text, "n_predict": cap, "stop": VALUE_STOPS,
                           "temperature": 0, "cache_prompt": True, "id_slot": slot}
                grammar = grammar_for(prompt, name)  # the field rules as the server takes them
                if grammar:
                    request["grammar"] = grammar
                async with session.post(f"{server.url}/completion", json=request) as response:
                    response.raise_for_status()
                    out = await response.json()
                value, timings = ruled_value(prompt, name, out["content"], item), out.get("timings", {})
                tokens += out.get("tokens_predicted", timings.get("predicted_n", 0))
                decoded += timings.get("prompt_n", 0)
                reused += timings.get("cache_n", 0)
                fields[name] = clean_value(value)
                text += value
            answers[index] = answer_or_none(fields)

    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        start = time.perf_counter()
        await asyncio.gather(*(client(session, slot) for slot in range(clients)))
        seconds = time.perf_counter() - start
    reuse = f"prompt tokens decoded {decoded}, reused from the slots' caches {reused}"
    return SideResult(f"(b) llama-server -np {clients}", seconds, answers, tokens, [reuse])


# --- (d) ilid-async's OpenAI-compatible backend on the same llama-server ------------------------

async def run_backend(records: list[tuple[str, list[str]]], prompts: list[str], server: LlamaServer,
                      llm: LlmSettings, prompt: PromptConfig, clients: int) -> SideResult:
    settings = llm.replace(backend="openai", base_urls=[f"{server.url}/v1"],
                           max_in_flight=clients, request_timeout=REQUEST_TIMEOUT_S)
    backend = OpenAIBackend(settings, prompt)
    # The backend renders its own prompts (the prompt file's template, max_input_chars only), as
    # its _label does; they must be the other sides' texts or the comparison is off.
    own = [backend.chat.record(label, data, settings.max_input_chars)[0] for label, data in records]
    differ = sum(a != b for a, b in zip(own, prompts))
    if differ:
        print(f"WARNING (d): the backend's prompt differs from the other sides' for {differ}/"
              f"{len(prompts)} records", file=sys.stderr)
    seconds, results = await timed_labelling(backend, records)
    notes = [f"prompts equal to the other sides': {len(prompts) - differ}/{len(prompts)}"]
    failures = sorted({r.reason for r in results if r.fields is None})
    if failures:
        notes.append(f"failure reasons: {', '.join(failures)}")
    return SideResult(f"(d) ilid-async OpenAIBackend, max_in_flight={clients}", seconds,
                      [r.fields for r in results], backend.stats["tokens"], notes)


# --- (e) one JSON-schema chat completion per record on the same llama-server -------------------

def labels_response_format(prompt: PromptConfig) -> dict:
    """The five fields as required strings, in the prompt's order; nothing else allowed."""
    names = list(prompt.max_tokens)
    # The field rules as a schema has them: no digits by pattern (word limits are applied after).
    schema = {"type": "object", "properties": {
                  name: {"type": "string", **({"pattern": SCHEMA_NO_DIGITS} if name in prompt.no_digits else {})}
                  for name in names},
              "required": names, "additionalProperties": False}
    return {"type": "json_schema", "json_schema": {"name": "labels", "schema": schema}}


def parse_labels(content: str, prompt: PromptConfig, item: BenchRecord) -> dict[str, str | None] | None:
    """The schema's object, values ended by the field rules and cleaned as the other sides';
    None: a failure."""
    names = list(prompt.max_tokens)
    try:
        answer = json.loads(content)
    except json.JSONDecodeError:
        return None
    if not isinstance(answer, dict) or not all(isinstance(answer.get(name), str) for name in names):
        return None
    return answer_or_none({name: clean_value(ruled_value(prompt, name, answer[name], item)) for name in names})


async def post_json(session: aiohttp.ClientSession, url: str, body: dict) -> dict:
    """POST and the JSON answer; an error status raises with the server's message."""
    async with session.post(url, json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}: {(await response.text())[:500]}")
        return await response.json()


async def run_schema(items: list[BenchRecord], server: LlamaServer, prompt: PromptConfig,
                     clients: int) -> SideResult:
    import aiohttp

    response_format = labels_response_format(prompt)
    max_tokens = sum(prompt.max_tokens.values()) + SCHEMA_SYNTAX_TOKENS
    users, prompts = [item.user for item in items], [item.prompt for item in items]
    answers: list[dict[str, str | None] | None] = [None] * len(users)
    tokens = cut = 0
    next_record = iter(range(len(users)))

    turns = []  # the examples, as earlier turns
    for question, answer in PromptRenderer(prompt, chat_format(None, prompt)).turns:
        turns += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]

    def messages(user: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": prompt.system}, *turns, {"role": "user", "content": user}]

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal tokens, cut
        for index in next_record:
            request = {"messages": messages(users[index]), "temperature": 0, "max_tokens": max_tokens,
                       "response_format": response_format}
            out = await post_json(session, f"{server.url}/v1/chat/completions", request)
            choice = out["choices"][0]
            tokens += (out.get("usage") or {}).get("completion_tokens", 0)
            cut += choice.get("finish_reason") == "length"
            answers[index] = parse_labels(choice["message"].get("content") or "", prompt, items[index])

    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        # The server renders the chat itself: check that it renders the other sides' text.
        rendered = [(await post_json(session, f"{server.url}/apply-template",
                                     {"messages": messages(user)}))["prompt"] for user in users]
        differ = sum(a != b for a, b in zip(rendered, prompts))
        if differ:
            print(f"WARNING (e): llama-server's chat prompt differs from the other sides' for "
                  f"{differ}/{len(prompts)} records; first: {rendered[0][:200]!r}", file=sys.stderr)
        start = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        seconds = time.perf_counter() - start
    notes = [f"prompts equal to the other sides': {len(prompts) - differ}/{len(prompts)}; "
             f"answers cut at max_tokens {max_tokens}: {cut}"]
    return SideResult(f"(e) llama-server JSON schema, {clients} clients", seconds, answers, tokens, notes)


async def timed_labelling(labeller, records: list[tuple[str, list[str]]]) -> tuple[float, list]:
    """Start a labelling backend, queue every record at once, time them, close it."""
    await labeller.start()
    try:
        start = time.perf_counter()
        results = await asyncio.gather(*(labeller.label(label, data) for label, data in records))
        return time.perf_counter() - start, results
    finally:
        await labeller.close()


# --- (c) the engine ----------------------------------------------------------------------------

async def run_engine(records: list[tuple[str, list[str]]], llm: LlmSettings,
                     prompt: PromptConfig) -> SideResult:
    engine = LabelEngine(llm, prompt)
    seconds, results = await timed_labelling(engine, records)
    failures = sorted({r.reason for r in results if r.fields is None})
    notes = [f"truncated inputs: {engine.stats['truncated']}"]
    if failures:
        notes.append(f"failure reasons: {', '.join(failures)}")
    return SideResult(f"(c) ilid-async engine n_parallel={llm.n_parallel}", seconds,
                      [r.fields for r in results], engine.stats["tokens"], notes)


# --- report ------------------------------------------------------------------------------------

def report(side: SideResult, reference: SideResult | None) -> None:
    n = len(side.answers)
    parsed = [a for a in side.answers if a is not None]
    print(f"{side.name}: {n} records in {side.seconds:.1f} s = {n / side.seconds:.3f} records/s, "
          f"{side.tokens} generated tokens = {side.tokens / side.seconds:.1f} tokens/s")
    print(f"    answers parsed {len(parsed)}, failed {n - len(parsed)}; "
          f"label quality {label_quality(parsed)}")
    if reference is not None and reference is not side:
        same = sum(a == b for a, b in zip(side.answers, reference.answers))
        print(f"    answers equal to (a)'s: {same}/{n}")
    for note in side.notes:
        if note:
            print(f"    {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=24, help="records each side labels")
    parser.add_argument("--parallel", type=int, default=8,
                        help="llm.n_parallel, llama-server slots and clients")
    parser.add_argument("--threads", type=int, default=0, help="threads for every side (0 = all cores)")
    parser.add_argument("--flash-attn", choices=("on", "off"), default="on",
                        help="llama.cpp's flash attention, the same on every side (default on: "
                        "faster for every side on this CPU)")
    parser.add_argument("--reproducible", action="store_true",
                        help="the engine with llm.reproducible (exact batch-independent labels)")
    parser.add_argument("--skip-server", action="store_true",
                        help="leave out the llama-server sides (b), (d) and (e)")
    parser.add_argument("--only", nargs="+", choices=SIDES, metavar="SIDE",
                        help=f"run these sides only: {', '.join(SIDES)}")
    parser.add_argument("--show", action="store_true", help="print every answer of every side")
    parser.add_argument("--prompt", default=str(PROMPT), help="prompt file (default: the packaged one; "
                        "benchmarks/prompt_zero_shot.toml is the one before worked examples and field rules)")
    parser.add_argument("--llama-server", help="a llama-server binary (default: build or reuse "
                        "scripts/build-llama-server.sh's)")
    args = parser.parse_args()
    sides = args.only or [s for s in SIDES if not (s in SERVER_SIDES and args.skip_server)]

    # One concrete thread count for all: their defaults differ (llama.cpp 4, Llama half the
    # cores, llama-server all cores).
    threads = args.threads or len(os.sched_getaffinity(0))
    llm = LlmSettings(n_ctx=N_CTX, n_parallel=args.parallel, n_threads=threads, flash_attn=args.flash_attn,
                      reproducible=args.reproducible)
    prompt = load_prompt(Path(args.prompt))
    records = benchmark_records(args.records)
    path = resolve_model_path(llm)
    chat = ChatPrompts(path, llm, prompt)
    try:
        rendered = [chat.render(label, data) for label, data in records]
        items = [BenchRecord(label, data, text, user, chat.text_tokens(label, data))
                 for (label, data), (text, user, _) in zip(records, rendered)]
    finally:
        chat.close()
    prompts = [item.prompt for item in items]
    print(f"model {Path(path).name}; template: {chat.template_source}; n_ctx {llm.n_ctx} per record, "
          f"threads {threads}, n_batch {llm.n_batch}, parallel {args.parallel}; "
          f"{len(records)} records, {sum(cut for _, _, cut in rendered)} with the text cut")

    results: dict[str, SideResult] = {}
    if "sequential" in sides:
        results["sequential"] = run_sequential(items, path, llm, prompt, chat.vocab.digits)
    if any(side in SERVER_SIDES for side in sides):
        binary = args.llama_server or llama_server_binary()
        # One server for (b), (d) and (e); the chat template only matters to (e)'s chat endpoint.
        chat_template = chat.server_chat_template() if "schema" in sides else None
        with LlamaServer(binary, path, llm, chat_template) as server:
            if "server" in sides:
                server.erase_caches()  # every side starts from empty caches
                results["server"] = asyncio.run(run_server(items, server, prompt, args.parallel))
            if "backend" in sides:
                server.erase_caches()
                results["backend"] = asyncio.run(
                    run_backend(records, prompts, server, llm, prompt, args.parallel))
            if "schema" in sides:
                server.erase_caches()
                results["schema"] = asyncio.run(run_schema(items, server, prompt, args.parallel))
    if "engine" in sides:
        results["engine"] = asyncio.run(run_engine(records, llm, prompt))

    in_order = sorted(results.values(), key=lambda side: side.name)  # (a) to (e)
    if args.show:
        for index, (label, _) in enumerate(records):
            print(f"\n{label}")
            for side in in_order:
                print(f"    {side.name[:3]} {side.answers[index]}")
    print()
    reference = results.get("sequential")
    for side in in_order:
        report(side, reference)
    for top, bottom in (("engine", "sequential"), ("engine", "server"), ("backend", "server"),
                        ("schema", "backend")):
        if top in results and bottom in results:
            ours, peer = results[top], results[bottom]
            ratio = (len(ours.answers) / ours.seconds) / (len(peer.answers) / peer.seconds)
            shown = "engine" if top == "engine" else ours.name[:3]
            print(f"ratio {shown} / {peer.name[:3]}: {ratio:.2f}x records/s")


if __name__ == "__main__":
    main()
